"""The settings jobs/spark_session.py gives Spark reach the processes they are for (the shared real session)."""
from __future__ import annotations

import re

from jobs.spark_session import JVM_OPTIONS


def test_the_jvm_runs_with_the_heap_region_size_the_options_set(spark):
    # the option in force in the running JVM, not only in the conf: set too late (after the JVM started, or
    # overridden by another extraJavaOptions value), it would do nothing
    size = re.search(r"-XX:G1HeapRegionSize=(\d+)m", JVM_OPTIONS)
    assert size, f"JVM_OPTIONS sets no G1 region size: {JVM_OPTIONS!r}"
    jvm = spark.sparkContext._jvm
    bean_class = jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(bean_class)
    assert int(bean.getVMOption("G1HeapRegionSize").getValue()) == int(size.group(1)) << 20


def test_python_workers_start_with_one_blas_thread(spark):
    def env(_rows):
        import os

        yield os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")

    assert set(spark.sparkContext.parallelize(range(4), 2).mapPartitions(env).collect()) == {("1", "1")}


def test_the_shuffle_computes_no_row_checksum(spark):
    # Spark 4.2 hashes every shuffled row (XXH64 over its bytes) to detect retried tasks that wrote different
    # rows; the job's one shuffle carries ~0.6 MB pixel records from Kafka offsets, which a retry reads again
    # unchanged, and the hashing was half of its tasks' CPU (docs/performance.md, session 12). The session in
    # force must have it off, whatever the defaults of the Spark release in use.
    for key in ("spark.sql.shuffle.orderIndependentChecksum.enabled",
                "spark.sql.shuffle.orderIndependentChecksum.enableFullRetryOnMismatch"):
        assert spark.conf.get(key) == "false", key
