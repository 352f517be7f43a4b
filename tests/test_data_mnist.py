"""The real MNIST files: the copy inside the package (it runs everywhere), raw and renamed
copies of it, and a second independent copy where one is present, all agree."""

import gzip
import hashlib
import shutil

import numpy as np
import pytest

from conftest import need_data
from distnet.data import load_dataset
from distnet.data.registry import embedded_dir, get_spec

FILES = [f.name for f in get_spec("mnist").files]
# The MD5s published on yann.lecun.com for the four .gz files (shared/data/SOURCES.md): an
# independent check of the bytes, and of the SHA-256s the registry verifies downloads with.
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTNET_OFFLINE", "1")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embedded_files_are_the_published_originals():
    assert sorted(FILES) == sorted(PUBLISHED_MD5)
    for f in get_spec("mnist").files:
        data = (embedded_dir() / f.name).read_bytes()
        assert hashlib.md5(data).hexdigest() == PUBLISHED_MD5[f.name] == f.md5
        assert hashlib.sha256(data).hexdigest() == f.sha256


def test_embedded_files_are_byte_identical_to_a_second_copy():
    other = need_data("mnist", "a second copy of the four MNIST .gz files",
                      probe="train-images-idx3-ubyte.gz")
    for name in FILES:
        assert (embedded_dir() / name).read_bytes() == (other / name).read_bytes(), name
    a = load_dataset("mnist", "test")
    b = load_dataset("mnist", "test", data_dir=other)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("split,n,counts", [("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)])
def test_shapes_and_label_counts(split, n, counts):
    ds = load_dataset("mnist", split, data_dir=embedded_dir())
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == counts
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and len(ds) == n
    if split == "train":  # the published normalisation constants are the train set's stats
        assert round(float(ds.images.mean()) / 255, 4) == 0.1307
        assert round(float(ds.images.std()) / 255, 4) == 0.3081


def test_embedded_default_needs_no_data_dir(tmp_path):
    # No data_dir, no $DISTNET_DATA, an empty cache, offline: the package's copy is used.
    # Compared with a copy of the files in a folder of its own (a different path, so a
    # different cache entry and a real second read).
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in FILES:
        shutil.copy(embedded_dir() / name, copy / name)
    default = load_dataset("mnist", "test")
    explicit = load_dataset("mnist", "test", data_dir=copy)
    assert np.array_equal(default.images, explicit.images)
    assert np.array_equal(default.labels, explicit.labels)
    assert np.bincount(default.labels).tolist() == TEST_COUNTS
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.gz"))


def test_raw_ungzipped_copy_loads_identically(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in FILES:
        (raw / name[:-3]).write_bytes(gzip.decompress((embedded_dir() / name).read_bytes()))
    for split in ("train", "test"):
        a = load_dataset("mnist", split, data_dir=raw)
        b = load_dataset("mnist", split, data_dir=embedded_dir())
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_dotted_names_and_dataset_subfolder(tmp_path):
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    shutil.copy(embedded_dir() / "t10k-images-idx3-ubyte.gz", folder / "t10k-images.idx3-ubyte.gz")
    (folder / "t10k-labels.idx1-ubyte").write_bytes(
        gzip.decompress((embedded_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())
    )
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "root")
    assert np.bincount(ds.labels).tolist() == TEST_COUNTS


def test_batch_normalises_with_fixed_stats():
    ds = load_dataset("mnist", "test")
    idx = [0, 5, 9999, 5]
    x, y = ds.batch(idx)
    assert x.dtype == np.float32 and x.shape == (4, 1, 28, 28) and x.flags.writeable
    assert y.dtype == np.int64 and y.tolist() == ds.labels[idx].tolist()
    expected = (ds.images[idx].astype(np.float64) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert not ds.images.flags.writeable  # cached arrays are shared, so read-only
