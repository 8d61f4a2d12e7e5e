"""Resolve the JVM jars avwatch needs from Maven Central, once, into the jar cache.

Two independent jar sets, each described by a small pom under avwatch/jvm/:
  spark   the Kafka connector and Delta Lake for Spark (`spark.jars`), matched to the pinned pyspark
  kafka   the Apache Kafka broker and its logging backend (run in its own JVM by avwatch.stack)

`mvn dependency:copy-dependencies` copies a pom's runtime closure into <cache>/<set>-<pom hash>/.
A folder that is complete (marked by a stamp file) is used as is, so a second run needs no network;
changing a pom changes its hash and resolves anew. A file lock keeps parallel callers (tests, demo,
spark-submit.sh) from resolving the same set twice.

Spark's own jars (pyspark/jars) win over transitive copies: a jar whose artifact already ships with
pyspark is left out of the Spark set, so there is one version of each library on Spark's classpath.
"""
from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from avwatch.errors import AvwatchError
from avwatch.paths import PACKAGE_DIR, cache_dir

POMS = {
    "spark": PACKAGE_DIR / "jvm" / "spark-connectors.pom.xml",
    "kafka": PACKAGE_DIR / "jvm" / "kafka-broker.pom.xml",
}
STAMP = ".complete"
_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[^-]*(?:-[^-]+)*)\.jar$")


def require_java() -> str:
    """Path of the java launcher (JAVA_HOME first), or a clear error naming the fix."""
    import os

    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise AvwatchError("Java is not installed: avwatch needs a Java 17+ runtime for Spark and Kafka. "
                           "Install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) "
                           "or set JAVA_HOME.")
    return java


def _require_maven() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise AvwatchError("Maven (mvn) is not installed: avwatch resolves its Spark and Kafka jars from "
                           "Maven Central with it. Install it (Debian/Ubuntu: apt-get install maven) "
                           "or put mvn on PATH.")
    return mvn


def pom_version(jar_set: str, prop: str) -> str:
    """A <properties> value of a pom, e.g. pom_version('spark', 'spark.version')."""
    text = POMS[jar_set].read_text()
    match = re.search(rf"<{re.escape(prop)}>([^<]+)</{re.escape(prop)}>", text)
    if not match:
        raise KeyError(f"{prop} is not a property of {POMS[jar_set].name}")
    return match.group(1)


def set_dir(jar_set: str) -> Path:
    if jar_set not in POMS:
        raise AvwatchError(f"unknown jar set {jar_set!r}: choose one of {', '.join(POMS)}")
    digest = hashlib.sha256(POMS[jar_set].read_bytes()).hexdigest()[:12]
    return cache_dir() / "jars" / f"{jar_set}-{digest}"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pyspark_artifacts() -> set[str]:
    """Artifacts of the jars pyspark ships, found without importing pyspark (the core stays free of it)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise AvwatchError("pyspark is not installed: run `make install` (or pip install -r requirements.txt)")
    jars = Path(list(spec.submodule_search_locations)[0]) / "jars"
    names = set()
    for jar in jars.glob("*.jar"):
        match = _JAR_NAME.match(jar.name)
        if match:
            names.add(match.group("artifact"))
    return names


def resolve(jar_set: str, quiet: bool = False) -> list[Path]:
    """The jars of one set, resolving them from Maven Central on first use."""
    target = set_dir(jar_set)
    if (target / STAMP).exists():
        return sorted(target.glob("*.jar"))
    with _locked(target.parent / f".{jar_set}.lock"):
        if (target / STAMP).exists():  # another process finished while we waited
            return sorted(target.glob("*.jar"))
        mvn = _require_maven()
        require_java()
        if not quiet:
            print(f"avwatch: resolving the {jar_set} jars from Maven Central into {target} (once) ...",
                  flush=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{jar_set}-") as tmp:
            staging = Path(tmp) / "jars"
            cmd = [mvn, "-B", "-q", "-f", str(POMS[jar_set]), "dependency:copy-dependencies",
                   f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
                raise AvwatchError(
                    f"could not resolve the {jar_set} jars from Maven Central (mvn exit {proc.returncode}).\n"
                    f"{tail}\n"
                    "Check that https://repo.maven.apache.org is reachable (proxy settings go in "
                    "~/.m2/settings.xml), then run `avwatch jars` again.")
            if jar_set == "spark":
                shipped = _pyspark_artifacts()
                for jar in list(staging.glob("*.jar")):
                    match = _JAR_NAME.match(jar.name)
                    if match and match.group("artifact") in shipped:
                        jar.unlink()
            (staging / STAMP).write_text("resolved by avwatch/jars.py\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
    return sorted(target.glob("*.jar"))


def spark_jars_csv() -> str:
    """The Spark jar set as the comma-separated list `spark.jars` and `--jars` take."""
    return ",".join(str(p) for p in resolve("spark"))
