"""The one SparkSession builder used by every job and by the test fixture.

Defaults suit one machine (`local[*]`, the jars from the local cache); every setting can be overridden
by spark-submit (`--master`, `--conf k=v`), which wins because getOrCreate() keeps values that the
launcher already placed in the SparkConf.
"""
from __future__ import annotations

import os
import sys

from avwatch import jars

# Settings avwatch needs; a value already set by spark-submit or the caller is kept.
DEFAULTS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # transformWithState requires it and it keeps large per-stream state off the JVM heap.
    "spark.sql.streaming.stateStore.providerClass":
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    # Segment values are ~0.1-1 MB: small Arrow batches keep Python workers' memory flat and are faster
    # (measured: ~250 rows per batch beat 10,000 by 1.8x for per-frame binary rows).
    "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
    "spark.sql.execution.arrow.useLargeVarTypes": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # the per-stream state: each partition is a state store committed every micro-batch (measured: 1.8
    # CPU-s per batch with 4, 1.2 with 1 on 2 cores); raise it on a cluster, where stage 2 needs parallelism
    "spark.sql.shuffle.partitions": "2",
    # The delta-rs reader (notebooks, `avwatch events`) cannot read deletion vectors written by Spark.
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.ui.showConsoleProgress": "false",
    # Each micro-batch is planned anew, and generating Java source for its projections was the largest
    # JVM cost in a profile (JFR: ~40% of samples in CodeFormatter/Block.toString). The rows here are a
    # few wide records per segment, where interpreted projections cost nothing: no code generation.
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # RocksDB state: commit a changelog per batch instead of a snapshot of the store
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    "spark.driver.memory": "2g",
}


def build_session(app_name: str = "avwatch", master: str | None = None, extra: dict | None = None):
    """Create (or return) the SparkSession configured for avwatch.

    master: used only when the launcher did not set one (spark-submit's --master wins); default local[*].
    extra: additional settings (tests use it for a small shuffle and no UI).
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # launched by spark-submit: attach to its JVM first, so SparkConf() sees what it was given
        SparkContext._ensure_initialized()
    conf = SparkConf()  # holds what spark-submit passed, if it launched us
    # Python workers must run the interpreter that has avwatch's packages (the venv), unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not conf.contains("spark.master"):
        builder = builder.master(master or os.environ.get("AVWATCH_SPARK_MASTER", "local[*]"))
    if not conf.contains("spark.jars") or "spark-sql-kafka" not in conf.get("spark.jars", ""):
        builder = builder.config("spark.jars", jars.spark_jars_csv())
    for key, value in {**DEFAULTS, **(extra or {})}.items():
        if not conf.contains(key):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("AVWATCH_SPARK_LOG_LEVEL", "WARN"))
    return spark
