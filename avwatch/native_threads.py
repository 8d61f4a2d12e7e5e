"""One native compute thread per process.

avwatch runs in parallel across streams (one converter thread per source, one Spark task per
partition), so OpenCV's own thread pool inside a frame only adds scheduling: measured on the converter
at 720p, it spent ~25% more CPU for the same frames (docs/performance.md). FFmpeg's decoder keeps its
slice threads (they cost no extra CPU, measured).
"""
from __future__ import annotations

_done = False


def use_one_native_thread() -> None:
    """Run OpenCV's kernels on the calling thread; cheap to call again."""
    global _done
    if _done:
        return
    import cv2

    cv2.setNumThreads(1)
    _done = True
