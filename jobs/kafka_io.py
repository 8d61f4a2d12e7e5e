"""Kafka plumbing shared by the converter, the stream job and the tests: topics, producer, consumer."""
from __future__ import annotations

from avwatch.errors import AvwatchError
from avwatch.kafka_config import python_client_args, spark_options
from avwatch.stack import MAX_MESSAGE_BYTES

# Header names of every record the converter sends.
HEADER_SCHEMA = "avwatch-schema"   # e.g. b"video_segment/1"
HEADER_KIND = "avwatch-kind"       # b"video", b"audio", b"eos", b"heartbeat"


def spark_kafka_options(bootstrap: str, client_config: dict | None = None) -> dict[str, str]:
    """Options for Spark's Kafka source/sink: kafka.bootstrap.servers plus the --kafka-config properties,
    each with the `kafka.` prefix (use with DataStreamReader/DataFrameReader.options(**...))."""
    return spark_options(bootstrap, client_config)


def kafka_source(reader, bootstrap: str, client_config: dict | None, topics: list[str], max_record_bytes: int,
                 **options):
    """Spark's Kafka source on `topics`, for spark.readStream (the stream job) or spark.read (re-analysis):
    the --kafka-config properties, a lost offset range skipped (the job dead-letters gaps itself), fetch
    sizes that let a record of max_record_bytes through, then `options` (None values left out)."""
    source = (reader.format("kafka").options(**spark_kafka_options(bootstrap, client_config))
              .option("subscribe", ",".join(topics))
              .option("failOnDataLoss", "false")
              # Each task's cached consumer leaves a fetch waiting at the log's end; the next batch's seek
              # waited for it (fetch.max.wait.ms, 500 ms by default): measured, 0.5 s of every task's first
              # records and ~2 s of each micro-batch at 10 live streams (docs/performance.md)
              .option("kafka.fetch.max.wait.ms", "20")
              .option("kafka.max.partition.fetch.bytes", str(max_record_bytes + (1 << 20)))
              .option("kafka.fetch.max.bytes", str(max(64 << 20, max_record_bytes + (1 << 20)))))
    for key, value in options.items():
        if value is not None:
            source = source.option(key, str(value))
    return source


def _no_broker(bootstrap: str, client_config: dict | None, exc=None) -> AvwatchError:
    """The error for a client that could not bootstrap; for a secured one, says whether TLS or SASL failed
    (kafka-python reports either only as a bootstrap timeout)."""
    protocol = (client_config or {}).get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return AvwatchError(f"no Kafka broker answers at {bootstrap}: start one with `avwatch stack up` or give "
                            f"--bootstrap HOST:PORT")
    why = _tls_problem(bootstrap, client_config) if protocol.endswith("SSL") else None
    if why is None and protocol.startswith("SASL_"):
        why = (("the TLS handshake succeeded, but " if protocol == "SASL_SSL" else "") +
               "the broker did not let the client in: check the user and password (credentials) in "
               "sasl.jaas.config and sasl.mechanism")
    return AvwatchError(f"could not connect to Kafka at {bootstrap} with security.protocol={protocol} of "
                        f"--kafka-config: {why or exc or 'no answer'}")


def _tls_problem(bootstrap: str, client_config: dict | None) -> str | None:
    """A TLS handshake with the client's trust settings against the first bootstrap server: what fails."""
    import socket
    import ssl

    settings = python_client_args(client_config)
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = settings.get("ssl_check_hostname", True)
    if settings.get("ssl_cafile"):
        ctx.load_verify_locations(settings["ssl_cafile"])
    else:
        ctx.load_default_certs()
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        return (f"the broker's TLS certificate is not trusted ({exc.verify_message}): set ssl.truststore.type=PEM "
                f"and ssl.truststore.location to the CA certificate that signed it (and check "
                f"ssl.endpoint.identification.algorithm)")
    except ssl.SSLError as exc:
        return f"the TLS handshake failed ({exc.reason or exc}): is this a TLS listener?"
    except (OSError, ValueError) as exc:
        return f"cannot reach {host}:{port} ({exc})"


def _refuse_fast(bootstrap: str, client_config: dict | None) -> None:
    """When every bootstrap address refuses a TCP connection outright, say so now: kafka-python would spend
    its whole bootstrap timeout (15 s) retrying an address where nothing listens."""
    import socket

    errors = []
    for address in [a.strip() for a in bootstrap.split(",") if a.strip()]:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=2):
                return
        except ConnectionRefusedError as exc:
            errors.append(exc)
        except (OSError, ValueError):
            return  # unreachable for another reason (slow network, a name to resolve): let the client try
    if errors:
        raise _no_broker(bootstrap, client_config, errors[-1])


def admin_client(bootstrap: str, client_config: dict | None = None, **overrides):
    """A kafka-python admin client with the --kafka-config settings."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    _refuse_fast(bootstrap, client_config)

    settings = dict(bootstrap_servers=bootstrap, request_timeout_ms=15000, client_id="avwatch-admin")
    settings.update(python_client_args(client_config))
    settings.update(overrides)
    try:
        return KafkaAdminClient(**settings)
    except KafkaError as exc:
        raise _no_broker(bootstrap, client_config, exc) from None


def consumer(bootstrap: str, client_config: dict | None = None, **overrides):
    """A kafka-python consumer (no group, no auto-commit unless overridden) with the --kafka-config settings."""
    from kafka import KafkaConsumer

    settings = dict(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="avwatch-read")
    settings.update(python_client_args(client_config))
    settings.update(overrides)
    return KafkaConsumer(**settings)


def create_topics(bootstrap: str, topics: list[str], partitions: int = 4, replication: int = 1,
                  client_config: dict | None = None) -> list[str]:
    """Create the topics that do not exist yet, with `partitions` partitions and `replication` replicas
    (1 on the single-node local stack). Returns the created."""
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    for flag, value in (("--topic-partitions", partitions), ("--topic-replication", replication)):
        if value is None or value < 1:
            raise AvwatchError(f"{flag} must be a whole number of at least 1, got {value}")
    admin = admin_client(bootstrap, client_config)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=replication,
                                              topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)})
                                     for t in missing])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another publisher
            except KafkaError as exc:
                hint = (f" (the cluster has fewer brokers than --topic-replication {replication}?)"
                        if "Replication" in type(exc).__name__ else "")
                raise AvwatchError(f"could not create Kafka topics {', '.join(missing)}: {exc}{hint}") from None
        return missing
    finally:
        admin.close()


def producer(bootstrap: str, client_config: dict | None = None, **overrides):
    """An idempotent, acks=all producer tuned for ~0.1-1 MB segment records, with the --kafka-config
    settings (client_config: the properties, see avwatch.kafka_config)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    settings = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                    compression_type=None,  # payloads are already zstd/lz4-compressed Arrow
                    linger_ms=20, batch_size=1 << 20, max_request_size=MAX_MESSAGE_BYTES,
                    max_in_flight_requests_per_connection=5, bootstrap_timeout_ms=15000,
                    request_timeout_ms=30000, delivery_timeout_ms=120000, client_id="avwatch-publish")
    settings.update(python_client_args(client_config))
    settings.update(overrides)
    try:
        _refuse_fast(bootstrap, client_config)
        return KafkaProducer(**settings)
    except KafkaError as exc:
        raise _no_broker(bootstrap, client_config, exc) from None


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


def read_all(bootstrap: str, topics: list[str], timeout_s: float = 30.0, client_config: dict | None = None) -> list:
    """Every record currently in the topics (from the beginning to the end offsets at call time)."""
    import time

    from kafka import TopicPartition

    reader = consumer(bootstrap, client_config, fetch_max_bytes=64 << 20,
                      max_partition_fetch_bytes=MAX_MESSAGE_BYTES + (1 << 20))
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or [])]
        reader.assign(parts)
        reader.seek_to_beginning(*parts)
        end = reader.end_offsets(parts)
        records = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(reader.position(p) < end[p] for p in parts):
            for batch in reader.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        reader.close()


def topic_sizes(bootstrap: str, client_config: dict | None = None) -> dict[str, dict]:
    """Topic name -> {partitions, messages} of a cluster (internal topics left out), asked with the
    --kafka-config properties."""
    from kafka import TopicPartition

    admin = admin_client(bootstrap, client_config, request_timeout_ms=10000, client_id="avwatch-status")
    try:
        names = sorted(t for t in admin.list_topics() if not t.startswith("__"))
    finally:
        admin.close()
    if not names:
        return {}
    reader = consumer(bootstrap, client_config, client_id="avwatch-status")
    try:
        result = {}
        for name in names:
            parts = [TopicPartition(name, p) for p in sorted(reader.partitions_for_topic(name) or [])]
            begin = reader.beginning_offsets(parts)
            end = reader.end_offsets(parts)
            result[name] = {"partitions": len(parts), "messages": sum(end[p] - begin[p] for p in parts)}
        return result
    finally:
        reader.close()
