"""Test media helpers: re-exports of avwatch.samples (real footage, clip writing) plus what only tests
need (espeak-ng speech, the FFmpeg command line as an oracle)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from avwatch.samples import (REAL_CLIPS, read_audio, read_rgb_frames, real_clip, sine,  # noqa: F401
                             write_clip)


def speech(text: str, path: Path, rate: int = 48000) -> np.ndarray:
    """Real speech from espeak-ng (a Debian package the test set-up installs), as float32 stereo."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: run `make system-deps` (scripts/install-system-deps.sh)")
    wav = Path(path).with_suffix(".wav")
    subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True)
    return read_audio(wav, rate=rate, layout="stereo")


def ffmpeg() -> str:
    """The FFmpeg command line (Debian's), used as the independent oracle in agreement tests."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed: run `make system-deps` (scripts/install-system-deps.sh)")
    return exe


def env_threads() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}
