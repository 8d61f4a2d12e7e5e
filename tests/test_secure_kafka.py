"""Secure Kafka (SASL/TLS): every Kafka client of the project takes its settings from one --kafka-config
file of standard Kafka client properties.

Real parts: certificates made here with openssl (a CA and a broker certificate signed by it, a PKCS12
keystore for the broker, the CA as PEM for the clients), the project's own local broker with a SASL_SSL
listener (SASL/PLAIN and SCRAM), the converter and the streaming job (Spark's Java Kafka clients) through
it, the alerts read back with the secured kafka-python consumer. Plus the properties parser and its
translation, with their errors.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from avwatch.errors import AvwatchError
from avwatch.kafka_config import load_properties, parse_properties, python_client_args, spark_options
from tests.conftest import free_port_pair

PASSWORD = "avwatch-test-pass"
USER, USER_PASSWORD = "avwatch", "s3cret-Pa55"
JAAS = "org.apache.kafka.common.security.{module}LoginModule required username=\"{user}\" password=\"{password}\";"


def openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("openssl is not installed")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a broker key + certificate for 127.0.0.1 signed by it (PKCS12, for the broker's JVM), the CA
    certificate as PEM (for the clients). openssl rather than keytool: a JVM start per step costs ~1.5 s."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=avwatch test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder)
    openssl("req", "-new", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "broker.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "broker.crt", "-days", "2", "-extfile", "broker.ext", cwd=folder)
    openssl("pkcs12", "-export", "-in", "broker.crt", "-inkey", "broker.key", "-certfile", "ca.pem", "-name", "broker",
            "-out", "broker.p12", "-passout", f"pass:{PASSWORD}", cwd=folder)
    return {"ca": folder / "ca.pem", "keystore": folder / "broker.p12"}


def client_file(path: Path, ca: Path, mechanism: str = "PLAIN", password: str = USER_PASSWORD) -> Path:
    module = "plain.Plain" if mechanism == "PLAIN" else "scram.Scram"
    jaas = JAAS.format(module=module, user=USER, password=password)
    path.write_text("# avwatch test client: SASL over TLS\n"
                    "security.protocol=SASL_SSL\n"
                    f"sasl.mechanism={mechanism}\n"
                    f"sasl.jaas.config={jaas[:60]}\\\n    {jaas[60:]}\n"   # a continued line, as people write it
                    "ssl.truststore.type=PEM\n"
                    f"ssl.truststore.location={ca}\n"
                    "ssl.endpoint.identification.algorithm=https\n")
    return path


@pytest.fixture(scope="module")
def secure_broker():
    """The project's local broker with a SASL_SSL listener (PLAIN and SCRAM-SHA-256 users), own ports and
    state; yields (stack, certificate paths, the PLAIN client properties file, the SCRAM one)."""
    from avwatch.stack import SecureListener, Stack

    root = Path(tempfile.mkdtemp(prefix="avwatch-test-secure-"))
    certs = make_certificates(root)
    port = free_port_pair()
    secure_port = free_port_pair()
    while secure_port in (port - 1, port, port + 1):
        secure_port = free_port_pair()
    listener = SecureListener(port=secure_port, keystore=certs["keystore"], keystore_password=PASSWORD,
                              users=((USER, USER_PASSWORD),), mechanisms=("PLAIN", "SCRAM-SHA-256"))
    stack = Stack.at(root / "state", port, secure=listener)
    stack.up(echo=lambda *_: None)
    try:
        yield {"stack": stack, "certs": certs, "root": root,
               "plain": client_file(root / "client.properties", certs["ca"]),
               "scram": client_file(root / "client-scram.properties", certs["ca"], "SCRAM-SHA-256")}
    finally:
        stack.down(purge=True, echo=lambda *_: None)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def black_clip(tmp_path_factory):
    """3.2 s of real footage (small) with the picture cut to black from 1.0 to 2.4 s, and a tone."""
    from avwatch.samples import read_rgb_frames, real_clip, sine, write_clip

    frames = read_rgb_frames(real_clip("bikes"), limit=80, size=(160, 90))
    for i in range(25, 60):
        frames[i] = np.zeros_like(frames[i])
    return write_clip(tmp_path_factory.mktemp("secure") / "blackout.mkv", frames, 25, audio=sine(3.2))


# -- the whole path through the SASL_SSL listener ------------------------------------------------------------


@pytest.mark.spark
@pytest.mark.kafka
def test_publish_stream_and_alerts_through_sasl_ssl(secure_broker, black_clip, spark, tmp_path):
    from deltalake import DeltaTable

    from cli.main import main as avwatch_main
    from jobs.kafka_io import read_all
    from jobs.stream import build_parser, run

    stack, config_file = secure_broker["stack"], secure_broker["plain"]
    secure = stack.secure_bootstrap
    topics = ["secure.video", "secure.audio", "secure.alerts"]
    code = avwatch_main(["publish", str(black_clip), "--stream-id", "vault", "--bootstrap", secure,
                         "--kafka-config", str(config_file), "--video-topic", topics[0], "--audio-topic", topics[1],
                         "--topic-partitions", "2", "--topic-replication", "1", "--no-progress"])
    assert code == 0

    sink = tmp_path / "sink"
    args = build_parser().parse_args(["--bootstrap", secure, "--kafka-config", str(config_file),
                                      "--video-topic", topics[0], "--audio-topic", topics[1],
                                      "--alerts-topic", topics[2], "--topic-partitions", "2",
                                      "--sink", str(sink), "--until-idle", "--detectors", "black,silence"])
    summary = run(args, spark=spark)
    assert summary["events"] >= 1 and summary["alerts"] >= summary["events"]  # open and closed states

    rows = DeltaTable(str(sink / "anomaly_events")).to_pyarrow_table().to_pylist()
    black = [r for r in rows if r["detector"] == "black"]
    assert [(r["stream_id"], round(r["start_s"], 2), round(r["end_s"], 2)) for r in black] == [("vault", 1.0, 2.4)]

    props = load_properties(config_file)
    alerts = read_all(secure, [topics[2]], client_config=props)
    assert {a.key.decode() for a in alerts} == {r["event_id"] for r in rows}
    assert len(alerts) == summary["alerts"]
    assert json.loads(next(a.value for a in alerts if a.key.decode() == black[0]["event_id"]))["detector"] == "black"

    # the topics were made with the given partition count, seen by the secured status query
    from jobs.stack_status import stack_status

    info = stack_status(stack, props)
    assert info["secure_bootstrap"] == secure
    assert {t: info["topics"][t]["partitions"] for t in topics} == {t: 2 for t in topics}
    assert info["topics"]["secure.video"]["messages"] > 0


# -- who is let in ----------------------------------------------------------------------------------------


@pytest.mark.kafka
def test_scram_user_is_let_in_and_status_uses_the_secure_listener(secure_broker):
    from jobs.kafka_io import admin_client

    props = load_properties(secure_broker["scram"])
    admin = admin_client(secure_broker["stack"].secure_bootstrap, props)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()


@pytest.mark.kafka
def test_clients_without_credentials_or_trust_are_refused(secure_broker):
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from jobs.kafka_io import admin_client, producer

    stack, certs = secure_broker["stack"], secure_broker["certs"]
    secure = stack.secure_bootstrap

    # no SASL, no TLS at all: the broker never answers a plaintext Kafka request on this port
    with pytest.raises(KafkaError):
        admin = KafkaAdminClient(bootstrap_servers=secure, request_timeout_ms=3000, bootstrap_timeout_ms=3000)
        try:
            admin.list_topics()
        finally:
            admin.close()

    # TLS with the right CA but a wrong password: authentication fails, named as such
    wrong = load_properties(client_file(secure_broker["root"] / "wrong.properties", certs["ca"],
                                        password="not-the-password"))
    with pytest.raises(AvwatchError, match="TLS handshake succeeded, but the broker did not let the client in: "
                                           "check the user and password"):
        admin_client(secure, wrong, bootstrap_timeout_ms=3000)

    # the right password but no CA that signs the broker: the TLS handshake is refused
    untrusted = load_properties(secure_broker["plain"])
    del untrusted["ssl.truststore.location"], untrusted["ssl.truststore.type"]
    with pytest.raises(AvwatchError, match="certificate is not trusted .* ssl.truststore.location"):
        producer(secure, untrusted, bootstrap_timeout_ms=3000)


# -- the properties file and its translation (no broker) ----------------------------------------------------


def test_java_properties_syntax():
    text = ("# comment\n"
            "  ! another comment\n"
            "\n"
            "security.protocol = SASL_SSL\n"
            "sasl.mechanism: SCRAM-SHA-512\n"
            "ssl.truststore.type PEM\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
            "        username=\"alice\" \\\n"
            "        password=\"p\\\\\"w=d\";\n"
            "key\\=with\\:odd\\ chars = tab\\there \\u00e9\n"
            "ssl.truststore.location=C:\\\\certs\\\\ca.pem\n"
            "empty.value=\n")
    props = parse_properties(text, "f")
    assert props == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "ssl.truststore.type": "PEM",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" '
                            'password="p\\"w=d";',
        "key=with:odd chars": "tab\there é", "ssl.truststore.location": "C:\\certs\\ca.pem", "empty.value": ""}


@pytest.mark.parametrize("text, message", [
    ("security.protocol\n", r"f, line 1: 'security.protocol' has no value"),
    ("a=1\n=SASL_SSL\n", r"f, line 2: a value without a property name"),
    ("ssl.truststore.location=C:\\users\\ca.pem\n", r"f, line 1: malformed \\uXXXX escape"),
])
def test_bad_lines_name_the_file_line_and_fix(text, message):
    with pytest.raises(AvwatchError, match=message):
        parse_properties(text, "f")


def test_missing_file_and_bad_file_are_clear(tmp_path):
    with pytest.raises(AvwatchError, match=r"--kafka-config .*nope.properties: no such file; give the path"):
        load_properties(tmp_path / "nope.properties")
    bad = tmp_path / "bad.properties"
    bad.write_text("security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.jaas.config\n")
    with pytest.raises(AvwatchError, match=r"bad.properties, line 3: 'sasl.jaas.config' has no value"):
        load_properties(bad)
    assert load_properties(None) == {}


def test_translation_to_kafka_python_and_spark(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    props = parse_properties(client_file(tmp_path / "c.properties", ca).read_text())
    assert python_client_args(props) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_plain_username": USER,
        "sasl_plain_password": USER_PASSWORD, "ssl_cafile": str(ca), "ssl_check_hostname": True}
    props["ssl.endpoint.identification.algorithm"] = ""
    props["ssl.enabled.protocols"] = "TLSv1.3"    # JVM only: Spark gets it, kafka-python is fine without
    props["request.timeout.ms"] = "20000"
    args = python_client_args(props)
    assert args["ssl_check_hostname"] is False and args["request_timeout_ms"] == 20000
    props["bootstrap.servers"] = "elsewhere:9093"
    options = spark_options("broker:9093", props)
    assert options["kafka.bootstrap.servers"] == "broker:9093"
    assert {k[len("kafka."):]: v for k, v in options.items() if k != "kafka.bootstrap.servers"} == \
        {k: v for k, v in props.items() if k != "bootstrap.servers"}
    assert python_client_args({}) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("props, message", [
    ({"security.protocol": "SSL", "ssl.truststore.location": "/etc/kafka/truststore.jks",
      "ssl.truststore.password": "x"}, r"ssl.truststore.type=JKS .* set ssl.truststore.type=PEM"),
    ({"security.protocol": "SASL_SSL", "sasl.jaas.config": JAAS.format(module="plain.Plain", user="u", password="p")},
     r"sasl.mechanism=GSSAPI \(Kafka's default"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}, r"needs sasl.jaas.config"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
      "sasl.jaas.config": JAAS.format(module="scram.Scram", user="u", password="p")}, r"needs the login module"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
      "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\";"},
     r"has no password"),
    ({"security.protocol": "SSL", "ssl.keystore.type": "PKCS12", "ssl.keystore.location": "/k.p12"},
     r"ssl.keystore.type=PKCS12 .* `openssl pkcs12"),
    ({"security.protocol": "TLS"}, r"security.protocol=TLS is not one of"),
    ({"sasl.login.callback.handler.class": "x.Y"}, r"sasl.login.callback.handler.class: not honoured"),
    ({"client.id": "mine"}, r"client.id cannot be set here"),
])
def test_what_kafka_python_cannot_honour_is_a_clear_error(props, message):
    with pytest.raises(AvwatchError, match=message):
        python_client_args(props)


def test_every_kafka_entry_point_takes_kafka_config():
    from cli.main import build_parser as cli_parser
    from jobs.reanalyze import build_parser as reanalyze_parser
    from jobs.stream import build_parser as stream_parser

    stream = stream_parser().parse_args(["--sink", "s", "--kafka-config", "k", "--topic-partitions", "3",
                                         "--topic-replication", "3"])
    assert (stream.kafka_config, stream.topic_partitions, stream.topic_replication) == ("k", 3, 3)
    assert reanalyze_parser().parse_args(["--sink", "s", "--since", "1h", "--kafka-config", "k"]).kafka_config == "k"
    publish = cli_parser().parse_args(["publish", "a.ts", "--kafka-config", "k", "--topic-partitions", "2",
                                       "--topic-replication", "3"])
    assert (publish.kafka_config, publish.partitions, publish.replication) == ("k", 2, 3)
    assert cli_parser().parse_args(["publish", "a.ts", "--partitions", "6"]).partitions == 6  # the old spelling
    assert cli_parser().parse_args(["stack", "status", "--kafka-config", "k"]).kafka_config == "k"
    assert cli_parser().parse_args(["analyze", "a.ts", "--sink", "s", "--kafka-config", "k"]).kafka_config == "k"
