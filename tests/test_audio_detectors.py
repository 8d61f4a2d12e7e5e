"""The audio detectors silence and clipping (loudness has tests/test_loudness.py), unit to end to end.

Synthetic streams go through the converter's own Segmenter and stage 1 (no files), so block and segment
boundaries fall where they would in production; real media (espeak-ng speech, AAC encodes, the
bigbuckbunny 5.1 track) goes through avwatch.local.analyze_source; Debian's FFmpeg silencedetect is the
oracle for silence.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avwatch.convert.decode import AudioChunk, SourceInfo
from avwatch.convert.segments import Segmenter
from avwatch.local import analyze_source
from detectors.base import AUDIO
from detectors.clipping import Clipping, ClippingOptions
from detectors.config import DetectorConfig
from detectors.features import Features, stage1
from detectors.silence import Silence, SilenceOptions, noise_amplitude
from schemas.records import AUDIO_SEGMENT
from tests.media import ffmpeg, real_clip, sine, speech, write_clip

LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


# -- helpers (also used by tests/test_loudness.py) ---------------------------------------------------


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) to int16 as FFmpeg converts them (x * 32768, rounded, saturated)."""
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x
    if x.ndim == 1:
        x = x[:, None]
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def stream_features(x: np.ndarray, rate: int, config: DetectorConfig, segment_s: float = 1.0,
                    chunk: int = 1024) -> list[Features]:
    """A synthetic stream (float or int16, (n, ch)) through the converter's Segmenter and stage 1.

    Returns one Features table per audio segment, as stage 2 would receive them.
    """
    raw = to_int16(x)
    ch = raw.shape[1]
    info = SourceInfo(uri="synthetic", live=False, has_video=False, has_audio=True,
                      audio={"codec": "pcm_s16le", "src_rate": rate, "sample_rate": rate, "channels": ch,
                             "layout": LAYOUTS.get(ch, f"{ch}c")})
    seg = Segmenter("synthetic", info, segment_s=segment_s)
    out = []

    def take(segments):
        for s in segments:
            if s.kind == "audio":
                out.append(stage1(AUDIO_SEGMENT.name, s.table, config).features)

    for i in range(0, raw.shape[0], chunk):
        take(seg.add(AudioChunk(t=i / rate, samples=raw[i:i + chunk])))
    take(seg.finish())
    return out


def run(detector, parts: list[Features], end_s: float | None = None) -> list:
    """Stage 2 over the parts in order, then the end of stream; returns all events."""
    state = detector.initial_state()
    events = []
    for p in parts:
        events += detector.process(state, AUDIO, p)
    if end_s is None:
        last = [p for p in parts if len(p)][-1]
        end_s = float(last["t"][-1] + last["n"][-1] / last["rate"][-1])
    return events + detector.finish(state, end_s)


def split_at(whole: Features, cuts: list[int], arrow: bool = True) -> list[Features]:
    """Cut a feature table at row indices; optionally through Arrow, as the Spark job ships them."""
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < len(whole))) + [len(whole)]
    parts = [whole.slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return [Features.from_arrow(p.to_arrow()) for p in parts] if arrow else parts


def spans(events) -> list[tuple[float, float]]:
    return [(round(e.start_s, 6), round(e.end_s, 6)) for e in events]


def tone_bursts(seconds: float, rate: int, channels: int, amplitude: float = 0.3, freq: float = 440.0,
                seed: int = 0) -> np.ndarray:
    """A tone with a little noise (never quiet for more than a sample or two)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    x = amplitude * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1)


def music(seconds: float, rate: int = 48000, peak_dbfs: float = -0.1, seed: int = 1) -> np.ndarray:
    """Music-like stereo: harmonic partials with slow envelopes plus noise, normalised to a sample peak."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    x = np.zeros((len(t), 2))
    for f in (110, 165, 220, 330, 440, 660, 880, 1320, 2640):
        env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t + rng.uniform(0, 6))
        for c in range(2):
            x[:, c] += rng.uniform(0.3, 1.0) * env * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
    x += 0.1 * rng.standard_normal(x.shape)
    return (x / np.abs(x).max() * 10 ** (peak_dbfs / 20)).astype(np.float32)


def silencedetect(path: Path, noise_db: float, d: float, mono: bool = False) -> list[tuple]:
    """Debian FFmpeg's silencedetect: [(channel or None, start, end)]."""
    af = f"silencedetect=noise={noise_db}dB:d={d}" + (":mono=1" if mono else "")
    err = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-vn", "-af", af, "-f", "null",
                          "-"], capture_output=True, text=True, check=True).stderr
    out, open_ = [], {}
    for m in re.finditer(r"(?:channel: (\d+) \| )?silence_(start|end): (-?[\d.]+)", err):
        chan = int(m.group(1)) if m.group(1) is not None else None
        if m.group(2) == "start":
            open_[chan] = float(m.group(3))
        else:
            out.append((chan, open_.pop(chan), float(m.group(3))))
    return out


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory) -> np.ndarray:
    """About 8 s of real speech (espeak-ng), float32 stereo at 48 kHz."""
    d = tmp_path_factory.mktemp("speech")
    return speech("The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow. "
                  "How vexingly quick daft zebras jump.", d / "speech")


# -- silence: options and stage 1 -------------------------------------------------------------------


def test_silence_options_are_checked():
    assert noise_amplitude(-60.0) == pytest.approx(0.001)
    assert noise_amplitude(0.002) == 0.002  # an amplitude, as silencedetect noise=0.002
    with pytest.raises(ValueError, match="min_duration_s"):
        SilenceOptions(min_duration_s=0.0)
    with pytest.raises(ValueError, match="noise"):
        SilenceOptions(noise=2.0)
    with pytest.raises(ValueError, match="unknown option"):
        SilenceOptions.from_mapping({"d": 2})


def test_silence_stage1_counts_quiet_samples_at_block_edges():
    rate = 48000
    x = np.full((1000, 2), 0.5, np.float32)  # 2 full blocks of 480 and a short one of 40
    x[:100, :] = 0.0          # block 0: 100 quiet at the start
    x[300:480, 0] = 0.0       # block 0: channel 0 quiet to the end (180), channel 1 loud
    x[480:960, :] = 0.0005    # block 1: quiet everywhere (below 0.001)
    x[990:, 1] = 0.0          # short block 2: channel 1 quiet for its last 10
    cfg = DetectorConfig.build(["silence"])
    (f,) = stream_features(x, rate, cfg)
    assert f["n"].tolist() == [480, 480, 40]
    assert f["silence_lead"].tolist() == [[100, 100], [480, 480], [0, 0]]
    assert f["silence_trail"].tolist() == [[180, 0], [480, 480], [0, 10]]
    assert f["silence_lead_all"].tolist() == [100, 480, 0]
    assert f["silence_trail_all"].tolist() == [0, 480, 0]
    assert f["silence_peak"][1].tolist() == pytest.approx([0.0005, 0.0005], abs=1 / 32768)


# -- silence: stage 2 on synthetic streams ------------------------------------------------------------


@pytest.mark.parametrize("rate,channels", [(48000, 2), (44100, 1), (48000, 6), (44100, 2)])
def test_silence_gaps_are_exact_to_the_sample(rate, channels):
    x = tone_bursts(9.0, rate, channels)
    # gaps at samples 1234..2.5 s, 4.0..4.7 s and 6.05 s..the end
    x[1234:int(2.5 * rate)] = 0.0
    x[int(4.0 * rate):int(4.7 * rate)] = 0.0          # 0.7 s: shorter than d = 1
    x[int(6.05 * rate):] = 0.0
    parts = stream_features(x, rate, DetectorConfig.build(["silence"]))
    events = run(Silence(), parts)
    assert spans(events) == [(round(1234 / rate, 6), 2.5), (6.05, 9.0)]
    assert all(e.score == 0.0 and e.severity == "major" and e.details["channel"] == "all" for e in events)
    shorter = run(Silence(SilenceOptions(min_duration_s=0.5)), parts)
    assert spans(shorter) == [(round(1234 / rate, 6), 2.5), (4.0, 4.7), (6.05, 9.0)]


def test_silence_all_silent_one_block_and_short_streams():
    rate = 48000
    cfg = DetectorConfig.build(["silence"])
    # all silent, 3 s: one event over the whole stream
    events = run(Silence(), stream_features(np.zeros((3 * rate, 2)), rate, cfg))
    assert spans(events) == [(0.0, 3.0)] and events[0].details["peak_dbfs"] is None
    # one block of 10 ms: too short for anything
    assert run(Silence(), stream_features(np.zeros((480, 2)), rate, cfg)) == []
    # a stream shorter than a block
    assert run(Silence(), stream_features(np.zeros((100, 1)), rate, cfg)) == []
    # 1.2 s of silence, cut into the converter's shortest segments (0.1 s) and odd-sized chunks
    x = tone_bursts(3.0, rate, 2)
    x[int(0.95 * rate):int(2.15 * rate)] = 0.0
    parts = stream_features(x, rate, cfg, segment_s=0.1, chunk=333)
    assert spans(run(Silence(), parts)) == [(0.95, 2.15)]


def test_silence_level_hard_negatives():
    rate = 48000
    rng = np.random.default_rng(3)
    n = 4 * rate
    # -50 dBFS (RMS) noise: quiet, not silent (its peaks are near -40 dBFS)
    noise50 = 10 ** (-50 / 20) * rng.standard_normal((n, 2))
    cfg = DetectorConfig.build(["silence"])
    assert run(Silence(), stream_features(noise50, rate, cfg)) == []
    # uniform noise peaking at -66 dBFS is below -60 dB: silence, with its peak reported
    low = 10 ** (-66 / 20) * rng.uniform(-1, 1, (n, 2))
    (event,) = run(Silence(), stream_features(low, rate, cfg))
    assert (event.start_s, event.end_s) == (0.0, 4.0)
    assert -67.0 < event.details["peak_dbfs"] < -65.5
    # ... but not below -70 dB (stage 1 counts quiet samples at the configured level)
    cfg70 = DetectorConfig.build(["silence"], {"silence": {"noise": -70.0}})
    assert run(cfg70.get("silence"), stream_features(low, rate, cfg70)) == []


def test_silence_all_channels_vs_per_channel():
    rate = 48000
    x = tone_bursts(6.0, rate, 6)
    x[int(1.0 * rate):int(3.0 * rate), 3] = 0.0   # the LFE channel of 5.1 drops for 2 s
    x[int(4.0 * rate):int(5.5 * rate), :] = 0.0   # then everything for 1.5 s
    cfg = DetectorConfig.build(["silence"], {"silence": {"per_channel": True}})
    parts = stream_features(x, rate, cfg)
    assert spans(run(Silence(), parts)) == [(4.0, 5.5)]
    per = run(Silence(SilenceOptions(per_channel=True)), parts)
    got = sorted((e.details["channel"], round(e.start_s, 6), round(e.end_s, 6)) for e in per)
    assert got == [(0, 4.0, 5.5), (1, 4.0, 5.5), (2, 4.0, 5.5), (3, 1.0, 3.0), (3, 4.0, 5.5), (4, 4.0, 5.5),
                   (5, 4.0, 5.5)]


# -- silence: agreement with FFmpeg silencedetect --------------------------------------------------------


def _agree(ours: list[tuple], theirs: list[tuple], tol: float = 0.1):
    assert len(ours) == len(theirs), (ours, theirs)
    for (c1, s1, e1), (c2, s2, e2) in zip(sorted(ours, key=str), sorted(theirs, key=str)):
        assert c1 == c2 and abs(s1 - s2) <= tol and abs(e1 - e2) <= tol, (ours, theirs)


def _ours(path: Path, options: dict) -> list[tuple]:
    rows = analyze_source(str(path), DetectorConfig.build(["silence"], {"silence": options})).rows
    out = []
    for r in rows:
        chan = re.search(r'"channel": ("all"|\d+)', r["details"]).group(1)
        out.append((None if chan == '"all"' else int(chan), r["start_s"], r["end_s"]))
    return out


def test_silence_agrees_with_ffmpeg_on_generated_gaps(tmp_path):
    rate = 48000
    x = sine(10.0, 440.0, 0.3)
    x[int(1.3 * rate):int(3.1 * rate)] = 0.0
    x[int(4.0 * rate):int(4.6 * rate)] = 0.0
    x[int(5.2 * rate):int(6.4 * rate), 1] = 0.0   # right channel only
    x[int(8.3 * rate):] *= 10 ** (-70 / 20) / 0.3   # a -70 dBFS hum to the end
    path = write_clip(tmp_path / "gaps.mkv", audio=x)
    for noise, d in ((-60, 1.0), (-60, 0.5), (-50, 1.5), (-80, 1.0)):
        theirs = silencedetect(path, noise, d)
        assert theirs  # the oracle saw something: the comparison is not vacuous
        assert all(e - s >= d for _, s, e in theirs)
        _agree(_ours(path, {"noise": noise, "min_duration_s": d}), theirs)
    _agree(_ours(path, {"per_channel": True}), silencedetect(path, -60, 1.0, mono=True))


def test_silence_agrees_with_ffmpeg_on_speech_with_injected_silence(tmp_path, speech_clip):
    rate = 48000
    x = np.concatenate([speech_clip[:3 * rate], np.zeros((int(1.5 * rate), 2), np.float32),
                        speech_clip[3 * rate:], np.zeros((int(1.2 * rate), 2), np.float32), speech_clip[:rate]])
    path = write_clip(tmp_path / "speech_gaps.mp4", audio=x)  # AAC, as broadcast audio would be
    theirs = silencedetect(path, -60, 1.0)
    assert len(theirs) == 2
    assert abs(theirs[0][1] - 3.0) < 0.1 and abs(theirs[0][2] - 4.5) < 0.1
    _agree(_ours(path, {}), theirs)
    # the pauses between espeak's words and sentences are shorter than 1 s but longer than 0.2 s
    short = silencedetect(path, -60, 0.2)
    assert len(short) > 2
    _agree(_ours(path, {"min_duration_s": 0.2}), short)


def test_silence_on_bigbuckbunny_is_only_the_silent_lfe():
    path = real_clip("bigbuckbunny")
    assert _ours(path, {"min_duration_s": 0.5}) == []
    per = _ours(path, {"per_channel": True, "min_duration_s": 0.5})
    _agree(per, silencedetect(path, -60, 0.5, mono=True))
    assert [c for c, _, _ in per] == [3]   # the 5.1 track's LFE (FL FR FC LFE BL BR) carries nothing


# -- clipping ------------------------------------------------------------------------------------------


def test_clipping_stage1_describes_runs_at_block_edges():
    rate = 48000
    raw = np.zeros((960, 1), np.int16)
    raw[0:3] = 32767           # block 0: a run of 3 at the start
    raw[100:104] = -32768      # an inner run of 4 (negative)
    raw[200:202] = 32767       # an inner run of 2: too short for min_run 3
    raw[300] = 32767           # an isolated full-scale sample
    raw[470:480] = 32767       # a run touching the end of block 0 ...
    raw[480:485] = 32767       # ... and going on into block 1
    raw[500:600] = 32767
    raw[700:710] = 32766       # 32766 >= 0.999 * 32767: still clipped
    raw[800:810] = 32700       # -0.018 dBFS: not clipped at the default level
    (f,) = stream_features(raw, rate, DetectorConfig.build(["clipping"]))
    assert f["clipping_lead"][:, 0].tolist() == [3, 5]
    assert f["clipping_trail"][:, 0].tolist() == [10, 0]
    assert f["clipping_inner"][:, 0].tolist() == [4, 110]
    assert f["clipping_inner_runs"][:, 0].tolist() == [1, 2]
    assert f["clipping_inner_longest"][:, 0].tolist() == [4, 100]
    assert f["clipping_first"][:, 0].tolist() == [100, 20]
    assert f["clipping_last"][:, 0].tolist() == [104, 230]


def _clip_parts(x, rate=48000, segment_s=1.0, chunk=1024):
    return stream_features(x, rate, DetectorConfig.build(["clipping"]), segment_s=segment_s, chunk=chunk)


@pytest.mark.parametrize("rate,channels", [(48000, 2), (44100, 1), (48000, 6)])
def test_clipping_gain_over_an_interval(rate, channels):
    # a 200 Hz tone at -12 dBFS, driven +20 dB (into clipping) from 1.5 s to 3.25 s
    x = tone_bursts(5.0, rate, channels, amplitude=0.25, freq=200.0)[:, :channels]
    a, b = int(1.5 * rate), int(3.25 * rate)
    x[a:b] = np.clip(x[a:b] * 10.0, -1.0, 1.0)
    (event,) = run(Clipping(), _clip_parts(x, rate))
    assert abs(event.start_s - 1.5) < 0.003 and abs(event.end_s - 3.25) < 0.003
    d = event.details
    assert d["channels"] == list(range(channels))
    assert 0.5 < d["clipped_share"] < 0.95            # a sine x 2.5 over full scale spends ~75 % clipped
    assert d["runs_per_channel"][0] > 2 * 200 * 1.7 * 0.9   # both half-cycles clip, every cycle
    assert event.score == d["longest_run_samples"] and event.threshold == 3


def test_clipping_hard_negatives_synthetic():
    rate = 48000
    # loud but unclipped: -0.1 dBFS peaks (tones down to 20 Hz, music)
    for f in (20.0, 50.0, 1000.0, 5000.0):
        x = sine(3.0, f, 10 ** (-0.1 / 20))
        assert run(Clipping(), _clip_parts(x)) == [], f
    assert run(Clipping(), _clip_parts(music(4.0))) == []
    # isolated full-scale samples (clicks), even many of them, and pairs
    raw = to_int16(tone_bursts(4.0, rate, 2, amplitude=0.2))
    raw[np.arange(1000, 4 * rate, 997), 0] = 32767
    raw[np.arange(2000, 4 * rate, 1499), 1] = -32768
    raw[np.arange(3000, 4 * rate, 2999)[:, None] + [0, 1], 1] = 32767
    assert run(Clipping(), _clip_parts(raw)) == []
    # one run of 3 on a transient is not clipping (min_runs=3 in one channel) ...
    raw2 = to_int16(tone_bursts(2.0, rate, 2, amplitude=0.2))
    raw2[5000:5003, 0] = 32767
    assert run(Clipping(), _clip_parts(raw2)) == []
    # ... unless asked for
    (ev,) = run(Clipping(ClippingOptions(min_runs=1)), _clip_parts(raw2))
    assert (ev.start_s, ev.end_s) == pytest.approx((5000 / rate, 5003 / rate), abs=1e-9)


def test_clipping_runs_across_block_and_segment_boundaries():
    rate = 48000
    base = to_int16(tone_bursts(3.0, rate, 1, amplitude=0.2))
    # runs of exactly min_run (3) straddling a block boundary (480 * k) and a segment boundary (48000)
    starts_ok = [480 * 90 - 1, 48000 - 2, 480 * 110 - 1]  # within 0.2 s: one event
    raw = base.copy()
    for s in starts_ok:
        raw[s:s + 3] = -32768
    for seg, chunk in ((1.0, 1024), (0.1, 480), (0.1, 77)):
        (ev,) = run(Clipping(), _clip_parts(raw, rate, seg, chunk))
        assert (ev.start_s, ev.end_s) == pytest.approx((starts_ok[0] / rate, (starts_ok[-1] + 3) / rate), abs=1e-9)
        assert ev.details["runs_per_channel"] == [3] and ev.details["clipped_samples"] == 9
    # the same with runs of 2: nothing
    raw = base.copy()
    for s in starts_ok:
        raw[s:s + 2] = -32768
    assert run(Clipping(), _clip_parts(raw)) == []
    # a positive run followed at once by a negative one is two runs, not one
    raw = base.copy()
    raw[1000:1002] = 32767
    raw[1002:1004] = -32768
    assert run(Clipping(), _clip_parts(raw)) == []


def test_clipping_merge_gap_and_per_channel_counts():
    rate = 48000
    x = tone_bursts(6.0, rate, 2, amplitude=0.25, freq=150.0)
    for a, b in ((1.0, 1.4), (1.7, 2.0), (3.5, 3.8)):   # gaps of 0.3 s (merged) and 1.5 s (not)
        x[int(a * rate):int(b * rate), 1] *= 8.0
    x = np.clip(x, -1, 1)
    events = run(Clipping(), _clip_parts(x))
    assert [(round(e.start_s, 2), round(e.end_s, 2)) for e in events] == [(1.0, 2.0), (3.5, 3.8)]
    assert all(e.details["channels"] == [1] and e.details["clipped_samples_per_channel"][0] == 0 for e in events)
    apart = run(Clipping(ClippingOptions(merge_gap_s=0.2)), _clip_parts(x))
    assert len(apart) == 3


def _gain_interval(x: np.ndarray, rate: int, near_start: float, near_end: float, gain_db: float = 20.0,
                   over: float = 3.0):
    """Apply gain over [a, b), a and b chosen near the given times where the gained speech goes at once
    `over` times past full scale (~10 dB), so that clipping begins and ends there; returns (y, a_s, b_s)."""
    g = 10 ** (gain_db / 20)
    loud = np.abs(x).max(axis=1) * g >= over
    a = int(near_start * rate) + int(np.argmax(loud[int(near_start * rate):]))
    b_end = int(near_end * rate)
    b = b_end - int(np.argmax(loud[:b_end][::-1]))
    y = x.copy()
    y[a:b] *= g
    return y, a / rate, b / rate


def aac_from_float(tmp_path: Path, name: str, audio: np.ndarray) -> Path:
    """Encode float audio with Debian FFmpeg's AAC encoder (via a float WAV)."""
    wav = write_clip(tmp_path / f"{name}.wav", audio=audio, acodec="pcm_f32le")
    out = tmp_path / f"{name}.mp4"
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", str(out)], check=True)
    return out


@pytest.mark.parametrize("chain", ["pcm", "clipped_aac_ffmpeg", "clipped_aac_pyav", "over_full_scale_aac_pyav"])
def test_clipping_speech_with_gain_found_within_50ms(tmp_path, speech_clip, chain):
    """+20 dB over [a, b) of real speech (a sentence pause of ~0.5 s inside), then: pcm_s16le (the float
    stream saturates at int16 full scale); clipped to +-1 as a fixed-point chain would, then AAC (Debian
    FFmpeg, PyAV's FFmpeg); or AAC straight from the over-full-scale float (the encoder's clip avoidance
    scales loud windows down, the rest saturates on decoding)."""
    rate = 48000
    y, a, b = _gain_interval(speech_clip, rate, 2.0, 3.2)
    clipped = np.clip(y, -1, 1)
    path = {"pcm": lambda: write_clip(tmp_path / "gain.mkv", audio=clipped),
            "clipped_aac_ffmpeg": lambda: aac_from_float(tmp_path, "gain", clipped),
            "clipped_aac_pyav": lambda: write_clip(tmp_path / "gain.mp4", audio=clipped),
            "over_full_scale_aac_pyav": lambda: write_clip(tmp_path / "gain.mp4", audio=y)}[chain]()
    rows = analyze_source(str(path), DetectorConfig.build(["clipping"])).rows
    assert len(rows) == 1, rows
    assert abs(rows[0]["start_s"] - a) <= 0.05 and abs(rows[0]["end_s"] - b) <= 0.05, (rows[0], a, b)


def test_clipping_none_on_clean_speech(tmp_path, speech_clip):
    loud = speech_clip / np.abs(speech_clip).max() * 10 ** (-0.1 / 20)   # normalised to -0.1 dBFS
    for path in (write_clip(tmp_path / "speech.mkv", audio=loud), write_clip(tmp_path / "speech.mp4", audio=loud),
                 aac_from_float(tmp_path, "speech", loud)):
        assert analyze_source(str(path), DetectorConfig.build(["clipping"])).rows == [], path


def test_clipping_music_aac_hard_negative_and_positive(tmp_path):
    x = music(6.0)
    # unclipped music and a 1 kHz tone at -0.1 dBFS through AAC: the codec's overshoot on the tone's hard
    # onset saturates a couple of short runs, which is not clipping
    for name, audio in (("music", x), ("tone", sine(4.0, 1000.0, 10 ** (-0.1 / 20)))):
        for path in (write_clip(tmp_path / f"{name}.mp4", audio=audio), aac_from_float(tmp_path, name, audio)):
            assert analyze_source(str(path), DetectorConfig.build(["clipping"])).rows == [], path
    # +20 dB from 2 s to 4 s, clipped, then AAC
    y = x.copy()
    y[int(2.0 * 48000):int(4.0 * 48000)] *= 10.0
    y = np.clip(y, -1, 1)
    for path in (aac_from_float(tmp_path, "music_gain", y), write_clip(tmp_path / "music_gain.mp4", audio=y)):
        (row,) = analyze_source(str(path), DetectorConfig.build(["clipping"])).rows
        assert abs(row["start_s"] - 2.0) <= 0.05 and abs(row["end_s"] - 4.0) <= 0.05, (path, row)


def test_clipping_none_on_bigbuckbunny():
    assert analyze_source(str(real_clip("bigbuckbunny")), DetectorConfig.build(["clipping"])).rows == []


# -- window-split invariance ------------------------------------------------------------------------------


def _invariance_stream() -> tuple[np.ndarray, int]:
    """12 s, stereo, 44.1 kHz: silences (all and one channel), clipped passages, a quiet stretch."""
    rate = 44100
    x = tone_bursts(12.0, rate, 2, amplitude=0.25, freq=180.0, seed=5)
    x[int(0.5 * rate):int(1.8 * rate)] = 0.0
    x[int(2.0 * rate):int(3.1 * rate), 1] = 0.0
    x[int(3.5 * rate):int(4.0 * rate)] *= 8.0
    x[int(4.3 * rate):int(4.6 * rate), 0] *= 8.0
    x[int(6.0 * rate):int(7.3 * rate)] *= 0.001
    x[int(8.0 * rate) + 7:int(9.5 * rate) + 3] = 0.0
    x[int(9.7 * rate):int(11.0 * rate)] *= 5.0
    x[int(11.5 * rate):] = 0.0
    return np.clip(x, -1, 1), rate


@pytest.fixture(scope="module")
def invariance_features() -> Features:
    x, rate = _invariance_stream()
    cfg = DetectorConfig.build(["silence", "clipping"])
    return Features.concat(stream_features(x, rate, cfg, segment_s=0.5))


DETECTORS = [Silence(), Silence(SilenceOptions(per_channel=True, min_duration_s=0.5)), Clipping(),
             Clipping(ClippingOptions(merge_gap_s=0.05, min_runs=1))]


def test_invariance_stream_has_events(invariance_features):
    # the property below compares these non-trivial event lists
    r = 44100
    silence, per_channel, clipping, fine = (run(d, [invariance_features]) for d in DETECTORS)
    assert spans(silence) == [(0.5, 1.8), (6.0, 7.3), (round((8 * r + 7) / r, 6), round((9.5 * r + 3) / r, 6))]
    assert sorted((e.details["channel"], round(e.start_s, 2)) for e in per_channel) == [
        (0, 0.5), (0, 6.0), (0, 8.0), (0, 11.5), (1, 0.5), (1, 2.0), (1, 6.0), (1, 8.0), (1, 11.5)]
    assert [(round(e.start_s, 2), round(e.end_s, 2)) for e in clipping] == [(3.5, 4.6), (9.7, 11.0)]
    assert [e.details["channels"] for e in fine] == [[0, 1], [0], [0, 1]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=1199), min_size=1, max_size=12))
def test_split_invariance(invariance_features, cuts):
    for det in DETECTORS:
        whole = run(det, [invariance_features])
        assert run(det, split_at(invariance_features, cuts)) == whole
