"""`avwatch stack status`: what avwatch.stack knows without a Kafka client (pid, ports, state folder),
plus the topics and their sizes, asked of the running broker with kafka-python."""
from __future__ import annotations

from avwatch.stack import Stack
from jobs.kafka_io import topic_sizes


def stack_status(stack: Stack, client_config: dict | None = None) -> dict:
    """Stack.status(), with "topics" (name -> partitions, messages) when the broker answers; asked with the
    --kafka-config properties on the listener they fit."""
    info = stack.status()
    if info["running"] and stack.accepts_connections():
        info["topics"] = topic_sizes(stack.bootstrap_for(client_config), client_config)
    return info
