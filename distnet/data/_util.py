"""Small helpers shared by the data modules."""

from __future__ import annotations

import os
from pathlib import Path


def oneline(text: object) -> str:
    """Collapse whitespace so a library's multi-line message fits the CLI's one-line error."""
    return " ".join(str(text).split())


def default_cache_dir() -> Path:
    """Where downloads and decoded caches live when the user names no directory.

    ``$XDG_CACHE_HOME/distnet`` if set, else ``~/.cache/distnet`` (the XDG default), so a
    shared machine does not get data sprinkled into the working directory.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "distnet"
