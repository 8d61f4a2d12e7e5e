"""What every detector is made of: typed options, events, and the two-stage detector interface.

Stage 1 (per frame or per 10 ms audio block, vectorised over a segment) lives in each detector module
as plain functions on numpy arrays; detectors/features.py composes them into one feature table per
segment. Stage 2 is a Detector: it walks a stream's feature rows in media-time order, carrying a small
explicit state (a plain dict) from one window to the next, and emits Events once their end is known.
Feeding the rows in one piece or cut at arbitrary points gives identical events.

Detectors never import pyspark or kafka: the same code runs in the Spark job, the local runner and a
notebook.
"""
from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

VIDEO = "video"
AUDIO = "audio"
MINOR = "minor"
MAJOR = "major"


def option(default, help: str, min: float | None = None, max: float | None = None,
           choices: tuple | None = None):
    """A detector option: default, one-line help, and bounds checked when the options are built."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices})


@dataclass(frozen=True)
class Options:
    """Base of every detector's options dataclass: validates bounds at construction.

    Durations are in seconds; thresholds are fractions of range, dB, LUFS or ms as the standard uses.
    """

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            where = f"{type(self).__qualname__}.{f.name}"
            if meta.get("choices") is not None:
                if value not in meta["choices"]:
                    raise ValueError(f"{where} must be one of {meta['choices']}, got {value!r}")
                continue
            if isinstance(f.default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{where} must be true or false, got {value!r}")
                continue
            if isinstance(f.default, (int, float)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                    raise ValueError(f"{where} must be a number, got {value!r}")
                if meta.get("min") is not None and value < meta["min"]:
                    raise ValueError(f"{where} must be >= {meta['min']}, got {value!r}")
                if meta.get("max") is not None and value > meta["max"]:
                    raise ValueError(f"{where} must be <= {meta['max']}, got {value!r}")

    @classmethod
    def from_mapping(cls, values: dict | None):
        """Build options from a plain mapping (a config file section); unknown keys are an error."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for {cls.__qualname__}; "
                             f"known: {', '.join(sorted(names))}")
        return cls(**values)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) per option, for docs and `--help`."""
        return [(f.name, f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class Event:
    """One detected defect of one stream, in media seconds from the stream's start."""

    detector: str            # canonical detector name, e.g. "black"
    start_s: float           # media time of the first defective frame / sample
    end_s: float             # media time where the defect ended (exclusive)
    score: float             # the measured value the decision was made on (units in details)
    threshold: float         # what the score was compared with
    severity: str = MINOR    # MINOR (quality) or MAJOR (picture/sound lost)
    check: str = ""          # sub-check within a detector (e.g. loudness "true_peak"); part of the identity
    details: dict = field(default_factory=dict)  # JSON-serializable: what a person needs to verify it
    evidence: bytes | None = None  # encoded thumbnail (JPEG/PNG) of the frame where it starts

    def details_json(self) -> str:
        return json.dumps(self.details, sort_keys=True, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Detector(ABC):
    """Stage 2 of one detector: a state machine over a stream's feature rows.

    Subclasses set name, version, inputs and Options, and implement initial_state/process/finish.
    `state` is a plain dict of small values (numbers, short lists, small numpy arrays, bytes); it is
    all that is carried between windows, and it is pickled into Spark's state store.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]  # which feature tables it reads: (VIDEO,), (AUDIO,) or both
    Options: ClassVar[type[Options]]

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{self.name} takes {self.Options.__qualname__}, got {type(self.options).__name__}")

    def initial_state(self) -> dict:
        return {}

    @abstractmethod
    def process(self, state: dict, kind: str, rows) -> list[Event]:
        """Consume the next feature rows of `kind` (a detectors.features.Features table, sorted by time,
        contiguous with the last call).

        Mutates `state`; returns the events that ended within these rows.
        """

    def heartbeat(self, state: dict, media_time_s: float) -> list[Event]:
        """The stream's clock advanced to media_time_s without new media (a live source hung)."""
        return []

    def finish(self, state: dict, end_s: float) -> list[Event]:
        """End of stream at media time end_s: close any open event there."""
        return []


class RunTracker:
    """A reusable run-length state machine: a condition held for >= min_duration_s becomes an event.

    Kept in the detector's state dict under one key as {"start": t or None, "last": t, ...}, so it
    survives window splits. Used by black, freeze, silence, solid_color, colorbars, blur and others.
    """

    @staticmethod
    def new() -> dict:
        return {"start": None, "peak": 0.0, "sum": 0.0, "n": 0, "evidence": None, "extra": {}}

    @staticmethod
    def on(run: dict, t: float, score: float, evidence: bytes | None = None) -> None:
        if run["start"] is None:
            run.update(start=float(t), peak=float(score), sum=0.0, n=0, evidence=evidence, extra={})
        run["peak"] = max(run["peak"], float(score))
        run["sum"] += float(score)
        run["n"] += 1

    @staticmethod
    def off(run: dict, end_t: float, min_duration_s: float) -> tuple[float, float, dict] | None:
        """Close the run at end_t; return (start, end, run snapshot) if it lasted long enough."""
        if run["start"] is None:
            return None
        start = run["start"]
        snapshot = dict(run)
        run.update(RunTracker.new())
        if end_t - start >= min_duration_s - 1e-9:
            return start, float(end_t), snapshot
        return None


class RunDetector(Detector):
    """A detector whose events are runs of frames showing the defect, lasting at least
    options.min_duration_s: a run starts at its first such frame and ends at the first frame without it
    (or at the end of the stream). Subclasses say which frames show it and how to report a run."""

    def initial_state(self) -> dict:
        return {"run": RunTracker.new()}

    @abstractmethod
    def frame_scores(self, rows) -> np.ndarray:
        """Per row: the score of a frame that shows the defect, NaN for a frame that does not."""

    def on_frame(self, extra: dict, rows, k: int) -> None:
        """Collect per-frame details of a run into its `extra` dict (optional)."""

    @abstractmethod
    def make_event(self, start: float, end: float, run: dict) -> Event:
        """The event of a closed run (run: the RunTracker snapshot: peak, sum, n, evidence, extra)."""

    def process(self, state: dict, kind: str, rows) -> list[Event]:
        scores = self.frame_scores(rows)
        run = state["run"]
        events = []
        for k in range(len(rows)):
            t, score = float(rows["t"][k]), float(scores[k])
            if score == score:
                RunTracker.on(run, t, score, rows["thumb_jpeg"][k])
                self.on_frame(run["extra"], rows, k)
            elif run["start"] is not None:
                events += self._close(run, t)
        return events

    def finish(self, state: dict, end_s: float) -> list[Event]:
        return self._close(state["run"], end_s)

    def _close(self, run: dict, end: float) -> list[Event]:
        closed = RunTracker.off(run, end, self.options.min_duration_s)
        return [] if closed is None else [self.make_event(*closed)]
