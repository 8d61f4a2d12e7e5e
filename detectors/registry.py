"""The one explicit list of detectors: canonical name -> Detector class.

Adding a detector: write detectors/<name>.py (a Detector subclass with its Options, State and, if it
measures something of its own per frame or block, stage1_kind/stage1_outputs/stage1), then add one line
here. Names are short, lower case, and used verbatim in the events table, the command line and the tests.
"""
from __future__ import annotations

from detectors import (audio_gap, av_sync, bitrate, black, blockiness, blur, channel_loss, clipping, colorbars,
                       decode_error, format_change, frame_drop, freeze, loudness, low_level, phase, silence,
                       solid_color, stall, transport)
from detectors.base import Detector

REGISTRY: dict[str, type[Detector]] = {
    "black": black.Black,
    "freeze": freeze.Freeze,
    "blockiness": blockiness.Blockiness,
    "blur": blur.Blur,
    "colorbars": colorbars.ColorBars,
    "solid_color": solid_color.SolidColor,
    "frame_drop": frame_drop.FrameDrop,
    "stall": stall.Stall,
    "transport": transport.Transport,
    "bitrate": bitrate.Bitrate,
    "decode_error": decode_error.DecodeError,
    "format_change": format_change.FormatChange,
    "silence": silence.Silence,
    "clipping": clipping.Clipping,
    "channel_loss": channel_loss.ChannelLoss,
    "phase": phase.Phase,
    "audio_gap": audio_gap.AudioGap,
    "low_level": low_level.LowLevel,
    "loudness": loudness.Loudness,
    "av_sync": av_sync.AvSync,
}

NAMES = tuple(REGISTRY)
# Optional checks: listed and documented, run only when named (--detectors, a config file's list)
OPTIONAL = ("low_level", "bitrate")
DEFAULT_NAMES = tuple(n for n in NAMES if n not in OPTIONAL)
