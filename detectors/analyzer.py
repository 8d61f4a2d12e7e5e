"""Stage 2 for one stream: put its segments back in order and drive every detector over them.

Records can arrive duplicated (at-least-once delivery), out of order (several partitions, retries) or
split across any number of windows/micro-batches. The analyzer keeps, per kind (video, audio), the next
sequence number it expects and the feature tables that arrived early; it releases them to the detectors
strictly in sequence order, so the events do not depend on how the input was cut.

A missing segment is waited for while newer ones are less than `lateness_s` of media time ahead; after
that it is skipped (counted in `lost`). A segment that arrives after being skipped is counted in `late`
and reported to the caller, which logs it (the job writes it to the dead-letter table): never silently
dropped.

The analyzer meets a stream wherever it is: the first segment it sees of a kind sets where that kind
starts (a job started at the latest offsets, a beginning deleted by retention, a dead-lettered first
segment). Detectors then start cold, and the first event of each says so in its details (`cold_start`).

The stream's state is one dict (pickled by the Spark job between micro-batches) with a layout version; it
holds each detector's own State (a versioned dataclass, detectors/base.py) under state["detectors"][name],
and feature rows only for segments waiting on a gap, never pixels. `reconcile` brings a state saved under
another configuration up to this one: detectors added or changed (version, state layout or options, see
detector_key) start fresh (and cold), removed ones are dropped, so a restart with a new configuration or a
new state layout keeps every stream running.

Events come out with an alarm state (detectors/alarms.py): OPEN as soon as a defect has lasted its
minimum duration, ONGOING updates while it lasts, CLOSED at its end; a defect implied by another that
is going on (black over freeze, ...) carries `details.suppressed_by`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from detectors import alarms
from detectors.alarms import AlarmPolicy
from detectors.base import AUDIO, CLOSED, VIDEO, Event, rows_end
from detectors.config import DetectorConfig
from detectors.table import Features

KINDS = (VIDEO, AUDIO)
STATE_VERSION = 2   # 1: "next" started at 0 and detectors were not versioned in the state


def detector_key(det) -> str:
    """What a detector's saved state depends on: its version, its state's layout version and its options."""
    options = json.dumps(det.options.as_dict(), sort_keys=True, default=str)
    return f"{det.version}:s{det.State.VERSION}:{hashlib.sha256(options.encode()).hexdigest()[:12]}"


@dataclass
class Outcome:
    """What one call produced: closed events, and segments that came too late to be analysed."""

    events: list[tuple[str, Event]] = field(default_factory=list)  # (detector version, event)
    late: list[tuple[str, int]] = field(default_factory=list)     # (kind, sequence)

    def extend(self, other: "Outcome") -> None:
        self.events += other.events
        self.late += other.late


class StreamAnalyzer:
    """Pure stage-2 driver for one stream; the state lives outside it (see initial_state)."""

    def __init__(self, config: DetectorConfig, lateness_s: float = 30.0, alarms: AlarmPolicy | None = None):
        self.config = config
        self.lateness_s = float(lateness_s)
        self.alarms = alarms or AlarmPolicy()
        # A kind first seen past segment 0 waits this long (media s) for earlier segments delivered out of
        # order before it starts there.
        self.join_wait_s = min(self.lateness_s, 3.0)
        self._keys: dict[tuple, str] = {}

    def initial_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "next": {VIDEO: None, AUDIO: None},   # None: the first segment seen sets it
            "joined": {},                         # kind -> {"sequence", "t"} when it was not 0
            "cold": {},                           # detector -> why it started without history
            "publication": None,                  # the converter's publish_id
            "pending": {VIDEO: {}, AUDIO: {}},    # seq -> (t, payload)
            "released_t": {VIDEO: None, AUDIO: None},
            "eos": {VIDEO: False, AUDIO: False},
            "kinds": None,                        # which kinds the source has (from its metadata)
            "epoch": None,                        # ISO time of media time 0
            "media_end": 0.0,
            "finished": False,
            "counts": {"segments": 0, "duplicates": 0, "late": 0, "lost": 0},
            "skipped": {},                        # kind -> the last sequence numbers given up on a gap
            "finished_detectors": [],             # detectors whose inputs have all ended
            "detectors": {d.name: d.initial_state() for d in self.config.detectors},  # name -> its State
            "detector_keys": {d.name: self.detector_key(d) for d in self.config.detectors},
            "seen_end": {VIDEO: None, AUDIO: None},  # where each kind's released media ends (s)
            "alarms": alarms.new_book(),          # raised alarms and root causes (detectors/alarms.py)
            "cold_marked": {},                    # detector -> the event carrying its cold_start
        }

    def detector_key(self, det) -> str:
        """detector_key, computed once per detector version and state layout (the options are this
        analyzer's): reconcile runs on every micro-batch of every stream, and hashing the options was ~4% of
        the streaming step's CPU."""
        memo = (det.name, det.version, det.State.VERSION)
        if memo not in self._keys:
            self._keys[memo] = detector_key(det)
        return self._keys[memo]

    def reconcile(self, state: dict) -> dict:
        """Bring a saved state to this configuration and layout (see the module docstring)."""
        if state.get("version") is None:  # layout 1
            state["version"] = STATE_VERSION
            state.setdefault("joined", {})
            state.setdefault("cold", {})
            state.setdefault("publication", None)
            state["detector_keys"] = {d.name: self.detector_key(d) for d in self.config.detectors
                                      if d.name in state["detectors"]}
        elif state["version"] != STATE_VERSION:
            raise ValueError(f"stream state layout {state['version']} is newer than this build's "
                             f"({STATE_VERSION}): run the newer avwatch on this checkpoint")
        state.setdefault("skipped", {})  # layout 2 as first written lacked these four
        state.setdefault("seen_end", {VIDEO: None, AUDIO: None})
        state.setdefault("alarms", alarms.new_book())
        state.setdefault("cold_marked", {})
        finished = state.setdefault("finished_detectors", [])
        keys = state["detector_keys"]
        for det in self.config.detectors:
            key = self.detector_key(det)
            if keys.get(det.name) != key or det.name not in state["detectors"]:
                why = "added to the job" if det.name not in state["detectors"] else \
                    f"changed (version/options {keys.get(det.name)} -> {key})"
                state["detectors"][det.name] = det.initial_state()
                keys[det.name] = key
                state["cold"][det.name] = {"reason": f"detector {why} while the stream ran",
                                           "from_s": round(float(state["media_end"]), 3)}
                if det.name in finished:
                    finished.remove(det.name)
        configured = set(self.config.names)
        for name in [n for n in state["detectors"] if n not in configured]:
            del state["detectors"][name]
            keys.pop(name, None)
            state["cold"].pop(name, None)
        return state

    # -- input -----------------------------------------------------------------------------------

    def add_features(self, state: dict, kind: str, seq: int, t: float, features: Features,
                     source: dict | None = None) -> Outcome:
        """A video or audio segment's stage-1 features arrived."""
        return self._add(state, kind, seq, t, ("features", features), source)

    def add_control(self, state: dict, kind: str, seq: int, control: str, media_time_s: float,
                    source: dict | None = None) -> Outcome:
        """An end-of-stream ('eos') or 'heartbeat' record arrived on the `kind` topic."""
        return self._add(state, kind, seq, media_time_s, (control, media_time_s), source)

    def add(self, state: dict, item) -> Outcome:
        """Add a detectors.features.SegmentInput (features or control)."""
        if item.control is not None:
            return self.add_control(state, item.kind, item.sequence, item.control, item.t, item.source)
        return self.add_features(state, item.kind, item.sequence, item.t, item.features, item.source)

    def start_at(self, state: dict, kind: str, sequence: int) -> None:
        """Begin a kind at this sequence number instead of 0 (re-analysis of a time range mid-stream)."""
        if not state["next"][kind] and not state["pending"][kind]:
            state["next"][kind] = int(sequence)

    def clock(self, state: dict, media_time_s: float) -> Outcome:
        """Time went on without media for this stream (a processing-time timeout in the job): tell the
        detectors the stream's clock reached media_time_s, as a heartbeat would."""
        out = Outcome()
        batch = [(det, self._step(state, det, det.heartbeat(state["detectors"][det.name], float(media_time_s)),
                                  after_processing=False)) for det in self.config.detectors]
        self._emit(state, batch, out)
        return out

    def _step(self, state: dict, det, events: list[Event], after_processing: bool) -> list[Event]:
        """A detector's events of one step, with their alarm states (detectors/alarms.py)."""
        open_now = det.open_events(state["detectors"][det.name]) if after_processing else None
        seen = [state["seen_end"][k] for k in det.inputs if state["seen_end"].get(k) is not None]
        return alarms.lifecycle(state["alarms"], det, events, open_now, max(seen) if seen else None, self.alarms)

    def _emit(self, state: dict, batch: list[tuple], out: Outcome) -> None:
        """Collect one step's events of every detector: root causes applied, and the first event of a
        detector after a cold start says so in its details."""
        by_name = {det.name: det for det, _ in batch}
        pairs = [(det.name, ev) for det, events in batch for ev in events]
        marked = state["cold_marked"]
        for name, ev in alarms.route(state["alarms"], pairs, self.alarms, state["media_end"]):
            cold = state["cold"].pop(name, None)
            if cold is not None:
                marked[name] = {"key": alarms.key_of(ev), "cold": cold}
            mark = marked.get(name)
            if mark is not None and mark["key"] == alarms.key_of(ev):  # every state of that first event
                ev = dataclasses.replace(ev, details={**ev.details, "cold_start": mark["cold"]})
                if ev.state == CLOSED:
                    del marked[name]
            out.events.append((by_name[name].version, ev))

    def _add(self, state: dict, kind: str, seq: int, t: float, payload, source: dict | None) -> Outcome:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if source is not None:
            self._learn_source(state, source)
        out = Outcome()
        if state["next"][kind] is None:  # where this kind starts is not known yet
            if seq not in state["pending"][kind]:
                state["pending"][kind][seq] = (float(t), payload)
                state["counts"]["segments"] += 1
            else:
                state["counts"]["duplicates"] += 1
            if self._choose_start(state, kind):
                out.extend(self._release(state, kind))
            return out
        if seq < state["next"][kind] or seq in state["pending"][kind]:
            before_join = seq < state["joined"].get(kind, {}).get("sequence", 0)
            if seq < state["next"][kind] and (before_join or seq in state["skipped"].get(kind, [])):
                state["counts"]["late"] += 1
                out.late.append((kind, seq))
            else:
                state["counts"]["duplicates"] += 1
            return out
        state["pending"][kind][seq] = (float(t), payload)
        state["counts"]["segments"] += 1
        out.extend(self._release(state, kind))
        return out

    def _choose_start(self, state: dict, kind: str, force: bool = False) -> bool:
        """Start `kind` at its lowest waiting segment once that is 0, an end of stream waits, or the
        waiting segments span join_wait_s; mark the detectors cold when it is not 0."""
        pending = state["pending"][kind]
        if not pending:
            return False
        times = [t for t, _ in pending.values()]
        first = min(pending)
        if not (force or first == 0 or max(times) - min(times) >= self.join_wait_s or len(pending) > 64
                or any(what == "eos" for _, (what, _body) in pending.values())):
            return False
        state["next"][kind] = first
        if first > 0:
            t0 = round(float(pending[first][0]), 3)
            state["joined"][kind] = {"sequence": int(first), "t": t0}
            for det in self.config.detectors:
                if kind in det.inputs:
                    state["cold"].setdefault(det.name, {
                        "reason": f"the {kind} of this stream was first seen at segment {first} (joined mid-stream: "
                                  f"earlier segments expired, were skipped or dead-lettered)", "from_s": t0})
        return True

    def drop_pending(self, state: dict, kind: str) -> None:
        """Give up every segment waiting on `kind` (after one of them made a detector fail)."""
        pending = state["pending"][kind]
        if pending:
            state["counts"]["lost"] += len(pending)
            state["next"][kind] = max(pending) + 1
            pending.clear()

    def _learn_source(self, state: dict, source: dict) -> None:
        if state["kinds"] is None:
            kinds = [k for k, flag in ((VIDEO, source.get("has_video")), (AUDIO, source.get("has_audio"))) if flag]
            state["kinds"] = kinds or list(KINDS)
        if state["epoch"] is None and source.get("epoch"):
            state["epoch"] = source["epoch"]
        if state["publication"] is None and source.get("publish_id"):
            state["publication"] = source["publish_id"]

    # -- ordering --------------------------------------------------------------------------------

    def _release(self, state: dict, kind: str) -> Outcome:
        out = Outcome()
        pending = state["pending"][kind]
        while pending:
            nxt = state["next"][kind]
            if nxt in pending:
                t, payload = pending.pop(nxt)
                state["next"][kind] = nxt + 1
                out.extend(self._dispatch(state, kind, t, payload))
                continue
            # A gap: wait unless the newest waiting segment is more than lateness_s ahead of the last one
            # released (media time), then give the missing sequence numbers up.
            newest = max(t for t, _ in pending.values())
            ref = state["released_t"][kind]
            if ref is None or newest - ref <= self.lateness_s:
                break
            first = min(pending)
            skipped = state["skipped"].setdefault(kind, [])
            skipped.extend(range(nxt, first))
            del skipped[:-1000]  # remember the last 1000 given up, to recognise them if they turn up
            state["counts"]["lost"] += first - nxt
            state["next"][kind] = first
        return out

    def _dispatch(self, state: dict, kind: str, t: float, payload) -> Outcome:
        out = Outcome()
        what, body = payload
        state["released_t"][kind] = t
        if what == "features":
            if len(body):
                state["media_end"] = max(state["media_end"], float(body["t"][-1]))
                state["seen_end"][kind] = rows_end(kind, body)
                batch = [(det, self._step(state, det, det.process(state["detectors"][det.name], kind, body),
                                          after_processing=True))
                         for det in self.config.detectors if kind in det.inputs]
                self._emit(state, batch, out)
        elif what == "heartbeat":
            batch = [(det, self._step(state, det, det.heartbeat(state["detectors"][det.name], float(body)),
                                      after_processing=False)) for det in self.config.detectors]
            self._emit(state, batch, out)
        elif what == "eos":
            state["eos"][kind] = True
            state["media_end"] = max(state["media_end"], float(body))
            out.extend(self._finish_ready(state))
        return out

    def _finish_ready(self, state: dict) -> Outcome:
        """Close the detectors whose inputs have all ended."""
        out = Outcome()
        kinds = state["kinds"] or list(KINDS)
        done = state["finished_detectors"]
        batch = []
        for det in self.config.detectors:
            if det.name in done:
                continue
            needed = [k for k in det.inputs if k in kinds]
            if all(state["eos"][k] for k in needed):
                done.append(det.name)
                batch.append((det, self._step(state, det, det.finish(state["detectors"][det.name],
                                                                       state["media_end"]), after_processing=True)))
        self._emit(state, batch, out)
        state["finished"] = all(state["eos"][k] for k in kinds)
        return out

    def close(self, state: dict) -> Outcome:
        """Force the end of the stream now (e.g. the input ended without an end-of-stream record)."""
        out = Outcome()
        for kind in KINDS:
            # release whatever is waiting, gaps and all
            pending = state["pending"][kind]
            if state["next"][kind] is None:
                self._choose_start(state, kind, force=True)
            for seq in sorted(pending):
                t, payload = pending.pop(seq)
                if state["next"][kind] is not None and seq > state["next"][kind]:
                    state["counts"]["lost"] += seq - state["next"][kind]
                state["next"][kind] = seq + 1
                out.extend(self._dispatch(state, kind, t, payload))
            state["eos"][kind] = True
        out.extend(self._finish_ready(state))
        return out
