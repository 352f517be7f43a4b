"""The real MNIST files: shared copy, embedded copy, raw and renamed copies all agree."""

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from distnet.data import load_dataset
from distnet.data.registry import embedded_dir, get_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
FILES = [f.name for f in get_spec("mnist").files]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTNET_OFFLINE", "1")


def _shared():
    assert MNIST_DIR.is_dir(), f"shared MNIST files expected in {MNIST_DIR} (see shared/data/SOURCES.md)"
    return MNIST_DIR


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embedded_files_are_byte_identical_to_shared_originals():
    for f in get_spec("mnist").files:
        assert _sha256(embedded_dir() / f.name) == _sha256(_shared() / f.name) == f.sha256
        assert hashlib.md5((embedded_dir() / f.name).read_bytes()).hexdigest() == f.md5


@pytest.mark.parametrize("split,n,counts", [("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)])
def test_shapes_and_label_counts(split, n, counts):
    ds = load_dataset("mnist", split, data_dir=_shared())
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == counts
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10 and len(ds) == n
    if split == "train":  # the published normalisation constants are the train set's stats
        assert round(float(ds.images.mean()) / 255, 4) == 0.1307
        assert round(float(ds.images.std()) / 255, 4) == 0.3081


def test_embedded_default_needs_no_data_dir():
    default = load_dataset("mnist", "test")
    shared = load_dataset("mnist", "test", data_dir=_shared())
    assert np.array_equal(default.images, shared.images)
    assert np.array_equal(default.labels, shared.labels)
    assert Path(embedded_dir()).is_dir()


def test_raw_ungzipped_copy_loads_identically(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in FILES:
        (raw / name[:-3]).write_bytes(gzip.decompress((_shared() / name).read_bytes()))
    for split in ("train", "test"):
        a = load_dataset("mnist", split, data_dir=raw)
        b = load_dataset("mnist", split, data_dir=_shared())
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_dotted_names_and_dataset_subfolder(tmp_path):
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    shutil.copy(_shared() / "t10k-images-idx3-ubyte.gz", folder / "t10k-images.idx3-ubyte.gz")
    (folder / "t10k-labels.idx1-ubyte").write_bytes(
        gzip.decompress((_shared() / "t10k-labels-idx1-ubyte.gz").read_bytes())
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
