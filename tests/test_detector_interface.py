"""The detector interface itself: the declared stage-1 outputs are what stage 1 returns (names, types and
widths), and a detector whose state layout changed starts fresh on a saved stream state instead of
misreading it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from avwatch.samples import sine
from detectors.analyzer import StreamAnalyzer
from detectors.base import AUDIO, VIDEO
from detectors.config import DetectorConfig
from detectors.features import AudioBlocks, VideoFrames, check_features, compose_audio, compose_video
from detectors.records import FRAME_FEATURES
from detectors.registry import NAMES, REGISTRY

CONFIG = DetectorConfig.build(list(NAMES))  # the optional detectors too


def video_frames(n: int = 3) -> tuple[VideoFrames, dict]:
    rng = np.random.default_rng(1)
    luma = rng.integers(16, 235, (n, 36, 64), dtype=np.uint8)
    frames = VideoFrames(t=np.arange(n) * 0.04, luma=luma, prev_luma=luma[0],
                         thumbs=rng.integers(0, 255, (n, 9, 16, 3), dtype=np.uint8), full_range=False,
                         frame_dur=0.04, block_ratio=np.ones((n, 9), np.float32),
                         block_activity=np.full((n, 9), 0.1, np.float32), luma_mean=np.full(n, 0.5, np.float32),
                         luma_std=np.full(n, 0.2, np.float32), diff_prev=np.full(n, 0.01, np.float32),
                         diff_cells=np.full((n, 16), 0.01, np.float32))
    flags = {"frame_index": np.arange(n), "keyframe": np.ones(n, bool), "decode_error": np.zeros(n, bool),
             "pts_missing": np.zeros(n, bool), "thumb_jpeg": np.array([b"jpeg"] * n, dtype=object)}
    return frames, flags


def audio_blocks(channels: int) -> AudioBlocks:
    raw = (sine(0.05, amplitude=0.5, channels=channels) * 32767).astype(np.int16)
    return AudioBlocks(t=np.arange(5) * 0.01, n=np.full(5, 480, np.int64), block=480, rate=48000,
                       samples=raw.astype(np.float32) / 32768.0, raw=raw, context=0, layout="")


def test_video_stage1_returns_its_declared_columns_and_types():
    frames, flags = video_frames()
    feats = compose_video(frames, flags, CONFIG)
    check_features(feats, CONFIG, VIDEO)
    table = feats.to_arrow()
    for field in FRAME_FEATURES.schema:
        if field.name in feats:  # the key columns stream_id, date, event_time, run_id are the sink's
            assert table.column(field.name).type == field.type, field.name


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_audio_stage1_returns_its_declared_columns_for_any_channel_count(channels):
    feats = compose_audio(audio_blocks(channels), CONFIG)
    check_features(feats, CONFIG, AUDIO)
    for klass in REGISTRY.values():
        if klass.stage1_kind == AUDIO:
            for name, arrow_type in klass.stage1_outputs.items():
                width = 1 if not pa.types.is_list(arrow_type) else channels
                assert feats[name].reshape(5, -1).shape[1] == width, name


def test_a_stage1_that_returns_other_columns_than_declared_is_refused():
    det = DetectorConfig.build(["black"]).detectors[0]
    det.stage1 = lambda frames: {"black_frac": np.zeros(3, np.float32)}  # black_chroma missing
    with pytest.raises(TypeError, match="black.stage1 returned"):
        compose_video(*video_frames(), DetectorConfig((det,)))


def test_a_changed_state_layout_restarts_that_detector_fresh(monkeypatch):
    config = DetectorConfig.build(["black", "freeze"])
    analyzer = StreamAnalyzer(config)
    state = analyzer.initial_state()
    state["detectors"]["freeze"].frames = 7          # something the old layout carried
    black_before = state["detectors"]["black"]
    monkeypatch.setattr(REGISTRY["freeze"].State, "VERSION", REGISTRY["freeze"].State.VERSION + 1)  # a new layout
    state = analyzer.reconcile(state)
    assert state["detectors"]["freeze"].frames == 0
    assert "changed" in state["cold"]["freeze"]["reason"] and "black" not in state["cold"]
    assert state["detectors"]["black"] is black_before
