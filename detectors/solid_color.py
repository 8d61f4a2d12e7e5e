"""solid_color: a uniform, non-black picture (a blue or green "no signal" screen, a grey slate) for at
least min_duration_s.

Method. A picture is uniform when nearly all of it has one colour:
- luma: the share of analysis-size luma pixels inside the fullest window of +-`luma_tolerance` of the
  range (from a 256-bin histogram, so a small caption such as "NO SIGNAL" costs only its own area);
- colour: the share of thumbnail pixels whose R, G and B are all within `color_tolerance` of the
  thumbnail's per-channel median colour, because luma alone cannot tell a uniform picture from two
  colours of equal luma.
Both shares must reach `coverage`. Sensor noise, gradients (sky), texture and any second colour bring
them down; an encoded solid colour keeps them near 1.

Not black. Black pictures belong to the black detector: a uniform colour is reported here only when its
luma is above `black_level` of the range (the black detector's pixel threshold) or it is clearly
saturated (max - min of R, G, B >= `min_chroma`). The saturated clause keeps a pure blue screen, whose
BT.709 luma is only ~7 % of the range, from being lost. Nothing else is shared with black.

Hard negatives: animation with flat colours (there is always a second colour or a gradient over more than
`1 - coverage` of the picture), sky shots (gradients wider than the tolerances), dark scenes (near black:
left to black), fades through a colour shorter than min_duration_s.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from detectors.base import MAJOR, VIDEO, Event, Options, Run, RunDetector, option
from detectors.segments import VideoFrames
from detectors.table import Features

# BT.709 luma weights for the dominant colour of the (full-range RGB) thumbnail
_LUMA_W = np.array([0.2126, 0.7152, 0.0722], np.float32)


@dataclass(frozen=True)
class SolidColorOptions(Options):
    min_duration_s: float = option(1.0, "shortest solid-colour run reported (s)", min=0.0, max=3600.0)
    coverage: float = option(0.92, "share of the picture (luma and thumbnail colour) that must be one colour",
                             min=0.5, max=1.0)
    luma_tolerance: float = option(0.02, "half-width of the luma window, fraction of the range", min=0.0, max=0.5)
    color_tolerance: float = option(0.08, "largest R/G/B distance to the dominant colour in the thumbnail, "
                                    "fraction of the range", min=0.0, max=1.0)
    black_level: float = option(0.10, "a colour with luma at or below this fraction of the range is black "
                                "(left to the black detector) unless it is saturated", min=0.0, max=1.0)
    min_chroma: float = option(0.25, "a dark colour with max-min of R, G, B at least this fraction of the range is "
                               "a colour, not black", min=0.0, max=1.0)


def luma_coverage(luma: np.ndarray, tolerance: float) -> np.ndarray:
    """Share of pixels in the fullest luma window of +-tolerance (fraction of 255): (n, H, W) -> (n,)."""
    half = int(round(tolerance * 255))
    n = len(luma)
    hist = np.empty((n, 256), np.float64)
    for i in range(n):
        hist[i] = cv2.calcHist([luma[i]], [0], None, [256], [0, 256]).ravel()
    c = np.concatenate([np.zeros((n, 1)), np.cumsum(hist, axis=1)], axis=1)  # c[:, v] = pixels < v
    lo = np.clip(np.arange(256) - half, 0, 256)
    hi = np.clip(np.arange(256) + half + 1, 0, 256)
    window = c[:, hi] - c[:, lo]
    total = np.maximum(c[:, -1], 1)
    return (window.max(axis=1) / total).astype(np.float32) if n else np.zeros(0, np.float32)


def dominant_color(thumbs: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel median colour (n, 3) in 0..1 and the share of pixels within +-tolerance of it (n,).

    The median comes from 256-bin channel histograms (the lower median of an even count); the share from
    one inRange per frame (all three channels within the tolerance).
    """
    x = np.asarray(thumbs)
    n = len(x)
    rgb = np.zeros((n, 3), np.float32)
    cover = np.zeros(n, np.float32)
    if n == 0 or x.shape[1] * x.shape[2] == 0:
        return rgb, cover
    pixels = x.shape[1] * x.shape[2]
    half = (pixels + 1) // 2
    tol = int(np.floor(tolerance * 255))
    images = [np.ascontiguousarray(img) for img in x]
    hist = np.empty((n, 3, 256), np.float32)
    for i, img in enumerate(images):
        for c in range(3):
            hist[i, c] = cv2.calcHist([img], [c], None, [256], [0, 256]).ravel()
    # the lower median: the first bin whose cumulative count reaches half, for every frame and channel at once
    med = (np.cumsum(hist, axis=2) < half).sum(axis=2)
    lo, hi = np.maximum(med - tol, 0).tolist(), np.minimum(med + tol, 255).tolist()
    for i, img in enumerate(images):
        cover[i] = cv2.countNonZero(cv2.inRange(img, tuple(lo[i]), tuple(hi[i]))) / float(pixels)
    rgb[:] = med.astype(np.float32) / 255.0
    return rgb, cover


def is_colour(rgb: np.ndarray, black_level: float, min_chroma: float) -> np.ndarray:
    """Whether dominant colours (n, 3) in 0..1 are not black: luma above the level, or saturated."""
    rgb = np.asarray(rgb, np.float32).reshape(-1, 3)
    luma = rgb @ _LUMA_W
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    return (luma > black_level) | (chroma >= min_chroma)


class SolidColor(RunDetector):
    name = "solid_color"
    version = "1.0"
    inputs = (VIDEO,)
    Options = SolidColorOptions
    stage1_kind = VIDEO
    stage1_outputs = {"solid_color_cover": pa.float32(),        # share of luma in the fullest window, 0..1
                      "solid_color_thumb_cover": pa.float32(),  # share of thumbnail pixels near its median colour
                      "solid_color_rgb": pa.list_(pa.float32(), 3)}  # that median colour, 0..1

    def stage1(self, frames: VideoFrames) -> dict:
        rgb, thumb_cover = dominant_color(frames.thumbs, self.options.color_tolerance)
        return {"solid_color_cover": luma_coverage(frames.luma, self.options.luma_tolerance),
                "solid_color_thumb_cover": thumb_cover, "solid_color_rgb": rgb}

    def row_scores(self, rows: Features) -> np.ndarray:
        o = self.options
        cover = np.minimum(rows["solid_color_cover"], rows["solid_color_thumb_cover"]).astype(np.float64)
        colour = is_colour(rows["solid_color_rgb"], o.black_level, o.min_chroma)
        return np.where((cover >= o.coverage) & colour, cover, np.nan)

    def on_row(self, run: Run, rows: Features, k: int, track: int) -> None:
        extra = run.extra
        extra["rgb_sum"] = (np.asarray(extra.get("rgb_sum", np.zeros(3))) +
                            np.asarray(rows["solid_color_rgb"][k], np.float64)).tolist()
        cover = min(float(rows["solid_color_cover"][k]), float(rows["solid_color_thumb_cover"][k]))
        extra["min_cover"] = min(extra.get("min_cover", 1.0), cover)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        n = max(run.n, 1)
        rgb = [int(round(v / n * 255)) for v in run.extra.get("rgb_sum", [0, 0, 0])]
        mean = run.sum / n
        return Event(self.name, start, end, score=round(mean, 6), threshold=self.options.coverage, severity=MAJOR,
                     details={"duration_s": round(end - start, 3), "rgb": rgb,
                              "hex": "#%02x%02x%02x" % tuple(rgb), "mean_coverage": round(mean, 4),
                              "min_coverage": round(run.extra.get("min_cover", 0.0), 4), "frames": run.n},
                     evidence=run.evidence)
