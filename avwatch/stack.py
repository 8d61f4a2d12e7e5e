"""The local stack: a real single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1.

The broker runs in its own JVM from the `kafka` jar set (avwatch.jars); its data, config, pid file and
log live in one state folder:
  <state>/kafka/server.properties   written on first `up`, kept after
  <state>/kafka/data/               the log dirs (formatted once with a cluster id)
  <state>/kafka/broker.pid
  <state>/kafka/broker.log          the broker's own log (log4j2); nothing goes to the terminal

`up` is idempotent, `down` keeps the data unless purge=True. Every failure the user can fix (busy port,
missing Java, broker that will not start) is an AvwatchError naming the fix.
"""
from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from avwatch import jars
from avwatch.errors import AvwatchError
from avwatch.paths import state_dir

DEFAULT_PORT = 9092
HOST = "127.0.0.1"
# Segments of 1 s of 1080p-sourced frames at the analysis size are ~1 MB; leave ample room.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

SERVER_PROPERTIES = """\
# Written by avwatch (avwatch/stack.py) for a single-node local broker. Loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes={max_bytes}
replica.fetch.max.bytes={max_bytes}
log.retention.hours=168
auto.create.topics.enable=true
"""

LOG4J2_PROPERTIES = """\
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=RollingFile
appender.file.name=file
appender.file.fileName={log}
appender.file.filePattern={log}.%i
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
appender.file.policies.type=Policies
appender.file.policies.size.type=SizeBasedTriggeringPolicy
appender.file.policies.size.size=20MB
appender.file.strategy.type=DefaultRolloverStrategy
appender.file.strategy.max=3
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
"""


def new_cluster_id() -> str:
    """A Kafka cluster id (a URL-safe base64 UUID). Like Kafka's own Uuid.randomUuid, never one that
    starts with '-' (1 in 64 would): the storage tool would read it as an option and refuse to start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class Stack:
    """One local broker: where its state lives and which ports it binds on 127.0.0.1."""

    root: Path
    port: int = DEFAULT_PORT

    @classmethod
    def at(cls, state: str | os.PathLike | None = None, port: int | None = None) -> "Stack":
        root = state_dir(state)
        stack = cls(root=root, port=port or DEFAULT_PORT)
        # The port a broker was first set up with stays its port, unless the caller names another.
        if port is None and stack.properties.exists():
            for line in stack.properties.read_text().splitlines():
                if line.startswith("advertised.listeners="):
                    stack = cls(root=root, port=int(line.rsplit(":", 1)[1]))
        return stack

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.kafka_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.kafka_dir / "broker.log"

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    # -- queries ---------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The broker's pid if our broker process is alive, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ProcessLookupError, FileNotFoundError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if b"kafka.Kafka" not in cmdline or str(self.properties).encode() not in cmdline:
            self.pid_file.unlink(missing_ok=True)  # the pid was reused by another program
            return None
        return pid

    def accepts_connections(self) -> bool:
        return _port_open(self.port)

    def topics(self) -> dict[str, dict]:
        """Topic name -> {partitions, messages} of the running broker (internal topics left out)."""
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000,
                                 client_id="avwatch-status")
        try:
            names = sorted(t for t in admin.list_topics() if not t.startswith("__"))
        finally:
            admin.close()
        if not names:
            return {}
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, client_id="avwatch-status")
        try:
            result = {}
            for name in names:
                parts = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or [])]
                begin = consumer.beginning_offsets(parts)
                end = consumer.end_offsets(parts)
                result[name] = {"partitions": len(parts),
                                "messages": sum(end[p] - begin[p] for p in parts)}
            return result
        finally:
            consumer.close()

    # -- lifecycle -------------------------------------------------------------------------------

    def up(self, timeout_s: float = 90.0, echo=print) -> str:
        """Start the broker unless it is already up; return the bootstrap address."""
        if self.pid() is not None:
            if not self.accepts_connections():
                self._wait_ready(timeout_s)
            echo(f"Kafka broker already up at {self.bootstrap} (state: {self.root})")
            return self.bootstrap
        for port in (self.port, self.controller_port):
            if _port_open(port):
                raise AvwatchError(
                    f"port {HOST}:{port} is already in use by another process, so the local Kafka broker "
                    f"cannot bind it. Stop that process, or choose other ports with "
                    f"`avwatch stack up --port N` (uses N and N+1).")
        java = jars.require_java()
        classpath = ":".join(str(p) for p in jars.resolve("kafka"))
        self._configure()
        self._format_storage(java, classpath)
        log4j = self.kafka_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES.format(log=self.log_file))
        cmd = [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
               "kafka.Kafka", str(self.properties)]
        with open(self.kafka_dir / "broker.out", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.kafka_dir)
        self.pid_file.write_text(f"{proc.pid}\n")
        try:
            self._wait_ready(timeout_s, proc)
        except AvwatchError:
            self.down(echo=lambda *_: None)
            raise
        echo(f"Kafka broker up at {self.bootstrap} (state: {self.root}, log: {self.log_file})")
        return self.bootstrap

    def down(self, purge: bool = False, timeout_s: float = 30.0, echo=print) -> None:
        pid = self.pid()
        if pid is None:
            echo(f"Kafka broker is not running (state: {self.root})")
        else:
            os.kill(pid, signal.SIGTERM)  # a controlled shutdown flushes the logs
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.1)
            self.pid_file.unlink(missing_ok=True)
            echo(f"Kafka broker at {self.bootstrap} stopped")
        if purge and self.kafka_dir.exists():
            import shutil

            shutil.rmtree(self.kafka_dir)
            echo(f"removed broker data under {self.kafka_dir}")

    def status(self) -> dict:
        pid = self.pid()
        info = {"state": str(self.root), "bootstrap": self.bootstrap, "running": pid is not None,
                "pid": pid, "log": str(self.log_file)}
        if pid is not None and self.accepts_connections():
            info["topics"] = self.topics()
        return info

    # -- internals -------------------------------------------------------------------------------

    def _configure(self) -> None:
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        if not self.properties.exists():
            self.properties.write_text(SERVER_PROPERTIES.format(
                host=HOST, port=self.port, controller_port=self.controller_port,
                data_dir=self.data_dir, max_bytes=MAX_MESSAGE_BYTES))

    def _format_storage(self, java: str, classpath: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        proc = subprocess.run([java, "-cp", classpath, "-Dlog4j2.configurationFile=none",
                               "kafka.tools.StorageTool", "format", "-t", cluster_id,
                               "-c", str(self.properties)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AvwatchError(f"could not format the Kafka data folder {self.data_dir}:\n"
                               f"{(proc.stdout + proc.stderr).strip()[-2000:]}")

    def _wait_ready(self, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AvwatchError(f"the Kafka broker exited during start-up (exit {proc.returncode}); "
                                   f"see {self.log_file} and {self.kafka_dir / 'broker.out'}")
            if self.accepts_connections() and _broker_answers(self.bootstrap):
                return
            time.sleep(0.5)
        raise AvwatchError(f"the Kafka broker did not accept connections on {self.bootstrap} within "
                           f"{timeout_s:.0f} s; see {self.log_file}")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _broker_answers(bootstrap: str) -> bool:
    """True once the broker serves metadata (the port opens a little before that)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                 client_id="avwatch-ready")
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
