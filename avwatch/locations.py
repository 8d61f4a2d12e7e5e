"""Locations of tables and checkpoints: local paths or URIs (file://, s3a://, hdfs://, abfss://, ...).

`pathlib.Path` folds a URI's double slash (`s3a://bucket/x` becomes `s3a:/bucket/x`) and resolves it
against the working folder, so locations that may be URIs are joined here, as strings.
"""
from __future__ import annotations

import os
import re

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str) -> bool:
    return bool(_SCHEME.match(str(location)))


def join_uri(base: str | os.PathLike, *parts: str) -> str:
    """`base` joined with `parts`: with '/' for a URI (its authority kept), os.path.join for a path."""
    base = str(base)
    if is_uri(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(base, *parts)


def local_path(location: str | os.PathLike) -> str | None:
    """The local filesystem path of a plain path or a file:// URI; None for any other URI."""
    location = str(location)
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(location).path)
    return None if is_uri(location) else location
