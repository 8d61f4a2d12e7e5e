"""av_sync: audio ahead of or behind the picture, estimated from the content.

Method: an audio onset envelope is cross-correlated with the picture's change envelope over a sliding
window; the lag of the correlation peak is the A/V offset (after the audio-visual synchrony measures of
Hershey & Movellan 2000 and the flash/beep principle of FFmpeg's avsynctest). Details, defaults and
measured accuracy: docs/detectors_av_sync.md.

- Audio (stage 1, per 10 ms block): the mono mix is pre-emphasised (first order, corner
  PREEMPHASIS_HZ, so that bass, rumble and kick drums weigh less than speech formants and transients),
  rectified and compressed as |y|^0.6 (= intensity^0.3, Stevens' loudness law), and summarised per block
  by its mean (`av_sync_env`) and the position of its centroid in the block (`av_sync_pos`, 0..1). The
  centroid puts a sound that starts part-way through a block at its true time: millisecond precision
  from 10 ms blocks.
- Picture (the composer's common columns): `diff_prev`, the mean |dY| to the previous frame, and
  `diff_cells`, the same per cell of a 4x4 grid. A talking mouth is local, so besides the whole picture
  every cell and every pair of adjacent cells is a candidate region (41 in all); the region that
  correlates best is used and reported. Repeated frames (no cell changed by half a level: frame-rate
  conversion, duplicated frames) carry no new picture and are not correlated.
- Matching: frame i is on screen during [t_i, t_i + T). A picture that shows what is heard while it is
  on screen changes from the previous new picture by |mean audio over [t_i, t_i + T) - mean audio over
  [t_prev, t_i)|; stage 2 computes that from the audio envelope shifted by each lag over
  +-`max_lag_ms`. Both envelopes lose their local mean (a centred moving average over
  +-DETREND_S), which removes slow motion such as pans and keeps events; then the Pearson correlation
  of each region with the audio is taken over the window's frames (coarse grid for every region, then
  the fine grid around the best one), and the peak is placed at the middle of its top 3 %.
- Sign convention: offset = audio time - picture time of the same event; positive = audio late (lags).
  A flash shown from frame t_i with a beep starting at t_i reads 0. Filmed motion is sampled at the
  frame instant, so its frame difference describes the half frame before it: such content reads up to
  half a frame early (-20 ms at 25 fps).
- Reliability: confidence = the peak correlation; margin = the peak minus the best correlation at least
  one frame interval away (repetitive content gives a small margin); events = the effective number of
  frames that carry the correlation at the peak, (sum c_i)^2 / sum c_i^2 over the positive products
  c_i (one scene cut landing on one drum beat is one coincidence, not a measurement). A window is
  reliable when all three reach their minimum and picture and sound both change; otherwise it is "not
  enough data", counted in the state and never an event.
- Decision: a monitor sits at a point of the broadcast chain, so it alarms at that point's tolerance, EBU
  R37 (2007): audio no more than 40 ms early or 60 ms late (`early_threshold_ms`, `late_threshold_ms`; ATSC
  IS-191's 15/45 ms is tighter). What a viewer notices is the severity, by ITU-R BT.1359-1: undetectable
  within 45 ms early / 125 ms late, detectable beyond, unacceptable beyond 90 ms early / 185 ms late
  (`details.bt1359`; major when unacceptable, else minor). An event is a run of at least
  `min_windows` reliable windows, covering at least `min_duration_s` of media, whose offsets are all
  beyond the threshold on the same side and agree with their mean within `agreement_ms`. A reliable
  in-sync window, or a reliable window with a different offset, closes a run; unreliable windows
  neither extend nor close it. A run longer than `max_event_s` is reported and goes on as a new event,
  so a persistent offset on a live stream is reported while it lasts.

Split invariance: stage 2 keeps only the envelopes the unevaluated windows need, and evaluates window k
of the fixed grid [k hop_s, k hop_s + window_s) once the video has reached its end and the audio its end
plus the lag range. A window's result therefore depends only on its rows, never on where the rows were cut
or on how video and audio calls interleave (as long as neither kind runs more than `max_lead_s` ahead of
the other: beyond that, to bound the state when a kind never comes, the oldest windows are skipped).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import AUDIO, MAJOR, MINOR, VIDEO, Detector, Event, Options, State, option
from detectors.segments import AudioBlocks
from detectors.table import Features

# EBU Technical Recommendation R37-2007, "The relative timing of the sound and vision components of a
# television signal": at any point of the chain, sound at most 40 ms early and 60 ms late.
R37_EARLY_MS = 40.0
R37_LATE_MS = 60.0
# ITU-R BT.1359-1 (1998), "Relative timing of sound and vision for broadcasting", Fig. 1: thresholds of
# detectability (sound 45 ms early / 125 ms late) and acceptability (90 ms early / 185 ms late).
BT1359_DETECT_EARLY_MS = 45.0
BT1359_DETECT_LATE_MS = 125.0
BT1359_ACCEPT_EARLY_MS = 90.0
BT1359_ACCEPT_LATE_MS = 185.0

PREEMPHASIS_HZ = 300.0   # corner of the first-order pre-emphasis of the mono mix
COMPRESSION = 0.6        # |y|^0.6 = (y^2)^0.3: Stevens' power law for loudness
DETREND_S = 0.08         # half-width of the moving average removed from both envelopes (5 frames at 25 fps)
REPEAT_DIFF = 0.5 / 255  # a frame none of whose cells changed by more than half a level repeats the last one
GRID = (4, 4)            # the composer's diff_cells grid (schemas.records.DIFF_CELLS), row-major


def _regions() -> list[tuple[int, ...]]:
    """Candidate picture regions as tuples of cells: the whole picture (), each cell, adjacent pairs."""
    rows, cols = GRID
    out: list[tuple[int, ...]] = [()]
    out += [(c,) for c in range(rows * cols)]
    out += [(r * cols + c, r * cols + c + 1) for r in range(rows) for c in range(cols - 1)]
    out += [(r * cols + c, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols)]
    return out


REGIONS = _regions()


def region_label(region: tuple[int, ...]) -> str:
    """'whole picture', 'cell 9' or 'cells 9+10' (cells of the 4x4 grid, row-major from the top left)."""
    if not region:
        return "whole picture"
    if len(region) == 1:
        return f"cell {region[0]}"
    return "cells " + "+".join(str(c) for c in region)


@dataclass(frozen=True)
class AvSyncOptions(Options):
    early_threshold_ms: float = option(R37_EARLY_MS, "audio leading the picture by more than this is reported "
                                       "(ms; EBU R37: 40; ITU-R BT.1359 detectability: 45)", min=0.0, max=1000.0)
    late_threshold_ms: float = option(R37_LATE_MS, "audio lagging the picture by more than this is reported "
                                      "(ms; EBU R37: 60; ITU-R BT.1359 detectability: 125)", min=0.0, max=1000.0)
    window_s: float = option(10.0, "length of one correlation window (s)", min=2.0, max=60.0)
    hop_s: float = option(2.0, "step between window starts (s)", min=0.2, max=60.0)
    max_lag_ms: float = option(500.0, "largest offset searched either way (ms)", min=100.0, max=2000.0)
    lag_step_ms: float = option(2.0, "fine lag grid step around the peak, which is then interpolated (ms); "
                                "the search grid is a quarter frame, at most 10 ms", min=0.5, max=10.0)
    min_confidence: float = option(0.4, "lowest peak correlation (0..1) of a reliable window", min=0.0,
                                   max=1.0)
    min_margin: float = option(0.1, "lowest excess of the peak over the best correlation one frame interval "
                               "or more away from it (0..1)", min=0.0, max=1.0)
    min_events: float = option(6.0, "fewest frames (effective number) that must carry the peak correlation",
                               min=1.0, max=1000.0)
    min_video_change: float = option(0.002, "a window whose regions never change by more than this fraction "
                                     "of the luma range has no visual events", min=0.0, max=1.0)
    min_audio_level_db: float = option(-60.0, "a window whose loudest 10 ms block stays below this level "
                                       "(dBFS, pre-emphasised) has no audible events", min=-120.0, max=0.0)
    min_coverage: float = option(0.6, "share of a full window's frames that must have audio over the whole "
                                 "lag range for an estimate (partial windows at a stream's ends)", min=0.1,
                                 max=1.0)
    agreement_ms: float = option(40.0, "the windows of one event agree with their mean offset within this (ms)",
                                 min=1.0, max=1000.0)
    min_windows: int = option(2, "fewest reliable windows that make an event", min=1, max=1000)
    min_duration_s: float = option(10.0, "least media an event's windows must cover, from the first one's "
                                   "start to the last one's end (s)", min=0.0, max=3600.0)
    max_event_s: float = option(300.0, "an event longer than this is reported and goes on as a new one (s)",
                                min=10.0, max=86400.0)
    max_lead_s: float = option(60.0, "when one kind is more than this ahead of the other, the oldest windows "
                               "are skipped unanalysed (bounds the state if a kind never comes) (s)",
                               min=10.0, max=3600.0)

    def __post_init__(self):
        super().__post_init__()
        if self.hop_s > self.window_s:
            raise ValueError(f"AvSyncOptions.hop_s ({self.hop_s}) must not exceed window_s ({self.window_s}): "
                             f"windows would leave gaps")
        if self.max_lead_s < self.window_s + self.max_lag_ms / 1000.0:
            raise ValueError("AvSyncOptions.max_lead_s must be at least window_s plus the lag range")


# -- stage 1 ---------------------------------------------------------------------------------------


def preemphasis_coefficient(rate: int) -> float:
    """Pole of the first-order pre-emphasis y[n] = x[n] - a x[n-1] with its corner at PREEMPHASIS_HZ."""
    return float(np.exp(-2.0 * np.pi * PREEMPHASIS_HZ / rate))


# -- stage 2: one window ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowEstimate:
    """The outcome of one correlation window."""

    start_s: float           # window start (media s)
    end_s: float             # window end (exclusive)
    reliable: bool           # an estimate the decision may use
    reason: str              # "ok", or why not: "no_video", "no_audio", "still_picture", "coverage",
    #                          "quiet_audio", "low_confidence", "ambiguous", "few_events"
    offset_ms: float = 0.0   # audio time - picture time (positive: audio late)
    confidence: float = 0.0  # peak Pearson correlation (0..1)
    margin: float = 0.0      # peak minus the best correlation one frame interval or more away
    events: float = 0.0      # effective number of frames carrying the peak correlation
    region: str = ""         # the picture region that correlated best
    frames: int = 0          # frames used

    def as_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "reliable": self.reliable, "reason": self.reason,
                "offset_ms": self.offset_ms, "confidence": self.confidence, "margin": self.margin,
                "events": self.events, "region": self.region, "frames": self.frames}


def audio_integral(t: np.ndarray, dur: np.ndarray, env: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots (times s, values) of the running integral of the audio envelope; piecewise linear between them.

    Each block's mass (env x duration) is spread evenly over the widest interval centred on its centroid
    that fits in the block: an evenly filled block stays whole, a block in which a sound starts late is
    concentrated where the sound is.
    """
    c = t + pos.astype(np.float64) * dur
    half = np.maximum(np.minimum(c - t, t + dur - c), 1e-6)
    cum = np.concatenate([[0.0], np.cumsum(env.astype(np.float64) * dur)])
    knots_t = np.empty(2 * len(t))
    knots_t[0::2], knots_t[1::2] = c - half, c + half
    knots_v = np.empty(2 * len(t))
    knots_v[0::2], knots_v[1::2] = cum[:-1], cum[1:]
    return knots_t, knots_v


def detrend(x: np.ndarray, half: int, axis: int) -> np.ndarray:
    """x minus its centred moving average over 2 half + 1 rows along axis (fewer at the ends)."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    i = np.arange(n)
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, n)
    avg = (c[hi] - c[lo]) / (hi - lo).reshape((n,) + (1,) * (x.ndim - 1))
    return np.moveaxis(x - avg, 0, axis)


def region_envelopes(env: np.ndarray) -> np.ndarray:
    """(n, 1 + cells) [diff_prev, diff_cells...] -> (n, len(REGIONS)) change envelope of each region."""
    cols = [env[:, 0]] + [env[:, 1 + np.array(r)].mean(axis=1) for r in REGIONS[1:]]
    return np.stack(cols, axis=1)


def peak_position(lags: np.ndarray, curve: np.ndarray, j: int, drop: float = 0.03) -> float:
    """Lag (s) of the peak at index j of a correlation curve on an even lag grid.

    The midpoint of where the curve crosses (1 - drop) x peak on either side, linearly interpolated:
    a sharp peak gives its apex (as a parabola would), and a flat top, which a frame-rate conversion
    produces (a 20 ms flash sampled every 40 ms fits anywhere in the 20 ms it is not seen), gives the
    middle of the flat rather than a point on it chosen by noise.
    """
    level = curve[j] - drop * abs(curve[j])
    step = float(lags[1] - lags[0])

    def crossing(direction: int) -> float:
        i = j
        while 0 <= i + direction < len(curve) and curve[i + direction] >= level:
            i += direction
        nxt = i + direction
        if not 0 <= nxt < len(curve):
            return float(lags[i])
        frac = (curve[i] - level) / max(curve[i] - curve[nxt], 1e-12)
        return float(lags[i]) + direction * frac * step

    return 0.5 * (crossing(-1) + crossing(+1))


def estimate_window(vt: np.ndarray, vnew: np.ndarray, vprev: np.ndarray, venv: np.ndarray, frame_dur: float,
                    at: np.ndarray, adur: np.ndarray, aenv: np.ndarray, apos: np.ndarray,
                    audio_span: tuple[float, float], start_s: float, end_s: float,
                    o: AvSyncOptions) -> WindowEstimate:
    """Cross-correlate one window's picture change envelopes with the audio and judge the estimate.

    vt: (n,) frame times (s); vnew: (n,) the frame shows a new picture (not a repeat); vprev: (n,) the
    previous new picture's time (s; NaN: none); venv: (n, 17) diff_prev and diff_cells (fractions of the
    luma range); frame_dur: nominal T (s); at, adur, aenv, apos: audio blocks (start s, duration s,
    av_sync_env, av_sync_pos); audio_span: (first, last) media time the audio covers (s).
    """
    lag_max = o.max_lag_ms / 1000.0
    T = frame_dur
    inside = (vt >= start_s) & (vt < end_s)
    if not inside.any():
        return WindowEstimate(start_s, end_s, False, "no_video")
    if len(at) == 0:
        return WindowEstimate(start_s, end_s, False, "no_audio")
    # frames whose audio is known over the whole lag range, against the frames a full window has
    heard = inside & (vt - T - lag_max >= audio_span[0] - 1e-9) & (vt + T + lag_max <= audio_span[1] + 1e-9)
    present = int(np.count_nonzero(heard))
    if present < o.min_coverage * (end_s - start_s) / T:
        return WindowEstimate(start_s, end_s, False, "coverage", frames=present)
    usable = heard & vnew & np.isfinite(vprev) & np.all(np.isfinite(venv), axis=1)
    usable &= vprev - lag_max >= audio_span[0] - 1e-9
    used = int(np.count_nonzero(usable))
    # mostly repeated pictures (a still, a slide show); animation on twos still has half of its frames new
    if used < max(8, 0.25 * present):
        return WindowEstimate(start_s, end_s, False, "still_picture", frames=used)
    t, tp, v = vt[usable], vprev[usable], region_envelopes(venv[usable].astype(np.float64))
    if float(v.max()) < o.min_video_change:
        return WindowEstimate(start_s, end_s, False, "still_picture", frames=used)
    near = (at + adur > start_s - lag_max - 2 * T) & (at < end_s + lag_max + 2 * T)
    # The loudest block decides: sparse events (a beep a second) are what the method feeds on.
    # A sine of RMS r gives env ~ r^0.6, so the level in dBFS is about 20 log10(env^(1 / 0.6)).
    level = float(aenv[near].max()) if near.any() else 0.0
    if 20.0 / COMPRESSION * np.log10(max(level, 1e-30)) < o.min_audio_level_db:
        return WindowEstimate(start_s, end_s, False, "quiet_audio", frames=used)

    kt, kv = audio_integral(at[near], adur[near], aenv[near], apos[near])
    half = max(1, int(round(DETREND_S / T)))
    v = detrend(v, half, axis=0)
    v -= v.mean(axis=0, keepdims=True)
    vn = np.sqrt(np.einsum("ij,ij->j", v, v))                      # (regions,)

    # The audio integral is read at each picture's start and end and at the previous new picture: mostly
    # the same instants (a frame ends where the next begins), so each distinct instant is read once per lag
    # (three reads of every frame were ~8% of the streaming job's per-stream step). Instants closer than
    # 1 ns are one: frame times built by different sums differ in their last bits.
    n = len(t)
    instants = np.concatenate([t, t + T, tp])
    order = np.argsort(instants, kind="stable")
    ordered = instants[order]
    first = np.concatenate([[True], np.diff(ordered) > 1e-9])
    reads = ordered[first]
    where = np.empty(3 * n, np.int64)
    where[order] = np.cumsum(first) - 1
    at_start, at_end, at_prev = where[:n], where[n:2 * n], where[2 * n:]

    def audio_changes(lags_s: np.ndarray) -> np.ndarray:
        """(nlag, n) the change each frame would show if the audio were lags_s later, detrended, centred."""
        level = np.interp(reads[None, :] + lags_s[:, None], kt, kv)  # the integral at instant + lag
        now = level[:, at_start]
        during = (level[:, at_end] - now) / T                      # mean audio while the picture is shown
        before = (now - level[:, at_prev]) / (t - tp)[None, :]
        f = detrend(np.abs(during - before), half, axis=1)
        return f - f.mean(axis=1, keepdims=True)

    def correlate(f: np.ndarray, regions) -> np.ndarray:
        """Pearson correlation (len(regions), nlag) of region envelopes with audio changes f."""
        fn = np.sqrt(np.einsum("ij,ij->i", f, f))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (v[:, regions].T @ f.T) / (vn[regions, None] * fn[None, :])
        return np.where(np.isfinite(r), r, 0.0)

    # Coarse to fine: every region on a grid of a quarter frame (the peak is about two frames wide), then
    # the best region on the fine grid around its peak.
    step = o.lag_step_ms / 1000.0
    coarse = step * max(1, int(np.floor(min(0.010, T / 4.0) / step + 1e-9)))
    n_coarse = int(np.floor(lag_max / coarse + 1e-9))
    lags = np.arange(-n_coarse, n_coarse + 1) * coarse
    r = correlate(audio_changes(lags), np.arange(len(REGIONS)))
    best = int(np.argmax(r.max(axis=1)))
    curve = r[best]
    k = int(np.argmax(curve))
    n_fine = int(np.ceil(max(coarse, T / 2.0) / step)) + 1
    fine = np.clip(lags[k] + np.arange(-n_fine, n_fine + 1) * step, -lag_max, lag_max)
    f_fine = audio_changes(fine)
    fine_curve = correlate(f_fine, [best])[0]
    j = int(np.argmax(fine_curve))
    peak = float(fine_curve[j])
    offset = peak_position(fine, fine_curve, j)
    away = np.abs(lags - offset) >= T - 1e-9
    margin = peak - float(curve[away].max()) if away.any() else peak
    contrib = np.maximum(v[:, best] * f_fine[j], 0.0)
    events = float(contrib.sum() ** 2 / max(float(np.dot(contrib, contrib)), 1e-300))
    est = dict(offset_ms=round(offset * 1000.0, 1), confidence=round(min(peak, 1.0), 4),
               margin=round(margin, 4), events=round(events, 1), region=region_label(REGIONS[best]), frames=used)
    if peak < o.min_confidence:
        return WindowEstimate(start_s, end_s, False, "low_confidence", **est)
    if margin < o.min_margin:
        return WindowEstimate(start_s, end_s, False, "ambiguous", **est)
    if events < o.min_events:
        return WindowEstimate(start_s, end_s, False, "few_events", **est)
    return WindowEstimate(start_s, end_s, True, "ok", **est)


# -- stage 2: the detector -------------------------------------------------------------------------


def bt1359_verdict(offset_ms: float) -> str:
    """ITU-R BT.1359-1 grade of an offset (ms, positive = audio late): undetectable/detectable/unacceptable."""
    if offset_ms < -BT1359_ACCEPT_EARLY_MS or offset_ms > BT1359_ACCEPT_LATE_MS:
        return "unacceptable"
    if offset_ms < -BT1359_DETECT_EARLY_MS or offset_ms > BT1359_DETECT_LATE_MS:
        return "detectable"
    return "undetectable"


_N_ENV = 1 + GRID[0] * GRID[1]
_MAX_REGIONS_LISTED = 8


def _video_buffer() -> dict:
    # frames from the next window's start on: time, new picture?, previous new picture's time, envelopes
    return {"t": np.zeros(0), "new": np.zeros(0, bool), "prev": np.zeros(0), "env": np.zeros((0, _N_ENV), np.float32)}


def _audio_buffer() -> dict:
    # audio blocks from the next window's start minus the lag range on
    return {"t": np.zeros(0), "dur": np.zeros(0, np.float32), "env": np.zeros(0, np.float32),
            "pos": np.zeros(0, np.float32)}


@dataclass
class AvSyncState(State):
    video: dict = field(default_factory=_video_buffer)
    audio: dict = field(default_factory=_audio_buffer)
    v_first: float | None = None        # first frame time (s)
    v_last: float | None = None         # last frame time seen (s)
    v_prev: float | None = None         # last new picture's time (s)
    frame_dur: float | None = None      # nominal frame interval (s)
    a_first: float | None = None        # first audio time (s)
    a_end: float | None = None          # end of the last audio block seen (s)
    next_k: int | None = None           # the next window to evaluate is [next_k hop_s, next_k hop_s + window_s)
    run: dict | None = None             # the open out-of-sync run
    counts: dict = field(default_factory=lambda: {"windows": 0, "in_sync": 0, "out_of_sync": 0, "not_enough_data": 0,
                                                  "skipped": 0})
    reasons: dict = field(default_factory=dict)  # not-enough-data windows by reason
    last: dict | None = None            # the last window's outcome (WindowEstimate.as_dict)
    estimate: dict | None = None        # the last reliable window's outcome: the current offset


class AvSync(Detector):
    name = "av_sync"
    version = "1.0"
    inputs = (VIDEO, AUDIO)
    Options = AvSyncOptions

    State = AvSyncState
    stage1_kind = AUDIO
    stage1_outputs = {"av_sync_env": pa.float32(),   # mean compressed amplitude of the block
                      "av_sync_pos": pa.float32()}   # its centroid, fraction of the block (0.5 when silent)

    def stage1(self, blocks: AudioBlocks) -> dict:
        """Per 10 ms block: mean compressed amplitude (`av_sync_env`) and its centroid (`av_sync_pos`).

        av_sync_env is the mean of |y|^0.6 over the block's samples, y the pre-emphasised mono mix of the
        full-scale float samples (a sine of RMS r gives about r^0.6); av_sync_pos is the centroid of |y|^0.6
        as a fraction of the block's length (0.5 for a silent block).
        """
        nb = len(blocks.t)
        if nb == 0:
            return {"av_sync_env": np.zeros(0, np.float32), "av_sync_pos": np.zeros(0, np.float32)}
        mono = blocks.samples.mean(axis=1, dtype=np.float32)
        body = mono[blocks.context:]
        # the previous segment's tail (context) continues the filter; at a stream's start it starts from silence
        if blocks.context:
            prev = mono[blocks.context - 1:len(mono) - 1]
        else:
            prev = np.concatenate([np.zeros(1, np.float32), body[:-1]])
        mag = np.abs(body - np.float32(preemphasis_coefficient(blocks.rate)) * prev) ** np.float32(COMPRESSION)
        per = blocks.blocks_of(mag)                                   # (nb, block), the last zero-padded
        n = blocks.n.astype(np.float64)
        total = per.sum(axis=1, dtype=np.float64)
        moment = per @ (np.arange(blocks.block, dtype=np.float64) + 0.5)
        centroid = np.where(total > 0, moment / np.maximum(total, 1e-300), n / 2)
        return {"av_sync_env": (total / n).astype(np.float32), "av_sync_pos": (centroid / n).astype(np.float32)}

    # -- input -------------------------------------------------------------------------------------

    def process(self, state: AvSyncState, kind: str, rows: Features) -> list[Event]:
        if not len(rows):
            return []
        if kind == VIDEO:
            self._add_video(state, rows)
        elif kind == AUDIO:
            self._add_audio(state, rows)
        else:
            raise ValueError(f"av_sync takes {VIDEO!r} or {AUDIO!r} rows, got {kind!r}")
        return self._advance(state, final=False)

    def _add_video(self, state: AvSyncState, rows: Features) -> None:
        t_all = np.asarray(rows["t"], np.float64)
        cells = np.asarray(rows["diff_cells"], np.float32).reshape(len(t_all), -1)
        if cells.shape[1] != _N_ENV - 1:
            raise ValueError(f"av_sync expects diff_cells of a {GRID[0]}x{GRID[1]} grid, got {cells.shape[1]} cells")
        env = np.concatenate([np.asarray(rows["diff_prev"], np.float32)[:, None], cells], axis=1)
        if state.frame_dur is None:
            state.frame_dur = float(rows["frame_dur"][0])
            state.v_first = float(t_all[0])
        # frames whose time does not advance (repeated or backwards PTS; frame_drop reports them) are skipped
        seen = np.maximum.accumulate(np.concatenate([[state.v_last if state.v_last is not None else -np.inf],
                                                     t_all]))[:-1]
        forward = t_all > seen
        t_all, cells, env = t_all[forward], cells[forward], env[forward]
        if not len(t_all):
            return
        state.v_last = float(t_all[-1])
        # A repeated picture (frame-rate conversion, a duplicated frame) shows nothing new: it is kept only
        # to count the window's frames, and the next new picture's change spans back to the last new one.
        # NaN (the first frame) is not a repeat.
        new = ~np.all(cells <= REPEAT_DIFF, axis=1)
        idx = np.flatnonzero(new)
        t_new = t_all[idx]
        before = np.concatenate([[state.v_prev if state.v_prev is not None else np.nan], t_new[:-1]])
        prev = np.full(len(t_all), np.nan)
        prev[idx] = before  # NaN for the first frame: no change to measure
        if len(idx):
            state.v_prev = float(t_new[-1])
        v = state.video
        v["t"] = np.concatenate([v["t"], t_all])
        v["new"] = np.concatenate([v["new"], new])
        v["prev"] = np.concatenate([v["prev"], prev])
        v["env"] = np.concatenate([v["env"], env])

    def _add_audio(self, state: AvSyncState, rows: Features) -> None:
        t = np.asarray(rows["t"], np.float64)
        dur = np.asarray(rows["n"], np.float64) / np.asarray(rows["rate"], np.float64)
        # blocks that start before the audio already seen ended (a source's timestamps jumping back) are
        # skipped: the envelope's running integral needs time to advance
        ends = np.maximum.accumulate(np.concatenate([[state.a_end if state.a_end is not None else -np.inf],
                                                     t + dur]))[:-1]
        forward = t >= ends - 1e-6
        if not forward.all():
            rows = rows.take(forward)
            t, dur = t[forward], dur[forward]
        if not len(t):
            return
        a = state.audio
        a["t"] = np.concatenate([a["t"], t])
        a["dur"] = np.concatenate([a["dur"], dur.astype(np.float32)])
        a["env"] = np.concatenate([a["env"], np.asarray(rows["av_sync_env"], np.float32)])
        a["pos"] = np.concatenate([a["pos"], np.asarray(rows["av_sync_pos"], np.float32)])
        if state.a_first is None:
            state.a_first = float(t[0])
        state.a_end = float(t[-1] + dur[-1])

    # -- windows -----------------------------------------------------------------------------------

    def _reach_s(self, state: AvSyncState) -> float:
        """Audio a window needs beyond its ends (s): the lag range, two frame intervals and a block."""
        return self.options.max_lag_ms / 1000.0 + 2.0 * (state.frame_dur or 0.04) + 0.02

    def _advance(self, state: AvSyncState, final: bool) -> list[Event]:
        o = self.options
        events: list[Event] = []
        if state.next_k is None:  # (once set, only _skip_lead moves it on besides the windows)
            if state.v_first is None or state.a_first is None:
                if not final:
                    self._skip_lead(state)
                    return events
                if state.v_first is None:
                    return events
            # the grid starts at the window holding the first media of either kind: fixed by the data
            first = min(x for x in (state.v_first, state.a_first) if x is not None)
            state.next_k = int(np.floor(first / o.hop_s + 1e-9))
        while True:
            start = state.next_k * o.hop_s
            end = start + o.window_s
            ready = (state.v_last is not None and state.v_last >= end and
                     state.a_end is not None and state.a_end >= end + self._reach_s(state))
            if not ready:
                if not final:
                    self._skip_lead(state)
                    break
                if state.v_last is None or state.v_last < start:  # at the end: up to the last frame
                    break
            events += self._evaluate(state, start, end)
            state.next_k += 1
            self._trim(state)
        return events

    def _trim(self, state: AvSyncState) -> None:
        """Forget the rows no later window needs."""
        start = state.next_k * self.options.hop_s
        v = state.video
        cut = int(np.searchsorted(v["t"], start, side="left"))
        if cut:
            for key in v:
                v[key] = v[key][cut:]
        a = state.audio
        cut = int(np.searchsorted(a["t"] + a["dur"], start - self._reach_s(state), side="left"))
        if cut:
            for key in a:
                a[key] = a[key][cut:]

    def _skip_lead(self, state: AvSyncState) -> None:
        """When one kind is more than max_lead_s ahead of the other, skip the windows it has left behind."""
        o = self.options
        v_at, a_at = state.v_last, state.a_end
        if v_at is None and a_at is None:
            return
        ahead = max(x for x in (v_at, a_at) if x is not None)
        if v_at is not None and a_at is not None:
            behind = min(v_at, a_at)
        else:  # the other kind has not started yet: measure from the first media
            behind = min(x for x in (state.v_first, state.a_first) if x is not None)
        if ahead - behind <= o.max_lead_s:
            return
        k = int(np.floor((ahead - o.max_lead_s) / o.hop_s))
        if state.next_k is None or k > state.next_k:
            if state.next_k is not None:
                state.counts["skipped"] += k - state.next_k
            state.next_k = k
            self._trim(state)

    def _evaluate(self, state: AvSyncState, start: float, end: float) -> list[Event]:
        o = self.options
        v, a = state.video, state.audio
        est = estimate_window(v["t"], v["new"], v["prev"], v["env"], state.frame_dur or 0.04,
                              a["t"], a["dur"].astype(np.float64), a["env"], a["pos"],
                              (state.a_first if state.a_first is not None else np.inf,
                               state.a_end if state.a_end is not None else -np.inf), start, end, o)
        counts = state.counts
        counts["windows"] += 1
        state.last = est.as_dict()
        if not est.reliable:
            counts["not_enough_data"] += 1
            state.reasons[est.reason] = state.reasons.get(est.reason, 0) + 1
            return []
        state.estimate = state.last
        late = est.offset_ms > o.late_threshold_ms
        early = est.offset_ms < -o.early_threshold_ms
        if not (late or early):
            counts["in_sync"] += 1
            return self._close(state)
        counts["out_of_sync"] += 1
        side = "audio_late" if late else "audio_early"
        events: list[Event] = []
        run = state.run
        if run is not None and (run["side"] != side or
                                (run["n"] and abs(est.offset_ms - run["sum"] / run["n"]) > o.agreement_ms)):
            events += self._close(state)
            run = None
        if run is None:
            run = state.run = self._new_run(side, start, continued=False)
        # the last windows of a stream reach past its last frame: the evidence ends there
        run["end"] = min(end, state.v_last + (state.frame_dur or 0.0))
        run["n"] += 1
        run["sum"] += est.offset_ms
        run["min"] = min(run["min"], est.offset_ms)
        run["max"] = max(run["max"], est.offset_ms)
        run["conf_sum"] += est.confidence
        run["conf_min"] = min(run["conf_min"], est.confidence)
        run["margin_min"] = min(run["margin_min"], est.margin)
        if est.region not in run["regions"] and len(run["regions"]) < _MAX_REGIONS_LISTED:
            run["regions"].append(est.region)
        if run["end"] - run["start"] >= o.max_event_s - 1e-9:
            events += self._close(state)
            state.run = self._new_run(side, run["end"], continued=True)
        return events

    @staticmethod
    def _new_run(side: str, start: float, continued: bool) -> dict:
        return {"side": side, "start": float(start), "end": float(start), "n": 0, "sum": 0.0, "min": np.inf,
                "max": -np.inf, "conf_sum": 0.0, "conf_min": np.inf, "margin_min": np.inf, "regions": [],
                "continued": continued}

    def _close(self, state: AvSyncState) -> list[Event]:
        run, state.run = state.run, None
        o = self.options
        if run is None or run["n"] == 0:
            return []
        short = run["n"] < o.min_windows or run["end"] - run["start"] < o.min_duration_s - 1e-9
        if short and not run["continued"]:
            return []
        offset = run["sum"] / run["n"]
        late = run["side"] == "audio_late"
        verdict = bt1359_verdict(offset)
        return [Event(self.name, run["start"], run["end"], score=round(offset, 1),
                      threshold=o.late_threshold_ms if late else -o.early_threshold_ms,
                      severity=MAJOR if verdict == "unacceptable" else MINOR, check=run["side"],
                      details={"offset_ms": round(offset, 1), "offset_min_ms": round(run["min"], 1),
                               "offset_max_ms": round(run["max"], 1),
                               "confidence": round(run["conf_sum"] / run["n"], 3),
                               "confidence_min": round(run["conf_min"], 3),
                               "margin_min": round(run["margin_min"], 3), "windows": run["n"],
                               "window_s": o.window_s, "hop_s": o.hop_s, "regions": list(run["regions"]),
                               "bt1359": verdict, "continued": run["continued"],
                               "sign": "positive: audio later than picture (lags)"})]

    # -- end ---------------------------------------------------------------------------------------

    def finish(self, state: AvSyncState, end_s: float) -> list[Event]:
        return self._advance(state, final=True) + self._close(state)
