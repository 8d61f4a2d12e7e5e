"""Stage 1: one segment record -> one feature table, composed from the configured detectors.

The composer decodes the segment once (detectors/segments.py), puts the measures several detectors share
in the table (SHARED_OUTPUTS), then asks each configured detector whose stage 1 reads that kind for its own
columns (`Detector.stage1`, which returns exactly its declared `stage1_outputs`). The declarations are also
what features computed elsewhere (the converter's --edge-features) are checked against, and what the
frame_features table is derived from (detectors/records.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from detectors.base import AUDIO, VIDEO
from detectors.facts import AUDIO_FACTS, audio_codes
from detectors.segments import AudioBlocks, VideoFrames, decode_audio, decode_video, source_of
from detectors.table import Features
from detectors.wire import from_ipc, to_ipc
from schemas.records import DIFF_CELLS

# The columns the composer itself puts in every table of a kind, name -> Arrow type. Video: the analysed
# frame's flags and the luma measures several detectors share, then (last) the evidence thumbnail.
SHARED_OUTPUTS: dict[str, dict[str, pa.DataType]] = {
    VIDEO: {
        "t": pa.float64(),               # media seconds
        "frame_index": pa.int64(),
        "keyframe": pa.bool_(),
        "decode_error": pa.bool_(),
        "pts_missing": pa.bool_(),
        "frame_dur": pa.float64(),       # nominal seconds between analysed frames
        "luma_mean": pa.float32(),       # 0..1
        "luma_std": pa.float32(),
        "diff_prev": pa.float32(),       # mean |Y - Y_prev|, 0..1; NaN without a previous frame
        "diff_cellmax": pa.float32(),    # the largest of diff_cells
        "diff_cells": pa.list_(pa.float32(), DIFF_CELLS[0] * DIFF_CELLS[1]),
    },
    AUDIO: {
        "t": pa.float64(),               # media seconds of each 10 ms block's first sample
        "n": pa.int64(),                 # samples per channel in the block
        "rate": pa.int32(),              # samples per second
        "audio_format": pa.list_(pa.int64(), len(AUDIO_FACTS)),  # the source's AUDIO_FACTS, coded (format_change)
    },
}
EVIDENCE_OUTPUTS = {"thumb_jpeg": pa.binary()}  # video: the frame's thumbnail, JPEG


def outputs(detectors, kind: str) -> dict[str, pa.DataType]:
    """Every column stage 1 of these detectors writes for `kind`, shared ones first, name -> Arrow type."""
    out = dict(SHARED_OUTPUTS[kind])
    for det in detectors:
        if det.stage1_kind == kind:
            out.update(det.stage1_outputs)
    if kind == VIDEO:
        out.update(EVIDENCE_OUTPUTS)
    return out


def _add_stage1(out: Features, det, data) -> None:
    columns = det.stage1(data)
    if columns.keys() != det.stage1_outputs.keys():
        raise TypeError(f"{det.name}.stage1 returned {sorted(columns)}, but declares {sorted(det.stage1_outputs)}")
    out.update(columns)


# -- video ---------------------------------------------------------------------------------------


def video_features(table: pa.Table, config) -> Features:
    """Stage 1 of every configured video detector over one video segment table."""
    frames, _src, flags = decode_video(table)
    return compose_video(frames, flags, config)


def compose_video(frames: VideoFrames, flags: dict, config) -> Features:
    """The shared per-frame measures plus every configured video detector's own columns."""
    out = Features(t=frames.t, frame_index=flags["frame_index"].astype(np.int64),
                   keyframe=flags["keyframe"].astype(bool), decode_error=flags["decode_error"].astype(bool),
                   pts_missing=flags["pts_missing"].astype(bool),
                   frame_dur=np.full(len(frames.t), frames.frame_dur),
                   luma_mean=frames.luma_mean, luma_std=frames.luma_std, diff_prev=frames.diff_prev,
                   diff_cellmax=frames.diff_cells.max(axis=1) if len(frames.t) else np.zeros(0, np.float32),
                   diff_cells=frames.diff_cells, thumb_jpeg=flags["thumb_jpeg"])
    for det in config.detectors:
        if det.stage1_kind == VIDEO:
            _add_stage1(out, det, frames)
    return out


# -- audio ---------------------------------------------------------------------------------------


def audio_features(table: pa.Table, config) -> Features:
    """Stage 1 of every configured audio detector over one audio segment table."""
    blocks, _src = decode_audio(table)
    return compose_audio(blocks, config)


def compose_audio(blocks: AudioBlocks, config) -> Features:
    out = Features(t=blocks.t, n=blocks.n, rate=np.full(len(blocks.t), blocks.rate, np.int32),
                   audio_format=np.tile(audio_codes(blocks.source_audio), (len(blocks.t), 1)))
    for det in config.detectors:
        if det.stage1_kind == AUDIO:
            _add_stage1(out, det, blocks)
    return out


# -- features computed elsewhere (the converter's --edge-features) are checked before use -------------

_KIND_GROUPS = ("f", "iu", "b", "OS")  # dtype kinds that may stand for each other


def _dtype_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "b"
    if pa.types.is_integer(arrow_type):
        return "i"
    if pa.types.is_floating(arrow_type):
        return "f"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "O"
    raise TypeError(f"stage-1 outputs are numbers, booleans, binary or lists of those, not {arrow_type}")


def expected_columns(config, kind: str) -> dict[str, tuple[str, tuple]]:
    """Column name -> (dtype kind, trailing shape) of this config's stage 1 for `kind`, from the declared
    outputs. A fixed-size list has that width; a plain list (one value per audio channel) any width (None)."""
    # the declared outputs are class attributes: one answer per set of detector classes (this ran for every
    # segment record, ~2% of the streaming job's per-stream step)
    return _expected_columns(tuple(type(d) for d in config.detectors), kind)


@lru_cache(maxsize=64)
def _added_columns(classes: tuple, kind: str) -> frozenset[str]:
    """The float columns of `kind` that these detectors added after they first shipped (Detector.stage1_added)."""
    def fixed_floats(t: pa.DataType) -> bool:  # a float, or a fixed-size list of floats (a NaN row has a width)
        return pa.types.is_floating(t) or (pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type))

    return frozenset(name for c in classes if c.stage1_kind == kind for name in c.stage1_added
                     if fixed_floats(c.stage1_outputs[name]))


@lru_cache(maxsize=64)
def _expected_columns(classes: tuple, kind: str) -> dict[str, tuple[str, tuple]]:
    out = {}
    for name, arrow_type in outputs(classes, kind).items():
        if pa.types.is_fixed_size_list(arrow_type):
            out[name] = (_dtype_kind(arrow_type.value_type), (arrow_type.list_size,))
        elif pa.types.is_list(arrow_type):
            out[name] = (_dtype_kind(arrow_type.value_type), (None,))
        else:
            out[name] = (_dtype_kind(arrow_type), ())
    return out


def check_features(feats: Features, config, kind: str) -> None:
    """Raise ValueError unless `feats` has every column this config's detectors read for `kind`, each of
    the right type and shape, all of one length, with finite times. A column a detector added after it
    first shipped (`Detector.stage1_added`: records of an earlier edge converter lack it) is filled with NaN."""
    t = feats.get("t")
    if not isinstance(t, np.ndarray) or t.ndim != 1 or t.dtype.kind not in "fiu":
        raise ValueError("features have no 1-D numeric column 't'")
    if not np.isfinite(t.astype(np.float64)).all():
        raise ValueError("features column 't' has a non-finite time")
    n = len(t)
    for name, values in feats.items():
        if values.shape[:1] != (n,):
            raise ValueError(f"features column {name!r} has {values.shape[0] if values.ndim else 0} rows, "
                             f"'t' has {n}")
    if kind == "audio" and "rate" in feats and n and not ((feats["rate"] >= 1000) & (feats["rate"] <= 768_000)).all():
        raise ValueError("features column 'rate' must hold sample rates from 1000 to 768000")
    missing = []
    expected = expected_columns(config, kind)
    for name, (dtype_kind, trailing) in expected.items():
        values = feats.get(name)
        if values is None:
            missing.append(name)
            continue
        group = next(g for g in _KIND_GROUPS if dtype_kind in g)
        if values.dtype.kind not in group or values.ndim != 1 + len(trailing):
            raise ValueError(f"features column {name!r} is {values.dtype}{list(values.shape[1:])}, "
                             f"expected kind {dtype_kind!r} with {len(trailing) + 1} dimension(s)")
        if None not in trailing and values.shape[1:] != trailing:  # per-channel widths follow the audio
            raise ValueError(f"features column {name!r} has shape {values.shape[1:]}, expected {trailing}")
    added = _added_columns(tuple(type(d) for d in config.detectors), kind)
    for name in [m for m in missing if m in added]:
        # a column added since the edge converter's build: NaN (its detector goes without), not a lost segment
        feats[name] = np.full((n,) + expected[name][1], np.nan, np.float32)
        missing.remove(name)
    if missing:
        raise ValueError(f"features lack column(s) {', '.join(missing)} that this job's detectors read "
                         f"(the edge converter runs other detectors: publish with the job's --detectors/--config)")


# -- one segment record -> stage-2 input -----------------------------------------------------------


@dataclass
class SegmentInput:
    """What stage 2 needs of one Kafka record: where it goes in the stream and its features or control."""

    stream_id: str
    kind: str                  # "video" or "audio" (the topic it came on)
    sequence: int
    t: float                   # media seconds at its start
    source: dict               # the converter's source metadata (has_video, has_audio, epoch, ...)
    features: Features | None = None
    control: str | None = None  # "eos" or "heartbeat" for control records


def stage1(record_name: str, table: pa.Table, config, kind: str | None = None) -> SegmentInput:
    """Stage 1 for one decoded record. `kind` is the topic's kind, needed for control records."""
    stream_id = table.column("stream_id")[0].as_py()
    seq = int(table.column("sequence")[0].as_py())
    src = source_of(table)
    if record_name == "video_segment":
        feats = video_features(table, config) if config.needs("video") else Features()
        t = float(table.column("pts_s")[0].as_py()) if not len(feats) else float(feats["t"][0])
        return SegmentInput(stream_id, "video", seq, t, src, features=feats)
    if record_name == "audio_segment":
        feats = audio_features(table, config) if config.needs("audio") else Features()
        return SegmentInput(stream_id, "audio", seq, float(table.column("pts_s")[0].as_py()), src, features=feats)
    if record_name == "feature_segment":  # stage 1 already ran at the edge (the converter): check it first
        kind = table.column("kind")[0].as_py()
        feats = from_ipc(table.column("features")[0].as_py())  # bounds-checked as it is read
        if config.needs(kind):
            check_features(feats, config, kind)
        return SegmentInput(stream_id, kind, seq, float(table.column("t")[0].as_py()), src, features=feats)
    if record_name == "control":
        if kind not in ("video", "audio"):
            raise ValueError("a control record needs the kind of the topic it came on")
        return SegmentInput(stream_id, kind, seq, float(table.column("media_time_s")[0].as_py()), src,
                            control=table.column("kind")[0].as_py())
    raise ValueError(f"stage 1 does not take {record_name} records")


def edge_features_table(record_name: str, table: pa.Table, config) -> pa.Table:
    """Run stage 1 on a video/audio segment and wrap the result as a feature_segment record (the
    converter's --edge-features mode: features travel instead of pixels)."""
    from schemas.codec import large_binary
    from schemas.records import FEATURE_SEGMENT

    item = stage1(record_name, table, config)
    return pa.Table.from_pydict({
        "stream_id": [item.stream_id], "sequence": [item.sequence], "kind": [item.kind], "t": [item.t],
        # the detectors this segment's features were computed for (sent with every segment: compact)
        "detectors": [json.dumps(config.describe(item.kind), sort_keys=True, separators=(",", ":"))],
        "features": large_binary([to_ipc(item.features)]), "source": [table.column("source")[0].as_py()]},
        schema=FEATURE_SEGMENT.schema)
