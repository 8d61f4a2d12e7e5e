"""Stage 2 of one detector with the analyzer's alarm lifecycle (detectors/alarms.py), step by step, for
tests that check when an alarm is raised, not only the closed events."""
from __future__ import annotations

from detectors import alarms


class AlarmedDetector:
    def __init__(self, det, policy: alarms.AlarmPolicy | None = None):
        self.det, self.policy = det, policy or alarms.AlarmPolicy()
        self.state, self.book, self.events = det.initial_state(), alarms.new_book(), []

    def step(self, kind: str, rows) -> list:
        """Process rows of `kind`; returns this step's events (OPEN as soon as reportable, CLOSED, ...)."""
        found = alarms.lifecycle(self.book, self.det, self.det.process(self.state, kind, rows),
                                 self.det.open_events(self.state), None, self.policy)
        self.events += found
        return found

    def finish(self, end_s: float = 1e9) -> list:
        found = alarms.lifecycle(self.book, self.det, self.det.finish(self.state, end_s), None, None, self.policy)
        self.events += found
        return self.events
