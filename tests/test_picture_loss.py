"""black, freeze, frame_drop and stall: synthetic feature rows, then real footage with injected defects,
hard negatives, and agreement with FFmpeg's blackdetect/freezedetect on the same files."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from avwatch.local import analyze_source
from detectors.analyzer import StreamAnalyzer
from detectors.base import AUDIO, VIDEO
from detectors.black import Black, BlackOptions, black_fraction, black_level
from detectors.config import DetectorConfig
from detectors.features import Features
from detectors.frame_drop import FrameDrop
from detectors.freeze import Freeze, FreezeOptions, flat_fraction
from detectors.stall import Stall
from tests.media import ffmpeg, read_rgb_frames, real_clip, write_clip

FPS = 25
DT = 1 / FPS


def rows(n: int, t0: float = 0.0, **cols) -> Features:
    f = Features(t=t0 + np.arange(n) * DT, frame_dur=np.full(n, DT), thumb_jpeg=np.array([b"j"] * n, dtype=object),
                 diff_prev=np.full(n, 0.05, np.float32), diff_cellmax=np.full(n, 0.1, np.float32),
                 flat_frac=np.full(n, 0.2, np.float32), black_frac=np.zeros(n, np.float32))
    for k, v in cols.items():
        f[k] = np.asarray(v)
    return f


def events_of(detector, parts: list[Features], end_s: float):
    state = detector.initial_state()
    out = []
    for part in parts:
        out += detector.process(state, VIDEO, part)
    out += detector.finish(state, end_s)
    return [(e.start_s, e.end_s) for e in out]


# -- stage 1 on synthetic planes ----------------------------------------------------------------------


@pytest.mark.parametrize("full_range,level", [(False, 37.9), (True, 25.5)])
def test_black_level_follows_the_luma_range(full_range, level):
    assert black_level(0.10, full_range) == pytest.approx(level)


@pytest.mark.parametrize("dtype_shape", [(1, 18, 32), (5, 36, 64)])
def test_black_fraction_counts_pixels_at_or_below_the_level(dtype_shape):
    y = np.full(dtype_shape, 16, np.uint8)
    y[..., :4] = 200  # 4 of W columns bright
    frac = black_fraction(y, 37.9)
    assert frac.shape == (dtype_shape[0],)
    assert frac == pytest.approx(1 - 4 / dtype_shape[2])
    assert black_fraction(np.full((2, 4, 4), 37, np.uint8), 37.9)[0] == 1.0   # 37 <= 37.9
    assert black_fraction(np.full((2, 4, 4), 38, np.uint8), 37.9)[0] == 0.0


def test_flat_fraction_separates_graphics_from_texture():
    rng = np.random.default_rng(1)
    card = np.full((90, 160), 40, np.uint8)
    card[40:50, 30:130] = 220  # a line of "text"
    texture = rng.integers(0, 255, (90, 160), dtype=np.uint8)
    assert flat_fraction(card)[0] > 0.9
    assert flat_fraction(texture)[0] < 0.1


def test_options_are_validated_at_construction():
    with pytest.raises(ValueError, match="BlackOptions.picture_threshold must be <= 1"):
        BlackOptions(picture_threshold=1.5)
    with pytest.raises(ValueError, match="FreezeOptions.noise must be a number"):
        FreezeOptions(noise="low")
    with pytest.raises(ValueError, match="unknown option"):
        DetectorConfig.build(["black"], {"black": {"min_duraton_s": 2}})


# -- stage 2 on synthetic rows ------------------------------------------------------------------------


def test_black_run_exact_and_closed_at_end_of_stream():
    frac = np.zeros(100, np.float32)
    frac[20:60] = 0.99   # 0.8 .. 2.4 s: 1.6 s
    frac[70:] = 1.0      # 2.8 s .. end
    got = events_of(Black(), [rows(100, black_frac=frac)], end_s=4.0)
    assert got == [(pytest.approx(0.8), pytest.approx(2.4)), (pytest.approx(2.8), pytest.approx(4.0))]


def test_black_shorter_than_min_duration_is_quiet():
    frac = np.zeros(100, np.float32)
    frac[20:44] = 1.0  # 0.96 s
    assert events_of(Black(), [rows(100, black_frac=frac)], end_s=4.0) == []


def test_all_black_single_frame_and_empty_streams():
    assert events_of(Black(), [rows(1, black_frac=[1.0])], end_s=0.04) == []          # one frame: too short
    assert events_of(Black(BlackOptions(min_duration_s=0)), [rows(1, black_frac=[1.0])], end_s=0.04) == [
        (0.0, 0.04)]
    assert events_of(Black(), [], end_s=0.0) == []
    assert events_of(Black(), [rows(50, black_frac=np.ones(50))], end_s=2.0) == [(0.0, 2.0)]


def test_freeze_starts_at_the_frozen_picture_and_ends_at_the_first_change():
    diff = np.full(100, 0.05, np.float32)
    diff[31:70] = 0.0  # frame 30 is the picture that freezes; frame 70 moves again
    got = events_of(Freeze(), [rows(100, diff_prev=diff)], end_s=4.0)
    assert got == [(pytest.approx(30 * DT), pytest.approx(70 * DT))]


def test_freeze_survives_an_isolated_keyframe_refresh_but_not_motion():
    diff = np.full(100, 0.05, np.float32)
    cell = np.full(100, 0.1, np.float32)
    diff[11:90] = 0.0
    diff[40], cell[40] = 0.004, 0.008   # a keyframe re-encoding the frozen picture: small, everywhere
    got = events_of(Freeze(), [rows(100, diff_prev=diff, diff_cellmax=cell)], end_s=4.0)
    assert got == [(pytest.approx(10 * DT), pytest.approx(90 * DT))]
    diff[41] = 0.004  # two non-still frames in a row: the freeze ended at the first one
    cell[41] = 0.008
    got = events_of(Freeze(), [rows(100, diff_prev=diff, diff_cellmax=cell)], end_s=4.0)
    assert got == [(pytest.approx(10 * DT), pytest.approx(40 * DT)), (pytest.approx(41 * DT), pytest.approx(90 * DT))]


def test_frozen_graphics_need_the_longer_duration():
    diff = np.zeros(400, np.float32)
    diff[0] = np.nan
    flat = np.full(400, 0.95, np.float32)
    assert events_of(Freeze(), [rows(200, diff_prev=diff[:200], flat_frac=flat[:200])], end_s=8.0) == []
    got = events_of(Freeze(), [rows(400, diff_prev=diff, flat_frac=flat)], end_s=16.0)
    assert got == [(0.0, 16.0)]


@pytest.mark.parametrize("before", ["animation", "animation_on_twos", "cut_after_animation", "short_fade_in",
                                    "live_then_card"])
def test_a_held_frame_of_flat_animation_is_a_freeze_and_a_title_card_is_not(before):
    """Flat moving pictures (animation) for 2 s, then held for 3 s: a freeze after min_duration_s, not a
    graphic. A flat picture reached by a cut, after only a short flat stretch (a fade-in), or after live
    pictures is a title card: it needs graphic_min_duration_s."""
    n_before, n_held = 50, 75
    diff = np.full(n_before + n_held, 0.012, np.float32)     # animation's motion between frames
    flat = np.full(n_before + n_held, 0.9, np.float32)
    diff[n_before + 1:] = 0.0                                # the held frame repeats
    if before == "animation_on_twos":
        diff[1:n_before:2] = 0.0
    elif before == "cut_after_animation":
        diff[n_before] = 0.2                                 # the card is cut to
    elif before == "short_fade_in":
        flat[:n_before - 12] = 0.5                           # flat only for the last 0.48 s before the card
    elif before == "live_then_card":
        flat[:n_before] = 0.5
    got = events_of(Freeze(), [rows(n_before + n_held, diff_prev=diff, diff_cellmax=diff * 2, flat_frac=flat)],
                    end_s=(n_before + n_held) * DT)
    if before in ("animation", "animation_on_twos"):
        assert got == [(pytest.approx(n_before * DT), pytest.approx((n_before + n_held) * DT))]
    else:
        assert got == []
    assert events_of(Freeze(FreezeOptions(animation_s=0)), [rows(n_before + n_held, diff_prev=diff,
                                                                  diff_cellmax=diff * 2, flat_frac=flat)],
                     end_s=(n_before + n_held) * DT) == []   # without the rule every flat held picture is a card


@pytest.mark.parametrize("case", ["slow_pan", "freeze_with_refresh"])
def test_a_still_run_ends_where_the_picture_has_drifted_from_the_frozen_one(case):
    """Every frame within noise of the one before (an encoder coding a soft slow pan as repeats, a step now and
    then): no freeze, because the middle cells' means drift from where the run began (as freezedetect compares
    with the frozen picture). A real freeze whose keyframe refresh moves a cell by 0.004 is still one."""
    n = 100                                                   # 1 s moving, then 3 s within noise
    diff = np.full(n, 0.0, np.float32)
    diff[:25] = 0.02
    diff[30::10] = 0.0006                                     # a small step every 0.4 s, under `noise`
    means = np.full((n, 16), 0.4, np.float32)
    if case == "slow_pan":
        means[25:, 9] += np.floor(np.arange(75) / 5) * 0.004   # 0.02 a second, in steps (the tune part's pan)
    else:
        means[60:, 6] += 0.004                                # the refresh at 2.4 s
    got = events_of(Freeze(), [rows(n, diff_prev=diff, diff_cellmax=diff * 2, freeze_cell_means=means)],
                    end_s=n * DT)
    off = events_of(Freeze(FreezeOptions(max_drift=0)), [rows(n, diff_prev=diff, diff_cellmax=diff * 2,
                                                                freeze_cell_means=means)], end_s=n * DT)
    assert off == [(pytest.approx(24 * DT), pytest.approx(n * DT))]   # frame by frame, both look frozen
    assert got == ([] if case == "slow_pan" else off)


def test_frame_drop_counts_missing_frames_and_merges_close_gaps():
    t = np.concatenate([np.arange(0, 50), np.arange(55, 100), np.arange(103, 150)]) * DT
    f = rows(len(t))
    f["t"] = t
    det = FrameDrop()
    state = det.initial_state()
    events = det.process(state, VIDEO, f) + det.finish(state, 6.0)
    assert [(round(e.start_s, 3), round(e.end_s, 3), e.details["missing_frames"]) for e in events] == [
        (2.0, 2.2, 5), (4.0, 4.12, 3)]


def test_frame_drop_reports_repeated_timestamps():
    t = np.insert(np.arange(20) * DT, 10, 9 * DT)  # frame 9's timestamp twice
    f = rows(21)
    f["t"] = t
    det = FrameDrop()
    state = det.initial_state()
    events = det.process(state, VIDEO, f) + det.finish(state, 1.0)
    assert len(events) == 1 and events[0].details["kinds"] == ["repeated_pts"]


def test_stall_opens_on_heartbeats_and_closes_when_media_resumes():
    det = Stall()
    state = det.initial_state()
    assert det.process(state, VIDEO, rows(25)) == []              # media until 1.0 s
    assert det.heartbeat(state, 2.5) == []                        # 1.5 s without media: not yet
    opened = det.heartbeat(state, 3.5)                            # 2.5 s: stall open since 1.0, reported now
    assert [(e.start_s, e.end_s, e.state) for e in opened] == [(1.0, 3.5, "open")]
    events = det.process(state, VIDEO, rows(25, t0=6.0))          # media resumes at 6.0: the final event
    assert [(e.start_s, e.end_s, e.state) for e in events] == [(1.0, 6.0, "closed")]
    det.heartbeat(state, 12.0)
    assert [(e.start_s, e.end_s) for e in det.finish(state, 7.0)] == [(7.0, 12.0)]


# -- real footage with injected defects ---------------------------------------------------------------


@pytest.fixture(scope="module")
def bikes_frames():
    return read_rgb_frames(real_clip("bikes"))  # 250 frames, 640x272, 25 fps, real camera


def ffmpeg_intervals(path, vf: str, start_key: str, end_key: str) -> list[tuple[float, float]]:
    proc = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-vf", vf, "-an", "-f", "null", "-"],
                          capture_output=True, text=True, check=True)
    text = proc.stderr
    if "freezedetect" in vf:
        starts = [float(x) for x in re.findall(r"lavfi\.freezedetect\.freeze_start: ([\d.]+)", text)]
        ends = [float(x) for x in re.findall(r"lavfi\.freezedetect\.freeze_end: ([\d.]+)", text)]
        return list(zip(starts, ends))
    return [(float(a), float(b)) for a, b in re.findall(rf"{start_key}:([\d.]+) {end_key}:([\d.]+)", text)]


def analyze(path, names, options=None):
    result = analyze_source(str(path), DetectorConfig.build(names, options))
    return [(r["detector"], r["start_s"], r["end_s"]) for r in result.rows]


def test_black_in_real_footage_found_within_a_frame_and_agrees_with_blackdetect(bikes_frames, tmp_path):
    frames = [f.copy() for f in bikes_frames]
    for i in range(75, 125):        # 3.00 .. 5.00 s
        frames[i][:] = 0
    for i in range(180, 210):       # 7.20 .. 8.40 s: near-black with a little noise, limited range
        frames[i][:] = np.random.default_rng(i).integers(0, 12, frames[i].shape, dtype=np.uint8)
    path = write_clip(tmp_path / "black.mp4", frames, FPS)
    got = analyze(path, ["black"])
    assert got == [("black", pytest.approx(3.0, abs=DT), pytest.approx(5.0, abs=DT)),
                   ("black", pytest.approx(7.2, abs=DT), pytest.approx(8.4, abs=DT))]
    oracle = ffmpeg_intervals(path, "blackdetect=d=1:pix_th=0.10:pic_th=0.98", "black_start", "black_end")
    assert len(oracle) == 2
    for (_, start, end), (o_start, o_end) in zip(got, oracle):
        assert abs(start - o_start) <= 0.1 and abs(end - o_end) <= 0.1


def test_black_hard_negatives_short_fade_and_dark_scene(bikes_frames, tmp_path):
    frames = [f.copy() for f in bikes_frames]
    # a fade to black and back over 0.8 s, black for 0.6 s in the middle: shorter than 1 s
    for k, i in enumerate(range(60, 100)):
        level = min(1.0, abs(k - 20) / 5)
        frames[i] = (frames[i] * level).astype(np.uint8)
    # a night scene: strong gamma darkening keeps the highlights
    for i in range(150, 250):
        frames[i] = (255 * (frames[i] / 255.0) ** 4).astype(np.uint8)
    path = write_clip(tmp_path / "dark.mp4", frames, FPS)
    assert analyze(path, ["black"]) == []
    assert ffmpeg_intervals(path, "blackdetect=d=1:pix_th=0.10:pic_th=0.98", "black_start", "black_end") == []


def _with_graphics(frame: np.ndarray, i: int, logo_share: float) -> np.ndarray:
    """A station logo in the top-right corner (about logo_share of the picture) and a running clock in the
    bottom-left one, burnt in as a playout server does, over the picture whatever it is."""
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    lw = int(round(np.sqrt(logo_share * 2.0 * w * h)))   # a 2:1 box of the given share of the picture
    lh = max(4, lw // 2)
    cv2.rectangle(out, (w - lw - 12, 10), (w - 12, 10 + lh), (230, 230, 240), -1)
    cv2.putText(out, "AV1", (w - lw - 6, 10 + lh - 6), cv2.FONT_HERSHEY_SIMPLEX, lh / 40, (200, 20, 30), 2)
    cv2.putText(out, f"20:15:{(i // FPS) % 60:02d}", (14, h - 14), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                (255, 255, 255), 2)
    return out


@pytest.mark.parametrize("logo_share", [0.01, 0.025, 0.035])   # with the clock: 2.4% to 4.9% of the picture
def test_black_under_a_logo_and_a_running_clock_is_still_black(bikes_frames, tmp_path, logo_share):
    """Playout goes black but the channel logo and the clock stay on air (up to 5% of the picture)."""
    frames = []
    for i, f in enumerate(bikes_frames):
        picture = np.zeros_like(f) if 75 <= i < 175 else f     # black from 3.0 s to 7.0 s
        frames.append(_with_graphics(picture, i, logo_share))
    covered = 1.0 - float(np.mean([(f.max(axis=2) <= 20).mean() for f in frames[75:175]]))
    assert covered <= 0.05, covered
    path = write_clip(tmp_path / "logo_black.mp4", frames, FPS)
    assert analyze(path, ["black"]) == [("black", pytest.approx(3.0, abs=DT), pytest.approx(7.0, abs=DT))]
    # blackdetect's whole-picture rule misses it once the graphics pass 2%
    if covered > 0.025:
        assert ffmpeg_intervals(path, "blackdetect=d=1:pix_th=0.10:pic_th=0.98", "black_start", "black_end") == []


def test_a_dark_scene_under_the_graphics_is_not_black(bikes_frames, tmp_path):
    """The night scene of the hard negatives, with the logo and clock over it: its highlights are spread
    over the picture, not gathered where graphics sit."""
    frames = [_with_graphics((255 * (f / 255.0) ** 4).astype(np.uint8) if 50 <= i < 200 else f, i, 0.03)
              for i, f in enumerate(bikes_frames)]
    path = write_clip(tmp_path / "dark_logo.mp4", frames, FPS)
    assert analyze(path, ["black"]) == []


def _ticker(frame: np.ndarray, i: int) -> np.ndarray:
    """A news ticker scrolling along the bottom (4 px per frame) and a running clock above it."""
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    out[h - 28:h - 4] = (20, 30, 110)
    text = "MARKETS OPEN HIGHER  +++  WEATHER: SHOWERS LATER  +++  TRAFFIC: A1 CLOSED  +++  " * 3
    cv2.putText(out, text, (w - 4 * i % (w * 4), h - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1)
    cv2.putText(out, f"20:15:{(i // FPS) % 60:02d}", (w - 110, h - 36), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (255, 255, 255), 2)
    return out


def test_a_frozen_picture_under_a_running_ticker_and_clock_is_a_partial_freeze(bikes_frames, tmp_path):
    """Playout froze while the graphics inserted downstream keep running: a freeze, marked partial, naming
    the cells that moved (the bottom row only)."""
    frames = [_ticker(bikes_frames[99] if 100 <= i < 200 else f, i) for i, f in enumerate(bikes_frames)]
    path = write_clip(tmp_path / "ticker_freeze.mp4", frames, FPS)
    result = analyze_source(str(path), DetectorConfig.build(["freeze"]))
    assert [(r["start_s"], r["end_s"]) for r in result.rows] == [(pytest.approx(99 * DT, abs=DT),
                                                                 pytest.approx(200 * DT, abs=DT))]
    import json

    details = json.loads(result.rows[0]["details"])
    assert details["partial"] is True and details["moved_cells"] and set(details["moved_cells"]) <= {12, 13, 14, 15}
    # the same graphics over moving pictures: no freeze (the picture's middle moves)
    moving = [_ticker(f, i) for i, f in enumerate(bikes_frames)]
    assert analyze(write_clip(tmp_path / "ticker_live.mp4", moving, FPS), ["freeze"]) == []
    # and with partial freezes off, the ticker breaks the freeze into nothing reportable
    off = analyze_source(str(path), DetectorConfig.build(["freeze"], {"freeze": {"max_moving_cells": 0}})).rows
    assert all(not json.loads(r["details"]).get("partial") for r in off)


def test_freeze_in_real_footage_with_keyframes_inside_agrees_with_freezedetect(bikes_frames, tmp_path):
    frames = [f.copy() for f in bikes_frames]
    for i in range(100, 150):       # frame 99 (3.96 s) frozen until frame 150 (6.00 s)
        frames[i] = frames[99]
    path = write_clip(tmp_path / "freeze.mp4", frames, FPS, gop=12)  # a keyframe every 0.48 s inside the freeze
    got = analyze(path, ["freeze"])
    assert got == [("freeze", pytest.approx(99 * DT, abs=DT), pytest.approx(150 * DT, abs=DT))]
    oracle = ffmpeg_intervals(path, "freezedetect=n=-60dB:d=1", "", "")
    # FFmpeg's freezedetect breaks the freeze at each re-encoded keyframe (and drops pieces under 1 s);
    # ours spans it (the ground truth above): every piece FFmpeg reports lies inside our event
    assert oracle
    assert all(got[0][1] - 0.1 <= a and b <= got[0][2] + 0.1 for a, b in oracle)


def test_freeze_agrees_with_freezedetect_on_a_lossless_freeze(bikes_frames, tmp_path):
    frames = [f.copy() for f in bikes_frames[:150]]
    for i in range(40, 90):
        frames[i] = frames[39]
    path = write_clip(tmp_path / "freeze_ll.mp4", frames, FPS, crf=0)
    got = analyze(path, ["freeze"])
    oracle = ffmpeg_intervals(path, "freezedetect=n=-60dB:d=1", "", "")
    assert len(got) == len(oracle) == 1
    assert abs(got[0][1] - oracle[0][0]) <= 0.1 and abs(got[0][2] - oracle[0][1]) <= 0.1


def test_freeze_hard_negatives_talking_head_static_noisy_shot_title_card(bikes_frames, tmp_path):
    talking = real_clip("carphone_pristine")  # a real talking head, 4 s
    assert analyze(talking, ["freeze"]) == []
    # a low-motion real scene: bikes slowed to a crawl by repeating each frame once (50% exact repeats,
    # and the other frames move): no run of repeats lasts
    slow = [f for f in bikes_frames[:40] for _ in range(2)]
    assert analyze(write_clip(tmp_path / "slow.mp4", slow, FPS), ["freeze"]) == []
    rng = np.random.default_rng(7)
    still = bikes_frames[0].astype(np.int16)
    frames = list(bikes_frames[:50])
    # a live static shot: the same scene with fresh sensor noise on every frame, for 3 s (the encoder
    # smooths most of the noise away: the picture changes by only ~0.1 luma level per frame)
    frames += [np.clip(still + rng.normal(0, 2.0, still.shape), 0, 255).astype(np.uint8) for _ in range(75)]
    # a title card for 3 s: a flat graphic with text-like bars
    card = np.full_like(bikes_frames[0], 30)
    card[100:120, 100:540] = 230
    card[140:150, 180:460] = 200
    frames += [card] * 75
    frames += list(bikes_frames[50:100])
    path = write_clip(tmp_path / "negatives.mp4", frames, FPS)
    assert analyze(path, ["freeze"]) == []


def test_frame_drop_in_a_real_file_from_its_timestamps(bikes_frames, tmp_path):
    keep = [i for i in range(150) if not 50 <= i < 55]   # 5 frames lost at 2.0 s
    path = write_clip(tmp_path / "drop.mkv", [bikes_frames[i] for i in keep], FPS, pts=keep)
    got = analyze(path, ["frame_drop"])
    assert got == [("frame_drop", pytest.approx(2.0, abs=DT), pytest.approx(2.2, abs=DT))]


def test_clean_real_footage_gives_no_picture_loss_events():
    for name in ("bikes", "bigbuckbunny", "carphone_pristine"):
        assert analyze(real_clip(name), ["black", "freeze", "frame_drop", "stall"]) == [], name


def test_analyzer_closes_everything_at_end_of_stream_once_both_kinds_ended():
    config = DetectorConfig.build(["black", "stall"])
    analyzer = StreamAnalyzer(config)
    state = analyzer.initial_state()
    source = {"has_video": True, "has_audio": True, "epoch": "2000-01-01T00:00:00+00:00"}
    out = analyzer.add_features(state, VIDEO, 0, 0.0, rows(50, black_frac=np.ones(50)), source)
    out2 = analyzer.add_control(state, VIDEO, 1, "eos", 2.0, source)
    # black is raised once it lasted its minimum (1 s) and closed when video ends
    assert [(e.detector, e.state, e.end_s) for _, e in out.events] == [("black", "open", 1.0)]
    assert [(e.detector, e.state, e.end_s) for _, e in out2.events] == [("black", "closed", 2.0)]
    out3 = analyzer.add_control(state, AUDIO, 0, "eos", 2.0, source)
    assert out3.events == [] and state["finished"]
