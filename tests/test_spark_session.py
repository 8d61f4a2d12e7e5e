"""The settings jobs/spark_session.py gives Spark reach the processes they are for (the shared real session)."""
from __future__ import annotations

from jobs.spark_session import JVM_OPTIONS


def test_the_jvm_runs_with_the_region_size_that_keeps_pixel_records_young(spark):
    # the option in force in the running JVM, not only in the conf: set too late, it would do nothing
    jvm = spark.sparkContext._jvm
    bean_class = jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(bean_class)
    region = int(bean.getVMOption("G1HeapRegionSize").getValue())
    assert JVM_OPTIONS == "-XX:G1HeapRegionSize=16m"
    assert region == 16 * 1024 * 1024
    # a pixel record (~0.6 MB) is under half a region: an ordinary young allocation, not a humongous one
    assert 600_000 < region // 2


def test_python_workers_start_with_one_blas_thread(spark):
    def env(_rows):
        import os

        yield os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")

    assert set(spark.sparkContext.parallelize(range(4), 2).mapPartitions(env).collect()) == {("1", "1")}
