"""frame_drop: frames missing from a stream, seen in its timestamps (not its pixels).

A step between consecutive analysed frames longer than gap_factor x the nominal frame interval means
frames were lost (the number lost is step / interval - 1); a step of zero or less is a repeated or
backwards PTS. Gaps closer together than merge_gap_s are reported as one event with the total lost.
The nominal interval is the converter's sampling interval (source frame rate, or --fps), carried in
every feature row as frame_dur.
"""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import (MAJOR, MINOR, REPORTABLE_AFTER, VIDEO, Detector, Event, Options, State,
                            gathered_reportable_after, option)
from detectors.table import Features


@dataclass(frozen=True)
class FrameDropOptions(Options):
    gap_factor: float = option(1.5, "a timestamp step longer than this many frame intervals is a drop",
                               min=1.01, max=100.0)
    merge_gap_s: float = option(0.5, "drops closer together than this are one event (s)", min=0.0, max=60.0)
    min_missing: int = option(1, "fewest lost frames reported in one event", min=1, max=100000)


@dataclass
class FrameDropState(State):
    prev_t: float | None = None  # the latest frame time seen
    open: dict | None = None     # the event being gathered: start, end, missing, ratio, gaps, kinds, evidence


class FrameDrop(Detector):
    name = "frame_drop"
    version = "1.0"
    inputs = (VIDEO,)
    Options = FrameDropOptions
    State = FrameDropState

    def process(self, state: FrameDropState, kind: str, rows: Features) -> list[Event]:
        o = self.options
        events = []
        for k in range(len(rows)):
            t, dur = float(rows["t"][k]), float(rows["frame_dur"][k])
            prev = state.prev_t
            state.prev_t = t if prev is None else max(prev, t)
            if prev is None:
                continue
            step = t - prev
            opened = state.open
            if opened is not None and t - opened["end"] > o.merge_gap_s:
                events += self._close(state)
                opened = None
            if step <= 0:
                self._add(state, prev, prev + dur, 0, step / dur, "repeated_pts" if step == 0 else "backwards_pts",
                          rows["thumb_jpeg"][k])
            elif step > o.gap_factor * dur:
                missing = max(1, int(round(step / dur)) - 1)
                self._add(state, prev + dur, t, missing, step / dur, "gap", rows["thumb_jpeg"][k])
        return events

    def _add(self, state, start, end, missing, ratio, what, thumb) -> None:
        opened = state.open
        if opened is None:
            state.open = {"start": start, "end": end, "missing": missing, "ratio": ratio, "gaps": 1,
                             "kinds": [what], "evidence": thumb}
        else:
            opened["end"] = max(opened["end"], end)
            opened["missing"] += missing
            opened["ratio"] = max(opened["ratio"], ratio)
            opened["gaps"] += 1
            if what not in opened["kinds"]:
                opened["kinds"].append(what)
        opened = state.open
        if "reportable_at" not in opened and self._qualifies(opened):
            opened["reportable_at"] = end  # the gap that made it a drop worth reporting ends here

    def _qualifies(self, opened: dict) -> bool:
        return opened["missing"] >= self.options.min_missing or any(k != "gap" for k in opened["kinds"])

    def open_events(self, state: FrameDropState) -> list[Event]:
        """Drops going on (more may merge into the event) that are already worth reporting: raised at once."""
        opened = state.open
        if opened is None or "reportable_at" not in opened:
            return []
        return [self._event(opened, opened["reportable_at"])]

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def _close(self, state: FrameDropState) -> list[Event]:
        opened, state.open = state.open, None
        if opened is None or not self._qualifies(opened):
            return []
        return [self._event(opened, opened["end"])]

    def _event(self, opened: dict, end: float) -> Event:
        details = {"missing_frames": opened["missing"], "gaps": opened["gaps"], "kinds": list(opened["kinds"]),
                   "max_step_frames": round(opened["ratio"], 3),
                   REPORTABLE_AFTER: opened["reportable_at"] - opened["start"]}
        return Event(self.name, opened["start"], end, score=float(opened["ratio"]),
                     threshold=self.options.gap_factor, severity=MAJOR if opened["missing"] >= 10 else MINOR,
                     details=details, evidence=opened["evidence"])

    def finish(self, state: FrameDropState, end_s: float) -> list[Event]:
        return self._close(state)
