"""Audio health: channel_loss, phase and audio_gap on generated programmes with known truth.

Programmes: real speech (espeak-ng) with room tone, seeded music-like material (tones and noise, partly
correlated stereo), wide reverberant stereo, short hard-panned lines, a mono programme on both channels,
5.1 with a silent LFE. Defects are injected at seeded times; thresholds come from the issue and the
standards (-70 dBFS dead, -0.6 correlation, 0.5 s gap), not from this corpus. FFmpeg is the oracle where it
measures the same thing: `astats` per channel (levels) and `aphasemeter` (out-of-phase detection).
"""
from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from avwatch.local import analyze_source
from detectors.audio_gap import AudioGap
from detectors.channel_loss import ChannelLoss, ChannelLossOptions
from detectors.config import DetectorConfig
from detectors.phase import Phase, PhaseOptions
from tests.alarm_steps import AlarmedDetector
from tests.media import ffmpeg, speech, write_clip
from tests.test_audio_detectors import run, stream_features

RATE = 48000
pytestmark = pytest.mark.footage


# -- programmes ------------------------------------------------------------------------------------


def room_tone(seconds: float, rng, level_db: float = -62.0, channels: int = 2) -> np.ndarray:
    """Independent low-level noise per channel (a room, a console's hiss): never digitally silent."""
    return (rng.standard_normal((int(seconds * RATE), channels)) * 10 ** (level_db / 20)).astype(np.float32)


def music(seconds: float, rng, correlation: float = 0.8) -> np.ndarray:
    """Chords of random partials with a noise floor and a stereo image of the given correlation."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    mono = np.zeros(n)
    for _ in range(6):
        f = rng.uniform(110, 1800)
        mono += rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) * \
            (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t))
    side = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * 0.05
    mono += side * 0.3
    other = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same") * np.std(mono) * 2.8
    right = correlation * mono + math.sqrt(max(0.0, 1 - correlation ** 2)) * other
    return np.stack([mono, right], axis=1).astype(np.float32)


def reverberant(seconds: float, rng) -> np.ndarray:
    """Wide reverberant stereo: bursts through two independent decaying noise tails (correlation ~0)."""
    n = int(seconds * RATE)
    dry = np.zeros(n)
    for at in rng.uniform(0, seconds - 0.5, size=int(seconds * 2)):
        k = int(at * RATE)
        dry[k:k + 2400] += rng.standard_normal(min(2400, n - k)) * 0.2
    tails = [np.exp(-np.arange(RATE) / (0.4 * RATE)) * rng.standard_normal(RATE) for _ in range(2)]
    size = 1 << int(np.ceil(np.log2(n + RATE)))
    wet = [np.fft.irfft(np.fft.rfft(dry, size) * np.fft.rfft(tail, size), size)[:n] * 0.02 for tail in tails]
    return np.stack(wet, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> np.ndarray:
    """espeak-ng speech, mono (its own pauses are digital silence)."""
    folder = tmp_path_factory.mktemp("voice")
    text = ("The evening news follows the weather. Traffic is light on the ring road tonight, "
            "and the match kicks off at eight. More after the break.")
    return speech(text, folder / "voice")[:, 0]


def speech_programme(voice: np.ndarray, seconds: float, rng, stereo_spread: float = 0.15) -> np.ndarray:
    """Speech on both channels, slightly different per channel, over room tone."""
    n = int(seconds * RATE)
    v = np.resize(voice, n) * 0.8
    left = v + stereo_spread * np.roll(v, 240)
    right = v + stereo_spread * np.roll(v, -240)
    return np.stack([left, right], axis=1).astype(np.float32) + room_tone(seconds, rng)


def panned_lines(voice: np.ndarray, seconds: float) -> np.ndarray:
    """Short lines (0.5 s) hard-panned left and right in turn with 0.15 s pauses: each channel alone at a
    time, digitally silent otherwise (the other leg of a dialogue scene mixed hard): a channel is silent
    for 0.8 s at a time, under the 1 s a channel loss needs."""
    n = int(seconds * RATE)
    out = np.zeros((n, 2), np.float32)
    line, pause = int(0.5 * RATE), int(0.15 * RATE)
    speechy = voice[np.abs(voice) > 0.01]
    pos, side = 0, 0
    while pos + line + pause <= n:
        out[pos:pos + line, side] = np.resize(speechy, line) * 0.8
        pos += line + pause
        side ^= 1
    return out[:pos]  # ends after a pause, as a scene does


def run_with_alarms(det, parts) -> list:
    """Stage 2 over audio parts with the analyzer's alarm lifecycle: OPEN events as well as CLOSED ones."""
    from detectors.base import AUDIO

    alarmed = AlarmedDetector(det)
    for p in parts:
        alarmed.step(AUDIO, p)
    return alarmed.finish()


def detector_rows(events, name: str) -> list:
    return [e for e in events if e.detector == name and e.state == "closed"]


def f1(found: list[tuple[float, float]], truth: list[tuple[float, float]], tol: float) -> tuple[int, int, int]:
    """(true positives, false positives, misses): a found event matches a truth whose start is within tol."""
    left = list(truth)
    tp = fp = 0
    for s, _e in found:
        match = next((t for t in left if abs(t[0] - s) <= tol), None)
        if match is None:
            fp += 1
        else:
            tp += 1
            left.remove(match)
    return tp, fp, len(left)


def score(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / max(2 * tp + fp + fn, 1)


# -- channel_loss ------------------------------------------------------------------------------------


def test_channel_loss_is_exact_to_a_block_and_names_the_channel():
    rng = np.random.default_rng(1)
    x = music(8.0, rng)
    x[int(2.0 * RATE):int(4.5 * RATE), 1] = 0.0
    det = ChannelLoss()
    events = run_with_alarms(det, stream_features(x, RATE, DetectorConfig((det,))))
    closed = detector_rows(events, "channel_loss")
    assert [(e.check, e.details["channel"]) for e in closed] == [("channel 1", 1)]
    assert closed[0].start_s == pytest.approx(2.0, abs=0.011) and closed[0].end_s == pytest.approx(4.5, abs=0.011)
    opened = [e for e in events if e.state == "open"]
    assert len(opened) == 1 and opened[0].end_s == pytest.approx(3.0, abs=0.011)   # raised after 1 s


def test_channel_loss_in_5_1_finds_the_dead_centre_and_ignores_a_silent_lfe():
    rng = np.random.default_rng(2)
    front = music(6.0, rng)
    x = np.zeros((front.shape[0], 6), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = front[:, 0], front[:, 1], front.mean(axis=1)
    x[:, 4], x[:, 5] = front[:, 0] * 0.3, front[:, 1] * 0.3          # LFE (3) silent all along, on purpose
    x[int(1.5 * RATE):int(4.0 * RATE), 2] = 0.0                       # the centre (dialogue) lost
    det = ChannelLoss()
    closed = detector_rows(run(det, stream_features(x, RATE, DetectorConfig((det,)))), "channel_loss")
    assert [e.details["channel"] for e in closed] == [2]
    watched_lfe = ChannelLoss(ChannelLossOptions(ignore_lfe=False))
    closed = detector_rows(run(watched_lfe, stream_features(x, RATE, DetectorConfig((watched_lfe,)))), "channel_loss")
    assert sorted(e.details["channel"] for e in closed) == [2, 3]


def test_channel_loss_hard_negatives(voice):
    rng = np.random.default_rng(3)
    cases = {
        "short hard-panned lines": panned_lines(voice, 8.0),
        "mono programme on both channels": np.repeat(voice[:8 * RATE, None], 2, axis=1) * 0.8,
        "wide reverberant stereo": reverberant(8.0, rng),
        "speech with room tone in the pauses": speech_programme(voice, 8.0, rng),
        "every channel silent at once (silence, not channel loss)": np.concatenate(
            [music(3.0, rng), np.zeros((3 * RATE, 2), np.float32), music(2.0, rng)]),
    }
    det = ChannelLoss()
    for what, x in cases.items():
        events = run(det, stream_features(x, RATE, DetectorConfig((det,))))
        assert detector_rows(events, "channel_loss") == [], what


def _astats_levels(path: Path, start: float, end: float) -> list[tuple[float, float]]:
    """FFmpeg astats over [start, end): per channel (peak dBFS, RMS dBFS)."""
    out = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-af",
                          f"atrim={start}:{end},astats=measure_overall=none", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    peaks = [float(v) if v != "-inf" else -math.inf for v in re.findall(r"Peak level dB: (\S+)", out)]
    rms = [float(v) if v != "-inf" else -math.inf for v in re.findall(r"RMS level dB: (\S+)", out)]
    return list(zip(peaks, rms))


def test_channel_loss_in_real_speech_agrees_with_ffmpeg_astats(tmp_path, voice):
    rng = np.random.default_rng(4)
    x = speech_programme(voice, 10.0, rng)
    x[int(3.0 * RATE):int(6.0 * RATE), 0] = 0.0                       # the left leg dropped for 3 s
    path = write_clip(tmp_path / "speech_left_lost.mkv", audio=x)
    rows = [r for r in analyze_source(str(path), DetectorConfig.build(["channel_loss", "silence"])).rows
            if r["detector"] == "channel_loss"]
    assert len(rows) == 1 and abs(rows[0]["start_s"] - 3.0) <= 0.011 and abs(rows[0]["end_s"] - 6.0) <= 0.011
    levels = _astats_levels(path, rows[0]["start_s"] + 0.01, rows[0]["end_s"] - 0.01)
    assert levels[0][0] < -70.0 and levels[1][1] > -50.0                # FFmpeg: left dead, right programme
    before = _astats_levels(path, 0.0, 3.0)
    assert before[0][1] > -50.0                                          # and the left alive before


# -- phase ------------------------------------------------------------------------------------------


def _aphasemeter(path: Path, correlation: float = -0.6, duration: float = 2.0) -> list[tuple[float, float]]:
    """FFmpeg aphasemeter's out-of-phase detection at the same threshold (angle = acos(correlation))."""
    angle = math.degrees(math.acos(correlation))
    out = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-af",
                          f"aphasemeter=video=0:phasing=1:angle={angle:.3f}:duration={duration}", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    starts = [float(v) for v in re.findall(r"out_phase_start: ([\d.]+)", out)]
    ends = [float(v) for v in re.findall(r"out_phase_end: ([\d.]+)", out)]
    return list(zip(starts, ends))


@pytest.mark.parametrize("programme", ["noise", "tone"])
def test_an_inverted_channel_agrees_with_ffmpeg_aphasemeter(tmp_path, programme):
    """On continuous programme with a narrow image, where FFmpeg's per-frame phase (the mean of
    2xy / (x^2 + y^2)) and a windowed correlation read alike."""
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((12 * RATE, 2)).astype(np.float32) * 0.05
    x = np.stack([noise[:, 0], 0.8 * noise[:, 0] + 0.2 * noise[:, 1]], axis=1) if programme == "noise" else \
        np.repeat(np.sin(2 * np.pi * 440 * np.arange(12 * RATE) / RATE)[:, None] * 0.1, 2, axis=1).astype(np.float32)
    x[int(4.0 * RATE):int(8.0 * RATE), 1] *= -1.0
    path = write_clip(tmp_path / f"{programme}_inverted.mkv", audio=x)
    rows = analyze_source(str(path), DetectorConfig.build(["phase"])).rows
    theirs = _aphasemeter(path)
    assert len(rows) == 1 and len(theirs) == 1, (rows, theirs)
    assert abs(rows[0]["start_s"] - 4.0) <= 0.15 and abs(rows[0]["end_s"] - 8.0) <= 0.15
    assert abs(rows[0]["start_s"] - theirs[0][0]) <= 0.2 and abs(rows[0]["end_s"] - theirs[0][1]) <= 0.2


def test_an_inverted_channel_in_speech_is_one_event_across_its_pauses(tmp_path, voice):
    """Speech pauses (room tone only) carry no phase: the event goes on through them (aphasemeter, which
    reads every frame, breaks there and finds nothing of 2 s)."""
    rng = np.random.default_rng(8)
    x = speech_programme(voice, 12.0, rng, stereo_spread=0.05)
    x[int(3.0 * RATE):int(9.0 * RATE), 1] *= -1.0
    path = write_clip(tmp_path / "speech_inverted.mkv", audio=x)
    rows = analyze_source(str(path), DetectorConfig.build(["phase"])).rows
    assert len(rows) == 1 and abs(rows[0]["start_s"] - 3.0) <= 0.3 and abs(rows[0]["end_s"] - 9.0) <= 0.5, rows


def test_phase_hard_negatives_and_the_optional_mono_check(voice):
    rng = np.random.default_rng(6)
    short = music(8.0, rng)
    short[int(3.0 * RATE):int(4.2 * RATE), 1] *= -1.0                 # inverted for 1.2 s only
    cases = {"wide reverberant stereo": reverberant(10.0, rng), "short hard-panned lines": panned_lines(voice, 10.0),
             "mono programme on both channels": np.repeat(voice[:10 * RATE, None], 2, axis=1) * 0.8,
             "an inversion shorter than 2 s": short, "speech with room tone": speech_programme(voice, 10.0, rng)}
    det = Phase()
    for what, x in cases.items():
        assert detector_rows(run(det, stream_features(x, RATE, DetectorConfig((det,)))), "phase") == [], what
    mono = np.repeat(music(40.0, rng)[:, :1], 2, axis=1)
    checking = Phase(PhaseOptions(mono_check=True))
    events = detector_rows(run(checking, stream_features(mono, RATE, DetectorConfig((checking,)))), "phase")
    assert [(e.check, e.severity) for e in events] == [("mono 0-1", "minor")]
    assert detector_rows(run(det, stream_features(mono, RATE, DetectorConfig((det,)))), "phase") == []


# -- audio_gap -----------------------------------------------------------------------------------------


def _frames(seconds: float) -> list[np.ndarray]:
    return [np.full((36, 64, 3), (i * 7) % 255, np.uint8) for i in range(int(seconds * 25))]


def _packet_gaps(path: Path, min_gap: float = 0.5) -> list[tuple[float, float]]:
    """ffprobe's audio packet listing: where one packet ends and the next starts later than min_gap."""
    out = subprocess.run([ffmpeg().replace("ffmpeg", "ffprobe"), "-v", "error", "-select_streams", "a:0",
                          "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    packets = [tuple(float(v) for v in line.split(",")[:2]) for line in out.split() if line]
    gaps, end = [], None
    for pts, dur in packets:
        if end is not None and pts - end >= min_gap:
            gaps.append((end, pts))
        end = pts + dur
    return gaps


def test_audio_gaps_match_ffprobe_packets_and_a_track_that_stops_is_one_event(tmp_path):
    rng = np.random.default_rng(7)
    x = music(10.0, rng)
    path = write_clip(tmp_path / "gaps.mkv", _frames(10.0), audio=x, audio_gaps=[(2.0, 2.9), (5.0, 5.3)])
    rows = [r for r in analyze_source(str(path), DetectorConfig.build(["audio_gap"])).rows]
    truth = _packet_gaps(path)
    assert len(truth) == 1                                             # the 0.3 s hole is below 0.5 s
    assert [(round(r["start_s"], 3), round(r["end_s"], 3)) for r in rows] == \
        [(round(a, 3), round(b, 3)) for a, b in truth]
    # the audio track stops at 4 s while the picture goes on to 10 s: one event to the end
    path = write_clip(tmp_path / "stops.mkv", _frames(10.0), audio=x[:4 * RATE])
    rows = analyze_source(str(path), DetectorConfig.build(["audio_gap"])).rows
    assert len(rows) == 1 and '"how": "track_ended"' in rows[0]["details"]
    assert abs(rows[0]["start_s"] - 4.0) <= 0.03 and abs(rows[0]["end_s"] - 10.0) <= 0.05


def test_a_track_that_stops_is_raised_while_it_is_missing():
    """Stage 2 alone: video goes on, audio does not; the open alarm comes once the video is
    min_gap_s + arrival_slack_s ahead, and the closed event when the audio returns."""
    from detectors.base import AUDIO, VIDEO
    from detectors.table import Features

    alarmed = AlarmedDetector(AudioGap())

    def video(t0, t1):
        t = np.arange(t0, t1, 0.04)
        return Features({"t": t, "frame_dur": np.full(len(t), 0.04)})

    def audio(t0, t1):
        t = np.arange(t0, t1, 0.01)
        return Features({"t": t, "n": np.full(len(t), 480), "rate": np.full(len(t), RATE)})

    for kind, rows in [(AUDIO, audio(0, 2)), (VIDEO, video(0, 2)), (VIDEO, video(2, 4))]:
        assert alarmed.step(kind, rows) == []                            # video 2 s ahead: within the slack
    assert [(e.state, round(e.start_s, 3)) for e in alarmed.step(VIDEO, video(4, 5))] == [("open", 2.0)]
    alarmed.step(AUDIO, audio(4.8, 5.0))
    assert [(e.state, round(e.start_s, 3), round(e.end_s, 3)) for e in alarmed.events] == [("open", 2.0, 2.5),
                                                                                           ("closed", 2.0, 4.8)]


# -- the generated corpus: F1 per detector, clean programmes silent ----------------------------------


def corpus(voice, seed: int):
    """One seeded clip: a programme and at most one injected defect of each kind, with truth."""
    rng = np.random.default_rng(seed)
    kind = ["speech", "music", "music_wide", "reverberant", "panned"][seed % 5]
    seconds = 12.0
    x = {"speech": lambda: speech_programme(voice, seconds, rng), "music": lambda: music(seconds, rng, 0.85),
         "music_wide": lambda: music(seconds, rng, 0.65), "reverberant": lambda: reverberant(seconds, rng),
         "panned": lambda: panned_lines(voice, seconds)}[kind]()
    truth = {"channel_loss": [], "phase": []}
    if seed % 3 != 2 and kind not in ("panned",):        # a third of the corpus is clean
        a = round(float(rng.uniform(0.5, 3.0)), 2)
        b = round(a + float(rng.uniform(1.2, 3.0)), 2)
        x[int(a * RATE):int(b * RATE), int(rng.integers(0, 2))] = 0.0
        truth["channel_loss"].append((a, b))
        if kind in ("speech", "music"):                   # an inversion shows where the image is narrow
            c = round(float(rng.uniform(b + 0.5, b + 2.0)), 2)
            d = round(min(seconds - 0.2, c + float(rng.uniform(2.5, 4.0))), 2)
            x[int(c * RATE):int(d * RATE), 1] *= -1.0
            truth["phase"].append((c, d))
    return kind, x, truth


def test_generated_corpus_f1_and_clean_clips_stay_clean(voice):
    """Report on seeds 100-129 (the rules were written against the examples above, seeds 1-7)."""
    dets = (ChannelLoss(), Phase())
    totals = {d.name: [0, 0, 0] for d in dets}
    # phase: a window (0.4 s), since an inversion that begins in a speech pause has no sound to date it by
    tolerance = {"channel_loss": 0.05, "phase": 0.4}
    for seed in range(100, 130):
        kind, x, truth = corpus(voice, seed)
        feats = stream_features(x, RATE, DetectorConfig(dets))
        for det in dets:
            found = [(e.start_s, e.end_s) for e in detector_rows(run(det, feats), det.name)]
            if not truth[det.name]:
                assert found == [], (seed, kind, det.name, found)
            tp, fp, fn = f1(found, truth[det.name], tolerance[det.name])
            for i, v in enumerate((tp, fp, fn)):
                totals[det.name][i] += v
    for name, (tp, fp, fn) in totals.items():
        print(f"{name}: tp {tp} fp {fp} fn {fn} F1 {score(tp, fp, fn):.3f}")
        assert tp >= 5 and score(tp, fp, fn) >= 0.95, (name, tp, fp, fn)


def test_audio_gap_corpus_f1_against_the_injected_holes(tmp_path):
    """Seeds 200-209: 0-2 holes each, 0.2-1.5 s long (those under 0.5 s are hard negatives), in whole
    1024-sample packets; truth is the hole as written, cross-checked with ffprobe's packet listing."""
    tp = fp = fn = 0
    for seed in range(200, 210):
        rng = np.random.default_rng(seed)
        holes = []
        for _ in range(int(rng.integers(0, 3))):
            a = float(rng.uniform(1.0 + 4.0 * len(holes), 3.5 + 4.0 * len(holes)))
            holes.append((a, a + float(rng.uniform(0.2, 1.5))))
        path = write_clip(tmp_path / f"gaps{seed}.mkv", _frames(10.0), audio=music(10.0, rng), audio_gaps=holes)
        truth = _packet_gaps(path)
        assert len(truth) == sum(1 for a, b in holes if b - a >= 0.5 + 1024 / RATE) or \
            len(truth) == sum(1 for a, b in holes if b - a >= 0.5 - 1024 / RATE)      # packet rounding
        found = [(r["start_s"], r["end_s"]) for r in analyze_source(str(path), DetectorConfig.build(["audio_gap"])).rows]
        t, f, n = f1(found, truth, 0.03)
        tp, fp, fn = tp + t, fp + f, fn + n
    print(f"audio_gap: tp {tp} fp {fp} fn {fn} F1 {score(tp, fp, fn):.3f}")
    assert tp >= 5 and score(tp, fp, fn) >= 0.95, (tp, fp, fn)


# -- low_level (optional) ------------------------------------------------------------------------------


def test_low_level_finds_dead_air_with_hiss_and_is_optional(tmp_path, voice):
    from detectors.low_level import LowLevel

    rng = np.random.default_rng(10)
    x = speech_programme(voice, 24.0, rng)
    x[int(6.0 * RATE):int(18.0 * RATE)] = room_tone(12.0, rng, level_db=-56.0)    # the programme lost: hiss
    path = write_clip(tmp_path / "dead_air.mkv", audio=x)
    assert "low_level" not in DetectorConfig.build().names                      # optional: off by default
    rows = analyze_source(str(path), DetectorConfig.build(["low_level", "silence"])).rows
    assert [r["detector"] for r in rows] == ["low_level"]                        # not silence: hiss is there
    assert abs(rows[0]["start_s"] - 6.0) <= 0.1 and abs(rows[0]["end_s"] - 18.0) <= 0.1
    levels = _astats_levels(path, rows[0]["start_s"] + 0.1, rows[0]["end_s"] - 0.1)
    assert all(rms < -50.0 and peak >= -60.0 for peak, rms in levels)           # FFmpeg reads it the same way
    det = LowLevel()
    quiet_cases = {"speech with room tone": speech_programme(voice, 24.0, rng),
                   "a quiet documentary bed at -45 dBFS": room_tone(24.0, rng, level_db=-45.0),
                   "digital silence (silence's, not low level)": np.zeros((24 * RATE, 2), np.float32),
                   "hiss for 8 s only": np.concatenate([music(4.0, rng), room_tone(8.0, rng, -56.0), music(4.0, rng)])}
    for what, y in quiet_cases.items():
        assert detector_rows(run(det, stream_features(y, RATE, DetectorConfig((det,)))), "low_level") == [], what


# -- every audio track ------------------------------------------------------------------------------------


def two_track_clip(tmp_path) -> Path:
    """A programme track (stereo, healthy) and a second-language track whose right channel dies at 2-4 s,
    muxed by FFmpeg with the second track tagged 'spa'."""
    rng = np.random.default_rng(11)
    first = music(6.0, rng)
    second = music(6.0, rng)
    second[2 * RATE:4 * RATE, 1] = 0.0
    frames = [np.full((36, 64, 3), 40 + (i * 5) % 200, np.uint8) for i in range(150)]
    write_clip(tmp_path / "t0.mkv", frames, audio=first)
    write_clip(tmp_path / "t1.mkv", None, audio=second)
    out = tmp_path / "two_tracks.mkv"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(tmp_path / "t0.mkv"), "-i",
                    str(tmp_path / "t1.mkv"), "-map", "0:v", "-map", "0:a", "-map", "1:a", "-c", "copy",
                    "-metadata:s:a:1", "language=spa", str(out)], check=True)
    return out


def test_every_audio_track_is_analysed_on_its_own(tmp_path):
    from avwatch.convert.options import DecodeOptions
    from avwatch.errors import AvwatchError

    path = two_track_clip(tmp_path)
    result = analyze_source(str(path), DetectorConfig.build(["channel_loss", "silence"]))
    assert result.audio_tracks == 2
    assert [(r["stream_id"], r["detector"], round(r["start_s"], 2), round(r["end_s"], 2)) for r in result.rows] == \
        [("two_tracks.a1", "channel_loss", 2.0, 4.0)]                  # the second track's own event
    only_second = analyze_source(str(path), DetectorConfig.build(["channel_loss"]),
                                 decode=DecodeOptions(audio_tracks=(1,)))
    assert [r["stream_id"] for r in only_second.rows] == ["two_tracks"]  # chosen alone: it goes with the video
    with pytest.raises(AvwatchError, match=r"has 2 audio track\(s\) \(0 to 1\); --audio-tracks asks for 5"):
        analyze_source(str(path), DetectorConfig.build(["silence"]), decode=DecodeOptions(audio_tracks=(0, 5)))


@pytest.mark.kafka
def test_each_audio_track_is_published_as_a_stream_of_its_own(broker, tmp_path):
    import json

    from jobs.kafka_io import read_all
    from jobs.publish import PublishOptions, publish

    path = two_track_clip(tmp_path)
    stats = publish([str(path)], ["cam"], PublishOptions(bootstrap=broker.bootstrap, video_topic="tracks.video",
                                                          audio_topic="tracks.audio"))
    assert stats[0].error is None and "cam.a1" in stats[0].note
    from schemas.codec import decode

    keys = {}
    for record in read_all(broker.bootstrap, ["tracks.audio"]):
        _kind, table = decode(record.value)
        source = json.loads(table.column("source")[0].as_py())
        keys.setdefault(record.key.decode(), set()).add((source["has_video"], source["audio"]["track"],
                                                         source["audio"].get("language")))
    assert keys == {"cam": {(True, 0, None)}, "cam.a1": {(False, 1, "spa")}}


def test_low_level_corpus_f1_and_a_deliberate_pause_raises_nothing(voice):
    """Seeds 300-309: speech over room tone, half of them losing the programme to a -54..-58 dBFS hiss
    for 11-14 s; and a deliberate 0.8 s pause (digital silence) in speech, which no audio check reports."""
    from detectors.low_level import LowLevel

    det = LowLevel()
    tp = fp = fn = 0
    for seed in range(300, 310):
        rng = np.random.default_rng(seed)
        x = speech_programme(voice, 30.0, rng)
        truth = []
        if seed % 2 == 0:
            a = round(float(rng.uniform(3.0, 10.0)), 2)
            b = round(a + float(rng.uniform(11.0, 14.0)), 2)
            n = int(b * RATE) - int(a * RATE)
            x[int(a * RATE):int(b * RATE)] = room_tone(b - a + 0.01, rng, level_db=float(rng.uniform(-58.0, -54.0)))[:n]
            truth.append((a, b))
        found = [(e.start_s, e.end_s) for e in detector_rows(run(det, stream_features(x, RATE, DetectorConfig((det,)))),
                                                              "low_level")]
        t, f, n = f1(found, truth, 0.3)
        tp, fp, fn = tp + t, fp + f, fn + n
    print(f"low_level: tp {tp} fp {fp} fn {fn} F1 {score(tp, fp, fn):.3f}")
    assert tp == 5 and score(tp, fp, fn) >= 0.95, (tp, fp, fn)
    x = speech_programme(voice, 8.0, np.random.default_rng(12))
    x[int(4.0 * RATE):int(4.8 * RATE)] = 0.0                                  # a deliberate 0.8 s pause
    names = ["silence", "channel_loss", "phase", "low_level", "clipping"]
    config = DetectorConfig.build(names)
    feats = stream_features(x, RATE, config)
    for det in config.detectors:
        assert detector_rows(run(det, feats), det.name) == [], det.name
