"""stall: a stream stops delivering media while time goes on (loss of signal).

The stream's media clock is the end of the last frame or audio block received. Time "going on" comes
from outside the media: the converter's heartbeat records (sent when a live source hangs), or the Spark
job's processing-time timer (no records for this stream while the job runs), which reports the media
time the stream should have reached. When that time is more than timeout_s past the last media, a
stall is raised at once (state OPEN, end = the time known so far); when media resumes (or the stream
ends) the same event (same start, so the same event id) is reported CLOSED with its final end, and the
sink replaces the open row.
"""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import AUDIO, CLOSED, MAJOR, OPEN, VIDEO, Detector, Event, Options, State, option, rows_end
from detectors.table import Features


@dataclass(frozen=True)
class StallOptions(Options):
    timeout_s: float = option(2.0, "media silence on all topics for longer than this is a stall (s)",
                              min=0.1, max=3600.0)


@dataclass
class StallState(State):
    last: float | None = None    # where the media received so far ends (s)
    open: float | None = None    # start of the stall being reported, if one is open
    clock: float | None = None   # the latest media time the heartbeats or the job's timer reported


class Stall(Detector):
    name = "stall"
    version = "1.0"
    inputs = (VIDEO, AUDIO)
    Options = StallOptions
    State = StallState

    def process(self, state: StallState, kind: str, rows: Features) -> list[Event]:
        if not len(rows):
            return []
        t0 = float(rows["t"][0])
        end = rows_end(kind, rows)
        events = []
        if state.open is not None and t0 >= state.open:
            events = self._close(state, t0)
        state.last = end if state.last is None else max(state.last, end)
        return events

    def heartbeat(self, state: StallState, media_time_s: float) -> list[Event]:
        state.clock = media_time_s if state.clock is None else max(state.clock, media_time_s)
        if state.last is not None and state.open is None and \
                media_time_s - state.last > self.options.timeout_s:
            state.open = state.last
            return [self._event(state.open, media_time_s, OPEN)]
        return []

    def finish(self, state: StallState, end_s: float) -> list[Event]:
        if state.open is None:
            return []
        return self._close(state, max(end_s, state.clock or end_s))

    def _close(self, state: StallState, end: float) -> list[Event]:
        start, state.open = state.open, None
        return [self._event(start, end, CLOSED)]

    def _event(self, start: float, end: float, state: str) -> Event:
        duration = end - start
        return Event(self.name, start, end, score=duration, threshold=self.options.timeout_s, severity=MAJOR,
                     details={"duration_s": round(duration, 3)}, state=state)
