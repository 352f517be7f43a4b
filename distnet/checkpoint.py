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

Writing goes to a temporary file in the same directory, is fsync'ed, then renamed over the
target, and the directory is fsync'ed: a crash at any moment leaves either the old file or
the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
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


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint; any defect is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupt: {exc})") from None
    missing = {"format_version", "params", "step", "epoch", "position", "seed", "config",
               "checksum"} - arrays.keys()
    if missing:
        raise UserError(f"{path}: not a distnet checkpoint (missing {', '.join(sorted(missing))})")
    version = int(arrays["format_version"])
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
    except json.JSONDecodeError:
        raise UserError(f"{path}: checkpoint configuration is not valid JSON") from None
    buffers = arrays.get("buffers", np.zeros(0, np.float32))
    optimizer = {key[len("optim/"):]: value for key, value in arrays.items() if key.startswith("optim/")}
    return Checkpoint(params=arrays["params"], optimizer=optimizer, step=int(arrays["step"]),
                      epoch=int(arrays["epoch"]), position=int(arrays["position"]),
                      seed=int(arrays["seed"]), config=config, buffers=buffers, meta=meta)
