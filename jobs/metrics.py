"""Prometheus endpoints: the stream job's driver (`--metrics-port`) and the converter (`avwatch publish
--metrics-port`), served on 127.0.0.1 by default at http://HOST:PORT/metrics (prometheus_client's own
server, one thread).

Stream job (StreamMetrics): what the foreachBatch sink sees (per-stream status rows from stage 2, events,
dead letters, alerts, webhook deliveries) and what the query listener sees (batch duration, input rows,
records behind per topic-partition, state rows); plus, when Spark's UI is on, Spark's own metrics from its
PrometheusServlet (driver and executors), re-exported through the same endpoint so one scrape target covers
the job. Converter (PublishCollector): the per-source counters of jobs/publish.py, read at scrape time.

Names follow Prometheus conventions: `avwatch_` prefix, base units in the name (`_seconds`, `_bytes`),
`_total` for counters. The list is in docs/operations.md ("Metrics").
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.request
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("avwatch.metrics")

DEFAULT_HOST = "127.0.0.1"
BATCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


def reason_class(reason: str | None) -> str:
    """A dead letter's reason reduced to a small closed set of label values (reasons carry offsets, sizes
    and messages: one label value each would explode the series)."""
    text = (reason or "").strip()
    prefixes = (("late ", "late"), ("oversize record", "oversize"), ("record has no key", "no_key"),
                ("analysis failed", "analysis_failed"), ("segment of an earlier publication", "superseded"))
    for prefix, name in prefixes:
        if text.startswith(prefix):
            return name
    if text.startswith("RecordError") and "does not match the record's stream id" in text:
        return "key_mismatch"
    if text.startswith("RecordError"):
        return "undecodable"
    if text.startswith("ValueError: features lack"):
        return "edge_features_mismatch"
    head = text.split(":", 1)[0]
    return "other" if not head or " " in head else "error_" + head.lower()


def serve(registry: CollectorRegistry, port: int, host: str = DEFAULT_HOST):
    """Start the /metrics HTTP server in a daemon thread; returns the server (call .shutdown())."""
    from avwatch.errors import AvwatchError

    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise AvwatchError(f"--metrics-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                           f"choose another port") from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server


class SparkCollector:
    """Spark's own metrics (its PrometheusServlet on the driver's UI) re-exported on our endpoint."""

    PATHS = ("/metrics/prometheus/", "/metrics/executors/prometheus/")

    def __init__(self, ui_url: str, timeout_s: float = 3.0):
        self.ui_url = ui_url.rstrip("/")
        self.timeout_s = timeout_s

    def collect(self):
        seen = set()
        for path in self.PATHS:
            try:
                with urllib.request.urlopen(self.ui_url + path, timeout=self.timeout_s) as response:  # noqa: S310
                    text = response.read().decode("utf-8", "replace")
            except OSError as exc:  # the UI is starting or gone: avwatch's own metrics are still served
                log.debug("Spark metrics from %s%s: %s", self.ui_url, path, exc)
                continue
            for family in text_string_to_metric_families(text):
                if family.name not in seen:
                    seen.add(family.name)
                    yield family


class StreamMetrics:
    """The stream job's metrics (one per driver); fed by BatchSink and the query listener."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("avwatch_events", "Event rows written to anomaly_events (an event's open and closed "
                              "states in different micro-batches count once each)", ["detector", "severity"], registry=r)
        self.open_events = Gauge("avwatch_open_events", "Events open now (state open or ongoing), as this driver "
                                 "saw them since it started", ["detector", "severity"], registry=r)
        self.dead_letters = Counter("avwatch_dead_letters", "Records sent to the dead_letter table, by reason class",
                                    ["reason"], registry=r)
        self.alerts = Counter("avwatch_alerts_sent", "Alert messages delivered to the alerts topic", registry=r)
        self.webhooks = Counter("avwatch_webhook_deliveries", "Webhook POSTs by outcome (delivered, rejected: a "
                                "final 4xx, retried: a failed attempt)", ["outcome", "format"], registry=r)
        self.batch_seconds = Histogram("avwatch_batch_duration_seconds", "Micro-batch duration (trigger "
                                       "execution)", buckets=BATCH_BUCKETS, registry=r)
        self.batches = Counter("avwatch_batches", "Micro-batches completed", registry=r)
        self.input_rows = Counter("avwatch_input_rows", "Kafka records read by the job", registry=r)
        self.batch_rows = Gauge("avwatch_batch_input_rows", "Kafka records in the last micro-batch", registry=r)
        self.behind = Gauge("avwatch_kafka_lag_records", "Records behind the newest offset after the last "
                            "micro-batch", ["topic_partition"], registry=r)
        self.state_rows = Gauge("avwatch_state_rows", "Rows in the per-stream state store", registry=r)
        self._lock = threading.Lock()
        self._streams: dict[str, dict] = {}    # stream id -> {"state", "media_s", "epoch", "last_seen"}
        self._open: dict[str, tuple[str, str]] = {}  # event id -> (detector, severity) while open
        r.register(_StreamCollector(self))

    def serve(self, port: int, host: str = DEFAULT_HOST, spark_ui_url: str | None = None):
        if spark_ui_url:
            self.registry.register(SparkCollector(spark_ui_url))
        return serve(self.registry, port, host)

    # -- fed by the sink -------------------------------------------------------------------------

    def on_batch(self, events: list[dict], dead: list[dict], status: list[dict], alerts_sent: int = 0) -> None:
        from jobs.webhooks import event_state

        for row in events:
            detector, severity = row.get("detector") or "?", row.get("severity") or "?"
            self.events.labels(detector, severity).inc()
            state = event_state(row)
            eid = row.get("event_id")
            with self._lock:
                before = self._open.get(eid)
                if state == "closed":
                    if before is not None:
                        del self._open[eid]
                        self.open_events.labels(*before).dec()
                elif before is None:
                    self._open[eid] = (detector, severity)
                    self.open_events.labels(detector, severity).inc()
        for row in dead:
            self.dead_letters.labels(reason_class(row.get("reason"))).inc()
        if alerts_sent:
            self.alerts.inc(alerts_sent)
        with self._lock:
            for row in status:  # an ended stream's row carries no position: the last one is kept
                before = self._streams.get(row["stream_id"], {})
                self._streams[row["stream_id"]] = {
                    "state": row.get("reason") or "live",
                    "media_s": row.get("t") if row.get("t") is not None else before.get("media_s"),
                    "epoch": row.get("epoch") or before.get("epoch"),
                    "last_seen": _seconds(row.get("detected_at")) or before.get("last_seen")}

    def on_webhook(self, outcome: str, fmt: str) -> None:
        self.webhooks.labels(outcome, fmt).inc()

    # -- fed by the query listener ---------------------------------------------------------------

    def on_progress(self, line: dict) -> None:
        self.batches.inc()
        rows = int(line.get("input_rows") or 0)
        self.input_rows.inc(rows)
        self.batch_rows.set(rows)
        if line.get("batch_ms") is not None:
            self.batch_seconds.observe(line["batch_ms"] / 1000.0)
        for where, behind in (line.get("lag") or {}).items():
            self.behind.labels(where).set(behind)
        self.state_rows.set(line.get("state_rows") or 0)

    def streams(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._streams.items()}


class _StreamCollector:
    """Per-stream gauges computed at scrape time: the lag keeps growing while a stream delivers nothing."""

    def __init__(self, metrics: StreamMetrics):
        self.metrics = metrics

    def collect(self):
        lag = GaugeMetricFamily("avwatch_stream_media_lag_seconds", "Wall clock now minus the wall-clock time of "
                                "the newest media analysed (epoch + media position); negative when a file is "
                                "published faster than real time", labels=["stream_id"])
        seen = GaugeMetricFamily("avwatch_stream_last_record_timestamp_seconds", "Unix time at which the job last "
                                 "received a record of the stream", labels=["stream_id"])
        position = GaugeMetricFamily("avwatch_stream_media_position_seconds", "Media time analysed so far",
                                     labels=["stream_id"])
        ended = GaugeMetricFamily("avwatch_stream_ended", "1 once the stream sent its end of stream",
                                  labels=["stream_id"])
        now = time.time()
        for stream_id, s in sorted(self.metrics.streams().items()):
            if s["last_seen"] is not None:
                seen.add_metric([stream_id], s["last_seen"])
            ended.add_metric([stream_id], 1.0 if s["state"] == "ended" else 0.0)
            if s["media_s"] is not None:
                position.add_metric([stream_id], float(s["media_s"]))
                epoch = _seconds(s["epoch"])
                if epoch is not None:
                    lag.add_metric([stream_id], now - (epoch + float(s["media_s"])))
        yield from (lag, seen, position, ended)


def _seconds(value) -> float | None:
    """Unix seconds of a datetime, pandas Timestamp or ISO string (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        from avwatch.times import parse_iso_time

        try:
            return parse_iso_time(value).timestamp()
        except ValueError:
            return None
    if isinstance(value, datetime) or hasattr(value, "timestamp"):
        return value.timestamp()
    return None


class PublishCollector:
    """The converter's per-source counters (jobs/publish.py SourceStats), read at scrape time."""

    def __init__(self, stats: list):
        self.stats = stats

    def collect(self):
        def family(kind, name, doc):
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            return cls(name, doc, labels=["stream_id"])

        fams = {
            "frames": family("counter", "avwatch_publish_frames", "Video frames published"),
            "fps": family("gauge", "avwatch_publish_frames_per_second", "Frames published per second since the "
                          "source started (use rate(avwatch_publish_frames_total[1m]) for the recent rate)"),
            "decode_errors": family("counter", "avwatch_publish_decode_errors", "Frames the decoder flagged corrupt"),
            "bytes": family("counter", "avwatch_publish_sent_bytes", "Bytes of records handed to Kafka"),
            "segments": family("counter", "avwatch_publish_segments", "Segments (Kafka records) sent"),
            "acked": family("counter", "avwatch_publish_segments_acked", "Segments the broker acknowledged"),
            "failed": family("counter", "avwatch_publish_segments_failed", "Segments not delivered"),
            "heartbeats": family("counter", "avwatch_publish_heartbeats", "Heartbeats sent while a live source hung"),
            "media": family("gauge", "avwatch_publish_media_position_seconds", "Media time decoded so far"),
            "lag": family("gauge", "avwatch_publish_lag_seconds", "Wall time since the source started minus media "
                          "time decoded (grows when decoding falls behind a live source)"),
            "up": family("gauge", "avwatch_publish_source_up", "1 while the source is being published"),
        }
        # MPEG-TS sources: TR 101 290 errors counted by the converter's transport analyser, per check
        transport = CounterMetricFamily("avwatch_publish_transport_errors", "MPEG-TS transport errors counted by "
                                        "the converter (TR 101 290: continuity, tei, sync_loss, sync_byte, crc, "
                                        "pat_invalid, pmt_invalid)", labels=["stream_id", "check"])
        for s in list(self.stats):
            line = s.line()
            labels = [s.stream_id]
            fams["frames"].add_metric(labels, s.frames)
            fams["fps"].add_metric(labels, line["fps"])
            fams["decode_errors"].add_metric(labels, s.decode_errors)
            fams["bytes"].add_metric(labels, s.bytes)
            fams["segments"].add_metric(labels, s.segments)
            fams["acked"].add_metric(labels, s.acked)
            fams["failed"].add_metric(labels, s.failed)
            fams["heartbeats"].add_metric(labels, s.heartbeats)
            fams["media"].add_metric(labels, s.media_s)
            fams["lag"].add_metric(labels, line["lag_s"])
            fams["up"].add_metric(labels, 0.0 if s.done else 1.0)
            for check, count in sorted((getattr(s, "transport", None) or {}).items()):
                transport.add_metric([s.stream_id, check], count)
        yield from fams.values()
        yield transport


def serve_publish_metrics(stats: list, port: int, host: str = DEFAULT_HOST):
    registry = CollectorRegistry()
    registry.register(PublishCollector(stats))
    return serve(registry, port, host)


SPARK_METRICS_CONF = {
    # Spark's PrometheusServlet on the driver UI (/metrics/prometheus/) and the executors' summary
    # (/metrics/executors/prometheus/); re-exported by SparkCollector.
    "spark.ui.prometheus.enabled": "true",
    "spark.metrics.conf.*.sink.prometheusServlet.class": "org.apache.spark.metrics.sink.PrometheusServlet",
    "spark.metrics.conf.*.sink.prometheusServlet.path": "/metrics/prometheus/",
    "spark.metrics.namespace": "avwatch",
    "spark.sql.streaming.metricsEnabled": "true",  # the query's rates, latency and watermark (Dropwizard)
}
