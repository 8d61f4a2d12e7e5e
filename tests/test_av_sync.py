"""The av_sync detector (audio ahead of or behind the picture), unit to end to end.

- Unit: stage 1 (block envelope and sub-block centroid), the window estimate on synthetic flash/beep
  envelopes at sub-block offsets, the BT.1359 grades, the decision and "not enough data" outcomes,
  bounded state, and split invariance (hypothesis: rows cut anywhere, video and audio interleaved in any
  order, state pickled between calls as Spark does).
- End to end through avwatch.local.analyze_source (the real decoder, segmenter and stage 1):
  FFmpeg's avsynctest flash+beep source at offsets from -200 to +200 ms, made in-process with PyAV and,
  as an independent path, with Debian's ffmpeg (adelay/atrim, AAC in Matroska with its encoder delay);
  espeak-ng speech with a drawn face whose mouth follows the speech; and hard negatives: music over
  unrelated real footage (bikes), a face moving to other speech, a still picture with speech, and
  bigbuckbunny with its own soundtrack.
"""
from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avwatch.convert.decode import MediaDecoder
from avwatch.convert.segments import Segmenter
from avwatch.local import analyze_source
from detectors.av_sync import REGIONS, AvSync, AvSyncOptions, bt1359_verdict, estimate_window, region_label
from detectors.base import AUDIO, MAJOR, MINOR, VIDEO
from detectors.config import DetectorConfig
from detectors.features import AudioBlocks, Features, stage1
from schemas.records import AUDIO_SEGMENT, VIDEO_SEGMENT
from tests.media import ffmpeg, read_audio, read_rgb_frames, real_clip, speech, write_clip

pytestmark = pytest.mark.footage  # real footage and FFmpeg oracle comparisons: the slower tier

RATE = 48000
FPS = 25
# thresholds at zero: every estimate beyond +-0 ms becomes an event carrying offset_ms (to read estimates)
MEASURE = {"early_threshold_ms": 0.0, "late_threshold_ms": 0.0}


# -- synthetic streams (no media) --------------------------------------------------------------------


def audio_blocks(x: np.ndarray, t0: float = 0.0, context: np.ndarray | None = None) -> AudioBlocks:
    """Float samples (n, ch) as the composer hands them to stage 1 (10 ms blocks, optional context)."""
    block = RATE // 100
    ctx = np.zeros((0, x.shape[1]), np.float32) if context is None else context.astype(np.float32)
    nb = -(-len(x) // block)
    n = np.full(nb, block, np.int64)
    n[-1] = len(x) - (nb - 1) * block
    samples = np.concatenate([ctx, x.astype(np.float32)])
    return AudioBlocks(t=t0 + np.arange(nb) * block / RATE, n=n, block=block, rate=RATE, samples=samples,
                       raw=(samples * 32767).astype(np.int16), context=len(ctx))


def audio_features(x: np.ndarray) -> Features:
    """The stage-2 audio rows av_sync reads for a whole synthetic signal (n, ch)."""
    blocks = audio_blocks(x)
    return Features(t=blocks.t, n=blocks.n, rate=np.full(len(blocks.t), RATE, np.int32),
                    **AvSync(AvSyncOptions()).stage1(blocks))


def flash_beep_stream(seconds: float, offset_ms, seed: int = 0, cell: int = 5,
                      silent: tuple[float, float] | None = None) -> tuple[Features, Features]:
    """Flashes at irregular frame times (one frame on, in one cell) and 40 ms beeps offset_ms after them.

    offset_ms may be a function of time (s) -> ms. Other cells carry small random changes (sensor noise).
    Returns (video rows, audio rows).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    t = np.arange(n) / FPS
    cells = rng.uniform(0.0005, 0.003, (n, 16)).astype(np.float32)
    x = np.zeros(int(seconds * RATE), np.float32)
    i = 10
    while i < n - 2:
        cells[i, cell] = cells[i + 1, cell] = 0.35  # the flash turns on at frame i and off at i + 1
        off = offset_ms(t[i]) if callable(offset_ms) else offset_ms
        s0 = int(round((t[i] + off / 1000.0) * RATE))
        s1 = s0 + int(0.04 * RATE)
        if 0 <= s0 and s1 < len(x):
            x[s0:s1] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(s1 - s0) / RATE)
        i += int(rng.integers(15, 45))
    if silent is not None:
        x[int(silent[0] * RATE):int(silent[1] * RATE)] = 0.0
    cells[0] = np.nan  # the first frame has no previous one
    video = Features(t=t, frame_dur=np.full(n, 1.0 / FPS), diff_prev=cells.mean(axis=1), diff_cells=cells,
                     diff_cellmax=cells.max(axis=1))
    return video, audio_features(np.repeat(x[:, None], 2, axis=1))


def by_second(video: Features, audio: Features) -> list[tuple[str, Features]]:
    """One-second pieces of each kind, video then audio, as the converter's segments arrive."""
    out = []
    for k in range(0, max(len(video), len(audio) * FPS // 100), FPS):
        out += [(VIDEO, video.slice(k, k + FPS)), (AUDIO, audio.slice(k * 100 // FPS, (k + FPS) * 100 // FPS))]
    return [(kind, rows) for kind, rows in out if len(rows)]


def run_detector(video: Features, audio: Features, options: AvSyncOptions | None = None,
                 schedule=None) -> tuple[list, dict]:
    """Feed a stream to a fresh AvSync a second at a time (or by a schedule of (kind, rows) pieces);
    return (events, state)."""
    det = AvSync(options)
    state = det.initial_state()
    events = []
    for kind, rows in (schedule if schedule is not None else by_second(video, audio)):
        events += det.process(state, kind, rows)
    end = max(float(video["t"][-1]) + 1.0 / FPS, float(audio["t"][-1] + audio["n"][-1] / RATE))
    return events + det.finish(state, end), state


def as_tuples(events) -> list[tuple]:
    return [(e.check, e.start_s, e.end_s, e.score, e.threshold, e.severity, e.details_json()) for e in events]


# -- stage 1 ---------------------------------------------------------------------------------------


def test_block_centroid_places_an_onset_inside_its_block():
    x = np.zeros((3 * 480, 1), np.float32)
    x[480 + 300:, 0] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(3 * 480 - 780) / RATE)
    out = AvSync(AvSyncOptions()).stage1(audio_blocks(x))
    assert out["av_sync_env"][0] == 0.0 and out["av_sync_pos"][0] == 0.5  # silent block: centred
    # sound from sample 300 to 480 of the middle block: its centroid is at (300 + 480) / 2 / 480
    assert out["av_sync_pos"][1] == pytest.approx(0.8125, abs=0.02)
    assert out["av_sync_pos"][2] == pytest.approx(0.5, abs=0.02)
    assert out["av_sync_env"][2] > 2.5 * out["av_sync_env"][1]  # 180 of 480 samples carry sound


def test_block_features_do_not_depend_on_segment_cuts():
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal((4800, 2))).astype(np.float32)
    whole = AvSync(AvSyncOptions()).stage1(audio_blocks(x))
    first = AvSync(AvSyncOptions()).stage1(audio_blocks(x[:2400]))
    second = AvSync(AvSyncOptions()).stage1(audio_blocks(x[2400:], t0=0.05, context=x[2400 - 480:2400]))
    for key in whole:
        np.testing.assert_allclose(np.concatenate([first[key], second[key]]), whole[key], rtol=1e-5, atol=1e-7)


# -- one window ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms", [-137.3, -45.0, 0.0, 23.4, 77.7, 310.2])
def test_window_estimate_is_sub_block_precise(offset_ms):
    video, audio = flash_beep_stream(14.0, offset_ms, seed=1)
    cells = np.asarray(video["diff_cells"])
    env = np.concatenate([np.asarray(video["diff_prev"])[:, None], cells], axis=1)
    t = np.asarray(video["t"])
    prev = np.concatenate([[np.nan], t[:-1]])
    est = estimate_window(t, np.ones(len(t), bool), prev, env, 1.0 / FPS, audio["t"], audio["n"] / RATE,
                          audio["av_sync_env"],
                          audio["av_sync_pos"], (0.0, 14.0), 2.0, 12.0, AvSyncOptions())
    assert est.reliable, est
    assert est.offset_ms == pytest.approx(offset_ms, abs=1.0)
    assert est.confidence > 0.9 and est.margin > 0.3 and est.events >= 6
    assert est.region in ("cell 5", "cells 1+5", "cells 4+5", "cells 5+6", "cells 5+9")


def test_regions_are_the_picture_cells_and_adjacent_pairs():
    assert len(REGIONS) == 1 + 16 + 12 + 12
    assert [region_label(r) for r in (REGIONS[0], REGIONS[10], REGIONS[17])] == ["whole picture", "cell 9",
                                                                                 "cells 0+1"]


@pytest.mark.parametrize("offset_ms, verdict", [(-91.0, "unacceptable"), (-90.0, "detectable"),
                                                (-45.5, "detectable"), (-45.0, "undetectable"),
                                                (125.0, "undetectable"), (125.5, "detectable"),
                                                (185.0, "detectable"), (186.0, "unacceptable")])
def test_bt1359_grades(offset_ms, verdict):
    assert bt1359_verdict(offset_ms) == verdict


def test_options_are_checked():
    with pytest.raises(ValueError, match="hop_s"):
        AvSyncOptions(window_s=4.0, hop_s=5.0)
    with pytest.raises(ValueError, match="min_confidence"):
        AvSyncOptions(min_confidence=1.5)
    with pytest.raises(ValueError, match="max_lead_s"):
        AvSyncOptions(window_s=30.0, max_lead_s=20.0)


# -- decisions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_ms, check, severity, verdict", [
    (-60.0, "audio_early", MINOR, "detectable"), (-120.0, "audio_early", MAJOR, "unacceptable"),
    (150.0, "audio_late", MINOR, "detectable"), (240.0, "audio_late", MAJOR, "unacceptable"),
    (-43.0, "audio_early", MINOR, "undetectable"), (100.0, "audio_late", MINOR, "undetectable")])
def test_offset_beyond_r37_is_one_event_over_the_stream_graded_by_bt1359(offset_ms, check, severity, verdict):
    """Alarmed at EBU R37's tolerance (40 ms early, 60 ms late); BT.1359 grades what a viewer notices."""
    video, audio = flash_beep_stream(30.0, offset_ms)
    events, state = run_detector(video, audio)
    assert len(events) == 1
    e = events[0]
    assert (e.detector, e.check, e.severity) == ("av_sync", check, severity)
    assert e.start_s == 0.0 and e.end_s == pytest.approx(30.0)
    assert e.score == pytest.approx(offset_ms, abs=1.0)
    assert e.threshold == (-40.0 if offset_ms < 0 else 60.0)
    d = json.loads(e.details_json())
    assert d["bt1359"] == verdict and d["offset_ms"] == pytest.approx(offset_ms, abs=1.0)
    assert d["windows"] == state["counts"]["out_of_sync"] >= 10 and d["confidence"] > 0.9
    assert d["regions"] and d["regions"][0] in ("cell 5", "cells 1+5", "cells 4+5", "cells 5+6", "cells 5+9")


@pytest.mark.parametrize("offset_ms", [-37.0, 0.0, 30.0, 57.0])
def test_offset_within_r37_is_in_sync(offset_ms):
    video, audio = flash_beep_stream(30.0, offset_ms)
    events, state = run_detector(video, audio)
    assert events == []
    assert state["counts"]["in_sync"] >= 10 and state["counts"]["out_of_sync"] == 0
    assert state["estimate"]["offset_ms"] == pytest.approx(offset_ms, abs=1.0)


def test_an_offset_that_starts_mid_stream_is_reported_from_there():
    video, audio = flash_beep_stream(50.0, lambda t: 0.0 if t < 20.0 else 200.0, seed=2)
    events, _ = run_detector(video, audio)
    assert [e.check for e in events] == ["audio_late"]
    # the first window that sees mostly the offset part starts a little before 20 s
    assert 12.0 <= events[0].start_s <= 20.0 and events[0].end_s == pytest.approx(50.0)
    assert events[0].score == pytest.approx(200.0, abs=1.0)


def test_two_different_offsets_are_two_events():
    video, audio = flash_beep_stream(60.0, lambda t: -100.0 if t < 30.0 else 200.0, seed=4)
    events, _ = run_detector(video, audio)
    assert [(e.check, round(e.score)) for e in events] == [("audio_early", -100), ("audio_late", 200)]
    assert events[0].end_s <= events[1].start_s + 10.0


def test_a_long_offset_is_reported_in_pieces_while_it_lasts():
    video, audio = flash_beep_stream(70.0, 160.0, seed=5)
    events, _ = run_detector(video, audio, AvSyncOptions(max_event_s=20.0))
    assert len(events) >= 3
    assert [json.loads(e.details_json())["continued"] for e in events] == [False] + [True] * (len(events) - 1)
    for a, b in zip(events, events[1:]):
        assert a.end_s == pytest.approx(b.start_s)  # the pieces tile the run
    assert events[0].start_s == 0.0 and events[-1].end_s == pytest.approx(70.0)


def test_not_enough_data_is_its_own_outcome():
    video, audio = flash_beep_stream(30.0, 300.0)
    # silence: no audible events
    quiet = Features({**audio, "av_sync_env": np.zeros(len(audio), np.float32)})
    events, state = run_detector(video, quiet)
    assert events == [] and state["counts"]["in_sync"] == 0
    assert state["reasons"]["quiet_audio"] >= 10 and set(state["reasons"]) <= {"quiet_audio", "coverage"}
    # a picture that never changes (every frame repeats the first)
    still = Features({**video, "diff_cells": np.zeros_like(video["diff_cells"]),
                      "diff_prev": np.zeros(len(video), np.float32)})
    events, state = run_detector(still, audio)
    assert events == [] and state["counts"]["in_sync"] == 0
    assert state["reasons"]["still_picture"] >= 10 and set(state["reasons"]) <= {"still_picture", "coverage"}
    # a stream shorter than a window's usable share gives no estimate at all
    short_v, short_a = flash_beep_stream(5.0, 300.0)
    events, state = run_detector(short_v, short_a)
    assert events == [] and state["counts"]["windows"] >= 1 and set(state["reasons"]) == {"coverage"}


def test_a_stretch_without_sound_neither_ends_nor_extends_an_event():
    video, audio = flash_beep_stream(50.0, 200.0, seed=6, silent=(14.0, 34.0))
    events, state = run_detector(video, audio)
    assert [e.check for e in events] == ["audio_late"]
    assert events[0].start_s == 0.0 and events[0].end_s == pytest.approx(50.0)
    assert state["reasons"].get("quiet_audio", 0) >= 3


def test_state_stays_bounded_and_picklable():
    video, audio = flash_beep_stream(120.0, 150.0, seed=7)
    det = AvSync()
    state = det.initial_state()
    sizes = []
    for kind, rows in by_second(video, audio):
        det.process(state, kind, rows)
        sizes.append(len(pickle.dumps(state)))
    assert max(sizes) < 64_000  # the window's envelopes, whatever the stream's length
    assert max(sizes[-20:]) < 1.2 * max(sizes[20:40])


def test_a_missing_kind_does_not_grow_the_state():
    video, _ = flash_beep_stream(150.0, 0.0)
    det = AvSync()
    state = det.initial_state()
    for k in range(0, len(video), FPS):
        assert det.process(state, VIDEO, video.slice(k, k + FPS)) == []
    assert len(state["video"]["t"]) <= (60.0 + 2.0) * FPS
    assert state["counts"]["skipped"] > 0
    assert det.finish(state, 150.0) == []


# -- split invariance --------------------------------------------------------------------------------


SPLIT_VIDEO, SPLIT_AUDIO = flash_beep_stream(36.0, lambda t: 170.0 if t < 26.0 else 0.0, seed=8,
                                             silent=(12.0, 15.0))
SPLIT_REFERENCE = as_tuples(run_detector(SPLIT_VIDEO, SPLIT_AUDIO)[0])


def cut(rows: Features, points: list[int]) -> list[Features]:
    edges = [0] + sorted(set(p for p in points if 0 < p < len(rows))) + [len(rows)]
    return [rows.slice(a, b) for a, b in zip(edges, edges[1:])]


def test_split_reference_has_an_event():
    assert len(SPLIT_REFERENCE) == 1 and SPLIT_REFERENCE[0][0] == "audio_late"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v_cuts=st.lists(st.integers(1, len(SPLIT_VIDEO) - 1), max_size=12),
       a_cuts=st.lists(st.integers(1, len(SPLIT_AUDIO) - 1), max_size=12),
       order=st.lists(st.booleans(), min_size=30, max_size=30), repickle=st.booleans())
def test_events_do_not_depend_on_cuts_or_interleaving(v_cuts, a_cuts, order, repickle):
    vparts, aparts = cut(SPLIT_VIDEO, v_cuts), cut(SPLIT_AUDIO, a_cuts)
    schedule = []
    choices = iter(order)
    while vparts or aparts:  # each kind stays in order; which kind comes next is drawn
        take_video = next(choices, True) if (vparts and aparts) else bool(vparts)
        schedule.append((VIDEO, vparts.pop(0)) if take_video else (AUDIO, aparts.pop(0)))
    det = AvSync()
    state = det.initial_state()
    events = []
    for kind, rows in schedule:
        events += det.process(state, kind, rows)
        if repickle:  # the Spark job keeps the state in its state store between micro-batches
            state = pickle.loads(pickle.dumps(state))
    events += det.finish(state, 36.0)
    assert as_tuples(events) == SPLIT_REFERENCE


def test_all_video_before_any_audio_gives_the_same_events():
    schedule = [(VIDEO, p) for p in cut(SPLIT_VIDEO, list(range(25, len(SPLIT_VIDEO), 25)))]
    schedule += [(AUDIO, p) for p in cut(SPLIT_AUDIO, list(range(100, len(SPLIT_AUDIO), 100)))]
    assert as_tuples(run_detector(SPLIT_VIDEO, SPLIT_AUDIO, schedule=schedule)[0]) == SPLIT_REFERENCE
    schedule = [(AUDIO, SPLIT_AUDIO), (VIDEO, SPLIT_VIDEO)]  # all audio first, in one piece
    assert as_tuples(run_detector(SPLIT_VIDEO, SPLIT_AUDIO, schedule=schedule)[0]) == SPLIT_REFERENCE


# -- real media: helpers -----------------------------------------------------------------------------


def avsynctest(seconds: float, fps: int = FPS, size: str = "320x180", period: int = 3):
    """FFmpeg's avsynctest source through PyAV: (RGB frames, mono float32 audio at RATE)."""
    frames, audio = [], []
    graph = f"avsynctest=d={seconds}:s={size}:fr={fps}:sr={RATE}:p={period}[out0][out1]"
    with av.open(graph, format="lavfi") as c:
        for packet in c.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    audio.append(frame.to_ndarray().reshape(-1))
    x = np.concatenate(audio)
    scale = 2.0 ** 31 if x.dtype == np.int32 else (2.0 ** 15 if x.dtype == np.int16 else 1.0)
    return frames, (x.astype(np.float64) / scale).astype(np.float32)


def shift_audio(x: np.ndarray, offset_ms: float) -> np.ndarray:
    """Delay (positive: audio late) or advance (negative: early) a signal by offset_ms, keeping its length."""
    n = int(round(abs(offset_ms) * RATE / 1000.0))
    pad = np.zeros((n,) + x.shape[1:], x.dtype)
    if offset_ms >= 0:
        return np.concatenate([pad, x])[:len(x)]
    return np.concatenate([x[n:], pad])


def av_sync_rows(path: Path, options: dict | None = None) -> list[dict]:
    """Events of av_sync alone on a file, through the local runner, as (check, offset_ms, details)."""
    config = DetectorConfig.build(["av_sync"], {"av_sync": options or {}})
    rows = analyze_source(str(path), config).rows
    assert all(r["detector"] == "av_sync" for r in rows)
    return [{**json.loads(r["details"]), "start_s": r["start_s"], "end_s": r["end_s"]} for r in rows]


def decoded_features(path: Path) -> list[tuple[str, Features]]:
    """(kind, stage-1 rows) per segment of a file, in the order the local runner produces them."""
    config = DetectorConfig.build(["av_sync"])
    decoder = MediaDecoder(str(path))
    segmenter = Segmenter("t", decoder.info)
    names = {"video": VIDEO_SEGMENT.name, "audio": AUDIO_SEGMENT.name}
    segments = [seg for item in decoder.items() for seg in segmenter.add(item)] + segmenter.finish()
    return [(seg.kind, stage1(names[seg.kind], seg.table, config).features) for seg in segments
            if seg.kind in names]


def window_outcomes(path: Path) -> dict:
    """av_sync's state after a whole file: its window counts and not-enough-data reasons."""
    parts = decoded_features(path)
    det = AvSync()
    state = det.initial_state()
    for kind, rows in parts:
        det.process(state, kind, rows)
    det.finish(state, max(float(rows["t"][-1]) for _, rows in parts))
    return state


# -- real media: FFmpeg's avsynctest -------------------------------------------------------------------


@pytest.fixture(scope="module")
def flash_beep():
    return avsynctest(20.0)


@pytest.mark.parametrize("offset_ms, check", [(-200.0, "audio_early"), (-100.0, "audio_early"),
                                              (-70.0, "audio_early"), (90.0, "audio_late"), (120.0, "audio_late"),
                                              (150.0, "audio_late"), (200.0, "audio_late")])
def test_avsynctest_offsets_beyond_r37_are_reported(tmp_path, flash_beep, offset_ms, check):
    frames, audio = flash_beep
    path = write_clip(tmp_path / "sync.mp4", frames, fps=FPS, audio=shift_audio(audio, offset_ms)[:, None])
    rows = av_sync_rows(path)
    assert [r["check"] for r in rows] == [check]
    assert rows[0]["offset_ms"] == pytest.approx(offset_ms, abs=20.0)
    assert rows[0]["offset_min_ms"] >= offset_ms - 20.0 and rows[0]["offset_max_ms"] <= offset_ms + 20.0
    assert rows[0]["bt1359"] == bt1359_verdict(offset_ms)
    assert rows[0]["start_s"] == 0.0 and rows[0]["end_s"] == pytest.approx(20.0)


@pytest.mark.parametrize("offset_ms", [-20.0, 0.0, 20.0, 35.0])
def test_avsynctest_offsets_within_r37_are_measured_and_not_reported(tmp_path, flash_beep, offset_ms):
    """Within EBU R37's tolerance, with the 20 ms accuracy kept clear of it on both sides."""
    frames, audio = flash_beep
    path = write_clip(tmp_path / "sync.mp4", frames, fps=FPS, audio=shift_audio(audio, offset_ms)[:, None])
    assert av_sync_rows(path) == []
    measured = av_sync_rows(path, MEASURE)  # the same estimates, with every offset off zero reported
    if offset_ms:
        assert len(measured) == 1
    assert all(r["offset_ms"] == pytest.approx(offset_ms, abs=20.0) for r in measured)


def test_decoded_features_give_the_same_events_however_they_arrive(tmp_path, flash_beep):
    frames, audio = flash_beep
    path = write_clip(tmp_path / "late.mp4", frames, fps=FPS, audio=shift_audio(audio, 150.0)[:, None])
    parts = decoded_features(path)
    video = Features.concat([rows for kind, rows in parts if kind == VIDEO])
    sound = Features.concat([rows for kind, rows in parts if kind == AUDIO])

    def events(schedule):
        det = AvSync()
        state = det.initial_state()
        out = [e for kind, rows in schedule for e in det.process(state, kind, rows)]
        return as_tuples(out + det.finish(state, 20.0))

    reference = events(parts)  # segments in decode order
    assert [e[0] for e in reference] == ["audio_late"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        vcut = cut(video, list(rng.integers(1, len(video), 6)))
        acut = cut(sound, list(rng.integers(1, len(sound), 6)))
        assert events([(VIDEO, p) for p in vcut] + [(AUDIO, p) for p in acut]) == reference
        assert events([(AUDIO, p) for p in acut] + [(VIDEO, p) for p in vcut]) == reference


@pytest.mark.parametrize("offset_ms, check", [(-100, "audio_early"), (150, "audio_late")])
def test_avsynctest_made_by_ffmpeg_with_aac_in_matroska(tmp_path, offset_ms, check):
    """Debian's ffmpeg as an independent path: FFmpeg's defaults (hd720, 30 fps, 44.1 kHz), the audio shifted
    with adelay/atrim, AAC in Matroska. The AAC encoder delay (1024 samples) shows as the audio starting
    ~23 ms before the video; the converter keeps that start offset, so the estimate is still the shift."""
    path = tmp_path / "ffmpeg.mkv"
    shift = f"adelay={offset_ms}:all=1" if offset_ms > 0 else f"atrim=start={-offset_ms / 1000},asetpts=PTS-STARTPTS"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "avsynctest=d=12[out0][out1]", "-af", shift, "-t", "12", "-c:v", "libx264", "-preset",
                    "ultrafast", "-c:a", "aac", str(path)], check=True, capture_output=True)
    with av.open(str(path)) as c:  # what the decoder reports: audio starts before video by the encoder delay
        starts = {s.type: float(s.start_time * s.time_base) for s in c.streams}
    assert starts["video"] - starts["audio"] == pytest.approx(1024 / 44100, abs=0.002)
    rows = av_sync_rows(path)
    assert [r["check"] for r in rows] == [check]
    assert rows[0]["offset_ms"] == pytest.approx(offset_ms, abs=20.0)


# -- real media: speech with a visible mouth -------------------------------------------------------------


SPEECH_TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
               "How vexingly quick daft zebras jump. The five boxing wizards jump quickly. "
               "Sphinx of black quartz, judge my vow. Bright vixens jump; dozy fowl quack. "
               "Waltz, bad nymph, for quick jigs vex. Jackdaws love my big sphinx of quartz.")


def mouth_opening(mono: np.ndarray, n_frames: int) -> np.ndarray:
    """Per frame, how open the mouth is (0..1): the speech level (dB RMS, -45..-10 dBFS) while it is shown."""
    per = int(RATE / FPS)
    x = np.zeros(n_frames * per, np.float64)
    m = min(len(x), len(mono))
    x[:m] = mono[:m]
    rms = np.sqrt(np.mean(x.reshape(n_frames, per) ** 2, axis=1))
    return np.clip((20 * np.log10(rms + 1e-9) + 45.0) / 35.0, 0.0, 1.0)


def face_frames(opening: np.ndarray, seed: int = 1, size=(320, 240),
                background: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """A drawn face over a drifting texture (or over `background` frames, RGB of `size`) with sensor noise;
    it sways, blinks at random and its mouth opens by `opening` (0..1) per frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (2 * h, 2 * w)).astype(np.float32), (0, 0), 6)
    tex = ((tex - tex.min()) / (np.ptp(tex) + 1e-9) * 120 + 60).astype(np.uint8)
    noise = [rng.normal(0, 2.0, (h, w, 3)).astype(np.int16) for _ in range(7)]
    blinks, k = set(), 0
    while k < len(opening):
        k += int(rng.integers(40, 120))
        blinks.update(range(k, k + 3))
    frames = []
    for i, op in enumerate(opening):
        dx, dy = int(20 * np.sin(i / 50.0)) + w // 2, int(10 * np.cos(i / 70.0)) + h // 2
        if background is not None:
            img = np.ascontiguousarray(background[i % len(background)]).copy()
        else:
            img = np.repeat(tex[dy:dy + h, dx:dx + w, None], 3, axis=2)
        cx = w // 2 + int(4 * np.sin(2 * np.pi * 0.3 * i / FPS))
        cy = h // 2 + int(3 * np.sin(2 * np.pi * 0.2 * i / FPS))
        cv2.ellipse(img, (cx, cy), (55, 72), 0, 0, 360, (224, 172, 140), -1)
        for ex in (-22, 22):
            cv2.ellipse(img, (cx + ex, cy - 20), (9, 1 if i in blinks else 6), 0, 0, 360, (40, 40, 40), -1)
        cv2.ellipse(img, (cx, cy + 35), (22, int(2 + 16 * op)), 0, 0, 360, (90, 20, 30), -1)
        frames.append(np.clip(img.astype(np.int16) + noise[i % 7], 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def talking_face(tmp_path_factory):
    """(frames of a face mouthing the speech, the speech as float32 stereo)."""
    voice = speech(SPEECH_TEXT, tmp_path_factory.mktemp("speech") / "speech.wav", rate=RATE)
    n = int(len(voice) / RATE * FPS)
    return face_frames(mouth_opening(voice.mean(axis=1), n)), voice[:int(n * RATE / FPS)]


def test_speech_with_a_visible_mouth_over_real_footage(tmp_path, talking_face):
    """The face over real camera footage (bikes): the mouth's cells move with the bikes too, so fewer
    windows are reliable; those that are still measure the offset."""
    frames, voice = talking_face
    bikes = read_rgb_frames(real_clip("bikes"), size=(320, 240))
    background = (bikes + bikes[::-1]) * 2
    opening = mouth_opening(voice.mean(axis=1), len(frames))
    path = write_clip(tmp_path / "face_bikes.mp4", face_frames(opening, background=background), fps=FPS,
                      audio=shift_audio(voice, 250.0), crf=23)
    rows = av_sync_rows(path)
    assert [r["check"] for r in rows] == ["audio_late"]
    assert rows[0]["offset_ms"] == pytest.approx(250.0, abs=40.0)


@pytest.mark.parametrize("offset_ms, check", [(-150.0, "audio_early"), (0.0, None), (250.0, "audio_late")])
def test_speech_with_a_visible_mouth(tmp_path, talking_face, offset_ms, check):
    frames, voice = talking_face
    path = write_clip(tmp_path / "face.mp4", frames, fps=FPS, audio=shift_audio(voice, offset_ms), crf=23)
    rows = av_sync_rows(path)
    assert [r["check"] for r in rows] == ([check] if check else [])
    if not check:
        rows = av_sync_rows(path, MEASURE)  # in sync: read the estimate with the thresholds at zero
        assert len(rows) == 1
    assert rows[0]["offset_ms"] == pytest.approx(offset_ms, abs=40.0)
    assert rows[0]["confidence"] >= 0.4 and rows[0]["windows"] >= 3
    # the mouth's cells (9, 10 and their neighbours), not the blinking eyes' (5, 6)
    assert all(("9" in r or "10" in r) for r in rows[0]["regions"])


# -- hard negatives ------------------------------------------------------------------------------------


def music(seconds: float, seed: int = 3) -> np.ndarray:
    """A drum pattern (kick, snare, random hi-hats) at 112 BPM under sustained chords, float32 stereo."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros(n)
    beat = 60 / 112
    for k, tb in enumerate(np.arange(0.05, seconds, beat)):
        i = int(tb * RATE)
        m = min(int(0.25 * RATE), n - i)
        decay = np.exp(-np.arange(m) / (0.05 * RATE))
        hit = np.sin(2 * np.pi * 60 * np.arange(m) / RATE) if k % 2 == 0 else 0.5 * rng.normal(0, 1, m)
        out[i:i + m] += 0.6 * hit * decay
        if rng.random() < 0.5:
            j = int((tb + beat / 2) * RATE)
            m2 = max(0, min(int(0.05 * RATE), n - j))
            out[j:j + m2] += 0.1 * rng.normal(0, 1, m2) * np.exp(-np.arange(m2) / (0.01 * RATE))
    for tc in np.arange(0.0, seconds, 2 * beat):
        i, j = int(tc * RATE), min(int((tc + 2 * beat) * RATE), n)
        tt = np.arange(j - i) / RATE
        f0 = [220.0, 261.6, 329.6, 392.0, 196.0, 246.9][rng.integers(6)]
        for ratio in (1.0, 1.25, 1.5):
            out[i:j] += 0.08 * np.sin(2 * np.pi * f0 * ratio * tt) * np.minimum(1, tt / 0.02) * np.exp(-tt)
    out *= 0.8 / np.abs(out).max()
    return np.repeat(out[:, None], 2, axis=1).astype(np.float32)


def test_music_over_unrelated_footage_is_no_event(tmp_path):
    bikes = read_rgb_frames(real_clip("bikes"), size=(320, 136))
    frames = bikes + bikes[::-1]  # 20 s of real camera footage, played forth and back
    path = write_clip(tmp_path / "bikes_music.mp4", frames, fps=FPS, audio=music(len(frames) / FPS))
    assert av_sync_rows(path) == []
    state = window_outcomes(path)
    assert state["counts"]["windows"] >= 5 and state["counts"]["out_of_sync"] == 0


def test_face_moving_to_other_speech_is_no_event(tmp_path, talking_face):
    frames, voice = talking_face
    # the mouth follows the speech played backwards: speech-like motion, sound it does not belong to
    other = face_frames(mouth_opening(voice[::-1].mean(axis=1), len(frames)))
    path = write_clip(tmp_path / "dub.mp4", other, fps=FPS, audio=voice, crf=23)
    assert av_sync_rows(path) == []


def test_still_picture_with_speech_is_not_enough_data(tmp_path, talking_face):
    _, voice = talking_face
    still = read_rgb_frames(real_clip("carphone_pristine"), limit=1)[0]
    path = write_clip(tmp_path / "still.mp4", [still] * int(len(voice) / RATE * FPS), fps=FPS, audio=voice)
    assert av_sync_rows(path) == []
    state = window_outcomes(path)
    assert state["counts"]["in_sync"] + state["counts"]["out_of_sync"] == 0
    assert state["reasons"]["still_picture"] >= 4 and set(state["reasons"]) <= {"still_picture", "coverage"}


def test_animation_with_its_own_soundtrack_is_no_event(tmp_path):
    clip = real_clip("bigbuckbunny")
    frames = read_rgb_frames(clip, size=(320, 180))
    sound = read_audio(clip, rate=RATE, layout="stereo")[:int(len(frames) * RATE / FPS)]
    path = write_clip(tmp_path / "bbb.mp4", frames * 4, fps=FPS, audio=np.concatenate([sound] * 4))
    assert av_sync_rows(path) == []
