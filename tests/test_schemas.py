"""Round trips of every record type, and the rejections the stream job routes to dead-letter."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

import schemas
from detectors.records import FRAME_FEATURES
from schemas import RecordError, decode, encode
from schemas.records import BLOCK_REGIONS, META_NAME, META_VERSION

# every record type: the messages and tables schemas defines, and frame_features, completed by the detectors
RECORDS = {**schemas.ALL, FRAME_FEATURES.name: FRAME_FEATURES}

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
N_REG = BLOCK_REGIONS[0] * BLOCK_REGIONS[1]


def video_rows(n: int, stream_id: str = "cam-1", w: int = 32, h: int = 18) -> list[dict]:
    return [{"stream_id": stream_id, "sequence": 7, "frame_index": i, "pts": 512 * i if i % 3 else None,
             "time_base_num": 1, "time_base_den": 12800, "pts_s": i * 0.04, "pts_missing": i % 3 == 0,
             "context": i == 0, "keyframe": i == 1, "decode_error": False, "width": w, "height": h,
             "luma": bytes((i + k) % 256 for k in range(w * h)), "luma_coding": 0, "thumb_width": 8,
             "thumb_height": 4,
             "thumb": bytes(8 * 4 * 3), "block_ratio": [1.0 + i / 10] * N_REG, "block_activity": [0.01] * N_REG,
             "source": '{"uri": "x"}'} for i in range(n)]


ROWS = {
    "video_segment": video_rows(3),
    "audio_segment": [{"stream_id": "cam-1", "sequence": 3, "pts_s": 1.0, "sample_rate": 48000, "channels": 2,
                       "layout": "stereo", "sample_format": "s16", "n_samples": 4, "context_samples": 1,
                       "samples": bytes(range(20)), "source": "{}"}],
    "feature_segment": [{"stream_id": "cam-1", "sequence": 4, "kind": "video", "t": 4.0, "detectors": "{}",
                         "features": b"ipc", "source": "{}"}],
    "control": [{"stream_id": "cam-1", "sequence": 9, "kind": "eos", "media_time_s": 12.5, "wall_time": NOW,
                 "source": "{}"}],
    "anomaly_event": [{"event_id": "e1", "stream_id": "cam-1", "detector": "black", "detector_version": "1.0",
                       "start_s": 1.0, "end_s": 2.5, "start_time": NOW, "end_time": NOW, "score": 0.99,
                       "threshold": 0.98, "severity": "major", "details": '{"duration_s": 1.5}',
                       "evidence": b"\xff\xd8jpeg", "run_id": "r1", "detected_at": NOW}],
    "dead_letter": [{"topic": "avwatch.video", "partition": 0, "offset": 42, "key": None, "value": b"junk",
                     "value_size": 4, "reason": "not an Arrow IPC stream", "run_id": "r1", "seen_at": NOW}],
    "frame_features": [{"stream_id": "cam-1", "date": "2000-01-01", "t": 0.04, "event_time": NOW, "frame_index": 1,
                        "diff_cells": [0.0] * 16, "block_ratio": [1.0] * 9, "block_activity": [0.0] * 9,
                        "solid_color_rgb": [0.1, 0.2, 0.3], "thumb_jpeg": b"jpg",
                        "luma_mean": 0.5, "luma_std": 0.1, "black_frac": 0.0, "diff_prev": 0.01,
                        "diff_cellmax": 0.02, "flat_frac": 0.3, "blur_sharpness": 0.2, "colorbars_bars": 0,
                        "decode_error": False, "run_id": "r1"}],
}


def test_every_record_type_has_rows_here():
    assert set(ROWS) == set(RECORDS)


@pytest.mark.parametrize("name", sorted(schemas.ALL))
@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_round_trip(name, compression):
    record = schemas.ALL[name]
    payload = encode(record, ROWS[name], compression)
    got_type, table = decode(payload)
    assert got_type is record
    assert table.to_pylist() == pa.Table.from_pylist(ROWS[name], schema=record.schema).to_pylist()


@pytest.mark.parametrize("name", sorted(schemas.ALL))
def test_empty_segment_round_trips(name):
    record = schemas.ALL[name]
    got_type, table = decode(encode(record, record.schema.empty_table()))
    assert got_type is record and table.num_rows == 0 and table.schema.equals(record.schema, check_metadata=False)


def test_frame_features_rows_fit_its_schema_and_are_never_read_as_messages():
    table = pa.Table.from_pylist(ROWS["frame_features"], schema=FRAME_FEATURES.schema)
    assert table.to_pylist()[0]["solid_color_rgb"] == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(RecordError, match="unknown record type 'frame_features'"):
        decode(encode(FRAME_FEATURES, ROWS["frame_features"]))


def test_maximal_video_segment_round_trips():
    # 10 s of 1080p-sourced frames at 30 fps at the 640x360 analysis size: ~69 MB raw, one record
    rows = video_rows(300, w=640, h=360)
    payload = encode(schemas.VIDEO_SEGMENT, rows, "zstd")
    _, table = decode(payload)
    assert table.num_rows == 300
    assert table.column("luma")[299].as_py() == rows[299]["luma"]


@pytest.mark.parametrize("stream_id", ["cam-1", "камера-2", "摄像机 3", "🎥/live?x=1", ""])
def test_unicode_stream_ids(stream_id):
    _, table = decode(encode(schemas.VIDEO_SEGMENT, video_rows(2, stream_id=stream_id)))
    assert table.column("stream_id").to_pylist() == [stream_id, stream_id]


def test_unknown_version_is_rejected_with_its_reason():
    record = schemas.CONTROL
    future = record.schema.with_metadata({META_NAME: b"control", META_VERSION: b"99"})
    table = pa.Table.from_pylist(ROWS["control"], schema=future)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, future) as writer:
        writer.write_table(table)
    with pytest.raises(RecordError, match="unsupported control schema version '99'"):
        decode(sink.getvalue().to_pybytes())


def test_unknown_record_name_and_untagged_schema_are_rejected():
    for meta, message in [({META_NAME: b"thing", META_VERSION: b"1"}, "unknown record type 'thing'"),
                          ({}, "not an avwatch record")]:
        schema = pa.schema([("a", pa.int64())], metadata=meta)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(pa.table({"a": [1]}, schema=schema))
        with pytest.raises(RecordError, match=message):
            decode(sink.getvalue().to_pybytes())


def test_schema_that_does_not_match_its_version_is_rejected():
    schema = pa.schema([("stream_id", pa.string())], metadata={META_NAME: b"control", META_VERSION: b"1"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(pa.table({"stream_id": ["x"]}, schema=schema))
    with pytest.raises(RecordError, match="does not match its schema"):
        decode(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("cut", [1, 8, 100, 400, -200, -8, -1])
def test_truncated_payloads_are_rejected(cut):
    payload = encode(schemas.VIDEO_SEGMENT, video_rows(3))
    with pytest.raises(RecordError):
        decode(payload[:cut])


@pytest.mark.parametrize("junk", [b"", b"hello world", bytes(range(256)) * 4, b"\xff\xff\xff\xff" + b"\x00" * 60])
def test_foreign_bytes_are_rejected(junk):
    with pytest.raises(RecordError):
        decode(junk)


def test_expecting_another_record_type_is_rejected():
    with pytest.raises(RecordError, match="expected a video_segment record, got control"):
        decode(encode(schemas.CONTROL, ROWS["control"]), expect=schemas.VIDEO_SEGMENT)


def test_bad_compression_name():
    with pytest.raises(ValueError, match="compression must be one of"):
        encode(schemas.CONTROL, ROWS["control"], "gzip")


@pytest.mark.spark
def test_spark_struct_types_are_derived_from_the_arrow_definitions(spark):
    from pyspark.sql.pandas.types import to_arrow_schema

    from jobs.spark_schemas import struct_type

    for record in RECORDS.values():
        spark_type = struct_type(record)
        assert spark_type.fieldNames() == record.schema.names
        back = to_arrow_schema(spark_type, timezone="UTC", prefers_large_types=False)
        for field, original in zip(back, record.schema):
            # binary widths differ (Spark has one binary type); everything else maps back exactly
            if pa.types.is_large_binary(original.type):
                assert pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
            elif pa.types.is_fixed_size_list(original.type):
                assert pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type)
            else:
                assert field.type == original.type, (record.name, field.name)


def test_frame_features_hold_every_stage1_video_column():
    """The frame_features table is enough to re-run the video detectors: it has all their columns."""
    import tempfile
    from pathlib import Path

    from avwatch.convert.decode import MediaDecoder
    from avwatch.convert.segments import Segmenter
    from avwatch.samples import read_rgb_frames, real_clip, write_clip
    from detectors.config import DetectorConfig
    from detectors.features import stage1
    from detectors.records import FRAME_FEATURE_COLUMNS
    from detectors.registry import NAMES

    clip = write_clip(Path(tempfile.mkdtemp()) / "c.mp4", read_rgb_frames(real_clip("bikes"), limit=30), 25)
    decoder = MediaDecoder(str(clip))
    seg = Segmenter("c", decoder.info)
    segments = [s for item in decoder.items() for s in seg.add(item)] + seg.finish()
    video = next(s for s in segments if s.kind == "video")
    # every registered detector, the optional ones too: the table holds the complete set
    columns = set(stage1("video_segment", video.table, DetectorConfig.build(list(NAMES))).features)
    assert columns - {"t", "frame_index"} == set(FRAME_FEATURE_COLUMNS)


@pytest.mark.parametrize("kind", ["noise", "static", "gradient", "cut"])
def test_luma_coding_is_lossless(kind):
    import numpy as np

    from schemas.luma import PLAIN, TEMPORAL, decode_planes, encode_planes

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (18, 32), dtype=np.uint8)
    planes = {"noise": [rng.integers(0, 256, (18, 32), dtype=np.uint8) for _ in range(5)],
              "static": [base.copy() for _ in range(5)],
              "gradient": [np.tile(np.arange(32, dtype=np.uint8) * 8, (18, 1)) + i for i in range(5)],
              "cut": [base, base, 255 - base, 255 - base, base]}[kind]
    data, codings = encode_planes(planes)
    assert codings[0] != TEMPORAL
    if kind == "static":
        assert codings[1:] == [TEMPORAL] * 4
    assert np.array_equal(decode_planes(data, codings, 18, 32), np.stack(planes))
    assert np.array_equal(decode_planes([p.tobytes() for p in planes], [PLAIN] * 5, 18, 32), np.stack(planes))
    with pytest.raises(ValueError, match="cannot be coded against a previous one"):
        decode_planes(data[:1], [TEMPORAL], 18, 32)
    with pytest.raises(ValueError, match="expected 18x32"):
        decode_planes([b"xx"], [PLAIN], 18, 32)


def test_feature_tables_read_the_same_from_whole_sliced_and_null_holding_list_columns():
    """Features.from_arrow takes a fixed-size list's child array as it is when it holds exactly the column's
    values (an IPC read); a slice (an offset into the child) or null lists go the general way, a null list of
    floats as NaNs."""
    import numpy as np

    from detectors.table import Features

    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    lists = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 3)
    table = pa.table({"t": np.arange(10.0), "v": lists})
    whole = Features.from_arrow(table)
    assert np.array_equal(whole["v"], values)
    sliced = Features.from_arrow(table.slice(3, 4))
    assert np.array_equal(sliced["v"], values[3:7]) and np.array_equal(sliced["t"], np.arange(3.0, 7.0))
    # a null list (a row written before the column existed) reads as a NaN row of the column's width
    with_null = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 3,
                                                  mask=pa.array([False] * 9 + [True]))
    read = Features.from_arrow(pa.table({"t": np.arange(10.0), "v": with_null}))
    assert read["v"].shape == (10, 3) and np.array_equal(read["v"][:9], values[:9])
    assert np.isnan(read["v"][9]).all()
