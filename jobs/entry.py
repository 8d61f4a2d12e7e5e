"""The shared `main()` of the Spark jobs (stream, reanalyze): logging, arguments, one JSON summary line,
and AvwatchError as a clear message with its exit status instead of a stack trace."""
from __future__ import annotations

import json
import logging
import sys

from avwatch.errors import AvwatchError


def job_main(name: str, build_parser, run, argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "py4j"):  # the client libraries narrate every connection at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except AvwatchError as exc:
        print(f"avwatch {name}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary))
    return 0


def detector_config(args):
    """The DetectorConfig named by --detectors / --config (either may be absent): unknown detectors or
    options become a clear AvwatchError."""
    from detectors.config import DetectorConfig, parse_names

    try:
        names = parse_names(getattr(args, "detectors", None))
        path = getattr(args, "config", None)
        return DetectorConfig.from_file(path, names) if path else DetectorConfig.build(names)
    except ValueError as exc:
        raise AvwatchError(str(exc)) from None
