"""CIFAR-10 readers: the official binary and python versions, as folders or tarballs.

Both official versions store each image as 3072 bytes, CHW-planar (1024 red, 1024 green,
1024 blue, each row-major 32x32), so both reshape straight to (N, 3, 32, 32).

* Binary version (``cifar-10-batches-bin/data_batch_{1..5}.bin``, ``test_batch.bin``):
  records of 1 label byte + 3072 pixel bytes. Preferred: it needs no unpickling.
* Python version (``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``): pickled
  dicts. Pickle can run arbitrary code, so these go through ``restricted_loads``, which
  admits only the plain containers pickle builds itself plus the three numpy helpers that
  rebuild the ``data`` array, and then checks the result.

Tarballs are never extracted to disk: the wanted members are read straight into memory by
base name and everything else (links, directories, ``../`` names) is ignored, so a hostile
archive cannot write anywhere.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from distnet.errors import UserError

from ._util import oneline

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES
BIN_FOLDER = "cifar-10-batches-bin"
PY_FOLDER = "cifar-10-batches-py"
BIN_TARBALL = "cifar-10-binary.tar.gz"
PY_TARBALL = "cifar-10-python.tar.gz"
SPLIT_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_MAX_MEMBER_BYTES = 200 * 1024 * 1024  # an official batch is ~30 MB; refuse absurd members


# --------------------------------------------------------------------------- binary


def parse_binary_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one binary batch into uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise UserError(
            f"{name}: {len(data)} bytes is not a whole number of CIFAR-10 records"
            f" ({RECORD_BYTES} bytes each: 1 label + {IMAGE_BYTES} pixels); the file is truncated or not CIFAR-10"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, name)
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return images, labels


def _check_labels(labels: np.ndarray, name: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{name}: record {i} has label {int(labels[i])}, but CIFAR-10 labels are 0-9")


# --------------------------------------------------------------------------- python (pickle)

# The helpers numpy's ndarray/dtype pickling refers to. Pickles from numpy 1.x (such as
# the official batches) name numpy.core.multiarray, numpy 2.x names numpy._core.multiarray.
# The function is taken from ndarray.__reduce__ so neither module path has to be imported.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except the numpy array-rebuilding helpers.

    Plain dicts, lists, tuples, bytes, str, ints and floats need no global lookup, so
    refusing ``find_class`` for everything else removes pickle's ability to call code.
    """

    def __init__(self, file, name: str):
        # encoding="bytes": the official batches were written by Python 2, whose str
        # becomes bytes here (hence the b'data' keys).
        super().__init__(file, encoding="bytes")
        self._name = name

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UserError(
                f"{self._name}: refusing to unpickle {oneline(module)}.{oneline(name)}: a CIFAR-10 python"
                f" batch may only contain dicts, lists, strings, numbers and a numpy uint8 array"
            ) from None

    def persistent_load(self, pid):
        raise UserError(f"{self._name}: refusing to unpickle a persistent id: not a CIFAR-10 python batch")


def restricted_loads(data: bytes, name: str):
    """Unpickle ``data`` allowing only plain containers and numpy arrays; UserError otherwise."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), name).load()
    except UserError:
        raise
    except Exception as exc:  # any malformed pickle: UnpicklingError, EOFError, ValueError, ...
        raise UserError(f"{name}: not a valid pickle: {type(exc).__name__}: {oneline(exc)}") from None


def parse_python_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one python-version batch into uint8 images (N, 3, 32, 32) and int64 labels.

    Official batches hold 10000 images; any N is accepted so subsets work, but the array
    must be uint8 (N, 3072) with exactly N labels in 0-9.
    """
    obj = restricted_loads(data, name)
    if not isinstance(obj, dict):
        raise UserError(f"{name}: expected a pickled dict, found {type(obj).__name__}")
    arr = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(arr, np.ndarray) or labels is None:
        raise UserError(f"{name}: not a CIFAR-10 python batch: needs a 'data' array and a 'labels' list")
    if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != IMAGE_BYTES or arr.shape[0] == 0:
        raise UserError(
            f"{name}: 'data' is {arr.dtype} of shape {arr.shape}, expected uint8 (N, {IMAGE_BYTES})"
            f" (10000 rows in an official batch)"
        )
    if not isinstance(labels, (list, tuple)) or not all(type(v) is int for v in labels):
        raise UserError(f"{name}: 'labels' must be a list of integers")
    if len(labels) != arr.shape[0]:
        raise UserError(f"{name}: {arr.shape[0]} images but {len(labels)} labels")
    lab = np.asarray(labels, dtype=np.int64)
    _check_labels(lab, name)
    return np.ascontiguousarray(arr).reshape(-1, 3, 32, 32), lab


# --------------------------------------------------------------------------- finding and loading


def find_cifar10(directory) -> tuple[str, Path] | None:
    """Locate a CIFAR-10 copy in ``directory``: returns (kind, path) or None.

    kind is "bin" or "py" (a folder of batch files) or "bin-tar"/"py-tar" (an official
    tarball). Looks for the batches directly in ``directory``, then in the official
    subfolder, then for the tarballs; binary before python because it needs no pickle.
    """
    d = Path(directory)
    if _has_batches(d, ".bin"):
        return "bin", d
    if (d / BIN_FOLDER).is_dir():
        return "bin", d / BIN_FOLDER
    if _has_batches(d, ""):
        return "py", d
    if (d / PY_FOLDER).is_dir():
        return "py", d / PY_FOLDER
    if (d / BIN_TARBALL).is_file():
        return "bin-tar", d / BIN_TARBALL
    if (d / PY_TARBALL).is_file():
        return "py-tar", d / PY_TARBALL
    return None


def _has_batches(folder: Path, suffix: str) -> bool:
    return any((folder / (n + suffix)).is_file() for batches in SPLIT_BATCHES.values() for n in batches)


def _read_members(tar_path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read regular-file members whose base name is in ``wanted`` into memory."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if base not in wanted or base in found or not member.isfile():
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise UserError(f"{tar_path}: member {member.name} is implausibly large ({member.size} bytes)")
                stream = tar.extractfile(member)
                found[base] = stream.read() if stream is not None else b""
    except UserError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{tar_path}: cannot read tarball: {oneline(exc)}") from None
    return found


def load_cifar10(directory, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split from a CIFAR-10 copy found in ``directory`` (see ``find_cifar10``).

    Returns uint8 images (N, 3, 32, 32) and int64 labels (N,). UserError if no copy is
    there or any batch is missing or corrupt.
    """
    if split not in SPLIT_BATCHES:
        raise UserError(f"cifar10: unknown split {split!r}; expected 'train' or 'test'")
    found = find_cifar10(directory)
    if found is None:
        raise UserError(f"{directory}: no CIFAR-10 batches, {BIN_FOLDER}/, {PY_FOLDER}/ or official tarball found")
    kind, path = found
    binary = kind.startswith("bin")
    parse = parse_binary_batch if binary else parse_python_batch
    names = [n + (".bin" if binary else "") for n in SPLIT_BATCHES[split]]
    if kind.endswith("tar"):
        blobs = _read_members(path, set(names))
        missing = [n for n in names if n not in blobs]
        if missing:
            raise UserError(f"{path}: tarball lacks {', '.join(missing)}; is it the official CIFAR-10 archive?")
        parts = [parse(blobs.pop(n), f"{path}:{n}") for n in names]
    else:
        parts = []
        for n in names:
            f = path / n
            if not f.is_file():
                raise UserError(f"{f}: file not found; the CIFAR-10 {split} split needs {', '.join(names)} in {path}")
            try:
                data = f.read_bytes()
            except OSError as exc:
                raise UserError(f"{f}: cannot read: {oneline(exc.strerror or exc)}") from None
            parts.append(parse(data, str(f)))
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return np.ascontiguousarray(images), labels
