"""CIFAR-10 readers: the official binary and python versions, as folders or tarballs.

Both official versions store each image as 3072 bytes, CHW-planar (1024 red, 1024 green,
1024 blue, each row-major 32x32), so both reshape straight to (N, 3, 32, 32).

* Binary version (``cifar-10-batches-bin/data_batch_{1..5}.bin``, ``test_batch.bin``):
  records of 1 label byte + 3072 pixel bytes. Preferred: it needs no unpickling.
* Python version (``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``): pickled
  dicts. Pickle can run arbitrary code, so these go through ``restricted_loads``, which
  admits only the plain containers pickle builds itself plus record-only stand-ins for the
  numpy names an array pickle uses; no numpy object is ever built from pickle state. The
  pixels are then made by ``np.frombuffer`` from checked bytes and a checked shape.

Tarballs are never extracted to disk: the wanted members are read straight into memory by
base name, reading stops once all are found, links and directories are ignored, and a
wanted name behind ``../`` is refused, so a hostile archive cannot write anywhere.
"""

from __future__ import annotations

import io
import pickle
import reprlib
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

# The official python batches pickle b'data' as a numpy array:
#   numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')  then BUILD with
#   (1, (N, 3072), numpy.dtype('u1', 0, 1) [BUILD (3, '|', None, None, None, -1, -1, 0)], False, <raw bytes>)
# (numpy 2 names numpy._core.multiarray; pickle protocol 5 uses numpy._core.numeric._frombuffer).
# Handing those names the real numpy callables lets pickle state build arbitrary dtypes and
# arrays -- object fields over forged pointers, fields past the buffer's end, huge empty
# shapes -- which crashes or corrupts the process before any check can run. So each name
# resolves to a stand-in below that only RECORDS its arguments and state; nothing numpy is
# built until ``_array_from_record`` has checked that record against the one form an official
# batch can take, and then the pixels come from np.frombuffer over bytes pickle made itself.

_MAX_IMAGES = 60_000  # the whole of CIFAR-10 in one batch; an official batch holds 10,000
_MAX_MEMBER_BYTES = 200 * 1024 * 1024  # an official batch is ~30 MB; refuse absurd files
_U8_DTYPE_STATES = {
    (3, "|", None, None, None, -1, -1, 0),  # numpy >= 1.x, the official batches
    (4, "|", None, None, None, -1, -1, 0, None),  # with (empty) metadata
}


class _RefusedBatch(Exception):
    """Raised inside the unpickler, turned into one UserError naming the file."""


def _text(value):
    """A py2 str arrives as bytes under encoding='bytes'; compare both spellings as str."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


class _NdarrayName:
    """Stands for ``numpy.ndarray``; only valid as ``_reconstruct``'s first argument."""

    def __new__(cls, *args, **kwargs):
        raise _RefusedBatch("numpy.ndarray may only appear as the array-rebuilding helper's argument")


class _DtypeRecord:
    """Stands for ``numpy.dtype(*args)`` plus its ``__setstate__``: records, builds nothing."""

    args: tuple = ()  # class defaults: pickle's NEWOBJ can make an instance without __init__
    state = None

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def is_uint8(self) -> bool:
        """Exactly what numpy writes for uint8: dtype('u1', False, True) + the plain state."""
        args = self.args
        if len(args) != 3 or _text(args[0]) != "u1" or not all(type(a) in (bool, int) for a in args[1:]):
            return False
        if args[1] != 0 or args[2] != 1:  # align off, copy on
            return False
        state = self.state
        if not isinstance(state, tuple) or not all(type(v) in (int, bool, str, bytes, type(None)) for v in state):
            return False
        return tuple(_text(v) if isinstance(v, bytes) else v for v in state) in _U8_DTYPE_STATES


class _ArrayRecord:
    """Stands for the ndarray ``_reconstruct`` makes and its ``__setstate__``: records only."""

    state = None  # a class default: pickle's NEWOBJ can make an instance without __init__

    def __setstate__(self, state):
        self.state = state


def _reconstruct(cls, shape, typecode):
    if cls is not _NdarrayName or shape != (0,) or _text(typecode) != "b":
        raise _RefusedBatch("the array-rebuilding helper was called with arguments numpy never writes")
    return _ArrayRecord()


def _frombuffer(buf, dtype, shape, order):
    """Protocol-5 form: numpy._core.numeric._frombuffer(buffer, dtype, shape, order)."""
    if _text(order) != "C":
        raise _RefusedBatch("a protocol-5 array stored in an order other than C")
    record = _ArrayRecord()
    record.state = (1, shape, dtype, False, buf)
    return record


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): _DtypeRecord,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except stand-ins for numpy's array-rebuilding helpers.

    Plain dicts, lists, tuples, bytes, str, ints and floats need no global lookup, so
    refusing ``find_class`` for everything else removes pickle's ability to call code; the
    stand-ins (see above) only record what they are given.
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
    """Unpickle ``data`` allowing only plain containers and recorded numpy arrays; UserError
    otherwise. Arrays come back as ``_ArrayRecord``s for ``parse_python_batch`` to check."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), name).load()
    except UserError:
        raise
    except _RefusedBatch as exc:
        raise UserError(f"{name}: not a CIFAR-10 python batch: {exc}") from None
    except RecursionError:
        raise UserError(f"{name}: not a valid pickle: nested too deeply") from None
    except Exception as exc:  # any malformed pickle: UnpicklingError, EOFError, ValueError, ...
        raise UserError(f"{name}: not a valid pickle: {type(exc).__name__}: {oneline(exc)[:200]}") from None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxother, _REPR.maxlong = 2, 40, 40


def _show(value) -> str:
    """A short repr for messages; reprlib stops at depth 2, so a list nested 200,000 deep
    (a few hundred KB of pickle) cannot make repr recurse past Python's limit."""
    return oneline(_REPR.repr(value))[:80]


def _is_int(value) -> bool:
    return type(value) is int  # not bool, not a float, not a subclass with odd comparisons


def _array_from_record(record: _ArrayRecord, n_labels: int, name: str) -> np.ndarray:
    """The uint8 (N, 3072) pixels an official array record describes, built by np.frombuffer."""
    want = f"expected uint8 (N, {IMAGE_BYTES}) with N = the number of labels ({n_labels})"
    state = record.state
    if not isinstance(state, tuple) or len(state) != 5 or not _is_int(state[0]) or state[0] != 1:
        raise UserError(f"{name}: 'data' array has an unknown pickled state; {want}")
    _, shape, dtype, fortran, raw = state
    if not isinstance(dtype, _DtypeRecord) or not dtype.is_uint8():
        raise UserError(f"{name}: 'data' array is not plain uint8 (a forged or other dtype); {want}")
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(_is_int(d) for d in shape)):
        raise UserError(f"{name}: 'data' array has shape {_show(shape)}; {want}")
    if shape[1] != IMAGE_BYTES or not 0 < shape[0] <= _MAX_IMAGES:
        raise UserError(f"{name}: 'data' is uint8 of shape {shape}; {want}, at most {_MAX_IMAGES}")
    if fortran not in (0, False):
        raise UserError(f"{name}: 'data' array is Fortran-ordered; {want} in C order")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != shape[0] * IMAGE_BYTES:
        size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
        raise UserError(f"{name}: 'data' array claims shape {shape} but holds {size} bytes"
                        f" instead of {shape[0] * IMAGE_BYTES}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _pixels(data, n_labels: int, name: str) -> np.ndarray:
    """'data' as uint8 (N, 3072): an official array record, flat bytes, or a list of rows."""
    if isinstance(data, _ArrayRecord):
        arr = _array_from_record(data, n_labels, name)
    elif isinstance(data, (bytes, bytearray)):
        if len(data) != n_labels * IMAGE_BYTES:
            raise UserError(f"{name}: 'data' holds {len(data)} bytes, expected {n_labels} x {IMAGE_BYTES}"
                            f" for {n_labels} labels")
        arr = np.frombuffer(data, dtype=np.uint8).reshape(n_labels, IMAGE_BYTES)
    elif isinstance(data, list):
        if len(data) != n_labels or not all(isinstance(r, (bytes, bytearray)) and len(r) == IMAGE_BYTES for r in data):
            raise UserError(f"{name}: 'data' as a list must hold {n_labels} rows of {IMAGE_BYTES} bytes")
        arr = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(n_labels, IMAGE_BYTES)
    else:
        raise UserError(f"{name}: not a CIFAR-10 python batch: 'data' is a {type(data).__name__},"
                        f" expected a uint8 array or bytes")
    if arr.shape[0] != n_labels:
        raise UserError(f"{name}: {arr.shape[0]} images but {n_labels} labels")
    return arr


def parse_python_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one python-version batch into uint8 images (N, 3, 32, 32) and int64 labels.

    Official batches hold 10000 images; any N from 1 to 60000 is accepted so subsets work,
    but the pixels must be uint8 (N, 3072) with exactly N labels in 0-9.
    """
    if len(data) > _MAX_MEMBER_BYTES:
        raise UserError(f"{name}: {len(data)} bytes is implausibly large for a CIFAR-10 batch")
    obj = restricted_loads(data, name)
    if not isinstance(obj, dict):
        raise UserError(f"{name}: expected a pickled dict, found {type(obj).__name__}")
    pixels = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if pixels is None or labels is None:
        raise UserError(f"{name}: not a CIFAR-10 python batch: needs a 'data' array and a 'labels' list")
    if not isinstance(labels, list) or not 0 < len(labels) <= _MAX_IMAGES:
        what = f"{len(labels)} entries" if isinstance(labels, (list, tuple)) else f"a {type(labels).__name__}"
        raise UserError(f"{name}: 'labels' must be a list of 1 to {_MAX_IMAGES} integers, found {what}")
    for i, v in enumerate(labels):
        if not _is_int(v) or not 0 <= v < len(CLASSES):
            shown = _show(v)
            raise UserError(f"{name}: label {i} is {shown}, but CIFAR-10 labels are integers 0-9")
    arr = _pixels(pixels, len(labels), name)
    lab = np.array(labels, dtype=np.int64)
    return arr.reshape(-1, 3, 32, 32), lab


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


_MAX_TAR_MEMBERS = 1000  # the official tarballs hold 8; a few thousand headers cost MBs, 300,000 cost 140 MB


def _unsafe_name(name: str) -> bool:
    """An absolute name or one with a '..' part: what a hostile archive uses to escape."""
    return name.startswith("/") or ".." in PurePosixPath(name).parts


def _read_members(tar_path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read regular-file members whose base name is in ``wanted`` into memory.

    Nothing is ever written to disk. Reading stops as soon as every wanted member is found
    (the rest of a 170 MB archive is never decompressed) and after ``_MAX_TAR_MEMBERS``
    headers, so an archive of endless empty headers costs neither time nor memory. A wanted
    name behind ``../`` or an absolute path is refused outright: the official archives have
    none, and such an archive is hostile, not just unusual.
    """
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > _MAX_TAR_MEMBERS:
                    raise UserError(f"{tar_path}: more than {_MAX_TAR_MEMBERS} members before finding"
                                    f" {', '.join(sorted(wanted - found.keys()))}; not an official CIFAR-10 archive")
                base = PurePosixPath(member.name).name
                if base not in wanted or base in found:
                    continue
                if _unsafe_name(member.name):
                    raise UserError(f"{tar_path}: refusing member {oneline(member.name)!r}: its path leaves the"
                                    f" archive (absolute or with '..'); not an official CIFAR-10 archive")
                if not member.isfile():
                    continue  # a link or directory named like a batch: never followed
                if member.size > _MAX_MEMBER_BYTES:
                    raise UserError(f"{tar_path}: member {member.name} is implausibly large ({member.size} bytes)")
                found[base] = tar.extractfile(member).read()  # a regular file: never None
                if found.keys() >= wanted:
                    break
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
                if f.stat().st_size > _MAX_MEMBER_BYTES:
                    raise UserError(f"{f}: {f.stat().st_size} bytes is implausibly large for a CIFAR-10 batch")
                data = f.read_bytes()
            except OSError as exc:
                raise UserError(f"{f}: cannot read: {oneline(exc.strerror or exc)}") from None
            parts.append(parse(data, str(f)))
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return np.ascontiguousarray(images), labels
