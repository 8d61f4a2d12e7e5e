"""clipping: samples stuck at full scale in runs (a signal driven past what the format can carry).

Reference: FFmpeg astats' Peak_count and Flat_factor (how many samples sit at the peak, and in how long
consecutive runs) and the mastering convention that counts an "over" when a few consecutive samples sit at
full scale (3 is the common default of digital peak meters). Audio arrives as int16 (full scale +32767 /
-32768; a float source that went past full scale saturates there on conversion).

A sample is clipped when its magnitude is at or above clip_level of full scale; a clipped run is at least
min_run consecutive clipped samples of one sign. One sample at full scale, or a loud signal peaking just
under full scale (-0.1 dBFS), makes no run. Stage 1 describes each 10 ms block per channel by the signed
length of the run touching its start and its end, and by the runs inside it; stage 2 joins runs across
blocks (so a run is measured exactly however the stream was cut), then merges runs of all channels that
are less than merge_gap_s apart into one event, which needs at least min_runs runs in one channel: a lossy
codec can overshoot full scale once or twice on a sharp transient of unclipped audio, whereas a clipped
passage clips on every waveform peak, so tens of runs per second.

Dense audio (music) driven past full scale in floating point and then encoded by FFmpeg's AAC encoder
comes out limited rather than clipped (the encoder's clip avoidance scales loud frames down) and is not
reported; speech treated so still saturates on decoding and is (docs/detectors_audio.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from detectors.base import (AUDIO, MINOR, REPORTABLE_AFTER, Event, Options, Run, RunDetector, RunState,
                            gathered_reportable_after, option)
from detectors.segments import AudioBlocks
from detectors.table import Features

INT16_MAX = 32767


@dataclass(frozen=True)
class ClippingOptions(Options):
    clip_level: float = option(0.999, "a sample is clipped at or above this fraction of full scale "
                               "(0.999 = -0.009 dBFS: full scale within 1-2 int16 steps)", min=0.5, max=1.0)
    min_run: int = option(3, "consecutive clipped samples of one sign that make a clipped run", min=1,
                          max=10000)
    merge_gap_s: float = option(1.0, "clipped runs closer than this (s) belong to one event (bridges the "
                                "pauses between words and sentences of clipped speech)", min=0.0, max=60.0)
    min_runs: int = option(3, "clipped runs an event needs in one channel (isolated codec overshoots on a "
                           "transient are not clipping)", min=1, max=100000)


def clip_threshold(clip_level: float) -> int:
    """The int16 magnitude at or above which a sample counts as clipped."""
    return max(1, int(math.ceil(clip_level * INT16_MAX - 1e-9)))


@dataclass
class ClippingState(RunState):
    # runs: per channel c, the clipped run at positive (track 2c) and negative (2c + 1) full scale going on
    event: dict | None = None   # the event being gathered: start, end, runs, per-channel clipped samples, ...
    rate: int | None = None     # the last sample rate seen


class Clipping(RunDetector):
    """Clipped runs (>= min_run samples at full scale) merged into events across channels.

    Runs are tracked to the sample on two tracks per channel (positive and negative full scale: a run
    that flips sign is two runs); a closed run, and each block's runs lying inside it, are gathered into
    the event, which is complete once merge_gap_s has passed without a run."""

    name = "clipping"
    version = "1.0"
    inputs = (AUDIO,)
    Options = ClippingOptions
    State = ClippingState
    _PER_CHANNEL = pa.list_(pa.int32())
    stage1_kind = AUDIO
    stage1_outputs = {"clipping_lead": _PER_CHANNEL, "clipping_trail": _PER_CHANNEL, "clipping_inner": _PER_CHANNEL,
                      "clipping_inner_runs": _PER_CHANNEL, "clipping_inner_longest": _PER_CHANNEL,
                      "clipping_first": _PER_CHANNEL, "clipping_last": _PER_CHANNEL}

    def stage1(self, blocks: AudioBlocks) -> dict:
        """Per 10 ms block and channel (all (nb, ch) int32):

        clipping_lead / clipping_trail: signed length of the clipped run touching the block's first / last
          sample (+ at positive full scale, - at negative, 0 none; equal to +-n when the whole block is one run);
        clipping_inner: clipped samples in runs of >= min_run lying strictly inside the block;
        clipping_inner_runs / clipping_inner_longest: how many such runs, and the longest (samples);
        clipping_first / clipping_last: sample offset where the first of those inner runs starts / the last
          ends (exclusive), -1 when there is none.
        """
        nb, ch, block = len(blocks.t), blocks.channels, blocks.block
        raw = blocks.raw[blocks.context:].astype(np.int32)
        out = {k: np.zeros((nb, ch), np.int32) for k in
               ("clipping_lead", "clipping_trail", "clipping_inner", "clipping_inner_runs", "clipping_inner_longest",
                "clipping_first", "clipping_last")}
        out["clipping_first"][:] = -1
        out["clipping_last"][:] = -1
        if nb == 0:
            return out
        level = clip_threshold(self.options.clip_level)
        state = (raw >= level).astype(np.int8) - (raw <= -level).astype(np.int8)  # +1, -1 or 0 per sample
        s = blocks.blocks_of(state)                     # (nb, block, ch), zero past a short last block
        n = blocks.n.astype(np.int64)
        total = nb * block
        for c in range(ch):
            flat = s[:, :, c].reshape(-1)
            # runs of equal state, broken at every block start
            change = np.ones(total, bool)
            change[1:] = flat[1:] != flat[:-1]
            change[::block] = True
            starts = np.flatnonzero(change)
            lengths = np.diff(np.append(starts, total))
            signs = flat[starts]
            b = starts // block
            off = starts - b * block
            end_off = off + lengths
            clipped = signs != 0
            at_start = clipped & (off == 0)
            at_end = clipped & (end_off == n[b])
            out["clipping_lead"][b[at_start], c] = (signs[at_start] * lengths[at_start]).astype(np.int32)
            out["clipping_trail"][b[at_end], c] = (signs[at_end] * lengths[at_end]).astype(np.int32)
            inner = clipped & ~at_start & ~at_end & (lengths >= self.options.min_run)
            if inner.any():
                bi = b[inner]
                np.add.at(out["clipping_inner"][:, c], bi, lengths[inner].astype(np.int32))
                np.add.at(out["clipping_inner_runs"][:, c], bi, 1)
                longest = np.zeros(nb, np.int64)
                np.maximum.at(longest, bi, lengths[inner])
                out["clipping_inner_longest"][:, c] = longest
                first = np.full(nb, block + 1, np.int64)
                np.minimum.at(first, bi, off[inner])
                last = np.full(nb, -1, np.int64)
                np.maximum.at(last, bi, end_off[inner])
                has = first <= block
                out["clipping_first"][has, c] = first[has]
                out["clipping_last"][has, c] = last[has]
        return out

    # -- runs on two tracks per channel ----------------------------------------------------------------

    @staticmethod
    def _signed(x: np.ndarray) -> np.ndarray:
        """(nb, ch) signed run lengths -> (nb, 2 ch): the positive part, the negative part, per channel."""
        return np.stack([np.maximum(x, 0), np.maximum(-x, 0)], axis=2).reshape(len(x), -1)

    def row_scores(self, rows: Features) -> np.ndarray:
        lead = self._signed(rows["clipping_lead"])
        return np.where(lead >= rows["n"][:, None], 1.0, np.nan)

    def row_edges(self, rows: Features) -> tuple[np.ndarray, np.ndarray]:
        lead, trail = self._signed(rows["clipping_lead"]), self._signed(rows["clipping_trail"])
        t, n, rate = rows["t"][:, None], rows["n"][:, None], rows["rate"][:, None]
        return t + lead / rate, np.where(trail > 0, t + (n - trail) / rate, np.nan)

    def process(self, state: ClippingState, kind: str, rows: Features) -> list[Event]:
        if kind != AUDIO or not len(rows):
            return []
        state.rate = int(rows["rate"][-1])
        return super().process(state, kind, rows)

    def open_events(self, state: ClippingState) -> list[Event]:
        """The event being gathered, once one channel has min_runs runs (raised at the end of the run that
        made it so) and no run still going on began before it (which would move its start, so its id)."""
        ev = state.event
        if ev is None or "reportable" not in ev or any(r.start is not None and r.start < ev["start"]
                                                       for r in state.runs):
            return []
        return [self._event(ev, ev["reportable"], state.rate or 1)]

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def end_of_stream(self, state: ClippingState, end_s: float) -> float:
        return state.seen_end if state.seen_end is not None else float(end_s)

    def close_run(self, state: ClippingState, run: Run, end: float, track: int) -> list[Event]:
        """A run on `track` ended at `end`: gather it if it is long enough."""
        start = run.start
        run.off(end, 0.0)
        length = int(round((end - start) * (state.rate or 1)))
        if length >= self.options.min_run:
            return self._add_runs(state, track // 2, start, end, length, 1, length)
        return []

    def after_row(self, state: ClippingState, rows: Features, k: int) -> list[Event]:
        """Block k's runs lying inside it, then whether the gathered event is complete: merge_gap_s has
        passed with no run, closed or still open."""
        events = []
        tk, nk, rk = float(rows["t"][k]), int(rows["n"][k]), int(rows["rate"][k])
        inner = rows["clipping_inner"][k]
        for c in np.flatnonzero(inner).tolist():
            events += self._add_runs(state, c, tk + int(rows["clipping_first"][k][c]) / rk,
                                     tk + int(rows["clipping_last"][k][c]) / rk, int(inner[c]),
                                     int(rows["clipping_inner_runs"][k][c]), int(rows["clipping_inner_longest"][k][c]))
        ev = state.event
        if ev is not None:
            horizon = ev["end"] + self.options.merge_gap_s
            if tk + nk / rk >= horizon and all(r.start is None or r.start >= horizon for r in state.runs):
                events += self._emit(state)
        return events

    def after_row_rows(self, rows: Features) -> np.ndarray:
        return rows["clipping_inner"].any(axis=1)   # blocks with runs inside them

    def idle(self, state: ClippingState) -> bool:
        return state.event is None                  # an event being gathered waits for its merge gap

    def close_layout(self, state: ClippingState, at: float) -> list[Event]:
        """Another channel count from here on: the runs and the event being gathered end here."""
        return super().close_layout(state, at) + self._emit(state)

    def finish(self, state: ClippingState, end_s: float) -> list[Event]:
        return super().finish(state, end_s) + self._emit(state)

    def make_event(self, start: float, end: float, run: Run, track: int) -> Event:
        raise NotImplementedError("clipping gathers runs into events (close_run), it reports no run alone")

    # -- events -------------------------------------------------------------------------------------

    def _add_runs(self, state: ClippingState, c: int, start: float, end: float, samples: int, runs: int,
                  longest: int) -> list[Event]:
        """Fold `runs` clipped runs of channel c spanning [start, end) into the event being gathered."""
        events = []
        ev = state.event
        if ev is not None and start >= ev["end"] + self.options.merge_gap_s:
            events += self._emit(state)
            ev = None
        if ev is None:
            channels = len(state.runs) // 2
            ev = state.event = {"start": start, "end": end, "longest": 0, "runs": [0] * channels,
                                "samples": [0] * channels}
        ev["start"] = min(ev["start"], start)
        ev["end"] = max(ev["end"], end)
        ev["runs"][c] += runs
        ev["longest"] = max(ev["longest"], longest)
        ev["samples"][c] += samples
        if "reportable" not in ev and ev["runs"][c] >= self.options.min_runs:
            ev["reportable"] = end
        return events

    def _emit(self, state: ClippingState) -> list[Event]:
        ev, state.event = state.event, None
        if ev is None or "reportable" not in ev:  # fewer than min_runs runs in every channel
            return []
        return [self._event(ev, ev["end"], state.rate or 1)]

    def _event(self, ev: dict, end: float, rate: int) -> Event:
        o = self.options
        duration = end - ev["start"]
        span = max(duration * rate, 1.0) * len(ev["samples"])
        clipped = sum(ev["samples"])
        details = {"duration_s": round(duration, 6), "clipped_share": round(clipped / span, 6),
                   "clipped_samples": clipped, "clipped_samples_per_channel": list(ev["samples"]),
                   "channels": [c for c, v in enumerate(ev["samples"]) if v], "runs_per_channel": list(ev["runs"]),
                   "longest_run_samples": ev["longest"], "clip_level_dbfs": round(20 * math.log10(o.clip_level), 4),
                   REPORTABLE_AFTER: ev["reportable"] - ev["start"]}
        return Event(self.name, float(ev["start"]), float(end), score=float(ev["longest"]),
                     threshold=float(o.min_run), severity=MINOR, details=details)
