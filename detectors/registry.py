"""The one explicit list of detectors: canonical name -> (module, Detector class).

Adding a detector: write detectors/<name>.py (stage-1 functions + a Detector subclass with an Options
dataclass), then add one line here. Names are short, lower case, and used verbatim in the events table,
the command line and the tests.
"""
from __future__ import annotations

from types import ModuleType

from detectors import (av_sync, black, blockiness, blur, clipping, colorbars, frame_drop, freeze, loudness,
                       silence, solid_color, stall)
from detectors.base import Detector

REGISTRY: dict[str, tuple[ModuleType, type[Detector]]] = {
    "black": (black, black.Black),
    "freeze": (freeze, freeze.Freeze),
    "blockiness": (blockiness, blockiness.Blockiness),
    "blur": (blur, blur.Blur),
    "colorbars": (colorbars, colorbars.ColorBars),
    "solid_color": (solid_color, solid_color.SolidColor),
    "frame_drop": (frame_drop, frame_drop.FrameDrop),
    "stall": (stall, stall.Stall),
    "silence": (silence, silence.Silence),
    "clipping": (clipping, clipping.Clipping),
    "loudness": (loudness, loudness.Loudness),
    "av_sync": (av_sync, av_sync.AvSync),
}

NAMES = tuple(REGISTRY)
