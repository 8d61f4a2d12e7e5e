"""Kafka client settings from one place: a file of standard Kafka client properties (`--kafka-config FILE`).

The file is what a Java Kafka client reads (java.util.Properties format), e.g. for SASL/PLAIN over TLS:

    security.protocol=SASL_SSL
    sasl.mechanism=PLAIN
    sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\
        username="avwatch" password="secret";
    ssl.truststore.type=PEM
    ssl.truststore.location=/etc/avwatch/kafka-ca.pem

Every Kafka client of the project takes its settings from this one dict of properties:
  - Spark's Kafka source and sink (Java clients): every property with the `kafka.` prefix (spark_options);
  - kafka-python (the converter's producer, the alerts producer, admin and consumers): the properties
    translated to its keyword arguments (python_client_args). What kafka-python cannot honour (a JKS or
    PKCS12 store, Kerberos, OAuth) is an AvwatchError naming the property and the fix, never ignored.
A CA certificate in PEM with `ssl.truststore.type=PEM` serves both: Java clients read PEM truststores.

Pure module: no kafka or pyspark imports.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from avwatch.errors import AvwatchError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOGIN_MODULES = {"PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
                 "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
                 "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule"}

# Properties that only tune the JVM's TLS machinery: Spark gets them, kafka-python has no equivalent and
# is safe without them (it negotiates TLS 1.2+ with Python's defaults).
JVM_ONLY = frozenset({"ssl.protocol", "ssl.enabled.protocols", "ssl.keymanager.algorithm",
                      "ssl.trustmanager.algorithm", "ssl.secure.random.implementation", "ssl.engine.factory.class"})
# General client properties with the same meaning (and an integer value) in kafka-python.
PYTHON_INT_SETTINGS = {"request.timeout.ms": "request_timeout_ms", "retry.backoff.ms": "retry_backoff_ms",
                       "reconnect.backoff.ms": "reconnect_backoff_ms",
                       "reconnect.backoff.max.ms": "reconnect_backoff_max_ms",
                       "connections.max.idle.ms": "connections_max_idle_ms",
                       "metadata.max.age.ms": "metadata_max_age_ms"}
# Set by each client of the project itself (serializers, ids, group handling); a file must not change them.
PROJECT_OWNED = frozenset({"key.serializer", "value.serializer", "key.deserializer", "value.deserializer",
                           "client.id", "group.id", "enable.auto.commit", "auto.offset.reset"})


# -- the file ----------------------------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str, where: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(text):
            break  # a lone trailing backslash (only possible at the end of the file): dropped, as Java does
        c = text[i]
        if c == "u":
            digits = text[i + 1:i + 5]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise AvwatchError(f"{where}: malformed \\uXXXX escape {text[i - 1:i + 5]!r}; write the character "
                                   f"itself, or \\\\ for a backslash (e.g. in a Windows path)")
            out.append(chr(int(digits, 16)))
            i += 5
        else:
            out.append(_ESCAPES.get(c, c))
            i += 1
    return "".join(out)


def _logical_lines(text: str):
    """(first line number, logical line) pairs: comments and blank lines dropped, continuations joined."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].lstrip(" \t\f")
        i += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and i < len(lines):
            line = line[:-1] + lines[i].lstrip(" \t\f")
            i += 1
        if _continues(line):
            line = line[:-1]
        yield start + 1, line


def _continues(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Java .properties text -> dict, with java.util.Properties.load's rules for the common cases: `#`/`!`
    comments, `key=value`, `key: value` and `key value`, backslash escapes (\\t \\n \\uXXXX, \\= \\: \\#,
    \\\\), and a trailing backslash continuing the line. A line with a key but no value is an error here
    (Java would read an empty value; in a client config it is always a mistake)."""
    props: dict[str, str] = {}
    for number, line in _logical_lines(text):
        where = f"{source}, line {number}"
        i = 0
        while i < len(line) and line[i] not in "=: \t\f":
            i += 2 if line[i] == "\\" else 1
        raw_key = line[:i]
        rest = line[i:].lstrip(" \t\f")
        has_separator = rest[:1] in ("=", ":")
        if has_separator:
            rest = rest[1:].lstrip(" \t\f")
        key = _unescape(raw_key, where)
        if not key:
            raise AvwatchError(f"{where}: a value without a property name ({line.strip()!r}); write `name=value`")
        if not has_separator and not rest:
            raise AvwatchError(f"{where}: {key!r} has no value; write `{key}=VALUE` (a continued line ends with \\)")
        props[key] = _unescape(rest, where)
    return props


def load_properties(path: str | os.PathLike | None) -> dict[str, str]:
    """The properties of a --kafka-config file ({} without one). Errors name the file and the fix."""
    if path is None or str(path) == "":
        return {}
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AvwatchError(f"--kafka-config {path}: no such file; give the path of a Kafka client properties file "
                           f"(security.protocol=..., see docs/operations.md, 'Secure Kafka')") from None
    except IsADirectoryError:
        raise AvwatchError(f"--kafka-config {path}: is a folder; give the path of a Kafka client properties "
                           f"file") from None
    except UnicodeDecodeError:
        raise AvwatchError(f"--kafka-config {path}: not a text file; give a Kafka client properties file "
                           f"(key=value lines)") from None
    except PermissionError:
        raise AvwatchError(f"--kafka-config {path}: cannot be read by this user; check its permissions") from None
    props = parse_properties(text, source=f"--kafka-config {path}")
    python_client_args(props, source=f"--kafka-config {path}")  # every problem now, naming the file
    return props


def client_properties(args) -> dict[str, str]:
    """The properties of the `--kafka-config` argument of parsed command-line args ({} without one)."""
    return load_properties(getattr(args, "kafka_config", None))


def check(props: dict[str, str], source: str = "the Kafka client properties") -> None:
    """Reject what no client of the project would honour, before any client is built."""
    owned = sorted(set(props) & PROJECT_OWNED)
    if owned:
        raise AvwatchError(f"{source}: {', '.join(owned)} cannot be set here: each avwatch client sets it itself; "
                           f"remove the line(s)")
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise AvwatchError(f"{source}: security.protocol={props['security.protocol']} is not one of "
                           f"{', '.join(SECURITY_PROTOCOLS)}")


# -- Spark (Java clients) ----------------------------------------------------------------------------

def spark_options(bootstrap: str, props: dict[str, str] | None = None) -> dict[str, str]:
    """Options of Spark's Kafka source and sink: kafka.bootstrap.servers plus every property prefixed with
    `kafka.` (the Java client reads them as they are). The bootstrap given wins over the file's."""
    options = {f"kafka.{k}": v for k, v in (props or {}).items() if k != "bootstrap.servers"}
    options["kafka.bootstrap.servers"] = bootstrap
    return options


# -- kafka-python ------------------------------------------------------------------------------------

def parse_jaas(value: str, source: str = "sasl.jaas.config") -> tuple[str, dict[str, str]]:
    """`Module required key="value" ...;` -> (module class, options). One login module entry only."""
    m = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b(.*)$", value, re.S)
    if not m:
        raise AvwatchError(f"{source}: expected `LoginModuleClass required username=\"...\" password=\"...\";`, "
                           f"got {value.strip()[:60]!r}")
    module, rest = m.group(1), m.group(3)
    options: dict[str, str] = {}
    pos = 0
    token = re.compile(r'\s*([\w.\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))|\s*;\s*$|\s*$', re.S)
    while pos < len(rest):
        t = token.match(rest, pos)
        if t is None or t.end() == pos:
            raise AvwatchError(f"{source}: cannot read the options of {module} near {rest[pos:pos + 30].strip()!r}; "
                               f"write them as key=\"value\" pairs ending with ';'")
        if t.group(1):
            raw = t.group(2) if t.group(2) is not None else t.group(3)
            options[t.group(1)] = re.sub(r"\\(.)", r"\1", raw)
        pos = t.end()
    return module, options


def python_client_args(props: dict[str, str] | None, source: str = "the Kafka client properties") -> dict:
    """The properties as kafka-python keyword arguments (KafkaProducer, KafkaConsumer, KafkaAdminClient).

    An AvwatchError names any property kafka-python cannot honour and the way to express it instead."""
    props = dict(props or {})
    check(props, source)
    out: dict = {}
    protocol = props.pop("security.protocol", "PLAINTEXT").upper()
    out["security_protocol"] = protocol
    uses_sasl = protocol.startswith("SASL_")
    uses_ssl = protocol.endswith("SSL")

    explicit_mechanism = "sasl.mechanism" in props
    mechanism = props.pop("sasl.mechanism", "GSSAPI").upper()
    jaas = props.pop("sasl.jaas.config", None)
    if uses_sasl:
        if mechanism not in SASL_MECHANISMS:
            default = "" if explicit_mechanism else " (Kafka's default when sasl.mechanism is not set)"
            raise AvwatchError(f"{source}: sasl.mechanism={mechanism}{default} is not supported by avwatch's Python "
                               f"clients (kafka-python here: {', '.join(SASL_MECHANISMS)}); set sasl.mechanism to "
                               f"one of them, with a matching user")
        if jaas is None:
            raise AvwatchError(f"{source}: security.protocol={protocol} needs sasl.jaas.config, e.g. "
                               f"sasl.jaas.config={LOGIN_MODULES[mechanism]} required username=\"USER\" "
                               f"password=\"PASSWORD\";")
        module, options = parse_jaas(jaas, f"{source}: sasl.jaas.config")
        if module != LOGIN_MODULES[mechanism]:
            raise AvwatchError(f"{source}: sasl.mechanism={mechanism} needs the login module "
                               f"{LOGIN_MODULES[mechanism]} in sasl.jaas.config, not {module}")
        missing = [k for k in ("username", "password") if k not in options]
        if missing:
            raise AvwatchError(f"{source}: sasl.jaas.config has no {' or '.join(missing)}; write "
                               f"{module} required username=\"USER\" password=\"PASSWORD\";")
        out.update(sasl_mechanism=mechanism, sasl_plain_username=options["username"],
                   sasl_plain_password=options["password"])

    ssl_keys = sorted(k for k in props if k.startswith("ssl."))
    if ssl_keys and not uses_ssl:
        # Java clients ignore ssl.* without TLS; so do we, but keep them for Spark (spark_options).
        for k in ssl_keys:
            props.pop(k)
    if uses_ssl:
        store_type = props.pop("ssl.truststore.type", "JKS").upper()
        location = props.pop("ssl.truststore.location", None)
        props.pop("ssl.truststore.password", None)  # PEM truststores have none; other types are refused below
        if props.pop("ssl.truststore.certificates", None) is not None:
            raise AvwatchError(f"{source}: ssl.truststore.certificates (inline PEM) cannot be used by the Python "
                               f"clients; put the CA certificate(s) in a PEM file and set "
                               f"ssl.truststore.type=PEM and ssl.truststore.location=FILE")
        if location is not None:
            if store_type != "PEM":
                raise AvwatchError(f"{source}: ssl.truststore.type={store_type} ({location}) cannot be read by the "
                                   f"Python clients (kafka-python); export the CA certificate as PEM (e.g. `keytool "
                                   f"-exportcert -rfc -alias CA -keystore {Path(location).name} -file ca.pem`) and "
                                   f"set ssl.truststore.type=PEM and ssl.truststore.location=ca.pem: Java clients "
                                   f"(Spark) read PEM truststores too")
            _readable(location, "ssl.truststore.location", source)
            out["ssl_cafile"] = location
        key_type = props.pop("ssl.keystore.type", "JKS").upper()
        keystore = props.pop("ssl.keystore.location", None)
        key_password = props.pop("ssl.key.password", None)
        props.pop("ssl.keystore.password", None)  # a PEM keystore has none (its key's is ssl.key.password)
        if props.pop("ssl.keystore.key", None) is not None or props.pop("ssl.keystore.certificate.chain", None):
            raise AvwatchError(f"{source}: inline ssl.keystore.key / ssl.keystore.certificate.chain cannot be used "
                               f"by the Python clients; put the private key and certificate chain in one PEM file "
                               f"and set ssl.keystore.type=PEM and ssl.keystore.location=FILE")
        if keystore is not None:
            if key_type != "PEM":
                raise AvwatchError(f"{source}: ssl.keystore.type={key_type} ({keystore}) cannot be read by the "
                                   f"Python clients (kafka-python); convert the client key and certificate chain "
                                   f"to one PEM file (e.g. `openssl pkcs12 -in client.p12 -nodes -out client.pem`) "
                                   f"and set ssl.keystore.type=PEM and ssl.keystore.location=client.pem")
            _readable(keystore, "ssl.keystore.location", source)
            out["ssl_certfile"] = keystore
            if key_password is not None:
                out["ssl_password"] = key_password
        algorithm = props.pop("ssl.endpoint.identification.algorithm", "https")
        if algorithm.strip().lower() not in ("https", ""):
            raise AvwatchError(f"{source}: ssl.endpoint.identification.algorithm={algorithm} is not understood; use "
                               f"https (check the broker's host name, the default) or an empty value (do not)")
        out["ssl_check_hostname"] = algorithm.strip().lower() == "https"
        for k in [k for k in props if k in JVM_ONLY]:
            props.pop(k)

    props.pop("bootstrap.servers", None)  # the caller's bootstrap (--bootstrap, or this file's) is passed apart
    for key, name in PYTHON_INT_SETTINGS.items():
        if key in props:
            value = props.pop(key)
            try:
                out[name] = int(value)
            except ValueError:
                raise AvwatchError(f"{source}: {key}={value} must be a whole number") from None
    if props.get("client.dns.lookup") in ("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only"):
        out["client_dns_lookup"] = props.pop("client.dns.lookup")
    if props:
        names = ", ".join(sorted(props))
        raise AvwatchError(f"{source}: {names}: not honoured by the Python clients (kafka-python) that publish "
                           f"segments and alerts, so the two sides would connect differently; remove the "
                           f"propert{'ies' if len(props) > 1 else 'y'} or ask for support of "
                           f"{'them' if len(props) > 1 else 'it'}")
    return out


def _readable(path: str, key: str, source: str) -> None:
    if not Path(path).is_file():
        raise AvwatchError(f"{source}: {key}={path}: no such file; give the path of the PEM file")
