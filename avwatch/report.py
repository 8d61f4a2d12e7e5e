"""`avwatch report`: one self-contained HTML page of a sink's events table.

The page has no external assets: inline CSS, no scripts, the timelines as PNG and the evidence
thumbnails as JPEG data: URIs, so it can be mailed, archived or opened offline. It holds

  - a header: sink path, events table version and last commit, generation time, counts;
  - a summary: events per stream x detector, with severity counts;
  - per stream, a timeline over media time (one lane per detector, events as bars coloured by
    severity) with, when the sink has a frame_features table, a luma / frame-difference strip under it;
  - every event: stream, detector and check, start/end/duration, score vs threshold, severity, the
    details as text and the evidence thumbnail enlarged.

Every string that comes from the tables is HTML-escaped; stream ids never reach matplotlib (which would
read `$` as maths and lacks glyphs for many scripts): they are printed by the page, over each image.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from avwatch.errors import AvwatchError, no_table
from avwatch.sink import EVENTS, FRAME_FEATURES, table_path

SEVERITY_COLOURS = {"major": "#d7301f", "minor": "#f59e0b"}
OTHER_COLOUR = "#7f7f7f"
# the feature-strip series, in drawing order: column, label, colour
FEATURE_SERIES = (("luma_mean", "luma mean", "#1f77b4"), ("diff_prev", "frame difference", "#555555"),
                  ("black_frac", "black share", "#2ca02c"))
MAX_FEATURE_POINTS = 2000     # per stream; longer series are reduced to bins (mean luma, max difference)
MAX_LABELLED_EVENTS = 40      # per stream: number the bars of the timeline when there are at most this many
DETAIL_VALUE_CHARS = 160


@dataclass
class SinkView:
    sink: Path
    version: int
    last_commit: dict | None
    events: "object"            # pandas DataFrame, sorted by stream, start, detector
    features: "object | None"   # pandas DataFrame (stream_id, t, some FEATURE_SERIES columns) or None
    features_note: str          # what the page says about the frame_features table


def write_report(sink: str | Path, out: str | Path) -> Path:
    """Write the HTML report of the sink's events table to `out`; returns its path."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise AvwatchError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    view = load(sink)
    page = render(view)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# -- reading ---------------------------------------------------------------------------------------


def load(sink: str | Path) -> SinkView:
    """Read the events table (one snapshot) and, if present, the features the timelines need."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = table_path(sink, EVENTS)
    try:
        table = DeltaTable(str(path))
    except TableNotFoundError:
        raise no_table(sink, EVENTS, path) from None
    version = table.version()
    try:
        last = table.history(limit=1)
    except Exception:  # the history is decoration: a table whose log was cleaned up still reports
        last = []
    events = table.to_pyarrow_table().to_pandas()
    events = events.sort_values(["stream_id", "start_s", "detector"], kind="stable").reset_index(drop=True)
    features, note = _load_features(sink, sorted(set(events["stream_id"])))
    return SinkView(Path(sink), version, last[0] if last else None, events, features, note)


def _load_features(sink, streams: list[str]):
    from deltalake import DeltaTable

    path = table_path(sink, FRAME_FEATURES)
    if isinstance(path, Path) and not (path / "_delta_log").is_dir():
        return None, "no frame_features table in this sink (the stream job writes one with --features)"
    if not streams:
        return None, "frame_features table present"
    try:
        table = DeltaTable(str(path))
        names = {f.name for f in table.schema().fields}
        series = [c for c, _, _ in FEATURE_SERIES if c in names]
        if not series or not {"stream_id", "t"} <= names:
            return None, "frame_features table has none of the plotted columns (" + \
                ", ".join(c for c, _, _ in FEATURE_SERIES) + ")"
        df = table.to_pyarrow_table(columns=["stream_id", "t"] + series,
                                    filters=[("stream_id", "in", streams)]).to_pandas()
    except Exception as exc:  # the strip is an extra: a table we cannot read must not cost the report
        return None, f"frame_features table could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    return df, f"frame_features table version {table.version()}: {', '.join(series)} under each timeline"


# -- formatting helpers ----------------------------------------------------------------------------


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(value, digits: int = 4) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == int(v) and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.{digits}g}"


def fmt_seconds(value) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return fmt_num(v)
    if abs(v) >= 3600:
        h, rest = divmod(v, 3600)
        m, s = divmod(rest, 60)
        return f"{int(h)}:{int(m):02d}:{s:06.3f}"
    if abs(v) >= 60:
        m, s = divmod(v, 60)
        return f"{int(m)}:{s:06.3f}"
    return f"{v:.3f} s"


def fmt_time(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        if getattr(value, "tzinfo", None) is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    except (AttributeError, ValueError):
        return str(value)


def _detail_value(value) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (int, float)):
        text = fmt_num(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(_detail_value(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={_detail_value(v)}" for k, v in value.items())
    elif value is None:
        text = "–"
    else:
        text = str(value)
    return text if len(text) <= DETAIL_VALUE_CHARS else text[:DETAIL_VALUE_CHARS - 1] + "…"


def parse_details(text) -> tuple[str, list[tuple[str, str]]]:
    """details JSON -> (check, [(key, readable value)]); text that is not a JSON object is one item."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return "", []
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return "", [("details", _detail_value(str(text)))]
    if not isinstance(data, dict):
        return "", [("details", _detail_value(data))]
    check = data.pop("check", "") or ""
    return str(check), [(str(k), _detail_value(v)) for k, v in data.items()]


def image_uri(data) -> str | None:
    """A data: URI for JPEG/PNG/GIF/WebP bytes; None for anything else (no image)."""
    if data is None or isinstance(data, float):
        return None
    data = bytes(data)
    if data.startswith(b"\xff\xd8\xff"):
        mime = "image/jpeg"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        mime = "image/png"
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        mime = "image/gif"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    else:
        return None
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# -- plots -----------------------------------------------------------------------------------------


def _pack(intervals: list[tuple[float, float]]) -> tuple[list[int], int]:
    """Sub-row per interval so that overlapping intervals of one lane sit one above another."""
    ends: list[float] = []
    rows = [0] * len(intervals)
    for i in sorted(range(len(intervals)), key=lambda k: intervals[k]):
        start, end = intervals[i]
        for r, last in enumerate(ends):
            if start >= last:
                rows[i], ends[r] = r, end
                break
        else:
            rows[i] = len(ends)
            ends.append(end)
    return rows, max(len(ends), 1)


def _reduce(t, columns: dict, limit: int = MAX_FEATURE_POINTS):
    """At most `limit` points: bins of equal media time, mean per bin (max for frame differences)."""
    import numpy as np

    if len(t) <= limit:
        return t, columns
    edges = np.linspace(t[0], t[-1], limit + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, limit - 1)
    counts = np.bincount(idx, minlength=limit)
    keep = counts > 0
    out = {}
    for name, values in columns.items():
        v = np.where(np.isfinite(values), values, np.nan)
        if name == "diff_prev":
            agg = np.full(limit, -np.inf)
            np.maximum.at(agg, idx, np.nan_to_num(v, nan=-np.inf))
            agg[~np.isfinite(agg)] = np.nan
        else:
            ok = np.isfinite(v)
            sums = np.bincount(idx, weights=np.where(ok, v, 0.0), minlength=limit)
            n = np.bincount(idx, weights=ok.astype(float), minlength=limit)
            with np.errstate(invalid="ignore", divide="ignore"):
                agg = sums / n
        out[name] = agg[keep]
    centres = (edges[:-1] + edges[1:]) / 2
    return centres[keep], out


def timeline_png(events, numbers: list[int], features=None) -> bytes:
    """One stream's timeline: a lane per detector, events as bars over media time, coloured by severity;
    under it (when given) the luma / frame-difference strip. Returns PNG bytes."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    detectors = sorted(set(events["detector"]))
    starts = events["start_s"].to_numpy(float)
    ends = np.maximum(events["end_s"].to_numpy(float), starts)
    t_max = float(np.nanmax(ends)) if len(ends) else 1.0
    t_min = min(0.0, float(np.nanmin(starts))) if len(starts) else 0.0
    feat_t = None
    if features is not None and len(features):
        features = features.drop_duplicates("t", keep="last")   # a stream analysed twice: once per frame
        feat_t = features["t"].to_numpy(float)
        t_max = max(t_max, float(np.nanmax(feat_t)))
        t_min = min(t_min, float(np.nanmin(feat_t)))
    span = max(t_max - t_min, 1e-3)
    min_w = span * 0.004                     # a point event still shows

    lanes = len(detectors)
    strip = feat_t is not None
    height = 0.9 + 0.42 * lanes + (1.25 if strip else 0.0)
    fig = Figure(figsize=(11.0, height), dpi=100)
    FigureCanvasAgg(fig)
    ratios = [0.42 * lanes + 0.35] + ([1.0] if strip else [])
    axes = fig.subplots(len(ratios), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios, "hspace": 0.08})[:, 0]
    ax = axes[0]
    severity = events["severity"].astype(str).to_numpy()
    det_of = events["detector"].astype(str).to_numpy()
    label = len(events) <= MAX_LABELLED_EVENTS
    for lane, det in enumerate(detectors):
        mine = np.flatnonzero(det_of == det)
        rows, n_rows = _pack([(starts[i], max(ends[i], starts[i] + min_w)) for i in mine])
        h = 0.8 / n_rows
        bars: dict[tuple[int, str], list] = {}     # one collection per sub-row and severity
        for k, i in enumerate(mine):
            bars.setdefault((rows[k], severity[i]), []).append((starts[i], max(ends[i] - starts[i], min_w)))
            if label:
                ax.text(starts[i], lane - 0.4 + (rows[k] + 0.5) * h, f" #{numbers[i]}", va="center", ha="left",
                        fontsize=7, color="#111111", clip_on=True, parse_math=False)
        for (row, sev), xranges in bars.items():
            ax.broken_barh(xranges, (lane - 0.4 + (row + 0.04) * h, 0.92 * h),
                           facecolors=SEVERITY_COLOURS.get(sev, OTHER_COLOUR), edgecolors="#222222",
                           linewidth=0.4, alpha=0.9)
    ax.set_yticks(range(lanes))
    ax.set_yticklabels([d.replace("$", r"\$") for d in detectors], fontsize=9)
    ax.set_ylim(lanes - 0.5, -0.5)
    ax.set_xlim(t_min - span * 0.01, t_max + span * 0.01)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    present = [s for s in ("major", "minor") if s in set(severity)] + sorted(set(severity) - set(SEVERITY_COLOURS))
    ax.legend(handles=[Patch(facecolor=SEVERITY_COLOURS.get(s, OTHER_COLOUR), edgecolor="#222222", label=s)
                       for s in present], loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(present),
              fontsize=8, frameon=False, borderaxespad=0.1)
    if strip:
        fx = axes[1]
        columns = {c: features[c].to_numpy(float) for c, _, _ in FEATURE_SERIES if c in features}
        order = np.argsort(feat_t, kind="stable")
        t_plot, columns = _reduce(feat_t[order], {k: v[order] for k, v in columns.items()})
        for c, name, colour in FEATURE_SERIES:
            if c in columns and np.isfinite(columns[c]).any():
                fx.plot(t_plot, columns[c], color=colour, linewidth=0.9, label=name)
        fx.set_ylim(-0.02, 1.02)
        fx.tick_params(labelsize=8)
        fx.grid(color="#eeeeee", linewidth=0.6)
        fx.legend(loc="upper right", fontsize=7, ncol=3, frameon=True, framealpha=0.85, edgecolor="none")
    axes[-1].set_xlabel("media time (s)", fontsize=9)
    axes[-1].tick_params(axis="x", labelsize=8)
    fig.subplots_adjust(left=0.11, right=0.99, top=1 - 0.32 / height, bottom=0.45 / height)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # missing glyphs in a detector name must not fail a report
        fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# -- the page --------------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; color: #1b1b1b; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; overflow-wrap: anywhere; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
.meta dt { color: #555; } .meta dd { margin: 0; word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 4px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.sev { display: inline-block; border-radius: 3px; padding: 0 6px; color: #fff; font-size: 12px; }
.sev.major { background: #d7301f; } .sev.minor { background: #b45309; } .sev.other { background: #7f7f7f; }
.muted { color: #666; font-size: 12px; }
.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 11px; color: #666;
      word-break: break-all; }
.stream { overflow-wrap: break-word; }
ul.det { margin: 0; padding: 0; list-style: none; font-size: 12.5px; }
ul.det li { margin: 0; } ul.det b { font-weight: 600; color: #333; }
img.timeline { width: 100%; max-width: 1100px; height: auto; display: block; border: 1px solid #eee; }
img.evidence { width: 192px; height: auto; image-rendering: pixelated; display: block;
               border: 1px solid #ccc; background: #000; }
.events td { font-size: 13px; }
.empty { padding: 14px; background: #f6f6f6; border: 1px solid #e2e2e2; }
.sev.open { background: #b00020; color: #fff; }
footer { margin-top: 36px; color: #777; font-size: 12px; }
"""


def _sev_badge(severity) -> str:
    s = str(severity)
    cls = s if s in SEVERITY_COLOURS else "other"
    return f'<span class="sev {cls}">{esc(s)}</span>'


def _open_badge(state) -> str:
    """An event still going on when the table was read: its end is the time known so far."""
    if str(state) in ("open", "ongoing"):
        return ' <span class="sev open" title="the defect was still going on: its end is the time known so far">open</span>'
    return ""


def _stream_label(stream_id) -> str:
    return esc(stream_id) if str(stream_id) != "" else '<span class="muted">(empty stream id)</span>'


def render(view: SinkView, generated: datetime | None = None) -> str:
    generated = generated or datetime.now(timezone.utc)
    ev, streams = worst_first(view.events)
    anchors = {s: f"stream-{i + 1}" for i, s in enumerate(streams)}
    numbers = list(range(1, len(ev) + 1))
    sev_counts = Counter(ev["severity"].astype(str))
    parts: list[str] = []
    add = parts.append

    add("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>avwatch report: {esc(view.sink)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n")
    add("<header>\n<h1>avwatch report</h1>\n<dl class=\"meta\">\n")
    meta = [("sink", f"<span title=\"{esc(Path(view.sink).expanduser().resolve())}\">{esc(view.sink)}</span>"),
            ("events table", f"{EVENTS}, version {view.version}" + _commit_text(view.last_commit)),
            ("generated", esc(fmt_time(generated))),
            ("streams", str(len(streams))),
            ("events", f"{len(ev)}" + (" (" + ", ".join(f"{n} {esc(s)}" for s, n in sorted(sev_counts.items()))
                                       + ")" if len(ev) else "")),
            ("features", esc(view.features_note))]
    for key, value in meta:
        add(f"<dt>{key}</dt><dd>{value}</dd>\n")
    add("</dl>\n</header>\n")

    if ev.empty:
        add(f"<section id=\"summary\">\n<h2>Summary</h2>\n<p class=\"empty\">No events: the events table "
            f"(version {view.version}) holds no rows.</p>\n</section>\n")
    else:
        _summary(add, ev, streams, anchors)
        _timelines(add, view, ev, streams, anchors, numbers)
        _event_list(add, ev, anchors, numbers)
    add("<footer>Written by <code>avwatch report</code>. Self-contained: no scripts, no external resources; "
        "timelines and evidence thumbnails are embedded images. Times are media seconds from each stream's "
        "start.</footer>\n</body>\n</html>\n")
    return "".join(parts)


def worst_first(ev):
    """Streams ordered by major events, then all events (most first), then id; the events in that
    stream order, then by media time."""
    major = Counter(ev.loc[ev["severity"] == "major", "stream_id"])
    total = Counter(ev["stream_id"])
    streams = sorted(total, key=lambda s: (-major.get(s, 0), -total[s], s))
    rank = {s: i for i, s in enumerate(streams)}
    order = ev.assign(_rank=ev["stream_id"].map(rank)).sort_values(["_rank", "start_s", "detector"], kind="stable")
    return order.drop(columns="_rank").reset_index(drop=True), streams


def _commit_text(commit: dict | None) -> str:
    if not commit:
        return ""
    text = ""
    ts = commit.get("timestamp")
    if isinstance(ts, (int, float)):
        text = fmt_time(datetime.fromtimestamp(ts / 1000.0, timezone.utc))
    op = commit.get("operation")
    return f" (last commit: {esc(op or 'unknown')}" + (f" at {esc(text)}" if text else "") + ")"


def _summary(add, ev, streams, anchors) -> None:
    detectors = sorted(set(ev["detector"]))
    add("<section id=\"summary\">\n<h2>Summary</h2>\n<p class=\"muted\">Events per stream and detector "
        "(in brackets: how many of them are major), streams with the most major events first.</p>\n"
        "<table class=\"summary\">\n<thead><tr><th>stream</th>")
    for d in detectors:
        add(f"<th>{esc(d)}</th>")
    add("<th>total</th><th>major</th><th>minor</th></tr></thead>\n<tbody>\n")
    groups = ev.groupby(["stream_id", "detector"], sort=False)["severity"]
    counts = {key: Counter(values.astype(str)) for key, values in groups}
    for s in streams:
        add(f"<tr><td class=\"stream\"><a href=\"#{anchors[s]}\">{_stream_label(s)}</a></td>")
        total = Counter()
        for d in detectors:
            c = counts.get((s, d))
            if not c:
                add("<td class=\"n muted\">–</td>")
                continue
            total.update(c)
            n = sum(c.values())
            major = c.get("major", 0)
            add(f"<td class=\"n\">{n}" + (f" <span class=\"muted\">({major})</span>" if major else "") + "</td>")
        add(f"<td class=\"n\"><b>{sum(total.values())}</b></td><td class=\"n\">{total.get('major', 0)}</td>"
            f"<td class=\"n\">{total.get('minor', 0)}</td></tr>\n")
    all_sev = Counter(ev["severity"].astype(str))
    add("<tr><th>all streams</th>")
    for d in detectors:
        add(f"<td class=\"n\">{int((ev['detector'] == d).sum())}</td>")
    add(f"<td class=\"n\"><b>{len(ev)}</b></td><td class=\"n\">{all_sev.get('major', 0)}</td>"
        f"<td class=\"n\">{all_sev.get('minor', 0)}</td></tr>\n</tbody>\n</table>\n</section>\n")


def _timelines(add, view, ev, streams, anchors, numbers) -> None:
    add("<section id=\"timelines\">\n<h2>Timelines</h2>\n<p class=\"muted\">One lane per detector over media "
        "time; bars are events (<span style=\"color:#d7301f\">major</span>, <span style=\"color:#b45309\">"
        "minor</span>), numbered as in the event list.")
    if view.features is not None:
        add(" Under each timeline: per-frame luma mean, frame difference and black share (0..1) from the "
            "frame_features table.")
    add("</p>\n")
    feats = view.features
    by_stream = dict(tuple(feats.groupby("stream_id", sort=False))) if feats is not None and len(feats) else {}
    for s in streams:
        mask = (ev["stream_id"] == s).to_numpy()
        rows = ev[mask]
        nums = [n for n, m in zip(numbers, mask) if m]
        png = timeline_png(rows, nums, by_stream.get(s))
        n_major = int((rows["severity"] == "major").sum())
        add(f"<h3 id=\"{anchors[s]}\">{_stream_label(s)} <span class=\"muted\">{len(rows)} event(s), "
            f"{n_major} major</span></h3>\n")
        alt = f"timeline of {s}: {len(rows)} event(s) by " + ", ".join(sorted(set(rows["detector"])))
        add(f"<img class=\"timeline\" alt=\"{esc(alt)}\" src=\"data:image/png;base64,"
            f"{base64.b64encode(png).decode('ascii')}\">\n")
    add("</section>\n")


def _event_list(add, ev, anchors, numbers) -> None:
    add("<section id=\"events\">\n<h2>Events</h2>\n<table class=\"events\">\n<thead><tr><th>#</th>"
        "<th>stream</th><th>detector / check</th><th>start – end</th><th>duration</th>"
        "<th>score vs threshold</th><th>severity</th><th>details</th><th>evidence</th></tr></thead>\n<tbody>\n")
    cols = ["event_id", "stream_id", "detector", "detector_version", "start_s", "end_s", "start_time", "score",
            "threshold", "severity", "details", "evidence", "run_id"]
    present = [c for c in cols if c in ev.columns]
    for n, rec in zip(numbers, ev[present].itertuples(index=False, name=None)):
        r = dict(zip(present, rec))
        check, items = parse_details(r.get("details"))
        start, end = r.get("start_s"), r.get("end_s")
        try:
            duration = fmt_seconds(float(end) - float(start))
        except (TypeError, ValueError):
            duration = ""
        uri = image_uri(r.get("evidence"))
        evidence = (f"<img class=\"evidence\" alt=\"evidence frame of event {n} at {esc(fmt_seconds(start))}\" "
                    f"src=\"{uri}\">" if uri else "<span class=\"muted\">–</span>")
        details = "".join(f"<li><b>{esc(k)}</b> {esc(v)}</li>" for k, v in items) or "<li>–</li>"
        s = r.get("stream_id")
        add(f"<tr id=\"event-{n}\"><td class=\"n\">{n}</td>"
            f"<td class=\"stream\"><a href=\"#{anchors[s]}\">{_stream_label(s)}</a></td>"
            f"<td><b>{esc(r.get('detector'))}</b>" + (f" / {esc(check)}" if check else "")
            + f"<div class=\"muted\">v{esc(r.get('detector_version'))}</div>"
            f"<div class=\"id\" title=\"event id\">{esc(r.get('event_id'))}</div></td>"
            f"<td class=\"n\">{esc(fmt_seconds(start))} – {esc(fmt_seconds(end))}"
            f"<div class=\"muted\">{esc(fmt_time(r.get('start_time')))}</div></td>"
            f"<td class=\"n\">{esc(duration)}</td>"
            f"<td class=\"n\">{esc(fmt_num(r.get('score')))} <span class=\"muted\">vs</span> "
            f"{esc(fmt_num(r.get('threshold')))}</td>"
            f"<td>{_sev_badge(r.get('severity'))}{_open_badge(r.get('state'))}</td>"
            f"<td><ul class=\"det\">{details}</ul></td><td>{evidence}</td></tr>\n")
    add("</tbody>\n</table>\n</section>\n")
