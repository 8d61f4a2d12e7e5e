"""The one SparkSession builder used by every job and by the test fixture.

Defaults suit one machine (`local[*]`, the jars from the local cache); every setting can be overridden
by spark-submit (`--master`, `--conf k=v`), which wins because getOrCreate() keeps values that the
launcher already placed in the SparkConf.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from avwatch import jars
from jobs.quiet import HIDDEN_WARNINGS, verbose

QUIET_LOG4J = Path(__file__).resolve().parent / "spark-log4j2.properties"

# The JVM's options (driver and executors). A pixel record is ~0.6 MB, over G1's "humongous" threshold of
# half a heap region (1 MB regions on a 2 GB heap): each record fetched from Kafka, copied into a row and
# into Arrow was allocated outside the young generation and started a concurrent cycle. With 16 MB regions
# (threshold 8 MB) they are ordinary young objects: the job's JVM used ~13% less CPU per analysed frame
# (docs/performance.md, 2026-11-28, session 11).
JVM_OPTIONS = "-XX:G1HeapRegionSize=16m"

# Settings avwatch needs; a value already set by spark-submit or the caller is kept.
DEFAULTS = {
    "spark.driver.extraJavaOptions": JVM_OPTIONS,
    "spark.executor.extraJavaOptions": JVM_OPTIONS,
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
    # Spark 4.2 hashes every shuffled row (XXH64 over its bytes, on by default) so that a retried map task
    # that wrote different rows makes the stages after it run again. The job's one shuffle moves ~0.6 MB
    # pixel records read from fixed Kafka offsets, which a retry reads again unchanged; the hashing was half
    # of its tasks' samples in a profile and ~0.3 ms of JVM CPU per analysed frame (docs/performance.md,
    # session 12). Off, as in Spark 4.1 and before.
    "spark.sql.shuffle.orderIndependentChecksum.enabled": "false",
    "spark.sql.shuffle.orderIndependentChecksum.enableFullRetryOnMismatch": "false",
    # one BLAS thread per Python worker, set before numpy loads (avwatch/native_threads.py: OpenBLAS's pool
    # spins after each matrix product and took a core's worth of CPU from the other tasks and the JVM)
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    "spark.executorEnv.OMP_NUM_THREADS": "1",
}


# What the JVM prints at start on every run that no setting silences: Spark's launcher always adds
# --add-modules=jdk.incubator.vector, and the JVM announces it on stderr.
JVM_START_NOISE = (b"WARNING: Using incubator modules:",)


def quiet_settings() -> dict:
    """Without --verbose: Spark's driver logs errors only, from its first line (the log4j2 file replaces
    the default profile and its banners), and the Python workers hide FutureWarning/DeprecationWarning."""
    if verbose():
        return {}
    return {"spark.driver.extraJavaOptions": f"{JVM_OPTIONS} -Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}",
            "spark.executorEnv.PYTHONWARNINGS": HIDDEN_WARNINGS}


def _launch_quiet_jvm(settings: dict) -> None:
    """Start Spark's JVM as getOrCreate() would (same settings), its stderr passed on through a thread that
    drops JVM_START_NOISE; everything else it and the Python workers write still reaches stderr."""
    import subprocess
    import threading

    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    gateway = launch_gateway(SparkConf(loadDefaults=False).setAll(list(settings.items())),
                             popen_kwargs={"stderr": subprocess.PIPE})

    def pass_on(stream):
        for line in iter(stream.readline, b""):
            if not line.startswith(JVM_START_NOISE):
                os.write(2, line)

    threading.Thread(target=pass_on, args=(gateway.proc.stderr,), name="spark-jvm-stderr", daemon=True).start()
    SparkContext._ensure_initialized(gateway=gateway)


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
    settings = {"spark.app.name": app_name}
    if not conf.contains("spark.master"):
        settings["spark.master"] = master or os.environ.get("AVWATCH_SPARK_MASTER", "local[*]")
    if not conf.contains("spark.jars") or "spark-sql-kafka" not in conf.get("spark.jars", ""):
        settings["spark.jars"] = jars.spark_jars_csv()
    for key, value in {**DEFAULTS, **quiet_settings(), **(extra or {})}.items():
        if not conf.contains(key):
            settings[key] = value
    if not verbose() and SparkContext._gateway is None:  # no JVM yet, and not under spark-submit
        _launch_quiet_jvm(settings)
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("AVWATCH_SPARK_LOG_LEVEL") or ("WARN" if verbose() else "ERROR"))
    return spark
