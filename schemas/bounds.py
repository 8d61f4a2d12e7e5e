"""Range checks on a decoded record's values, before any of them is used as a size, a divisor or a key.

decode() (schemas/codec.py) guarantees the record's Arrow schema; this module guarantees its values: a
record whose numbers are out of range, whose declared sizes disagree with its buffers, or whose source
JSON is not the object the converter writes raises RecordError with the field and the value, so that it
goes to the dead-letter table instead of into a detector.
"""
from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.compute as pc

from schemas.codec import RecordError

MAX_STREAM_ID = 256
SAMPLE_BYTES = {"s16": 2, "f32": 4}   # audio sample formats on the wire: interleaved int16 or float32
MAX_SEQUENCE = 1 << 53
PLANE_SIDE = (8, 4096)          # analysis-size luma plane, pixels
THUMB_SIDE = (1, 512)
SAMPLE_RATE = (1000, 768_000)
CHANNELS = (1, 64)
MAX_PLANE_BYTES = 128 << 20     # all luma planes of one segment, decoded
CONTROL_KINDS = ("eos", "heartbeat")
FEATURE_KINDS = ("video", "audio")
# The source JSON's fields that the job reads, with the types it accepts (absent is always allowed).
_SOURCE_TYPES = {"uri": str, "live": bool, "has_video": bool, "has_audio": bool, "video": dict, "audio": dict,
                 "epoch": str, "publish_id": str}


def check_record(name: str, table: pa.Table) -> dict:
    """Check one decoded record of type `name`; return its parsed source JSON."""
    if table.num_rows == 0:
        raise RecordError(f"empty {name} record")
    if name in ("anomaly_event", "dead_letter", "frame_features"):
        raise RecordError(f"{name} is a table row, not a message the job reads")
    _same_in_every_row(table, "stream_id")
    stream_id = table.column("stream_id")[0].as_py()
    if not stream_id or len(stream_id) > MAX_STREAM_ID:
        raise RecordError(f"stream_id must be 1 to {MAX_STREAM_ID} characters, got {len(stream_id or '')}")
    _same_in_every_row(table, "sequence")
    _in_range("sequence", table.column("sequence")[0].as_py(), 0, MAX_SEQUENCE)
    source = parse_source(table.column("source")[0].as_py())
    if name == "video_segment":
        _check_video(table, source)
    elif name == "audio_segment":
        _check_audio(table)
    elif name == "control":
        kind = table.column("kind")[0].as_py()
        if kind not in CONTROL_KINDS:
            raise RecordError(f"control kind must be one of {', '.join(CONTROL_KINDS)}, got {kind!r}")
        _finite("media_time_s", table.column("media_time_s")[0].as_py())
    elif name == "feature_segment":
        kind = table.column("kind")[0].as_py()
        if kind not in FEATURE_KINDS:
            raise RecordError(f"feature_segment kind must be one of {', '.join(FEATURE_KINDS)}, got {kind!r}")
        _finite("t", table.column("t")[0].as_py())
        if table.num_rows != 1:
            raise RecordError(f"a feature_segment has one row, got {table.num_rows}")
    return source


def parse_source(text: str) -> dict:
    """The converter's source JSON: an object whose known fields have the types the job expects."""
    try:
        source = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"source is not JSON: {exc}") from None
    if not isinstance(source, dict):
        raise RecordError(f"source must be a JSON object, got {type(source).__name__}")
    for key, kind in _SOURCE_TYPES.items():
        value = source.get(key)
        if value is not None and not isinstance(value, kind):
            raise RecordError(f"source.{key} must be {kind.__name__}, got {type(value).__name__}")
    video = source.get("video") or {}
    if "frame_dur" in video:
        _in_range("source.video.frame_dur", video["frame_dur"], 1e-4, 10.0)
    if source.get("epoch"):
        from datetime import datetime

        try:
            datetime.fromisoformat(source["epoch"])
        except ValueError:
            raise RecordError(f"source.epoch is not an ISO 8601 time: {source['epoch'][:60]!r}") from None
    return source


def _check_video(table: pa.Table, source: dict) -> None:
    for name in ("width", "height", "thumb_width", "thumb_height"):
        _same_in_every_row(table, name)
    w, h = table.column("width")[0].as_py(), table.column("height")[0].as_py()
    _in_range("width", w, *PLANE_SIDE)
    _in_range("height", h, *PLANE_SIDE)
    _in_range("thumb_width", table.column("thumb_width")[0].as_py(), *THUMB_SIDE)
    _in_range("thumb_height", table.column("thumb_height")[0].as_py(), *THUMB_SIDE)
    if table.num_rows * w * h > MAX_PLANE_BYTES:
        raise RecordError(f"{table.num_rows} luma planes of {w}x{h} exceed {MAX_PLANE_BYTES >> 20} MiB")
    lengths = pc.binary_length(table.column("luma"))
    if pc.any(pc.not_equal(lengths, w * h)).as_py():
        raise RecordError(f"a luma plane is not {w}x{h} = {w * h} bytes")
    codings = table.column("luma_coding")
    if pc.any(pc.or_(pc.less(codings, 0), pc.greater(codings, 2))).as_py():
        raise RecordError("luma_coding must be 0, 1 or 2")
    if table.column("luma_coding")[0].as_py() == 2:
        raise RecordError("the first luma plane of a segment cannot be coded against a previous one")
    context = table.column("context").to_pylist()
    if any(context[1:]) or all(context):
        raise RecordError("only the first row of a video segment may be context, and not every row")
    pts = table.column("pts_s").to_numpy()
    if not all(math.isfinite(float(x)) for x in pts):
        raise RecordError("pts_s must be finite")
    for name in ("block_ratio", "block_activity"):
        if table.column(name).null_count:
            raise RecordError(f"{name} must be set on every frame")


def _check_audio(table: pa.Table) -> None:
    if table.num_rows != 1:
        raise RecordError(f"an audio_segment has one row, got {table.num_rows}")
    row = {name: table.column(name)[0].as_py() for name in
           ("sample_rate", "channels", "sample_format", "n_samples", "context_samples", "pts_s")}
    _in_range("sample_rate", row["sample_rate"], *SAMPLE_RATE)
    _in_range("channels", row["channels"], *CHANNELS)
    width = SAMPLE_BYTES.get(row["sample_format"])
    if width is None:
        raise RecordError(f"unsupported audio sample format {row['sample_format']!r} (this build reads "
                          f"{' and '.join(SAMPLE_BYTES)})")
    _in_range("n_samples", row["n_samples"], 0, row["sample_rate"] * 60)
    _in_range("context_samples", row["context_samples"], 0, row["sample_rate"] * 10)
    _finite("pts_s", row["pts_s"])
    expected = (row["n_samples"] + row["context_samples"]) * row["channels"] * width
    got = pc.binary_length(table.column("samples"))[0].as_py()
    if got != expected:
        raise RecordError(f"samples has {got} bytes; {row['n_samples']}+{row['context_samples']} samples x "
                          f"{row['channels']} channels x {width} bytes = {expected}")


def _same_in_every_row(table: pa.Table, name: str) -> None:
    column = table.column(name)
    if column.null_count:
        raise RecordError(f"{name} is null")
    if table.num_rows > 1 and len(pc.unique(column)) != 1:
        raise RecordError(f"{name} differs between the rows of one record")


def _in_range(name: str, value, low, high) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not low <= value <= high:
        raise RecordError(f"{name} must be between {low} and {high}, got {value!r}")


def _finite(name: str, value) -> None:
    if value is None or not math.isfinite(float(value)):
        raise RecordError(f"{name} must be a finite number, got {value!r}")
