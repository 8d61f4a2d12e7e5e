"""The versioned Arrow record types of avwatch: one definition each.

Every record that crosses a process boundary (a Kafka message, a Delta table row) is one of these.
Each is an Arrow schema tagged with its name and version in the schema metadata; the Spark StructType
of the tables is derived from it (jobs/spark_schemas.py), never retyped.

Kafka messages (converter -> stream job), one Arrow IPC stream per message (see schemas.codec):
  video_segment  one row per frame of a run of consecutive frames of one stream
  audio_segment  one row: a run of interleaved PCM samples of one stream
  feature_segment  one row: a segment's stage-1 features, sent instead of pixels (--edge-features)
  control        one row: end of stream, or a heartbeat that advances a live stream's clock
Tables (stream job -> users):
  anomaly_event  one detected defect
  dead_letter    one Kafka record the job could not decode, with the reason
  frame_features one analysed frame's stage-1 features (optional table, for re-analysis and notebooks);
                 its key columns are here, its feature columns come from the detectors (detectors/records.py)
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

META_NAME = b"avwatch.record"
META_VERSION = b"avwatch.version"

# Block-grid features are measured per region of the full-size picture, row-major (see detectors/blockiness).
BLOCK_REGIONS = (3, 3)
# Frame-difference cells, row-major (see detectors/freeze and detectors/av_sync).
DIFF_CELLS = (4, 4)


@dataclass(frozen=True)
class RecordType:
    """A named, versioned Arrow schema."""

    name: str
    version: int
    schema: pa.Schema  # carries META_NAME and META_VERSION in its metadata
    # its one large column arrives compressed as a whole (detectors/wire.py): Arrow's buffer compression
    # would only add a codec set-up per buffer on both sides (schemas.codec.encode skips it)
    precompressed: bool = False

    @property
    def tag(self) -> str:
        """`name/version`, the value of the Kafka header `avwatch-schema`."""
        return f"{self.name}/{self.version}"


def _record(name: str, version: int, fields: list[pa.Field], precompressed: bool = False) -> RecordType:
    schema = pa.schema(fields, metadata={META_NAME: name.encode(), META_VERSION: str(version).encode()})
    return RecordType(name, version, schema, precompressed)


VIDEO_SEGMENT = _record("video_segment", 1, [
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("sequence", pa.int64(), nullable=False),          # segment number within the stream's video topic
    pa.field("frame_index", pa.int64(), nullable=False),       # index of the frame among all decoded frames
    pa.field("pts", pa.int64()),                               # container PTS in time_base units; null if missing
    pa.field("time_base_num", pa.int32(), nullable=False),
    pa.field("time_base_den", pa.int32(), nullable=False),
    pa.field("pts_s", pa.float64(), nullable=False),           # media seconds from the stream's start
    pa.field("pts_missing", pa.bool_(), nullable=False),       # pts_s was derived from frame count / rate
    pa.field("context", pa.bool_(), nullable=False),           # the previous segment's last frame, for differences only
    pa.field("keyframe", pa.bool_(), nullable=False),
    pa.field("decode_error", pa.bool_(), nullable=False),      # the decoder flagged the frame corrupt
    pa.field("width", pa.int32(), nullable=False),             # analysis-size luma plane
    pa.field("height", pa.int32(), nullable=False),
    pa.field("luma", pa.large_binary(), nullable=False),       # height*width uint8 residual (schemas/luma.py)
    pa.field("luma_coding", pa.int8(), nullable=False),        # 0 plain, 1 vertical, 2 temporal (schemas/luma.py)
    pa.field("thumb_width", pa.int32(), nullable=False),
    pa.field("thumb_height", pa.int32(), nullable=False),
    pa.field("thumb", pa.binary(), nullable=False),            # JPEG of the thumb_height x thumb_width RGB thumbnail
    pa.field("block_ratio", pa.list_(pa.float32(), BLOCK_REGIONS[0] * BLOCK_REGIONS[1])),  # full-size block-grid
    pa.field("block_activity", pa.list_(pa.float32(), BLOCK_REGIONS[0] * BLOCK_REGIONS[1])),  # mean gradient, 0..1
    pa.field("source", pa.string(), nullable=False),           # JSON: uri, codec, size, rate, color range, epoch
])

AUDIO_SEGMENT = _record("audio_segment", 1, [
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("sequence", pa.int64(), nullable=False),          # segment number within the stream's audio topic
    pa.field("pts_s", pa.float64(), nullable=False),           # media seconds of the first non-context sample
    pa.field("sample_rate", pa.int32(), nullable=False),
    pa.field("channels", pa.int32(), nullable=False),
    pa.field("layout", pa.string(), nullable=False),           # e.g. "stereo"
    pa.field("sample_format", pa.string(), nullable=False),    # "s16" or "f32", interleaved
    pa.field("n_samples", pa.int64(), nullable=False),         # samples per channel, context excluded
    pa.field("context_samples", pa.int32(), nullable=False),   # leading samples repeated from the previous segment
    pa.field("samples", pa.large_binary(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
])

FEATURE_SEGMENT = _record("feature_segment", 1, [
    # the converter's --edge-features mode: a video or audio segment's stage-1 features instead of its pixels
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("sequence", pa.int64(), nullable=False),          # the segment's sequence number on its topic
    pa.field("kind", pa.string(), nullable=False),             # "video" or "audio"
    pa.field("t", pa.float64(), nullable=False),               # media seconds at the segment's start
    pa.field("detectors", pa.string(), nullable=False),        # JSON: the kind's detectors, versions, options
    pa.field("features", pa.large_binary(), nullable=False),   # detectors.features.Features (detectors/wire.py)
    pa.field("source", pa.string(), nullable=False),
], precompressed=True)

CONTROL = _record("control", 1, [
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("sequence", pa.int64(), nullable=False),          # continues the sequence of the topic it is sent on
    pa.field("kind", pa.string(), nullable=False),             # "eos" or "heartbeat"
    pa.field("media_time_s", pa.float64(), nullable=False),    # the stream's media clock at this point
    pa.field("wall_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("source", pa.string(), nullable=False),
])

ANOMALY_EVENT = _record("anomaly_event", 2, [  # 2: + state
    pa.field("event_id", pa.string(), nullable=False),         # deterministic: stream, detector, check, start
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("detector", pa.string(), nullable=False),
    pa.field("detector_version", pa.string(), nullable=False),
    pa.field("start_s", pa.float64(), nullable=False),         # media seconds from the stream's start
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("start_time", pa.timestamp("us", tz="UTC"), nullable=False),  # stream epoch + start_s
    pa.field("end_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("threshold", pa.float64(), nullable=False),
    pa.field("severity", pa.string(), nullable=False),         # "minor" or "major"
    pa.field("details", pa.string(), nullable=False),          # JSON text with what a person needs to check it
    pa.field("evidence", pa.binary()),                         # JPEG thumbnail of the frame where it starts (video detectors)
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("detected_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("state", pa.string()),                            # open | ongoing | closed (null: closed, before v2)
])

DEAD_LETTER = _record("dead_letter", 1, [
    pa.field("topic", pa.string()),
    pa.field("partition", pa.int32()),
    pa.field("offset", pa.int64()),
    pa.field("key", pa.binary()),
    pa.field("value", pa.binary()),                            # the first MAX_DEAD_LETTER_BYTES of the raw bytes
    pa.field("value_size", pa.int64()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("seen_at", pa.timestamp("us", tz="UTC"), nullable=False),
])

# frame_features (a Delta table the job writes, never a message): one analysed frame's stage-1 video
# features. The columns here say where and when the frame was; the feature columns are the detectors'
# (the composer's shared ones and each video detector's declared stage1_outputs), so the whole record is
# built in detectors/records.py. It holds the complete set, so that video detectors can be re-run from it.
FRAME_FEATURES_NAME = "frame_features"
FRAME_FEATURES_VERSION = 1
FRAME_KEY_FIELDS = [
    pa.field("stream_id", pa.string(), nullable=False),
    pa.field("date", pa.string(), nullable=False),             # partition column, UTC date of event_time
    pa.field("t", pa.float64(), nullable=False),               # media seconds
    pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("frame_index", pa.int64(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
]


def frame_features_record(feature_fields: list[pa.Field]) -> RecordType:
    """The frame_features record: the key columns above, then these stage-1 feature columns."""
    return _record(FRAME_FEATURES_NAME, FRAME_FEATURES_VERSION, FRAME_KEY_FIELDS + list(feature_fields))


# A dead letter keeps an excerpt of the record (its topic, partition and offset locate the whole while Kafka
# retains it): a burst of bad records must not carry megabytes each to the driver (spark.driver.maxResultSize).
MAX_DEAD_LETTER_BYTES = 4096

# The records defined whole here (frame_features is completed in detectors/records.py). The codec reads
# messages by this list; a frame_features row is never one.
ALL = {r.name: r for r in (VIDEO_SEGMENT, AUDIO_SEGMENT, FEATURE_SEGMENT, CONTROL, ANOMALY_EVENT, DEAD_LETTER)}
