"""low_level: dead air with hiss, the programme gone but the line not silent (optional, off by default).

A silence detector waits for the audio to fall below -60 dBFS; a feed whose programme is lost upstream
often still carries the noise of the chain (a desk's hiss, a radio link's noise floor) well above that.
This check reports audio whose RMS stays below level_db (-50 dBFS) for min_duration_s (10 s) while it is
not silent (some sample reaches the silence level): such a stretch is neither programme nor silence.
It is optional (`--detectors ...,low_level` or a config file) because quiet programme, such as a
documentary's room tone, can stay that low on purpose.

Per 10 ms block, stage 1 gives the RMS of all channels together and the block's peak; stage 2 takes the
RMS over a trailing window_s (1 s) so that a syllable does not break a run, and a block is low when that
window's RMS is below level_db and its peak is at or above silence_db. A run of low blocks lasting
min_duration_s is an event (raised once it has lasted that long); it starts where the first low
block's window starts (exact when the programme before was well above the level, within window_s
otherwise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import AUDIO, MAJOR, Event, Options, Run, RunDetector, RunState, option, trailing_sums
from detectors.segments import AUDIO_BLOCK_S, AudioBlocks
from detectors.table import Features


@dataclass(frozen=True)
class LowLevelOptions(Options):
    min_duration_s: float = option(10.0, "shortest low stretch reported (s)", min=1.0, max=86400.0)
    level_db: float = option(-50.0, "RMS (dBFS, all channels, over window_s) below which the audio is low",
                             min=-100.0, max=0.0)
    silence_db: float = option(-60.0, "a stretch whose peak stays below this is silence (the silence "
                               "detector's), not low level", min=-120.0, max=0.0)
    window_s: float = option(1.0, "RMS window (s) ending at each 10 ms block", min=0.01, max=30.0)


@dataclass
class LowLevelState(RunState):
    tail: list = field(default_factory=list)  # the last window's (sum of squares, samples, audible), oldest first


class LowLevel(RunDetector):
    name = "low_level"
    version = "1.0"
    inputs = (AUDIO,)
    Options = LowLevelOptions
    State = LowLevelState
    stage1_kind = AUDIO
    stage1_outputs = {"low_level_ssq": pa.float64(),   # sum of squares over the block, mean of the channels
                      "low_level_peak": pa.float32()}  # the block's peak |sample|, all channels

    def stage1(self, blocks: AudioBlocks) -> dict:
        nb = len(blocks.t)
        if nb == 0:
            return {"low_level_ssq": np.zeros(0), "low_level_peak": np.zeros(0, np.float32)}
        x = blocks.blocks_of(blocks.body()).astype(np.float64)   # (nb, block, ch)
        return {"low_level_ssq": np.square(x).sum(axis=(1, 2)) / blocks.channels,
                "low_level_peak": np.abs(x).max(axis=(1, 2)).astype(np.float32)}

    def scores(self, state: LowLevelState, rows: Features) -> np.ndarray:
        """Per block: the trailing window's RMS where it is low and not silent, NaN elsewhere."""
        o = self.options
        window = max(1, int(round(o.window_s / AUDIO_BLOCK_S)))
        peak = rows["low_level_peak"].astype(np.float64)
        # the window's peak, as a sum of indicator values: blocks at or above the silence level
        values = np.stack([rows["low_level_ssq"], rows["n"], peak >= 10 ** (o.silence_db / 20)], axis=1)
        win, state.tail = trailing_sums(state.tail, values, window)
        rms = np.sqrt(win[:, 0] / np.maximum(win[:, 1], 1.0))
        low = (rms < 10 ** (o.level_db / 20)) & (win[:, 2] > 0)
        return np.where(low, rms, np.nan)

    def span(self, start: float, end: float) -> tuple[float, float]:
        """The first low block's window starts window_s before its end (a programme far above the level
        lifts the window's RMS until it has left the window entirely)."""
        return start + AUDIO_BLOCK_S - self.options.window_s, end

    def end_of_stream(self, state: LowLevelState, end_s: float) -> float:
        return state.seen_end if state.seen_end is not None else float(end_s)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        mean = run.sum / run.n if run.n else 0.0
        return Event(self.name, float(start), float(end), score=round(20 * math.log10(max(mean, 1e-12)), 2),
                     threshold=self.options.level_db, severity=MAJOR,
                     details={"duration_s": round(end - start, 6),
                              "mean_rms_dbfs": round(20 * math.log10(max(mean, 1e-12)), 2),
                              "loudest_window_rms_dbfs": round(20 * math.log10(max(run.peak, 1e-12)), 2),
                              "level_db": self.options.level_db})
