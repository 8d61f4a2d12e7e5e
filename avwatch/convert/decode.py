"""Decode a file or live URL with PyAV (FFmpeg) into analysis-ready video frames and audio chunks.

Timing is the container's: every frame's media time is its PTS x time base minus the source's start
time (the earliest start over its streams), so the offset between audio and video that the file carries
is kept. A frame without a PTS gets frame count / rate and is flagged. Frames are sampled on a time grid
to at most `fps` per second; audio is resampled to `audio_rate` as interleaved int16 keeping its
channels (per-channel defects matter).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from avwatch.convert import frames as px
from avwatch.convert.options import DecodeOptions
from avwatch.convert.ac3 import dialnorm_db
from avwatch.convert import decoder_reports
from avwatch.convert.ts_input import needs_pipe, transport_reader
from avwatch.errors import AvwatchError
from detectors.blockiness import block_grid_features
from schemas.records import BLOCK_REGIONS

log = logging.getLogger("avwatch.convert")

LIVE_SCHEMES = ("http://", "https://", "rtmp://", "rtmps://", "rtsp://", "rtsps://", "srt://", "udp://", "rtp://",
                "tcp://")


RATE_STEPS = 6   # consecutive frame steps at another rate that make a frame rate switch
STANDARD_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 100.0, 119.88, 120.0)


def _standard_rate(fps: float) -> float:
    """The broadcast rate within 0.5% of a measured one (30000/1001 as 29.97), else the measured rate."""
    near = min(STANDARD_RATES, key=lambda r: abs(r - fps))
    return near if abs(near - fps) <= 0.005 * near else fps


@dataclass
class VideoFrame:
    """One sampled frame, ready for a video segment."""

    t: float                 # media seconds
    pts: int | None
    time_base: Fraction
    frame_index: int         # index among all decoded frames of the stream
    pts_missing: bool
    keyframe: bool
    decode_error: bool
    luma: np.ndarray         # analysis-size uint8
    thumb: np.ndarray        # thumb_h x thumb_w x 3 uint8 RGB
    thumb_jpeg: bytes        # the same as JPEG: what travels (and serves as evidence)
    block_ratio: np.ndarray  # float32[regions], full-size block-grid gradient ratio
    block_activity: np.ndarray
    format_changed: bool = False  # the source's picture format (size, pixel format, range) changed here
    transport: dict | None = None  # MPEG-TS sources: transport notes since the previous analysed frame and the
    #                                absences going on, times relative to t (avwatch/convert/transport.py)


@dataclass
class AudioChunk:
    """A run of decoded audio samples, resampled: int16 (or float32 with audio_format f32), (n, channels)."""

    t: float                 # media seconds of the first sample
    samples: np.ndarray
    track: int = 0           # which of the source's chosen audio tracks (0: the first, published with the video)


@dataclass
class SourceInfo:
    uri: str
    live: bool
    has_video: bool
    has_audio: bool
    video: dict = field(default_factory=dict)   # codec, width, height, rate, frame_dur, color_range, ...
    audio: dict = field(default_factory=dict)   # codec, sample_rate (out), channels, layout, src_rate
    audio_tracks: list = field(default_factory=list)  # the same per chosen audio track (audio is the first)


@dataclass
class _AudioTrack:
    """One decoded audio track: its description and its resampler's run (see MediaDecoder._audio)."""

    index: int                    # 0 = the first chosen track
    stream: object
    info: dict
    resampler: object = None
    signature: tuple | None = None  # (layout, rate, format) of the input the resampler was made for
    anchor: float = 0.0
    expected_in: float = 0.0
    run_count: int = 0


def is_live(uri: str) -> bool:
    return uri.lower().startswith(LIVE_SCHEMES)


def open_source(uri: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0, transport: bool = True):
    """Open a file or URL, with a clear error when it is missing or not media: (container, reader or None).
    An MPEG-TS file or udp:// source is read through a reader that checks its
    transport on the way (avwatch/convert/ts_input.py; `reader.analyzer`) when `transport` is on."""
    live = is_live(uri)
    if not live:
        if not os.path.exists(uri):
            raise AvwatchError(f"{uri}: no such file. Check the path (or give a live URL such as "
                               f"srt://, rtsp://, udp://, or an HLS playlist over http(s)).")
        if os.path.isdir(uri):
            raise AvwatchError(f"{uri} is a directory: give media files, e.g. {uri}/*.mp4")
    # srt:// always comes through a reader (PyAV's FFmpeg has no SRT); its checks follow `transport`
    reader = transport_reader(uri, open_timeout_s, read_timeout_s) if transport or needs_pipe(uri) else None
    options = {}
    if uri.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = "tcp"
    try:
        if reader is not None:
            try:
                return av.open(reader, format="mpegts"), reader
            except BaseException:
                reader.close()
                raise
        return av.open(uri, options=options, timeout=(open_timeout_s, read_timeout_s) if live else None), None
    except av.error.FileNotFoundError:
        raise AvwatchError(f"{uri}: no such file") from None
    except av.error.InvalidDataError as exc:
        # a truncated MP4 (its index, written last, missing) reads as invalid data too: say so
        raise AvwatchError(f"{uri} is not a media file FFmpeg can read, or it is damaged or cut short ({exc}). "
                           f"Give a complete audio/video file or a stream URL.") from None
    except av.error.FFmpegError as exc:
        if live:
            raise ConnectionError(f"{uri}: {exc}") from None
        raise AvwatchError(f"{uri}: FFmpeg could not open it ({exc})") from None


class MediaDecoder:
    """Iterate a source's sampled video frames and audio chunks in decode order."""

    def __init__(self, uri: str, options: DecodeOptions = DecodeOptions(), container=None, reader=None):
        """container (and the transport reader it reads through) as open_source gives them, or opened here."""
        self.uri = uri
        self.options = options
        if container is None:
            container, reader = open_source(uri, transport=options.transport)
        self.container, self._reader = container, reader
        c = self.container
        self.vstream = c.streams.video[0] if (options.video and c.streams.video) else None
        audio = list(c.streams.audio) if options.audio else []
        if options.audio_tracks is not None and audio:
            missing = [k for k in options.audio_tracks if k >= len(audio)]
            if missing:
                raise AvwatchError(f"{uri} has {len(audio)} audio track(s) (0 to {len(audio) - 1}); "
                                   f"--audio-tracks asks for {', '.join(map(str, missing))}")
            audio = [audio[k] for k in options.audio_tracks]
        self.astreams = audio
        self.astream = audio[0] if audio else None   # the first chosen track, published with the video
        if self.vstream is None and self.astream is None:
            raise AvwatchError(f"{uri} has no video or audio stream to analyse")
        self.decode_errors = 0
        for stream in self.astreams:  # the PCM as produced, for loudness as broadcasters measure it:
            if stream.codec_context.name in ("ac3", "eac3"):  # no dynamic range compression
                stream.codec_context.options = {**dict(stream.codec_context.options or {}), "drc_scale": "0"}
        self.info = self._describe()
        self._tracks = {s: _AudioTrack(k, s, self.info.audio_tracks[k]) for k, s in enumerate(self.astreams)}
        self._origin = self._origin_seconds()
        self._vcount = 0
        self._next_keep = None
        self._rejected = 0   # video packets rejected (or frames concealed) since the last analysed frame
        self._reported: list = []  # PTS of video packets the decoder reported errors on (concealed)
        self._opened = False       # the video decoder has decoded its first packet (its threads are known)
        decoder_reports.install()
        self._format_changed = False  # the picture format changed since the last analysed frame
        self._last_t = None           # the previous decoded frame's time, and the steps since (frame rate)
        self._steps: list[float] = []
        # transport checks need frames to carry their notes: an audio-only transport stream is not checked
        self.transport = (reader.analyzer if reader is not None and self.vstream is not None and options.transport
                          else None)
        if reader is not None and self.transport is None:
            reader.analyzer.keep_notes = False

    # -- description -----------------------------------------------------------------------------

    def _describe(self) -> SourceInfo:
        info = SourceInfo(uri=self.uri, live=is_live(self.uri), has_video=self.vstream is not None,
                          has_audio=self.astream is not None)
        o = self.options
        if self.vstream is not None:
            cc = self.vstream.codec_context
            src_w, src_h = cc.width or 0, cc.height or 0
            if not src_w or not src_h:
                raise AvwatchError(f"{self.uri}: the video stream has no picture size")
            rate = self.vstream.average_rate or self.vstream.guessed_rate or Fraction(25)
            src_fps = float(rate) if rate else 25.0
            if o.fps:
                fps = min(o.fps, src_fps)
            else:  # every frame, decimated by an integer factor to stay <= max_fps (50 -> 25, 60 -> 30)
                fps = src_fps / max(1, math.ceil(src_fps / o.max_fps - 1e-6))
            w, h = px.analysis_size(src_w, src_h, o.width, o.height)
            if w >= src_w or h >= src_h:  # never upscale: a small source is analysed at its own size
                w, h = src_w - src_w % 2, src_h - src_h % 2
            tw, th = px.analysis_size(src_w, src_h, o.thumb_width, None)
            info.video = {"codec": cc.name, "width": src_w, "height": src_h, "src_fps": round(src_fps, 6),
                          "fps": round(fps, 6), "frame_dur": 1.0 / fps, "analysis_width": w,
                          "analysis_height": h, "thumb_width": tw, "thumb_height": th,
                          "pix_fmt": cc.pix_fmt, "color_range": None}
        for k, stream in enumerate(self.astreams):
            cc = stream.codec_context
            channels = cc.channels or len(cc.layout.channels) or 1
            language = (stream.metadata or {}).get("language")
            track = {"codec": cc.name, "src_rate": cc.sample_rate, "sample_rate": o.audio_rate,
                     "sample_format": o.audio_format,
                     "channels": channels, "layout": cc.layout.name or f"{channels}c", "track": k,
                     "stream_index": stream.index}
            if language:
                track["language"] = language
            info.audio_tracks.append(track)
        if info.audio_tracks:
            info.audio = info.audio_tracks[0]
        return info

    def _origin_seconds(self) -> float:
        """The source's media time zero: the earliest stream start (keeps A/V offsets)."""
        starts = []
        for s in [self.vstream] + self.astreams:
            if s is not None and s.start_time is not None and s.time_base:
                starts.append(float(s.start_time * s.time_base))
        if starts:
            return min(starts)
        if self.container.start_time is not None:
            return self.container.start_time / 1e6
        return None  # live sources without start times: the first decoded timestamp

    # -- iteration -------------------------------------------------------------------------------

    def items(self) -> Iterator[VideoFrame | AudioChunk]:
        streams = ([self.vstream] if self.vstream is not None else []) + self.astreams
        try:
            for packet in self.container.demux(*streams):
                track = self._tracks.get(packet.stream)
                if track is not None and packet.size and track.info["codec"] in ("ac3", "eac3"):
                    dialnorm = dialnorm_db(bytes(packet))
                    if dialnorm is not None:
                        track.info["dialnorm_db"] = dialnorm  # carried in the segments' source
                video = packet.stream is self.vstream
                if video:
                    decoder_reports.begin(first=not self._opened)
                    self._opened = True
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    self.decode_errors += 1  # a corrupt packet: count it, the frame is lost, keep going
                    self._rejected += packet.stream is self.vstream  # flagged on the next video frame
                    log.debug("%s: corrupt packet at pts %s", self.uri, packet.pts)
                    continue
                except av.error.FFmpegError as exc:
                    self.decode_errors += 1
                    self._rejected += packet.stream is self.vstream
                    log.debug("%s: decode error %s", self.uri, exc)
                    continue
                finally:
                    reports, report = decoder_reports.end() if video else (0, "")
                if reports:
                    # the decoder concealed damage in this packet: its frame is flagged when it comes out
                    self._reported = (self._reported + [packet.pts])[-64:]
                    self.decode_errors += 1
                    log.debug("%s: decoder reported damage at pts %s: %s", self.uri, packet.pts, report)
                for frame in decoded:
                    if packet.stream is self.vstream:
                        item = self._video(frame)
                        if item is not None:
                            yield item
                    elif track is not None:
                        yield from self._audio(frame, track)
            for track in self._tracks.values():
                if track.resampler is not None:
                    yield from self._drain(track)  # the resampler's last buffered samples
        finally:
            self.container.close()
            if self._reader is not None:
                self._reader.close()

    def _take_format_change(self) -> bool:
        changed, self._format_changed = self._format_changed, False
        return changed

    def _time(self, pts, time_base) -> float | None:
        if pts is None or time_base is None:
            return None
        t = float(pts * time_base)
        if self._origin is None:
            self._origin = t
        return t - self._origin

    def _video(self, frame) -> VideoFrame | None:
        v = self.info.video
        if self._reported and frame.pts in self._reported:
            self._reported.remove(frame.pts)
            self._rejected += 1   # a concealed frame: flagged on this or the next analysed frame
        index = self._vcount
        self._vcount += 1
        t = self._time(frame.pts, frame.time_base or self.vstream.time_base)
        missing = t is None
        if missing:  # FFmpeg's fallback too: frame count / rate
            t = index / v["src_fps"]
        if v["color_range"] is None:
            v["color_range"] = "full" if px.is_full_range(frame) else "limited"
            v["pix_fmt"] = frame.format.name
        now = {"width": frame.width, "height": frame.height, "pix_fmt": frame.format.name,
               "color_range": "full" if px.is_full_range(frame) else "limited"}
        if any(v[k] != now[k] for k in now):
            # a mid-stream switch (a splice, an encoder reconfigured): the source facts follow it, analysis
            # goes on at the same analysis size, and the next analysed frame says so (a new segment starts)
            log.info("%s: picture format changed at %.3f s: %s", self.uri, t,
                     {k: (v[k], now[k]) for k in now if v[k] != now[k]})
            v.update(now)
            self._format_changed = self._vcount > 1   # the first frame's own format is no change
        if not missing:
            self._follow_frame_rate(t)
        interval = v["frame_dur"]
        # Keep a frame once a sampling interval has passed since the last kept one; the quarter-interval
        # slack absorbs timestamp jitter, so an undecimated stream keeps every frame.
        if self._next_keep is not None and t < self._next_keep - interval / 4:
            return None
        self._next_keep = t + interval
        y = px.luma_full(frame)
        ratio, activity = block_grid_features(y, BLOCK_REGIONS)
        luma = px.scale_luma(y, v["analysis_width"], v["analysis_height"])
        thumb = px.thumbnail_rgb(frame, luma, v["thumb_width"], v["thumb_height"])
        corrupt = bool(getattr(frame, "is_corrupt", False))
        if corrupt:
            self.decode_errors += 1
        # a video packet the decoder rejected since the last analysed frame: this frame follows lost data
        corrupt, self._rejected = corrupt or self._rejected > 0, 0
        transport = self._transport_notes(t) if self.transport is not None else None
        return VideoFrame(t=round(t, 9), pts=frame.pts, time_base=frame.time_base or Fraction(1, 1),
                          frame_index=index, pts_missing=missing, keyframe=bool(frame.key_frame),
                          decode_error=corrupt, luma=luma, thumb=thumb, thumb_jpeg=px.encode_jpeg(thumb),
                          block_ratio=ratio,
                          block_activity=activity, format_changed=self._take_format_change(),
                          transport=transport)

    def _follow_frame_rate(self, t: float) -> None:
        """A frame rate switch mid-stream (a splice of a 50 fps feed into a 25 fps one): when RATE_STEPS
        consecutive steps between decoded frames agree with each other and not with the rate in use, the
        source facts take the new rate (and the analysed rate and frame interval follow it), and the next
        analysed frame starts a segment of its own. Dropped frames (a single long step) and jitter do not."""
        v = self.info.video
        if self._last_t is not None:
            self._steps = (self._steps + [t - self._last_t])[-RATE_STEPS:]
        self._last_t = t
        if len(self._steps) < RATE_STEPS:
            return
        # six numbers: sorting them in Python costs 0.2 µs, np.median ~25 µs (per decoded frame)
        ordered = sorted(self._steps)
        mid = len(ordered) // 2
        step = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        nominal = 1.0 / v["src_fps"]
        if step <= 0 or any(abs(x - step) > 0.1 * step for x in self._steps) or abs(step - nominal) <= 0.1 * nominal:
            return
        src_fps = _standard_rate(1.0 / step)
        fps = min(self.options.fps, src_fps) if self.options.fps else \
            src_fps / max(1, math.ceil(src_fps / self.options.max_fps - 1e-6))
        log.info("%s: frame rate changed at %.3f s: %g -> %g fps", self.uri, t, v["src_fps"], src_fps)
        v.update({"src_fps": round(src_fps, 6), "fps": round(fps, 6), "frame_dur": 1.0 / fps})
        self._format_changed = True
        self._steps = []

    def _transport_notes(self, t: float) -> dict | None:
        """The transport notes found since the last analysed frame and the absences going on at this frame,
        in media seconds; `at` is the frame's time here, so that a later shift of the frame (--loop) can
        shift them along (avwatch/convert/segments.segment_transport)."""
        if self._origin is None:
            return None
        origin = self._origin
        timed = ("t", "start", "end", "since")

        def media(note: dict) -> dict:
            return {k: (round(v - origin, 6) if k in timed else v) for k, v in note.items()}

        return {"at": round(t, 9), "notes": [media(n) for n in self.transport.take_notes()],
                "absent": [media(n) for n in self.transport.absent()], "streams": self.transport.pid_names()}

    def _audio(self, frame, track: _AudioTrack) -> Iterator[AudioChunk]:
        """Resample to interleaved int16; each continuous run is anchored at its container PTS.

        Within a run, sample n of the output is at anchor + n / rate (the resampler is continuous). When
        a frame's PTS disagrees with the run by more than 20 ms (a gap or jump in the source), the
        resampler is flushed and a new run starts at that frame's PTS, so gaps stay gaps.
        """
        t_in = self._time(frame.pts, frame.time_base or track.stream.time_base)
        layout = self._layout(frame, track)
        signature = (layout, frame.sample_rate, frame.format.name if frame.format else None)
        if track.resampler is not None and (signature != track.signature or
                                            (t_in is not None and abs(t_in - track.expected_in) > 0.020)):
            yield from self._drain(track)
            track.resampler = None
        if signature != track.signature:
            if track.signature is not None:  # a mid-stream switch (a splice): the new run has the new layout
                log.info("%s: audio track %d changed at %.3f s: %s -> %s", self.uri, track.index, t_in or 0.0,
                         track.signature, signature)
            channels = len(frame.layout.channels) if frame.layout is not None else track.info["channels"]
            track.info.update({"channels": channels or track.info["channels"], "layout": layout,
                               "src_rate": frame.sample_rate})
            track.signature = signature
        if track.resampler is None:
            track.resampler = av.AudioResampler(format="flt" if self.options.audio_format == "f32" else "s16",
                                                layout=self._layout(frame, track),
                                                rate=track.info["sample_rate"])
            track.anchor = t_in if t_in is not None else track.expected_in
            track.expected_in = track.anchor
            track.run_count = 0
        track.expected_in += frame.samples / frame.sample_rate
        yield from self._emit(track.resampler.resample(frame), track)

    def _drain(self, track: _AudioTrack) -> Iterator[AudioChunk]:
        yield from self._emit(track.resampler.resample(None), track)

    def _emit(self, frames, track: _AudioTrack) -> Iterator[AudioChunk]:
        a = track.info
        for out in frames:
            samples = out.to_ndarray().reshape(-1, a["channels"])
            t = track.anchor + track.run_count / a["sample_rate"]
            track.run_count += samples.shape[0]
            yield AudioChunk(t=round(t, 9), samples=samples, track=track.index)

    def _layout(self, frame, track: _AudioTrack):
        if frame is not None and frame.layout is not None and frame.layout.name:
            return frame.layout.name
        return track.info["layout"]
