"""The Structured Streaming job: Kafka -> per-stream detectors -> Delta tables + alerts topic.

    Kafka (video + audio topics), key = stream id
      │ grouped by stream id (the key read as text)
      ▼ one stateful step per stream (applyInPandasWithState, jobs/stream_stages.py StreamStep): check and
      │   decode each record, compute its stage-1 features, reorder by sequence number and run every
      │   detector's state machine, all in one Python call; a processing-time timeout per stream drives
      │   stall detection and the end of streams that vanish
      ▼ foreachBatch (jobs/sinks.py): the alerts topic first (key = event_id, once per batch, recorded in
          _alerts_sent), then Delta (exactly-once): anomaly_events (MERGE on event_id), dead_letter,
          frame_features (append), each with an app transaction so a replayed micro-batch is skipped

Run it with ./spark-submit.sh stream [...] on a cluster or locally, or `python -m jobs.stream`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid

from avwatch.errors import AvwatchError
from avwatch.locations import join_uri, local_path
from jobs.publish_options import DEFAULT_AUDIO_TOPIC, DEFAULT_VIDEO_TOPIC

log = logging.getLogger("avwatch.stream")

DEFAULT_ALERTS_TOPIC = "avwatch.alerts"
DEFAULT_MAX_RECORD_BYTES = 12 * 1024 * 1024
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 2000  # records: a segment is ~1 s of one stream's video or audio
LOCAL_CHECKPOINT_FILE_MANAGER = \
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avwatch-stream", description="avwatch streaming job")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: the local stack's)")
    p.add_argument("--state", help="local stack state folder (to find its broker when --bootstrap is not given)")
    p.add_argument("--port", type=int, help="local stack broker port")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="Kafka client properties (security.protocol, sasl.*, ssl.*) for every Kafka client of the "
                        "job: the source, the alerts producer, topic creation (docs/operations.md)")
    p.add_argument("--topic-partitions", type=int, default=None, metavar="N",
                   help="partitions of topics created here (default: the cores Spark has, so that each reads one; "
                        "an existing topic keeps its own)")
    p.add_argument("--topic-replication", type=int, default=1,
                   help="replication factor of topics created here (default 1: the single-node local stack)")
    p.add_argument("--video-topic", default=DEFAULT_VIDEO_TOPIC)
    p.add_argument("--audio-topic", default=DEFAULT_AUDIO_TOPIC)
    p.add_argument("--alerts-topic", default=DEFAULT_ALERTS_TOPIC, help="'' disables alerts")
    p.add_argument("--sink", required=True, help="folder of the Delta tables (local path or any Hadoop URI)")
    p.add_argument("--checkpoint", help="checkpoint location (default: <sink>/_checkpoints/stream)")
    p.add_argument("--detectors", help="comma-separated detector names (default: all, or the config's list)")
    p.add_argument("--config", help="detector config file (.toml or .json)")
    p.add_argument("--lateness", type=float, default=30.0, metavar="SECONDS",
                   help="allowed lateness: how far newer segments may run ahead of a missing one (media s)")
    p.add_argument("--stall-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="processing time without records after which a stream's clock is advanced (stall)")
    p.add_argument("--trigger", type=float, default=0.5, metavar="SECONDS",
                   help="micro-batch interval (default 0.5; a batch runs only when records arrived)")
    p.add_argument("--until-idle", action="store_true", help="process what is in Kafka now, then stop (availableNow)")
    p.add_argument("--starting-offsets", default="earliest", choices=["earliest", "latest"])
    p.add_argument("--max-offsets-per-trigger", type=int, default=DEFAULT_MAX_OFFSETS_PER_TRIGGER, metavar="N",
                   help="cap on records per micro-batch, so that a backlog (a restart, a new checkpoint) runs in "
                        f"batches of bounded memory (default {DEFAULT_MAX_OFFSETS_PER_TRIGGER}: ~1,000 stream-seconds "
                        "of segments; 0: no cap)")
    p.add_argument("--min-offsets-per-trigger", type=int, metavar="N",
                   help="wait for at least N new records (or --max-trigger-delay) before a micro-batch: fewer, "
                        "larger batches when many streams trickle in, at the price of latency (default: none)")
    p.add_argument("--max-trigger-delay", type=float, default=2.0, metavar="SECONDS",
                   help="with --min-offsets-per-trigger: the longest a micro-batch waits for them (default 2)")
    p.add_argument("--state-partitions", type=int, default=None, metavar="N",
                   help="partitions of the per-stream state: how many tasks run the streams' detectors at once "
                        "(default: the cores Spark has; each costs a state-store commit per micro-batch; fixed "
                        "by the first run of a checkpoint, docs/operations.md)")
    p.add_argument("--max-record-bytes", type=int, default=DEFAULT_MAX_RECORD_BYTES,
                   help="records larger than this go to the dead-letter table")
    p.add_argument("--features", action="store_true", help="also write the frame_features table")
    p.add_argument("--alert-retry-s", type=float, default=300.0, metavar="SECONDS",
                   help="how long a batch's alerts are retried (with backoff) while the alerts topic's broker is "
                        "unreachable before the batch fails (default 300)")
    p.add_argument("--alarm-update", type=float, default=10.0, metavar="SECONDS",
                   help="while a defect lasts, refresh its open alarm at most this often (media s; 0: never)")
    p.add_argument("--no-suppress", action="append", default=[], metavar="RULE",
                   help="turn a root-cause rule off, e.g. black:freeze, or every rule of a root, e.g. stall "
                        "(repeatable; rules in docs/operations.md)")
    p.add_argument("--alert-max-age", type=float, default=300.0, metavar="SECONDS",
                   help="events older than this (publication wall clock) when first seen are written but not "
                        "alerted: a replay or a new checkpoint does not flood the alerts channel")
    p.add_argument("--alert-webhook", action="append", metavar="URL",
                   help="POST each event state (open, ongoing, closed) as JSON to this URL, once; repeatable "
                        "(docs/operations.md: payload, signature header, retries)")
    p.add_argument("--alert-webhook-secret", metavar="SECRET", default=os.environ.get("AVWATCH_WEBHOOK_SECRET"),
                   help="sign each webhook body with HMAC-SHA256 in the X-Avwatch-Signature header "
                        "(default: $AVWATCH_WEBHOOK_SECRET; none: unsigned)")
    p.add_argument("--alert-webhook-format", choices=["json", "slack"], default="json",
                   help="json: avwatch's payload (default); slack: {\"text\": ...} for Slack-compatible incoming "
                        "webhooks")
    p.add_argument("--metrics-port", type=int, metavar="N",
                   help="serve Prometheus metrics on http://HOST:N/metrics from the driver (avwatch's, plus "
                        "Spark's own while its UI is on)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of the metrics endpoint (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--idle-state-ttl", type=float, default=3600.0, metavar="SECONDS",
                   help="a live stream without records this long (processing time) is closed: its open defects "
                        "are ended and its state removed")
    p.add_argument("--ended-state-ttl", type=float, default=300.0, metavar="SECONDS",
                   help="how long an ended stream's small tombstone is kept to recognise stragglers")
    p.add_argument("--run-id", help="id recorded with every row (default: a new one per start)")
    p.add_argument("--master", help="Spark master when not launched by spark-submit (default local[*])")
    p.add_argument("--timeout", type=float, help="stop after this many seconds (soak tests, benchmarks)")
    return p


def resolve_bootstrap(args) -> str:
    """--bootstrap, else the --kafka-config file's bootstrap.servers, else the local stack's broker."""
    if args.bootstrap:
        return args.bootstrap
    from avwatch.kafka_config import client_properties

    if client_properties(args).get("bootstrap.servers"):
        return client_properties(args)["bootstrap.servers"]
    from avwatch.stack import Stack

    return Stack.at(args.state, args.port).bootstrap_for(client_properties(args))


def app_id(spark, checkpoint: str) -> str:
    """A stable id for this checkpoint (Delta's txnAppId): the same across restarts, new per checkpoint.
    It is kept in the checkpoint, on the checkpoint's own filesystem (HDFS, S3, ...), so a driver restarted
    on another host finds it."""
    from jobs.checkpoint_files import read_text, write_text_once

    location = join_uri(checkpoint, "avwatch_app_id")
    value = read_text(spark, location)
    if value:
        return value.strip()
    return write_text_once(spark, location, f"avwatch-stream-{uuid.uuid4().hex}\n").strip()


def on_local_file_system(spark, location: str) -> bool:
    """A file:// URI, or a plain path while the cluster's default file system is the local one."""
    if local_path(location) is None:
        return False
    if str(location).startswith("file:"):
        return True
    default_fs = spark.sparkContext._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    return default_fs.startswith("file:")


def trigger_sizing(args) -> dict:
    """The Kafka source's batch-size options: a default cap so that a backlog is cut into bounded batches,
    and, when asked, a minimum that lets records gather for up to --max-trigger-delay."""
    out = {"startingOffsets": args.starting_offsets}
    if args.max_offsets_per_trigger:
        out["maxOffsetsPerTrigger"] = args.max_offsets_per_trigger
    if args.min_offsets_per_trigger:
        out["minOffsetsPerTrigger"] = args.min_offsets_per_trigger
        out["maxTriggerDelay"] = f"{int(args.max_trigger_delay * 1000)}ms"
    return out


def build_query(spark, args, config, bootstrap: str, run_id: str, metrics=None):
    """Wire the streaming query (not started): returns (DataStreamWriter, the sink writer object)."""
    from pyspark.sql import functions as F
    from pyspark.sql.streaming.state import GroupStateTimeout

    from avwatch.kafka_config import client_properties
    from detectors.alarms import AlarmPolicy
    from jobs.kafka_io import kafka_source
    from jobs.sinks import BatchSink
    from jobs.spark_schemas import arrow_to_spark
    from jobs.stream_stages import STAGE2_SCHEMA, Stage2, StreamStep

    kinds_by_topic = {args.video_topic: "video", args.audio_topic: "audio"}
    reader = kafka_source(spark.readStream, bootstrap, client_properties(args), [args.video_topic, args.audio_topic],
                          args.max_record_bytes, **trigger_sizing(args))
    # No watermark: streams do not share a clock (a file re-published on an old epoch beside a live camera),
    # and a watermark on the record timestamp would make the stateful operator drop the rows of the stream
    # that is behind. Lateness is judged per stream in media time by stage 2 (late rows are dead letters).
    raw = (reader.load()
           .select(F.col("key").cast("string").alias("stream_id"), "key", "value", "topic", "partition", "offset",
                   "timestamp"))
    stage2 = Stage2(config, run_id, args.lateness, keep_features=args.features,
                    idle_ttl_s=args.idle_state_ttl, ended_ttl_s=args.ended_state_ttl,
                    alarms=AlarmPolicy.build(args.alarm_update, args.no_suppress), alert_max_age_s=args.alert_max_age)
    step = StreamStep(stage2, kinds_by_topic, args.max_record_bytes, args.stall_timeout, finite=args.until_idle)
    output = (raw.groupBy("stream_id")
              .applyInPandasWithState(step, arrow_to_spark(STAGE2_SCHEMA), "state binary", "append",
                                      GroupStateTimeout.ProcessingTimeTimeout))
    checkpoint = args.checkpoint or join_uri(args.sink, "_checkpoints", "stream")
    from jobs.webhooks import targets_from_args

    sink = BatchSink(spark, args.sink, app_id(spark, checkpoint), bootstrap, args.alerts_topic, run_id,
                     keep_features=args.features, alert_retry_s=args.alert_retry_s,
                     client_config=client_properties(args),
                     webhooks=targets_from_args(args.alert_webhook, args.alert_webhook_secret,
                                                args.alert_webhook_format),
                     metrics=metrics)
    writer = (output.writeStream.foreachBatch(sink.write_batch)
              .option("checkpointLocation", checkpoint).queryName("avwatch-stream"))
    if args.until_idle:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{args.trigger} seconds")
    return writer, sink


def run(args, config=None, spark=None) -> dict:
    """Start the job and block until it stops (until-idle, timeout, or Ctrl-C); returns a summary."""
    from jobs.listener import ProgressLogger
    from jobs.spark_session import build_session

    if config is None:
        from detectors.config import from_args

        config = from_args(args.detectors, args.config)
    bootstrap = resolve_bootstrap(args)
    run_id = args.run_id or f"stream-{uuid.uuid4().hex[:12]}"
    own_session = spark is None
    metrics = metrics_server = None
    if args.metrics_port is not None:
        from jobs.metrics import SPARK_METRICS_CONF, StreamMetrics

        metrics = StreamMetrics()
    spark = spark or build_session("avwatch-stream", master=args.master,
                                   extra=SPARK_METRICS_CONF if metrics is not None else None)
    # A stateful query with processing-time timeouts would run a micro-batch on every trigger even with no
    # data (~0.5 CPU-s each, measured): batches run when records arrive. Live converters send heartbeats
    # while a source hangs, so a stream's stall is still seen while any stream delivers.
    spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    checkpoint = args.checkpoint or join_uri(args.sink, "_checkpoints", "stream")
    if on_local_file_system(spark, checkpoint):
        # Hadoop's FileContext on the local file system (no native library in pip's pyspark) forks a
        # `readlink` or `chmod` process for each file it renames or creates: ~20 per micro-batch here
        # (offsets, commits, state changelogs and their .crc files), measured with JFR. The FileSystem-
        # based manager renames with java.io; a single job writes its checkpoint, so its rename is enough.
        spark.conf.set("spark.sql.streaming.checkpointFileManagerClass", LOCAL_CHECKPOINT_FILE_MANAGER)
    cores = max(1, spark.sparkContext.defaultParallelism)  # the executors' cores (local[N]: N)
    spark.conf.set("spark.sql.shuffle.partitions", str(args.state_partitions or cores))
    from avwatch.kafka_config import client_properties
    from jobs.kafka_io import create_topics

    create_topics(bootstrap, [args.video_topic, args.audio_topic] + ([args.alerts_topic] if args.alerts_topic else []),
                  partitions=args.topic_partitions or cores, replication=args.topic_replication,
                  client_config=client_properties(args))
    listener = ProgressLogger(metrics=metrics)
    spark.streams.addListener(listener)
    sink = None
    try:
        writer, sink = build_query(spark, args, config, bootstrap, run_id, metrics=metrics)
        if metrics is not None:
            metrics_server = metrics.serve(args.metrics_port, args.metrics_host, spark.sparkContext.uiWebUrl)
        query = writer.start()
        log.info("avwatch stream job %s started: detectors %s, sink %s", run_id, ",".join(config.names), args.sink)
        try:
            if args.timeout:
                query.awaitTermination(args.timeout)
                if query.isActive:
                    query.stop()
            else:
                query.awaitTermination()
        except KeyboardInterrupt:
            query.stop()
        if query.exception() is not None:
            raise AvwatchError(f"the streaming query failed: {query.exception()}")
        return {"run_id": run_id, "batches": listener.batches, **sink.totals,
                "state_rows": (listener.last or {}).get("state_rows", 0), "state_rows_max": listener.state_rows_max}
    finally:
        spark.streams.removeListener(listener)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if sink is not None:
            sink.close()
        if own_session:
            spark.stop()


def main(argv: list[str] | None = None) -> int:
    from jobs.entry import job_main

    return job_main("stream", build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
