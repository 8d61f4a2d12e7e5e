"""What the converter (jobs/publish.py) is told: its options, each default written here once.

Kept apart from the converter so that reading them (the command line's flags and their defaults,
jobs/publish_args.py) loads neither FFmpeg nor Kafka.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from avwatch.convert.options import DecodeOptions, check_segment_seconds
from avwatch.errors import OptionError
from avwatch.times import parse_iso_time

DEFAULT_VIDEO_TOPIC = "avwatch.video"
DEFAULT_AUDIO_TOPIC = "avwatch.audio"


@dataclass
class PublishOptions:
    bootstrap: str
    video_topic: str = DEFAULT_VIDEO_TOPIC
    audio_topic: str = DEFAULT_AUDIO_TOPIC
    partitions: int = 4               # of the topics created here
    replication: int = 1              # of the topics created here (1: the single-node local stack)
    client_config: dict | None = None  # Kafka client properties (avwatch.kafka_config)
    compression: str = "zstd"         # Arrow buffer compression: zstd, lz4 or none
    segment_s: float = 1.0            # seconds of media per Kafka record
    realtime: bool = False            # pace files as if live
    loop: bool = False                # repeat files with continuous timestamps
    epoch: str | None = None          # ISO time of media time 0, "now", or None: the publish start
    heartbeat_s: float = 1.0          # a live source that delivers nothing sends a heartbeat this often
    send_timeout_s: float = 120.0     # how long an unreachable broker is waited for
    open_retries: int = 5             # attempts to open a live URL
    read_timeout_s: float = 10.0      # a live source silent this long has stopped (heartbeats meanwhile)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    max_loops: int | None = None      # with loop: stop after this many passes (tests, soak runs)
    edge_features: object = None      # a DetectorConfig: run stage 1 here and send features, not pixels

    def __post_init__(self):
        check_segment_seconds(self.segment_s)
        for name in ("heartbeat_s", "read_timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise OptionError(name, f"must be a positive number of seconds, got {value:g}")
        if self.epoch not in (None, "now"):
            try:
                parse_iso_time(self.epoch)
            except ValueError:
                raise OptionError("epoch", f"must be an ISO time such as 2026-01-01T00:00:00Z, or now; "
                                           f"got {self.epoch!r}") from None
