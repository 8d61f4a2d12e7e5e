"""Window-split invariance for every registered detector: a stream's feature rows fed in one piece, or cut
at arbitrary points into windows (video and audio interleaved in any order, the state pickled between
windows as the Spark job does), give identical events."""
from __future__ import annotations

import functools
import pickle
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avwatch.convert.decode import MediaDecoder
from avwatch.convert.segments import Segmenter
from avwatch.samples import field_camera, studio_feed, sync_test
from detectors.base import AUDIO, VIDEO
from detectors.config import DetectorConfig
from detectors.features import Features, stage1
from detectors.registry import NAMES

CONFIG = DetectorConfig.build()


@functools.lru_cache(maxsize=None)
def stream_features(which: str) -> dict[str, Features]:
    """The concatenated stage-1 features per kind of one demo clip, through the real decoder/segmenter."""
    folder = tempfile.mkdtemp(prefix="split-")
    clip = {"studio": studio_feed, "field": field_camera, "sync": sync_test}[which](__import__("pathlib").Path(folder))
    decoder = MediaDecoder(str(clip.path))
    seg = Segmenter(clip.stream_id, decoder.info)
    parts = {VIDEO: [], AUDIO: []}
    segments = [s for item in decoder.items() for s in seg.add(item)] + seg.finish()
    for s in segments:
        if s.kind in (VIDEO, AUDIO):
            record = "video_segment" if s.kind == VIDEO else "audio_segment"
            parts[s.kind].append(stage1(record, s.table, CONFIG).features)
    return {k: Features.concat(v) for k, v in parts.items()}


def end_of(features: dict[str, Features]) -> float:
    ends = [float(f["t"][-1]) for f in features.values() if len(f)]
    return max(ends) + 0.04


def events_tuple(events) -> list[tuple]:
    return sorted((e.detector, e.check, round(e.start_s, 6), round(e.end_s, 6), round(float(e.score), 6),
                   e.details_json()) for e in events)


def run_whole(detector, features) -> list:
    state = detector.initial_state()
    events = []
    for kind in detector.inputs:
        if len(features[kind]):
            events += detector.process(state, kind, features[kind])
    return events + detector.finish(state, end_of(features))


def run_split(detector, features, cuts: dict[str, list[int]], order: list[str]) -> list:
    chunks = {}
    for kind in detector.inputs:
        n = len(features[kind])
        points = sorted({0, n, *[c % (n + 1) for c in cuts[kind]]})
        chunks[kind] = [features[kind].slice(a, b) for a, b in zip(points, points[1:]) if b > a]
    state = detector.initial_state()
    events = []
    queue = {k: list(v) for k, v in chunks.items()}
    for kind in order:  # an arbitrary interleaving of the kinds, each kind in its own order
        if kind in queue and queue[kind]:
            events += detector.process(state, kind, queue[kind].pop(0))
            state = pickle.loads(pickle.dumps(state))  # what the Spark state store does between batches
    for kind, rest in queue.items():
        for chunk in rest:
            events += detector.process(state, kind, chunk)
    return events + detector.finish(state, end_of(features))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["studio", "field", "sync"]),
       vcuts=st.lists(st.integers(0, 400), max_size=8),
       acuts=st.lists(st.integers(0, 1300), max_size=12),
       order=st.lists(st.sampled_from([VIDEO, AUDIO]), max_size=24))
def test_every_detector_gives_the_same_events_however_the_stream_is_cut(which, name, vcuts, acuts, order):
    features = stream_features(which)
    detector = CONFIG.get(name)
    whole = events_tuple(run_whole(detector, features))
    split = events_tuple(run_split(detector, features, {VIDEO: vcuts, AUDIO: acuts}, order))
    assert split == whole


def test_the_clips_used_here_do_raise_events():
    """The property above is only worth something if the streams it cuts contain defects."""
    names = set()
    for which in ("studio", "field", "sync"):
        features = stream_features(which)
        for det in CONFIG.detectors:
            names |= {e.detector for e in run_whole(det, features)}
    assert {"black", "freeze", "solid_color", "colorbars", "silence", "clipping", "loudness", "frame_drop", "blur",
            "av_sync"} <= names


def test_the_options_reference_in_the_docs_is_current():
    from pathlib import Path

    from detectors.config import options_reference_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "detectors.md").read_text()
    assert options_reference_markdown() in docs, "regenerate the Options reference section of docs/detectors.md"
