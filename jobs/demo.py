"""`avwatch demo` (what `make demo` runs): the main job on the embedded defaults.

1. start (or reuse) the local Kafka broker;
2. make a few short clips from real footage with defects injected at known times (avwatch.samples);
3. publish them with the converter to the default topics;
4. run the Structured Streaming job until everything published is processed (local[*] Spark);
5. print the events table next to what was injected, and leave the tables for the notebook and report.
"""
from __future__ import annotations

import time
from pathlib import Path

from avwatch.errors import AvwatchError


def _overlaps(event: dict, start: float, end: float, slack: float = 0.5) -> bool:
    return event["start_s"] < end + slack and event["end_s"] > start - slack


def _status_page(sink: Path, bootstrap: str, echo):
    """The live status page (`avwatch serve`) while the job runs: port 8080, or any free port."""
    from jobs.status_server import AlertFeed, StatusServer

    feed = AlertFeed(bootstrap, "avwatch.alerts").start()
    for port in (8080, 0):
        try:
            server = StatusServer(str(sink), feed, port=port).start()
        except AvwatchError:
            continue
        echo(f"      live status page: {server.url}  (after the demo: avwatch serve --sink {sink})")
        return server
    feed.stop()
    return None


def run_demo(args, echo=print) -> int:
    from avwatch.paths import state_dir
    from avwatch.samples import demo_clips
    from avwatch.sink import read_events
    from avwatch.stack import Stack
    from jobs.publish import PublishOptions, publish
    from jobs.stream import build_parser, run

    started = time.monotonic()
    stack = Stack.at(args.state, args.port)
    stack.up(echo=echo)
    root = state_dir(args.state) / "demo"
    sink = Path(args.sink) if args.sink else root / "sink"
    echo(f"[1/4] making demo clips from real footage in {root / 'clips'} ...")
    clips = demo_clips(root / "clips")
    for c in clips:
        echo(f"      {c.stream_id:<14} {c.description}")
    echo(f"[2/4] publishing {len(clips)} clips to Kafka at {stack.bootstrap} (avwatch.video, avwatch.audio) ...")
    stats = publish([str(c.path) for c in clips], [c.stream_id for c in clips],
                    PublishOptions(bootstrap=stack.bootstrap))
    for s in stats:
        if s.error:
            raise AvwatchError(f"publishing {s.stream_id} failed: {s.error}")
    echo(f"      {sum(s.frames for s in stats)} frames, {sum(s.segments for s in stats)} segments, "
         f"{sum(s.bytes for s in stats) / 1e6:.1f} MB")
    echo("[3/4] running the streaming job (Spark local[*]) until the published data is processed ...")
    job = build_parser().parse_args(["--bootstrap", stack.bootstrap, "--sink", str(sink), "--until-idle",
                                     "--features"])
    page = _status_page(sink, stack.bootstrap, echo)
    try:
        summary = run(job)
    finally:
        if page is not None:
            page.shutdown()
            page.feed.stop()
    echo(f"      run {summary['run_id']}: {summary['events']} event(s) written, {summary['alerts']} alert(s) on "
         f"avwatch.alerts, {summary['dead_letters']} dead letter(s)")
    echo("[4/4] events next to what was injected:")
    events = read_events(sink)
    found_total = injected_total = 0
    for clip in clips:
        rows = events[events["stream_id"] == clip.stream_id].to_dict(orient="records")
        echo(f"\n  {clip.stream_id}")
        used = set()
        for inj in clip.injected:
            injected_total += 1
            hits = [r for r in rows if r["detector"] == inj.detector and _overlaps(r, inj.start_s, inj.end_s)]
            used.update(r["event_id"] for r in hits)
            if hits:
                found_total += 1
                got = ", ".join(f"{h['start_s']:.2f}-{h['end_s']:.2f} s" for h in hits)
                echo(f"    found    {inj.detector:<12} injected {inj.start_s:5.2f}-{inj.end_s:5.2f} s  "
                     f"detected {got}  ({inj.what})")
            else:
                echo(f"    MISSED   {inj.detector:<12} injected {inj.start_s:5.2f}-{inj.end_s:5.2f} s  ({inj.what})")
        for r in rows:
            if r["event_id"] not in used:
                echo(f"    also     {r['detector']:<12} {r['start_s']:5.2f}-{r['end_s']:5.2f} s  {r['details'][:90]}")
    echo(f"\nfound {found_total} of {injected_total} injected defects in {time.monotonic() - started:.0f} s.")
    echo(f"tables: {sink}/anomaly_events, {sink}/frame_features, {sink}/dead_letter")
    echo(f"next:   avwatch events --sink {sink}    |    avwatch report --sink {sink} --out report.html    |    "
         f"avwatch serve --sink {sink}")
    return 0
