"""`avwatch publish SOURCE...`: the converter, from the command line."""
from __future__ import annotations

import sys

from cli.common import add_state, stream_ids


def register(sub) -> None:
    from jobs.publish_args import add_publish_arguments

    p = sub.add_parser("publish", help="decode media and publish Arrow segments to Kafka (the converter)")
    add_publish_arguments(p)
    add_state(p)
    p.add_argument("--metrics-port", type=int, metavar="N",
                   help="serve Prometheus metrics (frames, bytes, decode errors, lag per source) on "
                        "http://HOST:N/metrics while publishing")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of the metrics endpoint (default 127.0.0.1)")
    p.set_defaults(func=cmd_publish)


def cmd_publish(args) -> int:
    from avwatch.kafka_config import client_properties
    from avwatch.stack import Stack
    from detectors.config import from_args
    from jobs.publish import publish
    from jobs.publish_args import publish_options

    ids = stream_ids(args.stream_id, args.sources)
    client_config = client_properties(args)
    bootstrap = (args.bootstrap or client_config.get("bootstrap.servers")
                 or Stack.at(args.state, args.port).bootstrap_for(client_config))
    options = publish_options(args, bootstrap=bootstrap, client_config=client_config,
                              edge_features=from_args(args.detectors, args.config) if args.edge_features else None)
    stats = publish(args.sources, ids, options, progress=sys.stderr.isatty() and not args.no_progress,
                    metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    failed = False
    for s in stats:
        if s.note:
            print(f"{s.stream_id}: note: {s.note}", file=sys.stderr)
        if s.error:
            print(f"avwatch: {s.error}", file=sys.stderr)
            failed = True
        if s.failed:
            print(f"avwatch: {s.stream_id}: {s.failed} segment(s) ({s.failed_bytes} bytes) were NOT delivered to "
                  f"{bootstrap} within --send-timeout {options.send_timeout_s:.0f} s", file=sys.stderr)
            failed = True
        print(f"{s.stream_id}: {s.frames} frames, {s.audio_s:.1f} s audio, {s.segments} segments "
              f"({s.acked} acknowledged), {s.bytes / 1e6:.2f} MB, {s.decode_errors} decode error(s)"
              + (f", {s.heartbeats} heartbeat(s)" if s.heartbeats else ""))
    return 1 if failed else 0
