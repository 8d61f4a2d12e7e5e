"""The converter: decode sources and publish their frames and audio to Kafka as Arrow segments.

One thread per source decodes (avwatch.convert.decode), groups into segments (avwatch.convert.segments)
and sends each segment as one Kafka record:
  topic      the video or the audio topic (configurable)
  key        the stream id (UTF-8): all of a stream's records land in one partition, in order
  value      one Arrow IPC stream (schemas.codec.encode), zstd or lz4 buffer compression
  timestamp  epoch + the segment's media start, where the epoch is the wall-clock time at which the
             source's media time 0 was published (files and live alike; --epoch ISO overrides it).
             Not a fixed epoch for files: Kafka's time retention would delete year-2000 records at
             once, re-analysis by time range (--since 24h) would miss them, and the watermark would
             mix clocks decades apart. Event ids do not depend on the epoch (media seconds only).
  headers    avwatch-schema = "<record>/<version>", avwatch-kind = video|audio|eos|heartbeat
An end-of-stream record closes each topic of a stream; a live source that hangs gets heartbeats, so the
stream job's clock for it keeps moving and a stall can be reported.

Delivery: an idempotent acks=all producer retries through broker outages for up to --send-timeout
seconds (no loss, no duplicates); after that the run fails and says how many segments were not sent.
"""
from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from avwatch.convert.decode import MediaDecoder, is_live, open_source
from avwatch.convert.segments import Segment, TrackSegmenters
from avwatch.errors import AvwatchError
from avwatch.native_threads import use_one_native_thread
from avwatch.times import parse_iso_time
from jobs.kafka_io import HEADER_KIND, HEADER_SCHEMA, InflightBudget, create_topics, producer
from detectors.features import edge_features_table
from jobs.publish_options import PublishOptions
from schemas import AUDIO_SEGMENT, CONTROL, FEATURE_SEGMENT, VIDEO_SEGMENT, encode

log = logging.getLogger("avwatch.publish")

_RECORD = {"video": VIDEO_SEGMENT, "audio": AUDIO_SEGMENT}
_END = object()


@dataclass
class SourceStats:
    stream_id: str
    uri: str
    frames: int = 0
    audio_s: float = 0.0
    segments: int = 0
    bytes: int = 0
    acked: int = 0
    failed: int = 0
    failed_bytes: int = 0
    decode_errors: int = 0
    transport: dict | None = None   # MPEG-TS sources: the transport analyser's error counts per check (live)
    heartbeats: int = 0
    media_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    error: str | None = None
    note: str | None = None
    done: bool = False

    def line(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"stream_id": self.stream_id, "frames": self.frames, "fps": round(self.frames / elapsed, 1),
                "segments": self.segments, "bytes_sent": self.bytes, "media_s": round(self.media_s, 2),
                "lag_s": round(max(0.0, elapsed - self.media_s), 2), "decode_errors": self.decode_errors}


def resolve_epoch(spec: str | None) -> datetime:
    """The wall-clock time of media time 0: PublishOptions.epoch (checked there), or now."""
    return datetime.now(timezone.utc) if spec is None or spec == "now" else parse_iso_time(spec)


class SourcePublisher(threading.Thread):
    """Decode one source and send its segments; never raises (errors land in stats.error)."""

    def __init__(self, uri: str, stream_id: str, options: PublishOptions, prod, stats: SourceStats,
                 budget: InflightBudget):
        super().__init__(name=f"publish-{stream_id}", daemon=True)
        self.uri, self.stream_id, self.options, self.producer, self.stats = uri, stream_id, options, prod, stats
        self.live = is_live(uri)
        self.audio_rate = options.decode.audio_rate
        self.budget = budget
        self._lock = threading.Lock()

    # -- sending ---------------------------------------------------------------------------------

    def _send(self, segment: Segment, epoch: datetime) -> None:
        kind = segment.kind.split(":", 1)[-1]
        record = CONTROL if segment.kind.startswith("control:") else _RECORD[segment.kind]
        control_kind = segment.table.column("kind")[0].as_py() if record is CONTROL else segment.kind
        table = segment.table
        if self.options.edge_features is not None and record is not CONTROL:
            table = edge_features_table(record.name, table, self.options.edge_features)
            record = FEATURE_SEGMENT
        value = encode(record, table, self.options.compression)
        topic = self.options.video_topic if kind == "video" else self.options.audio_topic
        ts = int((epoch + timedelta(seconds=max(segment.t, 0.0))).timestamp() * 1000)
        headers = [(HEADER_SCHEMA, record.tag.encode()), (HEADER_KIND, control_kind.encode())]
        size = len(value)

        def ok(_meta):
            self.budget.release(size)
            with self._lock:
                self.stats.acked += 1

        def failed(exc):
            self.budget.release(size)
            with self._lock:
                self.stats.failed += 1
                self.stats.failed_bytes += size
            log.error("%s: segment %s/%d not delivered: %s", self.stream_id, kind, segment.sequence, exc)

        from kafka.errors import KafkaTimeoutError

        if not self.budget.acquire(size, self.options.send_timeout_s):
            with self._lock:
                self.stats.failed += 1
                self.stats.failed_bytes += size
            log.error("%s: segment %s/%d not sent: the broker acknowledged nothing for %.0f s", self.stream_id,
                      kind, segment.sequence, self.options.send_timeout_s)
            return
        try:
            future = self.producer.send(topic, key=segment.stream_id.encode("utf-8"), value=value, headers=headers,
                                        timestamp_ms=ts)
        except KafkaTimeoutError as exc:  # no metadata for the topic: the broker is unreachable
            failed(exc)
            return
        future.add_callback(ok)
        future.add_errback(failed)
        self.stats.segments += 1
        self.stats.bytes += size
        if segment.kind == "video":
            self.stats.frames += segment.frames
        elif segment.kind == "audio":
            self.stats.audio_s += segment.frames / self.audio_rate

    # -- decoding --------------------------------------------------------------------------------

    def _open(self):
        attempts = self.options.open_retries if self.live else 1
        delay = 1.0
        for attempt in range(1, attempts + 1):
            try:
                return open_source(self.uri, read_timeout_s=self.options.read_timeout_s,
                                   transport=self.options.decode.transport)
            except ConnectionError as exc:
                if attempt == attempts:
                    raise AvwatchError(f"{self.uri}: cannot connect after {attempts} attempts ({exc}). Check that "
                                       f"the stream is running and the URL is right.") from None
                log.warning("%s: cannot connect (%s); retrying in %.0f s", self.uri, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    def _explain(self, exc: BaseException) -> BaseException:
        """A live source that went silent past the read timeout: say so, not FFmpeg's 'exit requested'."""
        import av

        if self.live and isinstance(exc, av.error.ExitError):
            return AvwatchError(f"{self.uri}: no data for {self.options.read_timeout_s:g} s: the source stopped or "
                                f"the connection dropped (what arrived before was published; heartbeats were "
                                f"sent meanwhile; the read timeout sets how long to wait)")
        return exc

    def run(self) -> None:
        try:
            self._run()
        except AvwatchError as exc:
            self.stats.error = str(exc)
        except Exception as exc:  # report, do not kill the other sources
            log.exception("%s: publishing failed", self.uri)
            self.stats.error = f"{self.uri}: {type(exc).__name__}: {exc}"
        finally:
            self.stats.done = True

    def _run(self) -> None:
        """The decoding thread turns media into segments (a few per second cross to this thread, not
        every frame: measured ~5% less CPU); this thread encodes and sends them, and sends heartbeats
        while a live source delivers nothing."""
        o = self.options
        epoch = resolve_epoch(o.epoch)
        container, reader = self._open()
        decoder = MediaDecoder(self.uri, o.decode, container=container, reader=reader)
        if decoder.transport is not None:
            self.stats.transport = decoder.transport.counts
        info = decoder.info
        missing = [k for k, present in (("video", info.has_video), ("audio", info.has_audio)) if not present]
        if missing:
            self.stats.note = f"no {missing[0]} stream: publishing {'audio' if missing[0] == 'video' else 'video'} only"
        # the video and the first audio track under the stream id; each further audio track as a stream
        segmenter = TrackSegmenters(self.stream_id, info, segment_s=o.segment_s, epoch=epoch)
        if len(info.audio_tracks) > 1:
            tracks = f"{len(info.audio_tracks)} audio tracks: {', '.join(s.stream_id for s in segmenter.all)}"
            self.stats.note = f"{self.stats.note}; {tracks}" if self.stats.note else tracks
        segmenter_lock = threading.Lock()  # heartbeats take sequence numbers from this thread
        segments: queue.Queue = queue.Queue(maxsize=16)  # bounded: decoding waits for sending
        wall0 = time.monotonic()
        clock = {"media_now": 0.0, "last_item": wall0}  # the decoding thread's progress, for heartbeats

        def decode_all():
            nonlocal decoder
            passes, offset = 0, 0.0
            try:
                while True:
                    last = 0.0
                    for item in decoder.items():
                        item.t = round(item.t + offset, 9)
                        if o.realtime and (ahead := item.t - (time.monotonic() - wall0)) > 0:
                            time.sleep(ahead)
                        last = max(last, item.t + (info.video.get("frame_dur", 0.0)
                                                   if hasattr(item, "luma") else item.samples.shape[0] /
                                                   info.audio["sample_rate"]))
                        clock["last_item"] = time.monotonic()
                        clock["media_now"] = max(clock["media_now"], item.t)
                        self.stats.media_s = clock["media_now"]
                        with segmenter_lock:
                            done = segmenter.add(item)
                        for segment in done:
                            segments.put(segment)
                    self.stats.decode_errors += decoder.decode_errors
                    passes += 1
                    if not o.loop or self.live or (o.max_loops is not None and passes >= o.max_loops):
                        break
                    offset = last  # continuous timestamps across passes
                    decoder = MediaDecoder(self.uri, o.decode)
                with segmenter_lock:
                    done = segmenter.finish()
                for segment in done:
                    segments.put(segment)
            except BaseException as exc:  # hand the failure to the sending side
                segments.put(self._explain(exc))
            segments.put(_END)

        thread = threading.Thread(target=decode_all, name=f"decode-{self.stream_id}", daemon=True)
        thread.start()
        last_beat = wall0
        while True:
            try:
                segment = segments.get(timeout=o.heartbeat_s / 4 if self.live else None)
            except queue.Empty:
                now = time.monotonic()
                idle = now - clock["last_item"]
                if idle >= o.heartbeat_s and now - last_beat >= o.heartbeat_s:
                    # the live source hung: advance the stream's clock with a heartbeat
                    with segmenter_lock:
                        beats = [seg.control("video" if seg.info.has_video else "audio", "heartbeat",
                                             clock["media_now"] + idle) for seg in segmenter.all]
                    for beat in beats:
                        self._send(beat, epoch)
                    self.stats.heartbeats += 1
                    last_beat = now
                continue
            if segment is _END:
                break
            if isinstance(segment, BaseException):
                if isinstance(segment, AvwatchError):
                    raise segment
                raise AvwatchError(f"{self.uri}: decoding failed part-way: {segment}") from None
            self._send(segment, epoch)


class Progress:
    """Progress bars on a terminal; one JSON log line per source per interval otherwise."""

    def __init__(self, stats: list[SourceStats], interactive: bool, interval_s: float = 5.0):
        self.stats, self.interactive, self.interval_s = stats, interactive, interval_s
        self._drawn = 0
        self._last_log = time.monotonic()

    def tick(self) -> None:
        if self.interactive:
            if self._drawn:
                sys.stderr.write(f"\x1b[{self._drawn}F")
            for s in self.stats:
                line = s.line()
                state = "done" if s.done else ("FAILED" if s.error else "")
                sys.stderr.write(f"\x1b[2K{s.stream_id[:24]:<24} {line['frames']:>7} frames {line['fps']:>7.1f} fps "
                                 f"{line['bytes_sent'] / 1e6:>8.1f} MB  media {line['media_s']:>8.1f} s {state}\n")
            self._drawn = len(self.stats)
            sys.stderr.flush()
        elif time.monotonic() - self._last_log >= self.interval_s:
            self._last_log = time.monotonic()
            for s in self.stats:
                if not s.done:
                    log.info("progress %s", json.dumps(s.line()))


def publish(sources: list[str], stream_ids: list[str], options: PublishOptions,
            progress: bool = False, metrics_port: int | None = None,
            metrics_host: str = "127.0.0.1") -> list[SourceStats]:
    """Publish every source concurrently; returns per-source statistics (errors inside). With metrics_port,
    the statistics are served as Prometheus metrics on http://metrics_host:metrics_port/metrics while it
    runs (jobs/metrics.py)."""
    use_one_native_thread()
    create_topics(options.bootstrap, [options.video_topic, options.audio_topic], options.partitions,
                  options.replication, client_config=options.client_config)
    timeout_ms = int(options.send_timeout_s * 1000)
    prod = producer(options.bootstrap, options.client_config, delivery_timeout_ms=max(timeout_ms, 30000 + 20 + 1),
                    request_timeout_ms=30000, max_block_ms=timeout_ms)
    stats = [SourceStats(sid, uri) for uri, sid in zip(sources, stream_ids)]
    metrics_server = None
    if metrics_port is not None:
        from jobs.metrics import serve_publish_metrics

        metrics_server = serve_publish_metrics(stats, metrics_port, metrics_host)
    budget = InflightBudget()
    workers = [SourcePublisher(uri, sid, options, prod, st, budget)
               for uri, sid, st in zip(sources, stream_ids, stats)]
    bars = Progress(stats, interactive=progress)
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            bars.tick()
            for w in workers:
                w.join(timeout=0.5 / max(len(workers), 1))
        bars.tick()
    finally:
        prod.flush(timeout=options.send_timeout_s)
        prod.close(timeout=5)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    return stats

