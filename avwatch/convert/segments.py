"""Group decoded frames and audio into segment records (schemas/records.py).

A video segment holds the frames of about `segment_s` seconds plus one context row: the previous
segment's last frame, so that frame differences at the start of a segment need no state downstream.
An audio segment holds `segment_s` seconds of samples (a whole number of 10 ms blocks, so the
detectors' blocks line up across segments) plus `AUDIO_CONTEXT_S` of the previous samples, to settle
the loudness filters. Sequence numbers are contiguous per stream and kind, control records included.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from avwatch.convert.decode import AudioChunk, SourceInfo, VideoFrame
from avwatch.convert.options import check_segment_seconds
from schemas.codec import large_binary
from schemas.luma import encode_planes
from schemas.records import AUDIO_SEGMENT, CONTROL, VIDEO_SEGMENT

AUDIO_CONTEXT_S = 0.1
AUDIO_BLOCK_S = 0.01
# The local runner (no Kafka) places files on this fixed clock, so its rows are reproducible. The
# converter uses the publish time instead (see jobs/publish.py for why).
FILE_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass
class Segment:
    """One record ready to send: its kind, sequence number, media start time and Arrow table."""

    kind: str            # "video", "audio" or "control"
    stream_id: str
    sequence: int
    t: float             # media seconds at the start of the segment
    table: pa.Table
    frames: int = 0      # frames (video) or samples per channel (audio) it carries, context excluded


def source_json(info: SourceInfo, epoch: datetime, publish_id: str) -> str:
    return json.dumps({"uri": info.uri, "live": info.live, "has_video": info.has_video,
                       "has_audio": info.has_audio, "video": info.video, "audio": info.audio,
                       "epoch": epoch.isoformat(), "publish_id": publish_id}, sort_keys=True)


def new_publish_id() -> str:
    """Identifies one publication of a stream; sorts by start time, so the job can tell newer from older."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:8]


@dataclass
class Segmenter:
    """Turns one source's decoded items into segments; call add() per item, then finish()."""

    stream_id: str
    info: SourceInfo
    segment_s: float = 1.0
    epoch: datetime = FILE_EPOCH
    publish_id: str = field(default_factory=lambda: new_publish_id())
    _frames: list = field(default_factory=list)
    _context: VideoFrame | None = None
    _audio: list = field(default_factory=list)
    _audio_n: int = 0
    _audio_t: float | None = None
    _audio_context: np.ndarray | None = None
    _seq: dict = field(default_factory=lambda: {"video": 0, "audio": 0})
    _source: str = ""

    def __post_init__(self):
        check_segment_seconds(self.segment_s)
        self._source = source_json(self.info, self.epoch, self.publish_id)

    def refresh_source(self) -> None:
        """Re-read source facts learnt while decoding (e.g. the colour range of the first frame)."""
        self._source = source_json(self.info, self.epoch, self.publish_id)

    @property
    def audio_segment_samples(self) -> int:
        rate = self.info.audio["sample_rate"]
        block = int(round(rate * AUDIO_BLOCK_S))
        return max(1, int(round(self.segment_s / AUDIO_BLOCK_S))) * block

    def add(self, item) -> list[Segment]:
        if isinstance(item, VideoFrame):
            if item.format_changed:  # the new format starts a segment of its own, with the new source facts
                out = [self._flush_video()] if self._frames else []
                self.refresh_source()
                self._frames.append(item)
                return out
            if not self._frames and self._context is None:
                self.refresh_source()
            if self._frames and item.t >= self._frames[0].t + self.segment_s - 1e-6:
                out = [self._flush_video()]
                self._frames.append(item)
                return out
            self._frames.append(item)
            return []
        if isinstance(item, AudioChunk):
            if not self._audio:  # a new audio segment: facts learnt from the packets (AC-3 dialnorm)
                self.refresh_source()
            return self._add_audio(item)
        raise TypeError(f"cannot segment {type(item).__name__}")

    def finish(self, media_end_s: float | None = None) -> list[Segment]:
        """Flush what is buffered and close the stream with an end-of-stream record on each topic."""
        out = []
        if self._frames:
            out.append(self._flush_video())
        if self._audio:
            out.append(self._flush_audio(sum(len(a) for a in self._audio)))
        end = media_end_s if media_end_s is not None else self.media_time()
        for kind, present in (("video", self.info.has_video), ("audio", self.info.has_audio)):
            if present:
                out.append(self.control(kind, "eos", end))
        return out

    def media_time(self) -> float:
        """The furthest media time seen so far."""
        ends = [0.0]
        if self._context is not None:
            ends.append(self._context.t + self.info.video.get("frame_dur", 0.0))
        if self._frames:
            ends.append(self._frames[-1].t + self.info.video.get("frame_dur", 0.0))
        if self._audio_t is not None:
            ends.append(self._audio_t + self._audio_n / self.info.audio["sample_rate"])
        return max(ends)

    def control(self, kind: str, control_kind: str, media_time_s: float) -> Segment:
        seq = self._next(kind)
        table = pa.Table.from_pylist([{
            "stream_id": self.stream_id, "sequence": seq, "kind": control_kind,
            "media_time_s": float(media_time_s), "wall_time": datetime.now(timezone.utc),
            "source": self._source}], schema=CONTROL.schema)
        return Segment("control:" + kind, self.stream_id, seq, float(media_time_s), table)

    # -- video -----------------------------------------------------------------------------------

    def _next(self, kind: str) -> int:
        seq = self._seq[kind]
        self._seq[kind] = seq + 1
        return seq

    def _flush_video(self) -> Segment:
        frames, self._frames = self._frames, []
        rows = ([self._context] if self._context is not None else []) + frames
        seq = self._next("video")
        n = len(rows)
        first = frames[0]
        luma, codings = encode_planes([f.luma for f in rows])
        sources = [self._source] * n
        transport = segment_transport(frames)
        if transport is not None:  # the segment's transport notes ride in its first row's source only
            sources[0] = json.dumps({**json.loads(self._source), "transport": transport}, sort_keys=True)
        table = pa.Table.from_pydict({
            "stream_id": [self.stream_id] * n,
            "sequence": [seq] * n,
            "frame_index": [f.frame_index for f in rows],
            "pts": [f.pts for f in rows],
            "time_base_num": [f.time_base.numerator for f in rows],
            "time_base_den": [f.time_base.denominator for f in rows],
            "pts_s": [f.t for f in rows],
            "pts_missing": [f.pts_missing for f in rows],
            "context": [self._context is not None and i == 0 for i in range(n)],
            "keyframe": [f.keyframe for f in rows],
            "decode_error": [f.decode_error for f in rows],
            "width": [f.luma.shape[1] for f in rows],
            "height": [f.luma.shape[0] for f in rows],
            "luma": large_binary(luma),
            "luma_coding": codings,
            "thumb_width": [f.thumb.shape[1] for f in rows],
            "thumb_height": [f.thumb.shape[0] for f in rows],
            "thumb": [f.thumb_jpeg for f in rows],
            "block_ratio": [f.block_ratio.tolist() for f in rows],
            "block_activity": [f.block_activity.tolist() for f in rows],
            "source": sources,
        }, schema=VIDEO_SEGMENT.schema)
        self._context = frames[-1]
        return Segment("video", self.stream_id, seq, first.t, table, frames=len(frames))

    # -- audio -----------------------------------------------------------------------------------

    def _add_audio(self, chunk: AudioChunk) -> list[Segment]:
        out = []
        rate = self.info.audio["sample_rate"]
        if self._audio_t is not None:
            expected = self._audio_t + self._audio_n / rate
            held = self._audio[0] if self._audio else self._audio_context
            other_layout = held is not None and held.shape[1] != chunk.samples.shape[1]
            if abs(chunk.t - expected) > 1e-3 or other_layout:
                # a discontinuity in the source (or a new channel layout): close the segment here, the next
                # starts at chunk.t with its own context
                if self._audio:
                    out.append(self._flush_audio(self._audio_n))
                self._audio_t, self._audio_context = None, None
                self.refresh_source()   # the new run's facts (a new layout or rate) go with its segments
        if self._audio_t is None:
            self._audio_t, self._audio_n, self._audio = chunk.t, 0, []
        self._audio.append(chunk.samples)
        self._audio_n += chunk.samples.shape[0]
        size = self.audio_segment_samples
        while self._audio_n >= size:
            out.append(self._flush_audio(size))
        return out

    def _flush_audio(self, n: int) -> Segment:
        a = self.info.audio
        buf = np.concatenate(self._audio, axis=0) if len(self._audio) > 1 else self._audio[0]
        body, rest = buf[:n], buf[n:]
        fmt = a.get("sample_format", "s16")
        dtype = np.float32 if fmt == "f32" else np.int16
        ctx = self._audio_context if self._audio_context is not None else np.zeros((0, body.shape[1]), dtype)
        payload = np.ascontiguousarray(np.concatenate([ctx, body], axis=0).astype(dtype))
        seq = self._next("audio")
        t = self._audio_t
        table = pa.Table.from_pydict({
            "stream_id": [self.stream_id], "sequence": [seq], "pts_s": [float(t)], "sample_rate": [a["sample_rate"]],
            "channels": [body.shape[1]], "layout": [a["layout"]], "sample_format": [fmt], "n_samples": [int(n)],
            "context_samples": [int(ctx.shape[0])], "samples": large_binary([payload.tobytes()]),
            "source": [self._source]}, schema=AUDIO_SEGMENT.schema)
        keep = int(round(AUDIO_CONTEXT_S * a["sample_rate"]))
        self._audio_context = body[-keep:].copy()
        self._audio = [rest] if len(rest) else []
        self._audio_n = len(rest)
        self._audio_t = t + n / a["sample_rate"]
        return Segment("audio", self.stream_id, seq, float(t), table, frames=int(n))


def segment_transport(frames: list[VideoFrame]) -> dict | None:
    """The transport notes of a segment's frames, the absences going on at its last frame and what each PID
    carries (media seconds); None for sources not checked."""
    checked = [f for f in frames if f.transport is not None]
    if not checked:
        return None
    timed = ("t", "start", "end", "since")

    def shifted(note: dict, frame: VideoFrame) -> dict:
        offset = frame.t - frame.transport["at"]   # the frame was shifted after decoding (--loop): follow it
        if abs(offset) < 1e-6:
            return note
        return {k: (round(v + offset, 6) if k in timed else v) for k, v in note.items()}

    last = checked[-1]
    return {"notes": [shifted(n, f) for f in checked for n in f.transport["notes"]],
            "absent": [shifted(n, last) for n in last.transport["absent"]],
            "streams": {str(k): v for k, v in last.transport["streams"].items()}}


# -- several audio tracks ----------------------------------------------------------------------------


def track_stream_id(stream_id: str, track: int) -> str:
    """The stream id an audio track is published under: the source's own for the first chosen track
    (with the video), '<id>.a<k>' for the k-th further one."""
    return stream_id if track == 0 else f"{stream_id}.a{track}"


@dataclass
class TrackSegmenters:
    """The segmenters of one source: the video and the first chosen audio track under the source's stream
    id, and each further audio track as an audio-only stream of its own (track_stream_id), so that each
    track is analysed on its own; a track's records carry `audio.track` (and its language) in their source."""

    stream_id: str
    info: SourceInfo
    segment_s: float = 1.0
    epoch: datetime = FILE_EPOCH

    def __post_init__(self):
        self.main = Segmenter(self.stream_id, self.info, segment_s=self.segment_s, epoch=self.epoch)
        self.extra = {}
        for k in range(1, len(self.info.audio_tracks)):
            track = SourceInfo(uri=self.info.uri, live=self.info.live, has_video=False, has_audio=True,
                               audio=self.info.audio_tracks[k], audio_tracks=[self.info.audio_tracks[k]])
            self.extra[k] = Segmenter(track_stream_id(self.stream_id, k), track, segment_s=self.segment_s,
                                      epoch=self.epoch, publish_id=self.main.publish_id)

    @property
    def all(self) -> list[Segmenter]:
        return [self.main, *self.extra.values()]

    def add(self, item) -> list[Segment]:
        if isinstance(item, AudioChunk) and item.track:
            return self.extra[item.track].add(item)
        return self.main.add(item)

    def finish(self) -> list[Segment]:
        return [s for seg in self.all for s in seg.finish()]
