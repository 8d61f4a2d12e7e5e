"""freeze: the picture stops changing for at least min_duration_s.

Reference: FFmpeg freezedetect. A frame is still when its mean absolute luma difference to the previous
frame is at most `noise` (-60 dB = 0.001 of the range, FFmpeg's default). A freeze starts at the last
frame that changed (the frozen picture) and ends at the first frame that differs again.

Beyond freezedetect:
- A frozen picture that is re-encoded gets a fresh keyframe every GOP, which differs from the previous
  decoded frame by a little quantisation noise everywhere. One such frame whose largest per-cell
  difference stays under `refresh_tolerance`, followed by still frames again, does not end the freeze.
- Synthetic graphics (title cards, slates) are legitimately still; when the frozen picture is mostly
  flat (flat_frac >= graphic_flat_fraction), it must last graphic_min_duration_s before it is reported.
  Flat animation is as flat as a card, though: a frozen picture that continues pictures which moved, as
  flat, for `animation_s` (repeats pause that count: animation on twos) and was not cut to (a difference
  under CUT_DIFF) is a held frame of animation, reported after min_duration_s. (The field corpus's fourth
  draw, tune part: a frame of animation held 3.5 s, 0.87 flat, was taken for a title card and missed.)
  A title card that a cross-fade brings in after a second of animation is then a freeze: not seen there.
- A frozen picture with graphics inserted downstream still running (a clock, a ticker, an animated logo
  in the top or bottom row of the 4x4 difference grid): a frame whose other cells are still, with at
  most `max_moving_cells` moving cells all in those rows, is a still frame of a *partial* freeze; the
  event says `partial` and which cells moved (cells numbered row by row from the top left, 0-15).
  A talking head or any motion in the picture's middle rows is not.
- A frozen picture decodes to exact repeats between refreshes (the encoder codes "no change"), while a
  live static shot that an encoder smoothed still changes a little on every frame. A run is reported
  only if at least repeat_share of its frames repeat the previous one within exact_noise (-80 dB); a
  live shot whose noise survives encoding is above -60 dB anyway. The repeat test looks at the still
  part: a burnt-in clock's few changed pixels (a graphics-row cell that stands out, 4x the median cell
  change) do not make the held picture's frames non-repeats, and such a cell is named in `moved_cells`.
  (The field corpus's freeze under a running clock, re-encoded with a keyframe every second, was
  withdrawn before this: its frames differed from the previous by the clock alone, just above -80 dB.)
- Each frame is also compared with the frozen picture itself, as freezedetect does, not only with the
  previous frame: a run ends where the mean of a cell of the picture's middle rows (of the 4x4 grid, on
  the frame's thumbnail) has moved by more than `max_drift` of the range since the frozen picture. A slow
  pan of a soft picture changes each frame by less than `noise` (an encoder codes most of its frames as
  repeats) but drifts away from where it started; cell means average noise and re-encoding away (the
  field corpus's tune part: 0.005 at most over the three real freezes, 0.01 reached after 0.5 s by a slow
  pan inside a blur that was reported as a partial freeze).
- Not done: finding a held picture whose fresh noise survives encoding (every frame above `noise`): its
  cell means stay put, but so do those of a live locked-off shot with sensor noise, which is the hard
  negative; it is found only when encoding removes the noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import pyarrow as pa

from detectors.base import rows_end, MAJOR, VIDEO, Detector, Event, Options, State, option
from detectors.segments import VideoFrames
from detectors.table import Features
from schemas.records import DIFF_CELLS


@dataclass(frozen=True)
class FreezeOptions(Options):
    min_duration_s: float = option(1.0, "shortest freeze reported (s); FFmpeg's default is 2", min=0.0, max=3600.0)
    noise: float = option(0.001, "a frame is still when its mean |difference| to the previous one is at most "
                          "this fraction of the range (0.001 = -60 dB)", min=0.0, max=1.0)
    refresh_tolerance: float = option(0.02, "a single frame whose largest cell difference is at most this "
                                      "(a keyframe re-encoding a frozen picture) does not end a freeze",
                                      min=0.0, max=1.0)
    exact_noise: float = option(0.0001, "a frame repeats the previous one when their mean |difference| is at "
                                "most this fraction of the range (0.0001 = -80 dB)", min=0.0, max=1.0)
    repeat_share: float = option(0.5, "share of a still run's frames that must be repeats for a freeze",
                                 min=0.0, max=1.0)
    graphic_flat_fraction: float = option(0.85, "a frozen picture this flat is a graphic (title card, slate)",
                                          min=0.0, max=1.0)
    graphic_min_duration_s: float = option(10.0, "shortest freeze of a graphic reported (s)", min=0.0,
                                           max=3600.0)
    animation_s: float = option(1.0, "a flat frozen picture is no graphic when the picture moved, as flat, for at "
                                "least this long just before it and did not cut to it (a frame of animation "
                                "held); 0: every flat frozen picture is a graphic", min=0.0, max=60.0)
    max_drift: float = option(0.01, "a still run ends where the mean of a cell of the middle rows has moved by more "
                              "than this fraction of the range since the frozen picture (a slow pan whose every "
                              "frame is within noise); 0 turns this off", min=0.0, max=1.0)
    max_moving_cells: int = option(4, "a freeze goes on while at most this many cells of the top and bottom "
                                   "rows of the 4x4 grid move (a clock, a ticker); 0: whole-picture freezes only",
                                   min=0, max=8)


# a frame whose mean |difference| to the previous one is at least this (fraction of the range) is a cut: a
# title card cut to after animation is still a graphic (the corpus's held animation moved 0.012-0.014 per
# frame before it froze; a cut to another picture changes it several times as much)
CUT_DIFF = 0.05

# the cells of the 4x4 difference grid (schemas.records.DIFF_CELLS) where downstream graphics run: top and
# bottom rows
GRAPHICS_CELLS = frozenset(range(0, 4)) | frozenset(range(12, 16))
# ... and the others, which must stay with the frozen picture
MIDDLE_CELLS = tuple(k for k in range(16) if k not in GRAPHICS_CELLS)


def thumb_cell_means(thumbs: np.ndarray) -> np.ndarray:
    """Mean of each cell of the 4x4 grid (schemas.records.DIFF_CELLS) of each RGB thumbnail's green channel, as
    a fraction of the range: (n, th, tw, 3) uint8 -> (n, 16) float32 (NaN for a thumbnail smaller than the
    grid). Green stands for luma; a few microseconds per segment, all frames at once."""
    n = len(thumbs)
    rows, cols = DIFF_CELLS
    if thumbs.ndim != 4 or thumbs.shape[1] < rows or thumbs.shape[2] < cols:
        return np.full((n, rows * cols), np.nan, np.float32)
    in_row, in_col, area = _cell_membership(thumbs.shape[1], thumbs.shape[2])
    sums = in_row @ thumbs[..., 1].astype(np.float32) @ in_col.T   # exact: the sums stay far below 2^24
    return (sums / (area * 255.0)).reshape(n, rows * cols).astype(np.float32)


@lru_cache(maxsize=16)
def _cell_membership(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0/1 matrices saying which cell row each pixel row, and which cell column each pixel column, is in
    (cells split at linspace edges), and each cell's area: the cell sums of a stack of planes are two small
    matrix products (4x faster than nested reductions)."""
    rows, cols = DIFF_CELLS
    ys = np.linspace(0, h, rows + 1).astype(int)
    xs = np.linspace(0, w, cols + 1).astype(int)
    in_row = np.zeros((rows, h), np.float32)
    in_col = np.zeros((cols, w), np.float32)
    for a in range(rows):
        in_row[a, ys[a]:ys[a + 1]] = 1
    for b in range(cols):
        in_col[b, xs[b]:xs[b + 1]] = 1
    return in_row, in_col, np.outer(np.diff(ys), np.diff(xs))


def flat_fraction(luma: np.ndarray, step: float = 2.0) -> np.ndarray:
    """Share of pixels whose horizontal and vertical neighbour differences are both <= step (levels).

    High for graphics and flat colour fields, low for natural pictures. (n, H, W) -> (n,) float32.
    """
    y = np.asarray(luma)
    if y.ndim == 2:
        y = y[None]
    out = np.empty(len(y), np.float32)
    for i, plane in enumerate(y):
        gx = cv2.absdiff(plane[:, 1:], plane[:, :-1])[:-1]
        gy = cv2.absdiff(plane[1:], plane[:-1])[:, :-1]
        steep = cv2.threshold(cv2.max(gx, gy), step, 1, cv2.THRESH_BINARY)[1]  # 1 where a step exceeds `step`
        out[i] = float(steep.size - cv2.countNonZero(steep)) / steep.size if steep.size else 1.0
    return out


@dataclass
class FreezeState(State):
    start: float | None = None         # the frozen picture's time while a still run is open
    ref_flat: float = 0.0              # its flat_frac (a graphic when high)
    evidence: bytes | None = None      # its thumbnail
    max_diff: float = 0.0              # largest difference to the previous frame within the run
    frames: int = 0                    # still frames in the run
    repeats: int = 0                   # ... of which exact repeats
    spike_t: float | None = None       # a single changed frame that may be a keyframe refresh
    prev_t: float | None = None        # the previous frame: time, flat_frac, thumbnail
    prev_flat: float = 0.0
    prev_thumb: bytes | None = None
    seen_end: float | None = None      # where the rows seen so far end (media s)
    moved: int = 0                     # cells that moved during the run (bit k: cell k): a partial freeze
    ref_animated: bool = False         # the frozen picture continued flat moving pictures: not a graphic
    flat_motion_s: float = 0.0         # time the flat pictures since the last less flat one moved (to the last row)
    prev_animated: bool = False        # the last frame, if held, would be a held frame of animation
    prev_cells: list | None = None     # the last frame's MIDDLE_CELLS means
    ref_cells: list | None = None      # the frozen picture's, while a run is open

    VERSION = 5   # 3: + moved; 4: + the flat-motion context; 5: + the cell means


class Freeze(Detector):
    name = "freeze"
    version = "1.4"
    inputs = (VIDEO,)
    Options = FreezeOptions
    State = FreezeState
    stage1_kind = VIDEO
    stage1_outputs = {"flat_frac": pa.float32(),  # share of flat pixels (graphics are high), 0..1
                      "freeze_cell_means": pa.list_(pa.float32(), DIFF_CELLS[0] * DIFF_CELLS[1])}  # 0..1
    stage1_added = frozenset({"freeze_cell_means"})  # 1.4 (2026-11-28): without it, no drift test

    def stage1(self, frames: VideoFrames) -> dict:
        return {"flat_frac": flat_fraction(frames.luma), "freeze_cell_means": thumb_cell_means(frames.thumbs)}

    def _drifted(self, state: FreezeState, cells: list | None) -> bool:
        """Whether a cell of the middle rows has moved more than max_drift since the frozen picture."""
        ref = state.ref_cells
        if not self.options.max_drift or ref is None or cells is None:
            return False
        return any(abs(c - r) > self.options.max_drift for c, r in zip(cells, ref))  # NaN (no means): False

    def _graphics(self, cells, level: float) -> list[int] | None:
        """The cells that changed beyond `level`, when they are at most max_moving_cells cells of the graphics
        rows (downstream graphics still running over a held picture); None when anything else changed too."""
        o = self.options
        if cells is None or not o.max_moving_cells:
            return None
        moving = [k for k, d in enumerate(cells) if not d <= level]
        return moving if len(moving) <= o.max_moving_cells and set(moving) <= GRAPHICS_CELLS else None

    def _still(self, diff: float, cells) -> tuple[bool, float, int]:
        """(still, the difference of its still part, its moving cells as a bitmask) of one frame: the whole
        picture within `noise`, or all but at most max_moving_cells cells of the graphics rows.

        The still part's difference is what the repeat test reads: a burnt-in clock's few changed pixels
        (cells beyond `exact_noise`) must not make the held picture's frames non-repeats. A frame still as a
        whole names as moving the graphics cells that stand out (4x the median cell change: a small clock,
        not the picture's own noise)."""
        o = self.options
        if diff != diff:
            return False, diff, 0
        if diff <= o.noise:
            exact = self._graphics(cells, o.exact_noise) if diff > o.exact_noise else None
            rest = max((d for k, d in enumerate(cells) if k not in exact), default=0.0) if exact else diff
            shown = self._graphics(cells, max(o.noise, 4 * float(np.median(cells)))) if cells is not None else None
            return True, float(rest), sum(1 << k for k in shown or ())
        moving = self._graphics(cells, o.noise)
        if not moving:
            return False, diff, 0
        rest = max((d for k, d in enumerate(cells) if k not in moving), default=0.0)
        return True, float(rest), sum(1 << k for k in moving)

    def process(self, state: FreezeState, kind: str, rows: Features) -> list[Event]:
        o = self.options
        events = []
        cells_of = rows["diff_cells"] if "diff_cells" in rows else None
        means_of = rows["freeze_cell_means"][:, MIDDLE_CELLS] if "freeze_cell_means" in rows else None
        for k in range(len(rows)):
            t = float(rows["t"][k])
            cellmax = float(rows["diff_cellmax"][k])
            still, diff, moving = self._still(float(rows["diff_prev"][k]),
                                              None if cells_of is None else cells_of[k].tolist())
            means = None if means_of is None else means_of[k].tolist()
            if state.start is not None:
                if still and self._drifted(state, means):
                    # every frame within noise of the one before, but the picture has moved away from the frozen
                    # one: a slow pan, not a freeze
                    events += self._close(state, state.spike_t if state.spike_t is not None else t)
                elif still:
                    state.spike_t = None
                    state.frames += 1
                    state.repeats += diff <= o.exact_noise
                    state.max_diff = max(state.max_diff, diff)
                    state.moved |= moving
                elif state.spike_t is None and cellmax == cellmax and cellmax <= o.refresh_tolerance:
                    state.spike_t = t  # maybe a keyframe refresh: decide on the next frame
                    state.max_diff = max(state.max_diff, diff)
                else:
                    events += self._close(state, state.spike_t if state.spike_t is not None else t)
            elif still and state.prev_t is not None:
                # the previous frame is the frozen picture: the freeze starts there
                state.start, state.ref_flat, state.evidence = state.prev_t, state.prev_flat, state.prev_thumb
                state.max_diff, state.frames, state.repeats = diff, 1, int(diff <= o.exact_noise)
                state.spike_t, state.moved = None, moving
                state.ref_animated = state.prev_animated
                state.ref_cells = state.prev_cells
            flat = float(rows["flat_frac"][k])
            raw = float(rows["diff_prev"][k])
            # this frame, held, continues animation when the flat pictures before it moved for animation_s and it
            # was not cut to; then moving pictures as flat as a graphic add to that time, repeats pause it
            # (animation on twos), anything less flat ends it
            state.prev_animated = o.animation_s > 0 and state.flat_motion_s >= o.animation_s - 1e-9 and \
                not raw >= CUT_DIFF
            if not flat >= o.graphic_flat_fraction:
                state.flat_motion_s = 0.0
            elif raw > o.noise:
                state.flat_motion_s += float(rows["frame_dur"][k])
            state.prev_t = t
            state.prev_cells = means
            state.prev_flat = flat
            state.prev_thumb = rows["thumb_jpeg"][k]
        if len(rows):
            state.seen_end = rows_end(kind, rows)
        return events

    @staticmethod
    def _partial(moved: int) -> dict:
        cells = [k for k in range(16) if moved >> k & 1]
        return {"partial": True, "moved_cells": cells} if cells else {}

    def _graphic(self, state: FreezeState) -> bool:
        """A frozen picture flat enough to be a title card or a slate, and not a held frame of flat animation."""
        return state.ref_flat >= self.options.graphic_flat_fraction and not state.ref_animated

    def reportable_after(self, event: Event) -> float | None:
        o = self.options
        return o.graphic_min_duration_s if event.details.get("graphic") else o.min_duration_s

    def open_events(self, state: FreezeState) -> list[Event]:
        o = self.options
        if state.start is None or state.seen_end is None or state.spike_t is not None:
            return []
        needed = o.graphic_min_duration_s if self._graphic(state) else o.min_duration_s
        if state.seen_end - state.start < needed - 1e-9 or state.repeats / max(state.frames, 1) < o.repeat_share:
            return []
        return [Event(self.name, state.start, state.start + needed, score=state.max_diff, threshold=o.noise,
                      severity=MAJOR, details={"max_diff": round(state.max_diff, 6), "still_frames": state.frames,
                                               "graphic": needed != o.min_duration_s,
                                               **self._partial(state.moved)},
                      evidence=state.evidence)]

    def finish(self, state: FreezeState, end_s: float) -> list[Event]:
        if state.start is None:
            return []
        return self._close(state, state.spike_t if state.spike_t is not None else end_s)

    def _close(self, state: FreezeState, end: float) -> list[Event]:
        o = self.options
        start, flat = state.start, state.ref_flat
        graphic = self._graphic(state)
        needed = o.graphic_min_duration_s if graphic else o.min_duration_s
        event = []
        repeats = state.repeats / max(state.frames, 1)
        if end - start >= needed - 1e-9 and repeats >= o.repeat_share:
            event = [Event(self.name, start, end, score=state.max_diff, threshold=o.noise, severity=MAJOR,
                           details={"duration_s": round(end - start, 3), "max_diff": round(state.max_diff, 6),
                                    "still_frames": state.frames, "repeat_share": round(repeats, 3),
                                    "graphic": graphic,
                                    "flat_fraction": round(flat, 3), **self._partial(state.moved)},
                           evidence=state.evidence)]
        state.start, state.evidence, state.max_diff, state.frames, state.repeats, state.spike_t, state.moved = \
            None, None, 0.0, 0, 0, None, 0
        state.ref_animated, state.ref_cells = False, None
        return event
