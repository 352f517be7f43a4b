"""load_dataset: where it looks (data_dir, DIR/<name>, $DISTNET_DATA, embedded, cache),
downloading into the right place, and helpful errors when data cannot be had."""

import dataclasses
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from distnet.data import list_datasets, load_dataset, write_idx
from distnet.data import registry
from distnet.errors import UserError

EMBEDDED = Path(__file__).resolve().parents[1] / "distnet" / "data" / "embedded"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DISTNET_OFFLINE", "1")


def _fake_mnist(folder: Path, n=20, value=7, split="t10k"):
    """Small valid MNIST-format files whose pixels say which copy was loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{split}-images-idx3-ubyte.gz", np.full((n, 28, 28), value, np.uint8))
    write_idx(folder / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_list_and_aliases():
    assert list_datasets() == ("mnist", "fashion-mnist", "cifar10", "synthetic")
    assert registry.get_spec("CIFAR-10").name == "cifar10"
    assert registry.get_spec("fashion_mnist").name == "fashion-mnist"
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; choose one of: mnist, fashion-mnist"):
        load_dataset("imagenet", "train")
    with pytest.raises(UserError, match="unknown split 'val'"):
        load_dataset("mnist", "val")


def test_data_dir_holds_files_directly(tmp_path):
    ds = load_dataset("mnist", "test", data_dir=_fake_mnist(tmp_path / "d", value=1))
    assert ds.images.shape == (20, 1, 28, 28) and int(ds.images[0, 0, 0, 0]) == 1


def test_data_dir_dataset_subfolder_preferred(tmp_path):
    _fake_mnist(tmp_path / "d", value=1)  # e.g. another dataset's files sitting in DIR
    _fake_mnist(tmp_path / "d" / "mnist", value=2)
    assert int(load_dataset("mnist", "test", data_dir=tmp_path / "d").images[0, 0, 0, 0]) == 2
    _fake_mnist(tmp_path / "d" / "fashion-mnist", value=3)
    assert int(load_dataset("fashion-mnist", "test", data_dir=tmp_path / "d").images[0, 0, 0, 0]) == 3


def test_distnet_data_env(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "root" / "mnist", value=4)
    monkeypatch.setenv("DISTNET_DATA", str(tmp_path / "root"))
    assert int(load_dataset("mnist", "test").images[0, 0, 0, 0]) == 4
    # an explicit data_dir still wins over the environment
    assert int(load_dataset("mnist", "test", data_dir=_fake_mnist(tmp_path / "x", value=5)).images[0, 0, 0, 0]) == 5


def test_embedded_mnist_is_default():
    ds = load_dataset("mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28)


def test_missing_files_offline_fail_fast_with_help(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        load_dataset("mnist", "train", data_dir=empty)
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert message.startswith("mnist: train-images-idx3-ubyte.gz not found in ")
    assert str(empty) in message and "DISTNET_OFFLINE" in message
    assert message.endswith("put the files there or pass --data-dir") and "\n" not in message


def test_missing_with_download_off(tmp_path):
    with pytest.raises(UserError, match="downloading is turned off"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=False)


def test_default_cache_dir_named_in_error(tmp_path):
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", "test")
    assert str(tmp_path / "xdg" / "distnet" / "cifar10") in str(info.value)
    assert "cifar-10-binary.tar.gz not found" in str(info.value)


def test_half_present_split_names_missing_file(tmp_path):
    folder = _fake_mnist(tmp_path / "d")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"mnist: t10k-labels-idx1-ubyte.gz not found in .*/d"):
        load_dataset("mnist", "test", data_dir=folder)


def test_corrupt_and_inconsistent_files_via_registry(tmp_path):
    folder = _fake_mnist(tmp_path / "d")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(19, np.uint8))
    with pytest.raises(UserError, match="19 labels but .*20 images"):
        load_dataset("mnist", "test", data_dir=folder)
    write_idx(labels, np.full(20, 10, np.uint8))
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz: label 10 at index 0 is out of range"):
        load_dataset("mnist", "test", data_dir=folder)
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz: truncated gzip"):
        load_dataset("mnist", "test", data_dir=folder)


def test_changed_file_is_not_served_from_memory_cache(tmp_path):
    folder = _fake_mnist(tmp_path / "d", value=1)
    assert int(load_dataset("mnist", "test", data_dir=folder).images.max()) == 1
    time.sleep(0.01)
    _fake_mnist(folder, n=30, value=9)
    ds = load_dataset("mnist", "test", data_dir=folder)
    assert len(ds) == 30 and int(ds.images.max()) == 9


def test_download_into_data_dir_from_mirror(tmp_path, monkeypatch, server):
    """Real MNIST test files served over HTTP: the registry downloads, verifies and loads them."""
    base, handler = server
    handler.files.update({f"/mnist/{p.name}": p.read_bytes() for p in EMBEDDED.glob("t10k-*.gz")})
    spec = dataclasses.replace(registry.get_spec("mnist"), mirrors=(base + "/nothing/", base + "/mnist/"))
    monkeypatch.setitem(registry._BY_NAME, "mnist", spec)
    target = tmp_path / "dl"
    ds = load_dataset("mnist", "test", data_dir=target)
    assert np.bincount(ds.labels).tolist()[:3] == [980, 1135, 1032]
    assert sorted(p.name for p in target.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for f in spec.files[2:]:
        assert hashlib.sha256((target / f.name).read_bytes()).hexdigest() == f.sha256
    # With $DISTNET_DATA the download goes into $DISTNET_DATA/<name>/.
    monkeypatch.setenv("DISTNET_DATA", str(tmp_path / "root"))
    load_dataset("mnist", "test")
    assert (tmp_path / "root" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_synthetic_through_registry():
    ds = load_dataset("synthetic", "test")
    assert len(ds) == 256 and ds.input_shape == (1, 28, 28)


def test_local_copy_of_real_files_in_subfolder(tmp_path):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for p in EMBEDDED.glob("t10k-*.gz"):
        shutil.copy(p, folder / p.name)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path / "data")) == 10000
