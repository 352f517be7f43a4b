"""Inputs with no natural bound on memory (issue 12, item 3): IDX gzip bombs, images that
are not what their name says or decode to gigabytes, non-finite or negative configuration
values, and paths with ``~``. Each ends in one line ``distnet: error: <file>: ...`` (exit 2
through the CLI, UserError through the API) with memory near the legitimate size."""

import gzip
import io
import os
import resource
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from PIL import EpsImagePlugin, Image

from conftest import REPO
from distnet.data import idx, imagefolder
from distnet.data.idx import read_idx
from distnet.data.imagefolder import load_image_folder
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


def test_idx_header_edge_cases(tmp_path, monkeypatch):
    f = tmp_path / "f"
    f.write_bytes(b"\x01\x00\x08\x03" + bytes(12))  # only the first magic byte is wrong
    with pytest.raises(UserError) as info:
        read_idx(f, ndim=3)
    assert str(info.value) == f"{f}: not an IDX file: bad magic 0x01000803 (expected 0x00000803)"
    f.write_bytes(_idx_header(7) + bytes(6))
    with pytest.raises(UserError) as info:
        read_idx(f, ndim=1)
    assert str(info.value) == f"{f}: truncated: header says 7 labels (7 bytes) but file holds 6 bytes of data"
    f.write_bytes(_idx_header((1 << 24) + 1, 1, 1) + b"\0" * 10)  # big dims are 4 whole bytes
    with pytest.raises(UserError) as info:
        read_idx(f, ndim=3)
    assert str(info.value) == (f"{f}: truncated: header says 16777217 images of 1x1 (16777217 bytes)"
                               " but file holds 10 bytes of data")
    f.write_bytes(_idx_header(1, 2, 65536) + bytes(range(256)) * 512)
    arr = read_idx(f, ndim=3)
    assert arr.shape == (1, 2, 65536) and arr[0, 1, 255] == 255
    f.write_bytes(gzip.compress(_idx_header(5) + bytes(5)))
    with pytest.raises(UserError, match="1 dimensions, expected 3"):
        read_idx(f, ndim=3)
    f.write_bytes(b"\x1f\x8b\x09" + bytes(40))
    with pytest.raises(UserError, match="corrupt gzip data: Unknown compression method"):
        read_idx(f)
    with pytest.raises(UserError, match=f"{tmp_path}: cannot read: Is a directory"):
        read_idx(tmp_path)
    monkeypatch.setattr(idx, "_MAX_IDX_BYTES", 50)
    f.write_bytes(_idx_header(5, 10) + bytes(50))  # exactly at the cap: read
    assert read_idx(f).shape == (5, 10)
    f.write_bytes(_idx_header(3, 17) + bytes(51))
    with pytest.raises(UserError, match="more than the 50 bytes"):
        read_idx(f)


def test_read_up_to_never_returns_more_than_asked():
    stream = io.BytesIO(b"x" * 10)
    assert idx._read_up_to(stream, 3) == b"xxx" and idx._read_up_to(stream, 100) == b"x" * 7


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


# --------------------------------------------------------------------------- images


EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 6
%%EndComments
0 setgray 0 0 8 6 rectfill
showpage
%%EOF
"""


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _gray_png(width, height, idat=None):
    """A valid 8-bit grayscale PNG of zeros built by hand (or with the given IDAT bytes)."""
    if idat is None:
        comp = zlib.compressobj(9)
        row = bytes(1 + width)  # filter byte 0, then the pixels
        idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _folder(tmp_path, files):
    root = tmp_path / "imgs"
    for rel, data in files.items():
        p = root / "train" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def test_hand_built_png_is_valid():
    with Image.open(io.BytesIO(_gray_png(7, 3))) as im:
        assert im.format == "PNG" and im.size == (7, 3) and np.asarray(im).shape == (3, 7)


def test_eps_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or Image.new("L", (8, 6)).im)
    root = _folder(tmp_path, {"a/0.png": _gray_png(8, 6), "a/1.png": EPS})
    # The fixture is what the issue describes: by content, Pillow takes it for EPS and would
    # hand it to Ghostscript on load.
    with Image.open(root / "train" / "a" / "1.png") as im:
        assert im.format == "EPS"
        im.load()
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(UserError) as info:
        load_image_folder(root, "train", cache_dir=False)
    message = str(info.value)
    assert message.startswith(f"{root / 'train' / 'a' / '1.png'}: cannot decode image: not a PNG or JPEG")
    assert calls == [] and "\n" not in message


def test_huge_png_is_refused_from_its_header_before_decoding(tmp_path):
    big = _gray_png(9400, 9400)  # ~90 KB on disk, 88 MB decoded
    assert len(big) < 200_000
    root = _folder(tmp_path, {"a/big.png": big})
    result, peak = _peak_bytes(load_image_folder, root, "train", cache_dir=False)
    assert isinstance(result, UserError), result
    assert str(result) == (f"{root / 'train' / 'a' / 'big.png'}: image is 9400x9400, outside the 1 to 4096"
                           " pixels per side this reader decodes")
    assert peak < 4 << 20, peak


def test_size_limit_boundary_and_mismatch_checked_before_decoding(tmp_path, monkeypatch):
    root = _folder(tmp_path, {"a/0.png": _gray_png(4096, 1), "a/1.png": _gray_png(4096, 1)})
    images, _, _ = load_image_folder(root, "train", cache_dir=False)
    assert images.shape == (2, 1, 1, 4096)
    (root / "train" / "a" / "2.png").write_bytes(_gray_png(4097, 1))
    with pytest.raises(UserError, match="2.png: image is 4097x1, outside"):
        load_image_folder(root, "train", cache_dir=False)
    # A second image of another size whose data is garbage: refused by size, never decoded.
    (root / "train" / "a" / "2.png").write_bytes(_gray_png(5, 1, idat=b"garbage"))
    with pytest.raises(UserError, match=r"2.png: image is 5x1 but .*0.png and the others before it are 4096x1"):
        load_image_folder(root, "train", cache_dir=False)
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_SIDE", 4095)
    with pytest.raises(UserError, match="0.png: image is 4096x1, outside the 1 to 4095"):
        load_image_folder(root, "train", cache_dir=False)


# --------------------------------------------------------------------------- configuration

from conftest import run_train  # noqa: E402
from distnet.config import parse_config  # noqa: E402

BASE = ["--dataset", "synthetic", "--model", "mlp"]


@pytest.mark.parametrize("flag,value", [
    ("--lr", "inf"), ("--lr", "nan"), ("--lr", "-inf"), ("--lr", "0"),
    ("--weight-decay", "nan"), ("--weight-decay", "inf"), ("--weight-decay", "-0.1"),
    ("--momentum", "nan"), ("--momentum", "inf"), ("--momentum", "1"),
    ("--bucket-mb", "nan"), ("--bucket-mb", "-1"), ("--bucket-mb", "0"), ("--bucket-mb", "inf"),
    ("--timeout", "inf"), ("--timeout", "nan"), ("--timeout", "0"),
])
def test_non_finite_and_negative_numbers_are_refused(flag, value):
    with pytest.raises(UserError) as info:
        parse_config(BASE + [f"{flag}={value}"])
    message = str(info.value)
    assert message.startswith(f"{flag}: must be") and value in message.lower()


def test_finite_values_at_the_edges_are_accepted():
    cfg = parse_config(BASE + ["--lr", "1e-12", "--weight-decay", "0", "--overlap", "--bucket-mb", "0.001",
                                 "--timeout", "0.5"])
    assert (cfg.lr, cfg.weight_decay, cfg.bucket_mb, cfg.timeout) == (1e-12, 0.0, 0.001, 0.5)


def test_non_finite_values_from_toml_are_refused(tmp_path):
    (tmp_path / "c.toml").write_text("lr = inf\n")
    with pytest.raises(UserError, match="--lr: must be a finite number > 0, got inf"):
        parse_config(BASE + ["--config", str(tmp_path / "c.toml")])
    (tmp_path / "c.toml").write_text("bucket-mb = nan\n")
    with pytest.raises(UserError, match="--bucket-mb: must be"):
        parse_config(BASE + ["--config", str(tmp_path / "c.toml")])


@pytest.mark.parametrize("args", [["--lr", "inf"], ["--bucket-mb", "nan"], ["--weight-decay", "nan"]])
def test_non_finite_numbers_through_the_cli_are_one_line_and_exit_2(args):
    r = run_train(*BASE, "--no-progress", "--max-steps", "1", *args, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distnet: error: {args[0]}: must be"), lines


def test_tilde_is_expanded_in_every_path_option(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "ck").mkdir(parents=True)
    (home / "run.toml").write_text('metrics = "~/m.jsonl"\n')
    monkeypatch.setenv("HOME", str(home))
    cfg = parse_config(BASE + ["--config", "~/run.toml", "--data-dir", "~/data", "--checkpoint-dir", "~/ck",
                               "--resume", "~/ck/x.npz"])
    assert (cfg.data_dir, cfg.checkpoint_dir, cfg.resume, cfg.metrics) == (
        str(home / "data"), str(home / "ck"), str(home / "ck" / "x.npz"), str(home / "m.jsonl"))
    assert parse_config(BASE + ["--checkpoint-dir", "~/ck", "--resume"]).resume == "latest"
    (home / "file").write_text("")
    with pytest.raises(UserError, match=f"--checkpoint-dir: {home / 'file'} exists and is not a directory"):
        parse_config(BASE + ["--checkpoint-dir", "~/file"])


def test_eps_in_a_cifar_image_folder_through_the_cli(tmp_path):
    folder = tmp_path / "data" / "train" / "airplane"
    folder.mkdir(parents=True)
    (folder / "0000.png").write_bytes(EPS)
    r = run_train("--dataset", "cifar10", "--data-dir", tmp_path / "data", "--no-download", "--model", "cifar-cnn",
                  "--max-steps", "1", "--no-progress", env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [f"distnet: error: {folder / '0000.png'}: cannot decode image: not a PNG or JPEG file"
                     " (whatever its name says)"]
