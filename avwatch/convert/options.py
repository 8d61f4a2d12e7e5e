"""The converter's decoding options and their bounds, apart from the decoder so that reading them (the
command line's defaults) does not load FFmpeg."""
from __future__ import annotations

from dataclasses import dataclass

from avwatch.errors import AvwatchError, OptionError


def check_segment_seconds(value: float, option: str = "segment_s") -> None:
    """Segments are 0.1 to 10 s of media: shorter costs a Kafka record per frame, longer delays events."""
    if not (0.1 <= value <= 10.0):
        raise OptionError(option, f"must be between 0.1 and 10 seconds, got {value:g}")


@dataclass(frozen=True)
class DecodeOptions:
    """How the converter samples and scales; the defaults are documented in docs/architecture.md."""

    fps: float | None = None          # frames per second kept; None: every frame, decimated to <= max_fps
    max_fps: float = 30.0
    width: int | None = 320           # analysis width; height keeps the aspect ratio when not given
    height: int | None = None
    thumb_width: int = 64             # RGB thumbnail; height keeps the aspect ratio
    audio_rate: int = 48000
    video: bool = True
    audio: bool = True
    audio_tracks: tuple[int, ...] | None = None  # which audio tracks (0 = the first), None: all of them
    audio_format: str = "s16"         # on the wire: s16 (interleaved int16) or f32 (float32: twice the bytes,
    #                                   loudness and true peak measured as decoded, overs above full scale kept)
    transport: bool = True            # check MPEG-TS sources' transport (files, udp://) as they are read

    def __post_init__(self):
        if self.fps is not None and not (0 < self.fps <= 240):
            raise OptionError("fps", f"must be in (0, 240], got {self.fps}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not (16 <= value <= 4096):
                raise AvwatchError(f"the analysis {name} must be between 16 and 4096 pixels, got {value}")
        if self.audio_tracks is not None and (not self.audio_tracks or min(self.audio_tracks) < 0 or
                                              len(set(self.audio_tracks)) != len(self.audio_tracks)):
            raise OptionError("audio-tracks", f"must be distinct track numbers from 0, got {self.audio_tracks}")
        if self.audio_format not in ("s16", "f32"):
            raise OptionError("audio_format", f"must be s16 or f32, got {self.audio_format!r}")
        if not (8000 <= self.audio_rate <= 192000):
            raise AvwatchError(f"the audio rate must be between 8000 and 192000 Hz, got {self.audio_rate}")
