"""MPEG-TS transport checks on the bytes the converter already reads (ETSI TR 101 290).

The converter decodes MPEG-TS sources (files, udp://) through a reader that hands every byte, once and in
order, to a `TsAnalyzer` before FFmpeg sees it (avwatch/convert/ts_input.py), so the transport is checked on
the packets received, without a second read. The analyser measures; the `transport` detector decides
(detectors/transport.py): it reports

  sync_loss    1.1 TS_sync_loss: two or more consecutive packets without the 0x47 sync byte; found again
               after five good ones (a single bad sync byte is 1.2 Sync_byte_error, reported as `sync_byte`)
  continuity   1.4 Continuity_count_error: a packet of a PID out of order or lost (one duplicate allowed,
               the adaptation field's discontinuity indicator honoured), counted per PID
  tei          2.1 Transport_error: the transport_error_indicator set by a demodulator or a gateway
  pcr          2.3 PCR_repetition/discontinuity: consecutive PCR values further apart than allowed (or going
               back) without a discontinuity indicator
  pts          2.5 PTS_error: consecutive PTS of a PID's PES further apart than allowed
  crc          2.2 CRC_error: a PAT or PMT section whose CRC-32 does not match (not counted as arriving)
  pat_invalid  1.3a: a section other than a PAT on PID 0, or a scrambled PAT; pmt_invalid 1.5a: a scrambled PMT
  rate         the bytes of each elementary PID per second of the transport's clock (the `bitrate` check)
and records when the PAT (1.3), each PMT (1.5) and each elementary PID of a programme (1.6) arrive, so that
their absences can be measured: a finished gap as a note, an unfinished one as 'absent since'.

Every note carries the time it happened on the transport's clock (the last PCR, which runs ahead of the
pictures by the decoder's buffer delay, typically 0.1-1 s), in seconds on the 90 kHz scale PTS use, so
that subtracting the source's start gives media time. Header fields are read with numpy over whole
reads; only the packets that start a table or a PES, or carry a PCR, are parsed one by one.
"""
from __future__ import annotations

import time

import numpy as np

PACKET = 188
SYNC = 0x47
NULL_PID = 0x1FFF
RESYNC_PACKETS = 5          # TR 101 290 1.1: sync is found again after five consecutive sync bytes
PTS_HZ = 90000.0

# Smallest gaps the analyser notes (half of TR 101 290's limits): the detector's thresholds cannot go below.
NOTE_FLOOR_S = {"pat": 0.25, "pmt": 0.25, "pid": 0.5, "pcr": 0.1, "pts": 0.35}  # pcr: the limit itself (FFmpeg
# muxes a PCR every 20-80 ms; noting every interval above 40 ms would fill the records)

EPS = 1e-6                 # s: clock values are 90 kHz ticks as floats; a gap of exactly a limit is within it
DUPLICATE_WINDOW = 32      # packets: a duplicate follows the packet it repeats this closely
MAX_PENDING_NOTES = 20000  # notes waiting for a frame to carry them; beyond this they are counted, not kept

# Elementary stream types of a PMT that a monitor watches (ISO/IEC 13818-1 table 2-34 and common extensions).
VIDEO_TYPES = {0x01: "mpeg1video", 0x02: "mpeg2video", 0x10: "mpeg4", 0x1B: "h264", 0x24: "hevc", 0x42: "cavs",
               0xD1: "dirac", 0xEA: "vc1"}
AUDIO_TYPES = {0x03: "mp1/mp2", 0x04: "mp2", 0x0F: "aac", 0x11: "aac-latm", 0x81: "ac3", 0x87: "eac3", 0x06: "private"}


class TsAnalyzer:
    """Feed it a transport stream's bytes in order (`feed`); take its notes (`take_notes`) and the absences
    going on (`absent`). Times are transport-clock seconds (see the module's doc)."""

    def __init__(self):
        self._buf = b""
        self._synced = False
        self._bad_sync = 0
        self._cc: dict[int, int] = {}        # pid -> last continuity counter
        self._last_packet: dict[int, bytes] = {}  # pid -> its last packet (a duplicate repeats it exactly)
        self._duplicate: dict[int, bool] = {}    # pid -> its last packet was a duplicate
        self._rate_second: int | None = None     # the clock's whole second being counted, and its bytes per PID
        self._rate_bytes: dict[int, int] = {}
        self._last_at: dict[int, int] = {}       # pid -> its last packet's number in the stream
        self._pmt_pids: dict[int, int] = {}   # PMT pid -> program number
        self.streams: dict[int, str] = {}     # elementary pid -> "video h264" / "audio aac"
        self._seen: dict[tuple, float] = {}   # ("pat", 0) / ("pmt", pid) / ("pid", pid) -> last arrival
        self._last_pcr: float | None = None
        self._last_pts: dict[int, float] = {}
        self.clock: float | None = None       # the transport's clock: the last PCR seen (s, unwrapped)
        self._notes: list[dict] = []
        self._unclocked: list[dict] = []      # notes from before the first PCR, stamped when it comes
        self.packets = 0
        self.keep_notes = True                # off when nobody takes them (no frames to carry them)
        self.dropped_notes = 0
        self.cpu_s = 0.0                      # CPU spent here (what the checks cost the converter)
        self.counts = {"sync_loss": 0, "sync_byte": 0, "continuity": 0, "tei": 0, "crc": 0, "pat_invalid": 0,
                       "pmt_invalid": 0}

    # -- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        started = time.thread_time()
        try:
            self._feed(data)
        finally:
            self.cpu_s += time.thread_time() - started

    def _feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else bytes(data)
        pos = 0
        while True:
            if not self._synced:
                found = _find_sync(buf, pos)
                if found is None:  # keep the tail that may hold the start of a run of sync bytes
                    pos = max(pos, len(buf) - PACKET * RESYNC_PACKETS)
                    break
                pos, self._synced, self._bad_sync = found, True, 0
            n = (len(buf) - pos) // PACKET
            if n == 0:
                break
            packets = np.frombuffer(buf, np.uint8, n * PACKET, pos).reshape(n, PACKET)
            bad = np.flatnonzero(packets[:, 0] != SYNC)
            good_until = n if len(bad) == 0 else int(bad[0])
            if good_until:
                self._bad_sync = 0
                self._packets(packets[:good_until])
                pos += good_until * PACKET
            if good_until == n:
                break
            # packet at pos has no sync byte: one is a sync byte error; two in a row lose sync
            if good_until + 1 >= n:   # cannot tell yet: wait for the next packet
                break
            if buf[pos + PACKET] != SYNC:
                self._note({"check": "sync_loss"})
                self.counts["sync_loss"] += 1
                self._synced = False
                pos += 1
                continue
            self._note({"check": "sync_byte"})
            self.counts["sync_byte"] += 1
            pos += PACKET   # skip the damaged packet, keep the alignment
        self._buf = buf[pos:]

    def discontinuity(self) -> None:
        """The source says its counters and clocks restart here (an HLS EXT-X-DISCONTINUITY): judge what
        follows on its own. Bytes held for a partial packet are dropped with the old stream."""
        self._buf = b""
        self._synced = False
        self._cc, self._last_packet, self._duplicate, self._last_at = {}, {}, {}, {}
        self._last_pcr, self._last_pts = None, {}
        self._seen = {key: None for key in self._seen}
        self.clock = None

    def _packets(self, p: np.ndarray) -> None:
        b1, b3 = p[:, 1], p[:, 3]
        pid = ((b1 & 0x1F).astype(np.int32) << 8) | p[:, 2]
        tei = (b1 & 0x80) != 0
        pusi = (b1 & 0x40) != 0
        afc = (b3 >> 4) & 3
        cc = b3 & 0x0F
        has_af = (afc & 2) != 0
        af_len = np.where(has_af, p[:, 4], 0)
        af_flags = np.where(has_af & (af_len > 0), p[:, 5], 0)
        discontinuity = (af_flags & 0x80) != 0
        has_pcr = ((af_flags & 0x10) != 0) & (af_len >= 7)
        has_payload = (afc & 1) != 0
        cc_error = self._continuity(p, pid, cc, has_payload, discontinuity, tei)
        # the packets parsed one by one, in order (the clock moves at each PCR, so notes get the time of
        # the PCR before them): PCRs, table and PES starts, arrivals of watched PIDs, and errors
        interesting = has_pcr | pusi | tei | cc_error | self._arrivals(pid, has_pcr)
        clock_before, ticks = self.clock, []
        for k in np.flatnonzero(interesting):
            if tei[k]:
                self._count("tei", int(pid[k]))
            if cc_error[k]:
                self._count("continuity", int(pid[k]))
            self._packet(p[k], int(pid[k]), bool(pusi[k]) and not tei[k], bool(has_pcr[k]), bool(discontinuity[k]),
                         int(af_len[k]) if has_af[k] else -1, bool(has_payload[k]))
            if has_pcr[k]:
                ticks.append((int(k), self.clock))
        self._bytes_per_second(pid, clock_before, ticks)
        self.packets += len(p)

    def _bytes_per_second(self, pid: np.ndarray, clock_before: float | None, ticks: list) -> None:
        """Bytes of each elementary PID per whole second of the transport's clock (for the bitrate check): each
        packet counts in the second of the last PCR before it; a second is noted once the clock has left it."""
        if not self.streams or (clock_before is None and not ticks):
            return
        starts = [0] + [k for k, _ in ticks]
        clocks = [clock_before] + [c for _, c in ticks]
        ends = starts[1:] + [len(pid)]
        for a, b, clock in zip(starts, ends, clocks):
            if clock is None or a >= b:
                continue
            second = int(clock // 1)
            if self._rate_second is not None and second != self._rate_second:
                self._note({"check": "rate", "t": float(self._rate_second),
                            "bytes": {str(es): n for es, n in sorted(self._rate_bytes.items())}}, stamp=False)
                self._rate_bytes = {}
            self._rate_second = second
            values, counts = np.unique(pid[a:b], return_counts=True)
            found = dict(zip(values.tolist(), counts.tolist()))
            for es in self.streams:
                self._rate_bytes[es] = self._rate_bytes.get(es, 0) + PACKET * found.get(es, 0)

    def _count(self, check: str, pid: int) -> None:
        """One counted error: added to the last note when it is of the same check and PID at the same clock."""
        self.counts[check] += 1
        last = self._notes[-1] if self._notes else None
        if (last is not None and last["check"] == check and last.get("pid") == pid and self.clock is not None
                and last.get("t") == self.clock):
            last["count"] += 1
            return
        self._note({"check": check, "pid": pid, "count": 1})

    def _arrivals(self, pid: np.ndarray, has_pcr: np.ndarray) -> np.ndarray:
        """Of each elementary PID, the first packet after each PCR in this read (and the first of the read): the
        clock moves only at PCRs, so these give every arrival time the clock can tell apart."""
        mask = np.zeros(len(pid), bool)
        if not self.streams:
            return mask
        pcr_at = np.flatnonzero(has_pcr)
        for es in self.streams:
            hits = np.flatnonzero(pid == es)
            if len(hits):
                interval = np.searchsorted(pcr_at, hits, side="right")
                first = np.concatenate([[True], interval[1:] != interval[:-1]])
                mask[hits[first]] = True
        return mask

    def _continuity(self, p, pid, cc, has_payload, discontinuity, tei) -> np.ndarray:
        """Which packets break their PID's continuity counter."""
        error = np.zeros(len(pid), bool)
        for q in np.unique(pid):
            q = int(q)
            if q == NULL_PID:
                continue
            idx = np.flatnonzero(pid == q)
            c = cc[idx].astype(np.int16)
            prev = self._cc.get(q)
            before = np.concatenate([[c[0] if prev is None else prev], c[:-1]])
            step = (c - before) % 16
            pay = has_payload[idx]
            duplicates: set = set()
            # with a payload the counter steps by one; without one it stays; a discontinuity indicator or a
            # damaged header (TEI) excuses the packet
            ok = np.where(pay, step == 1, step == 0) | discontinuity[idx] | tei[idx]
            if prev is None:
                ok[0] = True
            # a repeated counter with a payload is a duplicate, allowed once, only if the packet is the same
            dup_before = self._duplicate.get(q, False)
            # (and close behind it: a counter that comes round again after 16 lost packets is not one)
            for j in np.flatnonzero(~ok & pay & (step == 0)):
                earlier = p[idx[j - 1]].tobytes() if j > 0 else self._last_packet.get(q)
                gap = idx[j] - idx[j - 1] if j > 0 else self.packets + idx[j] - self._last_at.get(q, -10 ** 9)
                twice = dup_before if j == 0 else bool(j - 1 in duplicates)
                ok[j] = earlier == p[idx[j]].tobytes() and not twice and gap <= DUPLICATE_WINDOW
                if ok[j]:
                    duplicates.add(j)
            self._duplicate[q] = bool(len(idx) - 1 in duplicates)
            duplicates.clear()
            error[idx[~ok]] = True
            self._cc[q] = int(c[-1])
            self._last_packet[q] = p[idx[-1]].tobytes()
            self._last_at[q] = self.packets + int(idx[-1])
        return error

    def _packet(self, pkt: np.ndarray, pid: int, start: bool, has_pcr: bool, discontinuity: bool, af_len: int,
                has_payload: bool) -> None:
        if has_pcr:
            self._pcr(pkt, discontinuity)
        if pid in self.streams:
            self._arrive(("pid", pid))
        if not start or not has_payload or pid == NULL_PID:
            return
        offset = 4 + (af_len + 1 if af_len >= 0 else 0)
        if offset >= PACKET:
            return
        payload = pkt[offset:].tobytes()
        if (pid == 0 or pid in self._pmt_pids) and pkt[3] & 0xC0:   # a PAT or PMT must not be scrambled
            self._count("pat_invalid" if pid == 0 else "pmt_invalid", pid)
            return
        if pid == 0:
            self._pat(payload)
        elif pid in self._pmt_pids:
            self._pmt(pid, payload)
        elif pid in self.streams:
            self._pes(pid, payload)

    # -- tables ----------------------------------------------------------------------------------

    def _section(self, payload: bytes, table_id: int, pid: int, check: str) -> bytes | None:
        """The table section that starts in this payload, if it is whole and sound: a section of another
        table on a PAT/PMT PID is `<check>_invalid` (TR 101 290 1.3a/1.5a), a CRC that does not match is
        `crc` (2.2); neither counts as the table's arrival. A section longer than its packet is taken as
        it is (its CRC cannot be checked here)."""
        pointer = payload[0]
        body = payload[1 + pointer:]
        if len(body) < 8 or body[0] == 0xFF:   # stuffing
            return None
        if body[0] != table_id:
            self._count(f"{check}_invalid", pid)
            return None
        length = ((body[1] & 0x0F) << 8) | body[2]
        if len(body) < 3 + length:
            return body
        section = body[:3 + length]
        if _crc32_mpeg(section) != 0:
            self._count("crc", pid)
            return None
        return section

    def _pat(self, payload: bytes) -> None:
        sec = self._section(payload, 0x00, 0, "pat")
        if sec is None:
            return
        self._arrive(("pat", 0))
        end = min(len(sec), 3 + (((sec[1] & 0x0F) << 8) | sec[2]) - 4)   # without the CRC
        for i in range(8, end - 3, 4):
            program = (sec[i] << 8) | sec[i + 1]
            pmt_pid = ((sec[i + 2] & 0x1F) << 8) | sec[i + 3]
            if program != 0:   # 0: the network PID
                self._pmt_pids[pmt_pid] = program

    def _pmt(self, pid: int, payload: bytes) -> None:
        sec = self._section(payload, 0x02, pid, "pmt")
        if sec is None or len(sec) < 12:
            return
        self._arrive(("pmt", pid))
        end = min(len(sec), 3 + (((sec[1] & 0x0F) << 8) | sec[2]) - 4)
        info_len = ((sec[10] & 0x0F) << 8) | sec[11]
        i = 12 + info_len
        while i + 5 <= end:
            stream_type = sec[i]
            es_pid = ((sec[i + 1] & 0x1F) << 8) | sec[i + 2]
            es_info = ((sec[i + 3] & 0x0F) << 8) | sec[i + 4]
            kind = ("video " + VIDEO_TYPES[stream_type] if stream_type in VIDEO_TYPES else
                    "audio " + AUDIO_TYPES[stream_type] if stream_type in AUDIO_TYPES else None)
            if kind is not None and es_pid not in self.streams:
                self.streams[es_pid] = kind
                if self.clock is not None:
                    self._seen.setdefault(("pid", es_pid), self.clock)
            i += 5 + es_info

    def _pes(self, pid: int, payload: bytes) -> None:
        if len(payload) < 14 or payload[:3] != b"\x00\x00\x01" or not (payload[7] & 0x80):
            return
        b = payload[9:14]
        pts = (((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1) / PTS_HZ
        last = self._last_pts.get(pid)
        if last is not None and pts - last > NOTE_FLOOR_S["pts"] + EPS:
            self._note({"check": "pts", "pid": pid, "start": last, "end": pts}, stamp=False)
        if last is None or pts > last:
            self._last_pts[pid] = pts

    def _pcr(self, pkt: np.ndarray, discontinuity: bool) -> None:
        b = pkt[6:11].astype(np.int64)
        base = (int(b[0]) << 25) | (int(b[1]) << 17) | (int(b[2]) << 9) | (int(b[3]) << 1) | (int(b[4]) >> 7)
        pcr = base / PTS_HZ
        last = self._last_pcr
        if last is not None and not discontinuity and (pcr - last > NOTE_FLOOR_S["pcr"] + EPS or pcr < last):
            self._note({"check": "pcr", "start": last, "end": pcr}, stamp=False)
        first = self.clock is None
        self._last_pcr = pcr
        if self.clock is not None and pcr < self.clock:   # the clock went back (a splice): absences restart
            self._seen = {key: (min(last, pcr) if last is not None else None) for key, last in self._seen.items()}
        self.clock = pcr
        if first:
            for note in self._unclocked:
                note.setdefault("t", pcr)
                self._notes.append(note)
            self._unclocked = []
            for key in list(self._seen):
                if self._seen[key] is None:
                    self._seen[key] = pcr
            for es in self.streams:
                self._seen.setdefault(("pid", es), pcr)

    def _arrive(self, key: tuple) -> None:
        now = self.clock
        last = self._seen.get(key)
        if now is not None and last is not None and now - last > NOTE_FLOOR_S[key[0]] + EPS:
            self._note({"check": key[0], "pid": key[1], "start": last, "end": now}, stamp=False)
        self._seen[key] = now

    def _note(self, note: dict, stamp: bool = True) -> None:
        if "start" in note and not stamp:
            note["t"] = note["start"]
        if not self.keep_notes or len(self._notes) >= MAX_PENDING_NOTES:
            self.dropped_notes += 1
            return
        if stamp:
            if self.clock is None:
                self._unclocked.append(note)
                return
            note["t"] = self.clock
        self._notes.append(note)

    # -- output ----------------------------------------------------------------------------------

    def take_notes(self) -> list[dict]:
        """The notes since the last call, in the order found: {"check", "t"[, "pid", "count", "start", "end"]}."""
        notes, self._notes = self._notes, []
        return notes

    def absent(self) -> list[dict]:
        """The tables and elementary PIDs not seen for longer than their note floor, judged on the transport's
        own clock (the pictures' PTS run later by the buffer delay): {"check", "pid", "since", "for_s"}."""
        now = self.clock
        out = []
        if now is None:
            return out
        for (check, pid), last in self._seen.items():
            if last is not None and now - last > NOTE_FLOOR_S[check] + EPS:
                out.append({"check": check, "pid": pid, "since": last, "for_s": round(now - last, 6)})
        return out

    def pid_names(self) -> dict[int, str]:
        """What each known PID carries: the PAT, the PMTs and the programmes' elementary streams."""
        return {0: "PAT", **{pid: f"PMT of programme {n}" for pid, n in self._pmt_pids.items()}, **self.streams}


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def _crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2 (ISO/IEC 13818-1 annex A); over a whole section, its own CRC included, it is 0."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _find_sync(buf: bytes, start: int) -> int | None:
    """The first offset >= start where RESYNC_PACKETS sync bytes follow each other a packet apart."""
    need = PACKET * (RESYNC_PACKETS - 1)
    pos = buf.find(b"\x47", start)
    while pos != -1 and pos + need < len(buf):
        if all(buf[pos + k * PACKET] == SYNC for k in range(1, RESYNC_PACKETS)):
            return pos
        pos = buf.find(b"\x47", pos + 1)
    return None


def looks_like_ts(head: bytes) -> bool:
    """Three sync bytes a packet apart at the start: an MPEG-TS file (188-byte packets)."""
    return len(head) >= 3 * PACKET and all(head[k * PACKET] == SYNC for k in range(3))
