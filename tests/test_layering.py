"""The package layering, read from the source (no imports, no JVM): imports point only down.

    schemas  <-  detectors  <-  avwatch (core)  <-  jobs  <-  cli (the command line)

A module may import its own layer and the layers below it, never one above. avwatch's core, the
detectors and the schemas import neither pyspark nor kafka (kafka-python): those belong to jobs/.
Every import counts, the ones inside functions included (that is where the heavy ones hide).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["schemas", "detectors", "avwatch", "jobs", "cli"]
ENGINES = {"pyspark", "kafka"}             # what only jobs/ (and the command line through it) may import
ENGINE_FREE = {"schemas", "detectors", "avwatch"}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the source, at any depth, relative ones resolved
    against `module` (dotted name of the file, e.g. 'avwatch.convert.decode'); importlib.import_module and
    __import__ with a literal name count too."""
    package = module.split(".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(layer: str, module: str, source: str) -> list[str]:
    """What a module of `layer` imports that the layering forbids."""
    rank = LAYERS.index(layer)
    out = []
    for line, name in imported_modules(source, module):
        top = name.split(".")[0]
        if top in LAYERS and LAYERS.index(top) > rank:
            out.append(f"{module}:{line} imports {name} ({top} is above {layer})")
        if layer in ENGINE_FREE and top in ENGINES:
            out.append(f"{module}:{line} imports {name} ({layer} must not import {top})")
    return out


def project_modules():
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if parts[-1] == "__init__":
                module += ".__init__"  # relative imports in a package's __init__ resolve against the package
            yield layer, module, path


def test_every_layer_imports_only_downwards_and_the_core_is_free_of_spark_and_kafka():
    found = []
    seen = set()
    for layer, module, path in project_modules():
        seen.add(layer)
        found += violations(layer, module, path.read_text(encoding="utf-8"))
    assert seen == set(LAYERS)
    assert found == []


def test_the_command_line_is_its_own_package():
    assert (ROOT / "cli" / "main.py").is_file()
    assert not (ROOT / "avwatch" / "cli.py").exists()


@pytest.mark.parametrize("layer, module, source, expected", [
    # an upward import inside a function is found
    ("avwatch", "avwatch.x", "def f():\n    from jobs.entry import job_main\n", ["avwatch.x:2 imports jobs.entry"]),
    # the engines, also by importlib, also relative-looking names resolved
    ("avwatch", "avwatch.x", "import importlib\nimportlib.import_module('pyspark.sql')\n",
     ["avwatch.x:2 imports pyspark.sql"]),
    ("detectors", "detectors.x", "import kafka.errors\n", ["detectors.x:1 imports kafka.errors"]),
    ("schemas", "schemas.x", "from avwatch import errors\n", ["schemas.x:1 imports avwatch"]),
    ("avwatch", "avwatch.convert.x", "from ..errors import AvwatchError\n", []),
    ("jobs", "jobs.x", "from pyspark.sql import functions\nfrom avwatch import stack\n", []),
    ("jobs", "jobs.x", "def main():\n    import cli.main\n", ["jobs.x:2 imports cli.main"]),
])
def test_the_checker_sees_what_it_should(layer, module, source, expected):
    got = violations(layer, module, source)
    assert [g.split(" (")[0] for g in got] == expected
