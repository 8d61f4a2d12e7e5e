"""blockiness end to end: real packet corruption, a starved encoder over an interval, and hard negatives;
compared with FFmpeg's blockdetect on the same files.

Ground truth for corruption comes from decoding: a frame is damaged when its decoded luma differs from the
clean decode of the same packets (PSNR < 40 dB). The damage starts at the first corrupted packet's frame
(or a B-frame before it that references it) and, because every later frame predicts from damaged
pictures, lasts until the next keyframe: the event must start within one frame of the first damaged frame
and end within one frame of that keyframe.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.blockiness import Blockiness, BlockinessOptions, block_grid_features
from detectors.features import Features
from tests.video_clips import (FRAME, analyze, clip_frames, corrupt_packets, deaveraged, decoded_luma, encode,
                               ffmpeg_frame_values, keyframe_indices, noise_bsf_packets, picture_types, spans,
                               starve)

pytestmark = pytest.mark.footage  # real footage and FFmpeg oracle comparisons: the slower tier


GOP = 50  # a keyframe every 2 s
SIZES = {"bigbuckbunny": (640, 360)}  # the animation at half size keeps the test run short


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("blockiness")


@pytest.fixture(scope="module")
def clean_of(tmp):
    """A clean CRF 23 encode of a real clip, one per clip and test module."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = encode(tmp / f"{name}_clean.mp4", clip_frames(name, size=SIZES.get(name), count=250),
                                crf=23, gop=GOP)
        return made[name]
    return get


@pytest.fixture(scope="module")
def bikes_clean(clean_of):
    return clean_of("bikes")


def damage_interval(clean, damaged) -> tuple[int, int, np.ndarray]:
    """(first damaged frame, first clean frame after it, per-frame PSNR in dB) from the two decodes."""
    a, b = decoded_luma(clean), decoded_luma(damaged)
    assert len(a) == len(b), "the corruption must not make the decoder drop frames here"
    mse = np.array([np.mean((x - y) ** 2) for x, y in zip(a, b)])
    psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-9))
    bad = np.flatnonzero(psnr < 40)
    first = int(bad[0])
    after = int(np.flatnonzero(psnr[first:] >= 60)[0]) + first
    return first, after, psnr


def expect_one(rows, start, end, check):
    assert len(rows) == 1, spans(rows)
    row = rows[0]
    assert abs(row["start_s"] - start) <= FRAME + 1e-6, (spans(rows), start, end)
    assert abs(row["end_s"] - end) <= FRAME + 1e-6, (spans(rows), start, end)
    details = json.loads(row["details"])
    assert details["check"] == check
    return details


@pytest.mark.parametrize("name,frames", [("bikes", range(110, 113)), ("bikes", range(110, 136)),
                                         ("bikes", "one P-frame"), ("bikes", range(160, 170)),
                                         ("bigbuckbunny", range(110, 136)), ("carphone_pristine", range(160, 170))])
def test_corrupted_packets_are_found_until_the_next_keyframe(tmp, clean_of, name, frames):
    """Damaged packets of reference frames. (A damaged non-reference B-frame heals at the next frame; the
    detector cannot tell it from a reference frame and holds such an event to the keyframe too.)"""
    bikes_clean = clean_of(name)
    if frames == "one P-frame":
        p = next(i for i, kind in enumerate(picture_types(bikes_clean)) if i >= 60 and kind == "P")
        frames = range(p, p + 1)
    bad = corrupt_packets(bikes_clean, tmp / f"corrupt_{name}_{frames.start}_{len(frames)}.mp4", frames)
    first, healed, psnr = damage_interval(bikes_clean, bad)
    keys = keyframe_indices(bikes_clean)
    assert frames.start - 3 <= first <= frames.start  # the corrupted frame, or B-frames displayed before it
    assert healed == min(k for k in keys if k >= frames.stop)  # damage stays visible until the next keyframe
    assert psnr[healed - 1] < 40
    details = expect_one(analyze(bad, "blockiness"), first / 25, healed / 25, "corruption")
    assert details["peak_excess"] > BlockinessOptions().baseline_factor
    if name == "bikes" and frames == range(110, 113):  # blocks gone long before the keyframe: held to it
        assert details["held_to_keyframe"] and details["blocky_frames"] < healed - first


def test_ffmpeg_noise_bitstream_filter_over_an_interval_is_found(tmp, bikes_clean):
    """FFmpeg's own `noise` bitstream filter on the packets of frames [110, 136) (about 1 byte in 500)."""
    bad = noise_bsf_packets(bikes_clean, tmp / "noise_500.mp4", range(110, 136), 500, tmp)
    first, healed, _ = damage_interval(bikes_clean, bad)
    expect_one(analyze(bad, "blockiness"), first / 25, healed / 25, "corruption")


@pytest.mark.parametrize("name", ["bikes", "bigbuckbunny", "carphone_pristine"])
def test_a_starved_encoder_over_an_interval_is_found(tmp, name):
    """Frames [100, 175) went through an encoder at QP 42 without deblocking; the rest is clean (CRF 18)."""
    frames = clip_frames(name, size=SIZES.get(name), count=250)
    spliced = frames[:100] + starve(frames[100:175], tmp, 42) + frames[175:]
    path = encode(tmp / f"starved_{name}.mp4", spliced, crf=18, gop=GOP)
    expect_one(analyze(path, "blockiness"), 4.0, 7.0, "compression")


@pytest.mark.parametrize("name", ["bikes", "bigbuckbunny", "carphone_pristine"])
@pytest.mark.parametrize("kind", ["crf18", "crf23", "crf35", "starved36_throughout", "starved42_throughout"])
def test_blockiness_hard_negatives(tmp, name, kind):
    """Clean encodes, and streams that are uniformly blocky from the start (their baseline)."""
    frames = clip_frames(name, size=SIZES.get(name), count=200)
    if kind.startswith("starved"):
        frames = starve(frames, tmp, int(kind[7:9]))
        path = encode(tmp / f"neg_{name}_{kind}.mp4", frames, crf=18, gop=GOP)
    else:
        path = encode(tmp / f"neg_{name}_{kind}.mp4", frames, crf=int(kind[3:]), gop=GOP)
    assert analyze(path, "blockiness") == []


def test_blockdetect_agreement(tmp, bikes_clean):
    """FFmpeg 5.1's blockdetect prints the running mean of its per-frame blockiness; de-averaged, it clearly
    separates the starved interval from the clean frames (median ratio > 1.5), and we find that interval.
    On packet corruption it does not separate (the concealed picture is not more blocky on average over
    the frame), while we do: see test_corrupted_packets_are_found_until_the_next_keyframe."""
    frames = clip_frames("bigbuckbunny", size=SIZES["bigbuckbunny"], count=250)
    path = encode(tmp / "oracle_starved.mp4", frames[:100] + starve(frames[100:175], tmp, 42) + frames[175:],
                  crf=18, gop=GOP)
    theirs = deaveraged(ffmpeg_frame_values(path, "blockdetect", "lavfi.block"))
    inside, outside = theirs[100:175], np.r_[theirs[:100], theirs[175:]]
    assert np.median(inside) > 1.5 * np.median(outside)
    expect_one(analyze(path, "blockiness"), 4.0, 7.0, "compression")
    bad = corrupt_packets(bikes_clean, tmp / "oracle_corrupt.mp4", range(110, 136))
    clean_b = deaveraged(ffmpeg_frame_values(bikes_clean, "blockdetect", "lavfi.block"))
    bad_b = deaveraged(ffmpeg_frame_values(bad, "blockdetect", "lavfi.block"))
    assert np.median(bad_b[110:150]) < 1.5 * np.median(clean_b[110:150])  # FFmpeg barely moves


def test_stage1_grid_ratio_sees_an_8px_grid():
    rng = np.random.default_rng(0)
    noise = rng.normal(128, 6, (144, 176)).clip(0, 255)
    blocks = np.kron(rng.integers(60, 200, (18, 22)), np.ones((8, 8)))
    clean, _ = block_grid_features(noise.astype(np.uint8))
    blocky, act = block_grid_features((0.5 * noise + 0.5 * blocks).astype(np.uint8))
    assert np.all(np.abs(clean - 1) < 0.15) and np.all(blocky > 2) and np.all(act > 0.004)


def test_a_decoder_flagged_frame_needs_no_absolute_threshold():
    """Rows only: a region 1.4x its baseline is not blocky by itself, but is when the decoder flagged the frame."""
    det = Blockiness(BlockinessOptions(warmup_s=0.2))
    n = 30
    ratio = np.full((n, 9), 1.0, np.float32)
    ratio[10, 4] = 1.45
    ratio[20, 4] = 1.45
    rows = Features({"t": np.arange(n) * 0.04, "frame_dur": np.full(n, 0.04), "block_ratio": ratio,
            "block_activity": np.full((n, 9), 0.02, np.float32), "decode_error": np.arange(n) == 20,
            "keyframe": np.arange(n) % 25 == 0, "thumb_jpeg": np.array([b""] * n, dtype=object)})
    state = det.initial_state()
    events = det.process(state, "video", rows) + det.finish(state, n * 0.04)
    # one flagged frame at 0.8 s, held to the keyframe at 1.0 s
    assert [(round(e.start_s, 2), round(e.end_s, 2), e.check) for e in events] == [(0.8, 1.0, "corruption")]
    assert events[0].details["decode_errors"] == 1


def _shot_rows(ratio: np.ndarray, cut_at: list[int], keyframes: list[int], errors: tuple = ()) -> Features:
    n = len(ratio)
    cut = np.full(n, 0.004, np.float32)
    cut[cut_at] = 0.2
    return Features({"t": np.arange(n) * 0.04, "frame_dur": np.full(n, 0.04), "block_ratio": ratio.astype(np.float32),
                     "block_activity": np.full((n, 9), 0.02, np.float32), "block_cut": cut,
                     "decode_error": np.isin(np.arange(n), errors), "keyframe": np.isin(np.arange(n), keyframes),
                     "thumb_jpeg": np.array([b""] * n, dtype=object)})


def _found(rows: Features, **options) -> list[tuple[float, float, str]]:
    det = Blockiness(BlockinessOptions(**options))
    state = det.initial_state()
    events = det.process(state, "video", rows) + det.finish(state, len(rows) * 0.04)
    return [(round(e.start_s, 2), round(e.end_s, 2), e.check) for e in events]


def test_a_cut_to_a_shot_whose_own_picture_carries_a_grid_is_no_compression():
    # The field corpus's sixth draw, tune part (clean_s12): a cut at 4 s to enlarged CIF footage, whose own
    # coding blocks read 1.3-1.55 in two regions for the rest of the shot, and a keyframe 0.2 s after the cut.
    # Against the shot before it (1.05) that keyframe was blocky at the hold level and opened a compression run.
    rng = np.random.default_rng(0)
    ratio = 1.05 + rng.normal(0, 0.01, (250, 9))
    ratio[100:, 0] = 1.45 + rng.normal(0, 0.05, 150)
    ratio[100:, 6] = 1.3 + rng.normal(0, 0.03, 150)
    rows = _shot_rows(ratio, [100], [0, 25, 50, 75, 105, 130, 155, 180, 205, 230])
    assert _found(rows) == []
    assert [e[2] for e in _found(rows, shot_learn_s=0)] == ["compression"]   # the rule is what removes it


def test_a_starved_encoder_that_begins_at_a_cut_is_still_found():
    # regions reading above what clean footage reaches (SHOT_CAP) teach the new shot's baseline nothing
    rng = np.random.default_rng(1)
    ratio = 1.05 + rng.normal(0, 0.01, (250, 9))
    ratio[100:150] = 4.5 + rng.normal(0, 0.2, (50, 9))
    rows = _shot_rows(ratio, [100, 150], [0, 50, 100, 150, 200])
    assert _found(rows) == [(4.0, 6.0, "compression")]


def test_damage_the_decoder_reported_just_after_a_cut_is_found():
    ratio = np.full((100, 9), 1.05)
    ratio[52, 4] = 1.45
    rows = _shot_rows(ratio, [50], [0, 25, 75], errors=(52,))
    assert _found(rows) == [(2.08, 3.0, "corruption")]
