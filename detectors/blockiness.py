"""blockiness: block corruption / macroblocking, from the block-boundary gradient ratio.

Method (no-reference, after Muijs & Kirenko 2005 and FFmpeg's blockdetect): block-based codecs quantise
8x8 (MPEG-2, H.264 8x8 transform) and 16x16 (macroblock) tiles independently, so a damaged or starved
picture shows luminance steps on the block grid. Per region of the full-size picture we compare the
mean absolute luma gradient across grid lines (x or y a multiple of 8) with the mean gradient at
in-block positions. A clean picture scores ~1.0; visible blocks push it well above.

Stage 1 runs in the converter on the full-size luma plane (a downscale erases the grid) and sends
3x3 region ratios and activities per frame. Stage 2 compares each region with that region's own recent
baseline, because a corrupted packet damages a part of the picture suddenly, while a stream that is
always a little blocky (low bitrate) is its baseline, not a defect.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detectors.base import MAJOR, MINOR, VIDEO, Detector, Event, Options, RunTracker, option

GRID = 8
# In-block offsets compared with the grid line (offset 0 = the step between pixel 8k-1 and 8k).
_INNER = (2, 4, 6)
_EPS = 0.5 / 255  # a floor on the in-block gradient, so flat regions do not divide by ~0
_ROW_STEP = 4     # horizontal gradients are averaged over every 4th row: the grid is a column property


def _band_sums(values: np.ndarray, n_bands: int) -> np.ndarray:
    """Sum a 1-D profile over n_bands equal bands -> (n_bands,)."""
    edges = np.linspace(0, len(values), n_bands + 1).astype(int)
    return np.add.reduceat(values, edges[:-1]) if len(values) else np.zeros(n_bands)


def _column_sums(a: np.ndarray) -> np.ndarray:
    """Sum a 2-D uint8 array over its rows -> int64 per column (OpenCV's SIMD reduce)."""
    if a.shape[0] == 0:
        return np.zeros(a.shape[1], np.int64)
    return cv2.reduce(a, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)


def block_grid_features(luma: np.ndarray, regions: tuple[int, int] = (3, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Block-grid gradient ratio and activity per region of a full-size uint8 luma plane.

    Returns (ratio, activity), each float32 of regions[0]*regions[1] values, row-major. ratio ~1 is clean;
    activity is the mean in-block gradient as a fraction of the range (0..1), small for flat regions.
    Cost is kept to a few hundred microseconds at 1080p: OpenCV absolute differences on strided row
    views, then per-region sums of column/row profiles.
    """
    y = np.asarray(luma)
    if y.dtype != np.uint8 or y.ndim != 2:
        raise ValueError(f"luma must be a 2-D uint8 plane, got {y.dtype} with shape {y.shape}")
    h, w = y.shape
    ry, rx = regions
    ratio = np.ones(ry * rx, np.float32)
    activity = np.zeros(ry * rx, np.float32)
    if h < 2 * GRID or w < 2 * GRID:
        return ratio, activity
    nbx, nby = (w - 1) // GRID, (h - 1) // GRID  # whole blocks whose right/bottom grid line exists
    grid_v = np.zeros((ry, rx))
    inner_v = np.zeros((ry, rx))
    # Steps across vertical grid lines: |Y[:, x] - Y[:, x-1]| on every 4th row, profiles per row band.
    rows = y[::_ROW_STEP]
    gx = cv2.absdiff(rows[:, 1:GRID * nbx + 1], rows[:, :GRID * nbx])  # gx[:, i] = step between i and i+1
    row_edges = np.linspace(0, gx.shape[0], ry + 1).astype(int)
    for i in range(ry):
        profile = _column_sums(gx[row_edges[i]:row_edges[i + 1]]).reshape(nbx, GRID)
        grid_v[i] = _band_sums(profile[:, GRID - 1], rx)
        inner_v[i] = _band_sums(profile[:, [o - 1 for o in _INNER]].mean(axis=1), rx)
    # Steps across horizontal grid lines: whole rows 8k-1 vs 8k (strided views, no copy).
    grid_h = np.zeros((ry, rx))
    inner_h = np.zeros((ry, rx))
    col_edges = np.linspace(0, w, rx + 1).astype(int)
    gy_grid = cv2.absdiff(y[GRID - 1:GRID * nby - 1:GRID], y[GRID:GRID * nby:GRID])
    gy_inner = [cv2.absdiff(y[o - 1:GRID * nby - 1:GRID], y[o:GRID * nby:GRID]) for o in _INNER]
    band_rows = np.linspace(0, gy_grid.shape[0], ry + 1).astype(int)
    for i in range(ry):
        g = _column_sums(gy_grid[band_rows[i]:band_rows[i + 1]])
        n = sum(_column_sums(gi[band_rows[i]:band_rows[i + 1]]) for gi in gy_inner) / len(_INNER)
        grid_h[i] = np.add.reduceat(g, col_edges[:-1])
        inner_h[i] = np.add.reduceat(n, col_edges[:-1])
    # Counts of steps per region, to turn sums into means.
    n_rows_v = np.diff(row_edges)[:, None]
    n_cols_v = np.diff(np.linspace(0, nbx, rx + 1).astype(int))[None, :]
    n_rows_h = np.diff(band_rows)[:, None]
    n_cols_h = np.diff(col_edges)[None, :]
    count_v = np.maximum(n_rows_v * n_cols_v, 1)
    count_h = np.maximum(n_rows_h * n_cols_h, 1)
    grid_mean = (grid_v / count_v + grid_h / count_h) / 2 / 255
    inner_mean = (inner_v / count_v + inner_h / count_h) / 2 / 255
    activity[:] = inner_mean.ravel()
    ratio[:] = ((grid_mean + _EPS) / (inner_mean + _EPS)).ravel()
    return ratio, activity


def frame_features(frames, options) -> dict:
    """The converter measured the block grid on the full-size picture; pass its per-region values on."""
    return {"block_ratio": frames.block_ratio.astype(np.float32),
            "block_activity": frames.block_activity.astype(np.float32)}


@dataclass(frozen=True)
class BlockinessOptions(Options):
    ratio_threshold: float = option(1.6, "a region is blocky when its grid/in-block gradient ratio exceeds this",
                                    min=1.0, max=10.0)
    baseline_factor: float = option(1.35, "... and exceeds the region's own recent baseline by this factor",
                                    min=1.0, max=10.0)
    min_activity: float = option(0.004, "regions flatter than this mean in-block gradient (fraction of range) "
                                 "are ignored", min=0.0, max=1.0)
    baseline_s: float = option(10.0, "length of the per-region baseline memory (s)", min=0.5, max=600.0)
    min_duration_s: float = option(0.0, "shortest blocky run reported (s); corruption often lasts a few frames",
                                   min=0.0, max=60.0)
    merge_gap_s: float = option(0.5, "blocky runs closer than this are one event (s)", min=0.0, max=10.0)


class Blockiness(Detector):
    name = "blockiness"
    version = "1.0"
    inputs = (VIDEO,)
    Options = BlockinessOptions

    def initial_state(self) -> dict:
        # baseline: exponential average of each region's ratio over clean frames (None until seen)
        return {"baseline": None, "run": RunTracker.new(), "last_on": None, "last_t": None}

    def process(self, state: dict, kind: str, rows) -> list[Event]:
        o = self.options
        events: list[Event] = []
        ratios, acts = rows["block_ratio"], rows["block_activity"]
        for k, (t, dur) in enumerate(zip(rows["t"], rows["frame_dur"])):
            r, a = ratios[k].astype(np.float64), acts[k].astype(np.float64)
            base = state["baseline"]
            base_arr = np.ones_like(r) if base is None else np.asarray(base)
            valid = a >= o.min_activity
            blocky = valid & (r > o.ratio_threshold) & (r > base_arr * o.baseline_factor)
            score = float(np.max(np.where(valid, r / base_arr, 0.0))) if valid.any() else 0.0
            run = state["run"]
            if blocky.any():
                RunTracker.on(run, t, float(np.max(r[blocky])), rows["thumb_jpeg"][k])
                run["extra"]["regions"] = sorted(set(run["extra"].get("regions", [])) |
                                                 set(np.flatnonzero(blocky).tolist()))
                state["last_on"] = float(t + dur)
            else:
                # update the baseline with clean frames only, so a long corruption cannot become normal
                alpha = min(1.0, float(dur) / o.baseline_s)
                new = np.where(valid, r, base_arr)
                state["baseline"] = (new if base is None else base_arr + alpha * (new - base_arr)).tolist()
                if run["start"] is not None and t - state["last_on"] > o.merge_gap_s:
                    events += self._close(state, state["last_on"])
            state["last_t"] = float(t + dur)
        return events

    def _close(self, state: dict, end_t: float) -> list[Event]:
        o = self.options
        closed = RunTracker.off(state["run"], end_t, o.min_duration_s)
        state["last_on"] = None
        if closed is None:
            return []
        start, end, run = closed
        peak = run["peak"]
        return [Event(self.name, start, end, score=peak, threshold=o.ratio_threshold,
                      severity=MAJOR if peak >= 2 * o.ratio_threshold else MINOR,
                      details={"peak_ratio": round(peak, 3), "regions": run["extra"].get("regions", []),
                               "frames": run["n"]},
                      evidence=run["evidence"])]

    def finish(self, state: dict, end_s: float) -> list[Event]:
        if state["run"]["start"] is None:
            return []
        return self._close(state, state["last_on"] if state["last_on"] is not None else end_s)
