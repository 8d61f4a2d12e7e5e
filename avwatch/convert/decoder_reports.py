"""The video decoder's own error reports, as a per-frame signal.

A damaged packet is concealed by FFmpeg's decoder (the picture comes out, patched from neighbours and
the previous frame) and the frame is not flagged corrupt; what the decoder does say is logged:
"error while decoding MB 35 12", "concealing 410 DC, 410 AC, 410 MV errors in P frame", "ac-tex damaged".
PyAV forwards FFmpeg's log to Python's logging as `libav.<codec>`; a handler counts the error-level
reports of video decoders, and the decoder compares the count around each packet it decodes. The report is
synchronous with the decode call (it is logged while the packet is decoded), so the packet that caused it
is known. Known limit: two sources decoded at the same instant on two threads of one process share the
counter, so one's report could flag the other's packet; the converter decodes each source on its own
thread, which makes such a coincidence rare, and a flag only lowers blockiness' bar for that one frame.
"""
from __future__ import annotations

import logging
import threading

import av.logging

# FFmpeg decoders whose error-level messages are about damaged pictures
VIDEO_DECODERS = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video", "mpegvideo", "mpeg4", "h263", "vp8",
                            "vp9", "av1", "dav1d", "libdav1d", "vc1", "error_resilience"})


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.n = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.rsplit(".", 1)[-1] in VIDEO_DECODERS:
            self.n += 1
            self.last = record.getMessage().strip()[:200]


_count = _Count()
_lock = threading.Lock()
_installed = False


def install() -> None:
    """Route FFmpeg's error-level messages to the counter (once per process). They stay available at debug
    level under the `libav` logger instead of being printed by FFmpeg."""
    global _installed
    with _lock:
        if _installed:
            return
        logger = logging.getLogger("libav")
        logger.addHandler(_count)
        logger.propagate = False  # counted, not printed: a damaged stream would flood the log
        level = av.logging.get_level()
        if level is None or level < av.logging.ERROR:
            av.logging.set_level(av.logging.ERROR)
        _installed = True


def reports() -> int:
    """Error reports of video decoders so far in this process."""
    return _count.n


def last_report() -> str:
    return _count.last
