"""The streaming job's per-stream step in one process: CPU per stream-second of media, and where it goes.

    .venv/bin/python -m bench.bench_step                 # 10 streams x 60 s, min of 3 runs
    .venv/bin/python -m bench.bench_step --profile       # one run under cProfile, the top functions

What the job runs for each stream in a micro-batch (`jobs.stream_stages.StreamStep.run`: decode the Kafka
records, check them, stage 1 where needed, every default detector's stage 2), on edge-feature records of
the bench clip replayed as N streams (`bench.harness`), in 2 s calls with the state dumped and loaded
between calls as the state store does. No Spark and no broker: this is the part of the job's cost that
grows with the number of streams (`streams_per_core` and the 100-stream latency are bound by it), measured
without Spark's per-batch cost, so that a change to it can be timed alone (performance.md).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import bench_clip  # noqa: E402
from bench.harness import convert_once, replay_slots, replay_source, restamp  # noqa: E402

CALL_S = 2  # media seconds per call: one micro-batch of a real-time stream at the default trigger, rounded up


def kafka_rows(streams: int, seconds: float) -> dict[str, list[tuple[float, dict]]]:
    """Per stream: (media time, Kafka row) of every edge-feature record, in the benchmarks' replay order."""
    from schemas.codec import encode
    from schemas.records import FEATURE_SEGMENT

    clip = convert_once(bench_clip(720, 10.0), edge=True)
    epoch = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = {}
    for i in range(streams):
        sid = f"s{i}"
        source = replay_source(clip, sid, epoch)
        out[sid] = [(media_t, {"key": sid.encode(), "topic": "va"[which], "partition": 0, "offset": seq,
                               "timestamp": None,
                               "value": encode(FEATURE_SEGMENT, restamp((clip.video, clip.audio)[which][k], sid, seq,
                                                                        shift, source))})
                    for media_t, shift, k, sends in replay_slots(clip, seconds) for which, seq in sends]
    return out


def make_step():
    """The step as a Python worker of the job holds it (built once, used for every batch)."""
    from detectors.config import DetectorConfig
    from jobs.stream_stages import Stage2, StreamStep

    stage2 = Stage2(DetectorConfig.build(), "bench-step", 30.0, keep_features=False)
    return StreamStep(stage2, {"v": "video", "a": "audio"}, 64 << 20, 10.0, finite=False)


def replay(step, rows: dict, seconds: float) -> tuple[int, int]:
    """Every stream's records through the step, CALL_S media seconds per call, each stream starting with no
    state; returns (output rows, median saved state bytes)."""
    from jobs.stream_stages import dump_state

    stage2 = step.stage2
    blobs: dict[str, bytes | None] = {}
    produced = 0
    for t0 in range(0, int(seconds), CALL_S):
        for sid, recs in rows.items():
            batch = [r for t, r in recs if t0 <= t < t0 + CALL_S]
            saved = blobs.get(sid)
            state = stage2.load(saved) if saved is not None else None
            out, state = step.run(sid, batch, state, saved)
            produced += len(out)
            blobs[sid] = dump_state(state) if state is not None else None
    sizes = sorted(len(b) for b in blobs.values() if b is not None)
    return produced, sizes[len(sizes) // 2] if sizes else 0


def run(streams: int = 10, seconds: float = 60.0, reps: int = 3) -> dict:
    rows = kafka_rows(streams, seconds)
    step = make_step()
    replay(step, rows, min(seconds, 4.0))  # imports and caches out of the timed runs
    best = float("inf")
    for _ in range(reps):
        started = time.process_time()
        produced, state_bytes = replay(step, rows, seconds)
        best = min(best, time.process_time() - started)
    return {"streams": streams, "seconds": seconds, "calls_s": CALL_S, "runs": reps,
            "step_ms_per_stream_s": round(1000 * best / (streams * seconds), 2),
            "records": sum(len(r) for r in rows.values()),
            "record_bytes_per_stream_s": round(sum(len(r["value"]) for recs in rows.values() for _, r in recs)
                                               / (streams * seconds)),
            "state_bytes_median": state_bytes,
            "note": "StreamStep.run on edge-feature records of the bench clip, one process, min of the runs' CPU"}


def profile(streams: int, seconds: float, top: int = 30) -> str:
    rows = kafka_rows(streams, seconds)
    step = make_step()
    replay(step, rows, min(seconds, 4.0))
    prof = cProfile.Profile()
    prof.runcall(replay, step, rows, seconds)
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--profile", action="store_true", help="one run under cProfile: the top functions")
    args = p.parse_args(argv)
    if args.streams < 1 or args.seconds < CALL_S:
        p.error(f"--streams must be at least 1 and --seconds at least {CALL_S}")
    if args.profile:
        print(profile(args.streams, args.seconds))
    else:
        print(json.dumps(run(args.streams, args.seconds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
