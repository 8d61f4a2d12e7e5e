"""The benchmarks' Spark helpers, run at their smallest size against the session's real broker and a real
job process: `make bench` is not part of `make test`, and a refactor of the replay harness once broke a
benchmark (`Replay._source` removed, still called by `batch_cost` and the soak) in a way only the next
`make bench` found. This runs the fixed-batch-cost benchmark end to end, which drives the harness's replay,
its job process and the listener's per-batch parts that the other Spark benchmarks share."""
from __future__ import annotations

import pytest


@pytest.mark.kafka
def test_the_fixed_batch_cost_benchmark_runs_end_to_end(broker, tmp_path):
    from bench.bench_pipeline import batch_cost

    # batch_parts leaves out the first 3 batches; 10 settling batches stand for make bench's 200
    out = batch_cost(broker.bootstrap, tmp_path, rounds=5, settle=10)
    assert out["rounds"] == 5 and out["batch_fixed_wall_ms"] > 0
    assert out["settled_after_batches"] == 20 and out["batch_fixed_wall_ms_settled"] > 0
    assert out["jit_cpu_s_per_batch"] > 0              # a young job's JIT is compiling: its threads were read
    assert "jit_cpu_s_per_batch_settled" in out         # (a settled job's may round to 0: no bound to assert)
    assert out["batches"] >= 1 and out["batch_ms_p50"] > 0     # the job logged its batches' phases ...
    assert out["parts_ms"] and out["sink_ms"]                  # ... and the benchmark read them
