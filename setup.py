"""avwatch: an audio/video quality monitor on Apache Spark.

Packages, one job each; each imports only the ones listed above it (tests/test_layering.py):
  schemas/    versioned Arrow record definitions and their encode/decode helpers
  detectors/  pure numpy/pandas defect detectors (stage 1 per frame, stage 2 per stream over time)
  avwatch/    the core: media decoding, the local stack (Kafka broker, jar cache), local runner, sink, report
  jobs/       everything that talks to Kafka or Spark: publish, stream, reanalyze
  cli/        the `avwatch` command line
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def pinned_requirements() -> list[str]:
    """requirements.txt is the one place pins live; setup.py reads it rather than repeating it."""
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="avwatch",
    version="0.1.0",
    description="Audio/video quality monitoring of live streams and files on Spark Structured Streaming",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["avwatch", "avwatch.*", "jobs", "jobs.*", "detectors", "detectors.*",
                                    "schemas", "schemas.*", "cli", "cli.*"]),
    package_data={"avwatch": ["jvm/*.xml", "jvm/*.properties"], "jobs": ["*.properties"]},
    install_requires=pinned_requirements(),
    entry_points={"console_scripts": ["avwatch = cli.main:run"]},
    license="Apache-2.0",
)
