"""CIFAR-10 readers on files written in the official formats from the exact 4000-image subset,
the restricted unpickler, tarballs, and the JPEG image-folder copy."""

import io
import os
import pickle
import pickletools
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from distnet.data import load_dataset
from distnet.data import cifar
from distnet.data.imagefolder import image_folder_dataset, load_image_folder
from distnet.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
NPZ = SHARED / "cifar10_train_first4000_exact.npz"
JPEG_TAR = SHARED / "cifar10_jpeg_q75.tar.gz"
N_TRAIN_BATCH = 640  # 5 x 640 train images, then 800 as the "test" batch


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTNET_OFFLINE", "1")


@pytest.fixture(scope="module")
def exact():
    """(images (4000, 3, 32, 32) CHW, labels int64, all 50000 train labels) from the exact npz."""
    assert NPZ.is_file(), f"exact CIFAR-10 subset expected at {NPZ} (see shared/data/SOURCES.md)"
    with np.load(NPZ, allow_pickle=False) as z:
        x = np.ascontiguousarray(z["x_train_first4000"].transpose(0, 3, 1, 2))
        return x, z["y_train_first4000"].astype(np.int64), z["y_train"].astype(np.int64)


def _batches(exact):
    x, y, _ = exact
    out = {}
    for i in range(5):
        sl = slice(i * N_TRAIN_BATCH, (i + 1) * N_TRAIN_BATCH)
        out[f"data_batch_{i + 1}"] = (x[sl], y[sl])
    out["test_batch"] = (x[5 * N_TRAIN_BATCH:], y[5 * N_TRAIN_BATCH:])
    return out


def _binary_bytes(images, labels):
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(images), -1)], axis=1)
    return records.tobytes()


def _as_python2_pickle(data: bytes) -> bytes:
    """Rewrite a protocol-3 pickle the way Python 2's cPickle (protocol 2) wrote the official
    batches: every string a py2 str, numpy's helper under numpy.core.multiarray."""
    ops = list(pickletools.genops(data))
    out = io.BytesIO()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "PROTO":
            out.write(b"\x80\x02")
        elif op.name == "SHORT_BINBYTES":
            out.write(b"U" + bytes([len(arg)]) + arg)
        elif op.name in ("BINBYTES", "BINUNICODE"):
            raw = arg if isinstance(arg, bytes) else arg.encode("latin-1")
            out.write(b"T" + struct.pack("<i", len(raw)) + raw)
        elif op.name == "GLOBAL":
            module, name = arg.split(" ")
            out.write(f"c{module.replace('numpy._core', 'numpy.core')}\n{name}\n".encode())
        else:
            out.write(data[pos:end])
    return out.getvalue()


def _python_bytes(images, labels, batch_name, py2=True):
    batch = {
        b"batch_label": f"{batch_name} of the test subset".encode(),
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    data = pickle.dumps(batch, protocol=3 if py2 else 4)
    return _as_python2_pickle(data) if py2 else data


def _write_folder(folder: Path, exact, binary: bool, py2=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in _batches(exact).items():
        if binary:
            (folder / f"{name}.bin").write_bytes(_binary_bytes(images, labels))
        else:
            (folder / name).write_bytes(_python_bytes(images, labels, name, py2))


def _write_tarball(path: Path, exact, binary: bool):
    folder = cifar.BIN_FOLDER if binary else cifar.PY_FOLDER
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, (images, labels) in _batches(exact).items():
            data = _binary_bytes(images, labels) if binary else _python_bytes(images, labels, name)
            info = tarfile.TarInfo(f"{folder}/{name}{'.bin' if binary else ''}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


LAYOUTS = ["bin-direct", "bin-subfolder", "py-direct", "py-subfolder", "py3-numpy2-direct", "bin-tar", "py-tar"]


def _make_layout(root: Path, layout: str, exact) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if layout == "bin-direct":
        _write_folder(root, exact, binary=True)
    elif layout == "bin-subfolder":
        _write_folder(root / cifar.BIN_FOLDER, exact, binary=True)
    elif layout == "py-direct":
        _write_folder(root, exact, binary=False)
    elif layout == "py-subfolder":
        _write_folder(root / cifar.PY_FOLDER, exact, binary=False)
    elif layout == "py3-numpy2-direct":
        _write_folder(root, exact, binary=False, py2=False)
    elif layout == "bin-tar":
        _write_tarball(root / cifar.BIN_TARBALL, exact, binary=True)
    elif layout == "py-tar":
        _write_tarball(root / cifar.PY_TARBALL, exact, binary=False)
    return root


def test_python2_style_pickle_really_looks_official(exact):
    data = _python_bytes(*_batches(exact)["test_batch"], "test_batch")
    names = {op.name for op, _, _ in pickletools.genops(data)}
    assert "BINBYTES" not in names and "SHORT_BINBYTES" not in names and "BINUNICODE" not in names
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data


@pytest.mark.parametrize("layout", LAYOUTS)
def test_official_formats_read_back_exactly(tmp_path, layout, exact):
    root = _make_layout(tmp_path / layout, layout, exact)
    x, y, _ = exact
    train_x, train_y = cifar.load_cifar10(root, "train")
    test_x, test_y = cifar.load_cifar10(root, "test")
    assert train_x.shape == (5 * N_TRAIN_BATCH, 3, 32, 32) and train_x.dtype == np.uint8
    assert np.array_equal(train_x, x[: 5 * N_TRAIN_BATCH]) and np.array_equal(train_y, y[: 5 * N_TRAIN_BATCH])
    assert np.array_equal(test_x, x[5 * N_TRAIN_BATCH:]) and np.array_equal(test_y, y[5 * N_TRAIN_BATCH:])
    # The published first red bytes of training image 0 (see SOURCES.md).
    assert train_x[0, 0, 0, :8].tolist() == [59, 43, 50, 68, 98, 119, 139, 145]


@pytest.mark.parametrize("layout", ["bin-subfolder", "py-tar"])
def test_registry_loads_cifar10(tmp_path, layout, exact):
    root = _make_layout(tmp_path / "data", layout, exact)
    ds = load_dataset("cifar10", "train", data_dir=root)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10 and ds.classes[0] == "airplane"
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    assert np.array_equal(ds.images, exact[0][: 5 * N_TRAIN_BATCH])
    x, _ = ds.batch([0])
    expected = (exact[0][0] / 255 - np.array(ds.mean)[:, None, None]) / np.array(ds.std)[:, None, None]
    np.testing.assert_allclose(x[0], expected, atol=1e-5)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=3)
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(evil)
    with pytest.raises(UserError) as info:
        cifar.parse_python_batch(evil, str(batch))
    message = str(info.value)
    assert str(batch) in message and "refusing to unpickle" in message and "system" in message
    assert "\n" not in message
    assert not (tmp_path / "pwned-by-pickle").exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps({b"data": print}, protocol=4),  # builtins.print
        pickle.dumps({b"data": np.frombuffer}, protocol=2),  # numpy, but not an admitted helper
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # protocol 0 REDUCE of eval
        b"\x80\x02cnumpy\nload\nq\x00.",  # numpy.load could unpickle further files
    ],
)
def test_other_globals_are_refused(payload):
    with pytest.raises(UserError, match="refusing to unpickle"):
        cifar.restricted_loads(payload, "batch")


def test_malformed_pickle_and_wrong_contents():
    with pytest.raises(UserError, match="not a valid pickle"):
        cifar.parse_python_batch(b"\x80\x02}q\x00(", "b1")
    with pytest.raises(UserError, match="expected uint8"):
        cifar.parse_python_batch(pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}), "b2")
    with pytest.raises(UserError, match="2 images but 1 labels"):
        cifar.parse_python_batch(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "b3")
    with pytest.raises(UserError, match="expected a pickled dict"):
        cifar.parse_python_batch(pickle.dumps([1, 2]), "b4")


def test_corrupt_binary_batches(tmp_path, exact):
    images, labels = _batches(exact)["test_batch"]
    good = _binary_bytes(images, labels)
    with pytest.raises(UserError, match=r"test_batch.bin: 3072 bytes is not a whole number"):
        cifar.parse_binary_batch(good[:3072], "x/test_batch.bin")
    bad_label = bytearray(good)
    bad_label[3 * 3073] = 10
    with pytest.raises(UserError, match="record 3 has label 10"):
        cifar.parse_binary_batch(bytes(bad_label), "x/test_batch.bin")
    # Through the folder reader: truncated file and missing batch both name the file.
    root = _make_layout(tmp_path / "d", "bin-direct", exact)
    (root / "test_batch.bin").write_bytes(good[:-5])
    with pytest.raises(UserError, match=str(root / "test_batch.bin")):
        cifar.load_cifar10(root, "test")
    (root / "data_batch_3.bin").unlink()
    with pytest.raises(UserError, match="data_batch_3.bin: file not found"):
        cifar.load_cifar10(root, "train")


def test_tarball_members_are_never_written_and_links_ignored(tmp_path, exact):
    images, labels = _batches(exact)["test_batch"]
    data = _binary_bytes(images, labels)
    tar_path = tmp_path / "data" / cifar.BIN_TARBALL
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        evil = tarfile.TarInfo("../../escaped.bin")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
        link = tarfile.TarInfo(f"{cifar.BIN_FOLDER}/test_batch.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
        real = tarfile.TarInfo(f"{cifar.BIN_FOLDER}/test_batch.bin")
        real.size = len(data)
        tar.addfile(real, io.BytesIO(data))
    got_x, got_y = cifar.load_cifar10(tar_path.parent, "test")
    assert np.array_equal(got_x, images) and np.array_equal(got_y, labels)
    assert not (tmp_path / "escaped.bin").exists() and not (tmp_path.parent / "escaped.bin").exists()
    assert sorted(p.name for p in tar_path.parent.iterdir()) == [cifar.BIN_TARBALL]
    with pytest.raises(UserError, match="tarball lacks data_batch_1.bin"):
        cifar.load_cifar10(tar_path.parent, "train")


def test_corrupt_tarball(tmp_path):
    (tmp_path / cifar.BIN_TARBALL).write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 100)
    with pytest.raises(UserError, match="cannot read tarball"):
        cifar.load_cifar10(tmp_path, "test")


# --------------------------------------------------------------------------- JPEG image folder


@pytest.fixture(scope="module")
def jpeg_subset(tmp_path_factory):
    """Extract a few JPEGs (not all 60000): 2 test images of every class, 3 train airplanes.

    The archive lists test/ first, then train/airplane/, so reading stops after ~10000 of
    its 60000 members.
    """
    assert JPEG_TAR.is_file(), f"JPEG CIFAR-10 copy expected at {JPEG_TAR}"
    root = tmp_path_factory.mktemp("jpeg") / "cifar10_jpeg_q75"
    wanted = {f"test/{c}/{i:04d}.jpg" for c in cifar.CLASSES for i in range(2)}
    wanted |= {f"train/airplane/{i:04d}.jpg" for i in range(3)}
    with tarfile.open(JPEG_TAR, "r:gz") as tar:
        for member in tar:
            rel = member.name.partition("/")[2]
            if member.isfile() and rel in wanted:
                dest = root.joinpath(*rel.split("/"))  # names from our own set: no traversal possible
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
                wanted.discard(rel)
                if not wanted:
                    break
    assert not wanted, f"missing from {JPEG_TAR}: {sorted(wanted)[:3]}"
    return root


def test_image_folder_reads_jpeg_cifar(jpeg_subset, exact, tmp_path):
    images, labels, classes = load_image_folder(jpeg_subset, "train", cache_dir=tmp_path / "c")
    # Classes come from train and test together, so train (airplanes only) still numbers all 10.
    assert classes == cifar.CLASSES
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == [0, 0, 0]
    # train/airplane/000k.jpg is the k-th airplane in the original order: compare with the
    # exact pixels (JPEG q75 is lossy, so by PSNR, not equality; SOURCES.md reports ~30 dB).
    x, y, _ = exact
    for k, i in enumerate(np.flatnonzero(y == 0)[:3]):
        mse = np.mean((images[k].astype(np.float64) - x[i]) ** 2)
        assert 10 * np.log10(255**2 / mse) > 22
        others = [np.mean((images[k].astype(np.float64) - x[j]) ** 2) for j in np.flatnonzero(y == 0)[:20]]
        assert int(np.argmin(others)) == k  # and it is the nearest of the first 20 airplanes


def test_image_folder_cache_is_used_and_invalidated(jpeg_subset, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = load_image_folder(jpeg_subset, "test", cache_dir=cache)
    cached = list(cache.glob("*.npz"))
    assert len(cached) == 1 and not list(cache.glob("*.tmp"))
    monkeypatch.setitem(sys.modules, "PIL", None)  # from now on Pillow "is not installed"
    again = load_image_folder(jpeg_subset, "test", cache_dir=cache)  # served from the cache
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    victim = jpeg_subset / "test" / "cat" / "0001.jpg"
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(UserError, match="needs Pillow"):
            load_image_folder(jpeg_subset, "test", cache_dir=cache)
    finally:
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_registry_cifar10_from_image_folder(jpeg_subset, tmp_path):
    ds = load_dataset("cifar10", "test", data_dir=jpeg_subset.parent)
    assert ds.images.shape == (20, 3, 32, 32) and ds.classes == cifar.CLASSES
    assert ds.mean == (0.4914, 0.4822, 0.4465)


def test_image_folder_odd_size_and_bad_file(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for cls, size in (("a", (8, 6)), ("b", (8, 6))):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("L", size, color=40 * i).save(root / "train" / cls / f"{i}.png")
    ds = image_folder_dataset(root, "train", cache_dir=False)
    assert ds.images.shape == (4, 1, 6, 8) and ds.classes == ("a", "b")
    odd = root / "train" / "b" / "odd.png"
    Image.new("L", (7, 6)).save(odd)
    with pytest.raises(UserError) as info:
        load_image_folder(root, "train", cache_dir=False)
    assert str(odd) in str(info.value) and "7x6" in str(info.value) and "8x6" in str(info.value)
    odd.write_bytes(b"not a png")
    with pytest.raises(UserError, match="odd.png: cannot decode image"):
        load_image_folder(root, "train", cache_dir=False)
