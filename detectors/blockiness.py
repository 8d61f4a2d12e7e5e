"""blockiness: block corruption / macroblocking, from the block-boundary gradient ratio.

Measure (no-reference, after Muijs & Kirenko 2005 and FFmpeg's blockdetect): block-based codecs quantise
8x8 (MPEG-2, H.264 8x8 transform) and 16x16 (macroblock) tiles independently, so a damaged or starved
picture shows luminance steps on the block grid. Per region of the full-size picture we compare the
mean absolute luma gradient across grid lines (x or y a multiple of 8) with the mean gradient at
in-block positions. A clean picture scores ~1.0; visible blocks push it well above. Stage 1 runs in the
converter on the full-size luma plane (a downscale erases the grid) and sends 3x3 region ratios and
activities per frame (`block_grid_features`).

Letterbox and pillarbox bars are left out at stage 1: a grid line next to a row or column whose mean luma is
at most BAR_LEVEL (a bar) is not counted, because a bar's edge is one large step that may lie on a grid line
(measured on the field corpus, bench/field_corpus.py: bars were the commonest false alarm).

Decision (stage 2). A region's blockiness is its ratio minus 1 (the clean level). It is clearly blocky
when that exceeds `baseline_factor` times its baseline's blockiness (at least `baseline_floor`) and the
ratio exceeds `ratio_threshold`; regions flatter than `min_activity` are not judged (flat animation has
almost no in-block gradient) unless their grid steps at least FLAT_RATIO times their in-block steps (QP 51
without deblocking flattens every block's inside, leaving only the steps between blocks). A run opens on a
frame with `min_regions` clearly blocky regions, reaches back over the frames just before it that were
blocky at the hold level (`hold_regions` regions above `hold_ratio` and `hold_factor` times their
baseline), and goes on through frames blocky at that level: damage fades in and out of view as the content
moves, and a starved encoder's blocks vary with the detail. A keyframe blocky at the hold level opens a run
too (a starved encoder's blocks start on a keyframe; the run is dropped unless it lasts). The decoder's own
error report (avwatch/convert/decoder_reports.py: FFmpeg logs the macroblocks it concealed) makes a frame
blocky by itself, its regions above their baseline saying where.

The levels were chosen on the field corpus (bench/field_corpus.py; the tune parts of two seed draws and
the first draw's held-out part: 27 defects and 17 minutes of clean footage): at the levels before (1.1,
1.8x, 2 regions) clean footage raised dozens of false alarms (letterboxed shots, low bitrates with grain,
strobes, cuts every second); a frame's second-highest region ratio on clean footage reaches 1.46 at its
99th percentile and 1.95 at its 99.9th. Now: 2.5, 3x, 3 regions, hold level 1.2 / 1.8x / 2 regions, and
compression reported from 1.5 s (MPEG-2 at a low rate has blockier I-frames for about a second).

A frame is blocky when the rules above say so, or when the decoder flagged it. A run of fewer
than `min_blocky_frames` blocky frames that never reached `strong_factor` is a sporadic spike of busy
content: it ends after `merge_gap_s` without blocky frames (at once if it started on a keyframe) and is
not reported.

Two kinds of event (the `check` field):
- "compression": a run that starts on a blocky keyframe: the blocks are in the encoding itself (a starved
  encoder). It ends at the first frame that is not blocky (blocky frames closer than `merge_gap_s` are one
  run) and must last `compression_min_duration_s`.
- "corruption": every other run, and any run with a frame the decoder flagged corrupt (`decode_error`;
  such a frame is blocky by itself). A broken packet is concealed, and the wrong picture propagates
  through prediction until the next keyframe even where the concealed blocks are smoothed away, so the event ends at the first keyframe
  after its last blocky frame (if one comes within `max_hold_s`, else at the last blocky frame); a
  keyframe always ends it, and blocks on that keyframe start a new run. Reported at any length
  (`min_duration_s`, default 0).

A shot's own picture can carry a grid: footage enlarged from CIF keeps its source's coding blocks (1.3-1.6
in a region or two). Against a baseline learnt on the shot before, a keyframe just after a cut to such a
shot read as a starved encoder's first frame (the field corpus's sixth draw: both of its blockiness false
alarms). So a scene cut (the 16x9 luma picture's mean change at least `cut_threshold`, as blur measures it)
outside a run starts the regions' baselines afresh from the new shot, a running mean over `shot_learn_s`
from its first frame, while every frame is still judged; a region reading above SHOT_CAP (2.0: clean
footage's second-highest region reaches 1.95 at its 99.9th percentile) teaches nothing, so a starved
encoder or damage that begins at the cut is still measured against the shot before (version 2.2).

Known limits: damage that the decoder did not report (upstream of a re-encode, or decoded silently)
must push three regions past 2.5, so faint or local damage (one B-frame, a few concealed macroblocks,
most damage smoothed by a later upscale) is missed; the grid is measured at period 8 and phase 0, so
damage enlarged by a non-integer factor (960x540 to 1280x720: period 10.7) is seen only through the
decoder report; a dissolve between two letterboxed shots blends the bars (no longer dark), and their
edges read as a grid. A damaged non-reference B-frame heals at the next frame but is held to the
keyframe like any corruption; a starved stretch without a keyframe inside is reported as corruption up to the next
keyframe, and one that starts mid-GOP as corruption up to the first keyframe and compression from there;
a corrupted keyframe starts a "compression" run, ending at its last blocky frame rather than at the next
keyframe; a mild starved stretch (regions under SHOT_CAP) that begins within `shot_learn_s` of a cut is
learnt as the new shot's own picture and missed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import pyarrow as pa

from detectors.base import (MAJOR, MINOR, REPORTABLE_AFTER, VIDEO, Detector, Event, Options, Run, State,
                            gathered_reportable_after, option)
from detectors.segments import CUT_THRESHOLD
from schemas.records import BLOCK_REGIONS

GRID = 8
# In-block offsets compared with the grid line (offset 0 = the step between pixel 8k-1 and 8k). Across
# rows only the middle one: the cost is memory traffic over a freshly decoded plane that is no longer in
# cache, so the rows read are kept few (measured in the converter at 1080p: 1.8 ms per frame reading
# every row, ~0.5 ms reading a quarter of them; the ratios move by < 2%).
_INNER = (2, 4, 6)
_EPS = 0.5 / 255  # a floor on the in-block gradient, so flat regions do not divide by ~0
_LINE_STEP = 1    # vertical gradients over every horizontal grid line
BAR_LEVEL = 24.0  # a row or column whose mean luma is at most this is a letterbox/pillarbox bar (16 is black)
SHOT_CAP = 2.0    # a new shot's regions teach its baseline up to this ratio (clean footage's 99.9th pct: 1.95)
FLAT_RATIO = 4.0  # a flat region is judged only when its grid steps this strongly against its in-block steps


def _sampling(height: int) -> tuple[int, tuple[int, ...]]:
    """(row step for horizontal gradients, in-block row offsets) for a plane of this height: HD planes
    are large enough to sample sparsely (few rows read = little memory traffic); small ones are not."""
    if height >= 720:
        return 8, (4,)
    if height >= 360:
        return 4, (4,)
    return 2, _INNER


@lru_cache(maxsize=32)
def _geometry(h: int, w: int, ry: int, rx: int) -> tuple:
    """Index arithmetic of one plane size and region grid, computed once (it was ~1/3 of the cost)."""
    nbx, nby = (w - 1) // GRID, (h - 1) // GRID  # whole blocks whose right/bottom grid line exists
    row_step, inner_rows = _sampling(h)
    n_rows_v = len(range(0, h, row_step))                              # rows sampled for vertical lines
    n_rows_h = len(range(GRID - 1, GRID * nby - 1, GRID * _LINE_STEP))  # horizontal grid lines
    row_edges = np.linspace(0, n_rows_v, ry + 1).astype(int)
    band_rows = np.linspace(0, n_rows_h, ry + 1).astype(int)
    blk_edges = np.linspace(0, nbx, rx + 1).astype(int)
    col_edges = np.linspace(0, w, rx + 1).astype(int)
    # Counts of steps per region, to turn sums into means.
    count_v = np.maximum(np.diff(row_edges)[:, None] * np.diff(blk_edges)[None, :], 1)
    count_h = np.maximum(np.diff(band_rows)[:, None] * np.diff(col_edges)[None, :], 1)
    bands_v = tuple(zip(row_edges[:-1].tolist(), row_edges[1:].tolist()))
    bands_h = tuple(zip(band_rows[:-1].tolist(), band_rows[1:].tolist()))
    inner_cols = np.array([o - 1 for o in _INNER])
    return (nbx, nby, row_step, inner_rows, bands_v, bands_h, blk_edges[:-1], col_edges[:-1], count_v, count_h,
            inner_cols)


def _column_sums(a: np.ndarray) -> np.ndarray:
    """Sum a 2-D uint8 array over its rows -> int64 per column (OpenCV's SIMD reduce)."""
    if a.shape[0] == 0:
        return np.zeros(a.shape[1], np.int64)
    return cv2.reduce(a, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)


def block_grid_features(luma: np.ndarray, regions: tuple[int, int] = (3, 3),
                        bars: bool = True) -> tuple[np.ndarray, np.ndarray]:
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
    if h < 2 * GRID or w < 2 * GRID:
        return np.ones(ry * rx, np.float32), np.zeros(ry * rx, np.float32)
    (nbx, nby, row_step, inner_rows, bands_v, bands_h, blk_starts, col_starts, count_v, count_h,
     inner_cols) = _geometry(h, w, ry, rx)
    # Steps across vertical grid lines: |Y[:, x] - Y[:, x-1]| on sampled rows, column profiles per row band.
    rows = y[::row_step]
    gx = cv2.absdiff(rows[:, 1:GRID * nbx + 1], rows[:, :GRID * nbx])  # gx[:, i] = step between i and i+1
    profile = np.stack([_column_sums(gx[a:b]) for a, b in bands_v]).reshape(ry, nbx, GRID)
    # Letterbox and pillarbox bars: a block column next to a bar's edge is left out (the edge is a large step
    # that may fall on a grid line; the bar itself is flat), as is a block row next to a top or bottom bar.
    # (bars=False: the measure before issue 12, which the benchmark times next to this one)
    if bars:
        col_level = cv2.reduce(rows, 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()[:GRID * nbx + 1]  # full height
        keep = ~((col_level[GRID - 1:GRID * nbx:GRID] <= BAR_LEVEL) |
                 (col_level[GRID:GRID * nbx + 1:GRID] <= BAR_LEVEL))
    if bars and not keep.all():
        keep_v = np.broadcast_to(keep, (ry, nbx))
        profile = profile * keep_v[:, :, None]
        count_v = np.maximum(np.add.reduceat(keep_v, blk_starts, axis=1) * (count_v // np.maximum(
            np.diff(np.append(blk_starts, nbx))[None, :], 1)), 1)
    grid_v = np.add.reduceat(profile[:, :, GRID - 1], blk_starts, axis=1)
    inner_v = np.add.reduceat(profile[:, :, inner_cols].mean(axis=2), blk_starts, axis=1)
    # Steps across horizontal grid lines: whole rows 8k-1 vs 8k (strided views, no copy).
    step = GRID * _LINE_STEP
    gy_grid = cv2.absdiff(y[GRID - 1:GRID * nby - 1:step], y[GRID:GRID * nby:step])
    gy_inner = [cv2.absdiff(y[o - 1:GRID * nby - 1:step], y[o:GRID * nby:step]) for o in inner_rows]
    bar = None
    if bars:
        above = cv2.reduce(y[GRID - 1:GRID * nby - 1:step], 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
        below = cv2.reduce(y[GRID:GRID * nby:step], 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
        bar = (above <= BAR_LEVEL) | (below <= BAR_LEVEL)
    if bar is not None and bar.any():  # lines at a top or bottom bar: left out of sums and counts
        gy_grid = gy_grid * ~bar[:, None]
        gy_inner = [gi * ~np.pad(bar, (0, max(0, len(gi) - len(bar))))[:len(gi), None] for gi in gy_inner]
        kept = np.array([int(np.count_nonzero(~bar[a:b])) for a, b in bands_h])
        count_h = np.maximum(count_h * (kept / np.maximum([b - a for a, b in bands_h], 1))[:, None], 1)
    g = np.stack([_column_sums(gy_grid[a:b]) for a, b in bands_h])
    n = np.stack([sum(_column_sums(gi[a:b]) for gi in gy_inner) for a, b in bands_h]) / len(inner_rows)
    grid_h = np.add.reduceat(g, col_starts, axis=1)
    inner_h = np.add.reduceat(n, col_starts, axis=1)
    grid_mean = (grid_v / count_v + grid_h / count_h) / 2 / 255
    inner_mean = (inner_v / count_v + inner_h / count_h) / 2 / 255
    ratio = ((grid_mean + _EPS) / (inner_mean + _EPS)).ravel().astype(np.float32)
    return ratio, inner_mean.ravel().astype(np.float32)


@dataclass(frozen=True)
class BlockinessOptions(Options):
    ratio_threshold: float = option(2.5, "a region is clearly blocky (a run may open) when its grid/in-block "
                                    "gradient ratio exceeds this", min=1.0, max=10.0)
    hold_ratio: float = option(1.2, "the hold level: a run reaches back over, and goes on through, frames with "
                               "hold_regions regions above this ratio and hold_factor times their baseline's "
                               "blockiness", min=1.0, max=10.0)
    hold_factor: float = option(1.8, "see hold_ratio", min=1.0, max=100.0)
    hold_regions: int = option(2, "see hold_ratio", min=1, max=9)
    baseline_factor: float = option(3.0, "... and its blockiness (ratio - 1) exceeds this many times its baseline's "
                                    "(the larger of the region's own and the stream's recent 90th percentile over "
                                    "all regions, minus 1, at least baseline_floor)", min=1.0, max=100.0)
    baseline_floor: float = option(0.06, "smallest baseline blockiness (ratio - 1) a region is compared with",
                                   min=0.01, max=10.0)
    min_regions: int = option(3, "a run opens on a frame with at least this many clearly blocky regions of its "
                              "3x3 (a frame the decoder reported damage in is blocky by itself)", min=1, max=9)
    min_activity: float = option(0.004, "regions flatter than this mean in-block gradient (fraction of range) "
                                 "are not judged", min=0.0, max=1.0)
    warmup_s: float = option(1.0, "the first seconds only teach the baseline (s)", min=0.0, max=600.0)
    baseline_s: float = option(10.0, "time constant of the baselines over clean frames (s)", min=0.5, max=3600.0)
    absorb_s: float = option(120.0, "time constant with which lasting blockiness becomes a region's baseline (s)",
                             min=1.0, max=86400.0)
    min_blocky_frames: int = option(3, "a run with fewer blocky frames than this is reported only if a region's "
                                    "blockiness reached strong_factor times its baseline's", min=1, max=1000)
    strong_factor: float = option(4.0, "see min_blocky_frames", min=1.0, max=100.0)
    max_hold_s: float = option(10.0, "a corruption event stays open until the next keyframe if it comes within "
                               "this long after the last blocky frame (s)", min=0.0, max=600.0)
    min_duration_s: float = option(0.0, "shortest corruption event reported (s); corruption often lasts a few "
                                   "frames", min=0.0, max=60.0)
    compression_min_duration_s: float = option(1.5, "shortest compression (whole-picture) blockiness reported (s)",
                                               min=0.0, max=3600.0)
    merge_gap_s: float = option(0.5, "blocky frames closer than this are one run (s)", min=0.0, max=10.0)
    cut_threshold: float = option(CUT_THRESHOLD, "a mean |change| of the 16x9 luma picture at least this fraction "
                                  "of the range is a scene cut (as blur's): outside a run, the regions' baselines are learnt afresh "
                                  "from the new shot (its own picture may carry a grid: enlarged CIF footage)",
                                  min=0.0, max=1.0)
    shot_learn_s: float = option(0.2, "after a cut, the new shot's regions teach its baseline for this long (a "
                                 "running mean from its first frame; regions above 2.0 teach nothing, and every "
                                 "frame is still judged) (s); 0 keeps the baselines across cuts", min=0.0, max=10.0)


# The stream-wide baseline: a decaying histogram of log region ratios (0.5 .. 8), read at its 90th percentile.
_HIST_EDGES = np.linspace(np.log(0.5), np.log(8.0), 97)  # 3 % bins
POOLED_QUANTILE = 0.9


def pooled_level(hist: np.ndarray, quantile: float = POOLED_QUANTILE) -> float:
    """The ratio at `quantile` of a log-ratio histogram (interpolated within its bin); 1.0 when it is empty."""
    c = np.cumsum(hist)
    if c[-1] <= 0:
        return 1.0
    target = quantile * c[-1]
    i = min(int(np.searchsorted(c, target)), len(hist) - 1)
    below = c[i - 1] if i > 0 else 0.0
    frac = (target - below) / hist[i] if hist[i] > 0 else 1.0
    return float(np.exp(_HIST_EDGES[i] + frac * (_HIST_EDGES[i + 1] - _HIST_EDGES[i])))


def _hist_bins(ratios: np.ndarray) -> np.ndarray:
    """The histogram bin of each ratio (any shape): computed for a whole call's frames at once."""
    return np.clip(np.searchsorted(_HIST_EDGES, np.log(np.maximum(ratios, 1e-6))) - 1, 0, len(_HIST_EDGES) - 2)


def _add_to_hist(hist: np.ndarray, bins: np.ndarray, decay: float) -> np.ndarray:
    return hist * decay + np.bincount(bins, minlength=len(_HIST_EDGES) - 1)


@dataclass
class BlockinessState(State):
    baseline: list[float] | None = None   # per-region ratio baseline
    hist: list[float] = field(default_factory=lambda: [0.0] * (len(_HIST_EDGES) - 1))  # decaying histogram of
    #                                       clean region ratios (stream-wide)
    learnt_s: float = 0.0                 # seconds of frames seen (warm-up)
    shot_n: int = 0                       # frames of the new shot learnt since a cut (0: none pending)
    shot_s: float = 0.0                   # ... and their seconds
    n: int = 0                            # frames averaged into the baseline during warm-up
    run: Run = field(default_factory=Run)  # the blocky run being gathered
    lead_start: float | None = None       # the streak of frames blocky at the hold level only, before a run
    lead_keyframes: int = 0               # ... and its keyframes
    last_on: float | None = None          # end time of the last blocky frame of the open run
    end_at: float | None = None           # where the open run ends, once _ended decided it

    VERSION = 3   # 2: + lead_start, lead_keyframes; 3: + shot_n, shot_s


_REGION_VALUES = pa.list_(pa.float32(), BLOCK_REGIONS[0] * BLOCK_REGIONS[1])


class Blockiness(Detector):
    name = "blockiness"
    version = "2.2"
    inputs = (VIDEO,)
    Options = BlockinessOptions
    State = BlockinessState
    stage1_kind = VIDEO
    stage1_outputs = {"block_ratio": _REGION_VALUES,      # grid / in-block gradient ratio per region, ~1 clean
                      "block_activity": _REGION_VALUES,   # mean in-block gradient per region, 0..1
                      "block_cut": pa.float32()}          # scene-cut measure (16x9 picture's mean change), 0..1
    stage1_added = frozenset({"block_cut"})

    def stage1(self, frames) -> dict:
        """The converter measured the block grid on the full-size picture; pass its per-region values on."""
        cut, _ = frames.scene
        return {"block_ratio": frames.block_ratio.astype(np.float32),
                "block_activity": frames.block_activity.astype(np.float32), "block_cut": cut}

    def process(self, state: BlockinessState, kind: str, rows) -> list[Event]:
        o = self.options
        events: list[Event] = []
        n = len(rows)
        if not n:
            return events
        ratios = np.asarray(rows["block_ratio"], np.float64)
        acts = np.asarray(rows["block_activity"], np.float64)
        # judged: textured regions, and flat ones whose grid steps strongly (a starved encoder flattens the
        # blocks' insides, leaving only the steps between them); flat animation has neither
        valids = (acts >= o.min_activity) | ((ratios * (acts + _EPS) - _EPS >= 2 * o.min_activity) &
                                             (ratios >= FLAT_RATIO))
        bins = _hist_bins(ratios)
        errors = rows["decode_error"].tolist() if "decode_error" in rows else [False] * n
        cuts = np.asarray(rows["block_cut"], np.float64) if "block_cut" in rows else np.full(n, np.nan)
        times, durs, keys = rows["t"].tolist(), rows["frame_dur"].tolist(), rows["keyframe"].tolist()
        # the baselines live in arrays while the rows are walked, and go back to the state as lists at the end
        base = None if state.baseline is None else np.asarray(state.baseline, np.float64)
        hist = np.asarray(state.hist, np.float64)
        decays: dict[float, float] = {}
        for k in range(n):
            t, dur = float(times[k]), float(durs[k])
            r, valid, keyframe = ratios[k], valids[k], bool(keys[k])
            run = state.run
            if base is None:
                base = np.where(valid, r, 1.0)
            if dur not in decays:
                decays[dur] = float(np.exp(-dur / o.baseline_s))
            decay = decays[dur]
            if state.learnt_s < o.warmup_s:  # warm-up: a running mean, no decisions
                state.n += 1
                base = base + np.where(valid, r - base, 0.0) / state.n
                hist = _add_to_hist(hist, bins[k][valid], decay)
                state.learnt_s += dur
                continue
            error = bool(errors[k])
            new_shot = bool(cuts[k] >= o.cut_threshold)  # NaN (no previous frame) is no cut
            if run.start is not None:
                state.shot_n, state.shot_s = 0, 0.0   # a run froze the baselines: no shot is being learnt
            elif o.shot_learn_s > 0 and not error and (new_shot or state.shot_n > 0):
                # a new shot: its own picture is its regions' baseline (a running mean over shot_learn_s, from
                # its first frame); a region reading above what clean footage reaches teaches nothing (damage, a
                # starved encoder), and every frame is still judged
                if new_shot:
                    state.shot_n, state.shot_s = 0, 0.0
                state.shot_n += 1
                state.shot_s += dur
                learn = valid & (r <= SHOT_CAP)
                base = np.where(learn, r, base) if state.shot_n == 1 else \
                    base + np.where(learn, r - base, 0.0) / state.shot_n
                if state.shot_s >= o.shot_learn_s - 1e-9:
                    state.shot_n, state.shot_s = 0, 0.0
            ref = np.maximum(base, pooled_level(hist))
            excess = (r - 1.0) / np.maximum(ref - 1.0, o.baseline_floor)  # blockiness above the clean level 1
            # Two levels: a run opens on a frame that is clearly blocky (ratio_threshold, baseline_factor,
            # min_regions); it reaches back over the frames just before it that were blocky at the hold level,
            # and goes on while frames stay blocky at that level (damage fades in and out of view as the
            # content moves; a starved encoder's blocks vary with the detail from frame to frame)
            held = valid & (excess > o.hold_factor) & (r > o.hold_ratio)
            n_held = int(held.sum())
            if error:  # the decoder concealed damage here: regions above their baseline at all say where
                blocky_regions = valid & (excess > 1.0)
            elif run.start is not None:
                blocky_regions = held
            else:
                blocky_regions = valid & (excess > o.baseline_factor) & (r > o.ratio_threshold)
            blocky = error or int(blocky_regions.sum()) >= (o.hold_regions if run.start is not None
                                                            else o.min_regions)
            if not blocky and run.start is None and keyframe and n_held >= o.hold_regions:
                # a keyframe blocky at the hold level opens a run too: if the blocks last compression_min_
                # duration_s they are in the encoding itself (a starved encoder); if not, a weak run is dropped
                blocky_regions, blocky = held, True
            lead = state.lead_start
            if run.start is None and not blocky and n_held >= o.hold_regions:
                if state.lead_start is None:  # blocky at the hold level only: where a run would reach back to
                    state.lead_start, state.lead_keyframes = t, 0
                state.lead_keyframes += int(keyframe)
            elif not blocky:
                state.lead_start, state.lead_keyframes = None, 0
            if run.start is not None and self._ended(state, t, keyframe, blocky):
                events += self._close(state)
                run = state.run
            if blocky:
                share = float(blocky_regions.sum()) / max(int(valid.sum()), 1)
                peak = float(np.max(np.where(blocky_regions, r, 0.0)))
                if run.start is None:
                    run.on(t, peak, rows["thumb_jpeg"][k])
                    run.extra = {"regions": 0, "shares": [], "errors": 0, "peak_excess": 0.0, "blocky": 0,
                                    "blocky_keyframes": 0}
                    if lead is not None:
                        run.start = lead
                        run.extra["blocky_keyframes"] = state.lead_keyframes
                    state.lead_start, state.lead_keyframes = None, 0
                else:
                    run.on(t, peak)
                extra = run.extra
                extra["regions"] |= int(np.sum(1 << np.flatnonzero(blocky_regions)))
                extra["shares"] = _keep_median_sample(extra["shares"], share)
                extra["errors"] += int(error)
                extra["blocky"] += 1
                extra["blocky_keyframes"] += int(keyframe)
                extra["peak_excess"] = max(extra["peak_excess"],
                                           float(np.max(excess[blocky_regions], initial=0.0)))
                state.last_on = t + dur
                self._note_reportable(state)
                # lasting blockiness slowly becomes the region's normal
                base = base + min(1.0, dur / o.absorb_s) * np.where(valid, r - base, 0.0)
            elif run.start is None:  # a clean frame outside any event teaches both baselines
                base = base + min(1.0, dur / o.baseline_s) * np.where(valid, r - base, 0.0)
                hist = _add_to_hist(hist, bins[k][valid], decay)
        state.baseline = base.tolist()
        state.hist = hist.tolist()
        return events

    def _min_duration(self, kind: str) -> float:
        o = self.options
        return o.min_duration_s if kind == "corruption" else o.compression_min_duration_s

    def _note_reportable(self, state: BlockinessState) -> None:
        """The first blocky frame at which the run is a defect (not weak, lasted its kind's minimum): the
        alarm is raised there, and the kind is settled (it is part of the alarm's identity)."""
        extra = state.run.extra
        if "reportable_at" in extra or self._weak(state):
            return
        kind = self._kind(state)
        if state.last_on - state.run.start >= self._min_duration(kind) - 1e-9:
            extra["reportable_at"], extra["kind"] = state.last_on, kind

    def open_events(self, state: BlockinessState) -> list[Event]:
        run = state.run
        if run.start is None or "reportable_at" not in run.extra:
            return []
        return [self._event(run.start, run.extra["reportable_at"], run, state.last_on)]

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def _kind(self, state: BlockinessState) -> str:
        """compression: the blocks survive a keyframe, so they are in the encoding itself (a starved encoder);
        corruption: they do not (damage propagated by prediction is repaired by a keyframe), or the decoder
        flagged a frame. Settled once the run is reportable."""
        extra = state.run.extra
        if "kind" in extra:
            return extra["kind"]
        return "compression" if extra["blocky_keyframes"] and not extra["errors"] else "corruption"

    def _ended(self, state: BlockinessState, t: float, keyframe: bool, blocky: bool) -> bool:
        """Whether the open run ended before the frame at t (which is not part of it)."""
        o = self.options
        last_on = state.last_on
        if t < last_on:
            return False
        if self._weak(state) and not blocky and (state.run.extra["blocky_keyframes"] or
                                                  t - last_on > o.merge_gap_s - 1e-9):
            # sporadic spikes that did not grow into a defect: dropped, not held to a keyframe. Intermittent
            # blocky frames (scattered damage) merge within merge_gap_s; a spike on a keyframe (whose
            # quantisation differs from the predicted frames') must be followed by blocky frames at once.
            state.end_at = last_on
            return True
        compression = self._kind(state) == "compression"
        # a keyframe repairs propagated damage: the corruption ends here; blocks on the keyframe itself are
        # a new run (compression if they last, else a sporadic spike)
        if keyframe and not compression:
            state.end_at = t
            return True
        if blocky:
            return False
        if compression:
            return t - last_on > o.merge_gap_s - 1e-9
        if t - last_on >= o.max_hold_s - 1e-9:
            state.end_at = last_on
            return True
        return False

    def _weak(self, state: BlockinessState) -> bool:
        """Too few blocky frames, none strong, no decoder flag: not (yet) a defect."""
        o = self.options
        extra = state.run.extra
        return extra["blocky"] < o.min_blocky_frames and extra["peak_excess"] < o.strong_factor and not extra["errors"]

    def _close(self, state: BlockinessState, end_s: float | None = None) -> list[Event]:
        run = state.run
        kind = self._kind(state)
        end, state.end_at = state.end_at, None
        if end is None:
            end = state.last_on if end_s is None or kind == "compression" else min(end_s, state.last_on)
        last_on = state.last_on
        weak = self._weak(state)
        closed = run.off(end, self._min_duration(kind))
        state.last_on = None
        if closed is None or weak:
            return []
        start, end, snap = closed
        return [self._event(start, end, snap, last_on)]

    def _event(self, start: float, end: float, run: Run, last_on: float) -> Event:
        o = self.options
        extra = run.extra
        kind = extra.get("kind") or ("compression" if extra["blocky_keyframes"] and not extra["errors"]
                                     else "corruption")
        regions = [i for i in range(32) if extra["regions"] >> i & 1]
        details = {"duration_s": round(end - start, 3), "peak_ratio": round(run.peak, 3),
                   "peak_excess": round(extra["peak_excess"], 3), "regions": regions,
                   "blocky_frames": extra["blocky"], "decode_errors": extra["errors"],
                   "median_region_share": round(float(np.median(extra["shares"])), 3),
                   "held_to_keyframe": bool(end > last_on + 1e-9)}
        if "reportable_at" in extra:
            details[REPORTABLE_AFTER] = extra["reportable_at"] - start
        return Event(self.name, start, end, score=round(run.peak, 6), threshold=o.ratio_threshold,
                     severity=MAJOR if kind == "corruption" else MINOR, check=kind, details=details,
                     evidence=run.evidence)

    def finish(self, state: BlockinessState, end_s: float) -> list[Event]:
        if state.run.start is None:
            return []
        return self._close(state, end_s)


def _keep_median_sample(values: list, x: float, cap: int = 64) -> list:
    """Append x to a bounded sample of per-frame shares (keeps every other value once cap is reached)."""
    values = values + [round(x, 4)]
    return values[::2] if len(values) > cap else values
