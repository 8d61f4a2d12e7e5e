"""colorbars: SMPTE/EBU colour bars (or a test card with a bar strip) on air for at least min_duration_s.

Method. Colour bars are defined by their column structure: vertical bars, each uniform from top to bottom
of its band, whose colours follow the one sequence every standard shares, (white/grey,) yellow, cyan,
green, magenta, red, blue: the order of decreasing luma, where B is on in every other bar, R in every
other pair and G in the first half (ITU-R BT.471 / EBU Tech 3273 / SMPTE RP 219 for the HD variant with
grey side pillars). On the RGB thumbnail (64 px wide) we look at horizontal bands (one sixth of the
height, half-overlapping, so full-height EBU bars, the top two thirds of SMPTE bars, the top 7/12 of SMPTE
HD bars and a test card's bar strip are all found):

1. per column of a band, its mean colour, and whether it is uniform down the band (every channel's
   max - min <= `uniform_tolerance`);
2. each uniform column is named by its colour: achromatic when max - min of R, G, B is under
   `min_chroma` (white, grey or black by level); otherwise by which channels are above the middle of its
   own range (RGB bits 110 yellow, 011 cyan, 010 green, 101 magenta, 100 red, 001 blue), which is
   independent of the bar level (75 % or 100 %) and of a moderate gain or colour-matrix error;
3. runs of one name shorter than `min_bar_width` of the width are edge blends and dropped; a frame shows
   bars when a band has >= `min_bars` consecutive runs in the canonical order, of similar widths (largest
   / smallest <= 2.5), spanning >= `min_span` of the width.

Not bars: FFmpeg's testsrc/testsrc2 (a moving pattern with bars in another order: red, green, yellow,
blue, magenta, cyan), rainbow gradients (hue order red, yellow, green, cyan, blue, magenta cannot give
yellow-cyan-green-magenta), colourful animation. A test card without a standard bar strip is not found.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np
import pyarrow as pa

from detectors.base import MAJOR, VIDEO, Event, Options, Run, RunDetector, option
from detectors.segments import VideoFrames
from detectors.table import Features

SEQUENCE = b"YCGMRB"          # the chromatic bars of every standard, in order
_CHROMATIC = set(SEQUENCE)
# RGB "on" bits -> bar name (index = 4*R + 2*G + B); 0 and 7 cannot occur for a chromatic colour
_BITS = np.frombuffer(b"?BGCRMY?", np.uint8)


@dataclass(frozen=True)
class ColorBarsOptions(Options):
    min_duration_s: float = option(1.0, "shortest run of bars reported (s)", min=0.0, max=3600.0)
    min_bars: int = option(6, "consecutive bars of the sequence yellow, cyan, green, magenta, red, blue needed",
                           min=4, max=6)
    min_span: float = option(0.3, "the bars must span at least this share of the picture width", min=0.0, max=1.0)
    min_bar_width: float = option(0.03, "runs narrower than this share of the width are edge blends, not bars",
                                  min=0.0, max=0.2)
    uniform_tolerance: float = option(0.2, "a column is uniform down a band when no channel varies by more than "
                                      "this fraction of the range", min=0.0, max=1.0)
    min_chroma: float = option(0.2, "a column colour with max-min of R, G, B under this fraction of the range "
                               "is achromatic", min=0.0, max=1.0)


def _channel_max(x: np.ndarray) -> np.ndarray:
    """Largest of the last axis's three channels, element-wise (a reduction over an axis of 3 costs ~10x)."""
    return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])


def _channel_min(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(x[..., 0], x[..., 1]), x[..., 2])


def _name_columns(mean: np.ndarray, uniform: np.ndarray, min_chroma: float) -> np.ndarray:
    """Bar names (ASCII codes) of column colours (..., 3) in 0..1; 'x' where the column is not uniform."""
    hi, lo = _channel_max(mean), _channel_min(mean)
    chroma = hi - lo
    on = mean > (lo + chroma / 2)[..., None]
    code = _BITS[on[..., 0] * 4 + on[..., 1] * 2 + on[..., 2]]
    grey = np.where(hi >= 0.45, ord("W"), np.where(hi < 0.2, ord("K"), ord("g")))
    names = np.where(chroma < min_chroma, grey, code)
    return np.where(uniform, names, ord("x")).astype(np.uint8)


def _longest_chain(row: bytes, min_run: int) -> tuple[int, int, bool, float]:
    """Longest run of consecutive bars in SEQUENCE order in one band's column names.

    Returns (bars, span in columns, preceded by an achromatic light bar, width ratio largest/smallest).
    """
    runs = []
    for name, group in groupby(row):
        width = len(list(group))
        if width < min_run:
            continue
        if runs and runs[-1][0] == name:
            runs[-1][1] += width
        else:
            runs.append([name, width])
    best = (0, 0, False, 0.0)
    i = 0
    while i < len(runs):
        name = runs[i][0]
        if name not in _CHROMATIC:
            i += 1
            continue
        pos = SEQUENCE.index(name)
        j = i
        while j + 1 < len(runs) and pos + (j + 1 - i) < len(SEQUENCE) and runs[j + 1][0] == SEQUENCE[pos + j + 1 - i]:
            j += 1
        widths = [w for _, w in runs[i:j + 1]]
        bars = j - i + 1
        if bars > best[0]:
            white = i > 0 and runs[i - 1][0] in (ord("W"), ord("g")) and name == SEQUENCE[0]
            best = (bars, sum(widths), white, max(widths) / min(widths))
        i = j + 1
    return best


def bar_features(thumbs: np.ndarray, options: ColorBarsOptions) -> dict:
    """Per frame: colorbars_bars (longest in-order bar chain, 0..6; 0 when no band shows four of the six
    colours), colorbars_span (share of width),
    colorbars_ratio (widest / narrowest bar of the chain) and colorbars_white (a white/grey bar before yellow),
    from the best band of the RGB thumbnails (n, th, tw, 3)."""
    x = np.asarray(thumbs)
    n, th, tw = x.shape[:3]
    half = max(1, int(round(th / 12)))  # bands are two consecutive half-bands: height th/6, stride th/12
    nh = th // half
    min_run = max(2, int(round(options.min_bar_width * tw)))
    bars = np.zeros(n, np.int8)
    span = np.zeros(n, np.float32)
    ratio = np.zeros(n, np.float32)
    white = np.zeros(n, bool)
    if nh < 2 or tw < 6 * min_run:
        return {"colorbars_bars": bars, "colorbars_span": span, "colorbars_ratio": ratio, "colorbars_white": white}
    h = x[:, :nh * half].reshape(n, nh, half, tw, 3)
    # sums and extremes over each half-band's rows, element-wise row by row (a numpy reduction over that
    # short middle axis cost ~10x as much)
    hsum, hmax, hmin = h[:, :, 0].astype(np.int32), h[:, :, 0], h[:, :, 0]
    for r in range(1, half):
        hsum = hsum + h[:, :, r]
        hmax, hmin = np.maximum(hmax, h[:, :, r]), np.minimum(hmin, h[:, :, r])
    mean = (hsum[:, 1:] + hsum[:, :-1]).astype(np.float32) / (2 * half * 255.0)  # (n, nh-1, tw, 3)
    spread = _channel_max(np.maximum(hmax[:, 1:], hmax[:, :-1]).astype(np.int16) -
                          np.minimum(hmin[:, 1:], hmin[:, :-1])) / 255.0
    names = _name_columns(mean, spread <= options.uniform_tolerance, options.min_chroma)  # (n, bands, tw)
    for i in range(n):
        for b in range(nh - 1):
            row = names[i, b].tobytes()
            if len(_CHROMATIC.intersection(row)) < 4:  # cheap filter: bars need most of the six colours
                continue
            found = _longest_chain(row, min_run)
            if (found[0], found[1]) > (bars[i], span[i] * tw):
                bars[i], span[i], white[i], ratio[i] = found[0], found[1] / tw, found[2], found[3]
    return {"colorbars_bars": bars, "colorbars_span": span, "colorbars_ratio": ratio, "colorbars_white": white}


class ColorBars(RunDetector):
    name = "colorbars"
    version = "1.0"
    inputs = (VIDEO,)
    Options = ColorBarsOptions
    stage1_kind = VIDEO
    stage1_outputs = {"colorbars_bars": pa.int8(),       # longest in-order bar chain, 0..6
                      "colorbars_span": pa.float32(),    # its share of the width
                      "colorbars_ratio": pa.float32(),   # widest / narrowest bar of it
                      "colorbars_white": pa.bool_()}     # a white/grey bar before yellow

    MAX_WIDTH_RATIO = 2.5  # bars of one signal have equal widths; compression and scaling blur edges only

    def stage1(self, frames: VideoFrames) -> dict:
        return bar_features(frames.thumbs, self.options)

    def row_scores(self, rows: Features) -> np.ndarray:
        bars, span, ratio = rows["colorbars_bars"], rows["colorbars_span"], rows["colorbars_ratio"]
        return np.array([int(bars[k]) / len(SEQUENCE) if self.is_bars(int(bars[k]), float(span[k]), float(ratio[k]))
                         else np.nan for k in range(len(bars))], np.float64)

    def on_row(self, run: Run, rows: Features, k: int, track: int) -> None:
        extra = run.extra
        extra["span"] = max(extra.get("span", 0.0), float(rows["colorbars_span"][k]))
        extra["white"] = extra.get("white", 0) + int(bool(rows["colorbars_white"][k]))

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        n = max(run.n, 1)
        return Event(self.name, start, end, score=round(run.sum / n, 6),
                     threshold=self.options.min_bars / len(SEQUENCE), severity=MAJOR,
                     details={"duration_s": round(end - start, 3), "bars_found": int(round(run.peak * 6)),
                              "span_of_width": round(run.extra.get("span", 0.0), 3),
                              "white_bar_first": run.extra.get("white", 0) * 2 >= n, "frames": run.n},
                     evidence=run.evidence)

    def is_bars(self, bars: int, span: float, ratio: float) -> bool:
        o = self.options
        return bars >= o.min_bars and span >= o.min_span and 0 < ratio <= self.MAX_WIDTH_RATIO
