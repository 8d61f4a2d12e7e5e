"""The record whose columns the detectors decide: frame_features, one analysed frame's complete stage-1
video features (the composer's shared columns and every registered video detector's declared
stage1_outputs), after the key columns schemas/records.py defines. Nothing here is written twice: a new
video detector's columns join the table by its declaration."""
from __future__ import annotations

import pyarrow as pa

from detectors.base import VIDEO
from detectors.compose import outputs
from detectors.registry import REGISTRY
from schemas.records import FRAME_KEY_FIELDS, frame_features_record

_KEYS = {f.name for f in FRAME_KEY_FIELDS}

FRAME_FEATURES = frame_features_record([pa.field(name, arrow_type)
                                        for name, arrow_type in outputs(REGISTRY.values(), VIDEO).items()
                                        if name not in _KEYS])

# Columns of FRAME_FEATURES that are stage-1 features (the key columns say where and when the frame was).
FRAME_FEATURE_COLUMNS = [f.name for f in FRAME_FEATURES.schema if f.name not in _KEYS]
