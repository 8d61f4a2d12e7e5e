"""black: the picture is (near) black for at least min_duration_s.

Reference: FFmpeg blackdetect. A pixel is black when its luma is at or below pixel_threshold of the
luma range (for limited-range video the range is 16..235, so the level is 16 + 0.10 * 219 ~ 37.9);
a picture is black when at least picture_threshold of its pixels are. A black run starts at the first
black frame and ends at the first frame that is not (or at the end of the stream).

Beyond blackdetect, which looks at luma only: a saturated dark colour (a pure blue "no signal" screen
has luma ~32 in limited range, under the black level) is not black to a viewer; a picture whose mean
chroma (thumbnail max - min channel) exceeds max_chroma is left to solid_color. Set max_chroma to 1 to
get blackdetect's luma-only decision.

Hard negatives: fades through black shorter than min_duration_s (too short); dark night scenes (a few
percent of brighter pixels keep them below picture_threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import MAJOR, VIDEO, Event, Options, Run, RunDetector, option
from detectors.segments import VideoFrames
from detectors.table import Features


@dataclass(frozen=True)
class BlackOptions(Options):
    min_duration_s: float = option(1.0, "shortest black run reported (s); FFmpeg's default is 2", min=0.0,
                                   max=3600.0)
    picture_threshold: float = option(0.98, "share of black pixels that makes a picture black", min=0.0, max=1.0)
    pixel_threshold: float = option(0.10, "a pixel is black at or below this fraction of the luma range",
                                    min=0.0, max=1.0)
    max_chroma: float = option(0.15, "a picture whose mean chroma (fraction of range) exceeds this is a dark "
                               "colour, not black (1 = luma only, like blackdetect)", min=0.0, max=1.0)


def black_level(pixel_threshold: float, full_range: bool) -> float:
    """The luma value (0..255) at or below which a pixel counts as black."""
    if full_range:
        return pixel_threshold * 255.0
    return 16.0 + pixel_threshold * (235.0 - 16.0)


def black_fraction(luma: np.ndarray, level: float) -> np.ndarray:
    """Share of pixels <= level, per frame of an (n, H, W) or (H, W) uint8 array."""
    y = np.asarray(luma)
    flat = y.reshape(y.shape[0], -1) if y.ndim == 3 else y.reshape(1, -1)
    # integer comparison: luma <= level  <=>  luma <= floor(level)
    return (flat <= int(np.floor(level))).mean(axis=1).astype(np.float32)


def mean_chroma(thumbs: np.ndarray) -> np.ndarray:
    """Mean of (max - min) over the RGB channels per pixel, as a fraction of 255: (n, h, w, 3) -> (n,)."""
    t = np.asarray(thumbs)
    if t.size == 0:
        return np.zeros(len(t), np.float32)
    return ((t.max(axis=-1).astype(np.int16) - t.min(axis=-1)).reshape(len(t), -1).mean(axis=1) / 255.0
            ).astype(np.float32)


class Black(RunDetector):
    name = "black"
    version = "1.0"
    inputs = (VIDEO,)
    Options = BlackOptions
    stage1_kind = VIDEO
    stage1_outputs = {"black_frac": pa.float32(),     # share of black pixels, 0..1
                      "black_chroma": pa.float32()}   # mean chroma of the thumbnail, 0..1

    def stage1(self, frames: VideoFrames) -> dict:
        level = black_level(self.options.pixel_threshold, frames.full_range)
        return {"black_frac": black_fraction(frames.luma, level), "black_chroma": mean_chroma(frames.thumbs)}

    def row_scores(self, rows: Features) -> np.ndarray:
        o = self.options
        frac = rows["black_frac"].astype(np.float64)
        chroma = rows["black_chroma"] if "black_chroma" in rows else np.zeros(len(frac))
        return np.where((frac >= o.picture_threshold) & (chroma <= o.max_chroma), frac, np.nan)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        mean = run.sum / max(run.n, 1)
        return Event(self.name, start, end, score=mean, threshold=self.options.picture_threshold, severity=MAJOR,
                     details={"duration_s": round(end - start, 3), "mean_black_share": round(mean, 4),
                              "frames": run.n},
                     evidence=run.evidence)
