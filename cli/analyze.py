"""`avwatch analyze MEDIA... --sink DIR`: files into an events table, through Kafka and Spark (the real
path, jobs/analyze.py) or in one process with --local (the reference path, avwatch/local.py)."""
from __future__ import annotations

import sys

from avwatch.errors import AvwatchError
from cli.common import add_detectors, add_kafka_config, add_port, add_state, stream_ids


def register(sub) -> None:
    from jobs.publish_args import add_decode_arguments

    p = sub.add_parser("analyze", help="analyse media files into an events table")
    p.add_argument("media", nargs="+", metavar="MEDIA")
    p.add_argument("--sink", required=True, metavar="DIR", help="folder of the Delta tables")
    p.add_argument("--local", action="store_true", help="run in-process (no Kafka, no Spark): the reference path")
    add_detectors(p)
    add_decode_arguments(p)
    add_state(p)
    add_port(p)
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="use this Kafka cluster instead of starting the local stack (non-local path)")
    add_kafka_config(p, "for the converter and the streaming job (non-local path)")
    p.add_argument("--master", help="Spark master for the non-local path (default local[*])")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args) -> int:
    from detectors.config import from_args

    config = from_args(args.detectors, args.config)
    ids = stream_ids(args.stream_id, args.media)
    if not args.local:
        from jobs.analyze import analyze_via_kafka

        return analyze_via_kafka(args, config, ids)
    return analyze_locally(args, config, ids)


def analyze_locally(args, config, ids: list[str]) -> int:
    from avwatch.convert.options import check_segment_seconds
    from avwatch.events_table import table_version
    from avwatch.local import analyze_source
    from avwatch.sink import EVENTS, table_path, write_events_replacing
    from jobs.publish_args import decode_options

    check_segment_seconds(args.segment_s)  # once, not once per file
    decode = decode_options(args)
    failed = 0
    for media, sid in zip(args.media, ids):
        read_version = table_version(str(table_path(args.sink, EVENTS)))  # what another writer adds meanwhile stays
        try:
            result = analyze_source(media, config, stream_id=sid, decode=decode, segment_s=args.segment_s)
        except AvwatchError as exc:
            print(f"avwatch: {exc}", file=sys.stderr)
            failed += 1
            continue
        what = []
        if result.has_video:
            what.append(f"{result.frames} frames")
        if result.has_audio:
            what.append(f"{result.audio_s:.1f} s audio")
        missing = [k for k, present in (("video", result.has_video), ("audio", result.has_audio)) if not present]
        note = f" (no {missing[0]} stream)" if missing else ""
        print(f"{sid}: {', '.join(what)}{note}, {len(result.rows)} event(s)"
              + (f", {result.decode_errors} decode error(s)" if result.decode_errors else ""))
        write_events_replacing(args.sink, result.rows, [sid], read_version=read_version)
    if failed == len(args.media):  # nothing was written: naming the table would suggest otherwise
        print("avwatch: no file analysed; nothing written to the events table", file=sys.stderr)
        return 1
    print(f"events table: {args.sink}/anomaly_events")
    return 1 if failed else 0
