"""Encode and decode records as Arrow IPC streams, with lz4 or zstd buffer compression.

A Kafka message value is one IPC stream (schema + one record batch). The schema metadata carries the
record name and version, so a message identifies itself without the Kafka headers; the headers repeat
it for consumers that route without decoding.

Every way a payload can be wrong (foreign bytes, a truncated stream, an unknown record or version, a
schema that does not match its version) raises RecordError, the one error type the stream job routes
to the dead-letter table.
"""
from __future__ import annotations

import pyarrow as pa

from schemas.ipc_guard import GuardError, check_stream
from schemas.records import ALL, META_NAME, META_VERSION, RecordType

COMPRESSIONS = ("zstd", "lz4", "none")


class RecordError(ValueError):
    """A payload that is not a valid avwatch record; the message says why."""


def encode(record_type: RecordType, data: pa.Table | pa.RecordBatch | dict | list[dict],
           compression: str = "zstd") -> bytes:
    """Serialize rows of `record_type` to IPC stream bytes.

    data: an Arrow table/batch with the record's columns, a dict of columns, or a list of row dicts.
    compression: "zstd" (default: best for pixels), "lz4" (fastest) or "none"; a precompressed record
    type (feature_segment) is always written with "none".
    """
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    if record_type.precompressed:
        compression = "none"
    schema = record_type.schema
    if isinstance(data, list):
        table = pa.Table.from_pylist(data, schema=schema)
    elif isinstance(data, dict):
        table = pa.Table.from_pydict(data, schema=schema)
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data]).cast(schema)
    else:
        table = data.cast(schema) if data.schema != schema else data
    table = table.replace_schema_metadata(schema.metadata)
    # use_threads=False: a segment's few buffers compress faster on the calling thread than through
    # Arrow's pool (measured ~10% less CPU); the converter and Spark already run one task per core.
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression, use_threads=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        for batch in table.combine_chunks().to_batches():
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def record_type_of(schema: pa.Schema) -> RecordType:
    """The known RecordType a schema claims to be, checked field by field."""
    meta = schema.metadata or {}
    if META_NAME not in meta or META_VERSION not in meta:
        raise RecordError("not an avwatch record: the Arrow schema has no avwatch.record/avwatch.version tag")
    name = meta[META_NAME].decode("utf-8", "replace")
    version = meta[META_VERSION].decode("utf-8", "replace")
    known = ALL.get(name)
    if known is None:
        raise RecordError(f"unknown record type {name!r} (known: {', '.join(sorted(ALL))})")
    if version != str(known.version):
        raise RecordError(f"unsupported {name} schema version {version!r} (this build reads version "
                          f"{known.version}); upgrade avwatch or republish with a matching converter")
    if not schema.equals(known.schema, check_metadata=False):
        raise RecordError(f"{name} v{version} payload does not match its schema: {schema} ")
    return known


def decode(payload: bytes | memoryview | None, expect: RecordType | None = None) -> tuple[RecordType, pa.Table]:
    """Parse IPC stream bytes into (record type, table); raise RecordError on any defect."""
    if payload is None or len(payload) == 0:
        raise RecordError("empty payload")
    try:
        check_stream(payload)  # declared sizes and counts within bounds before Arrow allocates from them
    except GuardError as exc:
        raise RecordError(str(exc)) from None
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(payload))
        schema = reader.schema
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise RecordError(f"not an Arrow IPC stream: {exc}") from None
    record_type = record_type_of(schema)
    if expect is not None and record_type.name != expect.name:
        raise RecordError(f"expected a {expect.name} record, got {record_type.name}")
    try:
        table = reader.read_all()
        # offsets and lengths checked against their buffers: a damaged one in an uncompressed record would
        # otherwise be read out of bounds (it aborts the process), not refused
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, MemoryError) as exc:
        raise RecordError(f"truncated or corrupt {record_type.name} payload: {exc}") from None
    # An IPC stream cut exactly between messages still parses: require its end-of-stream marker.
    if not _has_eos_marker(payload):
        raise RecordError(f"truncated {record_type.name} payload: no end-of-stream marker")
    return record_type, table


def _has_eos_marker(payload: bytes | memoryview) -> bool:
    # The IPC stream format ends with a continuation token and a zero length: 0xFFFFFFFF 0x00000000.
    return bytes(payload[-8:]) == b"\xff\xff\xff\xff\x00\x00\x00\x00"


def large_binary(values: list[bytes]) -> pa.Array:
    """A large_binary array from bytes objects, built from buffers: pa.array(..., pa.large_binary())
    converts element by element and was measured at ~0.2 s per 600 kB value (pyarrow 23)."""
    import numpy as np

    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    data = pa.py_buffer(b"".join(values))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(values), [None, pa.py_buffer(offsets), data])
