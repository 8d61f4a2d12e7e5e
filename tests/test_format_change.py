"""format_change: a 720p -> 1080p splice in an MPEG-TS is one event at the switch, with before and after;
analysis goes on across it at the same analysis size; clean clips raise none."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from avwatch.local import analyze_source
from avwatch.samples import Injected, SampleClip, read_rgb_frames, real_clip, write_clip
from detectors.config import DetectorConfig
from tests.media import ffmpeg

pytestmark = pytest.mark.footage


def spliced_feed(folder: Path, switch_s: float = 2.0) -> SampleClip:
    """bikes at 1280x720 for switch_s, then at 1920x1080 (its last second black), as one MPEG-TS: two
    encodes joined at the transport level, as a splicer or a reconfigured encoder leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = read_rgb_frames(real_clip("bikes"), limit=125)
    n = int(switch_s * 25)
    first = write_clip(folder / "part1.mp4", [cv2.resize(f, (1280, 720)) for f in frames[:n]], 25, gop=25)
    later = [cv2.resize(f, (1920, 1080)) for f in frames[n:]]
    for i in range(len(later) - 25, len(later)):
        later[i] = np.zeros_like(later[i])
    second = write_clip(folder / "part2.mp4", later, 25, gop=25)
    parts = []
    for k, (src, offset) in enumerate(((first, 0.0), (second, switch_s))):
        out = folder / f"part{k + 1}.ts"
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-c", "copy",
                        "-bsf:v", "h264_mp4toannexb", "-output_ts_offset", str(offset), str(out)], check=True)
        parts.append(out.read_bytes())
    path = folder / "spliced.ts"
    path.write_bytes(b"".join(parts))
    end = len(frames) / 25
    return SampleClip("spliced", path, [Injected("format_change", switch_s, switch_s + 0.04, "720p -> 1080p"),
                                        Injected("black", end - 1.0, end, "black after the switch")])
    # (the transport's own timestamps place the switch within a frame or two of switch_s: ffprobe_switch)


def ffprobe_switch(path: Path) -> float:
    """The oracle: media time (from the first frame) of the first 1920-wide frame, from ffprobe's frames."""
    out = subprocess.run([ffmpeg().replace("ffmpeg", "ffprobe"), "-v", "error", "-select_streams", "v:0",
                          "-show_entries", "frame=pts_time,width", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.split()
    frames = [(float(t), w) for t, w in (line.split(",")[:2] for line in out if line)]
    return min(t for t, w in frames if w == "1920") - min(t for t, _ in frames)


@pytest.fixture(scope="module")
def spliced(tmp_path_factory):
    clip = spliced_feed(tmp_path_factory.mktemp("splice"))
    return clip, ffprobe_switch(clip.path)


def test_a_resolution_switch_is_one_event_with_before_and_after(spliced):
    clip, switch = spliced
    assert abs(switch - 2.0) <= 0.1                                    # the splice is where it was made
    rows = analyze_source(str(clip.path), DetectorConfig.build()).rows
    changes = [r for r in rows if r["detector"] == "format_change"]
    # where ffprobe sees it, to the first frame analysed in the new format: the splice overlaps the first
    # part's last two frames in time, and those are dropped as repeats of their timestamps
    assert len(changes) == 1 and -0.001 <= changes[0]["start_s"] - switch <= 0.081
    details = json.loads(changes[0]["details"])
    assert details["changed"] == {"width": [1280, 1920], "height": [720, 1080]}
    assert details["before"]["codec"] == details["after"]["codec"] == "h264"
    black = [r for r in rows if r["detector"] == "black"]             # analysis goes on after the switch
    assert len(black) == 1 and abs(black[0]["start_s"] - (switch + 2.0)) <= 0.04
    assert not [r for r in rows if r["detector"] in ("freeze", "blockiness", "blur", "frame_drop")]


def test_no_format_change_on_clean_clips():
    for name in ("bikes", "bigbuckbunny"):
        rows = analyze_source(str(real_clip(name)), DetectorConfig.build(["format_change"])).rows
        assert rows == [], name


def test_an_audio_layout_switch_mid_stream_is_followed_not_garbled(tmp_path):
    """Stereo for 2 s, then mono, spliced in one MPEG-TS: the converter starts a new audio run and segment
    at the switch (the old resampler would read mono as stereo: half the samples, interleaved wrongly),
    and every detector, the optional ones too, goes on over the new channel count."""
    from avwatch.convert.decode import MediaDecoder
    from detectors.registry import NAMES

    rng = np.random.default_rng(4)
    frames = [np.full((36, 64, 3), 90, np.uint8) for _ in range(50)]
    parts = []
    for k, channels in enumerate((2, 1)):
        clip = write_clip(tmp_path / f"a{k}.mp4", frames, 25, audio=(rng.standard_normal((2 * 48000, channels)) * 0.05)
                          .astype(np.float32))
        out = tmp_path / f"a{k}.ts"
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy", "-bsf:v",
                        "h264_mp4toannexb", "-output_ts_offset", str(2.0 * k), str(out)], check=True)
        parts.append(out.read_bytes())
    path = tmp_path / "layout_switch.ts"
    path.write_bytes(b"".join(parts))
    dec = MediaDecoder(str(path))
    chunks = [(item.t, item.samples.shape[1]) for item in dec.items() if not hasattr(item, "luma")]
    widths = [w for _, w in chunks]
    switch = widths.index(1)
    assert set(widths[:switch]) == {2} and set(widths[switch:]) == {1}   # never mixed up
    assert abs(chunks[switch][0] - 2.0) <= 0.1
    result = analyze_source(str(path), DetectorConfig.build(list(NAMES)))
    assert result.audio_s == pytest.approx(4.0, abs=0.15)               # both parts analysed, none lost
    # the switch itself is one format_change event, at the first block in the new layout, before and after
    switches = [r for r in result.rows if r["detector"] == "format_change"]
    assert len(switches) == 1, switches
    details = json.loads(switches[0]["details"])
    assert details["check"] == "audio" and abs(switches[0]["start_s"] - 2.0) <= 0.1
    assert details["changed"]["channels"] == [2, 1] and details["changed"]["layout"] == ["stereo", "mono"]
    assert details["before"]["codec"] == details["after"]["codec"] == "aac"


def _rate_splice(folder: Path, first: int, second: int, switch_s: float = 3.0) -> Path:
    """FFmpeg's test pattern at one frame rate then another, joined at the transport level with continuous
    timestamps (the second part offset to start where the first ends)."""
    parts = []
    for k, (rate, offset) in enumerate(((first, 0.0), (second, switch_s))):
        out = folder / f"rate{k}.ts"
        subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size=320x180:rate={rate}", "-t", str(switch_s), "-c:v", "libx264", "-g", str(rate),
                        "-output_ts_offset", str(offset), "-f", "mpegts", str(out)], check=True)
        parts.append(out.read_bytes())
    path = folder / f"rate_{first}_{second}.ts"
    path.write_bytes(b"".join(parts))
    return path


@pytest.mark.parametrize("first, second", [(25, 50), (50, 25), (30, 25)])
def test_a_frame_rate_switch_is_one_event_with_before_and_after(tmp_path, first, second):
    path = _rate_splice(tmp_path, first, second)
    rows = analyze_source(str(path), DetectorConfig.build(["format_change"])).rows
    assert len(rows) == 1, rows
    details = json.loads(rows[0]["details"])
    assert details["changed"] == {"frame_rate": [float(first), float(second)]}
    # recognised after a few frames at the new rate (6 steps between decoded frames)
    assert 3.0 - 0.05 <= rows[0]["start_s"] <= 3.0 + 7 / second


def test_dropped_frames_are_no_frame_rate_switch(tmp_path):
    """Frames lost here and there (single long steps) leave the frame rate alone."""
    from avwatch.samples import field_camera

    clip = field_camera(tmp_path)
    assert any(i.detector == "frame_drop" for i in clip.injected)
    rows = analyze_source(str(clip.path), DetectorConfig.build(["format_change"])).rows
    assert rows == []
