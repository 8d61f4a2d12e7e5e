"""loudness: BS.1770-4 measurement (against the standard, EBU Tech 3341-style cases and Debian FFmpeg's
ebur128) and the R128 / A/85 checks (programme, live window, true peak)."""
from __future__ import annotations

import math
import pickle
import re
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avwatch.local import analyze_source
from detectors import loudness as L
from detectors.base import AUDIO
from detectors.config import DetectorConfig
from detectors.features import Features
from detectors.loudness import Loudness, LoudnessOptions, integrated_loudness, measure
from tests.media import ffmpeg, real_clip, speech, write_clip
from tests.test_audio_detectors import run, split_at, stream_features

pytestmark = pytest.mark.footage  # real footage and FFmpeg oracle comparisons: the slower tier

RATE = 48000


def tone(db: float, seconds: float, freq: float = 1000.0, rate: int = RATE, phase: float = 0.0) -> np.ndarray:
    """A sine of peak level `db` dBFS (EBU Tech 3341's convention), mono (n,)."""
    t = np.arange(int(round(seconds * rate))) / rate
    return 10 ** (db / 20) * np.sin(2 * np.pi * freq * t + phase)


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x], axis=1)


def pink(seconds: float, rate: int = RATE, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Pink-ish noise (1/f power) at unit RMS."""
    n = int(seconds * rate)
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal((n, channels)), axis=0)
    f = np.fft.rfftfreq(n, 1 / rate)
    f[0] = f[1]
    x = np.fft.irfft(spec / np.sqrt(f)[:, None], n, axis=0)
    return x / np.sqrt((x ** 2).mean())


def at_loudness(x: np.ndarray, lufs: float, rate: int = RATE) -> np.ndarray:
    return x * 10 ** ((lufs - integrated_loudness(x, rate)) / 20)


# -- K-weighting -------------------------------------------------------------------------------------------


def test_k_weighting_reproduces_the_standard_table_at_48k():
    (sb, sa), (hb, ha) = L.k_weighting(48000)
    # ITU-R BS.1770-4 Tables 1 and 2
    assert sb == pytest.approx([1.53512485958697, -2.69169618940638, 1.19839281085285], abs=1e-12)
    assert sa == pytest.approx([1.0, -1.69065929318241, 0.73248077421585], abs=1e-12)
    assert hb.tolist() == [1.0, -2.0, 1.0]
    assert ha == pytest.approx([1.0, -1.99004745483398, 0.99007225036621], abs=1e-12)


def _response_db(rate: int, f: float) -> float:
    (sb, sa), (hb, ha) = L.k_weighting(rate)
    z = np.exp(-2j * np.pi * f / rate)
    h = np.polyval(sb[::-1], z) / np.polyval(sa[::-1], z) * np.polyval(hb[::-1], z) / np.polyval(ha[::-1], z)
    return 20 * math.log10(abs(h))


@pytest.mark.parametrize("rate", [32000, 44100, 96000])
def test_k_weighting_has_the_same_response_at_other_rates(rate):
    for f in (20.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0):
        # the bilinear transform is pre-warped at the filters' corners: the rest agrees to a few hundredths
        assert _response_db(rate, f) == pytest.approx(_response_db(48000, f), abs=0.05 if f > 4000 else 0.03), f
    assert _response_db(48000, 1000.0) == pytest.approx(0.691, abs=0.01)   # why the -0.691 offset
    assert _response_db(48000, 10000.0) == pytest.approx(4.0, abs=0.1)     # the head's +4 dB shelf


def test_k_weight_in_the_frequency_domain_equals_the_recursion():
    rate = 8000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 2)) * np.linspace(0, 1, 3000)[:, None]
    got = L.k_weight(x, rate)
    ref = x.copy()
    for b, a in L.k_weighting(rate):  # direct form I, state at rest
        y = np.zeros_like(ref)
        for n in range(len(ref)):
            y[n] = b[0] * ref[n] - a[1] * y[n - 1] * (n >= 1) - a[2] * y[n - 2] * (n >= 2) \
                + (b[1] * ref[n - 1] if n >= 1 else 0) + (b[2] * ref[n - 2] if n >= 2 else 0)
        ref = y
    assert np.abs(got - ref).max() < 1e-10


# -- EBU Tech 3341-style cases: the theoretical values -----------------------------------------------------


@pytest.mark.parametrize("rate", [48000, 44100])
def test_tech3341_stereo_sines(rate):
    for db in (-23.0, -33.0):
        m = measure(stereo(tone(db, 20.0, rate=rate)), rate)
        assert m.integrated_lufs == pytest.approx(db, abs=0.1)
        assert m.max_momentary_lufs == pytest.approx(db, abs=0.1)
        assert m.max_short_term_lufs == pytest.approx(db, abs=0.1)
    # 997 Hz (no sub-multiple of the sample rate) at -20 dBFS
    assert integrated_loudness(stereo(tone(-20.0, 10.0, 997.0, rate)), rate) == pytest.approx(-20.0, abs=0.05)


def test_tech3341_gating_cases():
    seq = lambda *parts: stereo(np.concatenate([tone(db, s) for db, s in parts]))  # noqa: E731
    # case 3: the relative gate drops the -36 dBFS parts
    assert integrated_loudness(seq((-36, 10), (-23, 60), (-36, 10)), RATE) == pytest.approx(-23.0, abs=0.1)
    # case 4: the absolute gate drops -72, the relative gate -36
    assert integrated_loudness(seq((-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)), RATE) == \
        pytest.approx(-23.0, abs=0.1)
    # case 5: nothing gated, the power mean of -26 / -20 / -26
    assert integrated_loudness(seq((-26, 20), (-20, 20.1), (-26, 20)), RATE) == pytest.approx(-23.0, abs=0.1)


def test_tech3341_short_term_of_a_periodic_signal():
    # case 9 style: -20 dBFS for 1.34 s then -30 dBFS for 1.66 s, repeated: every 3 s window is -23.0
    period = np.concatenate([tone(-20, 1.34), tone(-30, 1.66)])
    m = measure(stereo(np.tile(period, 5)), RATE)
    assert m.max_short_term_lufs == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_channel_weights_five_channels_and_lfe(rate):
    # case 6: L, R -28 dBFS; C -24; Ls, Rs -30 (weighted 1.41) -> -23.0
    l, c, s = tone(-28, 20, rate=rate), tone(-24, 20, rate=rate), tone(-30, 20, rate=rate)
    five = np.stack([l, l, c, s, s], axis=1)
    assert integrated_loudness(five, rate) == pytest.approx(-23.0, abs=0.1)
    # 5.1 (FL FR FC LFE BL BR) with a loud LFE: the LFE is not measured
    lfe = tone(-6, 20, 60.0, rate)
    assert integrated_loudness(np.stack([l, l, c, lfe, s, s], axis=1), rate) == pytest.approx(-23.0, abs=0.1)
    # a surround channel counts 1.41 (+1.49 dB) against a front one
    front = integrated_loudness(np.stack([l] + [0 * l] * 5, axis=1), rate)
    back = integrated_loudness(np.stack([0 * l] * 4 + [l, 0 * l], axis=1), rate)
    assert back - front == pytest.approx(10 * math.log10(1.41), abs=0.01)
    # mono is one channel: 3 dB under the same sine on two
    assert integrated_loudness(l, rate) == pytest.approx(integrated_loudness(stereo(l), rate) - 3.01, abs=0.01)
    with pytest.raises(ValueError, match="layout"):
        L.channel_weights(2, "5.1")


@pytest.mark.parametrize("rate", [48000, 44100])
def test_true_peak_between_samples(rate):
    # Tech 3341 cases 15-18 style: -6 dBFS sines whose peaks fall between samples (Tech 3341 allows
    # +0.2 / -0.4 dB); faded in and out over 20 ms, as a step would overshoot on its own
    fade = np.ones(int(2.0 * rate))
    ramp = np.sin(np.linspace(0, np.pi / 2, int(0.02 * rate))) ** 2
    fade[:len(ramp)], fade[-len(ramp):] = ramp, ramp[::-1]
    for frac, phase in ((4, 0.0), (4, 45.0), (6, 60.0), (8, 67.5)):
        x = tone(-6.02, 2.0, rate / frac, rate, math.radians(phase)) * fade
        m = measure(stereo(x), rate)
        assert -6.42 <= m.true_peak_dbtp <= -5.82, (frac, phase, m.true_peak_dbtp)
    sample_peak = 20 * math.log10(np.abs(tone(-6.02, 2.0, rate / 4, rate, math.radians(45))).max())
    assert sample_peak == pytest.approx(-9.03, abs=0.01)   # what a sample-peak meter would have said


def test_histogram_gating_matches_exact_gating_on_speech(tmp_path):
    x = speech("Gating keeps the pauses between words out of the programme loudness. "
               "The quick brown fox jumps over the lazy dog.", tmp_path / "s")
    y = L.k_weight(x, RATE)
    sub = np.add.reduceat((y ** 2).sum(axis=1), np.arange(0, len(y) - len(y) % 4800, 4800))[: len(y) // 4800]
    blocks = np.convolve(sub, np.ones(4), "valid") / (4 * 4800)   # 400 ms blocks every 100 ms
    exact = L.gated_loudness(blocks)
    assert integrated_loudness(x, RATE) == pytest.approx(exact, abs=0.01)
    assert integrated_loudness((x * 32768).astype(np.int16), RATE) == pytest.approx(exact, abs=0.01)
    assert math.isnan(integrated_loudness(np.zeros((RATE, 2)), RATE))     # silence is not measured


# -- agreement with FFmpeg's ebur128 --------------------------------------------------------------------------


def ebur128(path) -> tuple[float, float, float]:
    """Debian FFmpeg's ebur128 summary: (I LUFS, LRA LU, true peak dBFS)."""
    err = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-vn", "-af", "ebur128=peak=true",
                          "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    summary = err[err.rindex("Summary:"):]
    value = lambda pat: float(re.search(pat, summary).group(1))  # noqa: E731
    return value(r"I:\s+(-?[\d.]+) LUFS"), value(r"LRA:\s+(-?[\d.]+) LU"), value(r"Peak:\s+(-?[\d.]+) dBFS")


def ours(path, rate: int = RATE) -> L.LoudnessSummary:
    """Our figures for a file, through the decoder, the converter's segments and stage 1 / stage 2."""
    from avwatch.convert.decode import DecodeOptions, MediaDecoder
    from avwatch.convert.segments import Segmenter
    from detectors.features import stage1
    from schemas.records import AUDIO_SEGMENT

    cfg = DetectorConfig.build(["loudness"])
    dec = MediaDecoder(str(path), DecodeOptions(video=False, audio_rate=rate))
    seg = Segmenter("oracle", dec.info)
    det = cfg.get("loudness")
    state = det.initial_state()

    def take(segments):
        for s in segments:
            if s.kind == "audio":
                det.process(state, AUDIO, stage1(AUDIO_SEGMENT.name, s.table, cfg).features)

    for item in dec.items():
        take(seg.add(item))
    take(seg.finish())
    return L.summary(state)


@pytest.fixture(scope="module")
def oracle_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("oracle")
    talk = speech("Loudness is measured with K weighting and gating, as the standard says. "
                  "The quick brown fox jumps over the lazy dog.", d / "talk")
    return {
        "sine -18 dBFS 997 Hz": write_clip(d / "sine.mkv", audio=stereo(tone(-18.0, 10.0, 997.0)).astype(np.float32)),
        "espeak speech (aac)": write_clip(d / "speech.mp4", audio=talk),
        "bigbuckbunny 5.1 aac": real_clip("bigbuckbunny"),
        "pink noise -30 LUFS": write_clip(d / "pink.mkv", audio=at_loudness(pink(20.0), -30.0).astype(np.float32)),
        "sine 44.1 kHz": write_clip(d / "sine441.mkv", audio=stereo(tone(-26, 8.0, 440.0, 44100)).astype(np.float32),
                                    rate=44100),
    }


def test_integrated_loudness_agrees_with_ffmpeg(oracle_files):
    for name, path in oracle_files.items():
        i_ff, _lra_ff, tp_ff = ebur128(path)
        m = ours(path)
        assert abs(m.integrated_lufs - i_ff) <= 0.5, (name, m.integrated_lufs, i_ff)
        # FFmpeg prints one decimal; we agree to that on all of them
        assert abs(m.integrated_lufs - i_ff) <= 0.1, (name, m.integrated_lufs, i_ff)
        assert abs(m.true_peak_dbtp - tp_ff) <= 0.5, (name, m.true_peak_dbtp, tp_ff)
    assert ebur128(oracle_files["bigbuckbunny 5.1 aac"])[0] == pytest.approx(-34.0, abs=0.05)  # not trivially -23


# -- events -------------------------------------------------------------------------------------------------


def events_of(x: np.ndarray, options: dict | None = None, rate: int = RATE, segment_s: float = 1.0):
    cfg = DetectorConfig.build(["loudness"], {"loudness": options or {}})
    return run(cfg.get("loudness"), stream_features(x, rate, cfg, segment_s=segment_s))


def _ebur128_short_term(path) -> list[tuple[float, float]]:
    """FFmpeg ebur128's per-100 ms log lines: (t, S) where a full 3 s short-term window exists."""
    out = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    return [(float(t), float(st)) for t, st in re.findall(r"t:\s*([\d.]+)\s+TARGET.*?S:\s*(-?[\d.]+)", out)
            if float(t) >= 3.0 - 1e-6]


def test_short_term_maximum_is_found_where_ffmpeg_ebur128_reads_over_the_limit(tmp_path):
    """A -23 LUFS programme with a 4 s stretch 10 dB louder (about -13 LUFS): one short_term_max event,
    starting and ending where FFmpeg's short-term meter crosses -18 LUFS (within 0.2 s), with the same
    maximum (0.2 LU); the programme alone stays under the limit."""
    x = at_loudness(pink(20.0, seed=11), -23.0)
    x[int(8 * RATE):int(12 * RATE)] *= 10 ** (10 / 20)
    path = write_clip(tmp_path / "loud_promo.mkv", audio=np.clip(x, -1, 1).astype(np.float32))
    rows = [r for r in analyze_source(str(path), DetectorConfig.build(["loudness"])).rows
            if '"limit_lufs"' in r["details"]]
    meter = _ebur128_short_term(path)
    over = [t for t, st in meter if st > -18.0]
    assert len(rows) == 1 and over
    assert abs(rows[0]["start_s"] - over[0]) <= 0.2 and abs(rows[0]["end_s"] - over[-1]) <= 0.2, (rows[0], over)
    assert abs(rows[0]["score"] - max(st for _, st in meter)) <= 0.2
    clean = events_of(at_loudness(pink(12.0, seed=12), -23.0))
    assert [e for e in clean if e.check == "short_term_max"] == []


def test_programme_check_ebu_atsc_custom():
    compliant = stereo(tone(-23.0, 10.0))
    assert events_of(compliant) == []
    quiet = stereo(tone(-25.5, 10.0))
    (ev,) = events_of(quiet)
    assert (ev.check, ev.start_s, ev.end_s, ev.severity) == ("integrated", 0.0, 10.0, "minor")
    assert ev.score == pytest.approx(-25.5, abs=0.1) and ev.threshold == -24.0
    assert ev.details["scope"] == "programme" and ev.details["deviation_lu"] == pytest.approx(-2.5, abs=0.1)
    assert events_of(quiet, {"standard": "atsc_a85"}) == []                    # -24 LKFS +-2
    (loud,) = events_of(stereo(tone(-21.5, 10.0)), {"standard": "atsc_a85"})
    assert loud.threshold == -22.0 and loud.details["target_lufs"] == -24.0
    assert events_of(quiet, {"standard": "custom", "target_lufs": -26.0, "tolerance_lu": 1.0}) == []
    with pytest.raises(ValueError, match="standard"):
        LoudnessOptions(standard="r128")
    with pytest.raises(ValueError, match="custom"):
        LoudnessOptions(target_lufs=-16.0)     # would be ignored under ebu_r128: say so


def test_no_events_for_silence_and_tiny_streams():
    assert events_of(np.zeros((5 * RATE, 2))) == []          # not measured, not "too quiet"
    assert events_of(stereo(tone(-40, 0.01))) == []          # one block: no gating block at all
    assert events_of(stereo(tone(-40, 0.35))) == []          # shorter than 400 ms
    (ev,) = events_of(stereo(tone(-40, 0.45)))               # one gating block
    assert ev.score == pytest.approx(-40.0, abs=0.1)


def test_true_peak_events_merge_and_locate():
    x = tone(-3.0, 6.0, 440.0)
    bursts = ((1.0, 1.5), (1.8, 2.0), (4.0, 4.2))           # 0.3 s apart (merged), then 2 s (not)
    for a, b in bursts:
        x[int(a * RATE):int(b * RATE)] *= 10 ** (2.8 / 20)  # -0.2 dBFS
    events = [e for e in events_of(stereo(x), {"standard": "custom", "target_lufs": -3.0, "tolerance_lu": 30.0})
              if e.check != "short_term_max"]   # a -3 dBFS tone is far louder than -18 LUFS short-term, too
    assert [e.check for e in events] == ["true_peak", "true_peak"]
    assert [(round(e.start_s, 2), round(e.end_s, 2)) for e in events] == [(1.0, 2.0), (4.0, 4.2)]
    assert all(e.score == pytest.approx(-0.2, abs=0.1) and e.threshold == -1.0 for e in events)
    assert events_of(stereo(tone(-1.5, 3.0, 440.0)), {"standard": "custom", "tolerance_lu": 30.0,
                                                       "short_term_max_lufs": 0.0}) == []


@pytest.fixture(scope="module")
def programme_90s():
    """90 s of pink noise at -23 LUFS (stereo)."""
    return at_loudness(pink(90.0, seed=4), -23.0)


def test_window_check_too_loud_stretch(programme_90s):
    x = programme_90s.copy()
    x[20 * RATE:40 * RATE] *= 10 ** (10 / 20)   # +10 dB for 20 s
    events = [e for e in events_of(x) if e.check == "integrated"]
    window, programme = events
    assert window.details["scope"] == "window" and window.details["direction"] == "too_loud"
    # the alarm: once +10 dB fills ~11 % of the 22 s seen so far; over once it has left the 30 s window
    assert 20.0 < window.start_s < 23.5 and 66.0 < window.end_s < 70.0
    assert window.score == pytest.approx(-23 + 10 * math.log10((10 + 20 * 10) / 30), abs=0.3)
    assert programme.details["scope"] == "programme" and programme.score == pytest.approx(
        -23 + 10 * math.log10((70 + 20 * 10) / 90), abs=0.2)
    assert [e for e in events_of(programme_90s) if e.check == "integrated"] == []   # compliant: nothing


def test_window_check_too_quiet_stretch_and_folding(programme_90s):
    x = programme_90s.copy()
    x[20 * RATE:70 * RATE] *= 10 ** (-12 / 20)
    window, programme = [e for e in events_of(x) if e.check == "integrated"]
    assert window.details["direction"] == "too_quiet" and 30.0 < window.start_s < 40.0 < 70.0 < window.end_s < 90.0
    assert programme.score < -24.0
    # quiet to the end: the open alarm is folded into the programme event
    y = programme_90s.copy()
    y[20 * RATE:] *= 10 ** (-12 / 20)
    (only,) = [e for e in events_of(y) if e.check == "integrated"]
    assert only.details["scope"] == "programme" and 30.0 < only.details["window_alarm_since_s"] < 40.0
    assert [e for e in events_of(x, {"window_s": 0}) if e.details.get("scope") == "window"] == []


def test_state_is_bounded():
    det = Loudness()
    state = det.initial_state()
    rng = np.random.default_rng(0)
    sizes = []
    for minute in range(10):
        nb = 6000
        feats = Features(t=minute * 60 + np.arange(nb) * 0.01, n=np.full(nb, 480), rate=np.full(nb, RATE),
                         loudness_ksq=rng.uniform(0, 2, (nb, 2)) * 10 ** rng.uniform(-4, 0, (nb, 1)),
                         loudness_tp=rng.uniform(0, 0.5, (nb, 2)).astype(np.float32))
        det.process(state, AUDIO, feats)
        sizes.append(len(pickle.dumps(state)))
    assert max(sizes) < 40_000 and max(sizes) - sizes[0] < 2_000, sizes


def test_end_to_end_on_bigbuckbunny():
    rows = analyze_source(str(real_clip("bigbuckbunny")), DetectorConfig.build(["loudness"])).rows
    # the clip's 5.1 mix is at -34 LUFS: out of EBU R128's -23 +- 1 over its whole 5.3 s; no true-peak over
    assert [(r["detector"], r["start_s"], round(r["end_s"], 2)) for r in rows] == [("loudness", 0.0, 5.31)]
    assert '"integrated_lufs": -34.0' in rows[0]["details"] and rows[0]["score"] == pytest.approx(-34.0, abs=0.05)


# -- window-split invariance ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def invariance_features():
    """25 s: a -23 LUFS programme, a +12 dB stretch with true-peak overs, a quiet stretch, silence."""
    x = at_loudness(pink(25.0, 44100, seed=7), -23.0, 44100)
    x[int(6 * 44100):int(9 * 44100)] *= 10 ** (12 / 20)
    x[int(14 * 44100):int(19 * 44100)] *= 10 ** (-14 / 20)
    x[int(21 * 44100):int(22.5 * 44100)] = 0.0
    cfg = DetectorConfig.build(["loudness"])
    return Features.concat(stream_features(np.clip(x, -1, 1), 44100, cfg, segment_s=0.7))


DETECTORS = [Loudness(LoudnessOptions(window_s=6.0)), Loudness(LoudnessOptions(window_s=3.0, standard="atsc_a85"))]


def test_invariance_stream_has_events(invariance_features):
    for det in DETECTORS:
        events = run(det, [invariance_features])
        checks = {(e.check, e.details.get("scope"), e.details.get("direction")) for e in events}
        assert ("true_peak", None, None) in checks
        assert ("integrated", "window", "too_loud") in checks and ("integrated", "window", "too_quiet") in checks


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=2499), min_size=1, max_size=10))
def test_split_invariance(invariance_features, cuts):
    for det in DETECTORS:
        assert run(det, split_at(invariance_features, cuts)) == run(det, [invariance_features])


# -- AC-3: dialnorm and drc_scale 0 ---------------------------------------------------------------------------


def _ac3(tmp_path, name: str, codec: str, layout: str, dialnorm: int, lufs: float = -16.0):
    """Pink noise at `lufs` encoded by FFmpeg's own AC-3 / E-AC-3 encoder with the given dialnorm."""
    channels = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
    pcm = write_clip(tmp_path / f"{name}.mkv",
                     audio=np.clip(at_loudness(pink(12.0, channels=channels, seed=21), lufs), -1, 1).astype(np.float32))
    out = tmp_path / f"{name}.{codec}"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(pcm), "-c:a", codec,
                    "-channel_layout", layout, "-dialnorm", str(dialnorm), "-b:a", "384k", str(out)], check=True)
    return out


@pytest.mark.parametrize("codec,layout,dialnorm", [("ac3", "stereo", -24), ("ac3", "5.1", -17), ("ac3", "mono", -31),
                                                   ("eac3", "stereo", -20), ("eac3", "5.1", -27)])
def test_dialnorm_is_read_from_the_frame_headers(tmp_path, codec, layout, dialnorm):
    from avwatch.convert.decode import MediaDecoder

    dec = MediaDecoder(str(_ac3(tmp_path, "dn", codec, layout, dialnorm)))
    for _ in dec.items():
        pass
    assert dec.info.audio["dialnorm_db"] == dialnorm


def test_dialnorm_against_the_measured_loudness_and_ffmpeg_with_drc_scale_0(tmp_path):
    """A programme at -16 LUFS labelled -24 dB: one dialnorm event (+8 dB); labelled -16: none. Our
    integrated loudness equals FFmpeg ebur128's with -drc_scale 0 (to its 0.1 LU rounding)."""
    wrong = _ac3(tmp_path, "wrong", "ac3", "stereo", -24)
    rows = [r for r in analyze_source(str(wrong), DetectorConfig.build(["loudness"])).rows if '"dialnorm_db"' in r["details"]]
    assert len(rows) == 1 and rows[0]["score"] == pytest.approx(8.0, abs=0.5)
    out = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-drc_scale", "0", "-i", str(wrong), "-af",
                          "ebur128", "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    theirs = float(re.findall(r"I:\s+(-?[\d.]+) LUFS", out)[-1])
    import json
    assert json.loads(rows[0]["details"])["integrated_lufs"] == pytest.approx(theirs, abs=0.1)
    right = _ac3(tmp_path, "right", "ac3", "stereo", -16)
    assert [r for r in analyze_source(str(right), DetectorConfig.build(["loudness"])).rows
            if '"dialnorm_db"' in r["details"]] == []


def test_f32_on_the_wire_measures_overs_above_full_scale_as_ffmpeg_does(tmp_path):
    """A float source with +2 dBFS peaks: with --audio-format f32 the true peak reads +2.0 dBTP as
    FFmpeg's ebur128 does; with s16 (the default) the conversion clips it first. The f32 record passes the
    record guard at twice the bytes."""
    from avwatch.convert.decode import MediaDecoder
    from avwatch.convert.options import DecodeOptions
    from avwatch.convert.segments import Segmenter
    from schemas.bounds import check_record
    from schemas.records import AUDIO_SEGMENT

    t = np.arange(8 * RATE) / RATE
    x = 0.3 * np.sin(2 * np.pi * 997 * t)
    x[3 * RATE:3 * RATE + 4800] *= 4.2                                 # +2 dBFS for 0.1 s
    path = write_clip(tmp_path / "overs.mkv", audio=stereo(x).astype(np.float32), acodec="pcm_f32le")
    out = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true", "-f",
                          "null", "-"], capture_output=True, text=True, check=True).stderr
    theirs = float(re.findall(r"Peak:\s+(-?[\d.]+) dBFS", out)[-1])

    def true_peak(fmt: str) -> float:
        rows = analyze_source(str(path), DetectorConfig.build(["loudness"]), decode=DecodeOptions(audio_format=fmt)).rows
        (row,) = [r for r in rows if '"limit_dbtp"' in r["details"]]
        return row["score"]

    assert true_peak("f32") == pytest.approx(theirs, abs=0.1)
    assert true_peak("s16") < theirs - 1.0
    dec = MediaDecoder(str(path), DecodeOptions(audio_format="f32"))
    seg = Segmenter("f32", dec.info)
    segments = [s for item in dec.items() for s in seg.add(item) if s.kind == "audio"]
    check_record(AUDIO_SEGMENT.name, segments[0].table)
    assert segments[0].table.column("sample_format")[0].as_py() == "f32"
