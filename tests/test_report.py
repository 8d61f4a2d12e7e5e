"""`avwatch report`: a self-contained HTML page of a real sink, rendered by headless Chromium.

The sink comes from the `events_sink` fixture (tests/pipeline_fixture.py: the suite's pipeline run): the demo clips, real footage with
defects injected at known times, analysed in-process; redirect it to run these tests on another sink.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from avwatch.errors import AvwatchError
from avwatch.report import write_report
from avwatch.sink import read_events, write_events_replacing

pytestmark = [pytest.mark.spark, pytest.mark.kafka]  # the sink is the suite's pipeline run

HOSTILE = '<script>alert("x")</script> & \'ü\' 電視 $x^2$ 🎬 </td>'


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed: run `make test` or scripts/install-system-deps.sh")
    return exe


def run_chromium(page: Path, tmp: Path, *action: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, isolated: own profile, no background services, every network
    request through a dead proxy (nothing leaves the machine), and a net log of what it asked for."""
    profile = tmp / f"profile-{time.monotonic_ns()}"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
           f"--log-net-log={tmp / 'net.json'}", "--window-size=1280,2000", *action, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def page_requests(net_log: Path) -> list[str]:
    """URLs the page (not the browser's own services) asked the network for, from Chromium's net log."""
    data = json.loads(net_log.read_text())
    kinds = {v: k for k, v in data["constants"]["logEventTypes"].items()}
    out = []
    for event in data["events"]:
        params = event.get("params") or {}
        if kinds.get(event["type"]) == "URL_REQUEST_START_JOB" and \
                str(params.get("network_isolation_key", "")).startswith("file://"):
            out.append(params.get("url", "?"))
    return out


def page_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log about the page: console messages, script errors, failed loads."""
    marks = ("CONSOLE", "Uncaught", "net::ERR", "Failed to load", "Refused to", "Not allowed to load")
    return [line for line in stderr.splitlines() if any(m in line for m in marks)]


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', page)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    head, _, payload = uri.partition(",")
    assert head.startswith("data:image/") and head.endswith(";base64"), head[:60]
    return head[5:-7], base64.b64decode(payload)


@pytest.fixture(scope="module")
def events(events_sink):
    return read_events(events_sink)


@pytest.fixture(scope="module")
def report(events_sink, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    path = write_report(events_sink, out)
    return {"path": Path(path), "html": Path(path).read_text(encoding="utf-8")}


def test_report_is_self_contained(report):
    page = report["html"]
    assert not re.search(r'''(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//''', page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//|@import", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<iframe" not in page.lower()
    assert all(src.startswith("data:image/") for src in image_sources(page))
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))


def test_every_event_is_listed_with_its_evidence(report, events, injected):
    page = report["html"]
    assert len(events) > 0
    rows = re.findall(r'<tr id="event-\d+">(.*?)</tr>', page, re.S)
    assert len(rows) == len(events)
    by_id = {re.search(r'<div class="id"[^>]*>([^<]*)</div>', r).group(1): r for r in rows}
    assert set(by_id) == {html.escape(e) for e in events["event_id"]}
    for event in events.to_dict(orient="records"):
        row = by_id[html.escape(event["event_id"])]
        assert html.escape(event["stream_id"]) in row and f"<b>{html.escape(event['detector'])}</b>" in row
        uris = image_sources(row)
        if event["evidence"] is None:
            assert not uris
        else:
            mime, data = decode_data_uri(uris[0])
            assert data == event["evidence"] and mime == "image/jpeg"
            assert Image.open(io.BytesIO(data)).size[0] == 64
    for stream, detector in injected:
        assert any(html.escape(stream) in r and f"<b>{html.escape(detector)}</b>" in r for r in rows), \
            (stream, detector)
    assert 'image-rendering: pixelated' in page


def test_header_summary_and_one_timeline_per_stream(report, events, events_sink):
    page = report["html"]
    streams = sorted(set(events["stream_id"]))
    assert html.escape(str(events_sink)) in page and "version " in page
    assert f"<dt>events</dt><dd>{len(events)} " in page and f"<dt>streams</dt><dd>{len(streams)}</dd>" in page
    summary = page[page.index('<table class="summary">'):page.index("</table>")]
    for stream in streams:
        assert html.escape(stream) in summary
    for detector in set(events["detector"]):
        assert f"<th>{html.escape(detector)}</th>" in summary
    timelines = [s for s in image_sources(page) if s.startswith("data:image/png")]
    assert len(timelines) == len(streams)
    for uri in timelines:
        picture = Image.open(io.BytesIO(decode_data_uri(uri)[1]))
        assert picture.size[0] == 1100 and picture.size[1] > 100
    if (Path(events_sink) / "frame_features" / "_delta_log").is_dir():
        assert "luma_mean" in page and "under each timeline" in page


def test_report_renders_in_headless_chromium(report, events, tmp_path):
    shot = tmp_path / "report.png"
    run = run_chromium(report["path"], tmp_path, f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert not page_errors(run.stderr), page_errors(run.stderr)
    assert page_requests(tmp_path / "net.json") == []
    picture = Image.open(shot).convert("L")
    assert picture.size == (1280, 2000)
    low, high = picture.getextrema()
    assert low < 60 and high > 200  # something was drawn: text and timelines on a white page

    dom = run_chromium(report["path"], tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert not page_errors(dom.stderr), page_errors(dom.stderr)
    assert page_requests(tmp_path / "net.json") == []
    rendered = re.findall(r'<tr id="event-\d+">(.*?)</tr>', dom.stdout, re.S)
    assert len(rendered) == len(events)
    for event_id in events["event_id"]:
        assert event_id in dom.stdout


def test_hostile_stream_ids_and_details_are_escaped(events, tmp_path):
    rows = events.head(4).to_dict(orient="records")
    for i, row in enumerate(rows):
        row["stream_id"] = HOSTILE if i % 2 == 0 else ""
        row["event_id"] = f"{row['event_id'][:24]}-{i}"
        row["details"] = json.dumps({"check": "<i>chk</i>", "note": "<img src=x onerror=alert(1)>", "n": 1.5})
    sink = tmp_path / "sink"
    write_events_replacing(sink, rows, [r["stream_id"] for r in rows])
    out = write_report(sink, tmp_path / "hostile.html")
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and "<img src=x" not in page and "<i>chk</i>" not in page
    assert html.escape(HOSTILE) in page and "(empty stream id)" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;i&gt;chk&lt;/i&gt;" in page
    dom = run_chromium(out, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and not page_errors(dom.stderr), page_errors(dom.stderr)
    assert len(re.findall(r'<tr id="event-\d+">', dom.stdout)) == len(rows)
    assert "<script" not in dom.stdout


def test_empty_table_says_no_events(tmp_path):
    write_events_replacing(tmp_path / "sink", [], [])
    page = write_report(tmp_path / "sink", tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "No events" in page and "<dt>events</dt><dd>0</dd>" in page and "<img" not in page


def test_no_events_table_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(AvwatchError, match=r"no anomaly_events table under .*run `avwatch analyze"):
        write_report(tmp_path / "nowhere", tmp_path / "r.html")
    from cli.main import main

    (tmp_path / "empty-folder").mkdir()
    assert main(["report", "--sink", str(tmp_path / "empty-folder"), "--out", str(tmp_path / "r.html")]) == 2
    assert "no anomaly_events table" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_cli_writes_the_report(events_sink, tmp_path, capsys):
    from cli.main import main

    out = tmp_path / "sub" / "report.html"
    assert main(["report", "--sink", str(events_sink), "--out", str(out)]) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_hundreds_of_events_are_fast(events, tmp_path):
    base = events.to_dict(orient="records")
    rows = []
    for k in range(30):                  # each stream of the sink 6 times over, each 5 times as long
        for i, row in enumerate(base):
            shift = 15.0 * (k // 6)
            rows.append(dict(row, stream_id=f"{row['stream_id']}-{k % 6}", event_id=f"{row['event_id'][:20]}-{k}-{i}",
                             start_s=row["start_s"] + shift, end_s=row["end_s"] + shift))
    sink = tmp_path / "sink"
    write_events_replacing(sink, rows, [r["stream_id"] for r in rows])
    page = write_report(sink, tmp_path / "big.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<tr id="event-\d+">', page)) == len(rows) >= 300
