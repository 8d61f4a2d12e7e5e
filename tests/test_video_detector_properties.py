"""Window-split invariance (hypothesis) and small state of blur, blockiness, colorbars and solid_color.

Split invariance: a stream's feature rows fed to stage 2 in one piece, or cut at arbitrary row boundaries
into several process() calls with the state pickled in between (as the Spark state store does), give
identical events. The rows are real: stage 1 of clips that contain each detector's defect.
"""
from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.config import DetectorConfig
from detectors.features import Features
from tests.video_clips import blur_frames, clip_frames, corrupt_packets, encode, features_of, lavfi_frames

W, H = 640, 272


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    """Stage-1 feature rows of one defective clip per detector (each defect and some clean footage)."""
    tmp = tmp_path_factory.mktemp("split")
    bikes = clip_frames("bikes", count=200)
    clean = encode(tmp / "clean.mp4", bikes, crf=23, gop=50)
    clips = {
        "blur": encode(tmp / "blur.mp4", bikes[:60] + blur_frames(bikes[60:130], 2.0) + bikes[130:]),
        "colorbars": encode(tmp / "bars.mp4", bikes[:40] + lavfi_frames(f"smptebars=size={W}x{H}:rate=25", 50)
                            + bikes[90:150] + lavfi_frames(f"pal75bars=size={W}x{H}:rate=25", 30) + bikes[180:]),
        "solid_color": encode(tmp / "solid.mp4", bikes[:40] + lavfi_frames(f"color=c=blue:size={W}x{H}:rate=25", 40)
                              + bikes[80:150] + lavfi_frames(f"color=c=green:size={W}x{H}:rate=25", 30)),
        "blockiness": corrupt_packets(clean, tmp / "corrupt.mp4", range(63, 66)),
    }
    return {name: features_of(path, name) for name, path in clips.items()}


def run(detector, rows: Features, cuts: list[int]) -> list:
    state = detector.initial_state()
    events = []
    bounds = [0] + sorted(set(cuts)) + [len(rows)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            events += detector.process(state, "video", rows.slice(a, b))
            state = pickle.loads(pickle.dumps(state))  # what crosses a micro-batch boundary
    return events + detector.finish(state, float(rows["t"][-1] + rows["frame_dur"][-1]))


@pytest.mark.parametrize("name", ["blur", "colorbars", "solid_color", "blockiness"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=199), max_size=12))
def test_events_do_not_depend_on_how_the_rows_are_cut(streams, name, cuts):
    detector = DetectorConfig.build([name]).detectors[0]
    rows = streams[name]
    whole = run(detector, rows, [])
    assert whole, f"the {name} clip must contain its defect"
    assert run(detector, rows, cuts) == whole


def test_state_stays_small(streams):
    """State is a few kB whatever the stream's length (pickled size after the whole clip)."""
    for name, rows in streams.items():
        detector = DetectorConfig.build([name]).detectors[0]
        state = detector.initial_state()
        for a in range(0, len(rows), 25):
            detector.process(state, "video", rows.slice(a, a + 25))
        assert len(pickle.dumps(state)) < 8000, name
