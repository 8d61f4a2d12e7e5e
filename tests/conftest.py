"""Shared fixtures: one real Kafka broker and one real SparkSession per test session.

The broker is the project's own local stack (avwatch.stack) on free loopback ports with its state in a
temporary folder; Spark is built by the jobs' own session builder with a small local[2] setup.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.pipeline_fixture"]

os.environ.setdefault("AVWATCH_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))


JVM_FIXTURES = {"spark", "broker"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The suite runs on two workers (pytest.ini: -n 2 --dist loadgroup). Every test that needs the JVM
    parts (the SparkSession, the shared broker, or a Spark/Kafka process of its own) goes to one worker
    group, in file order, so the whole run still has one SparkSession and one broker; the pure-Python
    tests (detectors, footage, oracles) run on the other worker meanwhile, which uses the second core
    while the JVM tests wait on brokers, real-time publishing and process start-ups."""
    for item in items:
        if item.get_closest_marker("spark") or item.get_closest_marker("kafka") or \
                JVM_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("jvm"))


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


def running_broker(prefix: str = "avwatch-test-broker-"):
    """A generator for broker fixtures: the project's own single-node broker on free loopback ports with
    its state in a new temporary folder, stopped and purged afterwards."""
    from avwatch.stack import Stack

    state = Path(tempfile.mkdtemp(prefix=prefix))
    stack = Stack.at(state, free_port_pair())
    stack.up(echo=lambda *_: None)
    yield stack
    stack.down(purge=True, echo=lambda *_: None)
    shutil.rmtree(state, ignore_errors=True)  # the purge empties the state folder; the folder is ours too


def write_in_background(sink, df, batch_id: int):
    """Start sink.write_batch(df, batch_id) on a thread; returns (thread, the exceptions it raised)."""
    import threading

    errors: list[BaseException] = []

    def write():
        try:
            sink.write_batch(df, batch_id)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    return thread, errors


@pytest.fixture(scope="session")
def broker():
    """A running single-node Kafka broker for the whole session: yields the Stack."""
    yield from running_broker()


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
