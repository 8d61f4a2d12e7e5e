"""Window-split invariance for every registered detector, each on a stream where it fires, heartbeats
included: a stream's feature rows fed in one piece, or cut at arbitrary points into windows (video and
audio interleaved in any order between heartbeats, the state carried between windows by pickle, as the
Spark state store does, or as plain JSON through State.to_dict/from_dict), give identical events."""
from __future__ import annotations

import functools
import json
import math
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avwatch.convert.decode import MediaDecoder
from avwatch.convert.segments import Segmenter
from avwatch.samples import (Injected, SampleClip, damaged_feed, field_camera, read_rgb_frames, real_clip, sine,
                             studio_feed, sync_test, write_clip)
from detectors import alarms
from detectors.alarms import AlarmPolicy
from detectors.base import AUDIO, CLOSED, ONGOING, OPEN, VIDEO, RunDetector, rows_end
from detectors.config import DetectorConfig
from detectors.features import Features, stage1
from detectors.registry import NAMES

CONFIG = DetectorConfig.build(list(NAMES))  # every detector, the optional ones too


def hiss_feed(folder: Path) -> SampleClip:
    """Programme (a -26 dBFS tone) that drops to a -56 dBFS hiss for 11 s: dead air that is not silent."""
    rng = np.random.default_rng(9)
    frames = read_rgb_frames(real_clip("bikes"), limit=16 * 25 // 10, size=(160, 90))
    frames = (frames * 10)[:16 * 25]
    audio = sine(16.0, freq=440.0, amplitude=0.05)
    audio[3 * 48000:14 * 48000] = (rng.standard_normal((11 * 48000, 2)) * 10 ** (-56 / 20)).astype(np.float32)
    path = write_clip(folder / "hiss_feed.mkv", frames, 25, audio=audio)
    return SampleClip("hiss_feed", path, [Injected("low_level", 3.0, 14.0, "programme lost, hiss left")])


def splice_feed(folder: Path) -> SampleClip:
    from tests.test_format_change import spliced_feed

    return spliced_feed(folder)


def transport_feed(folder: Path) -> SampleClip:
    from tests.ts_media import damaged_ts

    return damaged_ts(folder)


def starved_feed(folder: Path) -> SampleClip:
    from tests import ts_media as tm

    clean = tm.make_ts(folder / "long.ts", seed=11, seconds=22.0, bitrate=1_000_000)
    pkts = tm.packets(clean)
    start, end = tm.starve_pid(pkts, tm.timeline(clean), 14.0, 4.0)
    return SampleClip("starved", tm.write_packets(folder / "starved.ts", pkts),
                      [Injected("bitrate", start, end, "video PID starved")])


def mid_block_feed(folder: Path) -> SampleClip:
    """Silence and clipped bursts that begin and end inside 10 ms audio blocks (a run's edges to the sample)."""
    frames = read_rgb_frames(real_clip("bikes"), limit=8 * 25, size=(160, 90))
    audio = sine(8.0, freq=440.0, amplitude=0.3)
    audio[int(1.2345 * 48000):int(4.5678 * 48000)] = 0.0
    for k in range(12):                      # 12 clipped bursts of 9 samples, each inside one block
        at = int((5.0037 + 0.083 * k) * 48000)
        audio[at:at + 9] = 1.0 if k % 2 else -1.0
    path = write_clip(folder / "mid_block.mkv", frames, 25, audio=audio)
    return SampleClip("mid_block", path, [Injected("silence", 1.2345, 4.5678, "mid-block edges")])


CLIPS = {"studio": studio_feed, "field": field_camera, "sync": sync_test, "damaged": damaged_feed,
         "hiss": hiss_feed, "splice": splice_feed, "transport": transport_feed, "starved": starved_feed,
         "mid_block": mid_block_feed}
# The demo clip on which each detector fires (stall: on every clip, through the heartbeats after its end).
CLIP_OF = {"black": "studio", "freeze": "studio", "solid_color": "studio", "colorbars": "studio",
           "silence": "studio", "clipping": "studio", "stall": "studio", "frame_drop": "field", "blur": "field",
           "av_sync": "sync", "loudness": "sync", "blockiness": "damaged",
           "channel_loss": "studio", "phase": "studio", "audio_gap": "field", "low_level": "hiss",
           "decode_error": "damaged", "format_change": "splice", "transport": "transport", "bitrate": "starved"}
HANG_S = 3.5  # the source hangs at its end: heartbeats go on this long after the last media


@functools.lru_cache(maxsize=None)
def stream_features(which: str) -> dict[str, Features]:
    """The concatenated stage-1 features per kind of one demo clip, through the real decoder/segmenter."""
    clip = CLIPS[which](Path(tempfile.mkdtemp(prefix="split-")))
    decoder = MediaDecoder(str(clip.path))
    seg = Segmenter(clip.stream_id, decoder.info)
    parts = {VIDEO: [], AUDIO: []}
    segments = [s for item in decoder.items() for s in seg.add(item)] + seg.finish()
    for s in segments:
        if s.kind in (VIDEO, AUDIO):
            record = "video_segment" if s.kind == VIDEO else "audio_segment"
            parts[s.kind].append(stage1(record, s.table, CONFIG).features)
    return {k: Features.concat(v) for k, v in parts.items()}


def media_end(features: dict[str, Features]) -> float:
    return max(float(f["t"][-1]) for f in features.values() if len(f)) + 0.04


def heartbeats(features: dict[str, Features]) -> list[float]:
    """A heartbeat every media second (the job's timer), then the hang after the last media."""
    end = media_end(features)
    return [float(s) for s in range(1, math.ceil(end))] + [end + k for k in (1.0, 2.0, HANG_S)]


def epochs(features: dict[str, Features], kind: str) -> list[tuple[int, int]]:
    """Row ranges of `kind` between consecutive heartbeats (a heartbeat follows the media before it)."""
    t = features[kind]["t"] if len(features[kind]) else []
    bounds = [0] + [int((t < h).sum()) if len(t) else 0 for h in heartbeats(features)] + [len(t)]
    return list(zip(bounds, bounds[1:]))


ALARMS = AlarmPolicy(update_s=2.0)


def events_tuple(events) -> list[tuple]:
    """Closed events in full; open alarms by identity and end (their score is what was seen when they
    were raised); ongoing updates left out (how often they come depends on the cuts)."""
    return sorted((e.state, e.detector, e.check, round(e.start_s, 6), round(e.end_s, 6))
                  + ((round(float(e.score), 6), e.details_json()) if e.state == CLOSED else ())
                  for e in events if e.state != ONGOING)


def carry(detector, state, how: int):
    """What happens to the state between windows: pickled (the Spark state store) or as plain JSON."""
    if how % 2:
        return detector.State.from_dict(json.loads(json.dumps(state.to_dict())))
    return pickle.loads(pickle.dumps(state))


def run(detector, features, cuts: dict[str, list[int]] | None = None, order: list[str] = ()) -> list:
    """Stage 2 over the stream; without cuts, each kind's rows between two heartbeats in one piece."""
    hbs = heartbeats(features)
    spans = {kind: epochs(features, kind) for kind in detector.inputs}
    state = detector.initial_state()
    book, seen = alarms.new_book(), {}
    events, windows, order = [], 0, list(order)

    def step(found, after_processing=True):  # the analyzer's alarm lifecycle (detectors/alarms.py)
        return alarms.lifecycle(book, detector, found, detector.open_events(state) if after_processing else None,
                                max(seen.values()) if seen else None, ALARMS)

    for i in range(len(hbs) + 1):
        queue = {}
        for kind in detector.inputs:
            a, b = spans[kind][i]
            n = len(features[kind])
            points = sorted({a, b, *[c % (n + 1) for c in (cuts or {}).get(kind, []) if a < c % (n + 1) < b]})
            queue[kind] = [features[kind].slice(x, y) for x, y in zip(points, points[1:]) if y > x]
        while any(queue.values()):
            kind = order.pop(0) if order else next(k for k in detector.inputs if queue[k])
            if queue.get(kind):
                piece = queue[kind].pop(0)
                seen[kind] = rows_end(kind, piece)
                events += step(detector.process(state, kind, piece))
                if cuts is not None:
                    windows += 1
                    state = carry(detector, state, windows)
        if i < len(hbs):
            events += step(detector.heartbeat(state, hbs[i]), after_processing=False)
    return events + step(detector.finish(state, hbs[-1]))


def test_every_detector_has_its_stream():
    assert set(CLIP_OF) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vcuts=st.lists(st.integers(0, 400), max_size=8),
       acuts=st.lists(st.integers(0, 1300), max_size=12),
       order=st.lists(st.sampled_from([VIDEO, AUDIO]), max_size=24))
def test_every_detector_fires_and_gives_the_same_events_however_the_stream_is_cut(name, vcuts, acuts, order):
    features = stream_features(CLIP_OF[name])
    detector = CONFIG.get(name)
    whole = events_tuple(run(detector, features))
    assert whole and {e[1] for e in whole} == {name}, f"{name} must fire on the {CLIP_OF[name]} clip"
    split = events_tuple(run(detector, features, {VIDEO: vcuts, AUDIO: acuts}, order))
    assert split == whole


@pytest.mark.parametrize("name", NAMES)
def test_every_alarm_raised_is_cleared_and_long_defects_are_raised_before_they_end(name):
    detector = CONFIG.get(name)
    events = run(detector, stream_features(CLIP_OF[name]))
    closed = [e for e in events if e.state == CLOSED]
    raised = [e for e in events if e.state == OPEN]
    assert closed
    key = lambda e: (e.check, round(e.start_s, 6))  # noqa: E731  (the event id's parts)
    assert {key(e) for e in raised} <= {key(e) for e in closed}          # every alarm raised is cleared
    cleared = {}
    for i, e in enumerate(events):
        if e.state == CLOSED:
            cleared.setdefault(key(e), i)
    # and stays cleared: nothing of an alarm comes after its close (the end of a stream included)
    assert not [e for i, e in enumerate(events) if e.state != CLOSED and i > cleared.get(key(e), len(events))]
    for e in closed:
        need = detector.reportable_after(e)
        if need is not None and e.end_s - e.start_s >= need:              # an open phase: raised first,
            opened = [o for o in raised if key(o) == key(e)]              # at start + minimum duration
            assert len(opened) == 1 and opened[0].end_s == pytest.approx(e.start_s + need)
            assert events.index(opened[0]) < events.index(e)


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_state_round_trips_through_plain_types(name):
    """A detector's state after a whole stream, as JSON and back, is the same state."""
    features = stream_features(CLIP_OF[name])
    detector = CONFIG.get(name)
    state = detector.initial_state()
    for kind in detector.inputs:
        detector.process(state, kind, features[kind])
    text = json.dumps(state.to_dict())
    back = detector.State.from_dict(json.loads(text))
    assert type(back) is type(state) and json.dumps(back.to_dict()) == text


def test_the_options_reference_in_the_docs_is_current():
    from detectors.config import options_reference_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "detectors.md").read_text()
    assert options_reference_markdown() in docs, "regenerate the Options reference section of docs/detectors.md"


RUN_DETECTORS = [n for n in NAMES if isinstance(CONFIG.get(n), RunDetector)]


@pytest.mark.parametrize("name,clip", [(n, CLIP_OF[n]) for n in RUN_DETECTORS] +
                         [("silence", "mid_block"), ("clipping", "mid_block")])
def test_skipping_quiet_rows_changes_nothing(name, clip, monkeypatch):
    """RunDetector.process skips rows on which nothing can happen; walking every row gives the same events
    (each alarm and each closed event with its details) and leaves the same state."""
    features = stream_features(clip)

    def events_and_state():
        detector = CONFIG.get(name)
        state = detector.initial_state()
        for kind in detector.inputs:
            if len(features[kind]):
                detector.process(state, kind, features[kind])
        return events_tuple(run(detector, features)), pickle.dumps(state)

    skipped = events_and_state()
    assert skipped[0]
    monkeypatch.setattr(RunDetector, "_next_live_rows", lambda self, rows, scores, edges: np.arange(len(rows["t"])))
    assert events_and_state() == skipped   # the next row looked at is always the next one
