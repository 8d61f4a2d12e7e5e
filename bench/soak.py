"""Soak runs of the streaming job, outside `make test` and `make bench` (docs/performance.md has their
figures):

    .venv/bin/python bench/soak.py live [--streams 200 --seconds 600]   # memory over time under load
    .venv/bin/python bench/soak.py short [--streams 2000]               # streams that each end: state returns

live   N real-time streams of edge features on local[2] for S seconds; every 10 s the resident memory of
       the driver's JVM, the driver's Python and the Python workers, and the records not yet processed.
short  N short streams (2 s of segments, then end of stream on both topics) published as fast as they go
       next to one long-running probe stream (a heartbeat a second keeps micro-batches running); the job
       keeps an ended stream's tombstone --ended-state-ttl (10 s here): the state rows the listener reports
       before, at the peak, and once every short stream's tombstone has expired (the probe's state is the
       starting point).
Both write their samples to docs/soak-<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_clip  # noqa: E402
from bench.harness import Heartbeats, JobProcess, Replay, convert_once, end_offsets  # noqa: E402


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def memory(job: JobProcess) -> dict:
    """Resident MB of the job's JVM, its driver Python and its Python workers (daemon and forks)."""
    procs = job.processes()
    out = {"jvm_mb": sum(_rss_mb(p) for p in procs["jvm"]), "driver_python_mb": _rss_mb(job.proc.pid),
           "workers_mb": sum(_rss_mb(p) for p in procs["python_workers"]), "workers": len(procs["python_workers"])}
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def behind(job: JobProcess, bootstrap: str, topics) -> int:
    done = job.committed_offsets()
    return sum(max(0, off - done.get(t, {}).get(str(p), 0)) for (t, p), off in end_offsets(bootstrap, topics).items())


def live(bootstrap: str, work: Path, streams: int, seconds: float) -> dict:
    from jobs.kafka_io import create_topics

    clip = convert_once(bench_clip(720, seconds=10.0), edge=True)
    topics = ("soak.live.video", "soak.live.audio")
    create_topics(bootstrap, list(topics), partitions=2)
    job = JobProcess(work / "live", bootstrap, topics, master="local[2]",
                     extra=["--alerts-topic", "", "--starting-offsets", "latest"])
    samples = []
    try:
        while not job.progress() and '"query": "started"' not in job.log_path.read_text(errors="replace"):
            time.sleep(0.5)
        replay = Replay(bootstrap, topics, clip, streams=streams, prefix="soak", partitions=2)
        t0 = time.monotonic()
        replay.start(seconds)
        while replay.thread.is_alive():
            time.sleep(10)
            samples.append({"t_s": round(time.monotonic() - t0), **memory(job), "records_behind": behind(job, bootstrap, topics),
                            "state_rows": (job.progress() or [{}])[-1].get("state_rows")})
            print(json.dumps(samples[-1]), flush=True)
        replay.stop()
    finally:
        job.stop()
    return {"streams": streams, "seconds": seconds, "master": "local[2]", "samples": samples}


def short(bootstrap: str, work: Path, streams: int) -> dict:
    from jobs.kafka_io import HEADER_KIND, HEADER_SCHEMA, create_topics, producer
    import pyarrow as pa
    from schemas import CONTROL, encode

    clip = convert_once(bench_clip(720, seconds=10.0), edge=True)
    topics = ("soak.short.video", "soak.short.audio")
    create_topics(bootstrap, list(topics), partitions=2)
    job = JobProcess(work / "short", bootstrap, topics, master="local[2]",
                     extra=["--alerts-topic", "", "--ended-state-ttl", "10"])
    prod = producer(bootstrap, linger_ms=5)
    probe = Replay(bootstrap, topics, clip, streams=1, prefix="probe", partitions=2)
    # the probe stream's heartbeats keep micro-batches (and so state timeouts) running
    beats = Heartbeats(bootstrap, topics[0], "probe0", probe.source("probe0"), media_t=4.0, step_s=1.0, seq0=1001)

    try:
        while '"query": "started"' not in job.log_path.read_text(errors="replace"):
            time.sleep(0.5)
        probe.run_for(3.0)
        job.wait_caught_up(end_offsets(bootstrap, topics), timeout=300)
        start_rows = job.progress()[-1]["state_rows"]
        many = Replay(bootstrap, topics, clip, streams=streams, prefix="short", partitions=2, speed=1000.0)
        many.run_for(2.0)
        for i in range(streams):  # end of stream on both topics, after each stream's two segments per kind
            sid = f"short{i}"
            for which, kind in ((0, "video"), (1, "audio")):
                table = pa.Table.from_pylist([{"stream_id": sid, "sequence": 2, "kind": "eos", "media_time_s": 2.0,
                                               "wall_time": datetime.now(timezone.utc),
                                               "source": many.source(sid)}], schema=CONTROL.schema)
                prod.send(topics[which], key=sid.encode(), value=encode(CONTROL, table),
                          headers=[(HEADER_SCHEMA, CONTROL.tag.encode()), (HEADER_KIND, b"eos")])
        prod.flush()
        many.stop()
        t0 = time.monotonic()
        job.wait_caught_up(end_offsets(bootstrap, topics), timeout=1200)
        caught_up_s = time.monotonic() - t0
        peak = max(p["state_rows"] for p in job.progress())
        deadline = time.monotonic() + 120
        rows = None
        while time.monotonic() < deadline:
            beats.send()
            time.sleep(1.0)
            rows = job.progress()[-1]["state_rows"]
            if rows <= start_rows:
                break
        mem = memory(job)
    finally:
        prod.close()
        beats.close()
        probe.stop()
        job.stop()
    return {"streams": streams, "state_rows_start": start_rows, "state_rows_peak": peak, "state_rows_end": rows,
            "returned": rows is not None and rows <= start_rows, "caught_up_s": round(caught_up_s, 1),
            "memory_at_end": mem}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["live", "short"])
    p.add_argument("--streams", type=int)
    p.add_argument("--seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    from avwatch.stack import Stack
    from tests.conftest import free_port_pair

    work = Path(tempfile.mkdtemp(prefix="avwatch-soak-"))
    stack = Stack.at(work / "state", free_port_pair())
    stack.up(echo=lambda *_: None)
    try:
        if args.what == "live":
            result = live(stack.bootstrap, work, args.streams or 200, args.seconds)
        else:
            result = short(stack.bootstrap, work, args.streams or 2000)
    finally:
        stack.down(purge=True, echo=lambda *_: None)
    result["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = ROOT / "docs" / f"soak-{args.what}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
