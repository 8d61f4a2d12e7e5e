"""decode_error: the decoder reports damage (frames it flags corrupt, packets it rejects), as one event per
burst with counts.

A live monitor's first picture alarm after the transport's: FFmpeg marks a frame it had to conceal
(`AV_FRAME_FLAG_CORRUPT`), and refuses packets it cannot parse; the converter flags an analysed frame
`decode_error` when either happened to it or to the packets since the frame before (schemas/records.py).
Damage that the decoder conceals without noticing is the blockiness detector's to find.

Flagged frames closer than merge_gap_s (1 s) are one event, from the first flagged frame to the end of
the last; it is raised at the first flagged frame (a single damaged frame is worth an alarm on a
contribution feed) and closed once merge_gap_s has passed without another. Details: how many frames
were flagged, and over how many analysed frames the burst ran.
"""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import (MAJOR, MINOR, REPORTABLE_AFTER, VIDEO, Detector, Event, Options, State,
                            gathered_reportable_after, option)
from detectors.table import Features


@dataclass(frozen=True)
class DecodeErrorOptions(Options):
    merge_gap_s: float = option(1.0, "flagged frames closer than this (s) are one event", min=0.0, max=60.0)
    major_frames: int = option(5, "a burst with at least this many flagged frames is major (else minor)",
                               min=1, max=100000)


@dataclass
class DecodeErrorState(State):
    burst: dict | None = None   # the burst being gathered: start, end, flagged, frames, evidence


class DecodeError(Detector):
    name = "decode_error"
    version = "1.0"
    inputs = (VIDEO,)
    Options = DecodeErrorOptions
    State = DecodeErrorState

    def process(self, state: DecodeErrorState, kind: str, rows: Features) -> list[Event]:
        if kind != VIDEO or not len(rows) or "decode_error" not in rows:
            return []
        events = []
        t, dur, flags = rows["t"].tolist(), rows["frame_dur"].tolist(), rows["decode_error"].tolist()
        thumbs = rows.get("thumb_jpeg")
        for k in range(len(t)):
            burst = state.burst
            if burst is not None and t[k] - burst["end"] >= self.options.merge_gap_s - 1e-9:
                events += self._close(state)
                burst = None
            if burst is not None:
                burst["frames"] += 1
            if flags[k]:
                if burst is None:
                    burst = state.burst = {"start": t[k], "end": t[k] + dur[k], "flagged": 0, "frames": 1,
                                           "reportable_at": t[k] + dur[k],
                                           "evidence": thumbs[k] if thumbs is not None else None}
                burst["end"] = t[k] + dur[k]
                burst["flagged"] += 1
                burst["span"] = burst["frames"]   # analysed frames from the first flagged to this one
        return events

    def open_events(self, state: DecodeErrorState) -> list[Event]:
        burst = state.burst
        return [] if burst is None else [self._event(burst, burst["reportable_at"])]

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def finish(self, state: DecodeErrorState, end_s: float) -> list[Event]:
        return self._close(state)

    def _close(self, state: DecodeErrorState) -> list[Event]:
        burst, state.burst = state.burst, None
        return [] if burst is None else [self._event(burst, burst["end"])]

    def _event(self, burst: dict, end: float) -> Event:
        o = self.options
        return Event(self.name, float(burst["start"]), float(end), score=float(burst["flagged"]), threshold=1.0,
                     severity=MAJOR if burst["flagged"] >= o.major_frames else MINOR,
                     details={"damaged_frames": burst["flagged"], "frames_in_burst": burst.get("span", 1),
                              "duration_s": round(end - burst["start"], 6),
                              REPORTABLE_AFTER: burst["reportable_at"] - burst["start"]},
                     evidence=burst["evidence"])
