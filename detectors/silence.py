"""silence: the audio stays below a level for at least min_duration_s.

Reference: FFmpeg silencedetect. A sample is quiet when its magnitude is strictly below `noise`
(-60 dB = 0.001 of full scale, FFmpeg's default). By default every channel must be quiet at once (like
silencedetect mono=0: one loud sample in any channel ends the silence); with per_channel=True each
channel has its own runs and events name the channel (like mono=1). A silence starts at its first quiet
sample and ends at the first sample that is not quiet (or at the end of the stream), as silencedetect's
silence_start / silence_end; FFmpeg's default minimum duration is 2 s, a live monitor's here is 1 s.

Stage 1 gives, per 10 ms block (and channel), how many samples at the block's start and at its end are
quiet. Stage 2 joins those counts across blocks, so a run's start and end are exact to the sample however
the stream was cut into segments and windows. (A quiet stretch strictly inside one block, between loud
samples, is shorter than a block and so shorter than any allowed min_duration_s.)

Hard negatives: deliberate pauses shorter than min_duration_s; quiet but not silent audio (room tone,
-50 dBFS noise: its peaks are well above -60 dBFS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import AUDIO, MAJOR, Event, Options, Run, RunDetector, RunState, option
from detectors.segments import AudioBlocks
from detectors.table import Features

FULL_SCALE = 32768.0  # int16 full scale; the feature pipeline's float samples are raw / 32768


@dataclass(frozen=True)
class SilenceOptions(Options):
    min_duration_s: float = option(1.0, "shortest silence reported (s); FFmpeg's default is 2", min=0.01,
                                   max=3600.0)
    noise: float = option(-60.0, "a sample is quiet when its magnitude is below this level: dBFS when <= 0 "
                          "(-60 dB), or an amplitude fraction of full scale when in (0, 1] (0.001), as "
                          "FFmpeg's silencedetect noise=", min=-200.0, max=1.0)
    per_channel: bool = option(False, "detect silence in each channel on its own (silencedetect mono=1); "
                               "default: all channels must be quiet at once (mono=0)")


def noise_amplitude(noise: float) -> float:
    """The `noise` option as an amplitude fraction of full scale: dB when <= 0, else already a fraction."""
    return 10.0 ** (noise / 20.0) if noise <= 0 else float(noise)


def _edge_runs(quiet: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leading and trailing quiet-sample counts of each block.

    quiet: (nb, block, ...) bool, padded past each block's n samples with True; n: (nb,) samples per block.
    Returns two int32 arrays shaped (nb, ...), each between 0 and n.
    """
    nb, block = quiet.shape[:2]
    shape_n = n.reshape((nb,) + (1,) * (quiet.ndim - 2))
    all_quiet = quiet.all(axis=1)
    lead = np.where(all_quiet, block, np.argmin(quiet, axis=1))
    tail = np.where(all_quiet, block, np.argmin(quiet[:, ::-1], axis=1))
    pad = block - shape_n
    lead = np.minimum(lead, shape_n)
    trail = np.clip(tail - pad, 0, shape_n)  # the padding counts as quiet at the end: take it off
    return lead.astype(np.int32), trail.astype(np.int32)


class Silence(RunDetector):
    """Runs of quiet samples (all channels, or each channel) lasting >= min_duration_s: one track for all
    channels at once, or one per channel; a run begins and ends to the sample inside a block."""

    name = "silence"
    version = "1.1"  # 1.1: per-channel events carry the channel in their check (their identity)
    inputs = (AUDIO,)
    Options = SilenceOptions
    stage1_kind = AUDIO
    stage1_outputs = {"silence_lead": pa.list_(pa.int32()),   # per channel: quiet samples at the block's start
                      "silence_trail": pa.list_(pa.int32()),  # ... and at its end
                      "silence_lead_all": pa.int32(),         # the same where every channel is quiet at once
                      "silence_trail_all": pa.int32(),
                      "silence_peak": pa.list_(pa.float32())}  # per channel: largest |sample|, fraction of full scale

    def stage1(self, blocks: AudioBlocks) -> dict:
        """Per 10 ms block: quiet samples at its start/end per channel and over all channels, and its peak.

        silence_lead / silence_trail: (nb, ch) int32 leading / trailing quiet samples of each channel;
        silence_lead_all / silence_trail_all: (nb,) the same where every channel is quiet at once;
        silence_peak: (nb, ch) float32 largest |sample| of the block as a fraction of full scale.
        """
        raw = blocks.raw[blocks.context:].astype(np.int32)
        nb, ch = len(blocks.t), blocks.channels
        if nb == 0:
            empty = np.zeros((0, ch), np.int32)
            return {"silence_lead": empty, "silence_trail": empty, "silence_lead_all": np.zeros(0, np.int32),
                    "silence_trail_all": np.zeros(0, np.int32), "silence_peak": np.zeros((0, ch), np.float32)}
        level = noise_amplitude(self.options.noise) * FULL_SCALE
        mag = np.abs(raw)
        quiet = mag < level  # strictly below, as silencedetect
        pad = nb * blocks.block - quiet.shape[0]
        quiet_b = blocks.blocks_of(quiet)
        if pad:
            quiet_b[-1, blocks.block - pad:] = True
        n = blocks.n.astype(np.int64)
        lead, trail = _edge_runs(quiet_b, n)
        lead_all, trail_all = _edge_runs(quiet_b.all(axis=2), n)
        peak = blocks.blocks_of(mag).max(axis=1).astype(np.float32) / FULL_SCALE
        return {"silence_lead": lead, "silence_trail": trail, "silence_lead_all": lead_all,
                "silence_trail_all": trail_all, "silence_peak": peak}

    def _tracks(self, rows: Features):
        if self.options.per_channel:
            return rows["silence_lead"], rows["silence_trail"], rows["silence_peak"]
        return (rows["silence_lead_all"][:, None], rows["silence_trail_all"][:, None],
                rows["silence_peak"].max(axis=1, keepdims=True))

    def row_scores(self, rows: Features) -> np.ndarray:
        """A block wholly quiet scores its peak (the loudest sample of the run's whole blocks)."""
        lead, _trail, peak = self._tracks(rows)
        return np.where(lead >= rows["n"][:, None], peak.astype(np.float64), np.nan)

    def row_edges(self, rows: Features) -> tuple[np.ndarray, np.ndarray]:
        lead, trail, _peak = self._tracks(rows)
        t, n, rate = rows["t"][:, None], rows["n"][:, None], rows["rate"][:, None]
        return t + lead / rate, np.where(trail > 0, t + (n - trail) / rate, np.nan)

    def end_of_stream(self, state: RunState, end_s: float) -> float:
        """A silence still open ends where the audio ends (silencedetect's last silence_end), not at end_s,
        which may be later when the video runs on."""
        return state.seen_end if state.seen_end is not None else float(end_s)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        o = self.options
        amp = noise_amplitude(o.noise)
        # the loudest sample in the run's whole blocks; a run with none is only known to be below noise
        score = run.peak if run.n else amp
        details = {"duration_s": round(end - start, 6),
                   "peak_dbfs": round(20 * math.log10(score), 2) if score > 0 else None,
                   "noise_db": round(20 * math.log10(amp), 2) if amp > 0 else None,
                   "channel": track if o.per_channel else "all"}
        # per channel, the channel is part of the event's identity: two channels silent from the same
        # instant are two events (two ids), not one reported twice
        return Event(self.name, float(start), float(end), score=float(score), threshold=amp, severity=MAJOR,
                     check=f"channel {track}" if o.per_channel else "", details=details)
