"""Flags and checks more than one command shares."""
from __future__ import annotations

import argparse

from avwatch.errors import AvwatchError


def add_state(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", help="local state folder (default: $AVWATCH_STATE or ./.avwatch)")


def add_port(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="broker port on 127.0.0.1 (default 9092; the controller uses port+1)")


def add_kafka_config(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--kafka-config", metavar="FILE",
                   help=f"Kafka client properties (security.protocol, sasl.*, ssl.*) {what} (docs/operations.md)")


def add_detectors(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--detectors", metavar="A,B", help=f"{what}comma-separated detector names (default: all)")
    p.add_argument("--config", metavar="FILE", help=f"{what}detector config (.toml or .json)")


def stream_ids(given: list[str] | None, sources: list[str]) -> list[str]:
    """One stream id per source: the --stream-id values in order, or each file's base name."""
    from avwatch.local import default_stream_id

    ids = list(given or [])
    if ids and len(ids) != len(sources):
        raise AvwatchError(f"--stream-id was given {len(ids)} time(s) for {len(sources)} source(s): give one per "
                           f"source, in order, or none to use the file names")
    ids = ids or [default_stream_id(s) for s in sources]
    if len(set(ids)) != len(ids):
        raise AvwatchError(f"two sources would share a stream id ({', '.join(ids)}); give --stream-id for each")
    return ids
