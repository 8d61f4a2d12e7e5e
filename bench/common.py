"""Shared helpers of the benchmarks: CPU accounting, the machine's description, benchmark clips.

Every figure is measured next to an anchor in the same run, on the same clip, so that ratios hold on
a noisy shared machine. CPU time is counted two ways:
  - per child process: resource.getrusage(RUSAGE_CHILDREN) around a subprocess (FFmpeg anchors);
  - for "all processes" (converter + broker + Spark JVM + Python workers): the machine's busy jiffies
    from /proc/stat, so nothing spawned anywhere escapes the count. Run the benchmarks on a quiet machine.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tests.media import ffmpeg  # noqa: F401  (the anchors' FFmpeg command line, as the tests find it)

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / ".cache" / "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds spent by everything on the machine since boot (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


@dataclass
class CpuWindow:
    """Wall and all-process CPU time over a `with` block."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self):
        self._w, self._c = time.monotonic(), busy_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self._w
        self.cpu = busy_seconds() - self._c
        return False


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command to completion: (wall s, CPU s of it and its children, result)."""
    before, t0 = child_cpu(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.monotonic() - t0, child_cpu() - before, proc


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    ff = subprocess.run([ffmpeg(), "-version"], capture_output=True, text=True).stdout.splitlines()
    import cv2
    import pyarrow
    import pyspark

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "os": platform.platform(),
            "python": sys.version.split()[0], "java": java[0] if java else "", "ffmpeg_cli": ff[0] if ff else "",
            "pyav": av.__version__, "ffmpeg_in_pyav": ".".join(map(str, av.ffmpeg_version_info))
            if isinstance(av.ffmpeg_version_info, tuple) else str(av.ffmpeg_version_info),
            "pyspark": pyspark.__version__, "pyarrow": pyarrow.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__}


def bench_clip(height: int, seconds: float = 20.0) -> Path:
    """A real-footage clip at 1080p or 720p, 25 fps, with 5.1 AAC audio (bigbuckbunny, looped), cached."""
    from avwatch.samples import read_rgb_frames, real_clip

    CLIPS.mkdir(parents=True, exist_ok=True)
    path = CLIPS / f"bbb_{height}p_{int(seconds)}s.mp4"
    if path.exists():
        return path
    width = height * 16 // 9
    src = real_clip("bigbuckbunny")
    frames = read_rgb_frames(src, size=(width, height))
    with av.open(str(src)) as c:
        audio_frames = [f for f in c.decode(audio=0)]
    n = int(seconds * 25)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "20", "preset": "veryfast", "g": "50"}
        as_ = out.add_stream("aac", rate=48000)
        as_.layout = "5.1"
        apts = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
            while apts < (i + 1) * 48000 // 25:  # keep audio abreast of video
                src_frame = audio_frames[(apts // 1024) % len(audio_frames)]
                arr = src_frame.to_ndarray()
                af = av.AudioFrame.from_ndarray(arr, format=src_frame.format.name, layout="5.1")
                af.sample_rate, af.pts = 48000, apts
                for p in as_.encode(af):
                    out.mux(p)
                apts += arr.shape[-1]
        for p in vs.encode():
            out.mux(p)
        for p in as_.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
