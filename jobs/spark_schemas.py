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


def spark_arrow_schema(schema):
    """The same Arrow schema with the types Spark's Arrow reader lacks replaced by their Spark
    equivalents (fixed-size lists -> lists), for batches handed to Spark (mapInArrow output)."""
    import pyarrow as pa

    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_fixed_size_list(t):
            t = pa.list_(t.value_type)
        fields.append(pa.field(f.name, t, f.nullable))
    return pa.schema(fields, metadata=schema.metadata)
