"""Real Fashion-MNIST, the full 70,000 images (optional: too large to ship).

Looked for in $DISTNET_TEST_DATA/fashion-mnist/, else in /usr/share/datasets/fashion-mnist,
where Debian's package puts it: apt-get install -y dataset-fashion-mnist. Without either the
tests skip with that hint; CI installs the package and allows no skip.
The Debian files are re-compressed, so their .gz checksums differ from the official ones;
the loader validates structure, not checksums, of local files.
"""

from pathlib import Path

import numpy as np
import pytest

from conftest import need_data
from distnet.data import load_dataset

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion_dir():
    return need_data("fashion-mnist", "the full Fashion-MNIST", fallback=DEBIAN_DIR,
                     probe="t10k-labels-idx1-ubyte.gz", hint="apt-get install dataset-fashion-mnist (Debian)")


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist(split, n, fashion_dir, monkeypatch):
    monkeypatch.setenv("DISTNET_OFFLINE", "1")
    ds = load_dataset("fashion-mnist", split, data_dir=fashion_dir)
    assert ds.images.shape == (n, 1, 28, 28) and ds.labels.shape == (n,)
    assert np.bincount(ds.labels).tolist() == [n // 10] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    if split == "train":
        assert round(float(ds.images.mean()) / 255, 3) == 0.286
        assert round(float(ds.images.std()) / 255, 3) == 0.353
