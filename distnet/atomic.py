"""Atomic file writes: write a temporary file beside the target, then rename it over.

Used by checkpoints, downloads and decoded-image caches alike, so that a crash, a SIGKILL or
a failed check at any moment leaves either the old file or the complete new one, never half
of one, and no temporary file behind when Python gets to clean up.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _default_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: mkstemp's 0600 would leave
    checkpoints, downloads and figures unreadable to the other users of a shared volume."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path, durable: bool = False, suffix: str = ".tmp"):
    """``with atomic_write(path) as f: f.write(...)`` replaces ``path`` only if the block
    finishes; an exception in the block (a failed checksum, say) removes the temporary file.

    ``durable=True`` also fsyncs the file and its directory, so the new file survives a
    power loss (checkpoints); a cache or a download can skip that cost.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            os.fchmod(f.fileno(), _default_mode())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        _fsync_dir(path.parent)
