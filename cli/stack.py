"""`avwatch stack up|down|status` (the local Kafka broker) and `avwatch jars` (the JVM jar cache)."""
from __future__ import annotations

import json

from cli.common import add_kafka_config, add_port, add_state


def register(sub) -> None:
    p = sub.add_parser("stack", help="the local Kafka broker: up, down, status")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--purge", action="store_true", help="with down: also delete the broker's data")
    p.add_argument("--json", action="store_true", help="with status: machine-readable output")
    add_state(p)
    add_port(p)
    add_kafka_config(p, "with status: list the topics as this client (on the SASL_SSL listener if it has one)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("jars", help="resolve the JVM jars into the cache and print their paths")
    p.add_argument("--set", choices=["spark", "kafka"], default="spark")
    p.add_argument("--csv", action="store_true", help="one comma-separated line (for --jars)")
    p.set_defaults(func=cmd_jars)


def cmd_stack(args) -> int:
    from avwatch.stack import Stack

    stack = Stack.at(args.state, args.port)
    if args.action == "up":
        stack.up()
    elif args.action == "down":
        stack.down(purge=args.purge)
    else:
        from avwatch.kafka_config import client_properties
        from jobs.stack_status import stack_status

        info = stack_status(stack, client_properties(args))
        if args.json:
            print(json.dumps(info, indent=2))
        elif not info["running"]:
            print(f"Kafka broker: not running (state: {info['state']})")
            return 3
        else:
            print(f"Kafka broker: up at {info['bootstrap']} (pid {info['pid']}, state: {info['state']})")
            if info.get("secure_bootstrap"):
                print(f"SASL_SSL listener: {info['secure_bootstrap']}")
            topics = info.get("topics", {})
            if not topics:
                print("topics: none")
            for name, t in topics.items():
                print(f"  {name}: {t['partitions']} partition(s), {t['messages']} message(s)")
    return 0


def cmd_jars(args) -> int:
    from avwatch import jars

    paths = jars.resolve(args.set, quiet=args.csv)
    if args.csv:
        print(",".join(str(p) for p in paths))
    else:
        for p in paths:
            print(p)
    return 0
