"""format_change: the source's picture format (size, pixel format, colour range, codec, frame rate) or its audio format
(sample rate, channel layout, codec) switches mid-stream.

A splice between two feeds, an encoder reconfigured, a contribution link falling back to a lower
resolution: a monitor reports the switch itself, with what it was and what it became, and the alarms of
the detectors that compare against history (freeze, blur, blockiness, A/V sync, loudness) are suppressed
around it as its consequences (detectors/alarms.py). The converter notices the switch on the decoded
frames, starts a new segment there with the new source facts and goes on at the same analysis size
(avwatch/convert/decode.py; a frame rate switch is recognised after six consecutive steps between
decoded frames at another rate); stage 1 gives each frame its segment's facts, stage 2 reports where they
change: one event at the first frame in the new format, lasting one frame (`check: video`). The audio's
facts ride in every audio row (detectors/compose.py, `audio_format`); a switch is one event at the first
10 ms block in the new format (`check: audio`), each audio track on its own.

The first format a stream is met with is no change (a job joining mid-way sees none).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import AUDIO, MAJOR, VIDEO, Detector, Event, Options, State, option
from detectors.facts import AUDIO_FACTS, code as _code, fact as _fact
from detectors.segments import VideoFrames
from detectors.table import Features

FACTS = ("width", "height", "pix_fmt", "color_range", "codec", "frame_rate")
@dataclass(frozen=True)
class FormatChangeOptions(Options):
    report_range: bool = option(True, "report a change of colour range alone (full/limited)")


@dataclass
class FormatChangeState(State):
    VERSION = 2                    # 2: + frame_rate in FACTS
    codes: list | None = None      # the facts of the format seen last, as codes (FACTS)
    audio_codes: list | None = None  # the audio's facts seen last, as codes (detectors/facts.AUDIO_FACTS)


class FormatChange(Detector):
    name = "format_change"
    version = "1.1"
    inputs = (VIDEO, AUDIO)
    Options = FormatChangeOptions
    State = FormatChangeState
    stage1_kind = VIDEO
    stage1_outputs = {"format_codes": pa.list_(pa.int64(), len(FACTS))}   # per frame: its segment's FACTS, coded

    def stage1(self, frames: VideoFrames) -> dict:
        facts = dict(frames.source_video)
        rate = facts.get("src_fps")
        facts["frame_rate"] = None if rate is None else int(round(float(rate) * 1000))   # coded in millihertz
        codes = np.array([_code(facts.get(k)) for k in FACTS], np.int64)
        return {"format_codes": np.tile(codes, (len(frames.t), 1))}

    def process(self, state: FormatChangeState, kind: str, rows: Features) -> list[Event]:
        if not len(rows):
            return []
        if kind == AUDIO:
            return self._audio(state, rows)
        codes = rows["format_codes"]
        watched = [i for i, k in enumerate(FACTS) if k != "color_range" or self.options.report_range]
        events = []
        for k in range(len(rows)):
            row = [int(c) for c in codes[k].tolist()]
            if state.codes is not None and [row[i] for i in watched] != [state.codes[i] for i in watched]:
                t, dur = float(rows["t"][k]), float(rows["frame_dur"][k])
                events.append(self._event("video", FACTS, state.codes, row, t, t + dur))
            state.codes = row
        return events

    def _audio(self, state: FormatChangeState, rows: Features) -> list[Event]:
        """The audio's sample rate, channel layout or codec switched (a splice, an encoder reconfigured)."""
        if "audio_format" not in rows:
            return []
        codes = rows["audio_format"]
        changes = np.flatnonzero(np.any(np.diff(codes, axis=0) != 0, axis=1)) + 1 if len(rows) > 1 else np.array([], int)
        events = []
        first = [int(c) for c in codes[0].tolist()]
        if state.audio_codes is not None and first != state.audio_codes:
            changes = np.concatenate([[0], changes]).astype(int)
        before = state.audio_codes
        for k in changes.tolist():
            row = [int(c) for c in codes[k].tolist()]
            prev = before if k == 0 else [int(c) for c in codes[k - 1].tolist()]
            t = float(rows["t"][k])
            events.append(self._event("audio", AUDIO_FACTS, prev, row, t, t + float(rows["n"][k]) / float(rows["rate"][k])))
        state.audio_codes = [int(c) for c in codes[-1].tolist()]
        return events

    def _event(self, check: str, names, was: list, now: list, start: float, end: float) -> Event:
        before = {f: _fact(f, c) for f, c in zip(names, was)}
        after = {f: _fact(f, c) for f, c in zip(names, now)}
        changed = {f: [before[f], after[f]] for f in names if before[f] != after[f]}
        return Event(self.name, start, end, score=float(len(changed)), threshold=1.0, severity=MAJOR, check=check,
                     details={"changed": changed, "before": before, "after": after})
