"""The job's reliability rules on their pure parts (no Kafka, no Spark): hostile records are refused
before anything is allocated from them, no record makes stage 1 or stage 2 raise, streams are analysed
from wherever they are met, publications are told apart, state survives configuration changes, and a
stream's state ends with it."""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from avwatch.locations import join_uri, local_path
from avwatch.samples import read_rgb_frames, real_clip, sine, write_clip
from detectors.config import DetectorConfig
from detectors.events import latest_reports
from jobs.stream_stages import Stage2, _in_publication_order, dump_state, stage1_rows
from schemas import AUDIO_SEGMENT, CONTROL, VIDEO_SEGMENT, RecordError, decode, encode
from schemas.bounds import check_record
from schemas.ipc_guard import MAX_DECODED_BYTES
from tests.pipeline_fixture import segments_of

TOPICS = {"v": "video", "a": "audio"}
RECORD = {"video": VIDEO_SEGMENT, "audio": AUDIO_SEGMENT}
MAX_BYTES = 12 << 20
BLACK = (3.0, 4.6)     # media seconds of the injected black picture
CONFIG = DetectorConfig.build(["black", "silence", "freeze"])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = read_rgb_frames(real_clip("bikes"), limit=150, size=(160, 90))
    for i in range(int(BLACK[0] * 25), int(BLACK[1] * 25)):
        frames[i] = np.zeros_like(frames[i])
    audio = sine(6.0, amplitude=0.1)
    audio[int(1.0 * 48000):int(2.5 * 48000)] = 0.0
    return write_clip(tmp_path_factory.mktemp("rel") / "clip.mkv", frames, 25, audio=audio)


def kafka_rows(segments, start_offset: int = 0, compression: str = "zstd") -> list[dict]:
    """Segments as the Kafka rows stage 1 receives (offsets in send order per topic)."""
    rows, offsets = [], {"v": start_offset, "a": start_offset}
    for s in segments:
        kind = s.kind.split(":")[-1]
        record = CONTROL if s.kind.startswith("control") else RECORD[kind]
        topic = "v" if kind == "video" else "a"
        rows.append({"key": s.stream_id.encode(), "value": encode(record, s.table, compression), "topic": topic,
                     "partition": 0, "offset": offsets[topic], "timestamp": None})
        offsets[topic] += 1
    return rows


def run_stage2(stage2: Stage2, stream_id: str, rows: list[dict], batch: int = 4, state=None):
    """Stage 1 then stage 2 in micro-batches of `batch` Kafka rows, state pickled between them as the job
    does; returns (output rows, final state)."""
    out = []
    for i in range(0, len(rows), batch):
        features = stage1_rows(rows[i:i + batch], stage2.config, TOPICS, MAX_BYTES)
        got, state = stage2.process(stream_id, features, state)
        out += got
        state = stage2.load(pickle.dumps(state))
    return out, state


def events(out, detector=None) -> list[dict]:
    """Each event's latest report (what the table holds)."""
    rows = [r for r in out if r["row_type"] == "event" and (detector is None or r["detector"] == detector)]
    return latest_reports(rows)


def dead(out) -> list[dict]:
    return [r for r in out if r["row_type"] == "dead_letter"]


def edge_kafka_rows(clip, stream_id: str, blob=None, outer_compression=None) -> list[dict]:
    """The clip's segments as an edge converter's Kafka rows; `blob(features, kind)` (the features blob
    written another way) and `outer_compression` (Arrow IPC buffer compression of the record) stand in for
    an earlier build's converter."""
    from detectors.features import edge_features_table
    from detectors.wire import from_ipc
    from schemas.codec import large_binary
    from schemas.records import FEATURE_SEGMENT

    rows, offsets = [], {"v": 0, "a": 0}
    for s in segments_of(clip, stream_id):
        kind = s.kind.split(":")[-1]
        topic = "v" if kind == "video" else "a"
        if s.kind.startswith("control"):
            value = encode(CONTROL, s.table)
        else:
            table = edge_features_table(f"{kind}_segment", s.table, CONFIG)
            if blob is not None:
                feats = from_ipc(table.column("features")[0].as_py())
                table = table.set_column(table.schema.get_field_index("features"), "features",
                                         large_binary([blob(feats, kind)]))
            if outer_compression is None:
                value = encode(FEATURE_SEGMENT, table)
            else:
                sink = pa.BufferOutputStream()
                options = pa.ipc.IpcWriteOptions(compression=outer_compression)
                table = table.cast(FEATURE_SEGMENT.schema).replace_schema_metadata(FEATURE_SEGMENT.schema.metadata)
                with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
                    writer.write_table(table)
                value = sink.getvalue().to_pybytes()
        rows.append({"key": stream_id.encode(), "value": value, "topic": topic, "partition": 0,
                     "offset": offsets[topic], "timestamp": None})
        offsets[topic] += 1
    return rows


# -- records refused before use -----------------------------------------------------------------------


def audio_table(**overrides) -> pa.Table:
    row = {"stream_id": "s", "sequence": 0, "pts_s": 0.0, "sample_rate": 48000, "channels": 2, "layout": "stereo",
           "sample_format": "s16", "n_samples": 10, "context_samples": 0, "samples": bytes(40), "source": "{}"}
    row.update(overrides)
    return pa.Table.from_pylist([row], schema=AUDIO_SEGMENT.schema)


def test_a_compression_bomb_is_refused_before_arrow_allocates_it():
    bomb = encode(AUDIO_SEGMENT, audio_table(samples=bytes(MAX_DECODED_BYTES + (1 << 20))))
    assert len(bomb) < 100_000  # a few kB on the wire ...
    with pytest.raises(RecordError, match="compression bomb"):
        decode(bomb)              # ... refused from its declared size, nothing decompressed


@pytest.mark.parametrize("overrides, message", [
    ({"source": "[]"}, "source must be a JSON object, got list"),
    ({"source": '{"live": "yes"}'}, "source.live must be bool"),
    ({"source": '{"epoch": "yesterday"}'}, "source.epoch is not an ISO 8601 time"),
    ({"sample_rate": 10}, "sample_rate must be between"),
    ({"channels": 0}, "channels must be between"),
    ({"n_samples": 11}, "samples has 40 bytes"),
    ({"sample_format": "f64"}, "unsupported audio sample format"),
    ({"sample_format": "f32"}, r"channels x 4 bytes"),            # int16 bytes declared as float32
    ({"stream_id": ""}, "stream_id must be 1 to"),
])
def test_hostile_audio_values_are_refused_with_the_field_named(overrides, message):
    _, table = decode(encode(AUDIO_SEGMENT, audio_table(**overrides)))
    with pytest.raises(RecordError, match=message):
        check_record("audio_segment", table)


def test_hostile_video_values_are_refused(clip):
    video = next(s for s in segments_of(clip, "v") if s.kind == "video")
    table = video.table
    wide = table.set_column(table.schema.get_field_index("width"), "width",
                            pa.array([100_000] * table.num_rows, pa.int32()))
    with pytest.raises(RecordError, match="width must be between"):
        check_record("video_segment", wide)
    short = table.set_column(table.schema.get_field_index("height"), "height",
                             pa.array([table.column("height")[0].as_py() - 1] * table.num_rows, pa.int32()))
    with pytest.raises(RecordError, match="luma plane is not"):
        check_record("video_segment", short)


def mutated_rows(good: list[bytes], n: int, seed: int, ways: tuple[str, ...], key: bytes) -> list[dict]:
    """n Kafka rows, each a good record damaged in one of `ways`, taken in turn: "flip" (1-8 bit flips
    anywhere), "cut" (truncated), "splice" (another record's tail), "junk" (random bytes), "metadata" (a
    byte of the first 600: sizes, counts, types), "blob_size" (a byte of the features blob's size)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        base = bytearray(rng.choice(good))
        how = ways[i % len(ways)]
        if how == "flip":
            for _ in range(rng.randint(1, 8)):
                base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
        elif how == "cut":
            base = base[:rng.randrange(len(base))]
        elif how == "splice":
            other = rng.choice(good)
            cut = rng.randrange(min(len(base), len(other)))
            base = base[:cut] + other[cut:]
        elif how == "junk":
            base = bytearray(rng.randbytes(rng.randint(0, 5000)))
        elif how == "metadata":
            base[rng.randrange(max(1, min(len(base), 600)))] = rng.randrange(256)
        else:  # blob_size
            base[bytes(base).find(b"AVF2") + 4 + rng.randrange(8)] = rng.randrange(256)
        rows.append({"key": key, "value": bytes(base), "topic": rng.choice("va"), "partition": 0,
                     "offset": i, "timestamp": None})
    return rows


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_stage1_never_raises_and_dead_letters_every_mutation_it_cannot_read(clip, compression):
    """1,000 mutated real records (bit flips, truncation, splices, foreign bytes): each comes back as a
    dead letter with a reason and a bounded excerpt, or as a segment whose features are well formed.
    Uncompressed records (`--compression none`) have no codec to catch a damaged offset: Arrow's validation
    must (without it such a record aborted the process)."""
    good = [r["value"] for r in kafka_rows(segments_of(clip, "fz"), compression=compression)]
    rows = mutated_rows(good, 1000, 11, ("flip", "cut", "splice", "junk", "metadata"), b"fz")
    out = stage1_rows(rows, CONFIG, TOPICS, MAX_BYTES)
    assert len(out) == len(rows)
    bad = [r for r in out if r.get("reason")]
    assert all(r["reason"].strip() and len(r["value"]) <= 4096 for r in bad)
    accepted = {r["offset"] for r in out if not r.get("reason")}
    assert len(accepted) < len(rows) / 2     # most mutations break the record ...
    for row in rows:                         # ... and those accepted really are valid records
        if row["offset"] in accepted:
            record_type, table = decode(row["value"])
            check_record(record_type.name, table)
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False)
    got, _ = stage2.process("fz", out, None)  # what passed stage 1 is analysed without an exception
    assert len(dead(got)) >= len(bad)


# -- streams met mid-way -------------------------------------------------------------------------------


def test_a_stream_met_mid_way_is_analysed_from_the_first_segment_seen(clip):
    segments = [s for s in segments_of(clip, "mid") if s.sequence >= 2]  # the first 2 s expired
    out, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "mid", kafka_rows(segments))
    black = events(out, "black")
    assert len(black) == 1 and abs(black[0]["start_s"] - BLACK[0]) < 0.05 and abs(black[0]["end_s"] - BLACK[1]) < 0.05
    cold = json.loads(black[0]["details"])["cold_start"]
    assert "first seen at segment 2" in cold["reason"] and cold["from_s"] == pytest.approx(2.0, abs=0.05)
    assert not dead(out)


def test_a_dead_lettered_first_segment_does_not_stall_the_stream(clip):
    rows = kafka_rows(segments_of(clip, "dl"))
    first_video = next(r for r in rows if r["topic"] == "v")
    first_video["value"] = first_video["value"][:100]   # segment 0 is unreadable
    out, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "dl", rows)
    assert [d["offset"] for d in dead(out)] == [0]
    assert len(events(out, "black")) == 1 and len(events(out, "silence")) == 1


def test_segments_from_before_the_join_are_dead_lettered_as_late(clip):
    segments = segments_of(clip, "lj")
    video = [s for s in segments if s.kind == "video"]
    rest = [s for s in segments if s.kind != "video"]
    rows = kafka_rows([s for s in video if s.sequence >= 1] + rest + [video[0]])
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False)
    out, _ = run_stage2(stage2, "lj", rows[:len(rows) - 1], batch=100)
    out2, _ = stage2.process("lj", stage1_rows(rows[-1:], CONFIG, TOPICS, MAX_BYTES), _)
    assert [d["reason"][:20] for d in dead(out2)] == ["late video segment 0"]


# -- publications, configuration changes ---------------------------------------------------------------


def test_a_republished_stream_keeps_the_first_publications_events(clip):
    first = segments_of(clip, "re")
    second = segments_of(clip, "re")
    pub = lambda segs: json.loads(segs[0].table.column("source")[0].as_py())["publish_id"]  # noqa: E731
    assert pub(first) != pub(second)
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False)
    rows1 = kafka_rows(first)
    rows2 = kafka_rows(second, start_offset=1000)
    out, state = run_stage2(stage2, "re", rows1)
    out2, state = run_stage2(stage2, "re", rows2, state=state)
    ids1 = {r["event_id"] for r in events(out)}
    ids2 = {r["event_id"] for r in events(out2)}
    assert ids1 and len(ids1) == len(ids2) and not ids1 & ids2
    # a straggler of the first publication (before the second's first record on its partition) is refused
    late, _ = stage2.process("re", stage1_rows([rows1[5]], CONFIG, TOPICS, MAX_BYTES), state)
    assert "earlier publication" in dead(late)[0]["reason"]


def test_adding_and_removing_detectors_across_a_restart_keeps_the_stream_running(clip):
    rows = kafka_rows(segments_of(clip, "cfg"))
    half = len(rows) // 2
    before = Stage2(DetectorConfig.build(["silence", "freeze"]), "t", 5.0, keep_features=False)
    out, state = run_stage2(before, "cfg", rows[:half])
    after = Stage2(DetectorConfig.build(["black", "silence"]), "t", 5.0, keep_features=False)
    state = after.load(pickle.dumps(state))            # the restarted job reads the old state
    assert set(state["analyzer"]["detectors"]) == {"black", "silence"}
    out2, _ = run_stage2(after, "cfg", rows[half:], state=state)
    black = events(out2, "black")
    assert len(black) == 1 and "added to the job" in json.loads(black[0]["details"])["cold_start"]["reason"]
    assert not dead(out2) and not events(out2, "freeze")

    changed = Stage2(DetectorConfig.build(["black", "silence"], {"black": {"min_duration_s": 0.5}}), "t", 5.0, False)
    state = changed.load(pickle.dumps(state))
    assert "changed" in state["analyzer"]["cold"]["black"]["reason"]


def test_a_layout_1_state_is_migrated(clip):
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False)
    analyzer = stage2.analyzer.initial_state()
    for key in ("version", "joined", "cold", "publication", "detector_keys"):
        del analyzer[key]
    analyzer["next"] = {"video": 0, "audio": 0}
    old = {"analyzer": analyzer, "publish_id": "p1", "last_arrival": None, "live": False}
    state = stage2.load(pickle.dumps(old))
    assert state["analyzer"]["publication"] == "p1" and state["layout"] == 2
    out, _ = run_stage2(stage2, "m", kafka_rows(segments_of(clip, "m")), state=state)
    assert len(events(out, "black")) == 1


def test_a_segment_that_breaks_a_detector_is_dead_lettered_and_the_stream_goes_on(clip):
    rows = kafka_rows(segments_of(clip, "brk"))
    features = stage1_rows(rows, CONFIG, TOPICS, MAX_BYTES)
    from detectors.wire import from_ipc, to_ipc

    victim = next(r for r in features if r["kind"] == "video" and r["sequence"] == 1)
    broken = from_ipc(victim["features"])
    del broken["black_frac"]                         # what a buggy edge converter could send
    victim["features"] = to_ipc(broken)
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False)
    out, state = stage2.process("brk", features, None)
    reasons = [d["reason"] for d in dead(out)]
    assert len(reasons) == 1 and reasons[0].startswith("analysis failed on video segment 1: KeyError")
    assert len(events(out, "black")) == 1 and len(events(out, "silence")) == 1


@pytest.mark.parametrize("encoded", [True, False], ids=["features-blob", "in-process-segment"])
def test_a_failed_segment_in_a_batch_leaves_the_state_as_if_it_came_alone(clip, encoded):
    """The analyzer's state is saved once per call, and a failure rewinds to it and replays the rows before
    the failed one: the outcome must equal a run that handed the rows over one call at a time."""
    # segments whose features lack a column (black's or silence's stage 2 raises on them), one of each kind
    victims = {("video", 2): "black_frac", ("audio", 4): "silence_peak"}

    def strip(out):  # what differs between runs by design: the wall clock
        return [{k: v for k, v in r.items() if k not in ("detected_at", "alert")} for r in out]

    every = DetectorConfig.build()  # every detector: none may change its input in place (it is analysed again)
    rows = kafka_rows(segments_of(clip, "rw"))
    features = stage1_rows(rows, every, TOPICS, MAX_BYTES, encode=encoded)
    for victim in features:
        column = victims.get((victim["kind"], victim["sequence"]))
        if column is not None and encoded:
            from detectors.wire import from_ipc, to_ipc
            broken = from_ipc(victim["features"])
            del broken[column]
            victim["features"] = to_ipc(broken)
        elif column is not None:
            del victim["segment"].features[column]
    stage2 = Stage2(every, "t", 0.5, keep_features=False)  # a gap is given up after 0.5 s of media
    ordered = _in_publication_order(features)  # the order one call takes them in
    # two calls as the job makes them: the second from the state store's blob, which a failure goes back to
    together, state_together = stage2.process("rw", ordered[:3], None, now=0.0)
    blob = dump_state(state_together)
    got, state_together = stage2.process("rw", ordered[3:], stage2.load(blob), now=0.0, saved=blob)
    together += got
    alone, state_alone = [], None
    for row in ordered:
        got, state_alone = stage2.process("rw", [row], state_alone, now=0.0)
        alone += got
    assert len(dead(together)) == 2
    assert strip(together) == strip(alone)
    assert pickle.dumps(state_together["analyzer"]) == pickle.dumps(state_alone["analyzer"])


# -- state that ends -----------------------------------------------------------------------------------


def test_an_ended_stream_leaves_a_tombstone_that_expires(clip):
    rows = kafka_rows(segments_of(clip, "end"))
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False, ended_ttl_s=60.0)
    features = stage1_rows(rows, CONFIG, TOPICS, MAX_BYTES)
    out, state = stage2.process("end", features[:-1], None, now=1000.0)
    assert state["analyzer"] is not None
    out, state = stage2.process("end", features[-1:], state, now=1000.0)
    assert state["analyzer"] is None and len(pickle.dumps(state)) < 1000
    late, state = stage2.process("end", stage1_rows(rows[3:4], CONFIG, TOPICS, MAX_BYTES), state, now=1001.0)
    assert "after the end of its stream" in dead(late)[0]["reason"]
    assert stage2.on_timeout("end", state, 10.0, now=1030.0)[1] is not None
    assert stage2.on_timeout("end", state, 10.0, now=1061.5)[1] is None


def test_a_vanished_live_stream_is_closed_and_removed(clip):
    segments = [s for s in segments_of(clip, "gone") if not s.kind.startswith("control")]  # no end of stream
    rows = kafka_rows(segments)
    features = stage1_rows(rows, CONFIG, TOPICS, MAX_BYTES)
    for r in features:
        r["source"] = json.dumps({**json.loads(r["source"]), "live": True})
    stage2 = Stage2(CONFIG, "t", 5.0, keep_features=False, idle_ttl_s=120.0)
    out, state = stage2.process("gone", features, None, now=0.0)
    rows_t, kept = stage2.on_timeout("gone", state, 10.0, now=60.0)
    assert kept is not None
    closing, removed = stage2.on_timeout("gone", kept, 10.0, now=130.0)
    assert removed is None
    assert {r["detector"] for r in events(out + rows_t + closing)} >= {"black", "silence"}


def test_locations_are_joined_as_uris():
    assert join_uri("s3a://bucket/x", "_checkpoints", "stream") == "s3a://bucket/x/_checkpoints/stream"
    assert join_uri("file:///tmp/sink/", "anomaly_events") == "file:///tmp/sink/anomaly_events"
    assert join_uri("/data/sink", "anomaly_events") == "/data/sink/anomaly_events"
    assert local_path("file:///tmp/a%20b") == "/tmp/a b" and local_path("s3a://b/x") is None


def test_event_ids_tell_publications_apart_and_repeat_within_one():
    from detectors.events import event_id

    one = event_id("cam", "black", "", 4.0, "pub-1")
    assert one == event_id("cam", "black", "", 4.0004, "pub-1")       # same publication, same ms: same id
    assert one != event_id("cam", "black", "", 4.0, "pub-2")          # a republished stream id: a new id
    assert one != event_id("cam", "black", "channel 1", 4.0, "pub-1")  # another check: another event
    assert event_id("cam", "black", "", 4.0) != one                    # no publication known: its own id


def test_sink_tables_are_found_under_uris(tmp_path):
    from avwatch.sink import table_path

    assert table_path(f"file://{tmp_path}", "anomaly_events") == tmp_path / "anomaly_events"
    assert table_path("s3a://bucket/sink", "anomaly_events") == "s3a://bucket/sink/anomaly_events"


# -- the job's one per-stream step (stage 1 and stage 2 in one call) -------------------------------------


class _GroupState:
    """What applyInPandasWithState hands the step: the saved blob, its timeout."""

    def __init__(self):
        self.blob, self.timeout_ms, self.hasTimedOut = None, None, False

    @property
    def exists(self):
        return self.blob is not None

    @property
    def get(self):
        return (self.blob,)

    def update(self, value):
        self.blob = value[0]

    def remove(self):
        self.blob = None

    def setTimeoutDuration(self, ms):
        self.timeout_ms = ms


def test_the_one_step_finds_what_the_two_stage_plan_finds(clip):
    """StreamStep (the streaming job) decodes and analyses in one call, the features never encoded; the
    rows it writes equal those of stage 1 then stage 2 with Arrow IPC between them (re-analysis's plan)."""
    import pandas as pd

    from jobs.stream_stages import StreamStep, load_state

    rows = kafka_rows(segments_of(clip, "one"))
    two_step, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "one", rows, batch=3)
    step = StreamStep(Stage2(CONFIG, "t", 5.0, keep_features=False), TOPICS, MAX_BYTES, 10.0, finite=False)
    group, out, sizes = _GroupState(), [], []
    for i in range(0, len(rows), 3):
        frame = pd.DataFrame([{**r, "stream_id": "one"} for r in rows[i:i + 3]])
        for part in step(("one",), iter([frame]), group):
            out += part.to_dict(orient="records")
        sizes.append((len(group.blob), len(pickle.dumps(load_state(group.blob), protocol=5))))
    keys = ("detector", "start_s", "end_s", "state")
    assert events(out) and ([tuple(e[k] for k in keys) for e in events(out)]
                            == [tuple(e[k] for k in keys) for e in events(two_step)])
    status = [r for r in out if r["row_type"] == "status"]
    assert status and status[-1]["state_bytes"] == len(group.blob)
    saved, raw = max(sizes)                # the live stream's state, before its end left a tombstone
    assert saved < raw                     # saved compressed
    assert group.timeout_ms == 300 * 1000       # the ended stream's tombstone waits for the ended-state TTL


def test_a_key_of_nothing_but_bad_records_gets_no_state():
    """Records that cannot be read are dead letters; they create no state for the key they carry (a
    garbage key must not hold state until the idle TTL)."""
    from jobs.stream_stages import StreamStep

    step = StreamStep(Stage2(CONFIG, "t", 5.0, keep_features=False), TOPICS, MAX_BYTES, 10.0, finite=False)
    rows = [{"key": b"\xff\xfe", "value": b"not arrow", "topic": "v", "partition": 0, "offset": k, "timestamp": None}
            for k in range(3)]
    out, state = step.run("\ufffd\ufffd", rows, None)
    assert state is None and len(dead(out)) == 3 and all(r["reason"] for r in dead(out))


def test_saved_states_of_earlier_builds_still_load():
    """A checkpoint written before states were compressed (plain pickles) is read as it is."""
    from jobs.stream_stages import dump_state, load_state

    state = {"layout": 2, "analyzer": None, "ended": "p1", "hist": np.zeros(800)}
    assert load_state(pickle.dumps(state, protocol=5))["ended"] == "p1"
    blob = dump_state(state)
    assert blob[:4] == b"AVZ1" and load_state(blob)["ended"] == "p1" and len(blob) < 1000


@pytest.mark.parametrize("dropped", ["freeze_cell_means", "flat_frac"])
def test_edge_records_of_an_earlier_converter_are_analysed_without_the_columns_added_since(clip, dropped):
    """An edge converter of an earlier build does not send a stage-1 column a detector added later
    (freeze_cell_means, freeze 1.4): its records are analysed, the column NaN (freeze goes without its drift
    test), and the stream's events are the same. A column that was always there (flat_frac) missing is a
    broken converter: a dead letter naming the column."""
    from detectors.wire import to_ipc

    def edge_rows(drop: str | None):
        def without(feats, kind):
            if drop and kind == "video":
                del feats[drop]
            return to_ipc(feats)
        return edge_kafka_rows(clip, "edge", blob=without)

    whole, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "edge", edge_rows(None))
    older, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "edge", edge_rows(dropped))
    key = lambda rows: [(e["detector"], e["start_s"], e["end_s"]) for e in events(rows)]  # noqa: E731
    assert not dead(whole) and ("black", BLACK[0]) in [(d, a) for d, a, _ in key(whole)]
    if dropped == "freeze_cell_means":
        assert not dead(older) and key(older) == key(whole)
    else:
        reasons = {d["reason"] for d in dead(older)}
        assert reasons and all(f"lack column(s) {dropped}" in r for r in reasons)


# -- the features wire (detectors/wire.py) ----------------------------------------------------------------

def earlier_blob(feats) -> bytes:
    """A features blob as builds before wire AVF2 wrote it: an IPC stream with lz4-compressed buffers."""
    table = feats.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_edge_records_of_an_earlier_wire_give_the_same_features_and_events(clip):
    """This build writes a features blob as one zstd frame and the record around it uncompressed; an edge
    converter of an earlier build (lz4 buffers inside a zstd record) is still read, to the same values."""
    from detectors.wire import from_ipc

    now = edge_kafka_rows(clip, "edge")
    before = edge_kafka_rows(clip, "edge", blob=lambda feats, _kind: earlier_blob(feats), outer_compression="zstd")
    assert all(decode(r["value"])[1].column("features")[0].as_py()[:4] == b"AVF2" for r in now if r["topic"] == "v"
               and decode(r["value"])[0].name == "feature_segment")
    for a, b in zip(stage1_rows(now, CONFIG, TOPICS, MAX_BYTES), stage1_rows(before, CONFIG, TOPICS, MAX_BYTES)):
        assert a["features"] != b["features"] or a["features"] is None   # two wires ...
        if a["features"] is not None:                                      # ... one table
            fa, fb = from_ipc(a["features"]), from_ipc(b["features"])
            assert fa.keys() == fb.keys()
            for name in fa:
                np.testing.assert_array_equal(fa[name], fb[name])
    ours, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "edge", now)
    theirs, _ = run_stage2(Stage2(CONFIG, "t", 5.0, keep_features=False), "edge", before)
    key = lambda rows: [(e["detector"], e["start_s"], e["end_s"], e["score"]) for e in events(rows)]  # noqa: E731
    assert not dead(ours) and not dead(theirs) and key(ours) == key(theirs)
    assert ("black", BLACK[0]) in [(d, a) for d, a, _, _ in key(ours)]


def test_a_features_blob_out_of_bounds_or_damaged_is_refused_with_its_reason(clip):
    from detectors.wire import from_ipc, to_ipc
    from schemas.ipc_guard import GuardError

    good = next(r for r in stage1_rows(edge_kafka_rows(clip, "edge"), CONFIG, TOPICS, MAX_BYTES)
                if r["features"] is not None and r["kind"] == "video")["features"]
    assert good[:4] == b"AVF2"
    assert len(from_ipc(good)["t"]) > 0
    bomb = b"AVF2" + (MAX_DECODED_BYTES + 1).to_bytes(8, "little") + good[12:]
    with pytest.raises(GuardError, match="compression bomb"):
        from_ipc(bomb)                # refused from its declared size, nothing decompressed
    size = int.from_bytes(good[4:12], "little")
    for wrong in (b"AVF2" + (size - 1).to_bytes(8, "little") + good[12:], good[:len(good) // 2], good[:7]):
        with pytest.raises(GuardError, match="features blob"):
            from_ipc(wrong)
    assert to_ipc(from_ipc(good)) == good  # deterministic: the same table, the same bytes


def test_stage1_dead_letters_every_mutated_edge_record_it_cannot_read(clip):
    """500 mutated edge records (bit flips anywhere, the blob's bytes most of all, truncation, a damaged
    size): never an exception; each is a dead letter with a reason or a segment whose features pass the
    checks."""
    good = [r["value"] for r in edge_kafka_rows(clip, "fe") if decode(r["value"])[0].name == "feature_segment"]
    rows = mutated_rows(good, 500, 5, ("flip", "cut", "blob_size"), b"fe")
    out = stage1_rows(rows, CONFIG, TOPICS, MAX_BYTES)
    assert len(out) == len(rows)
    bad = [r for r in out if r.get("reason")]
    assert len(bad) > len(rows) / 2 and all(r["reason"].strip() for r in bad)
    got, _ = Stage2(CONFIG, "t", 5.0, keep_features=False).process("fe", out, None)
    assert len(dead(got)) >= len(bad)
