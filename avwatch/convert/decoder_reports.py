"""The video decoder's own error reports, as a per-frame signal.

A damaged packet is concealed by FFmpeg's decoder (the picture comes out, patched from neighbours and
the previous frame) and the frame is not flagged corrupt; what the decoder does say is logged:
"error while decoding MB 35 12", "concealing 410 DC, 410 AC, 410 MV errors in P frame", "ac-tex damaged".
PyAV forwards FFmpeg's log to Python's logging as `libav.<codec>`; a handler here counts the error-level
reports of video decoders per decoding thread, and the decoder brackets each video packet it decodes
(`begin`/`end`), so the packet that caused a report is known.

Attribution. The converter decodes each source on its own thread, several at once: a report must go to
the source that caused it, never to another (a damaged feed would flag every stream of the process). A
report logged on a thread inside a decode call is that thread's. FFmpeg's slice threads also log; each
belongs to one decoder for its life and is started when that decoder opens its codec (its first packet),
so openings are taken one at a time and the native threads that appear during one are tied to its
decoder. A report from a thread tied to no decoding thread in progress is given to the only decode in
progress, or dropped when several are (a missed flag, never a wrong one).

Installing the handler stops FFmpeg's error messages from reaching the root logger (a damaged stream
would flood it); they stay available at debug level under the `libav` logger.
"""
from __future__ import annotations

import logging
import os
import threading

import av.logging

# FFmpeg decoders whose error-level messages are about damaged pictures
VIDEO_DECODERS = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video", "mpegvideo", "mpeg4", "h263", "vp8",
                            "vp9", "av1", "dav1d", "libdav1d", "vc1", "error_resilience"})

_lock = threading.Lock()
_active: dict[int, list] = {}  # decoding thread's native id -> [reports in the current call, last report text]
_owner: dict[int, int] = {}    # FFmpeg slice thread's native id -> the decoding thread it works for
_opening = threading.Lock()    # one decoder opens its codec (starts its slice threads) at a time
_local = threading.local()
_installed = False


def _native_threads() -> set[int]:
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.rsplit(".", 1)[-1] not in VIDEO_DECODERS:
            return
        me = threading.get_native_id()
        with _lock:
            owner = me if me in _active else _owner.get(me)
            if owner not in _active:
                if len(_active) != 1:
                    return  # several decodes at once and this thread is tied to none of them: dropped
                owner = next(iter(_active))
            _active[owner][0] += 1
            _active[owner][1] = record.getMessage().strip()[:200]


def install() -> None:
    """Route FFmpeg's error-level messages to the counter (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        logger = logging.getLogger("libav")
        logger.addHandler(_Count())
        logger.propagate = False
        level = av.logging.get_level()
        if level is None or level < av.logging.ERROR:
            av.logging.set_level(av.logging.ERROR)
        _installed = True


def begin(first: bool = False) -> None:
    """The calling thread starts decoding a video packet; `first`: the decoder's first, which opens its
    codec and starts its slice threads (tied to it in end())."""
    if first:
        _opening.acquire()
        _local.before = _native_threads()
    with _lock:
        _active[threading.get_native_id()] = [0, ""]


def end() -> tuple[int, str]:
    """The calling thread finished decoding: the decoder's reports during the call, and the last one's text."""
    me = threading.get_native_id()
    before = getattr(_local, "before", None)
    if before is not None:
        _local.before = None
        try:
            now = _native_threads()
            with _lock:
                for t in [t for t in _owner if t not in now]:  # threads that have ended (their codec closed)
                    del _owner[t]
                for t in now - before:
                    _owner[t] = me
        finally:
            _opening.release()
    with _lock:
        count, last = _active.pop(me, [0, ""])
    return count, last
