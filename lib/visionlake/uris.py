"""Lake locations as strings, in one place: local paths and ``file:`` URIs against other Hadoop schemes (hdfs://,
s3a://, ...), and each in the form a library wants. Pure string functions, no I/O.

Spark writes local files as ``file:/x``, users write ``/x``, ``file:///x`` or a relative path, pyarrow and
TensorFlow want ``/x``, petastorm wants ``file:///x``.
"""
from __future__ import annotations

import os
import re

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_local(location: str) -> bool:
    """A plain path or a ``file:`` URI: on this machine's file system (or a mount every node shares)."""
    return location.startswith("file:") or not _SCHEME.match(location)


def has_scheme(location: str) -> bool:
    """A URI (``file:/x``, ``hdfs://...``) rather than a plain path, which is relative to some working directory."""
    return location.startswith("file:") or bool(_SCHEME.match(location))


def local_path(location: str) -> str:
    """``/x`` for ``file:/x``, ``file:///x`` or ``/x``; a plain path is returned unchanged."""
    return re.sub(r"^file:(//)?", "", location)


def file_uri(location: str) -> str:
    """``file:///x`` for a local path or ``file:`` URI, made absolute (petastorm and MLflow want this form)."""
    return "file:///" + os.path.abspath(local_path(location)).lstrip("/")
