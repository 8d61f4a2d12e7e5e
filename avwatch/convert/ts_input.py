"""Readers that hand an MPEG-TS source's bytes to the transport analyser on their way to FFmpeg.

FFmpeg reads through these file objects (PyAV's Python I/O), so the analyser sees exactly the packets the
decoder receives, each byte once and in order, with no second read of the source:

  TsFileReader  a .ts file (FFmpeg probes its start, reads its end and seeks back: each byte is fed once, in order)
  UdpTsReader   udp://host:port carrying MPEG-TS in datagrams (typically 7 packets of 188 bytes)
  PipeTsReader  srt://: the FFmpeg bundled with PyAV has no SRT, so the system's `ffmpeg` (Debian's, built
                with libsrt) receives it and pipes the payload's bytes through unchanged (`-f data`: no
                remux, so the transport checked is the one that arrived)
  HlsTsReader   an HLS playlist over http(s) whose segments are MPEG-TS: the segments are fetched in order
                (a live playlist reloaded until it ends) and their bytes passed on; a playlist with fMP4
                segments, byte ranges or encryption is left to FFmpeg's HLS demuxer

Other live sources (RTSP, RTMP, HLS of fMP4 segments) are read by FFmpeg's own protocols, without transport
checks.
"""
from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from avwatch.convert.transport import PACKET, TsAnalyzer, looks_like_ts
from avwatch.errors import AvwatchError


class SourceTimeout(AvwatchError):
    """A live source delivered nothing for the read timeout."""

    def __init__(self, uri: str, seconds: float, what: str = "data"):
        super().__init__(f"{uri}: no {what} for {seconds:g} s: the source stopped (what arrived before was "
                         f"published; the read timeout sets how long to wait)")


class LiveReader:
    """A live source as a file object for FFmpeg (no seek): each chunk the source gives (`_next_chunk`;
    b"" when it ended) goes to the analyser as it arrives, then to FFmpeg in the sizes it reads."""

    def __init__(self, analyzer: TsAnalyzer):
        self.analyzer = analyzer
        self._pending = b""

    def _next_chunk(self) -> bytes:
        raise NotImplementedError

    def _hold(self, chunk: bytes) -> None:
        if chunk:
            self.analyzer.feed(chunk)
        self._pending = chunk

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            self._hold(self._next_chunk())
        want = size if size and size > 0 else 65536
        out, self._pending = self._pending[:want], self._pending[want:]
        return out

    def close(self) -> None:
        pass


class TsFileReader:
    """A file object over a transport stream file that feeds each new byte to `analyzer` as FFmpeg reads it."""

    def __init__(self, path: str, analyzer: TsAnalyzer):
        self._file = open(path, "rb")
        self.analyzer = analyzer
        self._pos = 0
        self._fed = 0   # bytes before this have been analysed

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        end = self._pos + len(data)
        # feed only what continues the analysed bytes: FFmpeg re-reads the start after probing and reads the
        # end to estimate the duration; the analyser sees each byte once, in order
        if self._pos <= self._fed < end:
            self.analyzer.feed(data[self._fed - self._pos:])
            self._fed = end
        self._pos = end
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._file.seek(offset, whence)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._file.close()


class UdpTsReader(LiveReader):
    """udp://host:port: the datagrams as they arrive. Binds host:port (127.0.0.1 or an interface address); a
    multicast group is joined on any interface."""

    def __init__(self, uri: str, analyzer: TsAnalyzer, read_timeout_s: float = 10.0):
        super().__init__(analyzer)
        self.uri, self.read_timeout_s = uri, read_timeout_s
        host, port = udp_address(uri)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        multicast = _is_multicast(host)
        try:
            self._sock.bind(("" if multicast else host, port))
        except OSError as exc:
            self._sock.close()
            raise AvwatchError(f"{uri}: cannot listen on {host}:{port} ({exc}); give a free port of this "
                               f"machine's address") from None
        if multicast:
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                  socket.inet_aton(host) + socket.inet_aton("0.0.0.0"))
        self._sock.settimeout(read_timeout_s)

    def _next_chunk(self) -> bytes:
        try:
            return self._sock.recv(65536)
        except socket.timeout:
            raise SourceTimeout(self.uri, self.read_timeout_s) from None

    def close(self) -> None:
        self._sock.close()


class PipeTsReader(LiveReader):
    """A live URL received by the system's `ffmpeg` and piped through as raw bytes (srt://)."""

    def __init__(self, uri: str, analyzer: TsAnalyzer, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0):
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise AvwatchError(f"{uri}: SRT is received by the system's ffmpeg (PyAV's has no SRT), which is not "
                               f"installed: run `make system-deps` (scripts/install-system-deps.sh) or apt-get install "
                               f"ffmpeg")
        super().__init__(analyzer)
        self.uri, self.read_timeout_s = uri, read_timeout_s
        self._proc = subprocess.Popen([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "data", "-i", uri,
                                       "-map", "0", "-c", "copy", "-f", "data", "-"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._fd = self._proc.stdout.fileno()
        first = self._recv(open_timeout_s)   # connected when the first bytes come
        if not first:
            error = self._stop()
            raise ConnectionError(f"{uri}: {error or 'no data'}")
        self._hold(first)

    def _recv(self, timeout_s: float) -> bytes:
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        if not ready:
            raise SourceTimeout(self.uri, timeout_s)
        return os.read(self._fd, 65536)   # b"": ffmpeg ended (the sender closed)

    def _next_chunk(self) -> bytes:
        return self._recv(self.read_timeout_s)

    def _stop(self) -> str:
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            _, err = self._proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        lines = (err or b"").decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> None:
        self._stop()


class NotTransportStream(Exception):
    """The source is not one whose transport this module reads (FFmpeg reads it on its own)."""


@dataclass
class _Segment:
    sequence: int
    url: str
    discontinuity: bool


class HlsTsReader(LiveReader):
    """An HLS playlist of MPEG-TS segments as one byte stream. Each segment's bytes go to the analyser as
    fetched; EXT-X-DISCONTINUITY tells it that counters and clocks restart there."""

    def __init__(self, uri: str, analyzer: TsAnalyzer, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0):
        super().__init__(analyzer)
        self.uri, self.read_timeout_s = uri, read_timeout_s
        self._timeout = open_timeout_s
        self.playlist = self._media_playlist(uri)
        self._queue: list[_Segment] = []
        self._next_sequence = None
        self._ended = False
        self._target_s = 2.0
        self._reload()
        if not self._queue:
            raise NotTransportStream(f"{uri}: no segment yet")
        first = self._get(self._queue[0].url)
        if not looks_like_ts(first[:3 * PACKET]):
            raise NotTransportStream(f"{uri}: the segments are not MPEG-TS")
        self._first = first

    def _get(self, url: str) -> bytes:
        from urllib.request import urlopen

        try:
            with urlopen(url, timeout=self._timeout) as response:
                return response.read()
        except OSError as exc:
            raise ConnectionError(f"{url}: {exc}") from None

    def _media_playlist(self, uri: str) -> str:
        """The playlist itself, or a master playlist's variant of the highest bandwidth."""
        from urllib.parse import urljoin

        text = self._get(uri).decode("utf-8", errors="replace")
        if not text.lstrip().startswith("#EXTM3U"):
            raise NotTransportStream(f"{uri}: not an HLS playlist")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        variants = []
        for i, line in enumerate(lines):
            if line.startswith("#EXT-X-STREAM-INF") and i + 1 < len(lines):
                bandwidth = 0
                for part in line.split(":", 1)[1].split(","):
                    if part.startswith("BANDWIDTH="):
                        bandwidth = int(part.split("=", 1)[1] or 0)
                variants.append((bandwidth, urljoin(uri, lines[i + 1])))
        return max(variants)[1] if variants else uri

    def _reload(self) -> None:
        from urllib.parse import urljoin

        text = self._get(self.playlist).decode("utf-8", errors="replace")
        sequence, discontinuity = 0, False
        for line in (line.strip() for line in text.splitlines()):
            if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                sequence = int(line.split(":", 1)[1])
            elif line.startswith("#EXT-X-TARGETDURATION:"):
                self._target_s = float(line.split(":", 1)[1])
            elif line.startswith(("#EXT-X-MAP", "#EXT-X-BYTERANGE")) or (
                    line.startswith("#EXT-X-KEY") and "METHOD=NONE" not in line):
                raise NotTransportStream(f"{self.uri}: fMP4, byte-range or encrypted segments")
            elif line.startswith("#EXT-X-DISCONTINUITY") and not line.startswith("#EXT-X-DISCONTINUITY-SEQ"):
                discontinuity = True
            elif line.startswith("#EXT-X-ENDLIST"):
                self._ended = True
            elif line and not line.startswith("#"):
                if self._next_sequence is None or sequence >= self._next_sequence:
                    self._queue.append(_Segment(sequence, urljoin(self.playlist, line), discontinuity))
                    self._next_sequence = sequence + 1
                sequence, discontinuity = sequence + 1, False

    def _next_chunk(self) -> bytes:
        waited = time.monotonic()
        while not self._queue:
            if self._ended:
                return b""
            if time.monotonic() - waited > self.read_timeout_s:
                raise SourceTimeout(self.uri, self.read_timeout_s, "new segment")
            time.sleep(min(1.0, self._target_s / 2))
            self._reload()
        segment = self._queue.pop(0)
        data = self._first if self._first is not None else self._get(segment.url)
        self._first = None
        if segment.discontinuity:
            self.analyzer.discontinuity()
        return data

    def close(self) -> None:
        self._queue = []


def udp_address(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    if parts.scheme != "udp" or not parts.port:
        raise AvwatchError(f"{uri}: give a UDP source as udp://HOST:PORT (e.g. udp://127.0.0.1:5000)")
    return parts.hostname or "0.0.0.0", parts.port


def _is_multicast(host: str) -> bool:
    try:
        return 224 <= int(host.split(".")[0]) <= 239
    except ValueError:
        return False


def needs_pipe(uri: str) -> bool:
    """Sources PyAV's FFmpeg cannot open itself (no SRT in it)."""
    return uri.lower().startswith("srt://")


def transport_reader(uri: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0):
    """A reader (file object with `.analyzer`) for a source whose transport can be checked, else None: a
    udp:// or srt:// URL, an HLS playlist of MPEG-TS segments, or a file that starts like MPEG-TS with
    188-byte packets."""
    if needs_pipe(uri):
        return PipeTsReader(uri, TsAnalyzer(), open_timeout_s, read_timeout_s)
    path = urlsplit(uri).path.lower() if "://" in uri else ""
    if uri.lower().startswith(("http://", "https://")) and path.endswith(".m3u8"):
        try:
            return HlsTsReader(uri, TsAnalyzer(), open_timeout_s, read_timeout_s)
        except NotTransportStream:
            return None   # FFmpeg's HLS demuxer reads it
    if uri.lower().startswith("udp://"):
        return UdpTsReader(uri, TsAnalyzer(), read_timeout_s)
    if "://" in uri or not os.path.isfile(uri):
        return None
    with open(uri, "rb") as f:
        head = f.read(3 * PACKET)
    if not looks_like_ts(head):
        return None
    return TsFileReader(uri, TsAnalyzer())
