"""Inputs with no natural bound on memory (issue 12, item 3): IDX gzip bombs, images that
are not what their name says or decode to gigabytes, non-finite or negative configuration
values, and paths with ``~``. Each ends in one line ``distnet: error: <file>: ...`` (exit 2
through the CLI, UserError through the API) with memory near the legitimate size."""

import gzip
import os
import resource
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from distnet.data import idx
from distnet.data.idx import read_idx
from distnet.errors import UserError

EMBEDDED = REPO / "distnet" / "data" / "embedded"


def _peak_bytes(fn, *args, **kwargs):
    """(result or exception, peak traced bytes) of ``fn(*args)``; numpy reports its buffers
    to tracemalloc, so array and bytes allocations are both counted."""
    tracemalloc.start()
    try:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - returned for the caller to check
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _idx_header(*dims):
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


_ZEROS_MEMBER = None


def _zeros_member():
    """One gzip member of 64 MiB of zeros (~65 KB); repeating it makes a bomb cheaply."""
    global _ZEROS_MEMBER
    if _ZEROS_MEMBER is None:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        chunk = bytes(1 << 20)
        _ZEROS_MEMBER = b"".join(comp.compress(chunk) for _ in range(64)) + comp.flush()
    return _ZEROS_MEMBER


def _bomb(first: bytes, gib: float) -> bytes:
    """``first`` gzipped, then enough 64 MiB members of zeros to decompress to ``gib`` GiB more."""
    return gzip.compress(first, mtime=0) + _zeros_member() * int(gib * 16)


def test_zeros_member_is_what_it_claims():
    assert len(gzip.decompress(_zeros_member())) == 64 << 20 and len(_zeros_member()) < 100_000


def test_idx_gzip_bomb_is_refused_within_twice_the_declared_size(tmp_path):
    legit = _idx_header(10000, 28, 28) + bytes(10000 * 784)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(_bomb(legit, 0.5))  # 7.8 MB declared, 512 MiB more behind it
    result, peak = _peak_bytes(read_idx, path, ndim=3)
    assert isinstance(result, UserError), result
    message = str(result)
    assert message.startswith(f"{path}: trailing garbage: header says 10000 images of 28x28 (7840000 bytes)")
    assert "after gunzip" in message and "\n" not in message
    assert peak < 2 * 7_840_000 + (2 << 20), peak


def test_idx_legit_read_stays_near_its_size(tmp_path):
    legit = _idx_header(10000, 28, 28) + np.random.default_rng(0).integers(0, 256, 7_840_000, dtype=np.uint8).tobytes()
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(legit, compresslevel=1))
    arr, peak = _peak_bytes(read_idx, path, ndim=3)
    assert arr.shape == (10000, 28, 28) and not arr.flags.writeable
    assert bytes(arr.reshape(-1)[:50]) == legit[16:66]
    assert peak < 2 * 7_840_000 + (2 << 20), peak


@pytest.mark.parametrize("gz", [True, False])
def test_idx_header_claiming_huge_size_is_refused_without_allocating(tmp_path, gz):
    data = _idx_header(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * 100
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(data) if gz else data)
    result, peak = _peak_bytes(read_idx, path, ndim=3)
    assert isinstance(result, UserError) and str(result).startswith(f"{path}: header says")
    assert "more than the 1073741824 bytes" in str(result) and peak < 1 << 20


def test_idx_header_claiming_more_than_the_file_holds_reads_only_what_is_there(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(_idx_header(100000, 28, 28) + b"\1" * 1000))  # 78 MB claimed
    result, peak = _peak_bytes(read_idx, path, ndim=3)
    assert str(result) == (f"{path}: truncated: header says 100000 images of 28x28 (78400000 bytes)"
                           " but file holds 1000 bytes of data after gunzip")
    assert peak < 4 << 20


def test_idx_raw_file_with_a_huge_tail_is_not_read_whole(tmp_path):
    path = tmp_path / "raw"
    with open(path, "wb") as f:
        f.write(_idx_header(10, 5))
        f.truncate(12 + 50 + (200 << 20))  # 200 MiB of trailing zeros (sparse)
    result, peak = _peak_bytes(read_idx, path, ndim=2)
    assert str(result).startswith(f"{path}: {200 << 20} bytes of trailing garbage: header says dimensions 10x5")
    assert peak < 2 << 20


def _limit_address_space(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_idx_gzip_bomb_through_the_cli_under_an_address_space_limit(tmp_path):
    """Under a 1 GiB address-space limit (a legitimate MNIST run peaks near 0.5 GiB) a bomb of
    2 GiB of zeros behind a valid t10k header ends in the one-line error, not a MemoryError."""
    data = tmp_path / "mnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes((EMBEDDED / name).read_bytes())
    t10k = gzip.decompress((EMBEDDED / "t10k-images-idx3-ubyte.gz").read_bytes())
    bomb = data / "t10k-images-idx3-ubyte.gz"
    bomb.write_bytes(_bomb(t10k, 2))
    env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "distnet.train", "--dataset", "mnist", "--data-dir", str(data),
           "--no-download", "--max-steps", "1", "--no-progress"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180,
                            preexec_fn=_limit_address_space(1 << 30))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distnet: error: {bomb}: trailing garbage"), lines
