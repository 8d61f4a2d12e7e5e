"""`avwatch serve`: the live status page over HTTP (standard library ThreadingHTTPServer), on 127.0.0.1.

  GET /                   the page (avwatch/status_page.py: plain HTML + a little JS)
  GET /api/streams        every stream with its state, open events and counts (JSON, from the Delta tables)
  GET /api/alerts         server-sent events: one `alert` event per message on the alerts topic (the
                          message's JSON as data, id = partition:offset); the last 50 are replayed to a new
                          page, and to a reconnecting one those after its Last-Event-ID
  GET /thumb/<id>.jpg     the stream's latest thumbnail (newest frame in frame_features, else the newest
                          event's evidence)
  GET /report/<id>        `avwatch report` of that stream, rendered on request
  GET /healthz            ok

The alerts feed is one Kafka consumer thread (no group, from the end of the topic when the server starts)
that fans each message out to every connected page.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from avwatch.errors import AvwatchError

log = logging.getLogger("avwatch.serve")

RECENT = 50          # alerts replayed to a page that connects
KEEPALIVE_S = 15.0   # an SSE comment this often keeps proxies from closing an idle feed


class AlertFeed:
    """Reads the alerts topic from its end and hands each message to every subscriber queue."""

    def __init__(self, bootstrap: str, topic: str, client_config: dict | None = None):
        self.bootstrap, self.topic, self.client_config = bootstrap, topic, client_config
        self.recent: deque = deque(maxlen=RECENT)  # (id, json text)
        self._subscribers: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the consumer sits at the end of the topic
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="alerts-feed", daemon=True)

    def start(self) -> "AlertFeed":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def subscribe(self, after: str | None = None) -> tuple[queue.Queue, list]:
        q: queue.Queue = queue.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.add(q)
            backlog = list(self.recent)
        if after is not None:
            ids = [i for i, _ in backlog]
            backlog = backlog[ids.index(after) + 1:] if after in ids else backlog
        return q, backlog

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            self._subscribers.discard(q)

    def _publish(self, item: tuple[str, str]) -> None:
        with self._lock:
            self.recent.append(item)
            subscribers = list(self._subscribers)
        for q in subscribers:
            try:
                q.put_nowait(item)
            except queue.Full:  # a page that stopped reading: it loses this one, the server goes on
                pass

    def _run(self) -> None:
        from kafka import TopicPartition

        from jobs.kafka_io import consumer

        while not self._stop.is_set():
            reader = None
            try:
                reader = consumer(self.bootstrap, self.client_config, client_id="avwatch-serve")
                parts = None
                while not parts and not self._stop.is_set():
                    parts = [TopicPartition(self.topic, p) for p in sorted(reader.partitions_for_topic(self.topic)
                                                                           or [])]
                    if not parts:
                        time.sleep(1.0)  # the topic is created by the stream job's first start
                if self._stop.is_set():
                    return
                reader.assign(parts)
                reader.seek_to_end(*parts)
                for p in parts:
                    reader.position(p)  # resolve the end now: what is sent from here on is shown
                self.error = None
                self.ready.set()
                while not self._stop.is_set():
                    for records in reader.poll(timeout_ms=250).values():
                        for r in records:
                            try:
                                text = json.dumps(json.loads(r.value.decode("utf-8")), ensure_ascii=False)
                            except (UnicodeDecodeError, ValueError):
                                log.warning("alerts topic %s[%d]@%d is not JSON: skipped", r.topic, r.partition,
                                            r.offset)
                                continue
                            self._publish((f"{r.partition}:{r.offset}", text))
            except Exception as exc:  # noqa: BLE001 - the broker is away: the page stays up, the feed retries
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("alerts feed from %s at %s: %s; retrying in 5 s", self.topic, self.bootstrap, self.error)
                self._stop.wait(5.0)
            finally:
                if reader is not None:
                    reader.close()


class StatusServer:
    """The page's HTTP server; `feed` None serves the page without live alerts (no Kafka)."""

    def __init__(self, sink: str, feed: AlertFeed | None, host: str = "127.0.0.1", port: int = 8080,
                 stalled_after_s: float = 30.0):
        self.sink, self.feed, self.stalled_after_s = sink, feed, stalled_after_s
        self._thumbs: dict[str, bytes] = {}
        handler = self._handler()
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise AvwatchError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                               f"another port") from None
        self.httpd.daemon_threads = True
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.25)

    def start(self) -> "StatusServer":
        threading.Thread(target=self.serve_forever, name="status-http", daemon=True).start()
        return self

    def shutdown(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def streams(self) -> dict:
        from avwatch.status_page import snapshot

        snap = snapshot(self.sink, self.stalled_after_s)
        self._thumbs = snap.pop("thumbs")
        snap["sink"] = str(self.sink)
        snap["alerts_feed"] = ("off" if self.feed is None else "live" if self.feed.ready.is_set() and
                               not self.feed.error else f"connecting ({self.feed.error or 'starting'})")
        return snap

    def report(self, stream_id: str) -> str:
        from dataclasses import replace

        from avwatch.report import load, render

        view = load(self.sink)
        features = view.features
        if features is not None:
            features = features[features["stream_id"] == stream_id]
        return render(replace(view, events=view.events[view.events["stream_id"] == stream_id].reset_index(drop=True),
                              features=features))

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):
                log.debug("%s " + fmt, self.address_string(), *args)

            def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=5" if cache else "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server's name
                path = urllib.parse.urlsplit(self.path).path
                try:
                    if path in ("/", "/index.html"):
                        from avwatch.status_page import PAGE

                        self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8")
                    elif path == "/api/streams":
                        self._send(200, json.dumps(server.streams(), default=str).encode(), "application/json")
                    elif path == "/api/alerts":
                        self._events()
                    elif path.startswith("/thumb/") and path.endswith(".jpg"):
                        stream_id = urllib.parse.unquote(path[len("/thumb/"):-4])
                        if stream_id not in server._thumbs:
                            server.streams()
                        jpeg = server._thumbs.get(stream_id)
                        if jpeg is None:
                            self._send(404, b"no thumbnail", "text/plain")
                        else:
                            self._send(200, jpeg, "image/jpeg", cache=True)
                    elif path.startswith("/report/"):
                        page = server.report(urllib.parse.unquote(path[len("/report/"):]))
                        self._send(200, page.encode("utf-8"), "text/html; charset=utf-8")
                    elif path == "/healthz":
                        self._send(200, b"ok", "text/plain")
                    else:
                        self._send(404, b"not found", "text/plain")
                except AvwatchError as exc:
                    self._send(503, str(exc).encode(), "text/plain; charset=utf-8")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _events(self) -> None:
                if server.feed is None:
                    self._send(404, b"no alerts feed (serve runs without Kafka)", "text/plain")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                q, backlog = server.feed.subscribe(self.headers.get("Last-Event-ID"))
                try:
                    self.wfile.write(b"retry: 2000\n\n")
                    for item in backlog:
                        self._event(*item)
                    self.wfile.flush()
                    last = time.monotonic()
                    while not server._closing.is_set():
                        try:
                            item = q.get(timeout=0.5)
                        except queue.Empty:
                            if time.monotonic() - last >= KEEPALIVE_S:
                                self.wfile.write(b": keep-alive\n\n")
                                self.wfile.flush()
                                last = time.monotonic()
                            continue
                        self._event(*item)
                        self.wfile.flush()
                        last = time.monotonic()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the page went away
                finally:
                    server.feed.unsubscribe(q)

            def _event(self, event_id: str, text: str) -> None:
                self.wfile.write(f"id: {event_id}\nevent: alert\ndata: {text}\n\n".encode("utf-8"))

        return Handler


def serve(sink: str, bootstrap: str | None, alerts_topic: str, client_config: dict | None = None,
          host: str = "127.0.0.1", port: int = 8080, stalled_after_s: float = 30.0,
          ready=None) -> None:
    """Run the page until interrupted; `ready(url)` is called once it listens."""
    feed = AlertFeed(bootstrap, alerts_topic, client_config).start() if bootstrap and alerts_topic else None
    server = StatusServer(sink, feed, host, port, stalled_after_s)
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever()
    finally:
        server._closing.set()
        server.httpd.server_close()
        if feed is not None:
            feed.stop()
