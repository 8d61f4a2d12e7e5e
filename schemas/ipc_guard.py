"""Bounds on an Arrow IPC stream, checked before Arrow allocates anything from it.

Arrow trusts what a message declares: a compressed buffer starts with its uncompressed length and the
reader allocates that much before decompressing (a 30 kB zstd "bomb" can ask for gigabytes), and a row
count is taken as given. A Kafka record is untrusted input, so each record-batch message's metadata is
read here first — a few fields of its flatbuffer, by hand, with every read bounds-checked — and the
stream is refused when a declared size or count is out of range. Only then does pyarrow read it.

Flatbuffer layout used (format/Message.fbs, format/Schema.fbs of Arrow):
  Message     { version: short; header_type: ubyte; header: table; bodyLength: long; ... }
  RecordBatch { length: long; nodes: [FieldNode]; buffers: [Buffer]; compression: BodyCompression; ... }
  FieldNode   struct { length: long; null_count: long }      Buffer struct { offset: long; length: long }
"""
from __future__ import annotations

import struct

import pyarrow as pa

# Header types of the Message union.
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3

MAX_ROWS = 100_000                 # rows in one record (a 10 s segment at 60 fps has 601)
MAX_DECODED_BYTES = 256 << 20      # the sum of a record's buffers once decompressed
MAX_MESSAGES = 64                  # messages in one IPC stream (ours carry a schema and one batch)


class GuardError(ValueError):
    """A stream that declares more than the bounds allow, or whose metadata does not parse."""


class _Flat:
    """Bounds-checked reads of one flatbuffer."""

    def __init__(self, data: bytes):
        self.data = data

    def _unpack(self, fmt: str, pos: int):
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise GuardError("IPC metadata is truncated or points outside itself")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def root(self) -> int:
        return self._unpack("<I", 0)

    def field_pos(self, table: int, index: int) -> int | None:
        """Absolute position of a table's field, or None when the field is absent (its default)."""
        vtable = table - self._unpack("<i", table)
        vt_size = self._unpack("<H", vtable)
        if 4 + 2 * index >= vt_size:
            return None
        offset = self._unpack("<H", vtable + 4 + 2 * index)
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: str, default=0):
        pos = self.field_pos(table, index)
        return default if pos is None else self._unpack(fmt, pos)

    def ref(self, table: int, index: int) -> int | None:
        """Follow an offset field (a sub-table or a vector) to its absolute position."""
        pos = self.field_pos(table, index)
        return None if pos is None else pos + self._unpack("<I", pos)

    def struct_vector(self, table: int, index: int) -> list[tuple[int, int]]:
        """A vector of 16-byte structs of two int64 (FieldNode and Buffer)."""
        pos = self.ref(table, index)
        if pos is None:
            return []
        n = self._unpack("<I", pos)
        if n > 1_000_000 or pos + 4 + n * 16 > len(self.data):
            raise GuardError("IPC metadata declares a vector larger than itself")
        # one C-level pass over the vector (a record has hundreds of buffers)
        return list(struct.iter_unpack("<qq", memoryview(self.data)[pos + 4:pos + 4 + n * 16]))


def check_stream(payload) -> None:
    """Raise GuardError unless every message of the IPC stream in `payload` is within bounds."""
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(payload))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise GuardError(_unreadable(payload, exc)) from None
    for count in range(MAX_MESSAGES + 1):
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
            raise GuardError(_unreadable(payload, exc)) from None
        if message is None:
            return
        if count == MAX_MESSAGES:
            raise GuardError(f"more than {MAX_MESSAGES} messages in one record")
        _check_message(message)


def _unreadable(payload, exc: Exception) -> str:
    # Arrow IPC streams begin with the continuation marker 0xFFFFFFFF: with it, the record was cut or damaged
    if bytes(payload[:4]) == b"\xff\xff\xff\xff":
        return f"truncated or corrupt Arrow IPC stream: {exc}"
    return f"not an Arrow IPC stream: {exc}"


def _check_message(message) -> None:
    flat = _Flat(message.metadata.to_pybytes())
    root = flat.root()
    header_type = flat.scalar(root, 1, "<B")
    if header_type == _SCHEMA:
        return
    if header_type == _DICTIONARY_BATCH:
        raise GuardError("dictionary batches are not used by avwatch records")
    if header_type != _RECORD_BATCH:
        raise GuardError(f"unexpected IPC message type {header_type}")
    batch = flat.ref(root, 2)
    if batch is None:
        raise GuardError("a record batch message without its header")
    rows = flat.scalar(batch, 0, "<q")
    if not 0 <= rows <= MAX_ROWS:
        raise GuardError(f"a record batch declares {rows} rows (at most {MAX_ROWS})")
    for length, nulls in flat.struct_vector(batch, 1):
        if not (0 <= length <= MAX_ROWS * 64 and 0 <= nulls <= length):
            raise GuardError(f"a column declares {length} values and {nulls} nulls")
    body = message.body
    body_size = 0 if body is None else body.size
    compressed = flat.ref(batch, 3) is not None
    total = 0
    for offset, length in flat.struct_vector(batch, 2):
        if offset < 0 or length < 0 or offset + length > body_size:
            raise GuardError("a buffer lies outside the record's body")
        if compressed and length >= 8:
            declared = struct.unpack_from("<q", body, offset)[0]  # -1: stored uncompressed
            total += length - 8 if declared == -1 else declared
            if declared < -1:
                raise GuardError(f"a compressed buffer declares a negative size {declared}")
        else:
            total += length
        if total > MAX_DECODED_BYTES:
            raise GuardError(f"the record would decompress to more than {MAX_DECODED_BYTES >> 20} MiB "
                             f"(a compression bomb or a corrupt size)")
