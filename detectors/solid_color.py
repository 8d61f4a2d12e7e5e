"""solid_color: PLACEHOLDER being written (interface only; it reports nothing yet)."""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import AUDIO, VIDEO, Detector, Event, Options, option
from detectors.features import Features


@dataclass(frozen=True)
class SolidColorOptions(Options):
    min_duration_s: float = option(1.0, "shortest run reported (s)", min=0.0, max=3600.0)


class SolidColor(Detector):
    name = "solid_color"
    version = "0.0"
    inputs = (VIDEO,)
    Options = SolidColorOptions

    def process(self, state: dict, kind: str, rows: Features) -> list[Event]:
        return []
