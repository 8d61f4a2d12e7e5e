"""black: the picture is (near) black for at least min_duration_s.

Reference: FFmpeg blackdetect. A pixel is black when its luma is at or below pixel_threshold of the
luma range (for limited-range video the range is 16..235, so the level is 16 + 0.10 * 219 ~ 37.9);
a picture is black when at least picture_threshold of its pixels are. A black run starts at the first
black frame and ends at the first frame that is not (or at the end of the stream).

Beyond blackdetect, which looks at luma only: a saturated dark colour (a pure blue "no signal" screen
has luma ~32 in limited range, under the black level) is not black to a viewer; a picture whose mean
chroma (thumbnail max - min channel) exceeds max_chroma is left to solid_color. Set max_chroma to 1 to
get blackdetect's luma-only decision.

Beyond blackdetect too: a black picture under a channel logo or a burnt-in clock is still black. The
picture is cut into an 8x8 grid; when the cells that are not black (under 99.5% black pixels) are at
most `max_overlay_cells` cells, none in the centre 4x4 (graphics sit in the corners and along the edges),
the rest of the picture is judged alone: black if at least `overlay_rest_threshold` of it is and at least
`1 - max_overlay_share` of the whole. A logo or clock covering up to 5% of the picture leaves a black
picture black.

Hard negatives: fades through black shorter than min_duration_s (too short); dark night scenes (a few
percent of brighter pixels, spread over the picture rather than gathered in a corner, keep them below
picture_threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import MAJOR, VIDEO, Event, Options, Run, RunDetector, option
from detectors.segments import VideoFrames, cell_sums
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
    max_overlay_cells: int = option(9, "cells of an 8x8 grid, outside its centre 4x4, that graphics (a logo, a "
                                     "clock) may touch on a black picture (0: whole-picture rule only)", min=0,
                                    max=48)
    max_overlay_share: float = option(0.07, "most of the picture that is not black under graphics", min=0.0,
                                      max=0.2)
    overlay_rest_threshold: float = option(0.995, "share of black pixels the rest of the picture needs when "
                                           "graphics are set aside", min=0.9, max=1.0)


GRID = 8   # cells per side for the graphics rule
# where graphics sit: the two outer rings of cells (corners and edges; the centre 4x4 cells are picture)
RING = np.array([min(i, j, GRID - 1 - i, GRID - 1 - j) < 2 for i in range(GRID) for j in range(GRID)])


def black_level(pixel_threshold: float, full_range: bool) -> float:
    """The luma value (0..255) at or below which a pixel counts as black."""
    if full_range:
        return pixel_threshold * 255.0
    return 16.0 + pixel_threshold * (235.0 - 16.0)


def black_shares(luma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(share of black pixels (luma <= level) per frame (n,), per cell of a GRID x GRID grid (n, GRID*GRID)),
    float32, from one count per frame: (n, H, W) or (H, W) uint8."""
    y = np.asarray(luma)
    y = y[None] if y.ndim == 2 else y
    n, h, w = y.shape
    black = (y <= int(np.floor(level))).view(np.uint8)   # integer comparison: luma <= level <=> <= floor(level)
    counts = np.empty((n, GRID, GRID), np.int64)
    area = np.ones((GRID, GRID), np.int64)   # every frame's cells are the same (n == 0: no division uses it)
    for i in range(n):
        counts[i], area = cell_sums(black[i], (GRID, GRID))
    whole = (counts.sum(axis=(1, 2)) / max(h * w, 1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # cells are empty only on pictures under 8 pixels
        cells = (counts / area).reshape(n, -1).astype(np.float32)
    return whole, cells


def black_fraction(luma: np.ndarray, level: float) -> np.ndarray:
    """Share of pixels <= level, per frame of an (n, H, W) or (H, W) uint8 array."""
    return black_shares(luma, level)[0]


def black_cells(luma: np.ndarray, level: float) -> np.ndarray:
    """Share of black pixels per cell of a GRID x GRID grid, (n, H, W) -> (n, GRID*GRID)."""
    return black_shares(luma, level)[1]


def black_rest(cells: np.ndarray, max_cells: int, cell_threshold: float = 0.995) -> np.ndarray:
    """Per frame, the black share of the picture outside its graphics: when the cells under cell_threshold
    are at most max_cells, none in the centre (RING), the mean of the other cells; else the whole mean."""
    below = cells < cell_threshold
    count = below.sum(axis=1)
    on_ring = ~(below & ~RING).any(axis=1)
    use = (count > 0) & (count <= max_cells) & on_ring
    rest = np.where(below, np.nan, cells)
    with np.errstate(invalid="ignore"):
        kept = np.nanmean(np.where(use[:, None], rest, cells), axis=1)
    return np.where(use, kept, cells.mean(axis=1)).astype(np.float32)


def mean_chroma(thumbs: np.ndarray) -> np.ndarray:
    """Mean of (max - min) over the RGB channels per pixel, as a fraction of 255: (n, h, w, 3) -> (n,)."""
    t = np.asarray(thumbs)
    if t.size == 0:
        return np.zeros(len(t), np.float32)
    # element-wise over the three channel views: a reduction along the last axis of 3 costs ~25x as much
    r, g, b = t[..., 0], t[..., 1], t[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return (spread.reshape(len(t), -1).sum(axis=1, dtype=np.int64) / spread[0].size / 255.0).astype(np.float32)


class Black(RunDetector):
    name = "black"
    version = "1.1"
    inputs = (VIDEO,)
    Options = BlackOptions
    stage1_kind = VIDEO
    stage1_outputs = {"black_frac": pa.float32(),     # share of black pixels, 0..1
                      "black_chroma": pa.float32(),   # mean chroma of the thumbnail, 0..1
                      "black_rest": pa.float32()}     # share of black pixels outside graphics on the ring, 0..1

    def stage1(self, frames: VideoFrames) -> dict:
        o = self.options
        level = black_level(o.pixel_threshold, frames.full_range)
        frac, cells = black_shares(frames.luma, level)
        out = {"black_frac": frac, "black_chroma": mean_chroma(frames.thumbs)}
        if len(frames.luma) and o.max_overlay_cells:
            out["black_rest"] = black_rest(cells, o.max_overlay_cells, o.overlay_rest_threshold)
        else:
            out["black_rest"] = out["black_frac"].copy()
        return out

    def row_scores(self, rows: Features) -> np.ndarray:
        o = self.options
        frac = rows["black_frac"].astype(np.float64)
        chroma = rows["black_chroma"] if "black_chroma" in rows else np.zeros(len(frac))
        rest = rows["black_rest"].astype(np.float64) if "black_rest" in rows else frac
        black = frac >= o.picture_threshold
        if o.max_overlay_cells:   # black under graphics: the rest of the picture black, the graphics small
            black |= (rest >= o.overlay_rest_threshold) & (frac >= 1.0 - o.max_overlay_share)
        return np.where(black & (chroma <= o.max_chroma), frac, np.nan)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        mean = run.sum / max(run.n, 1)
        return Event(self.name, start, end, score=mean, threshold=self.options.picture_threshold, severity=MAJOR,
                     details={"duration_s": round(end - start, 3), "mean_black_share": round(mean, 4),
                              "frames": run.n},
                     evidence=run.evidence)
