"""loudness: programme loudness off target, and true peaks over the limit (ITU-R BS.1770-4, EBU R128).

Measurement (ITU-R BS.1770-4):
- K-weighting: a high-shelf (+4 dB above ~1.7 kHz, the head) then a high-pass (~38 Hz, RLB), derived for
  any sample rate from their analog prototypes by the bilinear transform (the formulas reproduce the
  standard's 48 kHz table to 1e-12). Stage 1 filters each segment after running the filters over the
  segment's 100 ms of context (the previous segment's tail), by which time the start-up transient has
  decayed below 1e-9, and gives per 10 ms block and channel the sum of squares of the K-weighted signal.
- Channel weights: 1.0 for L, R, C; 1.41 for surround (side/back) channels; 0 for LFE. The converter keeps
  the source's channels, and the layout follows FFmpeg's default for the channel count unless given
  (`layout`): 6 channels are 5.1 = FL FR FC LFE BL BR.
- Momentary loudness: 400 ms gating blocks every 100 ms (10 blocks of 10 ms); short-term: 3 s. The
  100 ms steps count blocks from the stream's start; an incomplete step at the very end is not measured.
  L = -0.691 + 10 log10(sum_c w_c * mean square_c).
- Integrated loudness: gating blocks above the absolute gate (-70 LUFS), then above the relative gate
  (10 LU under the power mean of those). The gating state is a histogram of block loudness in 0.1 LU bins
  that also sums each bin's block powers, so the mean is exact and the state has the same small size for
  a stream of any length; only the relative gate's position is quantised to a bin (negligible, < 0.01 LU
  on programme material). Loudness range (EBU Tech 3342) comes from a like histogram of short-term values.
- True peak (BS.1770-4 Annex 2): 4x oversampling with the Annex's 48-tap polyphase FIR, per block and
  channel; the true peak is the larger of the interpolated and the sample peaks (dBTP).

Checks (events):
- "integrated" (scope "programme"): at the end of the stream, the whole programme's integrated loudness
  outside target +- tolerance (EBU R128: -23 LUFS +- 1 LU; ATSC A/85: -24 LKFS +- 2 dB). The event spans
  the programme, its score is the integrated loudness.
- "integrated" (scope "window"): for a live stream that has no end, the gated integrated loudness of the
  last window_s (30 s) is evaluated every 100 ms (of everything so far while less than window_s has been
  seen, from a third of it on: 10 s); when it is beyond
  target +- (tolerance + window_margin_lu) an event opens, and it closes when the window is back inside
  (with 0.5 LU hysteresis). 30 s is the length of a typical commercial or promo, the unit that
  short-form rules judge by integrated loudness (EBU R128 s1, ATSC A/85 and the CALM Act), and long
  enough for the gates to average normal speech and music dynamics; the margin (2 LU) allows for the
  spread of a compliant programme's 30 s excerpts around its programme loudness. The event runs from the
  end of the first window out of range to the end of the first window back in range (a live alarm: it
  lags a rise in level by less than a window and a fall by up to a window). A window event still open
  at the end of a stream whose programme is off target the same way is folded into the programme event
  (details window_alarm_since_s) rather than reported twice.
- "true_peak": blocks whose true peak exceeds true_peak_dbtp (-1 dBTP, EBU R128), merged when closer than
  merge_gap_s; the event spans the first to the last block over the limit.
- "short_term_max": short-term loudness (3 s windows, every 100 ms) above short_term_max_lufs (-18 LUFS,
  EBU R128 s1's maximum for short-form content); the event runs from the end of the first window over
  the limit to the end of the last one (overs closer than merge_gap_s merged), its score the maximum.
- "dialnorm": at the end of an AC-3/E-AC-3 stream, the dialnorm its frames carry (read by the converter
  from the frame headers) more than dialnorm_tolerance_db (2 dB) from the measured integrated loudness:
  receivers normalise by dialnorm, so the channel plays too loud or too quiet against the others.
  AC-3/E-AC-3 is decoded with drc_scale 0 (FFmpeg's default applies the stream's dynamic range
  compression, which changes the level measured).
Silent audio (every gating block under -70 LUFS) has no integrated loudness: that is "not measured",
not "out of target", and the silence detector reports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import AUDIO, MINOR, Detector, Event, Options, State, option
from detectors.segments import AUDIO_BLOCK_S, AudioBlocks
from detectors.table import Features

STANDARDS = {  # target (LUFS/LKFS) and tolerance (LU)
    "ebu_r128": (-23.0, 1.0),   # EBU R128 (2020): -23 LUFS, +-1 LU where the target cannot be met exactly
    "atsc_a85": (-24.0, 2.0),   # ATSC A/85 (2013): -24 LKFS, +-2 dB
}

# Channel weights by layout (BS.1770-4 Table 4; FFmpeg's ebur128 weights every back/side channel 1.41).
LAYOUT_WEIGHTS = {
    "mono": (1.0,),
    "stereo": (1.0, 1.0),
    "2.1": (1.0, 1.0, 0.0),                       # FL FR LFE
    "3.0": (1.0, 1.0, 1.0),                       # FL FR FC
    "4.0": (1.0, 1.0, 1.0, 1.41),                 # FL FR FC BC
    "quad": (1.0, 1.0, 1.41, 1.41),               # FL FR BL BR
    "5.0": (1.0, 1.0, 1.0, 1.41, 1.41),           # FL FR FC BL BR (or SL SR)
    "5.1": (1.0, 1.0, 1.0, 0.0, 1.41, 1.41),      # FL FR FC LFE BL BR (or SL SR)
    "6.1": (1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41),        # FL FR FC LFE BC SL SR
    "7.1": (1.0, 1.0, 1.0, 0.0, 1.41, 1.41, 1.41, 1.41),  # FL FR FC LFE BL BR SL SR
}
# FFmpeg's default layout for a channel count (av_channel_layout_default), used when layout="auto".
DEFAULT_LAYOUT = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}

ABS_GATE_LUFS = -70.0
REL_GATE_LU = -10.0
LRA_REL_GATE_LU = -20.0
OFFSET_DB = -0.691
SUB_BLOCKS_MOMENTARY = 4      # 400 ms of 100 ms sub-blocks
SUB_BLOCKS_SHORT_TERM = 30    # 3 s
BLOCKS_PER_SUB = int(round(0.1 / AUDIO_BLOCK_S))  # 10 stage-1 blocks make a 100 ms step
HIST_LO, HIST_STEP, HIST_BINS = -70.0, 0.1, 800   # -70 .. +10 LUFS in 0.1 LU bins
WINDOW_HYSTERESIS_LU = 0.5
WINDOW_MIN_FRACTION = 1.0 / 3.0  # the live check starts once a third of the window has been seen

# ITU-R BS.1770-4 Annex 2: 4x oversampling interpolation filter, 4 phases of 12 taps.
TRUE_PEAK_PHASES = np.array([
    [0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000, -0.0594482421875,
     0.1373291015625, 0.9721679687500, -0.1022949218750, 0.0476074218750, -0.0266113281250,
     0.0148925781250, -0.0083007812500],
    [-0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250, -0.1665039062500,
     0.4650878906250, 0.7797851562500, -0.2003173828125, 0.1015625000000, -0.0582275390625,
     0.0330810546875, -0.0189208984375],
    [-0.0189208984375, 0.0330810546875, -0.0582275390625, 0.1015625000000, -0.2003173828125,
     0.7797851562500, 0.4650878906250, -0.1665039062500, 0.0891113281250, -0.0517578125000,
     0.0292968750000, -0.0291748046875],
    [-0.0083007812500, 0.0148925781250, -0.0266113281250, 0.0476074218750, -0.1022949218750,
     0.9721679687500, 0.1373291015625, -0.0594482421875, 0.0332031250000, -0.0196533203125,
     0.0109863281250, 0.0017089843750],
])
TP_TAPS = TRUE_PEAK_PHASES.shape[1]
TP_HISTORY = TP_TAPS - 1   # samples before an output the filter reads
TP_DELAY = TP_TAPS // 2    # group delay (samples): output n interpolates between inputs n-6 and n-5


@dataclass(frozen=True)
class LoudnessOptions(Options):
    standard: str = option("ebu_r128", "target and tolerance: ebu_r128 (-23 LUFS +-1 LU), atsc_a85 "
                           "(-24 LKFS +-2 dB), or custom (target_lufs, tolerance_lu)",
                           choices=("ebu_r128", "atsc_a85", "custom"))
    target_lufs: float = option(-23.0, "target loudness (LUFS) when standard is custom", min=-70.0, max=0.0)
    tolerance_lu: float = option(1.0, "allowed deviation (LU) when standard is custom", min=0.0, max=30.0)
    window_s: float = option(30.0, "sliding window (s) for the live integrated check; 0 turns it off",
                             min=0.0, max=3600.0)
    window_margin_lu: float = option(2.0, "extra allowance (LU) for a window beyond the tolerance: excerpts of "
                                     "a compliant programme spread around its programme loudness",
                                     min=0.0, max=30.0)
    true_peak_dbtp: float = option(-1.0, "true-peak limit (dBTP); EBU R128 -1, ATSC A/85 suggests -2",
                                   min=-30.0, max=6.0)
    merge_gap_s: float = option(1.0, "true-peak overs (and short-term overs) closer than this (s) are one event",
                                min=0.0, max=60.0)
    dialnorm_tolerance_db: float = option(2.0, "an AC-3/E-AC-3 stream whose dialnorm differs from its measured "
                                          "integrated loudness by more than this (dB) is an event; 0 turns it off",
                                          min=0.0, max=30.0)
    short_term_max_lufs: float = option(-18.0, "the short-term loudness (3 s) must not exceed this (LUFS; EBU R128 "
                                        "s1 for short-form content: -18); 0 turns the check off", min=-70.0, max=0.0)
    layout: str = option("auto", "channel layout for the weights; auto: FFmpeg's default for the channel "
                         "count (6 channels = 5.1, LFE excluded)", choices=("auto",) + tuple(LAYOUT_WEIGHTS))

    def __post_init__(self):
        super().__post_init__()
        if self.standard != "custom" and (self.target_lufs != -23.0 or self.tolerance_lu != 1.0):
            raise ValueError(f"LoudnessOptions.target_lufs / tolerance_lu apply only with standard='custom' "
                             f"(standard is {self.standard!r}); set standard='custom' to use them")

    def target(self) -> tuple[float, float]:
        """(target LUFS, tolerance LU) of the chosen standard."""
        if self.standard == "custom":
            return float(self.target_lufs), float(self.tolerance_lu)
        return STANDARDS[self.standard]


# -- stage 1: K-weighting and true peak ----------------------------------------------------------------


def k_weighting(rate: float) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads ((b, a) of the high shelf, (b, a) of the high pass) at `rate` Hz.

    From the analog prototypes of BS.1770 by the bilinear transform with pre-warping (the derivation
    published with libebur128); at 48 kHz they equal the standard's table.
    """
    # stage 1: high shelf, +4 dB above ~1.68 kHz (the acoustic effect of the head)
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = np.array([(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0])
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    # stage 2: RLB high pass at ~38 Hz; the standard's numerator is (1, -2, 1), not normalised
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    return (shelf_b, shelf_a), (hp_b, hp_a)


def _settle_samples(rate: float) -> int:
    """Samples after which the K-filter's impulse response is below ~1e-12 (its slowest pole is the
    high pass's double pole at ~38 Hz: r^n * n < 1e-12)."""
    (_, _), (_, hp_a) = k_weighting(rate)
    r = math.sqrt(max(hp_a[2], 1e-12))
    return int(math.ceil(40.0 / max(1.0 - r, 1e-6)))


def k_weight(x: np.ndarray, rate: float) -> np.ndarray:
    """K-weighted copy of x ((n,) or (n, channels), float), filters starting at rest (zero state).

    Computed exactly in the frequency domain: the FFT is long enough (n + the filter's settling length)
    that the circular convolution with the IIR response equals the linear one to ~1e-12.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if n == 0:
        return x.copy()
    nfft = 1 << int(math.ceil(math.log2(n + _settle_samples(rate))))
    (sb, sa), (hb, ha) = k_weighting(rate)
    z = np.exp(-2j * np.pi * np.arange(nfft // 2 + 1) / nfft)  # z^-1 on the FFT's frequencies
    h = (np.polyval(sb[::-1], z) / np.polyval(sa[::-1], z)) * (np.polyval(hb[::-1], z) / np.polyval(ha[::-1], z))
    if x.ndim == 2:
        h = h[:, None]
    return np.fft.irfft(np.fft.rfft(x, nfft, axis=0) * h, nfft, axis=0)[:n]


def k_weighted_block_sums(samples: np.ndarray, context: int, rate: float, t_blocks: int, block: int) -> np.ndarray:
    """Per-block, per-channel sum of squares of the K-weighted body.

    samples: (context + N, ch) float; the filters run over the context first to settle.
    Returns (t_blocks, ch) float64; the last block may be short (zero-padded).
    """
    y = k_weight(samples, rate)[context:]
    sq = y * y
    pad = t_blocks * block - sq.shape[0]
    if pad:
        sq = np.concatenate([sq, np.zeros((pad, sq.shape[1]))])
    return sq.reshape(t_blocks, block, -1).sum(axis=1)


def true_peak_blocks(samples: np.ndarray, context: int, t_blocks: int, block: int) -> np.ndarray:
    """Per-block, per-channel true peak (linear, fraction of full scale) of the body.

    Output n of the Annex 2 filter interpolates between body samples n-6 and n-5 (its group delay), so a
    block's value covers the intervals ending 6 samples before its own; the first needs the context's last
    11 samples (zeros when there is no context). The sample peak of the block is included.
    """
    x = np.asarray(samples, np.float64)
    body = x[context:]
    n, ch = body.shape
    take = min(context, TP_HISTORY)
    hist = np.concatenate([np.zeros((TP_HISTORY - take, ch)), x[context - take:context]]) if TP_HISTORY else x[:0]
    xp = np.concatenate([hist, body])            # xp[i + TP_HISTORY] = body[i]
    peak = np.abs(body)
    for phase in TRUE_PEAK_PHASES:
        y = np.zeros((n, ch))
        for k, h in enumerate(phase):            # y[n] = sum_k h[k] * body[n - k]
            y += h * xp[TP_HISTORY - k:TP_HISTORY - k + n]
        np.maximum(peak, np.abs(y), out=peak)
    pad = t_blocks * block - n
    if pad:
        peak = np.concatenate([peak, np.zeros((pad, ch))])
    return peak.reshape(t_blocks, block, ch).max(axis=1)


def channel_weights(channels: int, layout: str = "auto") -> np.ndarray:
    """BS.1770 weights of `channels` channels in `layout` order (auto: FFmpeg's default layout)."""
    name = DEFAULT_LAYOUT.get(channels) if layout == "auto" else layout
    if name is None:  # more than 8 channels and no layout: weight all equally, as FFmpeg does for unknowns
        return np.ones(channels)
    weights = LAYOUT_WEIGHTS[name]
    if len(weights) != channels:
        raise ValueError(f"loudness layout {layout!r} has {len(weights)} channels but the audio has {channels}; "
                         f"set layout to auto or to a {channels}-channel layout")
    return np.array(weights, np.float64)


# -- loudness arithmetic -------------------------------------------------------------------------------


def lufs(power: float) -> float:
    """Loudness (LUFS) of a weighted mean square; -inf for 0."""
    return OFFSET_DB + 10.0 * math.log10(power) if power > 0 else -math.inf


def _power(loudness: float) -> float:
    return 10.0 ** ((loudness - OFFSET_DB) / 10.0)


def _bin(loudness: float) -> int:
    return min(HIST_BINS - 1, max(0, int((loudness - HIST_LO) / HIST_STEP)))


_BIN_CENTRES = HIST_LO + (np.arange(HIST_BINS) + 0.5) * HIST_STEP


def gated_from_histogram(counts: np.ndarray, powers: np.ndarray, rel_gate_lu: float = REL_GATE_LU
                         ) -> tuple[float, float]:
    """(gated loudness, relative threshold) from a histogram of absolute-gated blocks (counts and summed
    powers per bin); (nan, nan) when no block passed the absolute gate."""
    total = counts.sum()
    if total == 0:
        return math.nan, math.nan
    threshold = lufs(powers.sum() / total) + rel_gate_lu
    keep = _BIN_CENTRES > threshold
    kept = counts[keep].sum()
    if kept == 0:
        return math.nan, threshold
    return lufs(powers[keep].sum() / kept), threshold


def gated_loudness(block_powers: np.ndarray) -> float:
    """Integrated (gated) loudness of an array of gating-block powers (weighted mean squares), exactly as
    BS.1770-4: absolute gate -70 LUFS, relative gate -10 LU; nan when nothing passes."""
    z = np.asarray(block_powers, np.float64)
    z = z[z > _power(ABS_GATE_LUFS)]
    if not len(z):
        return math.nan
    z = z[z > _power(lufs(float(z.mean())) + REL_GATE_LU)]
    return lufs(float(z.mean())) if len(z) else math.nan


def loudness_range(counts: np.ndarray, powers: np.ndarray) -> tuple[float, float, float]:
    """(LRA, low, high) in LU/LUFS from a histogram of short-term loudness (EBU Tech 3342: absolute gate
    -70 LUFS, relative gate -20 LU, the 10th to the 95th percentile); nans without data."""
    total = counts.sum()
    if total == 0:
        return math.nan, math.nan, math.nan
    threshold = lufs(powers.sum() / total) + LRA_REL_GATE_LU
    c = np.where(_BIN_CENTRES > threshold, counts, 0)
    n = c.sum()
    if n == 0:
        return math.nan, math.nan, math.nan
    cum = np.cumsum(c)
    low = float(_BIN_CENTRES[np.searchsorted(cum, 0.10 * n, side="left")])
    high = float(_BIN_CENTRES[np.searchsorted(cum, 0.95 * n, side="left")])
    return high - low, low, high


def _db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


def _rounded(x: float, nd: int = 2):
    """A JSON-friendly rounded float (None for nan/inf)."""
    return round(x, nd) if math.isfinite(x) else None


# -- stage 2 -------------------------------------------------------------------------------------------


@dataclass
class LoudnessState(State):
    VERSION = 2                            # 2: st_run, dialnorm (short-term maximum and dialnorm checks)
    first_t: float | None = None           # media time of the first block
    weights: np.ndarray | None = None      # per-channel BS.1770 weights
    acc: np.ndarray | None = None          # the 100 ms sub-block being summed: per channel, ...
    acc_n: int = 0                         # ... its samples
    acc_blocks: int = 0                    # ... and its 10 ms blocks
    subs: list = field(default_factory=list)    # (weighted energy, samples) of the last sub-blocks, newest last
    gates: list = field(default_factory=list)   # powers of the last gating blocks that fit in the live window
    hist_n: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int32))  # integrated: counts
    hist_p: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS))            # ... and powers per bin
    lra_n: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int32))   # short-term, the same
    lra_p: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS))
    max_momentary: float = -math.inf
    max_short_term: float = -math.inf
    tp_max: np.ndarray | None = None       # true peak per channel, the whole stream
    tp_run: dict | None = None             # an open true-peak event: start, end, peak, channel, blocks
    win: dict | None = None                # an open window deviation: start, direction, extreme, first window start
    st_run: dict | None = None             # an open short-term over: start, end, peak, windows
    dialnorm: float | None = None          # the latest AC-3 dialnorm the source carried (dB)
    last_end: float | None = None          # where the audio seen so far ends


class Loudness(Detector):
    """BS.1770 loudness meter (momentary, short-term, integrated, range, true peak) with R128/A85 checks."""

    name = "loudness"
    version = "1.0"
    inputs = (AUDIO,)
    Options = LoudnessOptions
    State = LoudnessState
    stage1_kind = AUDIO
    stage1_outputs = {"loudness_ksq": pa.list_(pa.float64()),  # per channel: sum of squares, K-weighted
                      "loudness_tp": pa.list_(pa.float32()),   # per channel: true peak, fraction of full scale
                      "loudness_w": pa.list_(pa.float32()),    # per channel: the BS.1770 channel weight
                      "loudness_dialnorm": pa.float32()}       # the source's AC-3 dialnorm (dB), NaN if none

    def stage1(self, blocks: AudioBlocks) -> dict:
        """loudness_ksq: (nb, ch) float64 sum of squares of the K-weighted samples of each 10 ms block;
        loudness_tp: (nb, ch) float32 true peak of each block (linear, fraction of full scale)."""
        nb, ch = len(blocks.t), blocks.channels
        # the source's own layout names the channels (3.0 and quad differ from FFmpeg's default guess)
        layout = blocks.layout if self.options.layout == "auto" and LAYOUT_WEIGHTS.get(blocks.layout, ()) and \
            len(LAYOUT_WEIGHTS[blocks.layout]) == ch else self.options.layout
        weights = np.tile(channel_weights(ch, layout).astype(np.float32), (nb, 1))
        dialnorm = np.full(nb, np.nan if blocks.dialnorm_db is None else blocks.dialnorm_db, np.float32)
        if nb == 0:
            return {"loudness_ksq": np.zeros((0, ch)), "loudness_tp": np.zeros((0, ch), np.float32),
                    "loudness_w": weights, "loudness_dialnorm": dialnorm}
        return {"loudness_ksq": k_weighted_block_sums(blocks.samples, blocks.context, blocks.rate, nb, blocks.block),
                "loudness_tp": true_peak_blocks(blocks.samples, blocks.context, nb, blocks.block).astype(np.float32),
                "loudness_w": weights, "loudness_dialnorm": dialnorm}

    # -- per block --------------------------------------------------------------------------------

    def process(self, state: LoudnessState, kind: str, rows: Features) -> list[Event]:
        if kind != AUDIO or not len(rows):
            return []
        ksq, tp = rows["loudness_ksq"], rows["loudness_tp"]
        t, n, rate = rows["t"].tolist(), rows["n"].tolist(), rows["rate"].tolist()
        ch = ksq.shape[1]
        if state.weights is None or len(state.weights) != ch:
            state.weights = (rows["loudness_w"][0].astype(np.float64) if "loudness_w" in rows
                                else channel_weights(ch, self.options.layout))
            state.acc = np.zeros(ch)
            state.tp_max = np.zeros(ch)
        if state.first_t is None:
            state.first_t = t[0]
        if "loudness_dialnorm" in rows and np.isfinite(rows["loudness_dialnorm"][-1]):
            state.dialnorm = float(rows["loudness_dialnorm"][-1])
        limit = 10.0 ** (self.options.true_peak_dbtp / 20.0)
        tp_block = tp.max(axis=1).tolist()
        tp_chan = tp.argmax(axis=1).tolist()
        events = []
        for k in range(len(t)):
            end_k = t[k] + n[k] / rate[k]
            state.acc += ksq[k]
            state.acc_n += n[k]
            state.acc_blocks += 1
            np.maximum(state.tp_max, tp[k], out=state.tp_max)
            events += self._true_peak(state, t[k], end_k, tp_block[k], tp_chan[k], limit)
            if state.acc_blocks == BLOCKS_PER_SUB:
                events += self._sub_block(state, end_k)
        state.last_end = t[-1] + n[-1] / rate[-1]
        return events

    def _true_peak(self, state: LoudnessState, t: float, end: float, peak: float, chan: int, limit: float) -> list[Event]:
        run = state.tp_run
        events = []
        if run is not None and t - run["end"] >= self.options.merge_gap_s:
            events = self._emit_true_peak(state)
            run = None
        if peak > limit:
            if run is None:
                run = state.tp_run = {"start": t, "end": end, "peak": peak, "channel": chan, "blocks": 0}
            run["end"] = end
            run["blocks"] += 1
            if peak > run["peak"]:
                run["peak"], run["channel"] = peak, chan
        return events

    def _sub_block(self, state: LoudnessState, end: float) -> list[Event]:
        """A 100 ms sub-block is complete at media time `end`: update momentary, short-term, the gates."""
        energy = float(np.dot(state.weights, state.acc))
        subs = state.subs
        subs.append((energy, state.acc_n))
        state.acc = np.zeros_like(state.acc)
        state.acc_n = state.acc_blocks = 0
        keep = max(SUB_BLOCKS_SHORT_TERM, SUB_BLOCKS_MOMENTARY)
        if len(subs) > keep:
            del subs[:len(subs) - keep]
        if len(subs) < SUB_BLOCKS_MOMENTARY:
            return []
        # momentary: the 400 ms gating block ending here
        z = _mean_power(subs[-SUB_BLOCKS_MOMENTARY:])
        momentary = lufs(z)
        state.max_momentary = max(state.max_momentary, momentary)
        if momentary > ABS_GATE_LUFS:
            b = _bin(momentary)
            state.hist_n[b] += 1
            state.hist_p[b] += z
        if len(subs) >= SUB_BLOCKS_SHORT_TERM:
            zs = _mean_power(subs[-SUB_BLOCKS_SHORT_TERM:])
            short = lufs(zs)
            state.max_short_term = max(state.max_short_term, short)
            if short > ABS_GATE_LUFS:
                b = _bin(short)
                state.lra_n[b] += 1
                state.lra_p[b] += zs
            events = self._short_term(state, short, end)
        else:
            events = []
        return events + self._window(state, z, end)

    def _short_term(self, state: LoudnessState, short: float, end: float) -> list[Event]:
        """The short-term maximum check: 3 s windows (every 100 ms) over the limit, from the end of the
        first such window to the end of the last; overs closer than merge_gap_s are one event."""
        limit = self.options.short_term_max_lufs
        if limit >= 0:
            return []
        run, events = state.st_run, []
        if run is not None and end - run["end"] > self.options.merge_gap_s + 1e-9:
            events = self._emit_short_term(state)
            run = None
        if short > limit:
            if run is None:
                run = state.st_run = {"start": end, "end": end, "peak": short, "windows": 0}
            run["end"] = end
            run["peak"] = max(run["peak"], short)
            run["windows"] += 1
        return events

    def _emit_short_term(self, state: LoudnessState) -> list[Event]:
        run, state.st_run = state.st_run, None
        if run is None:
            return []
        o = self.options
        end = max(run["end"], run["start"] + 0.1)  # at least the 100 ms step that was over
        return [Event(self.name, float(run["start"]), float(end), score=round(run["peak"], 3),
                      threshold=o.short_term_max_lufs, severity=MINOR, check="short_term_max",
                      details={"max_short_term_lufs": round(run["peak"], 2), "limit_lufs": o.short_term_max_lufs,
                               "windows_over": run["windows"], "window_s": 3.0,
                               "duration_s": round(end - run["start"], 6)})]

    def _window(self, state: LoudnessState, z: float, end: float) -> list[Event]:
        """The live check: gated loudness of the last window_s, evaluated every 100 ms."""
        o = self.options
        if o.window_s <= 0:
            return []
        size = max(1, int(round(o.window_s * 10)) - (SUB_BLOCKS_MOMENTARY - 1))  # gating blocks in a window
        gates = state.gates
        gates.append(z)
        if len(gates) > size:
            del gates[:len(gates) - size]
        if len(gates) < max(1, int(round(size * WINDOW_MIN_FRACTION))):
            return []
        target, tol = o.target()
        loud = gated_loudness(np.array(gates))
        win = state.win
        events = []
        if win is not None:  # an open deviation ends when the window is back inside (with hysteresis)
            back = (not math.isfinite(loud) or
                    (loud <= target + tol + o.window_margin_lu - WINDOW_HYSTERESIS_LU if win["direction"] > 0
                     else loud >= target - tol - o.window_margin_lu + WINDOW_HYSTERESIS_LU))
            if back:
                events = self._emit_window(state, end)
                win = None
            else:
                win["extreme"] = max(win["extreme"], loud) if win["direction"] > 0 else min(win["extreme"], loud)
        if win is None and math.isfinite(loud):
            hi, lo = target + tol + o.window_margin_lu, target - tol - o.window_margin_lu
            if loud > hi or loud < lo:
                state.win = {"start": end, "direction": 1 if loud > hi else -1, "extreme": loud,
                                "window_start": max(end - o.window_s, state.first_t)}
        return events

    # -- events -----------------------------------------------------------------------------------

    def finish(self, state: LoudnessState, end_s: float) -> list[Event]:
        end = state.last_end if state.last_end is not None else float(end_s)
        events = self._emit_true_peak(state) + self._emit_short_term(state)
        programme = self._programme(state, end)
        win = state.win
        if win is not None and programme and (programme[0].score > programme[0].threshold) == (win["direction"] > 0):
            # the programme as a whole is off target the same way: one event says it (with the alarm time)
            programme[0].details["window_alarm_since_s"] = round(win["start"], 6)
            state.win = None
        elif win is not None:
            events += self._emit_window(state, end)
        return events + programme + self._dialnorm(state, end)

    def _dialnorm(self, state: LoudnessState, end: float) -> list[Event]:
        """End of stream: an AC-3 stream's dialnorm against the integrated loudness it was measured at."""
        o = self.options
        if state.dialnorm is None or o.dialnorm_tolerance_db <= 0:
            return []
        integrated, _ = gated_from_histogram(state.hist_n, state.hist_p)
        if not math.isfinite(integrated) or abs(integrated - state.dialnorm) <= o.dialnorm_tolerance_db + 1e-9:
            return []
        diff = integrated - state.dialnorm
        return [Event(self.name, float(state.first_t), float(end), score=round(diff, 2),
                      threshold=math.copysign(o.dialnorm_tolerance_db, diff), severity=MINOR, check="dialnorm",
                      details={"dialnorm_db": state.dialnorm, "integrated_lufs": round(integrated, 2),
                               "difference_db": round(diff, 2), "tolerance_db": o.dialnorm_tolerance_db,
                               "meaning": "louder than its dialnorm says" if diff > 0 else
                               "quieter than its dialnorm says"})]

    def _emit_true_peak(self, state: LoudnessState) -> list[Event]:
        run, state.tp_run = state.tp_run, None
        if run is None:
            return []
        o = self.options
        peak_db = _db(run["peak"])
        return [Event(self.name, float(run["start"]), float(run["end"]), score=round(peak_db, 3),
                      threshold=o.true_peak_dbtp, severity=MINOR, check="true_peak",
                      details={"true_peak_dbtp": round(peak_db, 2), "limit_dbtp": o.true_peak_dbtp,
                               "channel": int(run["channel"]), "blocks_over": run["blocks"],
                               "duration_s": round(run["end"] - run["start"], 6)})]

    def _emit_window(self, state: LoudnessState, end: float) -> list[Event]:
        win, state.win = state.win, None
        o = self.options
        target, tol = o.target()
        limit = target + (tol + o.window_margin_lu) * win["direction"]
        return [Event(self.name, float(win["start"]), float(max(end, win["start"])), score=round(win["extreme"], 3),
                      threshold=limit, severity=MINOR, check="integrated",
                      details={"scope": "window", "window_s": o.window_s,
                               "direction": "too_loud" if win["direction"] > 0 else "too_quiet",
                               "window_loudness_lufs": round(win["extreme"], 2), "target_lufs": target,
                               "tolerance_lu": tol, "window_margin_lu": o.window_margin_lu,
                               "first_window_start_s": round(win["window_start"], 6)})]

    def _programme(self, state: LoudnessState, end: float) -> list[Event]:
        """End of stream: the programme's integrated loudness, reported when out of tolerance."""
        o = self.options
        integrated, rel_threshold = gated_from_histogram(state.hist_n, state.hist_p)
        if not math.isfinite(integrated):
            return []  # silent or shorter than one gating block: not measured
        target, tol = o.target()
        deviation = integrated - target
        if abs(deviation) <= tol + 1e-9:
            return []
        lra, lra_low, lra_high = loudness_range(state.lra_n, state.lra_p)
        tp = float(state.tp_max.max()) if state.tp_max is not None else 0.0
        return [Event(self.name, float(state.first_t), float(end), score=round(integrated, 3),
                      threshold=target + math.copysign(tol, deviation), severity=MINOR, check="integrated",
                      details={"scope": "programme", "integrated_lufs": round(integrated, 2),
                               "target_lufs": target, "tolerance_lu": tol, "deviation_lu": round(deviation, 2),
                               "relative_gate_lufs": _rounded(rel_threshold),
                               "loudness_range_lu": _rounded(lra), "lra_low_lufs": _rounded(lra_low),
                               "lra_high_lufs": _rounded(lra_high),
                               "max_momentary_lufs": _rounded(state.max_momentary),
                               "max_short_term_lufs": _rounded(state.max_short_term),
                               "true_peak_dbtp": _rounded(_db(tp)), "standard": o.standard,
                               "duration_s": round(end - state.first_t, 3)})]


def _mean_power(subs: list) -> float:
    """Weighted mean square over (energy, samples) sub-blocks."""
    energy = 0.0
    count = 0
    for e, n in subs:
        energy += e
        count += n
    return energy / count if count else 0.0


# -- whole-array measurement (tests, notebooks) --------------------------------------------------------


@dataclass(frozen=True)
class LoudnessSummary:
    """BS.1770 / EBU R128 figures of a whole signal."""

    integrated_lufs: float        # gated programme loudness (nan when silent)
    relative_gate_lufs: float     # the relative gate's level
    loudness_range_lu: float      # EBU Tech 3342 LRA
    max_momentary_lufs: float
    max_short_term_lufs: float
    true_peak_dbtp: float


def measure(samples: np.ndarray, rate: int, layout: str = "auto", segment_s: float = 1.0) -> LoudnessSummary:
    """Loudness figures of a whole array ((n,) or (n, channels) float in [-1, 1], or int16).

    Runs the detector's own path: 1 s segments with 100 ms of context through stage 1, then stage 2.
    """
    x = np.asarray(samples)
    if x.dtype == np.int16:
        x = x.astype(np.float64) / 32768.0
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError("samples must be a non-empty (n,) or (n, channels) array")
    rate = int(rate)
    block = int(round(rate * AUDIO_BLOCK_S))
    seg = max(1, int(round(segment_s / AUDIO_BLOCK_S))) * block
    ctx = int(round(0.1 * rate))
    det = Loudness(LoudnessOptions(layout=layout, window_s=0.0))
    state = det.initial_state()
    for start in range(0, x.shape[0], seg):
        body = x[start:start + seg]
        c = min(ctx, start)
        nb = -(-body.shape[0] // block)
        tb = start / rate + np.arange(nb) * block / rate
        nn = np.full(nb, block, np.int64)
        nn[-1] = body.shape[0] - (nb - 1) * block
        chunk = x[start - c:start + body.shape[0]]
        feats = Features(t=tb, n=nn, rate=np.full(nb, rate, np.int32),
                         loudness_ksq=k_weighted_block_sums(chunk, c, rate, nb, block),
                         loudness_tp=true_peak_blocks(chunk, c, nb, block))
        det.process(state, AUDIO, feats)
    return summary(state)


def summary(state: LoudnessState) -> LoudnessSummary:
    """The loudness figures of everything a Loudness detector's `state` has seen so far."""
    integrated, threshold = gated_from_histogram(state.hist_n, state.hist_p)
    lra = loudness_range(state.lra_n, state.lra_p)[0]
    tp = float(state.tp_max.max()) if state.tp_max is not None else 0.0
    return LoudnessSummary(integrated, threshold, lra, state.max_momentary, state.max_short_term, _db(tp))


def integrated_loudness(samples: np.ndarray, rate: int, layout: str = "auto") -> float:
    """Integrated loudness (LUFS) of a whole array, BS.1770-4 gated; nan when it is silent.

    >>> import numpy as np
    >>> t = np.arange(48000 * 5) / 48000
    >>> x = 10 ** (-23 / 20) * np.sin(2 * np.pi * 997 * t)
    >>> round(integrated_loudness(np.stack([x, x], axis=1), 48000), 1)
    -23.0
    """
    return measure(samples, rate, layout).integrated_lufs
