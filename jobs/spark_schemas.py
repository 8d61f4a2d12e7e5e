"""Spark StructTypes derived from the Arrow record definitions in schemas/ (never retyped)."""
from __future__ import annotations

from schemas.records import RecordType


def struct_type(record_type: RecordType):
    """The Spark StructType of an avwatch record type."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(record_type.schema)


def arrow_to_spark(schema):
    """The Spark StructType of a plain Arrow schema (intermediate rows of the jobs)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)
