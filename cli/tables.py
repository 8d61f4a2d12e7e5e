"""`avwatch events` and `avwatch report`: the events table, read with delta-rs (no JVM)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("events", help="print the events table")
    p.add_argument("--sink", required=True, metavar="DIR")
    p.add_argument("--format", choices=["table", "csv", "jsonl"], default="table")
    p.add_argument("--stream", help="only this stream id")
    p.add_argument("--detector", help="only this detector")
    p.add_argument("--since", help="only events starting at/after this time (ISO time, or e.g. 24h, 30m ago)")
    p.add_argument("--version", type=int, help="read this version of the table (time travel)")
    p.set_defaults(func=cmd_events, exit_at_once=True)  # reads only: see cli.main.run

    p = sub.add_parser("report", help="write a self-contained HTML report of the events table")
    p.add_argument("--sink", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="FILE")
    p.set_defaults(func=cmd_report, exit_at_once=True)


def cmd_events(args) -> int:
    from avwatch.events_view import print_events

    return print_events(args)


def cmd_report(args) -> int:
    from avwatch.report import write_report

    path = write_report(args.sink, args.out)
    print(f"report written to {path}")
    return 0
