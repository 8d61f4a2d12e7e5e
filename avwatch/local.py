"""The local runner: decode files in-process and run the detectors on them, no Kafka, no Spark.

It is the reference path the Spark job must agree with: the same decoder and segmenter as the converter
(avwatch.convert), the same stage 1 (detectors.features.stage1) and stage 2 (detectors.analyzer).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from avwatch.convert.decode import DecodeOptions, MediaDecoder
from avwatch.convert.segments import FILE_EPOCH, TrackSegmenters
from avwatch.native_threads import use_one_native_thread
from detectors.analyzer import StreamAnalyzer
from detectors.config import DetectorConfig
from detectors.events import event_row, latest_reports
from detectors.features import stage1
from schemas.records import AUDIO_SEGMENT, CONTROL, VIDEO_SEGMENT

_RECORD_OF = {"video": VIDEO_SEGMENT.name, "audio": AUDIO_SEGMENT.name}


def default_stream_id(uri: str) -> str:
    """A file's stream id is its base name without extension; a URL's is its last path part."""
    base = os.path.basename(uri.rstrip("/")) or uri
    return os.path.splitext(base)[0] or base


@dataclass
class LocalResult:
    stream_id: str
    rows: list[dict] = field(default_factory=list)   # anomaly_event rows, each event's latest state
    reports: list[dict] = field(default_factory=list)  # every report: open, ongoing updates, closed
    frames: int = 0
    audio_s: float = 0.0
    segments: int = 0
    decode_errors: int = 0
    has_video: bool = False
    has_audio: bool = False
    audio_tracks: int = 0   # audio tracks analysed; the k-th further one's events are under '<stream_id>.a<k>'


def analyze_source(uri: str, config: DetectorConfig, stream_id: str | None = None,
                   decode: DecodeOptions = DecodeOptions(), segment_s: float = 1.0, run_id: str | None = None,
                   on_segment=None, analyzer: StreamAnalyzer | None = None) -> LocalResult:
    """Decode one file and return its events as anomaly_event rows."""
    use_one_native_thread()
    stream_id = stream_id or default_stream_id(uri)
    run_id = run_id or f"local-{uuid.uuid4().hex[:12]}"
    decoder = MediaDecoder(uri, decode)
    segmenter = TrackSegmenters(stream_id, decoder.info, segment_s=segment_s, epoch=FILE_EPOCH)
    analyzer = analyzer or StreamAnalyzer(config)
    states = {seg.stream_id: analyzer.initial_state() for seg in segmenter.all}  # each audio track on its own
    result = LocalResult(stream_id, has_video=decoder.info.has_video, has_audio=decoder.info.has_audio)
    result.audio_tracks = len(decoder.info.audio_tracks)
    detected_at = datetime.now(timezone.utc)

    def handle(segment):
        state = states[segment.stream_id]
        if segment.kind.startswith("control:"):
            item = stage1(CONTROL.name, segment.table, config, kind=segment.kind.split(":", 1)[1])
        else:
            item = stage1(_RECORD_OF[segment.kind], segment.table, config)
            if segment.kind == "video":
                result.frames += segment.frames
            elif segment.stream_id == stream_id:  # audio seconds of the first track (the others alike)
                result.audio_s += segment.frames / decoder.info.audio["sample_rate"]
        result.segments += 1
        outcome = analyzer.add(state, item)
        epoch = state["epoch"] or FILE_EPOCH
        for version, event in outcome.events:
            result.rows.append(event_row(segment.stream_id, version, event, epoch, run_id, detected_at,
                                         publication=state["publication"]))
        if on_segment is not None:
            on_segment(segment)

    for item in decoder.items():
        for segment in segmenter.add(item):
            handle(segment)
    for segment in segmenter.finish():
        handle(segment)
    result.decode_errors = decoder.decode_errors
    result.reports = list(result.rows)          # every alarm state change, in order
    result.rows = latest_reports(result.rows)   # what the table holds: each event's latest state
    result.rows.sort(key=lambda r: (r["start_s"], r["detector"]))
    return result
