"""`avwatch analyze MEDIA... --sink DIR` (without --local): the real path on the embedded defaults.

Start (or reuse) the local Kafka broker, publish the files with the converter, run the streaming job
until everything published is processed (availableNow), and leave the events in DIR. Each sink folder
gets its own pair of topics and its own checkpoint, so repeated runs into the same folder process only
what is new, and other users of the broker do not leak into this table.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from avwatch.errors import AvwatchError


def topics_for(sink: str) -> tuple[str, str]:
    digest = hashlib.sha256(str(Path(sink).resolve()).encode()).hexdigest()[:10]
    return f"avwatch.analyze.{digest}.video", f"avwatch.analyze.{digest}.audio"


def analyze_via_kafka(args, config, stream_ids: list[str], spark=None, echo=print) -> int:
    from avwatch.kafka_config import client_properties
    from avwatch.sink import read_events
    from avwatch.stack import Stack
    from jobs.publish import publish
    from jobs.publish_args import publish_options
    from jobs.stream import build_parser, run

    client_config = client_properties(args)
    bootstrap = getattr(args, "bootstrap", None) or client_config.get("bootstrap.servers")
    if not bootstrap:  # the embedded default: the local stack, started if needed
        stack = Stack.at(args.state, args.port)
        stack.up(echo=lambda *_: None)
        bootstrap = stack.bootstrap_for(client_config)
    video_topic, audio_topic = topics_for(args.sink)
    options = publish_options(args, bootstrap=bootstrap, video_topic=video_topic, audio_topic=audio_topic,
                              client_config=client_config)
    stats = publish(args.media, stream_ids, options)
    failed = [s for s in stats if s.error or s.failed]
    for s in stats:
        if s.error:
            echo(f"avwatch: {s.error}")
    published = [s.stream_id for s in stats if not s.error]
    if not published:
        raise AvwatchError("nothing was published, so there is nothing to analyse")
    job_args = ["--bootstrap", bootstrap, "--video-topic", video_topic, "--audio-topic", audio_topic,
                "--sink", str(args.sink), "--checkpoint", str(Path(args.sink) / "_checkpoints" / "analyze"),
                "--until-idle", "--features", "--alerts-topic", ""]
    if getattr(args, "master", None):
        job_args += ["--master", args.master]
    if getattr(args, "kafka_config", None):
        job_args += ["--kafka-config", str(args.kafka_config)]
    summary = run(build_parser().parse_args(job_args), config=config, spark=spark)
    events = read_events(args.sink) if (Path(args.sink) / "anomaly_events").exists() else None
    for s in stats:
        if s.error:
            continue
        n = 0 if events is None else int((events["stream_id"] == s.stream_id).sum())
        what = [f"{s.frames} frames"] if s.frames else []
        if s.audio_s:
            what.append(f"{s.audio_s:.1f} s audio")
        echo(f"{s.stream_id}: {', '.join(what) or 'nothing decoded'}, {n} event(s)"
             + (f" ({s.note})" if s.note else ""))
    echo(f"events table: {args.sink}/anomaly_events ({summary['events']} event(s) written by run "
         f"{summary['run_id']}, {summary['dead_letters']} dead letter(s))")
    return 1 if failed else 0
