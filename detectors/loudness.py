"""loudness: PLACEHOLDER being written (interface only; it reports nothing yet)."""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import AUDIO, VIDEO, Detector, Event, Options, option
from detectors.features import Features


@dataclass(frozen=True)
class LoudnessOptions(Options):
    min_duration_s: float = option(1.0, "shortest run reported (s)", min=0.0, max=3600.0)


class Loudness(Detector):
    name = "loudness"
    version = "0.0"
    inputs = (AUDIO,)
    Options = LoudnessOptions

    def process(self, state: dict, kind: str, rows: Features) -> list[Event]:
        return []
