"""Run the benchmarks and write docs/benchmarks.md and docs/benchmarks.json (what `make bench` runs).

    .venv/bin/python bench/run.py                       # everything (~15 min on 2 cores; the first run also
                                                        # builds the field corpus and measures FFmpeg on it, ~30 min)
    .venv/bin/python bench/run.py --only converter,e2e  # some of them; the others keep their last figures

Every benchmark measures an anchor in the same run (FFmpeg on the same clip, a numpy pass over the same
frames, the local runner on the same records): ratios, not wall-clock figures, are what to compare
across machines. Run on a quiet machine: the pipeline benchmarks count the CPU time of every process.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_converter, bench_detectors, bench_pipeline, bench_step, detection_quality  # noqa: E402
from bench.common import machine, write_json  # noqa: E402
from bench.report import render  # noqa: E402

ALL = ["detection", "converter", "transport", "detectors", "step", "e2e", "e2e_edge", "spark", "scaling", "batch", "latency",
       "latency100", "streams"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--streams", type=int, default=100,
                   help="streams for the streams-per-core run (default 100, the target)")
    p.add_argument("--streams-seconds", type=float, default=180.0, help="its duration (default 180)")
    p.add_argument("--streams-trials", type=int, default=2,
                   help="its trials, each with a new job; sustained only if every trial is (default 2)")
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md/.json")
    args = p.parse_args(argv)
    chosen = [x.strip() for x in args.only.split(",")] if args.only else ALL
    unknown = set(chosen) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    out = Path(args.out)
    json_path = out / "benchmarks.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results.setdefault("runs", {})

    from avwatch.stack import Stack
    from tests.conftest import free_port_pair

    # stopped with SIGTERM (kill, a CI timeout), the run still stops its broker: `finally` runs on SystemExit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="avwatch-bench-"))
    stack = Stack.at(work / "state", free_port_pair())
    stack.up(echo=lambda *_: None)
    try:
        for name in chosen:
            print(f"[bench] {name} ...", flush=True)
            started = time.monotonic()
            if name == "detection":
                figures = detection_quality.evaluate("held_out", verbose=True,
                                                     echo=lambda s: print(f"[detection] {s}", flush=True))
            elif name == "converter":
                figures = bench_converter.run(stack.bootstrap)
            elif name == "transport":
                figures = bench_converter.transport_cost()
            elif name == "detectors":
                figures = bench_detectors.run()
            elif name == "step":
                figures = bench_step.run()
            elif name == "e2e":
                figures = bench_pipeline.e2e(stack.bootstrap, work)
            elif name == "e2e_edge":
                figures = bench_pipeline.e2e(stack.bootstrap, work, edge=True)
            elif name == "spark":
                figures = bench_pipeline.spark_vs_local(stack.bootstrap, work)
            elif name == "streams":
                figures = bench_pipeline.streams_per_core(stack.bootstrap, work, args.streams, args.streams_seconds,
                                                          args.streams_trials)
            elif name == "latency":
                figures = bench_pipeline.latency(stack.bootstrap, work)
            elif name == "batch":
                figures = bench_pipeline.batch_cost(stack.bootstrap, work)
            elif name == "latency100":
                figures = bench_pipeline.latency(stack.bootstrap, work, streams=100, seconds=60.0)
            else:
                figures = bench_pipeline.scaling(stack.bootstrap, work)
            figures["elapsed_s"] = round(time.monotonic() - started, 1)
            figures["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            results["runs"][name] = figures
            print(f"[bench] {name}: {json.dumps(figures)[:400]}", flush=True)
            results["machine"] = machine()
            results.update(headline(results["runs"]))
            write_json(json_path, results)
            (out / "benchmarks.md").write_text(render(results))
    finally:
        stack.down(purge=True, echo=lambda *_: None)
        shutil.rmtree(work, ignore_errors=True)
    print(f"[bench] wrote {json_path} and {out / 'benchmarks.md'}")
    return 0


def headline(runs: dict) -> dict:
    """The top-level keys docs/benchmarks.json promises (numbers), from the runs that exist."""
    h = {}
    if "detection" in runs:
        d = runs["detection"]
        h["detection_macro_f1"] = d["macro_f1"]
        h["false_alarms_per_hour_clean"] = d["false_alarms_per_hour_clean"]
        h["ffmpeg_macro_f1"] = d["ffmpeg"]["macro_f1"]
        h["detection_f1"] = {k: v["f1"] for k, v in d["per_detector"].items()}
        # beside the target key, never instead of it: the score without truths under the coding's own change
        h["detection_macro_f1_without_below_coding"] = d.get("macro_f1_without_below_coding")
    if "e2e" in runs:
        h["e2e_vs_ffmpeg_same_size"] = runs["e2e"]["e2e_vs_ffmpeg_same_size"]
        h["e2e_cost_vs_floor"] = runs["e2e"]["cost_vs_floor"]
        h["e2e_vs_ffmpeg_native"] = runs["e2e"]["e2e_vs_ffmpeg_native"]
    if "e2e_edge" in runs:
        h["e2e_edge_vs_ffmpeg_same_size"] = runs["e2e_edge"]["e2e_vs_ffmpeg_same_size"]
        h["e2e_edge_cost_vs_floor"] = runs["e2e_edge"]["cost_vs_floor"]
    if "spark" in runs:
        h["spark_vs_local"] = runs["spark"]["spark_vs_local"]
        if runs["spark"].get("spark_vs_local_settled") is not None:  # beside the target key, never instead
            h["spark_vs_local_settled"] = runs["spark"]["spark_vs_local_settled"]
    if "streams" in runs:
        r = runs["streams"]
        if r["sustained"]:
            h["streams_per_core"] = r["streams"]
        elif "scaling" in runs:  # not sustained: the backlog throughput of local[1] bounds it
            h["streams_per_core"] = round(runs["scaling"]["local1_partitions4_frames_per_s"] / 25, 1)
        else:
            h["streams_per_core"] = 0
    if "latency" in runs:
        h["alert_p95_s"] = runs["latency"]["alert_p95_s"]
        h["alert_open_p95_s"] = runs["latency"].get("alert_open_p95_s")
        if runs["latency"].get("micro_batch", {}).get("state_bytes_per_stream") is not None:
            h["state_bytes_per_stream"] = runs["latency"]["micro_batch"]["state_bytes_per_stream"]
    if "scaling" in runs:
        h["scaling_2_vs_1"] = runs["scaling"]["cores_2_vs_1"]
    if "batch" in runs:
        h["batch_fixed_cpu_s"] = runs["batch"]["batch_fixed_cpu_s"]
        if runs["batch"].get("batch_fixed_cpu_s_settled") is not None:
            h["batch_fixed_cpu_s_settled"] = runs["batch"]["batch_fixed_cpu_s_settled"]
    if "step" in runs:
        h["step_ms_per_stream_s"] = runs["step"]["step_ms_per_stream_s"]
    if "latency100" in runs:
        h["alert_p95_s_100"] = runs["latency100"]["alert_p95_s"]
        h["alert_open_p95_s_100"] = runs["latency100"].get("alert_open_p95_s")
    if "converter" in runs:
        h["bytes_per_frame_vs_raw_1080p"] = runs["converter"]["1080p"]["bytes_per_frame_vs_raw_1080p"]
        h["converter_vs_ffmpeg_1080p"] = runs["converter"]["1080p"]["ratio_vs_ffmpeg"]
    if "transport" in runs:
        h["converter_transport_cost_1080p"] = runs["transport"]["transport_cost_ratio"]
    if "detectors" in runs:
        h["video_features_us_320x180"] = runs["detectors"]["video"]["320x180"]["whole_video_set_us"]
    return h


if __name__ == "__main__":
    sys.exit(main())
