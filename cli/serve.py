"""`avwatch serve`: the live status page (streams, their state and open events, a live feed of alerts)."""
from __future__ import annotations

from cli.common import add_kafka_config, add_state


def register(sub) -> None:
    p = sub.add_parser("serve", help="a live status page: every stream's state, open events, live alerts")
    p.add_argument("--sink", required=True, metavar="DIR", help="the stream job's sink folder (Delta tables)")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="Kafka bootstrap of the alerts topic (default: --kafka-config's, else the local stack's)")
    p.add_argument("--alerts-topic", default="avwatch.alerts", help="the live feed's topic ('' for no feed)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--stalled-after", type=float, default=30.0, metavar="SECONDS",
                   help="a live stream without records this long is shown as stalled (default 30)")
    add_kafka_config(p, "for the alerts feed")
    add_state(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from avwatch.kafka_config import client_properties
    from jobs.status_server import serve

    client_config = client_properties(args)
    bootstrap = args.bootstrap or client_config.get("bootstrap.servers")
    if not bootstrap and args.alerts_topic:
        from avwatch.stack import Stack

        bootstrap = Stack.at(args.state, None).bootstrap_for(client_config)
    try:
        serve(args.sink, bootstrap, args.alerts_topic, client_config, host=args.host, port=args.port,
              stalled_after_s=args.stalled_after,
              ready=lambda url: print(f"avwatch status page on {url} (Ctrl-C stops it)", flush=True))
    except KeyboardInterrupt:
        pass
    return 0
