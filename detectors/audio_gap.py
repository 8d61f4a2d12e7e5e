"""audio_gap: no audio samples for a while (a hole in the audio's timestamps, or a track that stops
arriving while the picture goes on).

Silence is audio that is there and quiet; a gap is audio that is not there at all: an encoder or a
contribution link dropping audio frames, a splice that leaves a hole, an audio PID that stops in a
transport stream. The converter keeps such holes (it anchors each continuous run of samples at its
container timestamp, avwatch/convert/decode.py), so stage 2 sees them as a jump in the audio rows' times.

Rule:
- a jump of at least min_gap_s (0.5 s) between where the audio so far ends and the next audio block is an
  event from the end of the audio to where it resumes ("resumed");
- a track that stops arriving: once the video has gone on more than min_gap_s + arrival_slack_s past
  the end of the audio, the gap is raised as an open alarm (the slack allows audio records to arrive a
  little after the video's); it is one event until the audio returns, or, at the end of the stream,
  until the video's end ("track_ended").
A stream without audio at all has no audio gap (nothing to compare); a late start of the audio is not
reported (a job that meets a stream mid-way sees the same).
"""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import AUDIO, MAJOR, VIDEO, Detector, Event, Options, State, option, rows_end
from detectors.table import Features


@dataclass(frozen=True)
class AudioGapOptions(Options):
    min_gap_s: float = option(0.5, "shortest stretch without audio samples reported (s)", min=0.02, max=3600.0)
    arrival_slack_s: float = option(2.0, "how far the video may run ahead of the audio before a track that "
                                    "stopped arriving is raised (s): audio and video records travel separately",
                                    min=0.0, max=600.0)


@dataclass
class AudioGapState(State):
    audio_end: float | None = None   # where the audio seen so far ends (media s)
    video_end: float | None = None   # where the video seen so far ends


class AudioGap(Detector):
    name = "audio_gap"
    version = "1.0"
    inputs = (VIDEO, AUDIO)
    Options = AudioGapOptions
    State = AudioGapState

    def process(self, state: AudioGapState, kind: str, rows: Features) -> list[Event]:
        if not len(rows):
            return []
        if kind == VIDEO:
            end = rows_end(kind, rows)
            state.video_end = end if state.video_end is None else max(state.video_end, end)
            return []
        if kind != AUDIO:
            return []
        events = []
        t = rows["t"].tolist()
        ends = (rows["t"] + rows["n"] / rows["rate"]).tolist()
        for k in range(len(t)):
            if state.audio_end is not None and t[k] - state.audio_end >= self.options.min_gap_s - 1e-9:
                events.append(self._event(state.audio_end, t[k], "resumed"))
            state.audio_end = ends[k] if state.audio_end is None else max(state.audio_end, ends[k])
        return events

    def open_events(self, state: AudioGapState) -> list[Event]:
        o = self.options
        if state.audio_end is None or state.video_end is None or \
                state.video_end - state.audio_end < o.min_gap_s + o.arrival_slack_s - 1e-9:
            return []
        return [self._event(state.audio_end, state.audio_end + o.min_gap_s, "missing")]

    def reportable_after(self, event: Event) -> float | None:
        return self.options.min_gap_s

    def finish(self, state: AudioGapState, end_s: float) -> list[Event]:
        audio_end, video_end = state.audio_end, state.video_end
        state.audio_end = state.video_end = None   # closed: nothing is going on after the end (open_events)
        if audio_end is None or video_end is None or video_end - audio_end < self.options.min_gap_s - 1e-9:
            return []
        return [self._event(audio_end, video_end, "track_ended")]

    def _event(self, start: float, end: float, how: str) -> Event:
        return Event(self.name, float(start), float(end), score=round(end - start, 6),
                     threshold=self.options.min_gap_s, severity=MAJOR,
                     details={"duration_s": round(end - start, 6), "how": how})
