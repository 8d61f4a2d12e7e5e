"""Where avwatch keeps things on disk: the jar cache and the local state folder.

Both are plain folders, overridable by environment variables, and ignored by git when they live in
the checkout:
  AVWATCH_CACHE  jar cache (default: <checkout>/.cache when run from a source checkout,
                 else ~/.cache/avwatch)
  AVWATCH_STATE  local state: broker data and logs, checkpoints, tables (default: ./.avwatch)
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent


def in_checkout() -> bool:
    """True when avwatch runs from a source checkout (editable install or PYTHONPATH)."""
    return (CHECKOUT_DIR / "setup.py").exists() and (CHECKOUT_DIR / "jobs").is_dir()


def cache_dir() -> Path:
    env = os.environ.get("AVWATCH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    if in_checkout():
        return CHECKOUT_DIR / ".cache"
    return Path.home() / ".cache" / "avwatch"


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("AVWATCH_STATE")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / ".avwatch").resolve()
