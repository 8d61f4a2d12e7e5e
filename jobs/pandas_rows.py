"""Rows handed to Python by Spark as pandas DataFrames, back as the plain dicts stage 2 reads."""
from __future__ import annotations


def to_records(pdf) -> list[dict]:
    """The DataFrame's rows as dicts, None where pandas put NaN for a missing number (Spark's nulls)."""
    rows = pdf.to_dict(orient="records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and value != value:
                row[key] = None
    return rows
