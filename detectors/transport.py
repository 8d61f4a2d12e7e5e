"""transport: MPEG-TS transport errors, the checks of ETSI TR 101 290 a live monitor raises first.

The converter checks the transport of MPEG-TS sources (files, udp://) on the packets it reads and sends its
notes with each video segment (avwatch/convert/transport.py); this detector turns them into events:

  check            TR 101 290                      event
  sync_loss        1.1 TS_sync_loss                a burst of sync losses
  sync_byte        1.2 Sync_byte_error             a burst of packets with a wrong sync byte
  pat              1.3 PAT_error                   the PAT absent for more than pat_max_interval_s (0.5 s)
  continuity       1.4 Continuity_count_error      a burst of continuity errors on one PID (lost, repeated
                                                   or reordered packets)
  pmt              1.5 PMT_error                   a PMT absent for more than pmt_max_interval_s (0.5 s)
  pid              1.6 PID_error                   a video or audio PID of a programme absent for more
                                                   than pid_max_interval_s (1 s)
  tei              2.1 Transport_error             a burst of packets with the transport_error_indicator
  pcr              2.3 PCR_repetition/discontinuity consecutive PCRs more than pcr_max_interval_s (0.1 s)
                                                   apart, or going back, without a discontinuity indicator
  pts              2.5 PTS_error                   consecutive PTS of a PID more than pts_max_interval_s
                                                   (0.7 s) apart
  crc              2.2 CRC_error                   PAT or PMT sections whose CRC-32 does not match
  pat_invalid      1.3a PAT_error_2                another table on PID 0, or a scrambled PAT
  pmt_invalid      1.5a PMT_error_2                a scrambled PMT

Counted errors closer than merge_gap_s are one event per check and PID (a burst of lost packets is one
alarm, with its count), raised at the first error. An absence is raised once it has lasted its limit and
closed when the table or PID returns (or at the end of the stream). Times are the transport's clock
(PCR), which runs ahead of the pictures by the decoder's buffer delay (typically 0.1-1 s).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import (MAJOR, MINOR, REPORTABLE_AFTER, VIDEO, Detector, Event, Options, State,
                            gathered_reportable_after, option)
from detectors.segments import VideoFrames
from detectors.table import Features

TR101290 = {"sync_loss": "1.1 TS_sync_loss", "sync_byte": "1.2 Sync_byte_error", "pat": "1.3 PAT_error",
            "continuity": "1.4 Continuity_count_error", "pmt": "1.5 PMT_error", "pid": "1.6 PID_error",
            "tei": "2.1 Transport_error", "pcr": "2.3 PCR_repetition/discontinuity_error", "pts": "2.5 PTS_error",
            "crc": "2.2 CRC_error", "pat_invalid": "1.3a PAT_error_2", "pmt_invalid": "1.5a PMT_error_2"}
COUNTED = ("sync_loss", "sync_byte", "continuity", "tei", "crc", "pat_invalid", "pmt_invalid")  # errors in bursts
ABSENCES = ("pat", "pmt", "pid")                           # tables and PIDs that must keep arriving
INTERVALS = ("pcr", "pts")                                 # clock values that must not jump
EPS = 1e-6   # s: a gap of exactly a limit (a PCR every 100 ms) is within it
PRIORITY_1 = ("sync_loss", "sync_byte", "pat", "continuity", "pmt", "pid", "pat_invalid", "pmt_invalid")


@dataclass(frozen=True)
class TransportOptions(Options):
    pat_max_interval_s: float = option(0.5, "PAT_error: the PAT absent for longer than this (s)", min=0.25, max=60.0)
    pmt_max_interval_s: float = option(0.5, "PMT_error: a PMT absent for longer than this (s)", min=0.25, max=60.0)
    pid_max_interval_s: float = option(1.0, "PID_error: a programme's video or audio PID absent for longer than "
                                            "this (s)", min=0.5, max=600.0)
    pcr_max_interval_s: float = option(0.1, "PCR error: consecutive PCRs further apart than this (s)",
                                       min=0.1, max=10.0)
    pts_max_interval_s: float = option(0.7, "PTS_error: consecutive PTS of a PID further apart than this (s)",
                                       min=0.35, max=60.0)
    merge_gap_s: float = option(1.0, "errors of a check and PID closer than this (s) are one event",
                                min=0.0, max=60.0)
    report_pcr: bool = option(True, "report PCR errors (off for sources re-stamped downstream)")
    report_pts: bool = option(True, "report PTS errors")


@dataclass
class TransportState(State):
    bursts: dict = field(default_factory=dict)    # "check|pid" -> start, end, count, reportable_at, detail
    absent: dict = field(default_factory=dict)    # "check|pid" -> [since (media s), for how long (s)], from the
    #                                               latest segment (judged on the transport's own clock)
    streams: dict = field(default_factory=dict)   # pid (str) -> what it carries ("video h264")


def _key(check: str, pid) -> str:
    return f"{check}|{'' if pid is None else int(pid)}"


def _unkey(key: str) -> tuple[str, int | None]:
    check, pid = key.split("|")
    return check, (int(pid) if pid else None)


class Transport(Detector):
    name = "transport"
    version = "1.0"
    inputs = (VIDEO,)
    Options = TransportOptions
    State = TransportState
    stage1_kind = VIDEO
    stage1_outputs = {"transport_notes": pa.binary()}   # the segment's notes as JSON on its first frame, else empty

    def stage1(self, frames: VideoFrames) -> dict:
        out = np.full(len(frames.t), b"", dtype=object)
        if frames.transport is not None and len(out):   # the bytes per second are the bitrate check's
            notes = [n for n in frames.transport.get("notes") or [] if n["check"] != "rate"]
            out[0] = json.dumps({**frames.transport, "notes": notes}, sort_keys=True).encode()
        return {"transport_notes": out}

    # -- stage 2 ---------------------------------------------------------------------------------

    def _limit(self, check: str) -> float:
        return float(getattr(self.options, f"{check}_max_interval_s"))

    def _watched(self, check: str) -> bool:
        return not ((check == "pcr" and not self.options.report_pcr) or (check == "pts" and not self.options.report_pts))

    def process(self, state: TransportState, kind: str, rows: Features) -> list[Event]:
        if kind != VIDEO or not len(rows) or "transport_notes" not in rows:
            return []
        events = []
        t, dur, blobs = rows["t"].tolist(), rows["frame_dur"].tolist(), rows["transport_notes"]
        for k in range(len(t)):
            blob = blobs[k]
            if blob:
                seg = json.loads(bytes(blob))
                state.streams.update(seg.get("streams") or {})
                for note in sorted(seg.get("notes") or [], key=lambda n: n["t"]):
                    events += self._note(state, note, dur[k])
                state.absent = {_key(a["check"], a.get("pid")): [float(a["since"]), float(a["for_s"])]
                                for a in seg.get("absent") or [] if self._watched(a["check"])}
            events += self._close_bursts(state, t[k])
        return events

    def _note(self, state: TransportState, note: dict, dur: float) -> list[Event]:
        check, pid = note["check"], note.get("pid")
        if not self._watched(check):
            return []
        if check in ABSENCES:
            start, end = float(note["start"]), float(note["end"])
            state.absent.pop(_key(check, pid), None)
            limit = self._limit(check)
            if end - start <= limit + EPS:   # TR 101 290: "more than" the limit
                return []
            return [self._event(check, pid, start, end, state, {"absent_s": round(end - start, 3),
                                                                 REPORTABLE_AFTER: limit})]
        if check in INTERVALS:
            start, end = float(note["start"]), float(note["end"])
            if 0 <= end - start <= self._limit(check) + EPS:
                return []
            span = (start, max(end, start) + (dur if end <= start else 0.0))
            detail = {"gap_s": round(end - start, 3)} if end > start else {"went_back_s": round(start - end, 3)}
            return self._count(state, check, pid, span, 1, dur, detail)
        # counted errors (one note per read with its count)
        at = float(note["t"])
        return self._count(state, check, pid, (at, at + dur), int(note.get("count", 1)), dur, {})

    def _count(self, state, check, pid, span, count, dur, detail) -> list[Event]:
        events = []
        key = _key(check, pid)
        burst = state.bursts.get(key)
        if burst is not None and span[0] - burst["end"] >= self.options.merge_gap_s - 1e-9:
            events += self._close(state, key)
            burst = None
        if burst is None:
            burst = state.bursts[key] = {"start": span[0], "end": span[1], "count": 0,
                                         "reportable_at": span[0] + dur, "detail": {}}
        burst["end"] = max(burst["end"], span[1])
        burst["count"] += count
        for name, value in detail.items():   # the largest gap or jump of the burst
            burst["detail"][name] = max(burst["detail"].get(name, 0.0), value)
        return events

    def _close_bursts(self, state: TransportState, now: float) -> list[Event]:
        events = []
        for key in [k for k, b in state.bursts.items() if now - b["end"] >= self.options.merge_gap_s - 1e-9]:
            events += self._close(state, key)
        return events

    def _close(self, state: TransportState, key: str) -> list[Event]:
        burst = state.bursts.pop(key, None)
        if burst is None:
            return []
        check, pid = _unkey(key)
        return [self._burst_event(state, check, pid, burst, burst["end"])]

    def _burst_event(self, state, check, pid, burst, end) -> Event:
        details = {"errors": burst["count"], **burst["detail"],
                   REPORTABLE_AFTER: round(burst["reportable_at"] - burst["start"], 6)}
        return self._event(check, pid, burst["start"], end, state, details, score=float(burst["count"]))

    def _event(self, check: str, pid, start: float, end: float, state: TransportState, details: dict,
               score: float | None = None) -> Event:
        info = {"tr101290": TR101290[check]}
        if pid is not None:
            info["pid"] = int(pid)
            info["pid_hex"] = f"0x{int(pid):04X}"
            carries = "PAT" if int(pid) == 0 else state.streams.get(str(int(pid)))
            if carries:
                info["carries"] = carries
        info["duration_s"] = round(end - start, 6)
        info.update(details)
        limit = self._limit(check) if check in ABSENCES + INTERVALS else 1.0
        return Event(self.name, float(start), float(end), score=float(end - start) if score is None else score,
                     threshold=limit, severity=MAJOR if check in PRIORITY_1 else MINOR,
                     check=(check if pid is None or check == "pat" else f"pid {int(pid)}" if check == "pid"
                            else f"{check} pid {int(pid)}"), details=info)

    # -- open alarms and the end -------------------------------------------------------------------

    def open_events(self, state: TransportState) -> list[Event]:
        out = [self._burst_event(state, *_unkey(key), burst, burst["reportable_at"])
               for key, burst in state.bursts.items()]
        for key, (since, lasted) in state.absent.items():   # those that have lasted their limit
            check, pid = _unkey(key)
            limit = self._limit(check)
            if lasted > limit + EPS:
                out.append(self._event(check, pid, since, since + limit, state, {REPORTABLE_AFTER: limit}))
        return out

    def reportable_after(self, event: Event) -> float | None:
        return gathered_reportable_after(event)

    def heartbeat(self, state: TransportState, media_time_s: float) -> list[Event]:
        return self._close_bursts(state, media_time_s)

    def finish(self, state: TransportState, end_s: float) -> list[Event]:
        events = [e for key in list(state.bursts) for e in self._close(state, key)]
        for key, (since, lasted) in sorted(state.absent.items()):
            check, pid = _unkey(key)
            if lasted > self._limit(check) + EPS:   # on the transport's clock; the event runs to the stream's end
                events.append(self._event(check, pid, since, max(end_s, since + lasted), state,
                                          {"absent_s": round(max(end_s - since, lasted), 3), "until": "end of stream",
                                           REPORTABLE_AFTER: self._limit(check)}))
        state.absent = {}
        return events
