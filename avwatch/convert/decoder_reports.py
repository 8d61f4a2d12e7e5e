"""The video decoder's own error reports, as a per-frame signal.

A damaged packet is concealed by FFmpeg's decoder (the picture comes out, patched from neighbours and
the previous frame) and the frame is not flagged corrupt; what the decoder does say is logged:
"error while decoding MB 35 12", "concealing 410 DC, 410 AC, 410 MV errors in P frame", "ac-tex damaged".
PyAV forwards FFmpeg's log to Python's logging as `libav.<codec>`; a handler here counts the error-level
reports of video decoders per decoding thread, and the decoder reads its count around each packet it
decodes (`begin`/`end`), so the packet that caused a report is known.

Attribution. The converter decodes each source on its own thread, and several at once: a report must go
to the source that caused it, never to another (a damaged feed would flag every stream of the process).
A report logged on a thread inside a decode call is that thread's. FFmpeg's slice threads also log; each
belongs to one decoder for its life and is started when that decoder opens its codec (its first packet),
so openings are taken one at a time and the native threads that appear during one are tied to its decoder.
A report from a thread tied to no decoding thread is given to the only decode in progress, or dropped when
several are (a missed flag, never a wrong one).
"""
from __future__ import annotations

import logging
import threading

import av.logging

# FFmpeg decoders whose error-level messages are about damaged pictures
VIDEO_DECODERS = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video", "mpegvideo", "mpeg4", "h263", "vp8",
                            "vp9", "av1", "dav1d", "libdav1d", "vc1", "error_resilience"})

_lock = threading.Lock()
_active: dict[int, int] = {}   # decoding thread -> reports since its begin()
_owner: dict[int, int] = {}    # FFmpeg slice thread -> the decoding thread it works for
_last: dict[int, str] = {}     # decoding thread -> its last report's text
_installed = False


def _native_threads() -> set[int]:
    import os

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
        tid = record.thread
        native = threading.get_native_id()
        with _lock:
            if tid in _active:
                owner = tid
            elif _owner.get(native) in _active:
                owner = _owner[native]   # a slice thread seen starting with its decoder
            else:
                owner = _owner.get(tid)
                if owner not in _active:  # not tied yet, or tied to a decoder that has ended
                    owner = next(iter(_active)) if len(_active) == 1 else None
                    if owner is None:
                        return  # several decodes at once and this slice thread is unknown: dropped
                    _owner[tid] = owner
            _active[owner] += 1
            _last[owner] = record.getMessage().strip()[:200]


def install() -> None:
    """Route FFmpeg's error-level messages to the counter (once per process). They stay available at debug
    level under the `libav` logger instead of being printed by FFmpeg."""
    global _installed
    with _lock:
        if _installed:
            return
        logger = logging.getLogger("libav")
        logger.addHandler(_Count())
        logger.propagate = False  # counted, not printed: a damaged stream would flood the log
        level = av.logging.get_level()
        if level is None or level < av.logging.ERROR:
            av.logging.set_level(av.logging.ERROR)
        _installed = True


_opening = threading.Lock()    # one decoder opens its codec (starts its slice threads) at a time
_local = threading.local()


def begin(first: bool = False) -> None:
    """The calling thread starts decoding a packet. A decoder's first packet (`first`) opens its codec and
    starts its slice threads: openings are taken one at a time and the native threads that appear during
    one are tied to its decoder (end())."""
    if first:
        _opening.acquire()
        _local.before = _native_threads()
    with _lock:
        _active[threading.get_ident()] = 0


def end() -> int:
    """The calling thread finished decoding: the decoder's reports during the call."""
    me = threading.get_ident()
    before = getattr(_local, "before", None)
    if before is not None:
        _local.before = None
        try:
            with _lock:
                for t in _native_threads() - before:
                    _owner[t] = me
        finally:
            _opening.release()
    with _lock:
        return _active.pop(me, 0)


def last_report() -> str:
    return _last.get(threading.get_ident(), "")
