"""One decoded copy of a data set per machine: a .npy cache that every process memory-maps.

Why: every MPI rank used to decode the files itself and hold the result in private memory,
so 2 ranks held 2 copies and 16 ranks 16 (CIFAR-10: 16 x 184 MB).  A read-only memory map
of one file is backed by the page cache, which the kernel shares between all processes of
the machine: N ranks hold about one copy between them (PSS, the proportional set size,
shows it; see benchmarks/memory.py).  It also turns the second and later loads into an
open() instead of a gunzip or 60,000 JPEG decodes.

The rules that keep it safe:

* Keyed by the source's identity: the caller gives the parts (file paths, sizes, mtimes,
  or a fingerprint of every image file); their hash names the entry, so a changed source
  is a new entry and is decoded again.  Entries of the same source with another key are
  removed once a new one is in place.
* Atomic and first writer wins: an entry is a folder (images.npy, labels.npy,
  manifest.json) written under a temporary name and renamed into place.  Renaming onto an
  existing entry fails, so two processes racing to build it end up mapping the same file.
* Never pickled: plain .npy arrays, written and read with allow_pickle=False; the manifest
  is JSON.
* Checked on every open: the manifest's version, key, dtypes, shapes, file sizes and a CRC-32
  of each array's bytes.  A truncated or corrupt entry is set aside and rebuilt (a warning
  is logged), never used.
* A cache folder that cannot be written (read-only, full) falls back to the decoded arrays
  in memory, with a warning: slower and unshared, but correct.

Rank 0 building first while the others wait is the caller's part (train.load_both_splits
puts a barrier after rank 0's load); without it every process builds, one wins, and all
map the winner.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ._util import default_cache_dir, oneline

log = logging.getLogger("distnet.data")

FORMAT = "distnet-decoded-v1"
ARRAYS = ("images", "labels")
_MANIFEST = "manifest.json"
_MAX_MANIFEST_BYTES = 1 << 16
_CRC_CHUNK = 1 << 24  # 16 MiB at a time: crc32 of one huge buffer holds the GIL no longer


class CorruptEntry(Exception):
    """A cache entry that exists but cannot be trusted (truncated, changed, not ours)."""


def cache_root(cache_dir=None) -> Path:
    """The folder of decoded caches: ``cache_dir``, else ``<distnet cache>/decoded``."""
    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "decoded"


def cache_key(parts) -> str:
    """A short hash of the source's identity (any JSON-able value) and the format."""
    text = json.dumps([FORMAT, parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _crc32(arr: np.ndarray) -> int:
    view = memoryview(np.ascontiguousarray(arr)).cast("B")
    crc = 0
    for lo in range(0, len(view), _CRC_CHUNK):
        crc = zlib.crc32(view[lo:lo + _CRC_CHUNK], crc)
    return crc


def _open_entry(entry: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The entry's arrays, memory-mapped read-only; None if there is none; CorruptEntry if
    it is there but wrong."""
    manifest_path = entry / _MANIFEST
    if not entry.is_dir():
        return None
    try:
        with open(manifest_path, "rb") as f:
            text = f.read(_MAX_MANIFEST_BYTES + 1)
        if len(text) > _MAX_MANIFEST_BYTES:
            raise CorruptEntry("manifest too large")
        manifest = json.loads(text)
    except FileNotFoundError:
        raise CorruptEntry("no manifest") from None
    except (OSError, ValueError) as exc:
        raise CorruptEntry(f"unreadable manifest: {oneline(exc)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("key") != key:
        raise CorruptEntry("manifest of another format or key")
    out = []
    for name in ARRAYS:
        want = manifest.get(name)
        path = entry / f"{name}.npy"
        if not isinstance(want, dict):
            raise CorruptEntry(f"manifest lacks {name}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            size = path.stat().st_size
        except (OSError, ValueError, EOFError) as exc:  # truncated header or data, not .npy
            raise CorruptEntry(f"{path.name}: {oneline(exc)}") from None
        if not isinstance(arr, np.memmap) or arr.dtype.str != want.get("dtype") \
                or list(arr.shape) != want.get("shape") or not arr.flags.c_contiguous:
            raise CorruptEntry(f"{path.name}: dtype or shape differs from the manifest")
        if size != arr.offset + arr.nbytes:  # np.load maps only what the header says
            raise CorruptEntry(f"{path.name}: {size - arr.offset - arr.nbytes:+d} bytes beyond the array")
        if _crc32(arr) != want.get("crc32"):
            raise CorruptEntry(f"{path.name}: checksum mismatch")
        out.append(np.asarray(arr))  # a plain read-only ndarray view; the map lives on in .base
    images, labels = out
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],) \
            or labels.dtype != np.int64:
        raise CorruptEntry("arrays are not uint8 (N, C, H, W) images and int64 labels")
    return images, labels


def _set_aside(entry: Path) -> None:
    """Move a bad entry out of the way (atomically, so a concurrent reader sees it either
    whole or gone), then delete it; processes that mapped it keep their mapping."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}")
    try:
        os.rename(entry, trash)
    except FileNotFoundError:
        return  # another process set it aside already
    shutil.rmtree(trash, ignore_errors=True)


def _write_entry(root: Path, entry: Path, key: str, images: np.ndarray, labels: np.ndarray,
                 source) -> None:
    """Write a complete entry under a temporary name, then rename it into place; if another
    process got there first, keep theirs."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=root))
    try:
        manifest = {"format": FORMAT, "key": key, "source": source}
        for name, arr in zip(ARRAYS, (images, labels)):
            arr = np.ascontiguousarray(arr)
            with open(tmp / f"{name}.npy", "wb") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
            manifest[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "crc32": _crc32(arr)}
        with open(tmp / _MANIFEST, "w") as f:
            json.dump(manifest, f)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the cache from other users of a shared one
        try:
            os.rename(tmp, entry)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race: use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale(root: Path, label: str, entry: Path, source) -> None:
    """Entries for the same label and source whose key is not this one: an older version of
    the source files (not another folder's copy, whose source differs)."""
    for other in root.glob(f"{label}-*"):
        if other == entry or not other.is_dir():
            continue
        try:
            with open(other / _MANIFEST, "rb") as f:
                theirs = json.loads(f.read(_MAX_MANIFEST_BYTES)).get("source")
        except (OSError, ValueError, AttributeError):
            continue
        if theirs == source:
            _set_aside(other)


def decoded(label: str, source, build: Callable[[], tuple[np.ndarray, np.ndarray]],
            cache_dir=None, identity=None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) for a data set split, memory-mapped from the shared cache.

    ``label`` names the entry for people (``mnist-train``); ``source`` says where the data
    comes from (paths: JSON-able) and ``identity`` what makes it this version (sizes and
    mtimes, a fingerprint; default: ``source`` alone); both go into the key.  ``build()``
    decodes the source into uint8 (N, C, H, W) images and int64 labels; it runs only when
    no valid entry exists.  ``cache_dir=False``: no cache, just ``build()``.
    """
    if cache_dir is False:
        return build()
    root = cache_root(cache_dir)
    key = cache_key([label, source, identity])
    entry = root / f"{label}-{key}"
    try:
        found = _open_entry(entry, key)
    except CorruptEntry as exc:
        log.warning("distnet: rebuilding the decoded cache %s: %s", entry, exc)
        _set_aside(entry)
        found = None
    if found is not None:
        return found
    images, labels = build()
    try:
        _write_entry(root, entry, key, images, labels, source)
        found = _open_entry(entry, key)
    except (OSError, CorruptEntry) as exc:
        log.warning("distnet: cannot use the decoded cache in %s (%s); keeping the data in memory",
                    root, oneline(exc))
        return images, labels
    if found is None:
        return images, labels
    _remove_stale(root, label, entry, source)
    return found
