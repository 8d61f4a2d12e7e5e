"""avwatch.events_table, the one writer of anomaly_events: merge by event id, idempotent batches, one-commit
replaces, commit races retried; a replace running while stream writers merge loses nothing."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from deltalake import DeltaTable

from avwatch import events_table as et

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)


def event(stream: str, detector: str, start_s: float, end_s: float | None = None, run_id: str = "r", **details) -> dict:
    end_s = start_s + 1 if end_s is None else end_s
    return {"event_id": f"{stream}:{detector}:{int(start_s * 1000)}", "stream_id": stream, "detector": detector,
            "detector_version": "1", "start_s": start_s, "end_s": end_s,
            "start_time": T0 + timedelta(seconds=start_s), "end_time": T0 + timedelta(seconds=end_s),
            "score": 1.0, "threshold": 0.5, "severity": "major", "details": json.dumps(details), "evidence": None,
            "run_id": run_id, "detected_at": None}


def rows(location) -> dict[str, dict]:
    return {r["event_id"]: r for r in DeltaTable(location).to_pyarrow_table().to_pylist()}


def test_merge_dedupes_a_batch_and_a_replayed_batch_is_a_no_op(tmp_path):
    loc = str(tmp_path / "anomaly_events")
    ongoing = {**event("a", "stall", 5.0, 6.0), "state": "open"}
    closed = {**event("a", "stall", 5.0, 8.0), "state": "closed"}
    v = et.merge_batch(loc, [closed, ongoing, event("a", "black", 1.0)], "job-events", 0)
    assert v == DeltaTable(loc).version()
    got = rows(loc)
    assert len(got) == 2 and got["a:stall:5000"]["end_s"] == 8.0      # the closed report won
    assert et.merge_batch(loc, [event("a", "black", 1.0, 9.0)], "job-events", 0) is None  # replay: skipped
    assert DeltaTable(loc).version() == v and rows(loc)["a:black:1000"]["end_s"] == 2.0
    v2 = et.merge_batch(loc, [event("a", "black", 1.0, 3.0)], "job-events", 1)   # a new batch updates the row
    assert v2 == v + 1 and rows(loc)["a:black:1000"]["end_s"] == 3.0
    assert DeltaTable(loc).transaction_version("job-events") == 1


def test_replace_is_one_commit_and_checks_its_rows(tmp_path):
    loc = str(tmp_path / "anomaly_events")
    et.merge_batch(loc, [event("a", "black", 1.0), event("a", "black", 50.0), event("a", "blur", 2.0),
                         event("b", "black", 1.0)], "job-events", 0)
    before = DeltaTable(loc).version()
    pred = et.range_predicate(["a"], ["black"], T0, T0 + timedelta(seconds=10))
    out = et.replace(loc, [event("a", "black", 3.0, run_id="re")], pred, metadata={"run_id": "re"})
    assert out["version"] == before + 1 and out["deleted"] == 1 and out["inserted"] == 1
    assert sorted(rows(loc)) == ["a:black:3000", "a:black:50000", "a:blur:2000", "b:black:1000"]
    assert json.loads(DeltaTable(loc).history(1)[0]["userMetadata"]) == {"run_id": "re"}
    with pytest.raises(Exception, match="validation"):       # a new row outside the range is refused
        et.replace(loc, [event("b", "black", 3.0)], pred)
    assert DeltaTable(loc).version() == before + 1
    # `analyze --local`'s use: every event of the given streams
    et.replace(loc, [], et.range_predicate(streams=["a"]))
    assert sorted(rows(loc)) == ["b:black:1000"]


def test_lost_races_are_retried_then_a_clear_error(tmp_path, monkeypatch):
    from deltalake.exceptions import CommitFailedError

    loc = str(tmp_path / "anomaly_events")
    et.merge_batch(loc, [event("a", "black", 1.0)], "job-events", 0)
    monkeypatch.setattr(et, "BACKOFF_FIRST_S", 0.001)
    real_open, calls = et._open, []

    class Losing:
        def __init__(self, table):
            self.table = table

        def __getattr__(self, name):
            return getattr(self.table, name)

        def merge(self, *a, **kw):
            calls.append(1)
            raise CommitFailedError("a concurrent transaction added new data")

    monkeypatch.setattr(et, "_open", lambda *a: Losing(real_open(*a)))
    with pytest.raises(et.EventsCommitError, match="lost 4 commit races"):
        et.merge_batch(loc, [event("a", "black", 1.0, 4.0)], "job-events", 1, attempts=4)
    assert len(calls) == 4 and DeltaTable(loc).transaction_version("job-events") == 0


def test_replace_while_stream_writers_merge_loses_nothing(tmp_path):
    """Two stream-job writers merge batches (new events in and outside the replaced range, updates of
    existing events) while a re-analysis replaces a range: every commit race is retried, and the table
    ends as if the writes had run one after another, with nothing the stream writers wrote lost."""
    loc = str(tmp_path / "anomaly_events")
    detectors = ["black", "blur"]
    seed = [event(s, d, float(t)) for s in ("a", "b") for d in detectors for t in range(0, 100, 10)]
    et.merge_batch(loc, seed, "seed", 0)
    start, end = T0 + timedelta(seconds=20), T0 + timedelta(seconds=80)
    predicate = et.range_predicate(["a", "b"], ["black"], start, end)
    replacement = [event(s, "black", t + 0.5, run_id="re") for s in ("a", "b") for t in range(20, 80, 5)]

    written: dict[str, dict] = {}   # event id -> the last row a stream writer committed for it
    lock = threading.Lock()
    go = threading.Event()
    errors: list[BaseException] = []

    def stream_writer(name: str, stream: str):
        try:
            go.wait()
            for batch in range(12):
                t = 1000 + batch * 3 + (0 if name == "w1" else 1)
                batch_rows = [event(stream, "black", 20 + batch * 4 + 0.25, run_id=name),   # new, in the range
                              event(stream, "blur", t, run_id=name),                        # new, outside it
                              event(stream, "black", 30.0, 31.0 + batch, run_id=name)]      # update of a seed row
                if et.merge_batch(loc, batch_rows, f"{name}-events", batch) is not None:
                    with lock:
                        for r in batch_rows:
                            written[r["event_id"]] = r
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writers = [threading.Thread(target=stream_writer, args=(n, s)) for n, s in (("w1", "a"), ("w2", "b"))]
    for w in writers:
        w.start()
    read_version = et.table_version(loc)   # the re-analysis reads its input at this version ...
    go.set()
    time.sleep(0.15)                        # ... computes for a while, during which the writers commit ...
    out = et.replace(loc, replacement, predicate, read_version=read_version, metadata={"run_id": "re"})
    for w in writers:
        w.join()
    assert not errors, errors

    final = rows(loc)
    history = DeltaTable(loc).history()
    assert sum(1 for h in history if h["operation"] == "WRITE") == 1          # the replace: one commit
    assert DeltaTable(loc).transaction_version("w1-events") == 11            # every batch committed once
    assert DeltaTable(loc).transaction_version("w2-events") == 11
    for eid, r in written.items():                                            # nothing a writer wrote is lost
        assert eid in final, eid
        assert (final[eid]["end_s"], final[eid]["run_id"]) == (r["end_s"], r["run_id"]), eid
    kept = set(out["kept"])
    assert kept <= set(written) and kept                                      # the race did happen
    for r in replacement:                                                     # the re-analysis's rows are in
        assert final[r["event_id"]]["run_id"] == ("re" if r["event_id"] not in written else
                                                  written[r["event_id"]]["run_id"])
    in_range = lambda r: r["detector"] == "black" and start <= r["start_time"] < end  # noqa: E731
    for r in seed:                                                            # seed rows in the range: replaced
        if in_range(r) and r["event_id"] not in written:
            assert r["event_id"] not in final, r["event_id"]
        elif not in_range(r):
            assert r["event_id"] in final                                     # outside it: untouched
    expected = {r["event_id"] for r in seed if not in_range(r)} | set(written) | {r["event_id"] for r in replacement}
    assert set(final) == expected
