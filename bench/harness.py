"""Benchmark plumbing: a streaming job in its own process, a replay publisher, catch-up detection."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from avwatch.convert.decode import MediaDecoder
from avwatch.convert.segments import Segmenter
from jobs.kafka_io import HEADER_KIND, HEADER_SCHEMA, create_topics, producer
from schemas import AUDIO_SEGMENT, CONTROL, FEATURE_SEGMENT, VIDEO_SEGMENT, encode


class JobProcess:
    """`python -m jobs.stream ...` in its own process group, its log in a file."""

    def __init__(self, workdir: Path, bootstrap: str, topics: tuple[str, str], master: str = "local[2]",
                 extra: list[str] | None = None, name: str = "job"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sink = self.workdir / "sink"
        self.checkpoint = self.workdir / "checkpoint"
        self.log_path = self.workdir / f"{name}.log"
        self.topics = topics
        self.bootstrap = bootstrap
        cmd = [sys.executable, "-m", "jobs.stream", "--bootstrap", bootstrap, "--video-topic", topics[0],
               "--audio-topic", topics[1], "--sink", str(self.sink), "--checkpoint", str(self.checkpoint),
               "--master", master] + (extra or [])
        env = {**os.environ, "AVWATCH_SPARK_LOG_LEVEL": "ERROR"}
        self.proc = subprocess.Popen(cmd, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)

    def progress(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "avwatch.progress" in line and '"batch"' in line:
                try:
                    out.append(json.loads(line.split("avwatch.progress: ", 1)[1]))
                except (IndexError, ValueError):
                    pass
        return out

    def sink_lines(self) -> list[dict]:
        """The sink's per-batch lines (jobs/sinks.py): its phases in ms, events, the median state size."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"sink_batch"' in line:
                try:
                    out.append(json.loads(line[line.index("{"):]))
                except ValueError:
                    pass
        return out

    def committed_offsets(self) -> dict[str, dict[str, int]]:
        """Source offsets of the newest committed micro-batch."""
        folder = self.checkpoint / "commits"
        commits = sorted(int(p.name) for p in folder.glob("[0-9]*")) if folder.exists() else []
        if not commits:
            return {}
        lines = (self.checkpoint / "offsets" / str(commits[-1])).read_text().splitlines()
        for line in lines[2:]:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and any(t in data for t in self.topics):
                return data
        return {}

    def caught_up(self, end: dict[tuple[str, int], int]) -> bool:
        done = self.committed_offsets()
        return all(done.get(t, {}).get(str(p), 0) >= off for (t, p), off in end.items())

    def wait_caught_up(self, end: dict, timeout: float = 600.0, poll: float = 0.2) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the job exited ({self.proc.returncode}); see {self.log_path}")
            if self.caught_up(end):
                return time.monotonic()
            time.sleep(poll)
        raise TimeoutError(f"the job did not catch up within {timeout} s; see {self.log_path}")

    def processes(self) -> dict[str, list[int]]:
        """The job's processes by role: "jvm" (Spark's driver and executors in local mode), "driver_python"
        (this job's own Python), "python_workers" (Spark's Python daemon and its forked workers)."""
        out: dict[str, list[int]] = {"jvm": [], "driver_python": [self.proc.pid], "python_workers": []}
        for pid in descendants(self.proc.pid)[1:]:
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
            except OSError:
                continue
            if b"java" in cmd.split(b" ")[0]:
                out["jvm"].append(pid)
            elif b"pyspark" in cmd or b"python" in cmd.split(b" ")[0]:
                out["python_workers"].append(pid)
        return out

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds used so far by each role's live processes (processes(); a worker that exited is lost,
        which Spark's reused workers do not)."""
        return {role: sum(_cpu_seconds(f"/proc/{pid}/stat") for pid in pids)
                for role, pids in self.processes().items()}

    def jit_cpu(self) -> float:
        """CPU seconds used so far by the JVM's JIT compiler threads (HotSpot names them "C1 CompilerThre"
        and "C2 CompilerThre"): compilation a long-running job stops paying once its code is compiled."""
        total = 0.0
        for pid in self.processes()["jvm"]:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/comm") as f:
                        if "CompilerThre" not in f.read():
                            continue
                except OSError:
                    continue
                total += _cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Heartbeats:
    """Control records of kind heartbeat for one stream, one per send(), its media clock stepping `step_s`
    from `media_t`: micro-batches that carry almost nothing, to measure or warm up what every batch pays, or
    to keep batches (and so state timeouts) running. `source` is the stream's (Replay.source)."""

    def __init__(self, bootstrap: str, topic: str, stream_id: str, source: str, media_t: float = 0.0,
                 step_s: float = 0.1, seq0: int = 1000):
        self.topic, self.sid, self.source = topic, stream_id, source
        self.media_t, self.step_s, self.seq0, self.seq = media_t, step_s, seq0, seq0
        self.prod = producer(bootstrap, linger_ms=0)

    def send(self) -> None:
        table = pa.Table.from_pylist([{
            "stream_id": self.sid, "sequence": self.seq, "kind": "heartbeat",
            "media_time_s": self.media_t + (self.seq - self.seq0) * self.step_s,
            "wall_time": datetime.now(timezone.utc), "source": self.source}], schema=CONTROL.schema)
        self.prod.send(self.topic, key=self.sid.encode(), value=encode(CONTROL, table),
                       headers=[(HEADER_SCHEMA, CONTROL.tag.encode()), (HEADER_KIND, b"heartbeat")])
        self.prod.flush()
        self.seq += 1

    def close(self) -> None:
        self.prod.close()


def _cpu_seconds(stat_path: str) -> float:
    """utime + stime of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file, in seconds (0 if gone)."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def descendants(pid: int) -> list[int]:
    """pid and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def end_offsets(bootstrap: str, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        return {(tp.topic, tp.partition): off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


@dataclass
class ClipSegments:
    """A clip converted once: its video and audio segment tables in order, and its length."""

    video: list[pa.Table]
    audio: list[pa.Table]
    seconds: float
    frames: int
    source: dict = field(default_factory=dict)
    edge: bool = False
    frames_per_segment: list = field(default_factory=list)


def convert_once(path: Path, edge: bool = False) -> ClipSegments:
    """Decode and segment a clip once; with edge=True the segments are feature_segment records (stage 1
    run here, as the converter's --edge-features mode does)."""
    from detectors.config import DetectorConfig
    from detectors.features import edge_features_table

    decoder = MediaDecoder(str(path))
    seg = Segmenter("replay", decoder.info)
    segments = [s for item in decoder.items() for s in seg.add(item)] + seg.finish()
    config = DetectorConfig.build()

    def table(s):
        return edge_features_table(f"{s.kind}_segment", s.table, config) if edge else s.table

    # One loop of the clip is its video: an audio segment that starts where the video ends (the sound runs a
    # few ms longer) is left out, so that a replay's loops join up with contiguous sequence numbers on both
    # kinds. (It was sent in no loop at all, and every loop's audio then waited `--lateness` for a segment
    # that never came: 30 s of each stream's audio pending in its state, ~240 kB, in every benchmark run.)
    video_segments = [s for s in segments if s.kind == "video"]
    frame_dur = float(decoder.info.video.get("frame_dur") or 0.04)
    seconds = round(video_segments[-1].t + video_segments[-1].frames * frame_dur, 3)
    video = [table(s) for s in video_segments]
    audio = [table(s) for s in segments if s.kind == "audio" and s.t < seconds - 1e-6]
    frames = sum(s.frames for s in video_segments)
    return ClipSegments(video, audio, seconds, frames, json.loads(video[0].column("source")[0].as_py()),
                        edge=edge, frames_per_segment=[s.frames for s in video_segments])


def restamp(table: pa.Table, stream_id: str, sequence: int, shift_s: float, source: str) -> pa.Table:
    """A segment table as stream `stream_id`'s segment `sequence`, `shift_s` later in media time."""
    if "features" in table.column_names:  # a feature_segment: the times live inside the features blob
        from detectors.wire import from_ipc, to_ipc
        from schemas.codec import large_binary

        feats = from_ipc(table.column("features")[0].as_py())
        feats["t"] = feats["t"] + shift_s
        return pa.table({"stream_id": [stream_id], "sequence": pa.array([sequence], pa.int64()),
                         "kind": table.column("kind"), "t": [table.column("t")[0].as_py() + shift_s],
                         "detectors": table.column("detectors"), "features": large_binary([to_ipc(feats)]),
                         "source": [source]}, schema=table.schema)
    n = table.num_rows
    cols = {name: table.column(name) for name in table.column_names}
    cols["stream_id"] = pa.array([stream_id] * n)
    cols["sequence"] = pa.array([sequence] * n, pa.int64())
    cols["pts_s"] = pa.compute.add(table.column("pts_s"), shift_s)
    cols["source"] = pa.array([source] * n)
    if "context" in cols and sequence > 0 and not table.column("context")[0].as_py():
        pass  # a loop restarts without a context row: its first frame has no difference (as at any cut)
    return pa.table(cols, schema=table.schema)


def replay_slots(clip: ClipSegments, seconds: float):
    """The replay's schedule of one stream, one slot per video segment while its media time is under
    `seconds`: (media time, the loop's media shift, the segment's index k in the loop, the sends) with sends
    [(0 video / 1 audio, sequence number)] of clip.video[k] and, while the loop has one, clip.audio[k].
    Contiguous sequence numbers on both kinds across loops (a loop is the clip's video: an audio segment that
    starts where the video ends is not in it)."""
    per_loop_v, per_loop_a = len(clip.video), len(clip.audio)
    if per_loop_a > per_loop_v:  # each slot sends one of each: a loop's last audio would never be sent
        raise ValueError(f"the clip has {per_loop_a} audio segments per loop for {per_loop_v} video segments")
    slot = 0
    while True:
        loop, k = divmod(slot, per_loop_v)
        media_t = loop * clip.seconds + k * (clip.seconds / per_loop_v)
        if media_t >= seconds:
            return
        sends = [(0, loop * per_loop_v + k)] + ([(1, loop * per_loop_a + k)] if k < per_loop_a else [])
        yield media_t, loop * clip.seconds, k, sends
        slot += 1


def replay_source(clip: ClipSegments, stream: str, epoch: datetime) -> str:
    """A replayed stream's source metadata: live, with its own publication id."""
    return json.dumps(dict(clip.source, live=True, epoch=epoch.isoformat(),
                           publish_id=f"{epoch:%Y%m%dT%H%M%S}-{stream}"), sort_keys=True)


class Replay:
    """Replays a converted clip as N live streams at real-time pace, with fresh timestamps (bench helper).

    Each stream gets its own id, contiguous sequence numbers and a media clock that keeps running across
    loops of the clip; record timestamps are the wall clock. Per segment it records the wall time the
    segment was handed to Kafka (for latency measurement)."""

    def __init__(self, bootstrap: str, topics: tuple[str, str], clip: ClipSegments, streams: int,
                 prefix: str = "s", partitions: int = 4, speed: float = 1.0):
        self.bootstrap, self.topics, self.clip, self.n, self.prefix = bootstrap, topics, clip, streams, prefix
        self.speed = speed
        create_topics(bootstrap, list(topics), partitions=partitions)
        self.producer = producer(bootstrap, linger_ms=5)
        self.sent_at: dict[tuple[str, str, int], float] = {}
        self.bytes = 0
        self.frames = 0
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.epoch = datetime.now(timezone.utc)

    def source(self, stream: str) -> str:
        """The source metadata this replay gives stream `stream` (for records sent beside the replay)."""
        return replay_source(self.clip, stream, self.epoch)

    def run_for(self, seconds: float) -> None:
        """Send seconds of media per stream at real-time pace (blocking)."""
        t0 = time.monotonic()
        sources = {i: self.source(f"{self.prefix}{i}") for i in range(self.n)}
        records = (FEATURE_SEGMENT, FEATURE_SEGMENT) if self.clip.edge else (VIDEO_SEGMENT, AUDIO_SEGMENT)
        for media_t, shift, k, sends in replay_slots(self.clip, seconds):
            if self._stop.is_set():
                break
            delay = t0 + media_t / self.speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for i in range(self.n):
                sid = f"{self.prefix}{i}"
                for which, seq in sends:
                    table = restamp((self.clip.video, self.clip.audio)[which][k], sid, seq, shift, sources[i])
                    self._send(which, sid, table, records[which], seq, shift + k)
                self.frames += self.clip.frames_per_segment[k]
        self.producer.flush()

    def _send(self, which: int, sid: str, table: pa.Table, record, seq: int, media_t: float) -> None:
        value = encode(record, table)
        self.bytes += len(value)
        ts = int((self.epoch.timestamp() + media_t) * 1000)
        self.producer.send(self.topics[which], key=sid.encode(), value=value, timestamp_ms=ts,
                           headers=[(HEADER_SCHEMA, record.tag.encode()),
                                    (HEADER_KIND, (b"video" if which == 0 else b"audio"))])
        self.sent_at[(sid, "video" if which == 0 else "audio", seq)] = time.time()

    def start(self, seconds: float) -> None:
        self.thread = threading.Thread(target=self.run_for, args=(seconds,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.producer.flush()
        self.producer.close()
