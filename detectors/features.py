"""Stage 1: turn one segment record into a table of per-frame or per-audio-block features.

The composer decodes the segment's payload once (luma planes, thumbnails, PCM), computes the measures
several detectors share (luma statistics, frame differences), then asks each enabled detector module
for its own columns: `frame_features(frames, options)` for video, `block_features(blocks, options)` for
audio. The result is a Features table: named numpy arrays of equal length (2-D for per-channel or
per-cell values), cheap to slice, and serialisable to Arrow for the trip to stage 2.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from schemas.luma import decode_planes
from schemas.records import DIFF_CELLS

AUDIO_BLOCK_S = 0.01  # stage-1 audio blocks: 10 ms (the converter's audio segments are whole blocks)


class Features(dict):
    """Named numpy arrays sharing their first axis (rows in time order). Always has "t" (media s)."""

    def __len__(self) -> int:  # number of rows, not of columns
        t = self.get("t")
        return 0 if t is None else int(t.shape[0])

    @property
    def columns(self) -> list[str]:
        return list(self.keys())

    def take(self, index) -> "Features":
        return Features({k: v[index] for k, v in self.items()})

    def slice(self, start: int, stop: int) -> "Features":
        return self.take(slice(start, stop))

    @staticmethod
    def concat(parts: list["Features"]) -> "Features":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Features()
        keys = parts[0].keys()
        return Features({k: np.concatenate([p[k] for p in parts]) for k in keys})

    def to_arrow(self) -> pa.Table:
        columns, names = [], []
        for name, values in self.items():
            if values.ndim == 2:
                flat = pa.array(np.ascontiguousarray(values).ravel())
                columns.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            elif values.dtype == object:
                columns.append(pa.array(list(values), type=pa.binary()))
            else:
                columns.append(pa.array(values))
            names.append(name)
        return pa.Table.from_arrays(columns, names=names)

    @staticmethod
    def from_arrow(table: pa.Table) -> "Features":
        out = Features()
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                width = col.type.list_size
                out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                # a table store (Delta/Spark) keeps fixed-size lists as plain lists of equal length
                flat = col.flatten().to_numpy(zero_copy_only=False)
                out[name] = flat.reshape(len(col), -1) if len(col) else flat.reshape(0, 0)
            elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                out[name] = np.array(col.to_pylist(), dtype=object)
            else:
                out[name] = col.to_numpy(zero_copy_only=False)
        return out

    def to_ipc(self) -> bytes:
        """This table as an Arrow IPC stream (lz4): how features travel (stage 1 -> stage 2, edge -> job)."""
        table = self.to_arrow()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    @staticmethod
    def from_ipc(payload: bytes) -> "Features":
        return Features.from_arrow(pa.ipc.open_stream(pa.py_buffer(payload)).read_all())

    def to_pandas(self):
        """1-D columns as a DataFrame (2-D columns become one list per row), for notebooks."""
        import pandas as pd

        return pd.DataFrame({k: (list(v) if v.ndim == 2 else v) for k, v in self.items()})


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


@dataclass
class AudioBlocks:
    """What an audio detector's stage 1 sees of one segment, cut into 10 ms blocks."""

    t: np.ndarray              # (nb,) media seconds of each block's first sample
    n: np.ndarray              # (nb,) samples per channel in each block (the last may be short)
    block: int                 # nominal samples per block
    rate: int                  # samples per second
    samples: np.ndarray        # (context + N, ch) float32 in [-1, 1), context first
    raw: np.ndarray            # the same as int16
    context: int               # leading context samples (the previous segment's tail)
    layout: str = ""           # FFmpeg channel layout name of the source, e.g. "stereo", "5.1"

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
        luma_mean=means, luma_std=stds, diff_prev=diffs, diff_cells=cells)
    flags = {name: table.column(name).to_numpy(zero_copy_only=False)[keep]
             for name in ("frame_index", "keyframe", "decode_error", "pts_missing")}
    flags["thumb_jpeg"] = np.array(jpegs, dtype=object)[keep]
    return frames, src, flags


def _cell_means(d: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """Mean of d over a rows x cols grid of cells (cells may be unequal when sizes do not divide)."""
    ry, rx = cells
    h, w = d.shape
    ys = np.linspace(0, h, ry + 1).astype(int)
    xs = np.linspace(0, w, rx + 1).astype(int)
    out = np.empty(ry * rx, np.float32)
    for i in range(ry):
        for j in range(rx):
            out[i * rx + j] = cv2.mean(d[ys[i]:ys[i + 1], xs[j]:xs[j + 1]])[0]
    return out


def decode_thumb(jpeg: bytes, height: int, width: int) -> np.ndarray:
    """The RGB thumbnail of one frame from its JPEG bytes."""
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (height, width):
        raise ValueError(f"a thumbnail is not a {width}x{height} JPEG")
    return bgr[:, :, ::-1]


def video_features(table: pa.Table, config) -> Features:
    """Stage 1 of every enabled video detector over one video segment table."""
    frames, _src, flags = decode_video(table)
    return compose_video(frames, flags, config)


def compose_video(frames: VideoFrames, flags: dict, config) -> Features:
    """The shared per-frame measures plus every enabled video detector's own columns."""
    out = Features(t=frames.t, frame_index=flags["frame_index"].astype(np.int64),
                   keyframe=flags["keyframe"].astype(bool), decode_error=flags["decode_error"].astype(bool),
                   pts_missing=flags["pts_missing"].astype(bool),
                   frame_dur=np.full(len(frames.t), frames.frame_dur),
                   luma_mean=frames.luma_mean, luma_std=frames.luma_std, diff_prev=frames.diff_prev,
                   diff_cells=frames.diff_cells,
                   diff_cellmax=frames.diff_cells.max(axis=1) if len(frames.t) else np.zeros(0, np.float32),
                   thumb_jpeg=flags["thumb_jpeg"])
    for module, options in config.video_modules():
        fn = getattr(module, "frame_features", None)
        if fn is not None:
            for name, values in fn(frames, options).items():
                out[name] = values
    return out


# -- audio ---------------------------------------------------------------------------------------


def decode_audio(table: pa.Table) -> tuple[AudioBlocks, dict]:
    row = table.slice(0, 1).to_pylist()[0]
    if row["sample_format"] != "s16":
        raise ValueError(f"unsupported audio sample format {row['sample_format']!r}")
    ch = row["channels"]
    raw = np.frombuffer(row["samples"], np.int16).reshape(-1, ch)
    rate = row["sample_rate"]
    block = int(round(rate * AUDIO_BLOCK_S))
    n_body = int(row["n_samples"])
    nb = -(-n_body // block)
    t = row["pts_s"] + np.arange(nb) * block / rate
    n = np.full(nb, block, np.int64)
    if nb:
        n[-1] = n_body - (nb - 1) * block
    blocks = AudioBlocks(t=t, n=n, block=block, rate=rate, samples=raw.astype(np.float32) / 32768.0,
                         raw=raw, context=int(row["context_samples"]), layout=row["layout"])
    return blocks, json.loads(row["source"])


def audio_features(table: pa.Table, config) -> Features:
    """Stage 1 of every enabled audio detector over one audio segment table."""
    blocks, _src = decode_audio(table)
    return compose_audio(blocks, config)


def compose_audio(blocks: AudioBlocks, config) -> Features:
    out = Features(t=blocks.t, n=blocks.n, rate=np.full(len(blocks.t), blocks.rate, np.int32))
    for module, options in config.audio_modules():
        fn = getattr(module, "block_features", None)
        if fn is not None:
            for name, values in fn(blocks, options).items():
                out[name] = values
    return out


# -- features computed elsewhere (the converter's --edge-features) are checked before use -------------

_EXPECTED: dict[tuple[str, str], dict[str, tuple[str, tuple]]] = {}
_KIND_GROUPS = ("f", "iu", "b", "OS")  # dtype kinds that may stand for each other


def expected_columns(config, kind: str) -> dict[str, tuple[str, tuple]]:
    """Column name -> (dtype kind, trailing shape) of this config's stage 1 for `kind`, found by running
    it once on a tiny synthetic segment (so the list is derived from the detectors, never written twice)."""
    key = (config.fingerprint(), kind)
    if key not in _EXPECTED:
        rng = np.random.default_rng(0)
        if kind == "video":
            n, h, w = 2, 36, 64
            luma = rng.integers(16, 235, (n, h, w), dtype=np.uint8)
            thumbs = rng.integers(0, 255, (n, 9, 16, 3), dtype=np.uint8)
            ok, jpeg = cv2.imencode(".jpg", thumbs[0][:, :, ::-1])
            cells = np.full((n, DIFF_CELLS[0] * DIFF_CELLS[1]), 0.01, np.float32)
            frames = VideoFrames(t=np.array([0.0, 0.04]), luma=luma, prev_luma=luma[0], thumbs=thumbs,
                                 full_range=False, frame_dur=0.04, block_ratio=np.ones((n, 9), np.float32),
                                 block_activity=np.full((n, 9), 0.1, np.float32),
                                 luma_mean=np.full(n, 0.5, np.float32), luma_std=np.full(n, 0.2, np.float32),
                                 diff_prev=np.full(n, 0.01, np.float32), diff_cells=cells)
            flags = {"frame_index": np.arange(n), "keyframe": np.ones(n, bool), "decode_error": np.zeros(n, bool),
                     "pts_missing": np.zeros(n, bool), "thumb_jpeg": np.array([jpeg.tobytes()] * n, dtype=object)}
            feats = compose_video(frames, flags, config)
        else:
            rate, block = 48000, 480
            raw = rng.integers(-3000, 3000, (block * 5, 2), dtype=np.int16)
            blocks = AudioBlocks(t=np.arange(5) * AUDIO_BLOCK_S, n=np.full(5, block, np.int64), block=block,
                                 rate=rate, samples=raw.astype(np.float32) / 32768.0, raw=raw, context=0,
                                 layout="stereo")
            feats = compose_audio(blocks, config)
        _EXPECTED[key] = {name: (v.dtype.kind, v.shape[1:]) for name, v in feats.items()}
    return _EXPECTED[key]


def check_features(feats: Features, config, kind: str) -> None:
    """Raise ValueError unless `feats` has every column this config's detectors read for `kind`, each of
    the right type and shape, all of one length, with finite times."""
    t = feats.get("t")
    if not isinstance(t, np.ndarray) or t.ndim != 1 or t.dtype.kind not in "fiu":
        raise ValueError("features have no 1-D numeric column 't'")
    if not np.isfinite(t.astype(np.float64)).all():
        raise ValueError("features column 't' has a non-finite time")
    n = len(t)
    for name, values in feats.items():
        if values.shape[:1] != (n,):
            raise ValueError(f"features column {name!r} has {values.shape[0] if values.ndim else 0} rows, "
                             f"'t' has {n}")
    if kind == "audio" and "rate" in feats and n and not ((feats["rate"] >= 1000) & (feats["rate"] <= 768_000)).all():
        raise ValueError("features column 'rate' must hold sample rates from 1000 to 768000")
    missing = []
    for name, (dtype_kind, trailing) in expected_columns(config, kind).items():
        values = feats.get(name)
        if values is None:
            missing.append(name)
            continue
        group = next(g for g in _KIND_GROUPS if dtype_kind in g)
        if values.dtype.kind not in group or values.ndim != 1 + len(trailing):
            raise ValueError(f"features column {name!r} is {values.dtype}{list(values.shape[1:])}, "
                             f"expected kind {dtype_kind!r} with {len(trailing) + 1} dimension(s)")
        if kind == "video" and values.shape[1:] != trailing:  # audio widths follow the channel count
            raise ValueError(f"features column {name!r} has shape {values.shape[1:]}, expected {trailing}")
    if missing:
        raise ValueError(f"features lack column(s) {', '.join(missing)} that this job's detectors read "
                         f"(the edge converter runs other detectors: publish with the job's --detectors/--config)")


# -- one segment record -> stage-2 input -----------------------------------------------------------


@dataclass
class SegmentInput:
    """What stage 2 needs of one Kafka record: where it goes in the stream and its features or control."""

    stream_id: str
    kind: str                  # "video" or "audio" (the topic it came on)
    sequence: int
    t: float                   # media seconds at its start
    source: dict               # the converter's source metadata (has_video, has_audio, epoch, ...)
    features: Features | None = None
    control: str | None = None  # "eos" or "heartbeat" for control records


def stage1(record_name: str, table: pa.Table, config, kind: str | None = None) -> SegmentInput:
    """Stage 1 for one decoded record. `kind` is the topic's kind, needed for control records."""
    stream_id = table.column("stream_id")[0].as_py()
    seq = int(table.column("sequence")[0].as_py())
    src = source_of(table)
    if record_name == "video_segment":
        feats = video_features(table, config) if config.needs("video") else Features()
        t = float(table.column("pts_s")[0].as_py()) if not len(feats) else float(feats["t"][0])
        return SegmentInput(stream_id, "video", seq, t, src, features=feats)
    if record_name == "audio_segment":
        feats = audio_features(table, config) if config.needs("audio") else Features()
        return SegmentInput(stream_id, "audio", seq, float(table.column("pts_s")[0].as_py()), src, features=feats)
    if record_name == "feature_segment":  # stage 1 already ran at the edge (the converter): check it first
        from schemas.ipc_guard import check_stream

        kind = table.column("kind")[0].as_py()
        blob = table.column("features")[0].as_py()
        check_stream(blob)
        feats = Features.from_ipc(blob)
        if config.needs(kind):
            check_features(feats, config, kind)
        return SegmentInput(stream_id, kind, seq, float(table.column("t")[0].as_py()), src, features=feats)
    if record_name == "control":
        if kind not in ("video", "audio"):
            raise ValueError("a control record needs the kind of the topic it came on")
        return SegmentInput(stream_id, kind, seq, float(table.column("media_time_s")[0].as_py()), src,
                            control=table.column("kind")[0].as_py())
    raise ValueError(f"stage 1 does not take {record_name} records")


def edge_features_table(record_name: str, table: pa.Table, config) -> pa.Table:
    """Run stage 1 on a video/audio segment and wrap the result as a feature_segment record (the
    converter's --edge-features mode: features travel instead of pixels)."""
    from schemas.codec import large_binary
    from schemas.records import FEATURE_SEGMENT

    item = stage1(record_name, table, config)
    return pa.Table.from_pydict({
        "stream_id": [item.stream_id], "sequence": [item.sequence], "kind": [item.kind], "t": [item.t],
        "detectors": [json.dumps(config.describe(), sort_keys=True)],
        "features": large_binary([item.features.to_ipc()]), "source": [table.column("source")[0].as_py()]},
        schema=FEATURE_SEGMENT.schema)
