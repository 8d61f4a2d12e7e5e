"""Kafka plumbing shared by the converter, the stream job and the tests: topics, producer, consumer."""
from __future__ import annotations

from avwatch.errors import AvwatchError
from avwatch.stack import MAX_MESSAGE_BYTES

# Header names of every record the converter sends.
HEADER_SCHEMA = "avwatch-schema"   # e.g. b"video_segment/1"
HEADER_KIND = "avwatch-kind"       # b"video", b"audio", b"eos", b"heartbeat"


def create_topics(bootstrap: str, topics: list[str], partitions: int = 4) -> list[str]:
    """Create the topics that do not exist yet (single-node: replication factor 1). Returns the created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, client_id="avwatch-admin")
    except KafkaError:
        raise AvwatchError(f"no Kafka broker answers at {bootstrap}: start one with `avwatch stack up` or give "
                           f"--bootstrap HOST:PORT") from None
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1,
                                              topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)})
                                     for t in missing])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another publisher
            except KafkaError as exc:
                raise AvwatchError(f"could not create Kafka topics {', '.join(missing)}: {exc}") from None
        return missing
    finally:
        admin.close()


def producer(bootstrap: str, **overrides):
    """An idempotent, acks=all producer tuned for ~0.1-1 MB segment records."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    settings = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                    compression_type=None,  # payloads are already zstd/lz4-compressed Arrow
                    linger_ms=20, batch_size=1 << 20, max_request_size=MAX_MESSAGE_BYTES,
                    max_in_flight_requests_per_connection=5, bootstrap_timeout_ms=15000,
                    request_timeout_ms=30000, delivery_timeout_ms=120000, client_id="avwatch-publish")
    settings.update(overrides)
    try:
        return KafkaProducer(**settings)
    except KafkaError:
        raise AvwatchError(f"no Kafka broker answers at {bootstrap}: start one with `avwatch stack up` or give "
                           f"--bootstrap HOST:PORT") from None


class InflightBudget:
    """Bounds the bytes handed to the producer but not yet acknowledged (kafka-python 3 has no
    buffer_memory): a sender blocks while the budget is spent, up to a timeout."""

    def __init__(self, max_bytes: int = 64 << 20):
        import threading

        self.max_bytes = max_bytes
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, size: int, timeout_s: float) -> bool:
        import time

        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.used > 0 and self.used + size > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._cond:
            self.used -= size
            self._cond.notify_all()


def read_all(bootstrap: str, topics: list[str], timeout_s: float = 30.0) -> list:
    """Every record currently in the topics (from the beginning to the end offsets at call time)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="avwatch-read",
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=MAX_MESSAGE_BYTES + (1 << 20))
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(p) < end[p] for p in parts):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
