"""Command-line arguments of the converter (`avwatch publish`, and the decoding flags `avwatch analyze`
shares), kept apart so `avwatch --help` stays fast.

Each flag sets one field of PublishOptions or DecodeOptions (jobs/publish_options.py,
avwatch/convert/options.py), under that field's name, and takes its default from there: a default is
written once, in the options. FLAGS maps a field back to its flag, so an OptionError raised by the
options ("segment_s must be ...") reaches the user as "--segment must be ...".
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from avwatch.convert.options import DecodeOptions
from jobs.publish_options import DEFAULT_AUDIO_TOPIC, DEFAULT_VIDEO_TOPIC, PublishOptions

__all__ = ["DEFAULT_AUDIO_TOPIC", "DEFAULT_VIDEO_TOPIC", "FLAGS", "add_decode_arguments", "add_publish_arguments",
           "decode_options", "publish_options", "size_arg"]

# option field -> the flag that sets it
FLAGS = {
    "video_topic": "--video-topic", "audio_topic": "--audio-topic", "partitions": "--topic-partitions",
    "replication": "--topic-replication", "compression": "--compression", "segment_s": "--segment",
    "realtime": "--realtime", "loop": "--loop", "epoch": "--epoch", "heartbeat_s": "--heartbeat",
    "send_timeout_s": "--send-timeout", "open_retries": "--open-retries", "read_timeout_s": "--read-timeout",
    "fps": "--fps", "width": "--size", "height": "--size", "audio_tracks": "--audio-tracks",
    "audio_format": "--audio-format", "transport": "--no-transport-checks",
}


def _defaults(options_type) -> dict:
    return {f.name: f.default for f in fields(options_type) if f.default is not MISSING}


PUBLISH = _defaults(PublishOptions)
DECODE = _defaults(DecodeOptions)


def size_arg(text: str) -> tuple[int | None, int | None]:
    """'320x180', '320x', 'x180' or '320' -> (width, height), None where not given."""
    w, _, h = text.lower().partition("x")
    try:
        return (int(w) if w else None, int(h) if h else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like 320x180, 320x or x180, not {text!r}") from None


def _seconds(name: str, help_text: str) -> dict:
    return dict(dest=name, type=float, default=PUBLISH[name], metavar="SECONDS", help=help_text + " (default %(default)g)")


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    """How sources become segments: stream ids, frame rate, analysis size, segment length."""
    p.add_argument("--stream-id", action="append", metavar="ID", help="stream id per source, in order "
                   "(default: the file's base name without extension)")
    p.add_argument("--fps", type=float, default=DECODE["fps"],
                   help=f"analysed frames per second (default: every frame, up to {DECODE['max_fps']:g})")
    size = (DECODE["width"], DECODE["height"])
    p.add_argument("--size", type=size_arg, default=size, metavar="WxH",
                   help=f"analysis size of the luma plane (default {size[0]} wide, aspect kept)")
    p.add_argument("--segment", **_seconds("segment_s", "seconds of media per Kafka record"))
    p.add_argument("--audio-tracks", type=tracks_arg, default=DECODE["audio_tracks"], metavar="all|K,L",
                   help="audio tracks to decode (0 = the first; default all): the first chosen goes with the "
                        "video under the stream id, each further one is a stream '<id>.a<k>' of its own")
    p.add_argument("--audio-format", choices=["s16", "f32"], default=DECODE["audio_format"],
                   help="audio samples on the wire (default %(default)s): f32 keeps what the decoder gives "
                        "(loudness and true peak measured in floating point, overs above full scale kept) "
                        "for twice the audio bytes")
    p.add_argument("--no-transport-checks", dest="transport", action="store_false",
                   help="read MPEG-TS files and udp:// with FFmpeg alone, without the TR 101 290 transport checks "
                        "(the transport detector then reports nothing)")


def tracks_arg(text: str) -> tuple[int, ...] | None:
    """'all' -> None (every track); '0,2' -> (0, 2)."""
    if text.strip().lower() == "all":
        return None
    try:
        tracks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--audio-tracks takes 'all' or track numbers like 0,2, not {text!r}") \
            from None
    if not tracks or min(tracks) < 0 or len(set(tracks)) != len(tracks):
        raise argparse.ArgumentTypeError(f"--audio-tracks takes distinct track numbers from 0, not {text!r}")
    return tracks


def add_publish_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="media files, or live URLs (HLS http(s)://...m3u8, rtmp://, rtsp://, srt://, udp://)")
    add_decode_arguments(p)
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap (default: the local stack's)")
    p.add_argument("--port", type=int, help="local stack broker port (when --bootstrap is not given)")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties (security.protocol, sasl.*, ssl.*; docs/operations.md); its "
                        "bootstrap.servers is used when --bootstrap is not given")
    p.add_argument("--realtime", action="store_true", default=PUBLISH["realtime"], help="pace files as if live")
    p.add_argument("--loop", action="store_true", default=PUBLISH["loop"],
                   help="repeat files forever with continuous timestamps")
    p.add_argument("--compression", choices=["zstd", "lz4", "none"], default=PUBLISH["compression"],
                   help="Arrow buffer compression (default %(default)s: best for pixels)")
    p.add_argument("--video-topic", dest="video_topic", default=PUBLISH["video_topic"], metavar="TOPIC",
                   help="(default %(default)s)")
    p.add_argument("--audio-topic", dest="audio_topic", default=PUBLISH["audio_topic"], metavar="TOPIC",
                   help="(default %(default)s)")
    p.add_argument("--topic-partitions", "--partitions", dest="partitions", type=int, default=PUBLISH["partitions"],
                   metavar="N", help="partitions of topics created here (default %(default)s)")
    p.add_argument("--topic-replication", dest="replication", type=int, default=PUBLISH["replication"], metavar="N",
                   help="replication factor of topics created here (default %(default)s: the single-node local "
                        "stack)")
    p.add_argument("--epoch", default=PUBLISH["epoch"], metavar="ISO|now",
                   help="absolute time of media time 0 (default: now, the publish start)")
    p.add_argument("--heartbeat", **_seconds("heartbeat_s", "a hung live source sends a heartbeat this often"))
    p.add_argument("--send-timeout", **_seconds("send_timeout_s",
                                                "how long to wait for an unreachable broker before giving up"))
    p.add_argument("--open-retries", dest="open_retries", type=int, default=PUBLISH["open_retries"], metavar="N",
                   help="attempts to open a live URL (default %(default)s)")
    p.add_argument("--read-timeout", **_seconds("read_timeout_s",
                                                "a live source silent this long has stopped: the run ends with "
                                                "an error"))
    p.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    p.add_argument("--edge-features", action="store_true",
                   help="run the detectors' stage 1 here and send features instead of pixels (~3 kB instead "
                        "of ~23 kB per frame; the stream job then only runs stage 2)")
    p.add_argument("--detectors", metavar="A,B", help="with --edge-features: the detectors to compute for")
    p.add_argument("--config", metavar="FILE", help="with --edge-features: detector config (.toml/.json)")


def decode_options(args) -> DecodeOptions:
    return DecodeOptions(fps=args.fps, width=args.size[0], height=args.size[1],
                         audio_tracks=getattr(args, "audio_tracks", None),
                         audio_format=getattr(args, "audio_format", "s16"),
                         transport=getattr(args, "transport", True))


def publish_options(args, **given) -> PublishOptions:
    """PublishOptions from parsed arguments: every field a flag of this parser set, plus `given` (bootstrap,
    client_config, and anything the caller decides rather than the user)."""
    values = {name: getattr(args, name) for name in FLAGS if name in PUBLISH and hasattr(args, name)}
    return PublishOptions(**{**values, **given}, decode=decode_options(args))
