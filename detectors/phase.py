"""phase: a channel pair out of phase (inverted polarity), and optionally mono carried as stereo.

A pair with one leg's polarity inverted sounds hollow in stereo and cancels when mixed down to mono (a
radio, a phone, a mono TV speaker): the programme vanishes for part of the audience. The measure is the
one of a phase-correlation meter and of FFmpeg's `aphasemeter`: the normalised correlation of the two
channels, r = sum(x y) / sqrt(sum(x^2) sum(y^2)), +1 for identical, 0 for unrelated, -1 for inverted.

Rule: per 10 ms block, stage 1 sums x^2 per channel and x y of each watched pair (front L/R; for 5.1 and 7.1 also
the surround pair). Stage 2 takes the correlation over the trailing window_s (0.4 s) ending at each block;
the block is out of phase when that correlation is at or below max_correlation (-0.6) while both
channels are at programme level (window RMS at or above programme_level_db, -40 dBFS); below that level
the phase is unknown and a run goes on through it unchanged (the pauses of speech); and a run of such
blocks is a major event (check "out_of_phase <pair>") when it lasted min_duration_s (2 s). A trailing
window first qualifies when about 80% of it is inverted and stops when less is, so the event's start is
the first qualifying block less 0.8 window_s and its end the first block that does not qualify less
0.2 window_s (exact for a clean inversion to about a block).

Optional (mono_check, off by default): mono carried as stereo, the side signal (x - y) at least
mono_side_db (40 dB) below the mid (x + y) for mono_min_duration_s (30 s) at programme level: a minor
event (check "mono <pair>"), since a mono programme on a stereo service is legal but often a fault
upstream (a stereo source lost, a mono fallback left on).

Hard negatives: wide reverberant stereo (r near 0), hard-panned lines (one channel below programme
level), a mono programme on both channels (r = +1), short inverted moments (below min_duration_s).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import (AUDIO, MAJOR, MINOR, Event, Options, Run, RunDetector, RunState, option, rows_end,
                            trailing_sums)
from detectors.segments import AUDIO_BLOCK_S, AudioBlocks
from detectors.table import Features


ONSET_SHARE = 0.8          # share of a trailing window that shows the defect when the window first qualifies
PAIRS = ((0, 1), (4, 5))  # front L/R; the surround pair of 5.1/7.1 (FL FR FC LFE BL BR ...)


def watched_pairs(channels: int) -> list[tuple[int, int]]:
    """Front L/R for 2 or more channels; for 6 or more (5.1, 7.1) also the surround pair."""
    return list(PAIRS[:2 if channels >= 6 else 1]) if channels >= 2 else []


@dataclass(frozen=True)
class PhaseOptions(Options):
    min_duration_s: float = option(2.0, "shortest out-of-phase stretch reported (s)", min=0.1, max=3600.0)
    max_correlation: float = option(-0.6, "a window is out of phase at or below this correlation", min=-1.0,
                                    max=0.0)
    window_s: float = option(0.4, "correlation window (s) ending at each 10 ms block", min=0.05, max=10.0)
    programme_level_db: float = option(-40.0, "both channels' window RMS must be at or above this (dBFS)",
                                       min=-100.0, max=0.0)
    mono_check: bool = option(False, "also report mono carried as stereo (minor)")
    mono_side_db: float = option(40.0, "mono: side at least this far below mid (dB)", min=10.0, max=120.0)
    mono_min_duration_s: float = option(30.0, "mono: shortest stretch reported (s)", min=1.0, max=86400.0)


@dataclass
class PhaseState(RunState):
    # runs: per watched pair p, track 2p = out of phase, 2p + 1 = mono carried as stereo
    tail: list = field(default_factory=list)  # the last window's per-block sums, (blocks, pairs, 4), oldest first
    pairs: int = 0                            # watched pairs of the current layout
    last: list = field(default_factory=list)  # per track, the last block's score (None: not in a run)


class Phase(RunDetector):
    """Runs of out-of-phase (and, optionally, mono) windows per watched channel pair."""

    name = "phase"
    version = "1.0"
    inputs = (AUDIO,)
    Options = PhaseOptions
    State = PhaseState
    stage1_kind = AUDIO
    stage1_outputs = {"phase_energy": pa.list_(pa.float64()),  # per channel: sum of x^2 over the block
                      "phase_cross": pa.list_(pa.float64())}   # per channel: sum of x * its pair partner's
    #                                                             x (0 where the channel is in no pair)

    def stage1(self, blocks: AudioBlocks) -> dict:
        nb, ch = len(blocks.t), blocks.channels
        energy, cross = np.zeros((nb, ch)), np.zeros((nb, ch))
        if nb == 0:
            return {"phase_energy": energy, "phase_cross": cross}
        x = blocks.blocks_of(blocks.body()).astype(np.float64)   # (nb, block, ch)
        energy[:] = np.square(x).sum(axis=1)
        for a, b in watched_pairs(ch):
            cross[:, a] = cross[:, b] = (x[:, :, a] * x[:, :, b]).sum(axis=1)
        return {"phase_energy": energy, "phase_cross": cross}

    # -- per block: trailing-window correlation ---------------------------------------------------

    def scores(self, state: PhaseState, rows: Features) -> np.ndarray:
        """Per block and track, from the trailing window's sums (state.tail holds the blocks before)."""
        energy, cross = rows["phase_energy"], rows["phase_cross"]
        pairs_of = watched_pairs(energy.shape[1])
        sums = np.zeros((len(rows), len(pairs_of), 4))  # per pair: sum xy, sum xx, sum yy, samples
        for p, (a, b) in enumerate(pairs_of):
            sums[:, p] = np.stack([cross[:, a], energy[:, a], energy[:, b], rows["n"]], axis=1)
        window = max(1, int(round(self.options.window_s / AUDIO_BLOCK_S)))
        win, state.tail = trailing_sums(state.tail, sums, window)
        scores, loud = self._window_scores(win)
        # below programme level the phase is unknown: a run goes on through a pause (speech) unchanged,
        # i.e. a quiet block repeats the decision of the block before it (the last of the previous call
        # is kept in state.last, so this holds however the rows were cut)
        carry = np.array([np.nan if v is None else v for v in state.last]) if len(state.last) == scores.shape[1] \
            else np.full(scores.shape[1], np.nan)
        quiet = np.repeat(~loud, 2, axis=1)
        rows_idx = np.where(quiet, -1, np.arange(len(scores))[:, None])
        source = np.maximum.accumulate(rows_idx, axis=0)       # the last loud block at or before each one
        filled = np.take_along_axis(scores, np.maximum(source, 0), axis=0)
        scores = np.where(source >= 0, filled, carry[None, :])
        state.last = [None if v != v else float(v) for v in scores[-1].tolist()]
        return scores

    def process(self, state: PhaseState, kind: str, rows: Features) -> list[Event]:
        if kind != AUDIO or not len(rows):
            return []
        pairs = len(watched_pairs(rows["phase_energy"].shape[1]))
        if pairs != state.pairs:  # first rows, or the layout changed: start afresh
            state.pairs, state.tail, state.last = pairs, [], []
        if not pairs:             # mono: no pair to watch (runs of an earlier layout end here)
            events = self.close_layout(state, float(rows["t"][0]))
            state.runs, state.seen_end = [], rows_end(kind, rows)
            return events
        return super().process(state, kind, rows)

    def _window_scores(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores (n, 2 pairs), loud (n, pairs)): per block and pair, the window's correlation where it
        is out of phase (and side-to-mid dB where mono, with mono_check), NaN where not; loud where
        both channels are at programme level."""
        o = self.options
        sxy, sxx, syy, counts = win[:, :, 0], win[:, :, 1], win[:, :, 2], win[:, :, 3]
        level = (10.0 ** (o.programme_level_db / 20.0)) ** 2 * counts
        loud = (sxx >= level) & (syy >= level)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = sxy / np.sqrt(sxx * syy)
            mid, side = sxx + syy + 2 * sxy, sxx + syy - 2 * sxy
            side_db = 10 * np.log10(np.maximum(side, 1e-30) / np.maximum(mid, 1e-30))
        scores = np.full((len(win), 2 * win.shape[1]), np.nan)
        scores[:, 0::2] = np.where(loud & (corr <= o.max_correlation), corr, np.nan)
        if o.mono_check:
            scores[:, 1::2] = np.where(loud & (side_db <= -o.mono_side_db), side_db, np.nan)
        return scores, loud

    # -- events --------------------------------------------------------------------------------------

    def min_duration(self, track: int) -> float:
        return self.options.mono_min_duration_s if track % 2 else self.options.min_duration_s

    def span(self, start: float, end: float) -> tuple[float, float]:
        """Where the defect began and ended, from the first qualifying block and the first block that is
        not: a trailing window qualifies once about 80% of it shows the defect and stops once less does,
        so the window lags the onset by ~0.8 window_s and the end by ~0.2 window_s."""
        w = self.options.window_s
        begun = start + AUDIO_BLOCK_S - ONSET_SHARE * w
        return begun, max(begun, end - (1.0 - ONSET_SHARE) * w)

    def reportable_after(self, event: Event) -> float | None:
        return self.options.mono_min_duration_s if event.check.startswith("mono") else self.options.min_duration_s

    def end_of_stream(self, state: PhaseState, end_s: float) -> float:
        # a run still going on at the end lasted to the end: no window lag to take off there
        end = state.seen_end if state.seen_end is not None else float(end_s)
        return end + (1.0 - ONSET_SHARE) * self.options.window_s

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        o = self.options
        pair = PAIRS[track // 2]
        names = f"{pair[0]}-{pair[1]}"
        mean = run.sum / run.n if run.n else math.nan
        if track % 2 == 0:
            return Event(self.name, float(start), float(end), score=round(mean, 4), threshold=o.max_correlation,
                         severity=MAJOR, check=f"out_of_phase {names}",
                         details={"channels": list(pair), "duration_s": round(end - start, 6),
                                  "mean_correlation": round(mean, 4),
                                  "window_s": o.window_s})
        return Event(self.name, float(start), float(end), score=round(mean, 2), threshold=-o.mono_side_db,
                     severity=MINOR, check=f"mono {names}",
                     details={"channels": list(pair), "duration_s": round(end - start, 6),
                              "mean_side_to_mid_db": round(mean, 2)})
