"""Which detectors run, with which options: built from names, a mapping, or a JSON/TOML file.

A config file looks like (TOML):

    detectors = ["black", "freeze", "silence"]   # omit for all
    [options.black]
    min_duration_s = 2.0

Several job instances can each take a subset of detectors over the same topics (the way Prime Video
split theirs), each with its own config.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from detectors.base import Detector
from detectors.registry import DEFAULT_NAMES, NAMES, OPTIONAL, REGISTRY


def parse_names(text: str | None) -> list[str] | None:
    """'black,freeze' -> ['black', 'freeze']; None/'' -> None (all). Unknown names are an error."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return names


@dataclass(frozen=True)
class DetectorConfig:
    """An ordered set of configured detectors."""

    detectors: tuple[Detector, ...]

    @classmethod
    def build(cls, names: list[str] | None = None, options: dict[str, dict] | None = None) -> "DetectorConfig":
        names = list(names) if names else list(DEFAULT_NAMES)  # optional checks only when named
        options = dict(options or {})
        unknown = [n for n in list(names) + list(options) if n not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown detector(s) {', '.join(sorted(set(unknown)))}; "
                             f"choose from {', '.join(NAMES)}")
        built = []
        for name in names:
            klass = REGISTRY[name]
            built.append(klass(klass.Options.from_mapping(options.get(name))))
        return cls(tuple(built))

    @classmethod
    def from_file(cls, path: str | Path, names: list[str] | None = None) -> "DetectorConfig":
        """Read a .toml or .json config; `names` (e.g. from --detectors) overrides its list."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"detector config {path} does not exist")
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        return cls.build(names or data.get("detectors"), data.get("options"))

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    def get(self, name: str) -> Detector | None:
        return next((d for d in self.detectors if d.name == name), None)

    def needs(self, kind: str) -> bool:
        return any(kind in d.inputs for d in self.detectors)

    def describe(self, kind: str | None = None) -> dict:
        """Names, versions and options; with `kind`, of the detectors that read that kind's features."""
        return {d.name: {"version": d.version, "options": d.options.as_dict()} for d in self.detectors
                if kind is None or kind in d.inputs}

    def fingerprint(self) -> str:
        """A short hash of names, versions and options: which configuration produced a result."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A detector selection or config file that cannot be used; the message names it and the choices."""


def from_args(names_text: str | None = None, config_path: str | Path | None = None) -> DetectorConfig:
    """The config a command line names: comma-separated detector names (--detectors) and/or a .toml/.json
    file (--config); either may be absent (all detectors, default options). ConfigError when unusable."""
    try:
        names = parse_names(names_text)
        return DetectorConfig.from_file(config_path, names) if config_path else DetectorConfig.build(names)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def options_reference_markdown() -> str:
    """Every detector's options as markdown tables (docs/detectors.md embeds it; a test keeps it current)."""
    lines = []
    for name in NAMES:
        klass = REGISTRY[name]
        summary = (sys.modules[klass.__module__].__doc__ or "").strip().splitlines()[0]
        optional = "; optional: runs only when named" if name in OPTIONAL else ""
        lines += [f"### {name}", "", f"{summary} (version {klass.version}; reads {', '.join(klass.inputs)}{optional})", "",
                  "| option | default | meaning |", "|---|---|---|"]
        for option, default, help_text in klass.Options.describe():
            lines.append(f"| `{option}` | `{default}` | {help_text.replace('|', '&#124;')} |")
        lines.append("")
    return "\n".join(lines)
