"""CIFAR-10 readers on files written in the official formats from real CIFAR-10 images, the
restricted unpickler, tarballs, corrupted files, and image folders.

The files are built from the real sample shipped in tests/data/ (the first 240 training
images, see tests/data/SOURCES.md), so these tests run on a fresh clone. Where the larger
data is present ($DISTNET_TEST_DATA or ../shared/data) the same readers are also checked on
the exact 4,000-image subset, and the image-folder reader on the lossy JPEG copy of all
60,000 images."""

import hashlib
import io
import os
import pickle
import pickletools
import re
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE_DATA, need_data
from distnet.data import load_dataset
from distnet.data import cifar
from distnet.data.imagefolder import image_folder_dataset, load_image_folder
from distnet.errors import UserError

SAMPLE = SAMPLE_DATA / "cifar10_train_first240.npz"
EXACT = "cifar10/cifar10_train_first4000_exact.npz"
JPEG_TAR = "cifar10/cifar10_jpeg_q75.tar.gz"
PER_BATCH = 40  # the sample as 5 x 40 train images, then 40 as the "test" batch
PER_BATCH_EXACT = 640  # the exact subset as 5 x 640 train images, then 800 as "test"
# Published facts about the CIFAR-10 training set (see tests/data/SOURCES.md).
FIRST_RED_BYTES = [59, 43, 50, 68, 98, 119, 139, 145]
FIRST_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTNET_OFFLINE", "1")


def _read_npz(path: Path, x_key: str, y_key: str):
    with np.load(path, allow_pickle=False) as z:
        x = np.ascontiguousarray(z[x_key].transpose(0, 3, 1, 2))  # HWC -> CHW, as the readers give
        return x, z[y_key].astype(np.int64), {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def exact():
    """(images (240, 3, 32, 32) CHW uint8, labels int64): the real sample in tests/data."""
    x, y, _ = _read_npz(SAMPLE, "x_train_first240", "y_train_first240")
    return x, y


@pytest.fixture(scope="module")
def exact4000():
    """(images (4000, 3, 32, 32), labels, all 50000 train labels) from the exact subset."""
    x, y, z = _read_npz(need_data(EXACT, "the exact 4,000-image CIFAR-10 subset"),
                        "x_train_first4000", "y_train_first4000")
    return x, y, z["y_train"].astype(np.int64)


def _batches(exact, per_batch=PER_BATCH):
    x, y = exact[0], exact[1]
    out = {}
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        out[f"data_batch_{i + 1}"] = (x[sl], y[sl])
    out["test_batch"] = (x[5 * per_batch:], y[5 * per_batch:])
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


def _write_folder(folder: Path, exact, binary: bool, py2=True, per_batch=PER_BATCH):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in _batches(exact, per_batch).items():
        if binary:
            (folder / f"{name}.bin").write_bytes(_binary_bytes(images, labels))
        else:
            (folder / name).write_bytes(_python_bytes(images, labels, name, py2))


def _write_tarball(path: Path, exact, binary: bool, per_batch=PER_BATCH):
    folder = cifar.BIN_FOLDER if binary else cifar.PY_FOLDER
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, (images, labels) in _batches(exact, per_batch).items():
            data = _binary_bytes(images, labels) if binary else _python_bytes(images, labels, name)
            info = tarfile.TarInfo(f"{folder}/{name}{'.bin' if binary else ''}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


LAYOUTS = ["bin-direct", "bin-subfolder", "py-direct", "py-subfolder", "py3-numpy2-direct", "bin-tar", "py-tar"]


def _make_layout(root: Path, layout: str, exact, per_batch=PER_BATCH) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    kw = {"per_batch": per_batch}
    if layout == "bin-direct":
        _write_folder(root, exact, binary=True, **kw)
    elif layout == "bin-subfolder":
        _write_folder(root / cifar.BIN_FOLDER, exact, binary=True, **kw)
    elif layout == "py-direct":
        _write_folder(root, exact, binary=False, **kw)
    elif layout == "py-subfolder":
        _write_folder(root / cifar.PY_FOLDER, exact, binary=False, **kw)
    elif layout == "py3-numpy2-direct":
        _write_folder(root, exact, binary=False, py2=False, **kw)
    elif layout == "bin-tar":
        _write_tarball(root / cifar.BIN_TARBALL, exact, binary=True, **kw)
    elif layout == "py-tar":
        _write_tarball(root / cifar.PY_TARBALL, exact, binary=False, **kw)
    return root


def test_shipped_sample_is_the_documented_real_data(exact):
    digest = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    documented = re.search(rf"^\| {SAMPLE.name} \| [\d,]+ \| ([0-9a-f]{{64}}) \|$",
                           (SAMPLE_DATA / "SOURCES.md").read_text(), re.M)
    assert documented and documented.group(1) == digest, "tests/data/SOURCES.md must give the sample's sha256"
    x, y = exact
    assert x.shape == (240, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (240,)
    assert x[0, 0, 0, :8].tolist() == FIRST_RED_BYTES and y[:10].tolist() == FIRST_LABELS
    assert set(np.unique(y)) == set(range(10))
    with np.load(SAMPLE, allow_pickle=False) as z:
        assert tuple(z["classes"].tolist()) == cifar.CLASSES


def test_shipped_sample_is_the_start_of_the_exact_subset(exact, exact4000):
    assert np.array_equal(exact[0], exact4000[0][:240]) and np.array_equal(exact[1], exact4000[1][:240])
    x, y, y_all = exact4000
    assert np.array_equal(y, y_all[:4000]) and np.bincount(y_all).tolist() == [5000] * 10
    assert x[0, 0, 0, :8].tolist() == FIRST_RED_BYTES


def test_python2_style_pickle_really_looks_official(exact):
    data = _python_bytes(*_batches(exact)["test_batch"], "test_batch")
    names = {op.name for op, _, _ in pickletools.genops(data)}
    assert "BINBYTES" not in names and "SHORT_BINBYTES" not in names and "BINUNICODE" not in names
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data


def _check_read_back(root, exact, per_batch):
    x, y = exact[0], exact[1]
    n_train = 5 * per_batch
    train_x, train_y = cifar.load_cifar10(root, "train")
    test_x, test_y = cifar.load_cifar10(root, "test")
    assert train_x.shape == (n_train, 3, 32, 32) and train_x.dtype == np.uint8
    assert np.array_equal(train_x, x[:n_train]) and np.array_equal(train_y, y[:n_train])
    assert np.array_equal(test_x, x[n_train:]) and np.array_equal(test_y, y[n_train:])
    # The published first red bytes of training image 0 (see SOURCES.md).
    assert train_x[0, 0, 0, :8].tolist() == FIRST_RED_BYTES


@pytest.mark.parametrize("layout", LAYOUTS)
def test_official_formats_read_back_exactly(tmp_path, layout, exact):
    _check_read_back(_make_layout(tmp_path / layout, layout, exact), exact, PER_BATCH)


@pytest.mark.parametrize("layout", ["bin-subfolder", "py-tar"])
def test_official_formats_read_back_the_whole_exact_subset(tmp_path, layout, exact4000):
    root = _make_layout(tmp_path / layout, layout, exact4000, per_batch=PER_BATCH_EXACT)
    _check_read_back(root, exact4000, PER_BATCH_EXACT)


@pytest.mark.parametrize("layout", ["bin-subfolder", "py-tar"])
def test_registry_loads_cifar10(tmp_path, layout, exact):
    root = _make_layout(tmp_path / "data", layout, exact)
    ds = load_dataset("cifar10", "train", data_dir=root)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10 and ds.classes[0] == "airplane"
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    assert np.array_equal(ds.images, exact[0][: 5 * PER_BATCH])
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


# --------------------------------------------------------------------------- image folders


@pytest.fixture(scope="module")
def png_folder(exact, tmp_path_factory):
    """The sample as a lossless image-folder tree ``train|test/<class>/NNNN.png``, numbered
    within each class in the original order, as the JPEG copy of CIFAR-10 is laid out:
    the 200 train images of the sample in train/, the other 40 in test/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("png") / "cifar10_png"
    x, y = exact
    for split, sl in (("train", slice(0, 5 * PER_BATCH)), ("test", slice(5 * PER_BATCH, None))):
        for label, cls in enumerate(cifar.CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for k, img in enumerate(x[sl][y[sl] == label]):
                Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{k:04d}.png")
    return root


def _class_order(x, y):
    """What an image-folder reader must give: class by class, original order within a class."""
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


def test_image_folder_reads_png_cifar_exactly(png_folder, exact, tmp_path):
    x, y = exact
    for split, sl in (("train", slice(0, 5 * PER_BATCH)), ("test", slice(5 * PER_BATCH, None))):
        images, labels, classes = load_image_folder(png_folder, split, cache_dir=tmp_path / "c")
        assert classes == cifar.CLASSES and images.dtype == np.uint8 and labels.dtype == np.int64
        want_x, want_y = _class_order(x[sl], y[sl])
        assert np.array_equal(images, want_x) and np.array_equal(labels, want_y)


def test_image_folder_cache_is_used_and_invalidated(png_folder, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = load_image_folder(png_folder, "test", cache_dir=cache)
    cached = list(cache.glob("*-test-*/images.npy"))  # one decoded entry, no temporary left
    assert len(cached) == 1 and not list(cache.glob(".*"))
    monkeypatch.setitem(sys.modules, "PIL", None)  # from now on Pillow "is not installed"
    again = load_image_folder(png_folder, "test", cache_dir=cache)  # served from the cache
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    victim = png_folder / "test" / "cat" / "0001.png"
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        with pytest.raises(UserError, match="needs Pillow"):
            load_image_folder(png_folder, "test", cache_dir=cache)
    finally:
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_registry_cifar10_from_png_image_folder(png_folder, exact):
    ds = load_dataset("cifar10", "test", data_dir=png_folder)
    assert ds.images.shape == (40, 3, 32, 32) and ds.classes == cifar.CLASSES
    assert ds.mean == (0.4914, 0.4822, 0.4465)  # the full training set's, not this folder's
    want_x, want_y = _class_order(exact[0][5 * PER_BATCH:], exact[1][5 * PER_BATCH:])
    assert np.array_equal(ds.images, want_x) and np.array_equal(ds.labels, want_y)


@pytest.fixture(scope="module")
def jpeg_subset(tmp_path_factory):
    """Extract a few JPEGs (not all 60000) of the lossy copy: 2 test images of every class,
    3 train airplanes. The archive lists test/ first, then train/airplane/, so reading stops
    after ~10000 of its 60000 members."""
    tar_path = need_data(JPEG_TAR, "the JPEG copy of CIFAR-10 (cifar10_jpeg_q75.tar.gz, 19 MB)")
    root = tmp_path_factory.mktemp("jpeg") / "cifar10_jpeg_q75"
    wanted = {f"test/{c}/{i:04d}.jpg" for c in cifar.CLASSES for i in range(2)}
    wanted |= {f"train/airplane/{i:04d}.jpg" for i in range(3)}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            rel = member.name.partition("/")[2]
            if member.isfile() and rel in wanted:
                dest = root.joinpath(*rel.split("/"))  # names from our own set: no traversal possible
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(member).read())
                wanted.discard(rel)
                if not wanted:
                    break
    assert not wanted, f"missing from {tar_path}: {sorted(wanted)[:3]}"
    return root


def test_image_folder_reads_jpeg_cifar(jpeg_subset, exact4000, tmp_path):
    images, labels, classes = load_image_folder(jpeg_subset, "train", cache_dir=tmp_path / "c")
    # Classes come from train and test together, so train (airplanes only) still numbers all 10.
    assert classes == cifar.CLASSES
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8 and labels.tolist() == [0, 0, 0]
    # train/airplane/000k.jpg is the k-th airplane in the original order: compare with the
    # exact pixels (JPEG q75 is lossy, so by PSNR, not equality; SOURCES.md reports ~30 dB).
    x, y, _ = exact4000
    for k, i in enumerate(np.flatnonzero(y == 0)[:3]):
        mse = np.mean((images[k].astype(np.float64) - x[i]) ** 2)
        assert 10 * np.log10(255**2 / mse) > 22
        others = [np.mean((images[k].astype(np.float64) - x[j]) ** 2) for j in np.flatnonzero(y == 0)[:20]]
        assert int(np.argmin(others)) == k  # and it is the nearest of the first 20 airplanes


def test_registry_cifar10_from_jpeg_image_folder(jpeg_subset, tmp_path):
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
