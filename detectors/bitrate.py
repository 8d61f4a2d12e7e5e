"""bitrate (optional): an elementary PID of an MPEG-TS source carries far less or far more than it usually does.

An encoder that starves (a frozen contribution encoder still sending padding), a statmux gone wrong, a
PID flooding the link: the bytes of each video and audio PID per second of the transport's clock, counted
by the converter (avwatch/convert/transport.py), are compared with that PID's median over the last
`window_s` (60 s). A run of at least `min_duration_s` (2 s) of seconds below `low_ratio` (30%) of the
median, or above `high_ratio` (300%), is one event (`check: low pid N` / `high pid N`) with the median,
the lowest or highest second and the ratio. Nothing is judged before `min_history_s` (10 s) of history; the
seconds of a run do not enter the median while it lasts. Optional (runs only when named): a VBR encoder
on a mostly static picture can legitimately fall below 30% of its median.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import (MINOR, REPORTABLE_AFTER, VIDEO, Detector, Event, Options, State,
                            gathered_reportable_after, option)
from detectors.segments import VideoFrames
from detectors.table import Features


@dataclass(frozen=True)
class BitrateOptions(Options):
    low_ratio: float = option(0.3, "a second below this share of the PID's median is low", min=0.0, max=1.0)
    high_ratio: float = option(3.0, "a second above this multiple of the PID's median is high", min=1.0, max=100.0)
    min_duration_s: float = option(2.0, "least duration of a low or high run (s)", min=1.0, max=600.0)
    window_s: int = option(60, "the median is over this many past seconds", min=10, max=3600)
    min_history_s: int = option(10, "seconds of history needed before judging a PID", min=3, max=3600)


@dataclass
class BitrateState(State):
    history: dict = field(default_factory=dict)   # pid (str) -> bytes of its last window_s normal seconds
    runs: dict = field(default_factory=dict)      # "low|pid" / "high|pid" -> start, end, extreme, median, n
    streams: dict = field(default_factory=dict)   # pid (str) -> what it carries


class Bitrate(Detector):
    name = "bitrate"
    version = "1.0"
    inputs = (VIDEO,)
    Options = BitrateOptions
    State = BitrateState
    stage1_kind = VIDEO
    stage1_outputs = {"bitrate_notes": pa.binary()}   # the segment's bytes per PID per second, JSON on its first row

    def stage1(self, frames: VideoFrames) -> dict:
        out = np.full(len(frames.t), b"", dtype=object)
        if frames.transport is not None and len(out):
            rates = [n for n in frames.transport.get("notes") or [] if n["check"] == "rate"]
            out[0] = json.dumps({"rates": rates, "streams": frames.transport.get("streams") or {}},
                                sort_keys=True).encode()
        return {"bitrate_notes": out}

    def process(self, state: BitrateState, kind: str, rows: Features) -> list[Event]:
        if kind != VIDEO or not len(rows) or "bitrate_notes" not in rows:
            return []
        events = []
        for blob in rows["bitrate_notes"]:
            if not blob:
                continue
            seg = json.loads(bytes(blob))
            state.streams.update(seg.get("streams") or {})
            for note in sorted(seg["rates"], key=lambda n: n["t"]):
                events += self._second(state, float(note["t"]), note["bytes"])
        return events

    def _second(self, state: BitrateState, t: float, counts: dict) -> list[Event]:
        o = self.options
        events = []
        for pid, n in sorted(counts.items()):
            history = state.history.setdefault(pid, [])
            median = float(np.median(history)) if len(history) >= o.min_history_s else None
            side = None
            if median is not None and median > 0:
                ratio = n / median
                side = "low" if ratio < o.low_ratio else "high" if ratio > o.high_ratio else None
            for other in ("low", "high"):
                if other != side:
                    events += self._close(state, f"{other}|{pid}")
            if side is None:
                history.append(int(n))
                del history[:-o.window_s]
                continue
            run = state.runs.setdefault(f"{side}|{pid}", {"start": t, "end": t + 1.0, "extreme": n,
                                                          "median": median, "n": 0})
            run["end"] = t + 1.0
            run["n"] += 1
            run["extreme"] = min(run["extreme"], n) if side == "low" else max(run["extreme"], n)
        return events

    def _close(self, state: BitrateState, key: str) -> list[Event]:
        run = state.runs.pop(key, None)
        if run is None or run["end"] - run["start"] < self.options.min_duration_s - 1e-9:
            return []
        return [self._event(state, key, run, run["end"])]

    def _event(self, state: BitrateState, key: str, run: dict, end: float) -> Event:
        side, pid = key.split("|")
        ratio = run["extreme"] / run["median"]
        limit = self.options.low_ratio if side == "low" else self.options.high_ratio
        details = {"pid": int(pid), "pid_hex": f"0x{int(pid):04X}", "median_kbps": round(run["median"] * 8 / 1000, 1),
                   f"{'lowest' if side == 'low' else 'highest'}_kbps": round(run["extreme"] * 8 / 1000, 1),
                   "ratio": round(ratio, 3), "duration_s": round(end - run["start"], 6),
                   REPORTABLE_AFTER: self.options.min_duration_s}
        if state.streams.get(pid):
            details["carries"] = state.streams[pid]
        return Event(self.name, float(run["start"]), float(end), score=float(ratio), threshold=limit, severity=MINOR,
                     check=f"{side} pid {pid}", details=details)

    def open_events(self, state: BitrateState) -> list[Event]:
        return [self._event(state, key, run, run["start"] + self.options.min_duration_s)
                for key, run in state.runs.items() if run["end"] - run["start"] >= self.options.min_duration_s - 1e-9]

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def finish(self, state: BitrateState, end_s: float) -> list[Event]:
        return [e for key in list(state.runs) for e in self._close(state, key)]
