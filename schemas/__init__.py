"""Versioned Arrow record definitions (records.py) and their IPC encode/decode helpers (codec.py)."""
from schemas.codec import COMPRESSIONS, RecordError, decode, encode, record_type_of
from schemas.records import (ALL, ANOMALY_EVENT, AUDIO_SEGMENT, BLOCK_REGIONS, CONTROL, DEAD_LETTER, DIFF_CELLS,
                             FEATURE_SEGMENT, MAX_DEAD_LETTER_BYTES, VIDEO_SEGMENT, RecordType)

__all__ = ["ALL", "ANOMALY_EVENT", "AUDIO_SEGMENT", "BLOCK_REGIONS", "COMPRESSIONS", "CONTROL", "DEAD_LETTER",
           "DIFF_CELLS", "FEATURE_SEGMENT", "MAX_DEAD_LETTER_BYTES",
           "VIDEO_SEGMENT", "RecordError", "RecordType",
           "decode", "encode", "record_type_of"]
