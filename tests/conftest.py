"""Shared fixtures: one real Kafka broker and one real SparkSession per test session.

The broker is the project's own local stack (avwatch.stack) on free loopback ports with its state in a
temporary folder; Spark is built by the jobs' own session builder with a small local[2] setup.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.pipeline_fixture"]

os.environ.setdefault("AVWATCH_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))


def free_port_pair() -> int:
    """A port N such that N and N+1 are both free on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@pytest.fixture(scope="session")
def broker():
    """A running single-node Kafka broker for the whole session: yields the Stack."""
    from avwatch.stack import Stack

    root = Path(tempfile.mkdtemp(prefix="avwatch-test-broker-"))
    stack = Stack.at(root, free_port_pair())
    stack.up(echo=lambda *_: None)
    yield stack
    stack.down(purge=True, echo=lambda *_: None)


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test session (local[2], no UI)."""
    from jobs.spark_session import build_session

    session = build_session("avwatch-tests", master="local[2]",
                            extra={"spark.sql.shuffle.partitions": "2", "spark.ui.enabled": "false",
                                   "spark.sql.streaming.minBatchesToRetain": "5"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session")
