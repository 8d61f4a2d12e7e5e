"""format_change: the source's picture format switches mid-stream (size, pixel format, colour range, codec).

A splice between two feeds, an encoder reconfigured, a contribution link falling back to a lower
resolution: a monitor reports the switch itself, with what it was and what it became, and the alarms of
the detectors that compare against history (freeze, blur, blockiness, A/V sync, loudness) are suppressed
around it as its consequences (detectors/alarms.py). The converter notices the switch on the decoded
frames, starts a new segment there with the new source facts and goes on at the same analysis size
(avwatch/convert/decode.py); stage 1 gives each frame its segment's facts, stage 2 reports where they
change: one event at the first frame in the new format, lasting one frame.

The first format a stream is met with is no change (a job joining mid-way sees none).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import MAJOR, VIDEO, Detector, Event, Options, State, option
from detectors.segments import VideoFrames
from detectors.table import Features

FACTS = ("width", "height", "pix_fmt", "color_range", "codec")


KNOWN_NAMES = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv420p10le", "yuv422p10le",
               "yuv444p10le", "nv12", "p010le", "gray", "rgb24", "bgr24", "bgr0", "rgba", "full", "limited",
               "h264", "hevc", "mpeg2video", "mpeg4", "vp8", "vp9", "av1", "prores", "mjpeg", "dnxhd", "rawvideo")


def _code(value) -> int:
    """A number for a fact, so that stage 1 rows carry it: sizes as themselves, names by their CRC-32."""
    if value is None:
        return -1
    if isinstance(value, (int, np.integer)):
        return int(value)
    return int(zlib.crc32(str(value).encode()) & 0x7FFFFFFF)


_NAME_OF = {_code(n): n for n in KNOWN_NAMES}


def _fact(name: str, code: int):
    """A code back to what a person reads: a size, a known name, or the code of an unknown name."""
    if code == -1:
        return None
    if name in ("width", "height"):
        return code
    return _NAME_OF.get(code, f"other ({code})")


@dataclass(frozen=True)
class FormatChangeOptions(Options):
    report_range: bool = option(True, "report a change of colour range alone (full/limited)")


@dataclass
class FormatChangeState(State):
    codes: list | None = None      # the facts of the format seen last, as codes (FACTS)


class FormatChange(Detector):
    name = "format_change"
    version = "1.0"
    inputs = (VIDEO,)
    Options = FormatChangeOptions
    State = FormatChangeState
    stage1_kind = VIDEO
    stage1_outputs = {"format_codes": pa.list_(pa.int64(), len(FACTS))}   # per frame: its segment's FACTS, coded

    def stage1(self, frames: VideoFrames) -> dict:
        codes = np.array([_code(frames.source_video.get(k)) for k in FACTS], np.int64)
        return {"format_codes": np.tile(codes, (len(frames.t), 1))}

    def process(self, state: FormatChangeState, kind: str, rows: Features) -> list[Event]:
        if kind != VIDEO or not len(rows):
            return []
        codes = rows["format_codes"]
        watched = [i for i, k in enumerate(FACTS) if k != "color_range" or self.options.report_range]
        events = []
        for k in range(len(rows)):
            row = [int(c) for c in codes[k].tolist()]
            if state.codes is not None and [row[i] for i in watched] != [state.codes[i] for i in watched]:
                before = {f: _fact(f, c) for f, c in zip(FACTS, state.codes)}
                after = {f: _fact(f, c) for f, c in zip(FACTS, row)}
                changed = {f: [before[f], after[f]] for f in FACTS if before[f] != after[f]}
                t, dur = float(rows["t"][k]), float(rows["frame_dur"][k])
                events.append(Event(self.name, t, t + dur, score=float(len(changed)), threshold=1.0,
                                    severity=MAJOR, check="video",
                                    details={"changed": changed, "before": before, "after": after}))
            state.codes = row
        return events
