"""`avwatch demo` (what `make demo` runs) and `avwatch smoke` (the foundation's end-to-end check)."""
from __future__ import annotations

from cli.common import add_port, add_state


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded defaults: stack, publish clips, stream, events")
    p.add_argument("--sink", metavar="DIR", help="where the demo's tables go (default: <state>/demo)")
    add_state(p)
    add_port(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("smoke", help="publish a few records, stream them through Spark into Delta, read back")
    p.add_argument("--sink", metavar="DIR", help="where the smoke table goes (default: <state>/smoke)")
    add_state(p)
    add_port(p)
    p.set_defaults(func=cmd_smoke)


def cmd_demo(args) -> int:
    from jobs.demo import run_demo

    return run_demo(args)


def cmd_smoke(args) -> int:
    from jobs.smoke import run_smoke

    return run_smoke(args)
