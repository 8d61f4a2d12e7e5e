"""Segment decoding: a video or audio segment record -> what a detector's stage 1 reads.

VideoFrames carries the decoded luma planes and thumbnails of a video segment with the measures several
detectors share (luma statistics, frame differences); AudioBlocks the PCM of an audio segment cut into
10 ms blocks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import cv2
import numpy as np
import pyarrow as pa

from schemas.luma import decode_planes
from schemas.records import DIFF_CELLS

AUDIO_BLOCK_S = 0.01  # stage-1 audio blocks: 10 ms (the converter's audio segments are whole blocks)


@dataclass
class VideoFrames:
    """What a video detector's stage 1 sees of one segment (context row removed)."""

    t: np.ndarray              # (n,) media seconds
    luma: np.ndarray           # (n, H, W) uint8 at analysis size, as decoded (limited or full range)
    prev_luma: np.ndarray | None  # (H, W) the frame before the segment, if any
    thumbs: np.ndarray         # (n, th, tw, 3) uint8 RGB, full range
    full_range: bool           # luma is 0..255 (JPEG range) rather than 16..235
    frame_dur: float           # nominal seconds between analysed frames
    block_ratio: np.ndarray    # (n, regions) from the converter, full-size picture
    block_activity: np.ndarray
    luma_mean: np.ndarray      # (n,) 0..1 of 255
    luma_std: np.ndarray       # (n,) 0..1 of 255
    diff_prev: np.ndarray      # (n,) mean |Y - Y_prev| as a fraction of 255; NaN where no previous frame
    diff_cells: np.ndarray     # (n, cells) the same per cell of a DIFF_CELLS grid
    source_video: dict = field(default_factory=dict)  # the segment's source picture facts (codec, size, ...)
    transport: dict | None = None  # MPEG-TS sources: the segment's transport notes (avwatch/convert/transport.py)

    @cached_property
    def scene(self) -> tuple[np.ndarray, np.ndarray]:
        """(cut, contrast) of each frame (scene_measures), computed once for every detector that reads them."""
        return scene_measures(self.luma, self.prev_luma)


@dataclass
class AudioBlocks:
    """What an audio detector's stage 1 sees of one segment, cut into 10 ms blocks."""

    t: np.ndarray              # (nb,) media seconds of each block's first sample
    n: np.ndarray              # (nb,) samples per channel in each block (the last may be short)
    block: int                 # nominal samples per block
    rate: int                  # samples per second
    samples: np.ndarray        # (context + N, ch) float32, full scale 1.0 (f32 on the wire may exceed it), context first
    raw: np.ndarray            # the same as int16 (saturated at full scale, as FFmpeg converts)
    context: int               # leading context samples (the previous segment's tail)
    layout: str = ""           # FFmpeg channel layout name of the source, e.g. "stereo", "5.1"
    dialnorm_db: float | None = None  # AC-3/E-AC-3 dialogue normalisation of the source (dB), if it has one
    source_audio: dict = field(default_factory=dict)  # the segment's source audio facts (codec, src_rate, layout)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    def body(self) -> np.ndarray:
        return self.samples[self.context:]

    def blocks_of(self, x: np.ndarray) -> np.ndarray:
        """Reshape a per-sample array of the body (N, ...) to (nb, block, ...), zero-padding the last."""
        nb = len(self.t)
        pad = nb * self.block - x.shape[0]
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        return x.reshape((nb, self.block) + x.shape[1:])


def source_of(table: pa.Table) -> dict:
    return json.loads(table.column("source")[0].as_py())


# -- video ---------------------------------------------------------------------------------------


def decode_video(table: pa.Table) -> tuple[VideoFrames, dict, np.ndarray]:
    """Unpack a video segment table; returns (frames, source metadata, per-frame flags table rows)."""
    src = source_of(table)
    context = table.column("context").to_numpy(zero_copy_only=False)
    h = table.column("height")[0].as_py()
    w = table.column("width")[0].as_py()
    th = table.column("thumb_height")[0].as_py()
    tw = table.column("thumb_width")[0].as_py()
    luma_all = decode_planes(table.column("luma").to_pylist(), table.column("luma_coding").to_pylist(), h, w)
    jpegs = table.column("thumb").to_pylist()
    thumbs_all = np.stack([decode_thumb(j, th, tw) for j in jpegs]) if jpegs else np.zeros((0, th, tw, 3), np.uint8)
    keep = ~context
    prev = luma_all[np.flatnonzero(context)[0]] if context.any() else None
    luma = luma_all[keep]
    ratio = table.column("block_ratio").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    activity = table.column("block_activity").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    nreg = len(ratio) // max(len(context), 1)
    video = src.get("video") or {}
    n = len(luma)
    means = np.empty(n, np.float32)
    stds = np.empty(n, np.float32)
    diffs = np.full(n, np.nan, np.float32)
    cells = np.full((n, DIFF_CELLS[0] * DIFF_CELLS[1]), np.nan, np.float32)
    before = prev
    for i in range(n):
        m, s = cv2.meanStdDev(luma[i])
        means[i], stds[i] = m[0, 0] / 255.0, s[0, 0] / 255.0
        if before is not None:
            d = cv2.absdiff(luma[i], before)
            cells[i] = _cell_means(d, DIFF_CELLS) / 255.0
            diffs[i] = cv2.mean(d)[0] / 255.0
        before = luma[i]
    frames = VideoFrames(
        t=table.column("pts_s").to_numpy()[keep].astype(np.float64),
        luma=luma, prev_luma=prev, thumbs=thumbs_all[keep],
        full_range=(video.get("color_range") == "full"),
        frame_dur=float(video.get("frame_dur") or 0.04),
        block_ratio=ratio.reshape(-1, nreg)[keep] if nreg else np.ones((n, 9), np.float32),
        block_activity=activity.reshape(-1, nreg)[keep] if nreg else np.zeros((n, 9), np.float32),
        luma_mean=means, luma_std=stds, diff_prev=diffs, diff_cells=cells, source_video=dict(video),
        transport=src.get("transport"))
    flags = {name: table.column(name).to_numpy(zero_copy_only=False)[keep]
             for name in ("frame_index", "keyframe", "decode_error", "pts_missing")}
    flags["thumb_jpeg"] = np.array(jpegs, dtype=object)[keep]
    return frames, src, flags


def _cell_means(d: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Mean of d over a rows x cols grid of cells, float32 row-major (cells may be unequal when sizes do not
    divide)."""
    sums, area = cell_sums(d, cells)
    return (sums / np.maximum(area, 1)).ravel().astype(np.float32)


def cell_sums(plane: np.ndarray, cells: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(sums of a 2-D uint8 plane over a rows x cols grid of cells (int64), each cell's area in pixels): one
    integral image, then four corners per cell (a reduction per cell cost ~4-6x as much). The cells split
    the plane at linspace edges, so they may be unequal, or empty on a plane smaller than the grid."""
    ys, xs, area = _cell_grid(*plane.shape, cells)
    corners = cv2.integral(plane)[np.ix_(ys, xs)].astype(np.int64)
    return np.diff(np.diff(corners, axis=0), axis=1), area


@lru_cache(maxsize=16)
def _cell_grid(h: int, w: int, cells: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ys = np.linspace(0, h, cells[0] + 1).astype(int)
    xs = np.linspace(0, w, cells[1] + 1).astype(int)
    return ys, xs, np.outer(np.diff(ys), np.diff(xs))


def decode_thumb(jpeg: bytes, height: int, width: int) -> np.ndarray:
    """The RGB thumbnail of one frame from its JPEG bytes."""
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (height, width):
        raise ValueError(f"a thumbnail is not a {width}x{height} JPEG")
    return bgr[:, :, ::-1]


# -- audio ---------------------------------------------------------------------------------------


def decode_audio(table: pa.Table) -> tuple[AudioBlocks, dict]:
    row = table.slice(0, 1).to_pylist()[0]
    ch = row["channels"]
    if row["sample_format"] == "s16":
        raw = np.frombuffer(row["samples"], np.int16).reshape(-1, ch)
        samples = raw.astype(np.float32) / 32768.0
    elif row["sample_format"] == "f32":  # measured as sent (loudness, true peak above full scale); the
        samples = np.frombuffer(row["samples"], np.float32).reshape(-1, ch)  # int16 view as FFmpeg converts
        raw = np.clip(np.rint(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    else:
        raise ValueError(f"unsupported audio sample format {row['sample_format']!r}")
    rate = row["sample_rate"]
    block = int(round(rate * AUDIO_BLOCK_S))
    n_body = int(row["n_samples"])
    nb = -(-n_body // block)
    t = row["pts_s"] + np.arange(nb) * block / rate
    n = np.full(nb, block, np.int64)
    if nb:
        n[-1] = n_body - (nb - 1) * block
    source = json.loads(row["source"])
    dialnorm = (source.get("audio") or {}).get("dialnorm_db") if isinstance(source, dict) else None
    blocks = AudioBlocks(t=t, n=n, block=block, rate=rate, samples=samples,
                         raw=raw, context=int(row["context_samples"]), layout=row["layout"],
                         dialnorm_db=float(dialnorm) if isinstance(dialnorm, (int, float)) else None,
                         source_audio=dict(source.get("audio") or {}) if isinstance(source, dict) else {})
    return blocks, source


CUT_SIZE = (16, 9)  # the tiny luma picture a scene cut is measured on (width, height)
CUT_THRESHOLD = 0.08  # a mean |change| of that picture at least this fraction of the range is a scene cut


def scene_measures(luma: np.ndarray, prev: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Scene-cut change and coarse contrast of each frame, both on the 16x9 area-averaged luma picture.

    (n, H, W) frames and the frame before them (or None) -> (cut, contrast), each (n,) float32 fractions of
    255: cut is the mean |change| from the previous frame (NaN where there is none), contrast the picture's
    standard deviation. A blur of a few pixels hardly moves either; a scene cut moves the first, a fade or a
    dissolve the second.
    """
    n = len(luma)
    cut = np.full(n, np.nan, np.float32)
    contrast = np.empty(n, np.float32)
    before = None if prev is None else cv2.resize(prev, CUT_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    for i in range(n):
        tiny = cv2.resize(luma[i], CUT_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        if before is not None:
            cut[i] = float(np.mean(np.abs(tiny - before))) / 255.0
        contrast[i] = float(tiny.std()) / 255.0
        before = tiny
    return cut, contrast
