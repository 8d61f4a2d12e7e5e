"""decode_error: frames the decoder flags damaged (and frames after packets it rejected), one event per
burst, checked against FFmpeg's own report of the same file (its error-concealment log lines)."""
from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from avwatch.local import analyze_source
from avwatch.samples import corrupt_packets, read_rgb_frames, real_clip, write_clip
from detectors.config import DetectorConfig
from tests.alarm_steps import AlarmedDetector
from tests.media import ffmpeg

pytestmark = pytest.mark.footage


def ffmpeg_concealments(path) -> int:
    """How many times FFmpeg's H.264 decoder says it concealed damage decoding the file."""
    out = subprocess.run([ffmpeg(), "-hide_banner", "-nostats", "-i", str(path), "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    return len(re.findall(r"concealing \d+ DC, \d+ AC, \d+ MV errors", out))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    frames = read_rgb_frames(real_clip("bikes"), limit=200)
    return write_clip(tmp_path_factory.mktemp("dec") / "clean.mp4", frames, 25, gop=25)


@pytest.mark.parametrize("share,seed", [(0.02, 1), (0.05, 2), (0.2, 3)])
def test_damage_ffmpeg_reports_is_one_event_inside_the_damaged_stretch(clean, tmp_path, share, seed):
    damaged = corrupt_packets(clean, tmp_path / f"damaged{seed}.mp4", 3.0, 5.0, share=share, seed=seed)
    rows = analyze_source(str(damaged), DetectorConfig.build(["decode_error"])).rows
    if ffmpeg_concealments(damaged) == 0:
        assert rows == []           # nothing FFmpeg noticed: nothing flagged (blockiness looks at the picture)
        return
    assert len(rows) >= 1
    for row in rows:  # every burst lies in the damaged stretch, to the next keyframe at 5 s (B-frames shown
        assert 2.9 <= row["start_s"] and row["end_s"] <= 5.05, row   # just before 3 s reference damaged ones)
    merged = [(a["start_s"], b["start_s"]) for a, b in zip(rows, rows[1:])]
    assert all(b - a >= 1.0 for a, b in merged)         # bursts closer than merge_gap_s are one event


def test_no_event_on_clean_footage_and_clean_clips(clean):
    assert ffmpeg_concealments(clean) == 0
    assert analyze_source(str(clean), DetectorConfig.build(["decode_error"])).rows == []
    bunny = analyze_source(str(real_clip("bigbuckbunny")), DetectorConfig.build(["decode_error"])).rows
    assert bunny == []


def test_a_burst_is_raised_at_its_first_damaged_frame():
    """Stage 2 alone: flagged frames at 1.00 and 1.40 s are one burst, raised at once, closed 1 s after."""
    from detectors.base import VIDEO
    from detectors.decode_error import DecodeError
    from detectors.table import Features

    alarmed = AlarmedDetector(DecodeError())
    t = np.arange(0, 4, 0.04)
    flags = np.isin(np.round(t, 2), [1.0, 1.4])
    steps = []
    for a in range(0, len(t), 10):
        rows = Features({"t": t[a:a + 10], "frame_dur": np.full(len(t[a:a + 10]), 0.04), "decode_error": flags[a:a + 10]})
        steps.append([(e.state, round(e.start_s, 2), round(e.end_s, 2), e.details["damaged_frames"])
                      for e in alarmed.step(VIDEO, rows)])
    assert steps[2] == [("open", 1.0, 1.04, 1)]                  # raised in the step that holds the frame at 1.0 s
    assert steps[6] == [("closed", 1.0, 1.44, 2)]                # closed once 1 s passed after the one at 1.4 s
    assert sum(steps, []) == steps[2] + steps[6]
