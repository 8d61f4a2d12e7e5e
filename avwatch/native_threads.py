"""One native compute thread per process.

avwatch runs in parallel across streams (one converter thread per source, one Spark task per
partition), so a library's own thread pool inside one call only adds scheduling: measured on the converter
at 720p, OpenCV's spent ~25% more CPU for the same frames (docs/performance.md). numpy's OpenBLAS pool is
worse: its threads spin after every matrix product (A/V sync's correlations, freeze's cell means), and the
streaming job's per-stream step took 1.7x its wall time in CPU, a second core busy waiting
(bench/bench_step.py: 25.7 CPU against 15.1 wall ms per stream-second; 14.3 / 14.5 with one thread).
FFmpeg's decoder keeps its slice threads (they cost no extra CPU, measured).
"""
from __future__ import annotations

_done = False


def use_one_native_thread() -> None:
    """Run OpenCV's kernels and BLAS on the calling thread; cheap to call again."""
    global _done
    if _done:
        return
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(limits=1, user_api="blas")  # from now on, for the whole process
    _done = True
