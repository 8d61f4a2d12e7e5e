"""Probe: the per-batch cost of Spark's two Python state APIs on the shape of avwatch's state (not part of
`make bench`; docs/performance.md records its figures).

    .venv/bin/python bench/state_api_probe.py apply 10    # applyInPandasWithState, 10 keys per batch
    .venv/bin/python bench/state_api_probe.py tws 100     # transformWithStateInPandas, 100 keys per batch

A rate source gives each key two rows per second; per key and batch the step reads and rewrites a 16 kB
state value (a stream's compressed state) and re-arms a 10 s processing-time timeout (applyInPandasWithState)
or timer (transformWithStateInPandas: list, delete, register). local[2], RocksDB, 60 s, trigger 0.5 s;
prints the median batch duration, its addBatch part and the state stores' commit time after 5 batches.
transformWithStateInPandas needs the protobuf package (requirements-dev.txt).
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(mode: str, keys: int, seconds: float = 60.0) -> dict:
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
    from pyspark.sql.streaming.state import GroupStateTimeout
    from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType

    from jobs.spark_session import build_session

    spark = build_session("state-api-probe", master="local[2]", extra={"spark.ui.enabled": "false"})
    checkpoint = tempfile.mkdtemp(prefix=f"avwatch-probe-{mode}-")
    source = (spark.readStream.format("rate").option("rowsPerSecond", keys * 2).load()
              .select((F.col("value") % keys).cast("string").alias("k"), "value"))
    out_schema = StructType([StructField("k", StringType()), StructField("n", LongType())])
    blob = os.urandom(16000)
    if mode == "apply":
        def step(key, frames, state):
            n = sum(len(f) for f in frames)
            _ = state.get[0] if state.exists else None
            state.update((blob,))
            state.setTimeoutDuration(10000)
            yield pd.DataFrame({"k": [key[0]], "n": [n]})

        query = source.groupBy("k").applyInPandasWithState(step, out_schema, "state binary", "append",
                                                           GroupStateTimeout.ProcessingTimeTimeout)
    elif mode == "tws":
        class Step(StatefulProcessor):
            def init(self, handle: StatefulProcessorHandle):
                self.handle = handle
                self.state = handle.getValueState("s", StructType([StructField("b", BinaryType())]))

            def handleInputRows(self, key, rows, timerValues):
                n = sum(len(f) for f in rows)
                _ = self.state.get() if self.state.exists() else None
                self.state.update((blob,))
                for t in self.handle.listTimers():
                    self.handle.deleteTimer(t)
                self.handle.registerTimer(timerValues.getCurrentProcessingTimeInMs() + 10000)
                yield pd.DataFrame({"k": [key[0]], "n": [n]})

            def handleExpiredTimer(self, key, timerValues, expiredTimerInfo):
                yield pd.DataFrame({"k": [key[0]], "n": [-1]})

            def close(self):
                pass

        query = source.groupBy("k").transformWithStateInPandas(Step(), out_schema, "Append", "ProcessingTime")
    else:
        raise SystemExit(f"mode must be apply or tws, not {mode!r}")
    running = (query.writeStream.foreachBatch(lambda df, _: df.collect())
               .option("checkpointLocation", checkpoint).trigger(processingTime="0.5 seconds").start())
    time.sleep(seconds)
    progress = [p for p in running.recentProgress if p["numInputRows"] > 0][5:]
    running.stop()
    shutil.rmtree(checkpoint, ignore_errors=True)
    return {"mode": mode, "keys": keys, "batches": len(progress),
            "batch_ms_p50": statistics.median(p["durationMs"]["triggerExecution"] for p in progress),
            "add_batch_ms_p50": statistics.median(p["durationMs"].get("addBatch", 0) for p in progress),
            "state_commit_ms_p50": statistics.median(sum(o["commitTimeMs"] for o in p["stateOperators"])
                                                     for p in progress)}


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "apply", int(sys.argv[2]) if len(sys.argv) > 2 else 10))
