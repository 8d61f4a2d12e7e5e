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
- Not done: comparing with the freeze's reference frame under a noise-aware threshold (freezedetect's
  way): a held picture with fresh noise on every frame is found only when encoding removes the noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from detectors.base import rows_end, MAJOR, VIDEO, Detector, Event, Options, State, option
from detectors.segments import VideoFrames
from detectors.table import Features


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

    VERSION = 4   # 3: + moved; 4: + the flat-motion context


class Freeze(Detector):
    name = "freeze"
    version = "1.3"
    inputs = (VIDEO,)
    Options = FreezeOptions
    State = FreezeState
    stage1_kind = VIDEO
    stage1_outputs = {"flat_frac": pa.float32()}  # share of flat pixels (graphics are high), 0..1

    def stage1(self, frames: VideoFrames) -> dict:
        return {"flat_frac": flat_fraction(frames.luma)}

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
        for k in range(len(rows)):
            t = float(rows["t"][k])
            cellmax = float(rows["diff_cellmax"][k])
            still, diff, moving = self._still(float(rows["diff_prev"][k]),
                                              None if cells_of is None else cells_of[k].tolist())
            if state.start is not None:
                if still:
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
        state.ref_animated = False
        return event
