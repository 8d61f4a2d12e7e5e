"""Quiet by default: the commands print avwatch's own progress and results, not the engines' chatter
(Spark's log4j WARN lines and JVM banners, pandas FutureWarnings from pyspark, kafka-python's "blocking the
event loop" warnings); --verbose brings them back."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port_pair
from tests.media import read_rgb_frames, real_clip, sine, write_clip

NOISE = ("WARN", "FutureWarning", "DeprecationWarning", "blocking the event loop", "log4j", "setLogLevel")


def avwatch(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AVWATCH_VERBOSE", "PYTHONWARNINGS")}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def noise(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if any(n in line for n in NOISE)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = read_rgb_frames(real_clip("bikes"), limit=50)
    return write_clip(tmp_path_factory.mktemp("quiet") / "quiet.mkv", frames, 25, audio=sine(2.0, amplitude=0.3))


def test_local_analyze_prints_its_results_only(clip, tmp_path):
    run = avwatch("analyze", str(clip), "--local", "--sink", str(tmp_path / "sink"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("quiet: 50 frames, 2.0 s audio, ")
    assert run.stderr == "" and noise(run) == []
    assert avwatch("--verbose", "analyze", str(clip), "--local", "--sink", str(tmp_path / "sink")).returncode == 0


@pytest.mark.kafka
def test_publish_prints_its_results_only_unless_verbose(broker, clip):
    args = ["publish", str(clip), "--bootstrap", broker.bootstrap, "--video-topic", "quiet.video",
            "--audio-topic", "quiet.audio", "--no-progress"]
    run = avwatch(*args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("quiet: 50 frames, 2.0 s audio, ")
    assert noise(run) == [] and "kafka" not in run.stderr
    loud = avwatch("--verbose", *args)
    assert loud.returncode == 0, loud.stderr
    assert " kafka." in loud.stderr  # the client library's own log lines are back


@pytest.mark.spark
@pytest.mark.kafka
def test_analyze_through_kafka_and_spark_prints_no_engine_warnings(clip, tmp_path):
    """The whole real path (local stack started in a temporary state folder, converter, Spark job) in a
    fresh process, so the JVM starts as a user's first run would."""
    state, port = tmp_path / "state", free_port_pair()
    try:
        run = avwatch("analyze", str(clip), "--sink", str(tmp_path / "sink"), "--state", str(state),
                      "--port", str(port), "--detectors", "black,freeze,silence")
    finally:
        avwatch("stack", "down", "--purge", "--state", str(state), timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("quiet: 50 frames, 2.0 s audio, ")
    assert "events table: " in run.stdout
    assert noise(run) == []
