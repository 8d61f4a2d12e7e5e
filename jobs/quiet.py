"""Quiet by default: a run prints avwatch's own progress and results, not the engines' chatter.

Without --verbose (on the command line and on the jobs):
  kafka-python    connection INFO and "Task ... ran for 0.105s ... blocking the event loop" warnings
                  (its I/O thread waiting for ours: harmless, reported on every run) -> errors only
  py4j            a line per gateway call -> warnings only
  Spark (JVM)     log4j2 WARN lines and the "Using Spark's default log4j profile" banner -> errors only
                  (jobs/spark_session.py: jobs/spark-log4j2.properties, setLogLevel)
  Python warnings FutureWarning and DeprecationWarning from pyspark and pandas, in this process and in
                  Spark's Python workers (spark.executorEnv.PYTHONWARNINGS) -> not shown
--verbose keeps every one of them, with debug logging; AVWATCH_VERBOSE=1 carries the choice to code
that has no arguments (the Spark session builder).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "AVWATCH_VERBOSE"
# the Python warnings a quiet run hides, as PYTHONWARNINGS spells them (for Spark's Python workers)
HIDDEN_WARNINGS = "ignore::FutureWarning,ignore::DeprecationWarning"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV) == "1"


def configure_output(verbose_flag: bool = False) -> None:
    """Logging to stderr at INFO (DEBUG with verbose_flag); the engines' messages hidden unless verbose
    (the flag, or AVWATCH_VERBOSE=1 in the environment)."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    loud = verbose()
    logging.basicConfig(level=logging.DEBUG if loud else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if loud:
        return
    logging.getLogger("kafka").setLevel(logging.ERROR)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
