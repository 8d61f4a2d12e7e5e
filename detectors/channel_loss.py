"""channel_loss: one channel of a track goes dead while another channel carries programme.

The alarm a live monitor raises most on audio: a cable or an embedder drops one leg of a pair, a 5.1
stream loses its centre (the dialogue), an upmix fills only the front. Silence of the whole track is the
silence detector's event (and a root cause over this one, detectors/alarms.py); this one needs contrast.

Rule (per channel, per 10 ms block, stage 1 gives each channel's block peak and RMS):
- a block of channel c is dead when its peak is below loss_level_db (-70 dBFS by default: digital zero,
  or a few LSB of noise; a live channel's quietest room tone sits around -60 dBFS);
- a dead run of channel c is an event once it has lasted min_duration_s (1 s) and, over the run so far,
  at least min_programme_share of its blocks had another channel at programme level (block RMS at or
  above programme_level_db, -50 dBFS). The event is raised at the first block where both hold (that
  point is in details.reportable_after_s) and ends at the first block where c is alive again.
- The LFE channel of a 5.1/7.1 layout is not watched by default (ignore_lfe): many programmes leave it
  silent on purpose.

Hard negatives: short hard-panned lines (one channel silent for less than min_duration_s), a mono
programme carried on both channels, wide reverberant stereo (no channel dead), pauses with room tone
(above the loss level), all channels silent together (silence, not channel loss).
Block precision: 10 ms; FFmpeg `astats` per channel (Peak_level, RMS_level) measures the same levels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import (AUDIO, MAJOR, REPORTABLE_AFTER, Event, Options, Run, RunDetector, RunState,
                            gathered_reportable_after, option)
from detectors.segments import AudioBlocks
from detectors.table import Features

# FFmpeg's default layout for a channel count, and where the LFE channel sits in it
LFE_INDEX = {"2.1": 2, "5.1": 3, "6.1": 3, "7.1": 3, "5.1(side)": 3, "7.1(wide)": 3}
DEFAULT_LAYOUT = {3: "2.1", 6: "5.1", 7: "6.1", 8: "7.1"}


@dataclass(frozen=True)
class ChannelLossOptions(Options):
    min_duration_s: float = option(1.0, "shortest dead stretch of a channel reported (s)", min=0.05, max=3600.0)
    loss_level_db: float = option(-70.0, "a channel's 10 ms block is dead when its peak is below this (dBFS)",
                                  min=-120.0, max=-20.0)
    programme_level_db: float = option(-50.0, "another channel carries programme in a block when its RMS is "
                                       "at or above this (dBFS)", min=-100.0, max=0.0)
    min_programme_share: float = option(0.25, "share of the dead stretch's blocks in which another channel "
                                        "must carry programme (speech has pauses)", min=0.0, max=1.0)
    ignore_lfe: bool = option(True, "do not watch the LFE channel of 2.1/5.1/6.1/7.1 layouts (often silent on "
                              "purpose)")


def _lfe_index(layout: str, channels: int) -> int | None:
    name = layout if layout in LFE_INDEX else DEFAULT_LAYOUT.get(channels, "")
    return LFE_INDEX.get(name)


class ChannelLoss(RunDetector):
    """Dead runs per channel (block granularity) that coincide with programme on another channel."""

    name = "channel_loss"
    version = "1.0"
    inputs = (AUDIO,)
    Options = ChannelLossOptions
    State = RunState
    stage1_kind = AUDIO
    stage1_outputs = {"channel_peak": pa.list_(pa.float32()),   # per channel: block peak, fraction of full scale
                      "channel_rms": pa.list_(pa.float32()),    # per channel: block RMS, fraction of full scale
                      "channel_watched": pa.list_(pa.bool_())}  # per channel: False for an ignored LFE

    def stage1(self, blocks: AudioBlocks) -> dict:
        nb, ch = len(blocks.t), blocks.channels
        watched = np.ones((nb, ch), bool)
        lfe = _lfe_index(blocks.layout, ch)
        if self.options.ignore_lfe and lfe is not None and lfe < ch:
            watched[:, lfe] = False
        if nb == 0:
            empty = np.zeros((0, ch), np.float32)
            return {"channel_peak": empty, "channel_rms": empty, "channel_watched": watched}
        x = blocks.blocks_of(blocks.body())                     # (nb, block, ch), zero past a short last block
        n = np.maximum(blocks.n, 1).astype(np.float64)[:, None]
        peak = np.abs(x).max(axis=1)
        rms = np.sqrt(np.square(x, dtype=np.float64).sum(axis=1) / n)
        return {"channel_peak": peak.astype(np.float32), "channel_rms": rms.astype(np.float32),
                "channel_watched": watched}

    # -- runs: one track per channel --------------------------------------------------------------

    def row_scores(self, rows: Features) -> np.ndarray:
        peak = rows["channel_peak"].astype(np.float64)
        if peak.shape[1] < 2:  # mono: no other channel to compare with
            return np.full(peak.shape, np.nan)
        dead = (peak < 10.0 ** (self.options.loss_level_db / 20.0)) & rows["channel_watched"]
        return np.where(dead, peak, np.nan)

    def on_row(self, run: Run, rows: Features, k: int, track: int) -> None:
        o = self.options
        rms = rows["channel_rms"][k]
        others = np.delete(rms, track)
        extra = run.extra
        extra["blocks"] = extra.get("blocks", 0) + 1
        carried = bool(others.size and others.max() >= 10.0 ** (o.programme_level_db / 20.0))
        extra["programme"] = extra.get("programme", 0) + int(carried)
        if carried:
            extra["other_rms"] = max(extra.get("other_rms", 0.0), float(others.max()))
        end = float(rows["t"][k] + rows["n"][k] / rows["rate"][k])
        if "reportable_at" not in extra and end - run.start >= o.min_duration_s - 1e-9 and \
                extra["programme"] >= o.min_programme_share * extra["blocks"] and extra["programme"] > 0:
            extra["reportable_at"] = end

    def close_run(self, state: RunState, run: Run, end: float, track: int) -> list[Event]:
        closed = run.off(end, self.options.min_duration_s)
        if closed is None or "reportable_at" not in closed[2].extra:
            return []
        return [self.make_event(*closed, track)]

    def open_events(self, state: RunState) -> list[Event]:
        return [self.make_event(run.start, run.extra["reportable_at"], run, c) for c, run in enumerate(state.runs)
                if run.start is not None and "reportable_at" in run.extra]

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def end_of_stream(self, state: RunState, end_s: float) -> float:
        return state.seen_end if state.seen_end is not None else float(end_s)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        extra = run.extra
        peak = run.peak
        details = {"channel": track, "channels": [track], "duration_s": round(end - start, 6),
                   "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else None,
                   "programme_share": round(extra.get("programme", 0) / max(extra.get("blocks", 1), 1), 3),
                   "other_channels_rms_dbfs": round(20 * math.log10(extra["other_rms"]), 2)
                   if extra.get("other_rms") else None,
                   REPORTABLE_AFTER: extra["reportable_at"] - start}
        return Event(self.name, float(start), float(end), score=float(peak),
                     threshold=10.0 ** (self.options.loss_level_db / 20.0), severity=MAJOR,
                     check=f"channel {track}", details=details)
