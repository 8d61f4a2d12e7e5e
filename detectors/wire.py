"""How a feature table travels between processes (stage 1 -> stage 2, the edge converter -> the job): one
Arrow IPC stream, lz4-compressed. Incoming bytes from outside are bounds-checked first
(schemas.ipc_guard.check_stream) by whoever receives them."""
from __future__ import annotations

import pyarrow as pa

from detectors.table import Features


def to_ipc(features: Features) -> bytes:
    """The table as an Arrow IPC stream (lz4)."""
    table = features.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(payload: bytes) -> Features:
    return Features.from_arrow(pa.ipc.open_stream(pa.py_buffer(payload)).read_all())
