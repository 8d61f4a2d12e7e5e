"""Alarms while a defect lasts: raise, update, clear — and one alarm per root cause.

A detector reports a defect when it ends (its closed Event). An operator needs it while it is on air, so
the analyzer asks each detector, after every step, which defects are going on and have already lasted
their minimum duration (`Detector.open_events`), and turns a detector's events into a lifecycle:

  OPEN     once, as soon as the defect is reportable: end = start + its minimum duration
  ONGOING  at most every `update_s` of media while it lasts: end = the reportable point plus a whole
           number of update intervals (so the updates do not depend on how the stream was cut)
  CLOSED   the detector's own event, with the final end

All three carry the same start and check, so the same event id. A defect that is over before the step
that could raise it still gets its OPEN first (for detectors that have an open phase, see
`Detector.reportable_after`), so the sequence is the same however the input is cut. A raised alarm that
its detector later drops (a freeze whose frames turn out not to be repeats) is CLOSED with
`details.withdrawn`.

Root causes: while a defect that implies others lasts, those others are marked
`details.suppressed_by` (the sink writes them but does not alert them) and the root names them in
`details.suppresses`. An alarm whose OPEN went out unsuppressed is never suppressed later, so every
alarm that was raised is also cleared.

The book is a plain dict kept in the stream's state (pickled by the Spark job).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from detectors.base import CLOSED, ONGOING, OPEN, Event

# root cause -> the detectors it implies (and so suppresses while both last)
SUPPRESSION_RULES: dict[str, tuple[str, ...]] = {
    "stall": ("black", "freeze", "silence", "audio_gap"),  # no media at all
    "black": ("freeze", "blur"),
    "solid_color": ("freeze", "blur"),
    "colorbars": ("freeze", "blur"),
    "silence": ("channel_loss",),
    "format_change": ("freeze", "blur", "blockiness", "av_sync", "loudness"),  # history-based detectors
}
OVERLAP_TOLERANCE_S = 0.1   # a frame or so: a root and its consequence start within this of each other
KEEP_CLOSED_ROOTS_S = 60.0  # closed root causes are remembered this long (media s) to match late closes


@dataclass(frozen=True)
class AlarmPolicy:
    update_s: float = 10.0   # at most one ONGOING update per this much media; 0: none
    rules: tuple[tuple[str, str], ...] = field(default_factory=lambda: tuple(
        (root, target) for root, targets in SUPPRESSION_RULES.items() for target in targets))

    @classmethod
    def build(cls, update_s: float = 10.0, disabled: list[str] | None = None) -> "AlarmPolicy":
        """disabled: rules to turn off, as 'root:target' (e.g. 'black:freeze') or a root name alone."""
        all_rules = cls().rules
        off = set(disabled or [])
        known = {f"{r}:{t}" for r, t in all_rules} | {r for r, _ in all_rules}
        unknown = sorted(off - known)
        if unknown:
            raise ValueError(f"unknown suppression rule(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if update_s < 0:
            raise ValueError(f"the alarm update interval must be >= 0 s, got {update_s:g}")
        rules = tuple((r, t) for r, t in all_rules if r not in off and f"{r}:{t}" not in off)
        return cls(update_s=float(update_s), rules=rules)


def new_book() -> dict:
    return {"raised": {},        # detector -> alarm key -> {"end", "event", "own"}
            "roots": {},         # root detector -> alarm key -> {"start", "end", "open", "suppresses"}
            "unsuppressed": [],  # "detector|key" of alarms raised without suppression
            "suppressed": {}}    # "detector|key" -> the root that suppressed its OPEN (keeps it so)


def key_of(event: Event) -> str:
    return f"{event.check}|{int(round(event.start_s * 1000))}"


def lifecycle(book: dict, det, events: list[Event], open_now: list[Event] | None, seen_end: float | None,
              policy: AlarmPolicy) -> list[Event]:
    """One detector's step: the events it returned (closed ones, or OPEN/ONGOING it manages itself, as
    stall does) and, after a processing step, its open_events() (None after a heartbeat: no change to
    what is open). Returns the events to emit, each with its state."""
    raised = book["raised"].setdefault(det.name, {})
    out: list[Event] = []
    for ev in events:
        key = key_of(ev)
        if ev.state == CLOSED:
            entry = raised.pop(key, None)
            if entry is None:
                reportable = det.reportable_after(ev)
                if reportable is not None and ev.end_s - ev.start_s >= reportable - 1e-9:
                    out.append(dataclasses.replace(ev, end_s=ev.start_s + reportable, state=OPEN))
        else:
            raised[key] = {"end": ev.end_s, "event": ev, "own": True}
        out.append(ev)
    if open_now is None:
        return out
    current = set()
    for ev in open_now:
        key = key_of(ev)
        current.add(key)
        entry = raised.get(key)
        if entry is None:
            raised[key] = {"end": ev.end_s, "event": ev, "own": False}
            out.append(dataclasses.replace(ev, state=OPEN))
        elif policy.update_s > 0 and seen_end is not None:
            steps = math.floor((seen_end - ev.end_s) / policy.update_s + 1e-9)
            end = ev.end_s + steps * policy.update_s
            if steps >= 1 and end > entry["end"] + 1e-9:
                entry["end"], entry["event"] = end, ev
                out.append(dataclasses.replace(ev, end_s=end, state=ONGOING))
    for key in [k for k, e in raised.items() if not e["own"] and k not in current]:
        entry = raised.pop(key)  # raised, then dropped by its detector without a closed event
        ev = entry["event"]
        out.append(dataclasses.replace(ev, end_s=entry["end"], state=CLOSED,
                                       details={**ev.details, "withdrawn": True}))
    return out


def route(book: dict, batch: list[tuple[str, Event]], policy: AlarmPolicy, media_end: float) -> list[tuple[str, Event]]:
    """Apply the root-cause rules to one step's events of all detectors: (detector, event) pairs in order."""
    roots = {r for r, _ in policy.rules}
    for name, ev in batch:  # what the roots are doing now, first
        if name in roots:
            entry = book["roots"].setdefault(name, {}).setdefault(
                key_of(ev), {"start": ev.start_s, "end": ev.end_s, "open": True, "suppresses": []})
            entry["end"] = max(entry["end"], ev.end_s)
            entry["open"] = ev.state != CLOSED
    out = []
    for name, ev in batch:
        tag = f"{name}|{key_of(ev)}"
        if tag in book["suppressed"]:
            ev = dataclasses.replace(ev, details={**ev.details, "suppressed_by": book["suppressed"][tag]})
        elif tag not in book["unsuppressed"]:
            root = _root_of(book, policy, name, ev)
            if root is not None:
                root_name, root_key, entry = root
                if name not in entry["suppresses"]:
                    entry["suppresses"].append(name)
                by = {"detector": root_name, "start_s": round(entry["start"], 3)}
                if ev.state != CLOSED:
                    book["suppressed"][tag] = by
                ev = dataclasses.replace(ev, details={**ev.details, "suppressed_by": by})
            elif ev.state == OPEN:
                book["unsuppressed"].append(tag)
        out.append((name, ev))
    final = []
    for name, ev in out:  # the roots name what they suppress
        entry = book["roots"].get(name, {}).get(key_of(ev))
        if entry is not None and entry["suppresses"]:
            ev = dataclasses.replace(ev, details={**ev.details, "suppresses": sorted(entry["suppresses"])})
        if ev.state == CLOSED:
            tag = f"{name}|{key_of(ev)}"
            if tag in book["unsuppressed"]:
                book["unsuppressed"].remove(tag)
            book["suppressed"].pop(tag, None)
        final.append((name, ev))
    for name in list(book["roots"]):  # forget closed roots once media has moved well past them
        for key in [k for k, e in book["roots"][name].items()
                    if not e["open"] and e["end"] < media_end - KEEP_CLOSED_ROOTS_S]:
            del book["roots"][name][key]
    return final


def _root_of(book: dict, policy: AlarmPolicy, name: str, ev: Event):
    for root_name, target in policy.rules:
        if target != name:
            continue
        for key, entry in book["roots"].get(root_name, {}).items():
            end = math.inf if entry["open"] else entry["end"]
            if ev.start_s < end + OVERLAP_TOLERANCE_S and ev.end_s > entry["start"] - OVERLAP_TOLERANCE_S:
                return root_name, key, entry
    return None
