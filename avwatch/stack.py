"""The local stack: a real single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1.

The broker runs in its own JVM from the `kafka` jar set (avwatch.jars); its data, config, pid file and
log live in one state folder:
  <state>/kafka/server.properties   written on first `up`, kept after
  <state>/kafka/data/               the log dirs (formatted once with a cluster id)
  <state>/kafka/broker.pid
  <state>/kafka/broker.log          the broker's own log (log4j2); nothing goes to the terminal

`up` is idempotent, `down` keeps the data unless purge=True. Every failure the user can fix (busy port,
missing Java, broker that will not start) is an AvwatchError naming the fix.

Optionally (Stack.at(..., secure=SecureListener(...))) the broker also opens a SASL_SSL listener on
127.0.0.1: TLS with a PKCS12 or PEM keystore, SASL/PLAIN and/or SCRAM users. The plaintext listener stays
(it is the broker's own inter-broker and readiness listener); clients that should be secured are given
`secure_bootstrap` and a --kafka-config file (docs/operations.md, "Secure Kafka").
"""
from __future__ import annotations

import base64
import os
import re
import signal
import socket
import struct
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

# Appended to SERVER_PROPERTIES when the broker also opens a SASL_SSL listener.
SECURE_PROPERTIES = """\
# SASL_SSL listener on {host}:{port}: TLS (keystore below) + SASL {mechanisms}
listener.name.sasl_ssl.sasl.enabled.mechanisms={mechanisms}
listener.name.sasl_ssl.ssl.keystore.type={keystore_type}
listener.name.sasl_ssl.ssl.keystore.location={keystore}
{keystore_password}{jaas}"""
PLAIN_JAAS = "org.apache.kafka.common.security.plain.PlainLoginModule required"
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

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
class SecureListener:
    """A SASL_SSL listener on 127.0.0.1 beside the plaintext one.

    keystore: the broker's key and certificate chain, PKCS12 (.p12/.pfx) or PEM (PKCS#8 key + certificates);
    keystore_password: the PKCS12 store password, or a PEM file's key password (None: unencrypted PEM key);
    users: (name, password) pairs the broker accepts; SCRAM users are stored when the data folder is
    formatted (the first `up`), PLAIN users are read from server.properties at every start."""

    port: int
    keystore: Path
    users: tuple[tuple[str, str], ...]
    keystore_password: str | None = None
    mechanisms: tuple[str, ...] = ("PLAIN",)

    def __post_init__(self):
        bad = [m for m in self.mechanisms if m not in SASL_MECHANISMS]
        if bad or not self.mechanisms:
            raise AvwatchError(f"SASL mechanism(s) {', '.join(bad) or 'none'}: the local broker offers "
                               f"{', '.join(SASL_MECHANISMS)}")
        if not self.users:
            raise AvwatchError("a secure listener needs at least one (user, password)")
        for name, password in self.users:
            if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name) or any(c in password for c in '"\\\n,=[]'):
                raise AvwatchError(f"user {name!r}: names are letters, digits and _.@-; passwords may not contain "
                                   f"quotes, backslashes, newlines or ,=[]")
        if not Path(self.keystore).is_file():
            raise AvwatchError(f"keystore {self.keystore}: no such file (a PKCS12 .p12 or a PEM key + certificate)")

    @property
    def keystore_type(self) -> str:
        return "PEM" if Path(self.keystore).suffix.lower() in (".pem", ".crt", ".key") else "PKCS12"


@dataclass(frozen=True)
class Stack:
    """One local broker: where its state lives and which ports it binds on 127.0.0.1."""

    root: Path
    port: int = DEFAULT_PORT
    secure: SecureListener | None = None

    @classmethod
    def at(cls, state: str | os.PathLike | None = None, port: int | None = None,
           secure: SecureListener | None = None) -> "Stack":
        root = state_dir(state)
        stack = cls(root=root, port=port or DEFAULT_PORT, secure=secure)
        # The port a broker was first set up with stays its port, unless the caller names another.
        if port is None and stack.properties.exists():
            for line in stack.properties.read_text().splitlines():
                if line.startswith("advertised.listeners="):
                    plain = re.search(r"\bPLAINTEXT://[^,]*:(\d+)", line)
                    stack = cls(root=root, port=int(plain.group(1)), secure=secure)
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

    @property
    def secure_bootstrap(self) -> str | None:
        """HOST:PORT of the SASL_SSL listener, if this broker has one (given, or in its server.properties)."""
        if self.secure is not None:
            return f"{HOST}:{self.secure.port}"
        if self.properties.exists():
            m = re.search(r"^advertised\.listeners=.*SASL_SSL://([^,\s]+)", self.properties.read_text(), re.M)
            if m:
                return m.group(1)
        return None

    def bootstrap_for(self, client_config: dict | None) -> str:
        """The listener a client with these --kafka-config properties talks to: the SASL_SSL one for
        security.protocol=SASL_SSL (if the broker has it), else the plaintext one."""
        protocol = (client_config or {}).get("security.protocol", "PLAINTEXT").upper()
        if protocol == "SASL_SSL" and self.secure_bootstrap:
            return self.secure_bootstrap
        return self.bootstrap

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

    # -- lifecycle -------------------------------------------------------------------------------

    def up(self, timeout_s: float = 90.0, echo=print) -> str:
        """Start the broker unless it is already up; return the bootstrap address."""
        if self.pid() is not None:
            if not self.accepts_connections():
                self._wait_ready(timeout_s)
            echo(f"Kafka broker already up at {self.bootstrap} (state: {self.root})")
            return self.bootstrap
        for port in (self.port, self.controller_port) + ((self.secure.port,) if self.secure else ()):
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
        """State folder, bootstrap, pid, log; the topics are jobs/stack_status.py's (they need a Kafka client)."""
        pid = self.pid()
        info = {"state": str(self.root), "bootstrap": self.bootstrap, "running": pid is not None,
                "pid": pid, "log": str(self.log_file)}
        if self.secure_bootstrap:
            info["secure_bootstrap"] = self.secure_bootstrap
        return info

    # -- internals -------------------------------------------------------------------------------

    def _configure(self) -> None:
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        # Written once, kept after; with a secure listener rewritten at every `up` (its users, keystore or
        # port may have changed) -- the same node and data folder, so the formatted data stays valid.
        if not self.properties.exists() or self.secure is not None:
            text = SERVER_PROPERTIES.format(
                host=HOST, port=self.port, controller_port=self.controller_port,
                data_dir=self.data_dir, max_bytes=MAX_MESSAGE_BYTES)
            if self.secure is not None:
                text = self._with_secure_listener(text)
            self.properties.write_text(text)
            if self.secure is not None:
                self.properties.chmod(0o600)  # it holds the PLAIN users' passwords

    def _with_secure_listener(self, text: str) -> str:
        sec = self.secure
        listener = f"SASL_SSL://{HOST}:{sec.port}"
        text = (text.replace(f"CONTROLLER://{HOST}:{self.controller_port}\n",
                             f"CONTROLLER://{HOST}:{self.controller_port},{listener}\n")
                .replace(f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}\n",
                         f"advertised.listeners=PLAINTEXT://{HOST}:{self.port},{listener}\n")
                .replace("CONTROLLER:PLAINTEXT\n", "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL\n"))
        jaas = ""
        if "PLAIN" in sec.mechanisms:
            users = " ".join(f'user_{name}="{password}"' for name, password in sec.users)
            jaas += f"listener.name.sasl_ssl.plain.sasl.jaas.config={PLAIN_JAAS} {users};\n"
        for mechanism in sec.mechanisms:
            if mechanism.startswith("SCRAM-"):
                jaas += f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config={SCRAM_JAAS}\n"
        password = ""
        if sec.keystore_password is not None:
            key = "ssl.keystore.password" if sec.keystore_type == "PKCS12" else "ssl.key.password"
            password = f"listener.name.sasl_ssl.{key}={sec.keystore_password}\n"
        return text + SECURE_PROPERTIES.format(
            host=HOST, port=sec.port, mechanisms=",".join(sec.mechanisms), keystore_type=sec.keystore_type,
            keystore=Path(sec.keystore).resolve(), keystore_password=password, jaas=jaas)

    def _format_storage(self, java: str, classpath: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        scram = []  # SCRAM credentials live in the cluster metadata: stored when the data folder is formatted
        for mechanism in (self.secure.mechanisms if self.secure else ()):
            if mechanism.startswith("SCRAM-"):
                for name, password in self.secure.users:
                    scram += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        proc = subprocess.run([java, "-cp", classpath, "-Dlog4j2.configurationFile=none",
                               "kafka.tools.StorageTool", "format", "-t", cluster_id,
                               "-c", str(self.properties), *scram], capture_output=True, text=True)
        if proc.returncode != 0:
            raise AvwatchError(f"could not format the Kafka data folder {self.data_dir}:\n"
                               f"{(proc.stdout + proc.stderr).strip()[-2000:]}")

    def _wait_ready(self, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AvwatchError(f"the Kafka broker exited during start-up (exit {proc.returncode}); "
                                   f"see {self.log_file} and {self.kafka_dir / 'broker.out'}")
            if self.accepts_connections() and _broker_answers(self.port):
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


def _broker_answers(port: int, timeout_s: float = 3.0) -> bool:
    """True once the broker serves requests: it answers a Kafka ApiVersions request (v0, which every broker
    version accepts). The port opens a little before that; a KRaft broker starts answering only after it
    has caught up with the cluster metadata. Plain sockets: the core needs no Kafka client for this."""
    correlation_id, client_id = 1, b"avwatch-ready"
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id  # ApiVersions = key 18
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(header)) + header)
            size = struct.unpack(">i", _read_exactly(sock, 4))[0]
            if not 10 <= size <= 1 << 20:  # not a Kafka listener's answer to this
                return False
            body = _read_exactly(sock, size)
    except (OSError, struct.error):
        return False
    got_id, error_code, api_count = struct.unpack(">ihi", body[:10])
    return got_id == correlation_id and error_code == 0 and api_count > 0


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data
