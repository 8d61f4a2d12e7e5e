"""The `avwatch` command line.

  avwatch stack up|down|status          the local Kafka broker (embedded default)
  avwatch jars                          resolve the Spark/Kafka jars into the cache, print their paths
  avwatch publish SOURCE...             the converter: media -> Arrow segments on Kafka
  avwatch analyze MEDIA... --sink DIR   files -> events table (through Kafka + Spark, or --local in-process)
  avwatch events --sink DIR             print the events table
  avwatch report --sink DIR --out F     a self-contained HTML report
  avwatch demo                          the main job on the embedded defaults (what `make demo` runs)
  avwatch smoke                         the foundation's end-to-end check through Kafka, Spark and Delta

Every user-facing failure is an AvwatchError: one line on stderr naming the input and the fix, exit 2
(1 when a run failed part-way). Commands import their heavy dependencies lazily, so `--help` is fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from avwatch.errors import AvwatchError


def _add_state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", help="local state folder (default: $AVWATCH_STATE or ./.avwatch)")


def _add_port(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="broker port on 127.0.0.1 (default 9092; the controller uses port+1)")


def _add_kafka_config(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--kafka-config", metavar="FILE",
                   help=f"Kafka client properties (security.protocol, sasl.*, ssl.*) {what} (docs/operations.md)")


# -- stack -----------------------------------------------------------------------------------------


def cmd_stack(args) -> int:
    from avwatch.stack import Stack

    stack = Stack.at(args.state, args.port)
    if args.action == "up":
        stack.up()
    elif args.action == "down":
        stack.down(purge=args.purge)
    else:
        from avwatch.kafka_config import client_properties

        info = stack.status(client_properties(args))
        if args.json:
            print(json.dumps(info, indent=2))
        elif not info["running"]:
            print(f"Kafka broker: not running (state: {info['state']})")
            return 3
        else:
            print(f"Kafka broker: up at {info['bootstrap']} (pid {info['pid']}, state: {info['state']})")
            if info.get("secure_bootstrap"):
                print(f"SASL_SSL listener: {info['secure_bootstrap']}")
            topics = info.get("topics", {})
            if not topics:
                print("topics: none")
            for name, t in topics.items():
                print(f"  {name}: {t['partitions']} partition(s), {t['messages']} message(s)")
    return 0


def cmd_jars(args) -> int:
    from avwatch import jars

    paths = jars.resolve(args.set, quiet=args.csv)
    if args.csv:
        print(",".join(str(p) for p in paths))
    else:
        for p in paths:
            print(p)
    return 0


# -- analysis --------------------------------------------------------------------------------------


def _config(args):
    from jobs.entry import detector_config

    return detector_config(args)


def _stream_ids(args, sources: list[str]) -> list[str]:
    from avwatch.local import default_stream_id

    ids = list(args.stream_id or [])
    if ids and len(ids) != len(sources):
        raise AvwatchError(f"--stream-id was given {len(ids)} time(s) for {len(sources)} source(s): give one per "
                           f"source, in order, or none to use the file names")
    ids = ids or [default_stream_id(s) for s in sources]
    if len(set(ids)) != len(ids):
        raise AvwatchError(f"two sources would share a stream id ({', '.join(ids)}); give --stream-id for each")
    return ids


def cmd_analyze(args) -> int:
    if not args.local:
        from jobs.analyze import analyze_via_kafka

        return analyze_via_kafka(args, _config(args), _stream_ids(args, args.media))
    from avwatch.convert.decode import DecodeOptions
    from avwatch.local import analyze_source
    from avwatch.events_table import table_version
    from avwatch.sink import EVENTS, table_path, write_events_replacing

    config = _config(args)
    ids = _stream_ids(args, args.media)
    decode = DecodeOptions(fps=args.fps, width=args.size[0], height=args.size[1])
    rows, failed = [], 0
    for media, sid in zip(args.media, ids):
        read_version = table_version(str(table_path(args.sink, EVENTS)))  # what another writer adds meanwhile stays
        try:
            result = analyze_source(media, config, stream_id=sid, decode=decode, segment_s=args.segment)
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
        rows += result.rows
        write_events_replacing(args.sink, result.rows, [sid], read_version=read_version)
    print(f"events table: {args.sink}/anomaly_events")
    return 1 if failed else 0


def cmd_events(args) -> int:
    from avwatch.events_view import print_events

    return print_events(args)


def cmd_report(args) -> int:
    from avwatch.report import write_report

    path = write_report(args.sink, args.out)
    print(f"report written to {path}")
    return 0


def cmd_publish(args) -> int:
    from jobs.publish import main_from_args

    return main_from_args(args)


def cmd_demo(args) -> int:
    from jobs.demo import run_demo

    return run_demo(args)


def cmd_smoke(args) -> int:
    from jobs.smoke import run_smoke

    return run_smoke(args)


# -- parser ----------------------------------------------------------------------------------------


def _size(text: str) -> tuple[int | None, int | None]:
    try:
        w, _, h = text.lower().partition("x")
        return (int(w) if w else None, int(h) if h else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x180, 320x or x180, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avwatch", description="Audio/video quality monitoring on Spark.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("stack", help="the local Kafka broker: up, down, status")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--purge", action="store_true", help="with down: also delete the broker's data")
    p.add_argument("--json", action="store_true", help="with status: machine-readable output")
    _add_state(p)
    _add_port(p)
    _add_kafka_config(p, "with status: list the topics as this client (on the SASL_SSL listener if it has one)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("jars", help="resolve the JVM jars into the cache and print their paths")
    p.add_argument("--set", choices=["spark", "kafka"], default="spark")
    p.add_argument("--csv", action="store_true", help="one comma-separated line (for --jars)")
    p.set_defaults(func=cmd_jars)

    p = sub.add_parser("publish", help="decode media and publish Arrow segments to Kafka (the converter)")
    from jobs.publish_args import add_publish_arguments

    add_publish_arguments(p)
    _add_state(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("analyze", help="analyse media files into an events table")
    p.add_argument("media", nargs="+", metavar="MEDIA")
    p.add_argument("--sink", required=True, metavar="DIR", help="folder of the Delta tables")
    p.add_argument("--local", action="store_true", help="run in-process (no Kafka, no Spark): the reference path")
    p.add_argument("--detectors", metavar="A,B", help="comma-separated detector names (default: all)")
    p.add_argument("--config", metavar="FILE", help="detector config (.toml or .json)")
    p.add_argument("--stream-id", action="append", metavar="ID", help="stream id per media file, in order")
    p.add_argument("--fps", type=float, help="analysed frames per second (default: every frame up to 30)")
    p.add_argument("--size", type=_size, default=(320, None), metavar="WxH", help="analysis size (default 320 wide)")
    p.add_argument("--segment", type=float, default=1.0, metavar="SECONDS", help="segment length (default 1)")
    _add_state(p)
    _add_port(p)
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="use this Kafka cluster instead of starting the local stack (non-local path)")
    _add_kafka_config(p, "for the converter and the streaming job (non-local path)")
    p.add_argument("--master", help="Spark master for the non-local path (default local[*])")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("events", help="print the events table")
    p.add_argument("--sink", required=True, metavar="DIR")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table")
    p.add_argument("--stream", help="only this stream id")
    p.add_argument("--detector", help="only this detector")
    p.add_argument("--since", help="only events starting at/after this time (ISO time, or e.g. 24h, 30m ago)")
    p.add_argument("--version", type=int, help="read this version of the table (time travel)")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("report", help="write a self-contained HTML report of the events table")
    p.add_argument("--sink", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the main job on the embedded defaults: stack, publish clips, stream, events")
    p.add_argument("--sink", metavar="DIR", help="where the demo's tables go (default: <state>/demo)")
    _add_state(p)
    _add_port(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("smoke", help="publish a few records, stream them through Spark into Delta, read back")
    p.add_argument("--sink", metavar="DIR", help="where the smoke table goes (default: <state>/smoke)")
    _add_state(p)
    _add_port(p)
    p.set_defaults(func=cmd_smoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:  # the client libraries narrate every connection at INFO
        for noisy in ("kafka", "py4j"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except AvwatchError as exc:
        print(f"avwatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("avwatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
