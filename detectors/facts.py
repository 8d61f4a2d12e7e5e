"""Source facts as numbers, so that stage-1 rows can carry them (format_change compares them row by row):
sizes and rates as themselves, names by their CRC-32, and back to what a person reads."""
from __future__ import annotations

import zlib

import numpy as np

# the audio facts the composer puts in every audio row (detectors/compose.py), in this order
AUDIO_FACTS = ("src_rate", "channels", "layout", "codec")

KNOWN_NAMES = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv420p10le", "yuv422p10le",
               "yuv444p10le", "nv12", "p010le", "gray", "rgb24", "bgr24", "bgr0", "rgba", "full", "limited",
               "h264", "hevc", "mpeg2video", "mpeg4", "vp8", "vp9", "av1", "prores", "mjpeg", "dnxhd", "rawvideo",
               "mono", "stereo", "2.1", "3.0", "quad", "4.0", "5.0", "5.0(side)", "5.1", "5.1(side)", "6.1", "7.1",
               "downmix", "aac", "mp2", "mp3", "ac3", "eac3", "opus", "vorbis", "flac", "pcm_s16le", "pcm_s24le",
               "s302m", "dts", "truehd")


def code(value) -> int:
    """A number for a fact, so that stage 1 rows carry it: sizes as themselves, names by their CRC-32."""
    if value is None:
        return -1
    if isinstance(value, (int, np.integer)):
        return int(value)
    return int(zlib.crc32(str(value).encode()) & 0x7FFFFFFF)


NAME_OF = {code(n): n for n in KNOWN_NAMES}


def fact(name: str, code: int):
    """A code back to what a person reads: a size, a known name, or the code of an unknown name."""
    if code == -1:
        return None
    if name in ("width", "height", "src_rate", "channels"):
        return code
    if name == "frame_rate":   # coded in millihertz
        return code / 1000.0
    return NAME_OF.get(code, f"other ({code})")


def audio_codes(source_audio: dict) -> np.ndarray:
    """The AUDIO_FACTS of a segment's source audio, coded."""
    return np.array([code(source_audio.get(k)) for k in AUDIO_FACTS], np.int64)
