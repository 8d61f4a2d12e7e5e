"""clipping: PLACEHOLDER being written (interface only; it reports nothing yet)."""
from __future__ import annotations

from dataclasses import dataclass

from detectors.base import AUDIO, VIDEO, Detector, Event, Options, option
from detectors.features import Features


@dataclass(frozen=True)
class ClippingOptions(Options):
    min_duration_s: float = option(1.0, "shortest run reported (s)", min=0.0, max=3600.0)


class Clipping(Detector):
    name = "clipping"
    version = "0.0"
    inputs = (AUDIO,)
    Options = ClippingOptions

    def process(self, state: dict, kind: str, rows: Features) -> list[Event]:
        return []
