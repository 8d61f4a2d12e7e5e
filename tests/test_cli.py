"""The local reference path and the events table through the real command line."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from avwatch.samples import field_camera, studio_feed
from tests.video_clips import encode


def avwatch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    clips = [studio_feed(folder), field_camera(folder)]
    out = avwatch("analyze", *[str(c.path) for c in clips], "--local", "--sink", str(folder / "sink"))
    assert out.returncode == 0, out.stderr
    assert "studio_feed: 250 frames, 10.0 s audio, " in out.stdout
    assert "field_camera: 195 frames, 7.2 s audio" in out.stdout
    return folder / "sink"


def test_events_table_format_lists_the_defects(sink):
    out = avwatch("events", "--sink", str(sink))
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:7] == ["stream_id", "detector", "start_s", "end_s", "state", "score", "threshold"]
    assert any(line.split()[:4] == ["field_camera", "frame_drop", "2.400", "2.600"] for line in lines)
    assert any(line.split()[:4] == ["studio_feed", "black", "1.000", "2.200"] for line in lines)
    assert lines[-1].endswith("event(s)")


def test_events_csv_and_jsonl_carry_the_same_rows(sink):
    rows = list(csv.DictReader(io.StringIO(avwatch("events", "--sink", str(sink), "--format", "csv").stdout)))
    lines = [json.loads(x) for x in avwatch("events", "--sink", str(sink), "--format", "jsonl").stdout.splitlines()]
    assert len(rows) == len(lines) > 8
    assert {r["event_id"] for r in rows} == {r["event_id"] for r in lines}
    assert {"stream_id", "detector", "start_s", "end_s", "score", "details"} <= set(rows[0])
    assert json.loads(lines[0]["details"]) is not None and "evidence" not in lines[0]


def test_filters_and_time_travel(sink):
    only = [json.loads(x) for x in avwatch("events", "--sink", str(sink), "--format", "jsonl", "--stream",
                                           "field_camera", "--detector", "blur").stdout.splitlines()]
    assert [(r["detector"], r["start_s"], r["end_s"]) for r in only] == [("blur", 5.0, 7.0)]
    # the local runner's clock starts at 2000-01-01: --since 24h finds nothing, an ISO time finds all
    assert avwatch("events", "--sink", str(sink), "--since", "24h").stdout == "no events\n"
    assert "event(s)" in avwatch("events", "--sink", str(sink), "--since", "1999-12-31T00:00:00").stdout
    # analysing one file again replaces its stream's events in a new table version; the version before it
    # still holds the first run's
    from avwatch.events_table import table_version

    before = table_version(str(sink / "anomaly_events"))
    again = avwatch("analyze", str(sink.parent / "field_camera.mkv"), "--local", "--sink", str(sink),
                    "--detectors", "blur")
    assert again.returncode == 0
    now = [json.loads(x) for x in avwatch("events", "--sink", str(sink), "--format", "jsonl", "--stream",
                                          "field_camera").stdout.splitlines()]
    assert [r["detector"] for r in now] == ["blur"]
    v0 = [json.loads(x) for x in avwatch("events", "--sink", str(sink), "--format", "jsonl", "--stream",
                                         "field_camera", "--version", str(before)).stdout.splitlines()]
    assert {r["detector"] for r in v0} == {"frame_drop", "blur", "audio_gap"}


def test_clear_errors():
    out = avwatch("events", "--sink", "/nonexistent/sink")
    assert out.returncode == 2 and out.stderr.startswith("avwatch: no anomaly_events table under /nonexistent/sink")
    out = avwatch("analyze", "x.mp4", "--local", "--sink", "/tmp/x", "--detectors", "black,nope")
    assert out.returncode == 2 and "unknown detector(s) nope; choose from black, freeze" in out.stderr
    out = avwatch("events", "--sink", "/tmp", "--since", "last tuesday")
    assert out.returncode == 2 and "--since takes a duration such as 24h" in out.stderr
    out = avwatch("analyze", "/nonexistent.mp4", "--local", "--sink", "/tmp/x")
    assert out.returncode == 1 and "avwatch: /nonexistent.mp4: no such file" in out.stderr


def test_a_file_cut_short_is_named_and_nothing_is_said_written(tmp_path):
    # an MP4 whose index (written last) never came: FFmpeg reads it as invalid data
    rng = np.random.default_rng(7)
    mp4 = encode(tmp_path / "whole.mp4", [rng.integers(0, 256, (180, 320, 3), np.uint8) for _ in range(50)])
    whole = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[:len(whole) // 3])
    out = avwatch("analyze", str(cut), "--local", "--sink", str(tmp_path / "sink"))
    assert out.returncode == 1
    assert f"avwatch: {cut} is not a media file FFmpeg can read, or it is damaged or cut short" in out.stderr
    assert "no file analysed; nothing written to the events table" in out.stderr
    assert "events table:" not in out.stdout and not (tmp_path / "sink").exists()


def test_only_commands_that_read_leave_without_the_interpreter_teardown():
    # cli.main.run: `events` and `report` exit once their output is flushed (native threads of delta-rs and
    # Arrow can abort a finished process at teardown); commands that run jobs, brokers or producers do not
    from cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["events", "--sink", "x"]).exit_at_once
    assert parser.parse_args(["report", "--sink", "x", "--out", "r.html"]).exit_at_once
    for argv in (["analyze", "f.mp4", "--sink", "x"], ["publish", "f.mp4"], ["stack", "up"], ["serve", "--sink", "x"],
                 ["demo"]):
        assert not getattr(parser.parse_args(argv), "exit_at_once", False), argv
