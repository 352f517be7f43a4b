"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic (two zero bytes, an element-type byte, a dimension-count
byte), one big-endian uint32 per dimension, then the elements in C order. Only unsigned
bytes (type 0x08) are supported: that is all MNIST-style datasets use.

The reader is strict on purpose. A truncated download or a file with junk appended would
otherwise surface much later as a reshape error, or silently as wrong pixels, so every
inconsistency becomes a one-line UserError naming the file and what is wrong.
Files may be gzip-compressed or raw; gzip is recognised by its magic bytes, not the name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from distnet.errors import UserError

from ._util import oneline

UBYTE = 0x08
LABELS_MAGIC = 0x00000801  # ubyte, 1 dimension
IMAGES_MAGIC = 0x00000803  # ubyte, 3 dimensions
_GZIP_MAGIC = b"\x1f\x8b"


def _describe(dims: tuple[int, ...]) -> str:
    """Human words for a header's dimensions, e.g. '60000 images of 28x28'."""
    if len(dims) == 1:
        return f"{dims[0]} labels"
    if len(dims) == 3:
        return f"{dims[0]} images of {dims[1]}x{dims[2]}"
    return "dimensions " + "x".join(str(d) for d in dims)


def _parse_header(data: bytes, name: str, ndim: int | None) -> tuple[tuple[int, ...], int]:
    """The dimensions and header length that ``data`` starts with; UserError if it is no IDX header."""
    expected = f" (expected 0x{0x800 + ndim:08x})" if ndim is not None else ""
    if len(data) < 4:
        raise UserError(f"{name}: not an IDX file: only {len(data)} bytes long{expected}")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise UserError(f"{name}: not an IDX file: bad magic 0x{magic:08x}{expected}")
    if data[2] != UBYTE:
        raise UserError(
            f"{name}: unsupported IDX element type 0x{data[2]:02x} in magic 0x{magic:08x}"
            f" (only unsigned bytes, 0x08, are supported)"
        )
    count = data[3]
    if count == 0 or (ndim is not None and count != ndim):
        want = f"expected {ndim}" if ndim is not None else "expected at least 1"
        raise UserError(f"{name}: bad magic 0x{magic:08x}: {count} dimensions, {want}")
    header_len = 4 + 4 * count
    if len(data) < header_len:
        raise UserError(f"{name}: truncated: header needs {header_len} bytes but file holds {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(count))
    return dims, header_len


def _size_problem(name: str, dims, have: int, where: str) -> UserError:
    need = math.prod(dims)
    problem = "truncated" if have < need else f"{have - need} bytes of trailing garbage"
    return UserError(f"{name}: {problem}: header says {_describe(dims)} ({need} bytes)"
                     f" but file holds {have} bytes of data{where}")


_CHUNK = 1 << 20
_MAX_IDX_BYTES = 1 << 30  # 1 GiB of elements: far above any MNIST-style set (EMNIST's largest is 0.6 GB)


def _read_up_to(f, limit: int) -> bytearray:
    """At most ``limit`` bytes from ``f``, in chunks: a forged size never becomes one allocation."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = f.read(min(_CHUNK, limit - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _read_stream(f, name: str, ndim: int | None, gzipped: bool, file_size: int) -> np.ndarray:
    """Read header, then at most what the header allows plus one byte, from an open stream.

    Memory stays at about the size the header declares (itself capped at ``_MAX_IDX_BYTES``),
    however much a gzip bomb would decompress to or a raw file holds.
    """
    where = " after gunzip" if gzipped else ""
    head = bytes(_read_up_to(f, 4))
    if len(head) == 4:
        head += _read_up_to(f, 4 * head[3])  # at most 1020 bytes, whatever the magic says
    dims, header_len = _parse_header(head, name, ndim)
    need = math.prod(dims)
    if need > _MAX_IDX_BYTES:
        raise UserError(f"{name}: header says {_describe(dims)} ({need} bytes), more than the"
                        f" {_MAX_IDX_BYTES} bytes this reader accepts; the header is corrupt")
    if not gzipped and file_size - header_len != need:  # known from the size, without reading
        raise _size_problem(name, dims, file_size - header_len, where)
    body = _read_up_to(f, need + 1)
    if len(body) > need:  # only gzip gets here; how much more would mean inflating it all
        raise UserError(f"{name}: trailing garbage: header says {_describe(dims)} ({need} bytes)"
                        f" but the file holds more data{where}")
    if len(body) < need:
        raise _size_problem(name, dims, len(body), where)
    arr = np.frombuffer(body, dtype=np.uint8).reshape(dims)
    arr.flags.writeable = False
    return arr


_MAX_DRAIN = 256 << 20


def _drain(f) -> None:
    """Read on (discarding) to the end of ``f``, at most ``_MAX_DRAIN`` bytes more.

    Why: a bit flipped in a deflate stream can inflate to data of the wrong length or a
    header that makes no sense, and the gzip CRC that proves the file corrupt is only
    checked at the end of the member.  Draining lets that check speak ("corrupt gzip data:
    CRC check failed") instead of the symptom ("trailing garbage").  A gzip bomb costs at
    most the cap in inflating time, never memory.
    """
    left = _MAX_DRAIN
    while left > 0:
        chunk = f.read(min(64 << 10, left))  # small: a refused file costs no memory
        if not chunk:
            return
        left -= len(chunk)


def read_idx(path, ndim: int | None = None) -> np.ndarray:
    """Read a (possibly gzipped) IDX file into a read-only uint8 array; UserError if invalid.

    The file is streamed (gunzipped on the fly when it starts with the gzip magic): the header
    comes first, then at most the bytes it declares plus one, so neither a gzip bomb nor a
    huge file costs more memory than the data the header describes.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {oneline(exc.strerror or exc)}") from None
    with raw:
        try:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            size = os.fstat(raw.fileno()).st_size
            if not gzipped:
                return _read_stream(raw, str(path), ndim, False, size)
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                try:
                    return _read_stream(f, str(path), ndim, True, size)
                except UserError:
                    _drain(f)  # a corrupt stream says so here, before its symptom is reported
                    raise
        except EOFError:
            raise UserError(f"{path}: truncated gzip data (the download was probably cut short)") from None
        except UserError:
            raise
        except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise UserError(f"{path}: corrupt gzip data: {oneline(exc)}") from None


def read_idx_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    """Read a matching images file (N, H, W) and labels file (N,); their counts must agree."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise UserError(
            f"{labels_path}: holds {labels.shape[0]} labels but {images_path} holds"
            f" {images.shape[0]} images; the two files must come from the same split"
        )
    return images, labels


def write_idx(path, array) -> None:
    """Write a uint8 array as IDX (gzip-compressed when ``path`` ends in .gz).

    Mostly for tests and for converting other data into the format MNIST tools expect.
    The gzip header carries no timestamp, so the same array always gives the same bytes.
    """
    path = Path(path)
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 only, got {arr.dtype}")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"write_idx needs 1 to 255 dimensions, got {arr.ndim}")
    header = bytes([0, 0, UBYTE, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
