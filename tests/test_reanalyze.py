"""Batch re-analysis on the real table the stream job wrote, and the example schedule."""
from __future__ import annotations

import ast
import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from avwatch.samples import studio_feed
from jobs.kafka_io import create_topics
from jobs.publish import PublishOptions, publish
from jobs.reanalyze import build_parser as reanalyze_parser
from jobs.reanalyze import run as reanalyze
from jobs.stream import build_parser as stream_parser
from jobs.stream import run as stream

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def streamed(spark, broker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("re")
    clip = studio_feed(folder)
    topics = ("re.video", "re.audio")
    create_topics(broker.bootstrap, list(topics), partitions=2)
    publish([str(clip.path)], ["feed"], PublishOptions(bootstrap=broker.bootstrap, video_topic=topics[0],
                                                        audio_topic=topics[1]))
    sink = folder / "sink"
    stream(stream_parser().parse_args(["--bootstrap", broker.bootstrap, "--video-topic", topics[0], "--audio-topic",
                                       topics[1], "--sink", str(sink), "--until-idle", "--features",
                                       "--alerts-topic", ""]), spark=spark)
    return {"sink": sink, "topics": topics, "folder": folder}


def events(sink) -> list[dict]:
    return sorted(DeltaTable(str(sink / "anomaly_events")).to_pyarrow_table().to_pylist(),
                  key=lambda r: (r["detector"], r["start_s"]))


@pytest.mark.spark
@pytest.mark.kafka
@pytest.mark.parametrize("source,threshold", [("kafka", 0.99), ("features", 0.985)])
def test_changed_threshold_replaces_exactly_that_range_and_detector_once(spark, broker, streamed, source, threshold,
                                                                       tmp_path):
    sink = streamed["sink"]
    before = events(sink)
    black_before = [r for r in before if r["detector"] == "black"]
    assert [(r["start_s"], r["end_s"]) for r in black_before] == [(1.0, 2.2)]
    assert black_before[0]["threshold"] != threshold
    version_before = DeltaTable(str(sink / "anomaly_events")).version()

    config = tmp_path / "black.toml"
    config.write_text(f"[options.black]\nmin_duration_s = 0.5\npicture_threshold = {threshold}\n")
    args = ["--sink", str(sink), "--since", "1h", "--detectors", "black", "--config", str(config),
            "--bootstrap", broker.bootstrap, "--video-topic", streamed["topics"][0], "--audio-topic",
            streamed["topics"][1], "--source", source]
    summary = reanalyze(reanalyze_parser().parse_args(args), spark=spark)
    assert summary["written"] and summary["source"] == source and summary["streams"] == ["feed"]
    after = events(sink)
    black_after = [r for r in after if r["detector"] == "black"]
    assert len(black_after) == 1 and black_after[0]["run_id"] == summary["run_id"]
    assert black_after[0]["detector_version"] == summary["detector_versions"]["black"]
    assert black_after[0]["threshold"] == threshold                 # the new options were used
    others = lambda rows: [(r["event_id"], r["detected_at"]) for r in rows if r["detector"] != "black"]  # noqa
    assert others(after) == others(before)                           # every other event untouched

    table = DeltaTable(str(sink / "anomaly_events"))
    assert table.version() == version_before + 1                     # one transaction
    commit = table.history(1)[0]
    assert json.loads(commit["userMetadata"])["run_id"] == summary["run_id"]

    again = reanalyze(reanalyze_parser().parse_args(args), spark=spark)
    assert not again["written"]                                      # an identical run changes nothing
    assert DeltaTable(str(sink / "anomaly_events")).version() == version_before + 1
    assert events(sink) == after


def test_bad_ranges_are_clear():
    from avwatch.errors import AvwatchError
    from jobs.reanalyze import time_range

    args = reanalyze_parser().parse_args(["--sink", "x", "--from", "2026-01-02", "--to", "2026-01-01"])
    with pytest.raises(AvwatchError, match="the range is empty"):
        time_range(args)
    args = reanalyze_parser().parse_args(["--sink", "x", "--from", "yesterday"])
    with pytest.raises(AvwatchError, match="ISO times"):
        time_range(args)


def test_airflow_dag_parses_and_submits_the_reanalyze_job_without_airflow_installed():
    path = ROOT / "deploy" / "airflow" / "avwatch_reanalyze_dag.py"
    ast.parse(path.read_text())
    made = {}

    class DAG:  # the smallest stand-ins for the three Airflow names the file uses
        def __init__(self, **kw):
            made["dag"] = kw

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Variable:
        @staticmethod
        def get(name, default_var=None):
            return default_var

    class SparkSubmitOperator:
        def __init__(self, **kw):
            made["task"] = kw

    fake = {"airflow": types.ModuleType("airflow"), "airflow.models": types.ModuleType("airflow.models"),
            "airflow.providers.apache.spark.operators.spark_submit": types.ModuleType("ss")}
    fake["airflow"].DAG = DAG
    fake["airflow.models"].Variable = Variable
    fake["airflow.providers.apache.spark.operators.spark_submit"].SparkSubmitOperator = SparkSubmitOperator
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    try:
        exec(compile(path.read_text(), str(path), "exec"), {"__name__": "dag"})
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert made["dag"]["dag_id"] == "avwatch_reanalyze_daily" and made["dag"]["schedule"] == "30 2 * * *"
    task = made["task"]
    assert task["application"].endswith("jobs/reanalyze.py")
    assert "--sink" in task["application_args"] and "--from" in task["application_args"]
    assert (ROOT / "jobs" / "reanalyze.py").exists()
    # the job accepts exactly the arguments the DAG passes
    args = [a if "{{" not in a else "2026-01-01T00:00:00+00:00" for a in task["application_args"]]
    reanalyze_parser().parse_args(args)


def _concurrent_row(k: int, when) -> dict:
    from datetime import timedelta

    return {"event_id": f"concurrent-{k}", "stream_id": "feed", "detector": "black", "detector_version": "1",
            "start_s": 0.01 * k, "end_s": 0.01 * k + 0.5, "start_time": when + timedelta(seconds=0.01 * k),
            "end_time": when + timedelta(seconds=0.01 * k + 0.5), "score": 1.0, "threshold": 0.5,
            "severity": "major", "details": "{}", "evidence": None, "run_id": "concurrent-writer",
            "detected_at": None}


@pytest.mark.spark
@pytest.mark.kafka
def test_features_source_through_spark_submit_analyses_whole_streams_while_the_stream_job_writes(streamed,
                                                                                                  tmp_path):
    """`--source features` as a user runs it (a fresh spark-submit process) on a stream read in many
    Arrow batches of 16 rows: the events late in the stream are found and the early ones kept; a writer
    merging batches into the same table meanwhile (as the stream job does) loses nothing."""
    import shutil
    import subprocess
    import threading
    from datetime import datetime, timedelta, timezone

    from avwatch import events_table

    sink = tmp_path / "sink"
    shutil.copytree(streamed["sink"], sink)                 # this test's own copy of the streamed tables
    chosen = ("black", "colorbars", "solid_color", "freeze")
    key = lambda r: (r["detector"], r["start_s"], r["end_s"])  # noqa: E731
    before = sorted(key(r) for r in events(sink) if r["detector"] in chosen)
    frames = DeltaTable(str(sink / "frame_features")).to_pyarrow_table()
    assert frames.num_rows > 10 * 16                         # a stream of many Arrow batches
    late = max(r[1] for r in before)
    assert late > frames.num_rows / 25 * 0.7                 # an event in the last third of the stream
    config = tmp_path / "black.toml"
    config.write_text("[options.black]\nmin_duration_s = 0.5\npicture_threshold = 0.98\n")

    table = str(sink / "anomaly_events")
    when = datetime.now(timezone.utc) - timedelta(minutes=10)
    committed: dict[str, int] = {}
    stop = threading.Event()

    def stream_writer():  # the stream job's writes: batches merged by event id, app transaction per batch
        k = 0
        while not stop.is_set():
            row = _concurrent_row(k, when)
            version = events_table.merge_batch(table, [row], "concurrent-events", k)
            committed[row["event_id"]] = version
            k += 1
            stop.wait(1.0)  # a micro-batch with events every trigger (1 s)

    writer = threading.Thread(target=stream_writer)
    writer.start()
    try:
        result = subprocess.run(
            [str(ROOT / "spark-submit.sh"), "reanalyze", "--master", "local[2]",
             "--conf", "spark.sql.execution.arrow.maxRecordsPerBatch=16", "--conf", "spark.ui.enabled=false",
             "--", "--sink", str(sink), "--since", "1h", "--source", "features", "--detectors", ",".join(chosen),
             "--config", str(config)], capture_output=True, text=True, timeout=600)
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, "\n".join(line for line in result.stderr.splitlines()
                                             if " INFO " not in line and " WARN " not in line)[-4000:] + result.stdout[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["written"] and summary["source"] == "features" and summary["streams"] == ["feed"]

    after = events(sink)
    mine = [r for r in after if r["detector"] in chosen and r["run_id"] != "concurrent-writer"]
    assert sorted(map(key, mine)) == before                  # every event found again, the late one too
    assert all(r["run_id"] == summary["run_id"] for r in mine)
    assert [r["threshold"] for r in mine if r["detector"] == "black"] == [0.98]
    present = {r["event_id"] for r in after}
    read_version = summary["read_version"]
    assert any(v > read_version for v in committed.values())  # the writer committed while it ran
    for event_id, version in committed.items():
        # written after the re-analysis read the table: kept; before: inside the replaced range, replaced
        assert (event_id in present) == (version > read_version), (event_id, version, read_version)


@pytest.mark.spark
@pytest.mark.kafka
def test_a_features_table_from_before_a_stage1_column_takes_appends_and_serves_reanalysis(spark, broker, streamed,
                                                                                        tmp_path):
    """An upgrade adds a stage-1 column (freeze_cell_means, 2026-11-28). The stream job appends to a sink's
    frame_features table written by the earlier build, which gains the column (its older rows null there)
    instead of stopping the job; re-analysis from that table reads the older rows' column as NaN and finds
    the same events in them as in the rows written whole."""
    from deltalake import write_deltalake

    sink = tmp_path / "sink"
    written = DeltaTable(str(streamed["sink"] / "frame_features")).to_pyarrow_table()
    older = written.drop_columns(["freeze_cell_means"])     # the table as the earlier build wrote it ...
    older = older.set_column(older.schema.get_field_index("stream_id"), "stream_id",
                             pa.array(["feed-old"] * older.num_rows))   # ... for another stream
    write_deltalake(str(sink / "frame_features"), older, partition_by=["stream_id", "date"])

    stream(stream_parser().parse_args(["--bootstrap", broker.bootstrap, "--video-topic", streamed["topics"][0],
                                       "--audio-topic", streamed["topics"][1], "--sink", str(sink),
                                       "--until-idle", "--features", "--alerts-topic", ""]), spark=spark)
    table = DeltaTable(str(sink / "frame_features")).to_pyarrow_table(columns=["stream_id", "freeze_cell_means"])
    cells = {sid: [c for s, c in zip(table.column("stream_id").to_pylist(),
                                     table.column("freeze_cell_means").to_pylist()) if s == sid]
             for sid in ("feed", "feed-old")}
    assert cells["feed"] and all(c is not None and len(c) == 16 for c in cells["feed"])
    assert cells["feed-old"] and all(c is None for c in cells["feed-old"])

    summary = reanalyze(reanalyze_parser().parse_args(
        ["--sink", str(sink), "--since", "1h", "--source", "features", "--detectors", "black,freeze"]), spark=spark)
    assert summary["written"] and summary["source"] == "features"
    assert sorted(summary["streams"]) == ["feed", "feed-old"]
    found = {sid: sorted((r["detector"], r["start_s"], r["end_s"]) for r in events(sink)
                         if r["stream_id"] == sid and r["run_id"] == summary["run_id"])
             for sid in ("feed", "feed-old")}
    assert {d for d, _, _ in found["feed"]} == {"black", "freeze"}
    assert found["feed-old"] == found["feed"]
