"""Atomic, self-checking checkpoints in NumPy's .npz container (no pickles).

Layout of a checkpoint file:
  format_version  int       bumped when the layout changes; older/newer files are refused
  params          float32   all parameters, one flat vector in model.parameters() order
  optim/<key>     arrays    the optimizer's flat state dict
  step, epoch, position, seed  ints: completed steps, current epoch, next batch index in it
  config          str       the run's configuration as JSON (model, dataset, batch size, ...)
  buffers         float32   non-trainable state (BatchNorm running statistics), one flat vector
  meta            str       JSON: what rebuilds the model and its input pipeline without the
                            run's configuration (model origin and arguments, input shape, class
                            names, normalisation, task, loss)
  checksum        str       SHA-256 over every other entry's name, dtype, shape and bytes

Reading checks every member's .npy header (known names only, the shape and dtype each may
have, stored uncompressed with exactly the declared bytes) before reading any data, so a
hostile file costs no more memory than its own size.

Writing goes to a temporary file in the same directory, is fsync'ed, then renamed over the
target, and the directory is fsync'ed: a crash at any moment leaves either the old file or
the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .errors import UserError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before buffers and meta; read as empty ones
LATEST = "latest.npz"


@dataclass
class Checkpoint:
    params: np.ndarray
    optimizer: dict
    step: int
    epoch: int
    position: int
    seed: int
    config: dict = field(default_factory=dict)
    buffers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    meta: dict = field(default_factory=dict)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _to_arrays(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    arrays = {
        "format_version": np.array(FORMAT_VERSION),
        "params": np.ascontiguousarray(ckpt.params, dtype=np.float32),
        "step": np.array(ckpt.step, dtype=np.int64),
        "epoch": np.array(ckpt.epoch, dtype=np.int64),
        "position": np.array(ckpt.position, dtype=np.int64),
        "seed": np.array(ckpt.seed, dtype=np.int64),
        "config": np.array(json.dumps(ckpt.config, sort_keys=True)),
        "buffers": np.ascontiguousarray(ckpt.buffers, dtype=np.float32),
        "meta": np.array(json.dumps(ckpt.meta, sort_keys=True)),
    }
    for key, value in ckpt.optimizer.items():
        arrays[f"optim/{key}"] = np.asarray(value)
    arrays["checksum"] = np.array(_checksum(arrays))
    return arrays


def save(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Write ``ckpt`` to ``path`` atomically and durably."""
    arrays = _to_arrays(ckpt)
    with atomic_write(path, durable=True) as f:
        np.savez(f, **arrays)
    return Path(path)


def save_in_dir(ckpt: Checkpoint, directory: str | os.PathLike, keep: int = 3) -> Path:
    """Write ``ckpt-<step>.npz`` and ``latest.npz`` in ``directory``; keep the newest ``keep``
    numbered ones (0 keeps all)."""
    directory = Path(directory)
    for leftover in directory.glob(".*.npz.*.tmp"):  # from a writer killed mid-write
        leftover.unlink(missing_ok=True)
    numbered = save(ckpt, directory / f"ckpt-{ckpt.step:08d}.npz")
    latest = save(ckpt, directory / LATEST)
    if keep > 0:
        old = sorted(directory.glob("ckpt-*.npz"))[:-keep]
        for stale in old:
            if stale != numbered:
                stale.unlink(missing_ok=True)
    return latest


# What each member may be, checked from the .npy headers before any data is read, so a
# member that declares a huge shape, an object dtype or a compressed stream costs nothing.
_INT_SCALARS = ("format_version", "step", "epoch", "position", "seed")
_TEXT_SCALARS = ("config", "meta", "checksum")
_FLAT_FLOAT32 = ("params", "buffers")
_REQUIRED = {"format_version", "params", "step", "epoch", "position", "seed", "config", "checksum"}
_MAX_MEMBERS = 256  # distnet writes about 15; the zip index is refused before it is parsed past this
_MAX_TEXT_CHARS = 1 << 20  # the config and meta JSON are a few KB
_OPTIM_KEY = re.compile(r"optim/[A-Za-z_][A-Za-z0-9_]{0,63}")


class _Refused(Exception):
    """A checkpoint defect found while reading; load() adds the path."""


def _member_count(f) -> int | None:
    """Entries the zip's end record announces, read before zipfile parses the whole index
    (``_EndRecData`` has been in zipfile since Python 2; if it ever goes, zipfile's own
    parse still runs, just without this early bound)."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return None
    record = end_record(f)
    return None if record is None else int(record[4])  # _ECD_ENTRIES_TOTAL


def _check_header(key: str, shape: tuple, dtype: np.dtype, fortran: bool, sizes: tuple[int, int]) -> None:
    """Whether ``key``'s declared shape and dtype are what the format allows; ``sizes`` are
    the lengths of params and buffers, which an optimizer's arrays (its moments, an EMA of
    the weights and of the BatchNorm statistics) follow."""
    def refuse(why):
        raise _Refused(f"member {key!r} {why} (declared {dtype.str} of shape {shape})")

    if dtype.hasobject or dtype.fields is not None or fortran:
        refuse("is not a plain array")
    if key in _INT_SCALARS:
        if shape != () or dtype.kind not in "iu":
            refuse("must be a single integer")
    elif key in _TEXT_SCALARS:
        if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * _MAX_TEXT_CHARS:
            refuse(f"must be a single string of at most {_MAX_TEXT_CHARS} characters")
        if key == "checksum" and dtype.itemsize != 4 * 64:
            refuse("must be a 64-character SHA-256")
    elif key in _FLAT_FLOAT32:
        if len(shape) != 1 or dtype != np.dtype("<f4"):
            refuse("must be a flat float32 vector")
    elif key.startswith("optim/"):
        if dtype.kind not in "fiu":
            refuse("must be numbers")
        if shape != () and not (len(shape) == 1 and shape[0] in sizes):
            refuse(f"must be a single number, one per parameter ({sizes[0]}) or one per buffer ({sizes[1]})")
    else:  # pragma: no cover - _read_arrays admits only the keys above
        refuse("is not part of the format")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every member, each header checked against the format before its data is read.

    Members must be stored uncompressed (``np.savez`` writes them so), with exactly the bytes
    their header declares: then no member can make this read more than the file holds.
    """
    with open(path, "rb") as raw:
        count = _member_count(raw)
        if count is not None and count > _MAX_MEMBERS:
            raise _Refused(f"{count} members, more than a checkpoint has ({_MAX_MEMBERS} at most)")
        with zipfile.ZipFile(raw) as z:
            infos = z.infolist()
            if len(infos) > _MAX_MEMBERS:
                raise _Refused(f"{len(infos)} members, more than a checkpoint has ({_MAX_MEMBERS} at most)")
            headers = {}
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else None
                known = key in _INT_SCALARS or key in _TEXT_SCALARS or key in _FLAT_FLOAT32
                if key is None or not (known or _OPTIM_KEY.fullmatch(key)):
                    raise _Refused(f"unexpected member {info.filename!r}")
                if key in headers:
                    raise _Refused(f"member {info.filename!r} appears twice")
                if info.flag_bits & 0x1:
                    raise _Refused(f"member {key!r} is encrypted")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise _Refused(f"member {key!r} is compressed; distnet checkpoints are stored uncompressed")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise _Refused(f"member {key!r} has .npy format version {version}")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f)
                    data_bytes = math.prod(shape) * dtype.itemsize
                    if f.tell() + data_bytes != info.file_size:
                        raise _Refused(f"member {key!r} declares {data_bytes} bytes of data but holds "
                                       f"{info.file_size - f.tell()}")
                headers[key] = (info, shape, dtype, fortran)
            missing = _REQUIRED - headers.keys()
            if missing:
                raise _Refused(f"missing {', '.join(sorted(missing))}")
            sizes = tuple(headers[k][1][0] if k in headers and len(headers[k][1]) == 1 else 0
                          for k in ("params", "buffers"))
            for key, (_, shape, dtype, fortran) in headers.items():
                _check_header(key, shape, dtype, fortran, sizes)
            arrays = {}
            for key, (info, _, _, _) in headers.items():
                with z.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def _oneline(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _int(arrays, key: str) -> int:
    return int(arrays[key][()])


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; any defect is a UserError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not a checkpoint file; give the file, e.g. {path / 'latest.npz'}")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        arrays = _read_arrays(path)
    except _Refused as exc:
        raise UserError(f"{path}: not a valid distnet checkpoint: {exc}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error, NotImplementedError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt: {_oneline(exc)})") from None
    version = _int(arrays, "format_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{path}: checkpoint format version {version}, this distnet reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version >= 2 and not {"buffers", "meta"} <= arrays.keys():
        raise UserError(f"{path}: not a distnet checkpoint (missing buffers or meta)")
    stored = str(arrays.pop("checksum"))
    if _checksum(arrays) != stored:
        raise UserError(f"{path}: checksum mismatch: the checkpoint is corrupt")
    try:
        config = json.loads(str(arrays["config"]))
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    except (json.JSONDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        raise UserError(f"{path}: checkpoint configuration is not valid JSON") from None
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise UserError(f"{path}: checkpoint configuration and meta must be JSON objects")
    buffers = arrays.get("buffers", np.zeros(0, np.float32))
    optimizer = {key[len("optim/"):]: value for key, value in arrays.items() if key.startswith("optim/")}
    return Checkpoint(params=arrays["params"], optimizer=optimizer, step=_int(arrays, "step"),
                      epoch=_int(arrays, "epoch"), position=_int(arrays, "position"),
                      seed=_int(arrays, "seed"), config=config, buffers=buffers, meta=meta)
