"""`avwatch demo` (what `make demo` runs): the main job on the embedded defaults.

Until the streaming pipeline lands, the demo is the foundation's smoke path: start the local stack,
publish Arrow records to Kafka, stream them with Spark into Delta, read them back with delta-rs.
"""
from __future__ import annotations


def run_demo(args) -> int:
    from jobs.smoke import run_smoke

    return run_smoke(args)
