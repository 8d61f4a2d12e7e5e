"""The stage-1 measures computed the fast way (integral images, element-wise channel extremes, OpenCV counts)
equal their plain numpy definitions, on real frames and on odd sizes whose cells are unequal."""
from __future__ import annotations

import numpy as np
import pytest

from detectors.black import GRID, black_cells, black_fraction, mean_chroma
from detectors.colorbars import ColorBarsOptions, bar_features
from detectors.freeze import flat_fraction
from detectors.segments import _cell_means
from tests.video_clips import clip_frames


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(7)
    real = [f[:, :, 1].copy() for f in clip_frames("bikes", count=6)]     # a real picture's green plane as luma
    odd = [rng.integers(0, 256, (37, 53), dtype=np.uint8), rng.integers(10, 50, (19, 83), dtype=np.uint8)]
    return real + odd


def _edges(n: int, parts: int) -> np.ndarray:
    return np.linspace(0, n, parts + 1).astype(int)


def test_black_shares_equal_their_definition(frames):
    for y in frames:
        for level in (16.0, 37.9, 128.0):
            black = y <= np.floor(level)
            assert black_fraction(y, level)[0] == np.float32(black.mean())
            ys, xs = _edges(y.shape[0], GRID), _edges(y.shape[1], GRID)
            want = [black[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() for i in range(GRID) for j in range(GRID)]
            np.testing.assert_array_equal(black_cells(y[None], level)[0], np.float32(want))


def test_cell_means_equal_their_definition(frames):
    for y in frames:
        ys, xs = _edges(y.shape[0], 4), _edges(y.shape[1], 4)
        want = [y[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() for i in range(4) for j in range(4)]
        np.testing.assert_allclose(_cell_means(y, (4, 4)), want, rtol=1e-6)


def test_mean_chroma_and_flat_fraction_equal_their_definitions(frames):
    rgb = np.stack([np.dstack([y[:16, :16], y[1:17, 2:18], y[2:18, :16]]) for y in frames])
    want = (rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)).reshape(len(rgb), -1).mean(axis=1) / 255
    np.testing.assert_array_equal(mean_chroma(rgb), want.astype(np.float32))
    for y in frames:
        g = y.astype(int)
        steps = np.maximum(np.abs(np.diff(g, axis=1))[:-1], np.abs(np.diff(g, axis=0))[:, :-1])
        assert flat_fraction(y, 2.0)[0] == np.float32((steps <= 2).mean())


def test_colour_bars_are_still_named():
    # SMPTE-like bars: white, yellow, cyan, green, magenta, red, blue (RGB at 75%)
    colours = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
    bars = np.repeat(np.array(colours, np.uint8)[None, :, :], 9, axis=1).reshape(1, 63, 3)
    thumbs = np.repeat(bars[:, None], 36, axis=1)                             # (1, 36, 63, 3)
    got = bar_features(thumbs, ColorBarsOptions())
    assert got["colorbars_bars"][0] == 6 and got["colorbars_white"][0]
    assert got["colorbars_span"][0] == pytest.approx(54 / 63)
    noise = np.random.default_rng(1).integers(0, 256, thumbs.shape, dtype=np.uint8)
    assert bar_features(noise, ColorBarsOptions())["colorbars_bars"][0] == 0


def test_dominant_colour_equals_its_definition(frames):
    from detectors.solid_color import dominant_color

    rgb = np.stack([np.dstack([y[:16, :16], y[1:17, 2:18], y[2:18, :16]]) for y in frames])
    rgb[-1] = (30, 200, 90)                                   # one solid frame: every pixel near its colour
    got_rgb, got_cover = dominant_color(rgb, 0.08)
    tol = int(np.floor(0.08 * 255))
    for i, img in enumerate(rgb):
        flat = img.reshape(-1, 3).astype(int)
        med = np.sort(flat, axis=0)[(len(flat) + 1) // 2 - 1]   # the lower median of each channel
        near = np.all(np.abs(flat - med) <= tol, axis=1).mean()
        np.testing.assert_array_equal(got_rgb[i], (med / 255.0).astype(np.float32))
        assert got_cover[i] == np.float32(near)
    assert got_cover[-1] == 1.0
