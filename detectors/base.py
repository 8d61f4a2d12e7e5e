"""What every detector is made of: typed options, events, typed state, and the two-stage interface.

A Detector class declares both stages. Stage 1 (`stage1`, per frame or per 10 ms audio block, vectorised
over a segment) returns the columns it declares in `stage1_outputs` (name -> Arrow type);
detectors/compose.py puts them into one feature table per segment, and the frame_features table is
derived from the declarations (detectors/records.py). Stage 2 (`process`, `heartbeat`, `finish`) walks a
stream's feature rows in media-time order, carrying a small typed state (a `State` dataclass, versioned,
serialisable to plain types) from one window to the next, and emits Events once their end is known.
Feeding the rows in one piece or cut at arbitrary points gives identical events. `RunDetector` is the
shared machinery of detectors whose events are runs of defective rows (black, solid_color, colorbars,
silence, clipping).

Detectors never import pyspark or kafka: the same code runs in the Spark job, the local runner and a
notebook.
"""
from __future__ import annotations

import base64
import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

VIDEO = "video"
AUDIO = "audio"
MINOR = "minor"
MAJOR = "major"
# An event's alarm state: raised once the defect has lasted its minimum duration (OPEN, end = the point it
# became reportable), refreshed while it lasts (ONGOING, end = the time known so far), ended (CLOSED, the
# final end). The event id stays the same across the three.
OPEN = "open"
ONGOING = "ongoing"
CLOSED = "closed"
STATES = (OPEN, ONGOING, CLOSED)


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
    state: str = CLOSED      # OPEN, ONGOING or CLOSED (see STATES)

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


# -- state -------------------------------------------------------------------------------------------

_STATE_TYPES: dict[str, type] = {}


@dataclass
class State:
    """Base of a detector's stage-2 state: a dataclass of small values (numbers, short lists, small numpy
    arrays, bytes, nested States), all that is carried between windows. The Spark job pickles it with the
    stream's state; `to_dict`/`from_dict` give it as plain JSON-compatible types.

    VERSION is the layout version: change it when fields change meaning or are added or removed. The
    analyzer keys a saved state by it (detectors/analyzer.detector_key), so a state saved under another
    layout is replaced by a fresh one instead of being misread.
    """

    VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _STATE_TYPES[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __getitem__(self, name: str):
        """Read a field by name, as `state["counts"]` (tests and notebooks read states this way)."""
        return getattr(self, name)

    def to_dict(self) -> dict:
        """The state as plain types (dict, list, str, int, float, bool, None): JSON-compatible."""
        return {"version": self.VERSION,
                **{f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: dict) -> "State":
        """The inverse of to_dict; a layout other than VERSION is an error (start that detector fresh)."""
        if data.get("version") != cls.VERSION:
            raise ValueError(f"{cls.__qualname__} layout {data.get('version')!r} is not this build's ({cls.VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) - {"version"} != names:
            raise ValueError(f"{cls.__qualname__} fields {sorted(set(data) - {'version'})} are not {sorted(names)}")
        return cls(**{name: _decode(data[name]) for name in names})


def _encode(value):
    if isinstance(value, State):
        return {"__state__": f"{type(value).__module__}.{type(value).__qualname__}", **value.to_dict()}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.ravel().tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return {"__scalar__": value.item(), "dtype": value.dtype.str}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a detector state cannot hold a {type(value).__name__}")


def _decode(value):
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__state__" in value:
        cls = _STATE_TYPES.get(value["__state__"])
        if cls is None:
            raise ValueError(f"unknown state type {value['__state__']!r}")
        return cls.from_dict({k: v for k, v in value.items() if k != "__state__"})
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if "__scalar__" in value:
        return np.dtype(value["dtype"]).type(value["__scalar__"])
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k): _decode(v) for k, v in value["__items__"]}
    return {k: _decode(v) for k, v in value.items()}


@dataclass
class NoState(State):
    """The state of a detector that carries nothing between windows."""


# -- the detector --------------------------------------------------------------------------------------


class Detector(ABC):
    """One detector: stage 1 (optional) and stage 2, a state machine over a stream's feature rows.

    Subclasses set name, version, inputs, Options and State, implement process (and heartbeat/finish as
    needed), and, if they measure something of their own per frame or block, stage1_kind, stage1_outputs
    and stage1. The state is a `State` dataclass: all that is carried between windows.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]]  # which feature tables stage 2 reads: (VIDEO,), (AUDIO,) or both
    Options: ClassVar[type[Options]]
    State: ClassVar[type[State]] = NoState
    stage1_kind: ClassVar[str | None] = None  # VIDEO: stage1 reads VideoFrames; AUDIO: AudioBlocks; None: none
    stage1_outputs: ClassVar[dict[str, pa.DataType]] = {}  # the columns stage1 returns, name -> Arrow type
    # (a fixed_size_list for a per-frame vector; a plain list for one value per audio channel)
    stage1_added: ClassVar[frozenset[str]] = frozenset()  # float columns of stage1_outputs added after the
    # detector first shipped: an edge converter of an earlier build does not send them, and stage 2 gets NaN

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"{self.name} takes {self.Options.__qualname__}, got {type(self.options).__name__}")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.stage1_outputs and cls.stage1_kind not in (VIDEO, AUDIO):
            raise TypeError(f"{cls.__qualname__} declares stage1_outputs: set stage1_kind to VIDEO or AUDIO")
        if not cls.stage1_added <= set(cls.stage1_outputs):
            raise TypeError(f"{cls.__qualname__}.stage1_added names columns it does not declare in stage1_outputs")

    def stage1(self, data) -> dict[str, np.ndarray]:
        """Stage 1 over one segment (detectors.segments.VideoFrames or AudioBlocks, as stage1_kind says):
        exactly the columns of stage1_outputs, one row per frame or block."""
        return {}

    def initial_state(self) -> State:
        return self.State()

    @abstractmethod
    def process(self, state: State, kind: str, rows) -> list[Event]:
        """Consume the next feature rows of `kind` (a detectors.table.Features table, sorted by time,
        contiguous with the last call).

        Mutates `state`; returns the events that ended within these rows.
        """

    def heartbeat(self, state: State, media_time_s: float) -> list[Event]:
        """The stream's clock advanced to media_time_s without new media (a live source hung)."""
        return []

    def finish(self, state: State, end_s: float) -> list[Event]:
        """End of stream at media time end_s: close any open event there."""
        return []

    def open_events(self, state: State) -> list[Event]:
        """The defects going on at the end of the rows seen so far that have already lasted their minimum
        duration: one provisional event each, with the start its closed event will have (so the same id)
        and end = the media time at which it became reportable (start + minimum duration). The analyzer
        raises them as OPEN alarms and refreshes them (detectors/analyzer.py). Default: none (the detector
        reports at the end of a defect only)."""
        return []

    def reportable_after(self, event: Event) -> float | None:
        """How long a defect like this closed event must last before open_events raises it (its minimum
        duration); None for a detector without an open phase. Lets the analyzer raise an event that was
        over before a step could raise it, so the OPEN/CLOSED sequence does not depend on the cuts."""
        return None


REPORTABLE_AFTER = "reportable_after_s"  # details key of detectors that gather an event from several findings


def gathered_reportable_after(event: Event) -> float | None:
    """reportable_after of a detector that gathers findings into an event (clipping runs, frame-drop gaps,
    blocky frames): the event becomes reportable when its findings first meet the detector's rule, which
    is no fixed duration, so the closed event carries that point in its details (REPORTABLE_AFTER)."""
    value = event.details.get(REPORTABLE_AFTER)
    return None if value is None else float(value)


def rows_end(kind: str, rows) -> float:
    """Media time (s) where the last of these feature rows ends: its frame's or 10 ms block's end."""
    if kind == VIDEO:
        return float(rows["t"][-1] + rows["frame_dur"][-1])
    return float(rows["t"][-1] + rows["n"][-1] / rows["rate"][-1])


# -- runs ----------------------------------------------------------------------------------------------


@dataclass
class Run(State):
    """One run of a condition (consecutive rows showing a defect), open while start is not None."""

    start: float | None = None    # media s where it began
    peak: float = 0.0             # largest score of the rows that showed it wholly
    sum: float = 0.0              # sum of those scores
    n: int = 0                    # number of those rows
    evidence: bytes | None = None  # thumbnail (JPEG) of the row where it began, when the rows have one
    extra: dict = field(default_factory=dict)  # whatever else a detector gathers over the run

    def on(self, t: float, score: float, evidence: bytes | None = None) -> None:
        """A row at t wholly shows the condition with this score: the run begins there or goes on."""
        if self.start is None:
            self.start, self.peak, self.sum, self.n, self.evidence, self.extra = \
                float(t), float(score), 0.0, 0, evidence, {}
        self.peak = max(self.peak, float(score))
        self.sum += float(score)
        self.n += 1

    def open_at(self, t: float) -> None:
        """A run begins at t inside a row (no whole row yet)."""
        self.start, self.peak, self.sum, self.n, self.evidence, self.extra = float(t), 0.0, 0.0, 0, None, {}

    def off(self, end_t: float, min_duration_s: float) -> tuple[float, float, "Run"] | None:
        """Close the run at end_t; return (start, end, the closed run) if it lasted long enough."""
        if self.start is None:
            return None
        closed = dataclasses.replace(self)
        self.start, self.peak, self.sum, self.n, self.evidence, self.extra = None, 0.0, 0.0, 0, None, {}
        if end_t - closed.start >= min_duration_s - 1e-9:
            return closed.start, float(end_t), closed
        return None


def trailing_sums(tail: list, values: np.ndarray, window: int) -> tuple[np.ndarray, list]:
    """Sums of `values` (n, ...) over the trailing `window` rows ending at each row, the rows before them
    (`tail`, the last window - 1 rows of earlier calls, kept in a detector's state) included; returns the
    sums and the new tail. The same sums however the rows were cut."""
    values = np.asarray(values, np.float64)
    prior = np.asarray(tail, np.float64).reshape((-1,) + values.shape[1:])
    both = np.concatenate([prior, values]) if len(prior) else values
    csum = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(both, axis=0)])
    ends = np.arange(len(prior) + 1, len(both) + 1)
    sums = csum[ends] - csum[np.maximum(ends - window, 0)]
    return sums, (both[-(window - 1):].tolist() if window > 1 else [])


@dataclass
class RunState(State):
    runs: list[Run] = field(default_factory=list)  # one per track (one for video; one per channel or so)
    seen_end: float | None = None                  # where the rows seen so far end (media s)


class RunDetector(Detector):
    """A detector whose events are runs of rows showing a defect, on one or more tracks (the picture, each
    audio channel, ...), for rows of any kind. A run starts at its first such row (or inside a row, see
    row_edges) and ends at the first row without it (or inside it), or at the end of the stream;
    close_run turns it into an event when it lasted options.min_duration_s. Subclasses say which rows show
    the defect (row_scores) and how to report a run (make_event)."""

    State = RunState

    def row_scores(self, rows) -> np.ndarray:
        """(n,) or (n, tracks): the score of a row that wholly shows the defect, NaN for one that does not
        (or override scores())."""
        raise NotImplementedError(f"{type(self).__name__} must define row_scores or scores")

    def row_edges(self, rows) -> tuple[np.ndarray, np.ndarray] | None:
        """For rows that show the defect in part (audio blocks measured to the sample): (ends, starts), each
        (n, tracks) media seconds. ends: where a run going on at the row's start stops (the row's start
        when at once); starts: where a run lasting to the row's end begins (NaN: none). None (the default):
        a row shows it wholly or not at all, as a video frame."""
        return None

    def on_row(self, run: Run, rows, k: int, track: int) -> None:
        """Collect details of row k into run.extra while it wholly shows the defect (optional)."""

    @abstractmethod
    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        """The event of a closed run (run: its peak, sum, n, evidence, extra)."""

    def end_of_stream(self, state: RunState, end_s: float) -> float:
        """Where runs still open at the end of the stream end (default: the stream's end)."""
        return end_s

    def scores(self, state: RunState, rows) -> np.ndarray:
        """row_scores, for detectors whose scores need the rows before these (a trailing window kept in
        the state): override this instead, and update that state here."""
        return self.row_scores(rows)

    def min_duration(self, track: int) -> float:
        """How long a run on `track` must last to be an event (default: options.min_duration_s)."""
        return self.options.min_duration_s

    def span(self, start: float, end: float) -> tuple[float, float]:
        """Where the defect of a run from `start` to `end` began and ended. Default: there. A detector that
        scores trailing windows moves them back by the window's lag (see phase, low_level)."""
        return start, end

    def close_run(self, state: RunState, run: Run, end: float, track: int) -> list[Event]:
        closed = run.off(end, 0.0)
        if closed is None:
            return []
        start, end = self.span(closed[0], closed[1])
        if end - start < self.min_duration(track) - 1e-9:
            return []
        return [self.make_event(start, end, closed[2], track)]

    def reportable_after(self, event: Event) -> float | None:
        return self.options.min_duration_s

    def open_events(self, state: RunState) -> list[Event]:
        """Each track's run that has lasted its minimum duration by the end of the rows seen (see Detector)."""
        if state.seen_end is None:
            return []
        out = []
        for c, run in enumerate(state.runs):
            if run.start is None:
                continue
            start, lasting_to = self.span(run.start, state.seen_end)
            need = self.min_duration(c)
            if lasting_to - start >= need - 1e-9:
                out.append(self.make_event(start, start + need, run, c))
        return out

    def process(self, state: RunState, kind: str, rows) -> list[Event]:
        if kind not in self.inputs or not len(rows):
            return []
        scores = np.asarray(self.scores(state, rows), np.float64)
        if scores.ndim == 1:
            scores = scores[:, None]
        tracks = scores.shape[1]
        events = []
        if len(state.runs) != tracks:  # first rows, or the channel count changed (a splice): runs end here
            events += self.close_layout(state, float(rows["t"][0]))
            state.runs = [Run() for _ in range(tracks)]
        edges = self.row_edges(rows)
        next_live = self._next_live_rows(rows, scores, edges)
        ends, starts = (edges[0].tolist(), edges[1].tolist()) if edges is not None else (None, None)
        t, scores = rows["t"].tolist(), scores.tolist()
        thumbs = rows.get("thumb_jpeg")
        k = 0
        while k < len(t):
            if next_live[k] > k and self.idle(state) and all(run.start is None for run in state.runs):
                k = next_live[k]  # rows on which nothing can happen (the common case: no defect)
                continue
            for c, run in enumerate(state.runs):
                score = scores[k][c]
                if score == score:
                    run.on(t[k], score, thumbs[k] if thumbs is not None else None)
                    self.on_row(run, rows, k, c)
                    continue
                end = t[k] if ends is None else ends[k][c]
                if run.start is None and end > t[k]:  # a run from the row's start that stops inside it
                    run.open_at(t[k])
                if run.start is not None:
                    events += self.close_run(state, run, end, c)
                if starts is not None and starts[k][c] == starts[k][c]:
                    run.open_at(starts[k][c])
            events += self.after_row(state, rows, k)
            k += 1
        state.seen_end = rows_end(kind, rows)
        return events

    def _next_live_rows(self, rows, scores: np.ndarray, edges) -> np.ndarray:
        """For each row, the first row at or after it on which something can happen while no run is open
        and the detector is idle: a track shows the defect, a run starts or stops inside the row, or
        after_row has work (len(rows) when none). Skipping the others gives the same events: the per-row
        walk was most of the stage-2 CPU of the audio detectors (100 rows a second per track)."""
        t = np.asarray(rows["t"], np.float64)
        live = np.isfinite(scores).any(axis=1)
        if edges is not None:
            live |= (np.asarray(edges[0]) > t[:, None]).any(axis=1) | np.isfinite(edges[1]).any(axis=1)
        if type(self).after_row is not RunDetector.after_row:
            needed = self.after_row_rows(rows)
            live |= True if needed is None else needed
        at = np.flatnonzero(live)
        nxt = np.searchsorted(at, np.arange(len(t)))
        return np.append(at, len(t))[nxt]

    def after_row_rows(self, rows) -> np.ndarray | None:
        """(n,) bool: the rows after_row has work on while the detector is idle (see idle); None: every row."""
        return None

    def idle(self, state: RunState) -> bool:
        """Whether rows on which no track shows the defect may go unseen when no run is open (a detector
        whose after_row has work that lasts across rows says False while it has)."""
        return True

    def close_layout(self, state: RunState, at: float) -> list[Event]:
        """The tracks are about to change (another channel count): close the runs going on at `at`."""
        return [e for c, run in enumerate(state.runs) if run.start is not None
                for e in self.close_run(state, run, max(at, run.start), c)]

    def after_row(self, state: RunState, rows, k: int) -> list[Event]:
        """Called after row k on every track (optional): events that complete there."""
        return []

    def finish(self, state: RunState, end_s: float) -> list[Event]:
        end = self.end_of_stream(state, end_s)
        events = []
        for c, run in enumerate(state.runs):
            if run.start is not None:
                events += self.close_run(state, run, max(end, run.start), c)
        return events
