"""The `avwatch` command line.

  avwatch stack up|down|status          the local Kafka broker (embedded default)
  avwatch jars                          resolve the Spark/Kafka jars into the cache, print their paths
  avwatch publish SOURCE...             the converter: media -> Arrow segments on Kafka
  avwatch analyze MEDIA... --sink DIR   files -> events table (through Kafka + Spark, or --local in-process)
  avwatch events --sink DIR             print the events table
  avwatch report --sink DIR --out F     a self-contained HTML report
  avwatch serve --sink DIR              a live status page: streams, open events, alerts as they come
  avwatch demo                          the main job on the embedded defaults (what `make demo` runs)
  avwatch smoke                         the foundation's end-to-end check through Kafka, Spark and Delta

Every user-facing failure is an AvwatchError: one line on stderr naming the input and the fix, exit 2
(1 when a run failed part-way). Output is avwatch's own unless --verbose (jobs/quiet.py). Commands
import their heavy dependencies lazily, so `--help` is fast.
"""
from __future__ import annotations

import argparse
import os
import sys

from avwatch.errors import AvwatchError, OptionError
from cli import analyze, demo, publish, serve, stack, tables

COMMANDS = (stack, publish, analyze, tables, serve, demo)  # each module registers its sub-commands, in help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avwatch", description="Audio/video quality monitoring on Spark.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the Spark, Kafka and pandas messages hidden otherwise")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def user_error(exc: BaseException) -> AvwatchError | None:
    """The message for a failure the user can fix (None for anything else: a bug, shown as a traceback);
    an option is named by the flag that set it."""
    if isinstance(exc, OptionError):
        from jobs.publish_args import FLAGS

        return exc.renamed(FLAGS.get(exc.option, "--" + exc.option.replace("_", "-")))
    if isinstance(exc, AvwatchError):
        return exc
    config = sys.modules.get("detectors.config")  # loaded if a detector config was read (not for --help)
    if config is not None and isinstance(exc, config.ConfigError):
        return AvwatchError(str(exc))
    return None


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser().parse_args(argv))


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed command: its exit code, user errors turned into one line on stderr."""
    from jobs.quiet import configure_output

    configure_output(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("avwatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = user_error(exc)
        if error is None:
            raise
        print(f"avwatch: {error}", file=sys.stderr)
        return error.exit_code


def run() -> None:
    """The `avwatch` console script and `python -m cli`. A command that only reads (`events`, `report`) leaves
    the process without the interpreter's teardown once its output is flushed: delta-rs and Arrow keep native
    worker threads, and tearing them down at exit can abort a finished command ("terminate called without
    an active exception", SIGABRT: delta-rs issue 2184, Arrow issue 34314; seen once in this project's test
    suite, after `avwatch events` had printed every row). Commands that run jobs, brokers or producers exit
    normally, so their own clean-up runs."""
    args = build_parser().parse_args()
    code = dispatch(args)
    if getattr(args, "exit_at_once", False):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
