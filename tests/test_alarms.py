"""Alarms while a defect lasts (detectors/alarms.py through the analyzer, no Kafka or Spark): raised as
soon as the defect has lasted its minimum duration, refreshed while it lasts, cleared at its end, one
alarm per root cause."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avwatch.local import analyze_source
from avwatch.samples import read_rgb_frames, real_clip, sine, write_clip
from detectors.alarms import AlarmPolicy
from detectors.analyzer import StreamAnalyzer
from detectors.config import DetectorConfig

FPS = 25


@pytest.fixture(scope="module")
def long_black(tmp_path_factory) -> Path:
    """40 s of real footage whose picture cuts to black at 5 s and stays black for 30 s (sound goes on)."""
    frames = read_rgb_frames(real_clip("bikes"), size=(160, 90))
    frames = (frames * 5)[:40 * FPS]
    for i in range(5 * FPS, 35 * FPS):
        frames[i] = np.zeros_like(frames[i])
    return write_clip(tmp_path_factory.mktemp("alarms") / "black.mkv", frames, FPS, audio=sine(40.0, amplitude=0.1))


def reports_of(result, detector):
    return [r for r in result.reports if r["detector"] == detector]


def test_a_long_black_is_raised_after_its_minimum_updated_and_cleared(long_black):
    result = analyze_source(str(long_black), DetectorConfig.build(["black", "freeze"]))
    black = reports_of(result, "black")
    states = [(r["state"], r["start_s"], r["end_s"]) for r in black]
    assert states[0] == ("open", 5.0, 6.0)                           # raised after 1 s of black
    assert states[-1] == ("closed", 5.0, 35.0)                       # cleared when the picture returns
    updates = [end for state, _, end in states if state == "ongoing"]
    assert updates == [16.0, 26.0]                                   # every 10 s of media while it lasts
    assert len({r["event_id"] for r in black}) == 1                  # one alarm: the same id throughout
    assert [r["state"] for r in result.rows if r["detector"] == "black"] == ["closed"]  # the table: latest


def test_a_black_picture_is_one_alarm_not_black_and_freeze(long_black):
    result = analyze_source(str(long_black), DetectorConfig.build(["black", "freeze"]))
    freeze = reports_of(result, "freeze")
    assert freeze, "the black picture is also frozen: freeze sees it"
    assert all(json.loads(r["details"])["suppressed_by"]["detector"] == "black" for r in freeze)
    closed_black = [r for r in reports_of(result, "black") if r["state"] == "closed"][0]
    assert json.loads(closed_black["details"])["suppresses"] == ["freeze"]


def test_a_suppression_rule_can_be_turned_off(long_black):
    config = DetectorConfig.build(["black", "freeze"])
    analyzer = StreamAnalyzer(config, alarms=AlarmPolicy.build(disabled=["black:freeze"]))
    result = analyze_source(str(long_black), config, analyzer=analyzer)
    assert all("suppressed_by" not in json.loads(r["details"]) for r in reports_of(result, "freeze"))
    with pytest.raises(ValueError, match="unknown suppression rule"):
        AlarmPolicy.build(disabled=["black:loudness"])


def test_updates_can_be_turned_off(long_black):
    config = DetectorConfig.build(["black"])
    result = analyze_source(str(long_black), config, analyzer=StreamAnalyzer(config, alarms=AlarmPolicy.build(0)))
    assert [r["state"] for r in reports_of(result, "black")] == ["open", "closed"]


def test_a_defect_shorter_than_its_minimum_raises_nothing(tmp_path):
    frames = read_rgb_frames(real_clip("bikes"), limit=100, size=(160, 90))
    for i in range(40, 60):   # 0.8 s of black: under black's 1 s minimum
        frames[i] = np.zeros_like(frames[i])
    result = analyze_source(str(write_clip(tmp_path / "short.mkv", frames, FPS)), DetectorConfig.build(["black"]))
    assert result.reports == []


def test_the_sink_alerts_each_state_change_once_in_order_and_skips_what_stage2_held_back():
    from jobs.sinks import alert_reports

    def report(event_id, state, end, alert=True, start=1.0):
        return {"event_id": event_id, "stream_id": "s", "detector": "black", "detector_version": "1",
                "start_s": start, "end_s": end, "start_time": None, "end_time": None, "score": 1.0,
                "threshold": 0.5, "severity": "major", "details": "{}", "evidence": None, "run_id": "r",
                "detected_at": None, "state": state, "alert": alert}

    reports = [report("a", "closed", 9.0), report("a", "open", 2.0), report("a", "ongoing", 5.0),
               report("a", "open", 2.0),                                   # the same report twice (a replay)
               report("b", "closed", 3.0, alert=False, start=0.5)]         # suppressed or history
    assert [(r["event_id"], r["state"], r["end_s"]) for r in alert_reports(reports)] == [
        ("a", "open", 2.0), ("a", "ongoing", 5.0), ("a", "closed", 9.0)]
