"""Batch re-analysis: run the detectors again over a past time range and replace their results.

    ./spark-submit.sh reanalyze -- --sink DIR --since 24h [--streams a,b] [--detectors black] [--config f.toml]

1. Input for the range [--from, --to) (or the last --since):
   - `features` source: the frame_features table, when every chosen detector reads video features only
     (stage 2 is re-run on them; a changed stage-1 option needs the Kafka source);
   - `kafka` source: the converter's records, located by timestamp (Kafka's offsetsForTimes through
     Spark's startingTimestamp/endingTimestamp), then stage 1 exactly as in the stream job.
   `--source auto` (default) takes features when they suffice and cover the range.
   From features, each stream's rows of the range are rebuilt, in time order, into consecutive
   segments of FEATURE_SEGMENT_FRAMES frames numbered 0, 1, 2, ... (a whole stream, however many Arrow
   batches Spark reads it in).
2. Stage 2 per stream with the same code as the stream job (groupBy(stream_id).applyInPandas, the
   whole range as one window, in sequence order).
3. In one Delta transaction, through avwatch.events_table (the one writer of anomaly_events, delta-rs
   on the driver), the events of exactly these streams and detectors whose start lies in the range are
   replaced by the new ones; events the stream job commits while this runs (after the table version
   read at the start) are kept, and lost commit races are retried with backoff. The run id is derived
   from the range, streams and detector configuration; a second run whose events equal what the table
   holds for that range writes nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from avwatch.errors import AvwatchError
from avwatch.sql import timestamp_text
from jobs.publish_args import DEFAULT_AUDIO_TOPIC, DEFAULT_VIDEO_TOPIC

log = logging.getLogger("avwatch.reanalyze")

# What identifies an event's content, for the "nothing changed" comparison (not when or by which run it
# was detected: a second identical run, even over a --since range that moved a little, writes nothing).
CONTENT = ["event_id", "stream_id", "detector", "detector_version", "start_s", "end_s", "score", "threshold",
           "severity", "details"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avwatch-reanalyze", description="re-run detectors over a past time range")
    p.add_argument("--sink", required=True, help="folder of the Delta tables")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--since", help="the last N s/m/h/d, e.g. 24h")
    when.add_argument("--from", dest="start", help="range start, ISO time (UTC if no zone)")
    p.add_argument("--to", dest="end", help="range end, ISO time (default: now)")
    p.add_argument("--streams", help="comma-separated stream ids (default: every stream with data in the range)")
    p.add_argument("--detectors", help="comma-separated detector names (default: all, or the config's list)")
    p.add_argument("--config", help="detector config file (.toml or .json) with the options to use")
    p.add_argument("--source", choices=["auto", "kafka", "features"], default="auto")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the local stack's)")
    p.add_argument("--state", help="local stack state folder")
    p.add_argument("--port", type=int, help="local stack broker port")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties (security.protocol, sasl.*, ssl.*) for the Kafka source")
    p.add_argument("--video-topic", default=DEFAULT_VIDEO_TOPIC)
    p.add_argument("--audio-topic", default=DEFAULT_AUDIO_TOPIC)
    p.add_argument("--master", help="Spark master when not launched by spark-submit (default local[*])")
    p.add_argument("--dry-run", action="store_true", help="compute and print, write nothing")
    return p


def time_range(args, now: datetime | None = None) -> tuple[datetime, datetime]:
    from avwatch.events_view import parse_since
    from avwatch.times import parse_iso_time

    now = now or datetime.now(timezone.utc)
    if args.since:
        return parse_since(args.since, now), now
    try:
        start = parse_iso_time(args.start)
        end = parse_iso_time(args.end) if args.end else now
    except ValueError as exc:
        raise AvwatchError(f"--from/--to must be ISO times such as 2026-11-26T08:00:00Z ({exc})") from None
    if end <= start:
        raise AvwatchError(f"the range is empty: --to {end.isoformat()} is not after --from {start.isoformat()}")
    return start, end


def run_id_for(start: datetime, end: datetime, streams: list[str] | None, config) -> str:
    key = json.dumps([start.isoformat(), end.isoformat(), sorted(streams or []), config.describe()], sort_keys=True)
    return "reanalyze-" + hashlib.sha256(key.encode()).hexdigest()[:16]


FEATURE_SEGMENT_FRAMES = 250  # frames per segment rebuilt from the frame_features table


_ts = timestamp_text  # avwatch/sql.py: SQL timestamp text in UTC


# -- stage 2 over a range -----------------------------------------------------------------------------


def _stage2_range(config, run_id: str):
    """applyInPandas body: one stream's stage-1 rows of the whole range -> event rows."""
    import pandas as pd

    from jobs.pandas_rows import to_records
    from jobs.stream_stages import STAGE2_SCHEMA, Stage2

    stage2 = Stage2(config, run_id, lateness_s=1e9, keep_features=False)
    columns = STAGE2_SCHEMA.names

    def body(key, pdf):
        stream_id = key[0]
        rows = to_records(pdf)
        good = [r for r in rows if r.get("reason") is None]
        state = stage2.new_state()
        for kind in ("video", "audio"):  # the range starts mid-stream: begin at its first segment
            seqs = [int(r["sequence"]) for r in good if r["kind"] == kind]
            if seqs:
                stage2.analyzer.start_at(state["analyzer"], kind, min(seqs))
        out, state = stage2.process(stream_id, rows, state)
        if state is not None and state["analyzer"] is not None and not state["analyzer"].get("finished"):
            out += stage2._events(stream_id, stage2.analyzer.close(state["analyzer"]).events, state)
        events = [r for r in out if r["row_type"] == "event"]
        return pd.DataFrame([{c: r.get(c) for c in columns} for r in events], columns=columns)

    return body


def _features_source(spark, sink: str, start, end, streams):
    """The frame_features rows of the range (rebuilt into segments per stream by _features_to_stage1)."""
    from pyspark.sql import functions as F

    from avwatch.sink import FRAME_FEATURES as TABLE
    from detectors.records import FRAME_FEATURE_COLUMNS, FRAME_FEATURES as RECORD
    from jobs.spark_schemas import struct_type

    path = f"{sink}/{TABLE}"
    df = spark.read.format("delta").load(path)
    # a table written by an earlier build lacks the stage-1 columns added since: they read null (NaN), and the
    # detectors that use them go without (freeze's drift test, for one)
    types = {f.name: f.dataType for f in struct_type(RECORD).fields}
    for name in FRAME_FEATURE_COLUMNS:
        if name not in df.columns:
            df = df.withColumn(name, F.lit(None).cast(types[name]))
    df = df.where(
        (F.col("event_time") >= F.lit(_ts(start)).cast("timestamp")) &
        (F.col("event_time") < F.lit(_ts(end)).cast("timestamp")))
    if streams:
        df = df.where(F.col("stream_id").isin(streams))
    return df


def _features_to_stage1(key, table):
    """applyInArrow body: one stream's frame_features rows of the range -> STAGE1 rows: consecutive video
    segments of FEATURE_SEGMENT_FRAMES frames in time order, with sequence numbers 0, 1, 2, ..."""
    import pyarrow as pa

    from detectors.records import FRAME_FEATURE_COLUMNS, FRAME_FEATURES as RECORD
    from detectors.table import Features
    from detectors.wire import to_ipc
    from jobs.stream_stages import STAGE1_SCHEMA

    stream_id = key[0].as_py() if hasattr(key[0], "as_py") else key[0]
    if table.num_rows == 0:
        return STAGE1_SCHEMA.empty_table()
    table = table.sort_by([("event_time", "ascending"), ("frame_index", "ascending")])
    first_time = table.column("event_time")[0].as_py()
    epoch = first_time - timedelta(seconds=float(table.column("t")[0].as_py()))
    source = json.dumps({"has_video": True, "has_audio": False, "epoch": epoch.isoformat(), "live": False},
                        sort_keys=True)
    out = []
    for sequence, offset in enumerate(range(0, table.num_rows, FEATURE_SEGMENT_FRAMES)):
        part = table.slice(offset, FEATURE_SEGMENT_FRAMES)
        columns = ["t", "frame_index"] + FRAME_FEATURE_COLUMNS
        # Delta keeps fixed-size lists as plain lists: back to the record's types, so that the null lists of
        # rows older than a column read as NaN rows of its width
        feats = Features.from_arrow(part.select(columns).cast(pa.schema([RECORD.schema.field(c) for c in columns])))
        out.append({"stream_id": stream_id, "kind": "video", "sequence": sequence, "t": float(feats["t"][0]),
                    "source": source, "features": to_ipc(feats), "event_time": part.column("event_time")[0].as_py()})
    return pa.Table.from_pylist(out, schema=STAGE1_SCHEMA)


def reanalyze(spark, args, config) -> dict:
    from pyspark.sql import functions as F

    from avwatch import events_table
    from avwatch.sink import EVENTS, FRAME_FEATURES as FEATURES_TABLE
    from jobs.spark_schemas import arrow_to_spark
    from jobs.stream_stages import STAGE1_SCHEMA, STAGE2_SCHEMA, stage1_batches
    from schemas.records import ANOMALY_EVENT

    start, end = time_range(args)
    streams = [s.strip() for s in args.streams.split(",") if s.strip()] if args.streams else None
    sink = str(args.sink).rstrip("/")
    video_only = all(d.inputs == ("video",) for d in config.detectors)
    source = args.source
    if source == "auto":
        source = "features" if video_only and (Path(sink) / FEATURES_TABLE / "_delta_log").exists() else "kafka"
    if source == "features" and not video_only:
        raise AvwatchError("--source features can only re-run video detectors (audio features are not stored); "
                           "use --source kafka or choose video detectors with --detectors")
    run_id = run_id_for(start, end, streams, config)
    path = f"{sink}/{EVENTS}"
    read_version = events_table.table_version(path)  # what the stream job commits after this is kept

    if source == "features":
        stage1 = _features_source(spark, sink, start, end, streams).groupBy("stream_id").applyInArrow(
            _features_to_stage1, arrow_to_spark(STAGE1_SCHEMA))
    else:
        from avwatch.kafka_config import client_properties
        from jobs.kafka_io import kafka_source
        from jobs.stream import DEFAULT_MAX_RECORD_BYTES as max_bytes
        from jobs.stream import resolve_bootstrap

        bootstrap = resolve_bootstrap(args)
        kinds_by_topic = {args.video_topic: "video", args.audio_topic: "audio"}
        raw = (kafka_source(spark.read, bootstrap, client_properties(args), [args.video_topic, args.audio_topic],
                            max_bytes, startingTimestamp=int(start.timestamp() * 1000),
                            endingTimestamp=int(end.timestamp() * 1000),
                            startingOffsetsByTimestampStrategy="latest")  # partitions without data in range
               .load().select("key", "value", "topic", "partition", "offset", "timestamp"))
        if streams:
            raw = raw.where(F.col("key").cast("string").isin(streams))
        stage1 = raw.mapInArrow(lambda b: stage1_batches(b, config, kinds_by_topic, max_bytes),
                                arrow_to_spark(STAGE1_SCHEMA))
    stage1 = stage1.where(F.col("stream_id").isNotNull()).cache()
    found_streams = [r.stream_id for r in stage1.select("stream_id").distinct().collect()]
    target_streams = sorted(set(streams or []) | set(found_streams))
    events = (stage1.groupBy("stream_id").applyInPandas(_stage2_range(config, run_id), arrow_to_spark(STAGE2_SCHEMA))
              .where((F.col("start_time") >= F.lit(_ts(start)).cast("timestamp")) &
                     (F.col("start_time") < F.lit(_ts(end)).cast("timestamp")))
              .select(*ANOMALY_EVENT.schema.names))
    new_rows = events_table.dedupe_events([r.asDict() for r in events.collect()])
    stage1.unpersist()
    summary = {"run_id": run_id, "source": source, "from": start.isoformat(), "to": end.isoformat(),
               "streams": target_streams, "detectors": config.names, "events": len(new_rows), "written": False,
               "detector_versions": {d.name: d.version for d in config.detectors}, "read_version": read_version}
    if not target_streams:
        log.info("no data for the range: nothing to re-analyse")
        return summary
    predicate = events_table.range_predicate(target_streams, config.names, start, end)
    old_rows = events_table.select(path, predicate, read_version)
    content = lambda rows: sorted(json.dumps([r[c] for c in CONTENT], default=str) for r in rows)  # noqa: E731
    summary["replaced"] = len(old_rows)
    if content(old_rows) == content(new_rows):
        log.info("the range already holds exactly these results: nothing written")
        return summary
    if args.dry_run:
        return summary
    # one transaction: delete what the predicate matches, insert the new rows (which all satisfy it)
    out = events_table.replace(path, new_rows, predicate, read_version=read_version,
                               metadata={"avwatch": "reanalyze", "run_id": run_id,
                                         "detector_versions": summary["detector_versions"]})
    summary.update(version=out["version"], kept=out["kept"])
    summary["written"] = True
    return summary


def run(args, config=None, spark=None) -> dict:
    from jobs.spark_session import build_session

    if config is None:
        from detectors.config import from_args

        config = from_args(args.detectors, args.config)
    own = spark is None
    spark = spark or build_session("avwatch-reanalyze", master=args.master)
    try:
        return reanalyze(spark, args, config)
    finally:
        if own:
            spark.stop()


def main(argv: list[str] | None = None) -> int:
    from jobs.entry import job_main

    return job_main("reanalyze", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
