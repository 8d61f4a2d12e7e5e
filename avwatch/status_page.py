"""The live status page's content (`avwatch serve`): every stream's state from the sink's tables, and the
page itself (plain HTML, a little JS, no build step). The HTTP server and its Kafka feed are in
jobs/status_server.py; this module reads Delta only (delta-rs, no JVM, no Kafka).

A stream's state, worst first:
  ended      the job saw its end of stream (stream_status)
  stalled    an open `stall` event, or a live stream with no record for `stalled_after_s`
  in alarm   any other open event (state open or ongoing)
  ok         none of the above
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from avwatch.sink import EVENTS, FRAME_FEATURES, table_path
from detectors.events import event_state

OPEN_STATES = ("open", "ongoing")


def _iso(value) -> str | None:
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return str(value)


def _read(sink, name: str, columns: list[str] | None = None) -> list[dict]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(str(table_path(sink, name)))
    except TableNotFoundError:
        return []
    names = {f.name for f in table.schema().fields}
    cols = [c for c in columns if c in names] if columns else None
    return table.to_pyarrow_table(columns=cols).to_pylist()


def latest_frame_thumbs(sink) -> dict[str, bytes]:
    """stream id -> the JPEG thumbnail of its newest frame in frame_features (when the job keeps it)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(str(table_path(sink, FRAME_FEATURES)))
    except TableNotFoundError:
        return {}
    if "thumb_jpeg" not in {f.name for f in table.schema().fields}:
        return {}
    import pyarrow.compute as pc

    keys = table.to_pyarrow_table(columns=["stream_id", "t"])
    out = {}
    for stream_id in pc.unique(keys["stream_id"]).to_pylist():
        t_max = pc.max(pc.filter(keys["t"], pc.equal(keys["stream_id"], stream_id))).as_py()
        rows = table.to_pyarrow_table(columns=["thumb_jpeg"], filters=[("stream_id", "=", stream_id),
                                                                        ("t", "=", t_max)]).to_pylist()
        if rows and rows[0]["thumb_jpeg"]:
            out[stream_id] = bytes(rows[0]["thumb_jpeg"])
    return out


def snapshot(sink, stalled_after_s: float = 30.0, now: datetime | None = None) -> dict:
    """{"streams": [...], "thumbs": {stream id: JPEG}} from the sink's tables; each stream: stream_id, state,
    media_s, last_record_at, open events (id, detector, severity, start_s, details), events (count), and
    has_thumb."""
    from avwatch.stream_status import read as read_status

    now = now or datetime.now(timezone.utc)
    status = {r["stream_id"]: r for r in read_status(sink)}
    events = _read(sink, EVENTS)
    thumbs: dict[str, bytes] = {}
    thumb_at: dict[str, float] = {}
    streams: dict[str, dict] = {}

    def entry(stream_id: str) -> dict:
        return streams.setdefault(stream_id, {"stream_id": stream_id, "open": [], "events": 0})

    for row in sorted(events, key=lambda r: (r["stream_id"], r["start_s"])):
        s = entry(row["stream_id"])
        s["events"] += 1
        state = event_state(row)
        if state in OPEN_STATES:
            s["open"].append({"event_id": row["event_id"], "detector": row["detector"], "severity": row["severity"],
                              "state": state, "start_s": row["start_s"], "end_s": row["end_s"],
                              "start_time": _iso(row.get("start_time"))})
        if row.get("evidence") and row["start_s"] >= thumb_at.get(row["stream_id"], -1.0):
            thumbs[row["stream_id"]] = bytes(row["evidence"])
            thumb_at[row["stream_id"]] = row["start_s"]
    for stream_id, jpeg in latest_frame_thumbs(sink).items():
        thumbs[stream_id] = jpeg  # the newest frame beats the newest event's evidence
    for stream_id in status:
        entry(stream_id)
    out = []
    for stream_id, s in sorted(streams.items()):
        st = status.get(stream_id, {})
        last = st.get("last_record_at")
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=timezone.utc)
        silent_s = (now - last).total_seconds() if last is not None else None
        if st.get("state") == "ended":
            state = "ended"
        elif any(e["detector"] == "stall" for e in s["open"]) or \
                (st.get("state") == "live" and silent_s is not None and silent_s > stalled_after_s):
            state = "stalled"
        elif s["open"]:
            state = "in alarm"
        else:
            state = "ok"
        out.append({**s, "state": state, "source": st.get("state"), "media_s": st.get("media_s"),
                    "last_record_at": _iso(last), "silent_s": silent_s, "has_thumb": stream_id in thumbs})
    return {"streams": out, "thumbs": thumbs, "generated": now.isoformat()}


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>avwatch: live status</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 18px; display: flex; gap: 18px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header .meta { color: #aab; font-size: 12px; }
  main { display: grid; grid-template-columns: minmax(0, 2fr) minmax(280px, 1fr); gap: 16px; padding: 16px; }
  #streams { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 12px; align-content: start; }
  .card { background: #fff; border-radius: 6px; box-shadow: 0 1px 2px #0002; overflow: hidden; border-top: 5px solid #2e9d57; }
  .card.in-alarm { border-top-color: #d33a2c; } .card.stalled { border-top-color: #e69b00; } .card.ended { border-top-color: #8a8f99; }
  .card img, .card .noimg { width: 100%; aspect-ratio: 16 / 9; object-fit: cover; background: #222; display: block; }
  .card .noimg { color: #999; display: flex; align-items: center; justify-content: center; font-size: 12px; }
  .card .body { padding: 8px 10px; }
  .card h2 { font-size: 15px; margin: 0 0 4px; display: flex; justify-content: space-between; gap: 6px; }
  .badge { font-size: 11px; padding: 1px 7px; border-radius: 9px; color: #fff; background: #2e9d57; white-space: nowrap; }
  .in-alarm .badge { background: #d33a2c; } .stalled .badge { background: #e69b00; } .ended .badge { background: #8a8f99; }
  .card ul { margin: 4px 0; padding-left: 16px; font-size: 12px; }
  .card .foot { font-size: 12px; color: #667; display: flex; justify-content: space-between; }
  #feed { background: #fff; border-radius: 6px; box-shadow: 0 1px 2px #0002; padding: 8px 12px; align-self: start; }
  #feed h2 { font-size: 15px; margin: 4px 0 8px; }
  #alerts { list-style: none; margin: 0; padding: 0; font-size: 12px; max-height: 80vh; overflow: auto; }
  #alerts li { border-left: 4px solid #d33a2c; padding: 4px 8px; margin-bottom: 6px; background: #fbf7f6; }
  #alerts li.closed { border-left-color: #2e9d57; background: #f5faf6; }
  #alerts .when { color: #778; }
  .empty { color: #889; font-style: italic; }
  #conn.down { color: #f7a; }
</style>
</head>
<body>
<header><h1>avwatch</h1><span class="meta">sink <span id="sink"></span></span>
  <span class="meta">alerts <span id="conn">connecting</span></span><span class="meta" id="updated"></span></header>
<main>
  <section id="streams"><p class="empty">loading streams</p></section>
  <aside id="feed"><h2>Live alerts</h2><ul id="alerts"><li class="empty" id="noalerts">no alert since this page opened</li></ul></aside>
</main>
<script>
"use strict";
const el = (tag, attrs, ...kids) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return node;
};
const seconds = (s) => (s === null || s === undefined) ? "-" : Number(s).toFixed(2) + " s";

function render(data) {
  document.getElementById("sink").textContent = data.sink;
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const box = document.getElementById("streams");
  box.replaceChildren();
  if (!data.streams.length) box.append(el("p", {class: "empty"}, "no stream seen yet"));
  for (const s of data.streams) {
    const cls = s.state.replace(" ", "-");
    const pic = s.has_thumb ? el("img", {src: "thumb/" + encodeURIComponent(s.stream_id) + ".jpg?v=" + Date.now(),
                                         alt: "latest picture of " + s.stream_id})
                            : el("div", {class: "noimg"}, "no picture");
    const list = el("ul", {});
    for (const e of s.open) list.append(el("li", {}, `${e.detector} (${e.severity}, ${e.state}) since ${seconds(e.start_s)}`));
    if (!s.open.length) list.append(el("li", {class: "empty"}, "no open event"));
    const report = el("a", {href: "report/" + encodeURIComponent(s.stream_id), target: "_blank"}, "report");
    box.append(el("article", {class: "card " + cls, "data-stream": s.stream_id, "data-state": s.state}, pic,
      el("div", {class: "body"},
        el("h2", {}, s.stream_id, el("span", {class: "badge"}, s.state)), list,
        el("div", {class: "foot"}, el("span", {}, `${s.events} event(s), media ${seconds(s.media_s)}`), report))));
  }
}

async function refresh() {
  try {
    const response = await fetch("api/streams", {cache: "no-store"});
    if (response.ok) render(await response.json());
  } catch (err) { /* the server restarts: the next refresh shows it */ }
}

function addAlert(a) {
  document.getElementById("noalerts")?.remove();
  const state = a.state || ((a.details || {}).ongoing ? "ongoing" : "closed");
  const item = el("li", {class: state, "data-event": a.event_id},
    el("b", {}, `${a.detector} ${state}`), ` on ${a.stream_id} (${a.severity}) at ${seconds(a.start_s)}`,
    el("br"), el("span", {class: "when"}, new Date().toLocaleTimeString() + " \\u00b7 " + a.event_id));
  const list = document.getElementById("alerts");
  list.prepend(item);
  while (list.children.length > 200) list.lastChild.remove();
}

const feed = new EventSource("api/alerts");
feed.addEventListener("alert", (msg) => { addAlert(JSON.parse(msg.data)); refresh(); });
feed.onopen = () => { const c = document.getElementById("conn"); c.textContent = "live"; c.className = ""; };
feed.onerror = () => { const c = document.getElementById("conn"); c.textContent = "reconnecting"; c.className = "down"; };
refresh();
setInterval(refresh, 5000);
</script>
</body>
</html>
"""
