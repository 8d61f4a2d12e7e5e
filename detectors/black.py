"""black: the picture is (near) black for at least min_duration_s.

Reference: FFmpeg blackdetect. A pixel is black when its luma is at or below pixel_threshold of the
luma range (for limited-range video the range is 16..235, so the level is 16 + 0.10 * 219 ~ 37.9);
a picture is black when at least picture_threshold of its pixels are. A black run starts at the first
black frame and ends at the first frame that is not (or at the end of the stream).

Hard negatives: fades through black shorter than min_duration_s (too short); dark night scenes (a few
percent of brighter pixels keep them below picture_threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.base import MAJOR, VIDEO, Detector, Event, Options, RunTracker, option
from detectors.features import Features, VideoFrames


@dataclass(frozen=True)
class BlackOptions(Options):
    min_duration_s: float = option(1.0, "shortest black run reported (s); FFmpeg's default is 2", min=0.0,
                                   max=3600.0)
    picture_threshold: float = option(0.98, "share of black pixels that makes a picture black", min=0.0, max=1.0)
    pixel_threshold: float = option(0.10, "a pixel is black at or below this fraction of the luma range",
                                    min=0.0, max=1.0)


def black_level(pixel_threshold: float, full_range: bool) -> float:
    """The luma value (0..255) at or below which a pixel counts as black."""
    if full_range:
        return pixel_threshold * 255.0
    return 16.0 + pixel_threshold * (235.0 - 16.0)


def black_fraction(luma: np.ndarray, level: float) -> np.ndarray:
    """Share of pixels <= level, per frame of an (n, H, W) or (H, W) uint8 array."""
    y = np.asarray(luma)
    flat = y.reshape(y.shape[0], -1) if y.ndim == 3 else y.reshape(1, -1)
    # integer comparison: luma <= level  <=>  luma <= floor(level)
    return (flat <= int(np.floor(level))).mean(axis=1).astype(np.float32)


def frame_features(frames: VideoFrames, options: BlackOptions) -> dict:
    level = black_level(options.pixel_threshold, frames.full_range)
    return {"black_frac": black_fraction(frames.luma, level)}


class Black(Detector):
    name = "black"
    version = "1.0"
    inputs = (VIDEO,)
    Options = BlackOptions

    def initial_state(self) -> dict:
        return {"run": RunTracker.new()}

    def process(self, state: dict, kind: str, rows: Features) -> list[Event]:
        o = self.options
        events = []
        run = state["run"]
        for k in range(len(rows)):
            t, frac = float(rows["t"][k]), float(rows["black_frac"][k])
            if frac >= o.picture_threshold:
                RunTracker.on(run, t, frac, rows["thumb_jpeg"][k])
            elif run["start"] is not None:
                events += self._emit(RunTracker.off(run, t, o.min_duration_s))
        return events

    def finish(self, state: dict, end_s: float) -> list[Event]:
        return self._emit(RunTracker.off(state["run"], end_s, self.options.min_duration_s))

    def _emit(self, closed) -> list[Event]:
        if closed is None:
            return []
        start, end, run = closed
        mean = run["sum"] / max(run["n"], 1)
        return [Event(self.name, start, end, score=mean, threshold=self.options.picture_threshold, severity=MAJOR,
                      details={"duration_s": round(end - start, 3), "mean_black_share": round(mean, 4),
                               "frames": run["n"]},
                      evidence=run["evidence"])]
