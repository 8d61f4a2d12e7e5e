"""The local stack's lifecycle through the real command line, with exact messages."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port_pair

pytestmark = pytest.mark.kafka


def avwatch(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=180)


def test_up_twice_status_down_up_again_on_the_same_data(tmp_path):
    state, port = tmp_path / "state", free_port_pair()
    first = avwatch("stack", "up", "--state", str(state), "--port", str(port))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"Kafka broker up at 127.0.0.1:{port} (state: {state}, log: ")
    try:
        again = avwatch("stack", "up", "--state", str(state))  # the port is remembered with the state
        assert again.returncode == 0
        assert again.stdout == f"Kafka broker already up at 127.0.0.1:{port} (state: {state})\n"

        # make a topic with data, so that "same data" can be checked after the restart
        from jobs.kafka_io import create_topics, producer

        create_topics(f"127.0.0.1:{port}", ["keepme"], partitions=2)
        prod = producer(f"127.0.0.1:{port}")
        for i in range(3):
            prod.send("keepme", key=b"k", value=b"v%d" % i)
        prod.flush()
        prod.close()

        status = avwatch("stack", "status", "--state", str(state))
        assert status.returncode == 0
        lines = status.stdout.splitlines()
        assert lines[0].startswith(f"Kafka broker: up at 127.0.0.1:{port} (pid ")
        assert "  keepme: 2 partition(s), 3 message(s)" in lines

        down = avwatch("stack", "down", "--state", str(state))
        assert down.returncode == 0 and down.stdout == f"Kafka broker at 127.0.0.1:{port} stopped\n"
        stopped = avwatch("stack", "status", "--state", str(state))
        assert stopped.returncode == 3 and stopped.stdout == f"Kafka broker: not running (state: {state})\n"
        assert (state / "kafka" / "data" / "meta.properties").exists()  # data kept without --purge
        assert (state / "kafka" / "broker.log").stat().st_size > 0       # logs went to the file

        up = avwatch("stack", "up", "--state", str(state))
        assert up.returncode == 0, up.stderr
        status = avwatch("stack", "status", "--state", str(state))
        assert "  keepme: 2 partition(s), 3 message(s)" in status.stdout.splitlines()
    finally:
        purge = avwatch("stack", "down", "--purge", "--state", str(state))
    assert purge.returncode == 0
    assert purge.stdout.splitlines()[-1] == f"removed broker data under {state / 'kafka'}"
    assert not (state / "kafka").exists()


def test_a_busy_port_gives_a_clear_error_not_a_stack_trace(tmp_path):
    port = free_port_pair()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = avwatch("stack", "up", "--state", str(tmp_path / "s"), "--port", str(port))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (f"avwatch: port 127.0.0.1:{port} is already in use by another process, so the local "
                             f"Kafka broker cannot bind it. Stop that process, or choose other ports with "
                             f"`avwatch stack up --port N` (uses N and N+1).\n")
    assert "Traceback" not in result.stderr


def test_down_when_not_running_is_a_no_op(tmp_path):
    result = avwatch("stack", "down", "--state", str(tmp_path / "never"))
    assert result.returncode == 0
    assert result.stdout == f"Kafka broker is not running (state: {tmp_path / 'never'})\n"


def test_missing_maven_is_named_with_the_fix(tmp_path):
    # an empty jar cache and no mvn on PATH: the error names Maven and how to install it
    env = {"AVWATCH_CACHE": str(tmp_path / "cache"), "PATH": str(Path(sys.executable).parent)}
    result = avwatch("jars", "--set", "kafka", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("avwatch: Maven (mvn) is not installed")
    assert "apt-get install maven" in result.stderr


def test_unreachable_registry_is_reported_with_the_fix(tmp_path):
    # a Maven settings file that sends every download to a closed loopback port, in an empty repository
    settings = tmp_path / "settings.xml"
    settings.write_text("""<settings><localRepository>%s</localRepository><mirrors><mirror><id>closed</id>
      <mirrorOf>*</mirrorOf><url>http://127.0.0.1:9/maven2</url></mirror></mirrors></settings>""" % (tmp_path / "m2"))
    mvn_wrapper = tmp_path / "bin" / "mvn"
    mvn_wrapper.parent.mkdir()
    real_mvn = subprocess.run(["which", "mvn"], capture_output=True, text=True).stdout.strip()
    mvn_wrapper.write_text(f"#!/bin/sh\nexec {real_mvn} -s {settings} \"$@\"\n")
    mvn_wrapper.chmod(0o755)
    env = {"AVWATCH_CACHE": str(tmp_path / "cache"), "PATH": f"{mvn_wrapper.parent}:{os.environ['PATH']}"}
    result = avwatch("jars", "--set", "kafka", env=env)
    assert result.returncode == 2
    assert "could not resolve the kafka jars from Maven Central" in result.stderr
    assert "https://repo.maven.apache.org" in result.stderr and "settings.xml" in result.stderr


def test_second_resolution_needs_no_network(tmp_path):
    # the cache from the session's set-up is complete: with Maven unusable, jars still resolve
    env = {"PATH": str(Path(sys.executable).parent)}
    result = avwatch("jars", "--set", "spark", "--csv", env=env)
    assert result.returncode == 0, result.stderr
    assert "spark-sql-kafka-0-10_2.13-4.2.0.jar" in result.stdout and "delta-spark" in result.stdout


def test_cluster_ids_never_start_with_a_dash():
    """The storage tool reads an id that starts with '-' as an option; 1 random id in 64 would."""
    import base64

    from avwatch.stack import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)  # a whole UUID, URL-safe base64
