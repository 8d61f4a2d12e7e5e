"""jobs.pandas_rows.to_records reads Spark's pandas frames column by column: the same dicts as pandas'
own row-by-row `to_dict(orient="records")`, with Spark's nulls (NaN in number columns) as None."""
from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.pandas_rows import to_records


def reference(pdf) -> list[dict]:
    rows = pdf.to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]


def test_kafka_rows_come_back_as_pandas_own_records_with_nulls_as_none():
    now = pd.Timestamp("2026-11-28T06:00:00", tz="UTC")
    pdf = pd.DataFrame({
        "stream_id": ["s1", None, "s1"],
        "key": [b"s1", None, b"s1"],
        "value": [b"\x00" * 10, b"", None],
        "topic": ["v", "a", "v"],
        "partition": np.array([0, 1, 0], np.int32),
        "offset": [5.0, np.nan, 7.0],          # a number column holding a Spark null arrives as float NaN
        "timestamp": [now, pd.NaT, now],
    })
    got = to_records(pdf)
    assert got == reference(pdf)
    assert got[1]["offset"] is None and got[0]["offset"] == 5.0 and got[1]["key"] is None
    assert isinstance(got[0]["partition"], int) and got[0]["timestamp"] == now
    assert to_records(pdf.iloc[:0]) == [] and to_records(pd.DataFrame()) == []
