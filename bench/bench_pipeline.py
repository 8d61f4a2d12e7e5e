"""Whole-system benchmarks (issue: performance), each with its anchor measured in the same run.

1. e2e        detection speed on a 1080p 25 fps clip with 5.1 audio through converter + Kafka + Spark job,
              media seconds per CPU second of ALL processes, vs FFmpeg's detection chain at the same size
              (target ratio >= 1.0), vs decode + scale alone (target: our CPU per frame <= 1.25x), and vs
              the chain at native size
2. spark      Spark overhead: the streaming job's frames per CPU second vs the local single-process runner
              on the same pre-published frames (target >= 0.5)
3. streams    live 25 fps streams the job sustains on local[1] without growing lag, replayed at real-time
              pace from pre-converted segments (target >= 40)
4. latency    real-time streams: from the moment a defect becomes reportable (the publisher's send of
              the segment where it has lasted its minimum duration) to its `open` alert, and from the
              segment that ends it to its `closed` alert; p50/p95 at 10 and 100 streams
5. bytes      bytes on the wire per analysed frame vs a raw 1080p frame (from the converter run)
6. scaling    backlog throughput with 1 vs 2 executor cores, and 2 vs 4 topic partitions
7. batch      the fixed cost of a micro-batch: a warm job fed one heartbeat record per batch, CPU-s of
              every process and wall ms per batch, with its parts from the query listener and the sink
"""
from __future__ import annotations

import json
import math
import statistics
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import CpuWindow, bench_clip, ffmpeg, frame_count, run_timed
from bench.harness import Heartbeats, JobProcess, Replay, convert_once, end_offsets
from jobs.kafka_io import create_topics, read_all

CHAIN_V = "blackdetect,freezedetect,blockdetect,blurdetect"
CHAIN_A = "silencedetect,ebur128"


def ffmpeg_anchors(clip: Path, frames: int) -> dict:
    base = [ffmpeg(), "-v", "error", "-threads", "1", "-i", str(clip)]
    _, floor, _ = run_timed(base + ["-vf", "scale=320:180", "-f", "null", "-"])
    _, chain, _ = run_timed(base + ["-vf", f"scale=320:180,{CHAIN_V}", "-af", CHAIN_A, "-f", "null", "-"])
    _, native, _ = run_timed(base + ["-vf", CHAIN_V, "-af", CHAIN_A, "-f", "null", "-"])
    return {"floor_cpu_s": round(floor, 2), "chain_320_cpu_s": round(chain, 2), "chain_native_cpu_s": round(native, 2),
            "floor_ms_per_frame": round(floor / frames * 1e3, 3), "chain_320_ms_per_frame": round(chain / frames * 1e3, 3),
            "chain_native_ms_per_frame": round(native / frames * 1e3, 3)}


def e2e(bootstrap: str, work: Path, edge: bool = False) -> dict:
    """A warm streaming job (local[2]); publish the 1080p clip; CPU of everything until it is processed.
    edge=True: the converter runs stage 1 (--edge-features) and sends features instead of pixels."""
    import subprocess
    import sys

    clip = bench_clip(1080)
    frames = frame_count(clip)
    media_s = frames / 25
    name = "e2e-edge" if edge else "e2e"
    topics = (f"bench.{name}.video", f"bench.{name}.audio")
    create_topics(bootstrap, list(topics), partitions=4)
    job = JobProcess(work / name, bootstrap, topics, master="local[2]", extra=["--alerts-topic", f"bench.{name}.alerts"])
    mode = ["--edge-features"] if edge else []
    try:
        # warm up: the same clip twice through the same job, so that start-up and the JVM's JIT compilation
        # (measured: ~20 CPU-s of C1/C2 compiler threads in the first minute) are not counted as steady state
        for k in range(2):
            subprocess.run([sys.executable, "-m", "cli", "publish", str(clip), "--bootstrap", bootstrap,
                            "--video-topic", topics[0], "--audio-topic", topics[1], "--stream-id", f"warmup{k}",
                            "--no-progress", *mode], check=True, capture_output=True)
            job.wait_caught_up(end_offsets(bootstrap, topics), timeout=300)
        time.sleep(3)
        jit0 = job.jit_cpu()
        with CpuWindow() as window:
            subprocess.run([sys.executable, "-m", "cli", "publish", str(clip), "--bootstrap", bootstrap,
                            "--video-topic", topics[0], "--audio-topic", topics[1], "--stream-id", "e2e1080",
                            "--no-progress", *mode], check=True, capture_output=True)
            job.wait_caught_up(end_offsets(bootstrap, topics), timeout=600, poll=0.1)
        jit = job.jit_cpu() - jit0  # the job's JIT compiler: paid by a young job, mostly not by an old one
    finally:
        job.stop()
    anchors = ffmpeg_anchors(clip, frames)
    ours_ms = window.cpu / frames * 1e3
    out = {"mode": "edge features" if edge else "pixels", "clip": clip.name, "frames": frames, "media_s": media_s, "cpu_s_all_processes": round(window.cpu, 2),
           "wall_s": round(window.wall, 2), "ours_ms_per_frame": round(ours_ms, 3),
           "media_s_per_cpu_s": round(media_s / window.cpu, 3), "job_jit_cpu_s": round(jit, 2), **anchors}
    out["e2e_vs_ffmpeg_same_size"] = round(anchors["chain_320_cpu_s"] / window.cpu, 3)
    out["e2e_vs_ffmpeg_native"] = round(anchors["chain_native_cpu_s"] / window.cpu, 3)
    out["cost_vs_floor"] = round(window.cpu / anchors["floor_cpu_s"], 3)
    return out


def _local_cpu_s(bootstrap: str, topics: tuple[str, str], prefix: str, video_records: int) -> float:
    """CPU-s of the local runner (decode, stage 1 and stage 2 in one process, records in memory) over the
    records of the streams whose ids start with `prefix`: the `video_records` a job window sent, no more
    and no fewer (RuntimeError otherwise: an anchor over other records would not be an anchor)."""
    from detectors.analyzer import StreamAnalyzer
    from detectors.config import DetectorConfig
    from jobs.stream_stages import stage1_rows

    records = [r for r in read_all(bootstrap, list(topics), timeout_s=120) if r.key.decode().startswith(prefix)]
    config = DetectorConfig.build()
    kinds = {topics[0]: "video", topics[1]: "audio"}
    rows = [{"key": r.key, "value": r.value, "topic": r.topic, "partition": r.partition, "offset": r.offset,
             "timestamp": None} for r in records]
    found = sum(1 for r in records if r.topic == topics[0])
    if found != video_records:
        raise RuntimeError(f"the local anchor for streams {prefix}* read {found} video records from "
                           f"{topics[0]}; the job's window sent {video_records}")
    t0 = time.process_time()
    analyzers: dict = {}
    # encode=False: the segments go straight from stage 1 to the analyzer, as in the job's one step (until
    # 2026-11-28 the anchor also encoded each segment's features and read them back)
    for out in stage1_rows(rows, config, kinds, 1 << 30, encode=False):
        sid = out["stream_id"]
        if sid not in analyzers:
            analyzer = StreamAnalyzer(config)
            analyzers[sid] = (analyzer, analyzer.initial_state())
        analyzer, state = analyzers[sid]
        analyzer.add(state, out["segment"])
    return time.process_time() - t0


def _job_window(job: JobProcess, bootstrap: str, topics: tuple[str, str], clip, prefix: str) -> dict:
    """Publish 4 streams of `clip` at full speed and read every process's CPU until the job has caught up:
    the Spark side's CPU per frame, split by process, minus the replay that feeds it (this process)."""
    replay = Replay(bootstrap, topics, clip, streams=4, prefix=prefix, speed=1000.0)
    own0 = time.process_time()
    roles0 = job.cpu_by_role()
    jit0 = job.jit_cpu()
    batches0 = len([p for p in job.progress() if p.get("input_rows")])
    with CpuWindow() as window:
        replay.run_for(clip.seconds)
        replay.stop()
        own = time.process_time() - own0
        job.wait_caught_up(end_offsets(bootstrap, topics), timeout=600, poll=0.1)
    roles = {k: v - roles0.get(k, 0.0) for k, v in job.cpu_by_role().items()}
    jit = job.jit_cpu() - jit0  # part of the JVM's: its compiler threads
    batches = [p for p in job.progress() if p.get("input_rows")][batches0:]
    frames = replay.frames
    spark_cpu = window.cpu - own
    # where the job's CPU went, per frame; "rest" is every other process (the broker, the OS) but the replay
    parts_ms = {k: round(v / frames * 1e3, 3) for k, v in roles.items()}
    parts_ms["rest"] = round((spark_cpu - sum(roles.values())) / frames * 1e3, 3)
    return {"frames": frames, "spark_cpu_s": spark_cpu, "replay_cpu_s": own, "parts_ms": parts_ms,
            "jit_ms": round(jit / frames * 1e3, 3), "batches": len(batches), "replay": replay,
            "video_records": sum(1 for (_, kind, _) in replay.sent_at if kind == "video")}


def spark_vs_local(bootstrap: str, work: Path, settle_batches: int = 300, settle_rounds: int = 4) -> dict:
    """The same records analysed by the local runner (one process, stage 1 + stage 2) and by a warm Spark
    job (local[2]). Both count CPU seconds per analysed frame; the Spark side counts every process on the
    machine while it catches up, minus the replay that feeds it (measured in this process).

    Measured twice on the same job. First young: two warm-up rounds before the window (the headline,
    its definition since issue 14). Then settled: `settle_batches` heartbeat micro-batches and
    `settle_rounds` more pixel rounds later, when the JVM has compiled what every micro-batch and every
    pixel record runs (Spark plans each micro-batch anew, so its planner's code reaches the JIT's
    thresholds only after hundreds of batches: docs/performance.md, session 11) -- the cost a job that has
    run for a few minutes pays. Each window has its own local-runner anchor over its own records."""
    clip = convert_once(bench_clip(720))
    topics = ("bench.svl.video", "bench.svl.audio")
    create_topics(bootstrap, list(topics), partitions=4)
    job = JobProcess(work / "svl", bootstrap, topics, master="local[2]", extra=["--alerts-topic", ""])
    run = uuid.uuid4().hex[:6]  # stream ids of this call: the anchors read its records alone from the topics
    beats = None
    settled = None
    try:
        for k in range(2):  # warm-up rounds: start-up and the first compilations
            warm = Replay(bootstrap, topics, clip, streams=4, prefix=f"warm{k}-", speed=1000.0)
            warm.run_for(clip.seconds)
            warm.stop()
            job.wait_caught_up(end_offsets(bootstrap, topics), timeout=600)
        time.sleep(3)
        young = _job_window(job, bootstrap, topics, clip, f"svl{run}-")
        if settle_batches or settle_rounds:
            t0 = time.monotonic()
            # a stream of its own, so the local anchors' records (by prefix) hold no heartbeat
            beats = Heartbeats(bootstrap, topics[0], f"beat{run}", young["replay"].source(f"beat{run}"))
            for _ in range(settle_batches):
                beats.send()
                job.wait_caught_up(end_offsets(bootstrap, topics), timeout=120, poll=0.02)
            for k in range(settle_rounds):
                warm = Replay(bootstrap, topics, clip, streams=4, prefix=f"settle{k}-", speed=1000.0)
                warm.run_for(clip.seconds)
                warm.stop()
                job.wait_caught_up(end_offsets(bootstrap, topics), timeout=600)
            settle_s = time.monotonic() - t0
            time.sleep(3)
            settled = _job_window(job, bootstrap, topics, clip, f"svs{run}-")
    finally:
        if beats:
            beats.close()
        job.stop()
    local_cpu = _local_cpu_s(bootstrap, topics, f"svl{run}-", young["video_records"])
    frames, spark_cpu = young["frames"], young["spark_cpu_s"]
    out = {"frames": frames, "local_cpu_s": round(local_cpu, 2), "local_frames_per_cpu_s": round(frames / local_cpu, 1),
           "spark_cpu_s_all": round(spark_cpu, 2), "replay_cpu_s_subtracted": round(young["replay_cpu_s"], 2),
           "spark_frames_per_cpu_s": round(frames / spark_cpu, 1),
           "spark_vs_local": round(local_cpu / spark_cpu, 3),
           "local_ms_per_frame": round(local_cpu / frames * 1e3, 3),
           "spark_ms_per_frame_by_process": young["parts_ms"],
           # of the JVM's: its JIT compiler, which a job past its first few hundred batches no longer pays
           "spark_ms_per_frame_jit": young["jit_ms"],
           "spark_batches": young["batches"],
           "note": "4 streams of the 720p clip; Spark side: all processes (JVM, Python workers, broker) "
                   "after two warm-up rounds, minus the replay publisher"}
    if settled:
        local_s = _local_cpu_s(bootstrap, topics, f"svs{run}-", settled["video_records"])
        out.update({
            "spark_vs_local_settled": round(local_s / settled["spark_cpu_s"], 3),
            "local_ms_per_frame_settled": round(local_s / settled["frames"] * 1e3, 3),
            "spark_ms_per_frame_by_process_settled": settled["parts_ms"],
            "spark_ms_per_frame_jit_settled": settled["jit_ms"],
            "spark_batches_settled": settled["batches"],
            "settled_after": {"heartbeat_batches": settle_batches, "pixel_rounds": 2 + 1 + settle_rounds,
                              "seconds": round(settle_s, 1)}})
    return out


def streams_per_core(bootstrap: str, work: Path, streams: int = 20, seconds: float = 180.0,
                     trials: int = 2) -> dict:
    """N real-time streams on local[1] for `seconds`, `trials` times, each with a new job: sustained only if
    the lag stayed flat in every trial (this host's speed varies between runs more than many changes do).
    The top-level figures are the worst trial's (the largest lag growth); each trial's are under "trials"."""
    runs = [_streams_trial(bootstrap, work, streams, seconds, k) for k in range(trials)]
    worst = max(runs, key=lambda r: r["lag_growth_records_per_s"])
    return {**worst, "trials": [{k: v for k, v in r.items() if k != "lag_records_samples"} for r in runs],
            "trials_sustained": sum(r["sustained"] for r in runs),
            "sustained": all(r["sustained"] for r in runs)}


def _streams_trial(bootstrap: str, work: Path, streams: int, seconds: float, trial: int) -> dict:
    """One trial of streams_per_core. The replay sends the clip's segments as the converter's
    --edge-features mode does (features, not pixels): the analysis side."""
    clip = convert_once(bench_clip(720, seconds=10.0), edge=True)
    topics = (f"bench.spc{streams}t{trial}.video", f"bench.spc{streams}t{trial}.audio")
    create_topics(bootstrap, list(topics), partitions=4)
    job = JobProcess(work / f"spc{streams}t{trial}", bootstrap, topics, master="local[1]",
                     extra=["--alerts-topic", "", "--starting-offsets", "latest"])
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not job.progress():
            time.sleep(0.5)
        replay = Replay(bootstrap, topics, clip, streams=streams, prefix=f"spc{streams}t{trial}-")
        t0 = time.monotonic()
        replay.start(seconds)
        samples = []
        while replay.thread.is_alive():
            time.sleep(5)
            ends = end_offsets(bootstrap, topics)
            done = job.committed_offsets()
            behind = sum(max(0, off - done.get(t, {}).get(str(p), 0)) for (t, p), off in ends.items())
            samples.append((round(time.monotonic() - t0, 1), behind))
        replay.stop()
        sent_frames = replay.frames
    finally:
        job.stop()
    per_stream_per_s = 2  # one video and one audio record per stream per second
    third = max(1, len(samples) // 3)
    early = statistics.mean(b for _, b in samples[:third]) if samples else 0
    late = statistics.mean(b for _, b in samples[-third:]) if samples else 0
    growth = (late - early) / max(seconds * 2 / 3, 1)  # records per second the backlog grew by
    # sustained: the backlog does not grow (its growth is under 5% of the input rate) over the run
    sustained = growth <= streams * per_stream_per_s * 0.05
    return {"streams": streams, "seconds": seconds, "frames_sent": sent_frames, "lag_records_samples": samples,
            "lag_early_mean": round(early, 1), "lag_late_mean": round(late, 1),
            "lag_growth_records_per_s": round(growth, 2), "sustained": bool(sustained)}


def latency(bootstrap: str, work: Path, streams: int = 10, seconds: float = 60.0, master: str = "local[2]") -> dict:
    """Publish -> open alert (from the moment the defect became reportable), publish -> closed alert and
    publish -> table for events that close when a segment arrives."""
    from deltalake import DeltaTable
    from kafka import KafkaConsumer

    from avwatch.samples import studio_feed

    (work / "lat-clip").mkdir(parents=True, exist_ok=True)
    clip = convert_once(studio_feed(work / "lat-clip").path, edge=True)
    name = f"lat{streams}"
    topics = (f"bench.{name}.video", f"bench.{name}.audio")
    alerts = f"bench.{name}.alerts"
    cores = int(master[len("local["):-1])  # the job's default: one topic partition per core
    create_topics(bootstrap, list(topics) + [alerts], partitions=cores)
    job = JobProcess(work / name, bootstrap, topics, master=master,
                     extra=["--alerts-topic", alerts, "--starting-offsets", "latest", "--trigger", "0.5"])
    consumer = KafkaConsumer(alerts, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                             enable_auto_commit=False)
    consumer.poll(timeout_ms=1000)
    arrivals: dict[str, tuple[float, dict]] = {}
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=200).values():
                for r in batch:
                    event = json.loads(r.value)
                    arrivals.setdefault((r.key.decode(), event.get("state", "closed")), (time.time(), event))

    listener = threading.Thread(target=listen, daemon=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not job.progress():
            time.sleep(0.5)
        listener.start()
        replay = Replay(bootstrap, topics, clip, streams=streams, prefix=name, partitions=cores)
        replay.run_for(seconds)
        time.sleep(10)
        table_seen = {}
        path = job.sink / "anomaly_events"
        if (path / "_delta_log").exists():
            for r in DeltaTable(str(path)).to_pyarrow_table().select(["event_id", "detected_at"]).to_pylist():
                table_seen[r["event_id"]] = r["detected_at"].timestamp()
        replay.stop()
    finally:
        stop.set()
        listener.join(timeout=5)
        consumer.close()
        job.stop()
    alert_lat, open_lat, table_lat = [], [], []
    for (event_id, state), (arrived, event) in arrivals.items():
        if event["detector"] not in ("black", "freeze", "solid_color", "colorbars", "silence", "clipping"):
            continue  # events that open or close when a known segment arrives
        if state == "ongoing":
            continue
        kind = "audio" if event["detector"] in ("silence", "clipping") else "video"
        seq_len = len(clip.video) if kind == "video" else len(clip.audio)
        loop, within = divmod(event["end_s"], clip.seconds)
        # closed: the segment holding the first defect-free frame ends it; open: the segment whose last
        # frame completes the minimum duration (end_s = start + minimum) makes it reportable
        index = int(within) if state == "closed" else max(0, math.ceil(within - 1e-6) - 1)
        sent = replay.sent_at.get((event["stream_id"], kind, int(loop) * seq_len + index))
        if sent is None:
            continue
        if state == "open":
            open_lat.append(arrived - sent)
            continue
        alert_lat.append(arrived - sent)
        if event_id in table_seen:
            table_lat.append(table_seen[event_id] - sent)

    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if values else None

    return {"streams": streams, "seconds": seconds, "master": master, "events_measured": len(alert_lat),
            "alert_p50_s": pct(alert_lat, 50), "alert_p95_s": pct(alert_lat, 95),
            "open_alerts_measured": len(open_lat),
            "alert_open_p50_s": pct(open_lat, 50), "alert_open_p95_s": pct(open_lat, 95),
            "table_commit_p50_s": pct(table_lat, 50), "table_commit_p95_s": pct(table_lat, 95),
            "micro_batch": batch_parts(job),
            "note": "table latency: detected_at (set by stage 2, before the Delta commit) minus publish time"}


def scaling(bootstrap: str, work: Path, streams: int = 40) -> dict:
    """Backlog throughput (frames per wall second) for local[1] vs local[2], and 2 vs 4 partitions, on edge
    features (the analysis side): a backlog of `streams` streams x 60 s, published first; each job (default
    batch sizing and partitions) is timed from its query's start to its catch-up."""
    clip = convert_once(bench_clip(720, seconds=10.0), edge=True)
    out = {"streams": streams}
    for partitions in (2, 4):
        topics = (f"bench.sc{partitions}.video", f"bench.sc{partitions}.audio")
        replay = Replay(bootstrap, topics, clip, streams=streams, prefix=f"sc{partitions}-", partitions=partitions,
                        speed=1000.0)
        replay.run_for(clip.seconds * 6)  # 60 s per stream
        replay.stop()
        frames = replay.frames
        for cores in (1, 2):
            if partitions == 2 and cores == 1:
                continue
            job = JobProcess(work / f"sc{partitions}-{cores}", bootstrap, topics, master=f"local[{cores}]",
                             extra=["--alerts-topic", ""])
            try:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and '"query": "started"' not in job.log_path.read_text(errors="replace"):
                    time.sleep(0.05)
                t0 = time.monotonic()
                with CpuWindow() as window:  # every process on the machine: how many cores the run kept busy
                    done_at = job.wait_caught_up(end_offsets(bootstrap, topics), timeout=900, poll=0.1)
            finally:
                job.stop()
            out[f"local{cores}_partitions{partitions}_frames_per_s"] = round(frames / (done_at - t0), 1)
            out[f"local{cores}_partitions{partitions}_cores_busy"] = round(window.cpu / window.wall, 2)
            progress = job.progress()
            out[f"local{cores}_partitions{partitions}_batches"] = len(progress)
            # where the wall time went, batch by batch: the first carries the Python workers' start
            out[f"local{cores}_partitions{partitions}_batch_ms"] = [p.get("batch_ms") for p in progress]
            out[f"local{cores}_partitions{partitions}_add_batch_ms"] = [p.get("parts_ms", {}).get("addBatch")
                                                                       for p in progress]
            out[f"local{cores}_partitions{partitions}_wall_s"] = round(done_at - t0, 2)
    out["cores_2_vs_1"] = round(out["local2_partitions4_frames_per_s"] / out["local1_partitions4_frames_per_s"], 3)
    out["partitions_4_vs_2"] = round(out["local2_partitions4_frames_per_s"] / out["local2_partitions2_frames_per_s"], 3)
    out["note"] = (f"edge-feature segments; throughput from the query's start to catch-up on a {streams}-stream "
                   "backlog (the first batch's planning and JIT warm-up included)")
    return out


def batch_parts(job: JobProcess, skip: int = 3) -> dict:
    """Median per micro-batch with input, from the job's log: Spark's phases (query listener), the state
    store's commit, the sink's phases, and the median stream's saved state (bytes)."""
    progress = [p for p in job.progress() if p.get("input_rows")][skip:]
    sinks = job.sink_lines()[skip:]

    def med(values):
        values = [v for v in values if v is not None]
        return round(float(statistics.median(values)), 1) if values else None

    parts = {k: med([p.get("parts_ms", {}).get(k) for p in progress])
             for k in sorted({k for p in progress for k in p.get("parts_ms", {})})}
    sink = {k: med([s["sink_ms"].get(k, 0.0) for s in sinks])
            for k in sorted({k for s in sinks for k in s.get("sink_ms", {})})}
    return {"batches": len(progress), "batch_ms_p50": med([p.get("batch_ms") for p in progress]),
            "batch_ms_p90": round(float(np.percentile([p["batch_ms"] for p in progress], 90)), 1) if progress else None,
            "parts_ms": parts, "state_commit_ms": med([p.get("state_commit_ms") for p in progress]),
            "sink_ms": sink, "state_bytes_per_stream": med([s.get("state_bytes_median") for s in sinks])}


def batch_cost(bootstrap: str, work: Path, rounds: int = 20, settle: int = 200) -> dict:
    """The fixed cost of a micro-batch: a warm job (local[2]) fed a single heartbeat record per batch. Each
    round sends one record and waits for the batch that holds it to commit; CPU of every process on the
    machine over the round, minus the machine's idle rate measured before (the broker's and the job's own
    polling). The JIT compiler's part is recorded beside it: Spark's planner runs once per micro-batch, so
    its code is compiled over hundreds of batches; after `settle` more batches the rounds are measured again
    (`*_settled`: the cost a job that has run a few minutes pays; docs/performance.md, session 11)."""
    clip = convert_once(bench_clip(720, seconds=10.0), edge=True)
    topics = ("bench.fixed.video", "bench.fixed.audio")
    replay = Replay(bootstrap, topics, clip, streams=1, prefix="fixed", partitions=2)
    job = JobProcess(work / "fixed", bootstrap, topics, master="local[2]",
                     extra=["--alerts-topic", "", "--trigger", "0.1"])
    beats = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not job.progress():
            time.sleep(0.2)
        replay.run_for(3.0)  # a live stream with a little history: its state is a real one
        job.wait_caught_up(end_offsets(bootstrap, topics), timeout=300)
        beats = Heartbeats(bootstrap, topics[0], "fixed0", replay.source("fixed0"), media_t=3.0)

        first = len(job.progress())
        for k in range(5):  # warm-up: JIT, the plan's first runs
            beats.send()
            job.wait_caught_up(end_offsets(bootstrap, topics), timeout=120, poll=0.02)
        time.sleep(2)
        with CpuWindow() as idle:
            time.sleep(5)
        idle_rate = idle.cpu / idle.wall

        def measure() -> tuple[list[float], list[float], float]:
            cpu, wall = [], []
            jit0 = job.jit_cpu()
            for _ in range(rounds):
                with CpuWindow() as w:
                    beats.send()
                    job.wait_caught_up(end_offsets(bootstrap, topics), timeout=120, poll=0.01)
                cpu.append(w.cpu - idle_rate * w.wall)
                wall.append(w.wall)
                time.sleep(0.3)
            return cpu, wall, (job.jit_cpu() - jit0) / rounds

        cpu, wall, jit = measure()
        parts = batch_parts(_Since(job, first + 5))
        settled = {}
        if settle:
            for _ in range(settle):  # more batches of the same kind, not measured: the JIT catches up
                beats.send()
                job.wait_caught_up(end_offsets(bootstrap, topics), timeout=120, poll=0.01)
            cpu_s, wall_s, jit_s = measure()
            settled = {"batch_fixed_cpu_s_settled": round(statistics.median(cpu_s), 3),
                       "batch_fixed_wall_ms_settled": round(statistics.median(wall_s) * 1000, 1),
                       "jit_cpu_s_per_batch_settled": round(jit_s, 3),
                       "settled_after_batches": 5 + rounds + settle}
    finally:
        if beats:
            beats.close()
        replay.stop()
        job.stop()
    return {"rounds": rounds, "batch_fixed_cpu_s": round(statistics.median(cpu), 3),
            "batch_fixed_wall_ms": round(statistics.median(wall) * 1000, 1),
            "jit_cpu_s_per_batch": round(jit, 3), **settled,
            "idle_cpu_per_s": round(idle_rate, 3), **{k: v for k, v in parts.items() if k != "state_bytes_per_stream"},
            "note": "one heartbeat record per micro-batch on a warm local[2] job (trigger 0.1 s); CPU of every "
                    "process minus the idle rate; wall from the send to the batch's commit (poll 10 ms)"}


class _Since:
    """A JobProcess's log lines from the n-th progress line on."""

    def __init__(self, job: JobProcess, n: int):
        self.job, self.n = job, n

    def progress(self):
        return self.job.progress()[self.n:]

    def sink_lines(self):
        return self.job.sink_lines()[self.n:]
