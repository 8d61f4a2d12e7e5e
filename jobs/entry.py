"""The shared `main()` of the Spark jobs (stream, reanalyze): quiet logging unless --verbose, arguments,
one JSON summary line, and a user error as a clear message with its exit status instead of a stack trace."""
from __future__ import annotations

import json
import sys

from avwatch.errors import AvwatchError
from detectors.config import ConfigError
from jobs.quiet import configure_output


def job_main(name: str, build_parser, run, argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the Spark, Kafka and pandas messages hidden otherwise")
    args = parser.parse_args(argv)
    configure_output(args.verbose)
    try:
        summary = run(args)
    except (AvwatchError, ConfigError) as exc:
        print(f"avwatch {name}: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    print(json.dumps(summary))
    return 0
