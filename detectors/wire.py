"""How a feature table travels between processes (stage 1 -> stage 2, the edge converter -> the job).

A blob is b"AVF2", the size of the IPC stream (8 bytes, little-endian) and one uncompressed Arrow IPC
stream of the table, zstd-compressed (level 1) as a whole. Why not Arrow's own buffer compression: it
compresses each buffer apart (a segment's table has ~60) and pays a codec's set-up for each; measured on
the bench clip's edge records (pyarrow 23), reading one took 225 us with lz4 buffers and 74 us as one
zstd frame, which is also smaller (33.1 kB -> 25.9 kB). Blobs of earlier builds (a plain IPC stream with
lz4 buffers, starting with 0xFFFFFFFF) are still read.

from_ipc bounds-checks what it reads (schemas.ipc_guard): a blob may come from outside (an edge converter).
"""
from __future__ import annotations

import pyarrow as pa

from detectors.table import Features
from schemas.ipc_guard import MAX_DECODED_BYTES, GuardError, check_stream

_PREFIX = b"AVF2"
_HEADER = len(_PREFIX) + 8
_CODEC = pa.Codec("zstd", compression_level=1)


def to_ipc(features: Features) -> bytes:
    """The table as a features blob (see the module's docstring)."""
    table = features.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    raw = sink.getvalue()
    return _PREFIX + raw.size.to_bytes(8, "little") + _CODEC.compress(raw, asbytes=True)


def from_ipc(payload: bytes) -> Features:
    """A features blob back to its table; raises GuardError for a blob out of bounds or damaged."""
    view = memoryview(payload)
    if bytes(view[:4]) == _PREFIX:
        if len(view) < _HEADER:
            raise GuardError("truncated features blob: no size after its AVF2 tag")
        size = int.from_bytes(view[4:_HEADER], "little")
        if size > MAX_DECODED_BYTES:
            raise GuardError(f"a features blob declares {size} bytes (at most {MAX_DECODED_BYTES >> 20} MiB: a "
                             f"compression bomb or a corrupt size)")
        try:
            stream = _CODEC.decompress(view[_HEADER:], decompressed_size=size)
        except (OSError, pa.ArrowInvalid) as exc:
            raise GuardError(f"corrupt features blob: {exc}") from None
    else:
        stream = pa.py_buffer(payload)  # an earlier build's blob: an IPC stream with lz4 buffers
    check_stream(stream)
    try:
        table = pa.ipc.open_stream(stream).read_all()
        table.validate(full=True)  # offsets within their buffers (see schemas.codec.decode)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise GuardError(f"corrupt features blob: {exc}") from None
    return Features.from_arrow(table)
