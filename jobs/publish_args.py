"""Command-line arguments of the converter (`avwatch publish`), kept apart so `avwatch --help` stays fast."""
from __future__ import annotations

import argparse

DEFAULT_VIDEO_TOPIC = "avwatch.video"
DEFAULT_AUDIO_TOPIC = "avwatch.audio"


def _size(text: str) -> tuple[int | None, int | None]:
    w, sep, h = text.lower().partition("x")
    try:
        if not sep:
            return int(w), None
        return (int(w) if w else None, int(h) if h else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 320x180, 320x or x180, not {text!r}") from None


def add_publish_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="media files, or live URLs (HLS http(s)://...m3u8, rtmp://, rtsp://, srt://, udp://)")
    p.add_argument("--stream-id", action="append", metavar="ID", help="stream id per source, in order "
                   "(default: the file's base name without extension)")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap (default: the local stack's)")
    p.add_argument("--port", type=int, help="local stack broker port (when --bootstrap is not given)")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties (security.protocol, sasl.*, ssl.*; docs/operations.md); its "
                        "bootstrap.servers is used when --bootstrap is not given")
    p.add_argument("--fps", type=float, help="analysed frames per second (default: every frame, up to 30)")
    p.add_argument("--size", type=_size, default=(320, None), metavar="WxH",
                   help="analysis size of the luma plane (default 320 wide, aspect kept)")
    p.add_argument("--segment", type=float, default=1.0, metavar="SECONDS",
                   help="seconds of media per Kafka record (default 1)")
    p.add_argument("--realtime", action="store_true", help="pace files as if live")
    p.add_argument("--loop", action="store_true", help="repeat files forever with continuous timestamps")
    p.add_argument("--compression", choices=["zstd", "lz4", "none"], default="zstd",
                   help="Arrow buffer compression (default zstd: best for pixels)")
    p.add_argument("--video-topic", default=DEFAULT_VIDEO_TOPIC)
    p.add_argument("--audio-topic", default=DEFAULT_AUDIO_TOPIC)
    p.add_argument("--topic-partitions", "--partitions", dest="partitions", type=int, default=4,
                   help="partitions of topics created here (default 4)")
    p.add_argument("--topic-replication", type=int, default=1,
                   help="replication factor of topics created here (default 1: the single-node local stack)")
    p.add_argument("--epoch", default=None, metavar="ISO|now",
                   help="absolute time of media time 0 (default: now, the publish start)")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS",
                   help="a hung live source sends a heartbeat this often (default 1)")
    p.add_argument("--send-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for an unreachable broker before giving up (default 120)")
    p.add_argument("--open-retries", type=int, default=5, help="attempts to open a live URL (default 5)")
    p.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a live source silent this long has stopped: the run ends with an error (default 10)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    p.add_argument("--edge-features", action="store_true",
                   help="run the detectors' stage 1 here and send features instead of pixels (~3 kB instead "
                        "of ~23 kB per frame; the stream job then only runs stage 2)")
    p.add_argument("--detectors", metavar="A,B", help="with --edge-features: the detectors to compute for")
    p.add_argument("--config", metavar="FILE", help="with --edge-features: detector config (.toml/.json)")
