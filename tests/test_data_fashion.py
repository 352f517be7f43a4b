"""Real Fashion-MNIST from the Debian package dataset-fashion-mnist (optional).

Install with: apt-get install -y dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist).
The Debian files are re-compressed, so their .gz checksums differ from the official ones;
the loader validates structure, not checksums, of local files.
"""

from pathlib import Path

import numpy as np
import pytest

from distnet.data import load_dataset

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(
    not (DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {DEBIAN_DIR}; run: apt-get install -y dataset-fashion-mnist",
)


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist(split, n, monkeypatch):
    monkeypatch.setenv("DISTNET_OFFLINE", "1")
    ds = load_dataset("fashion-mnist", split, data_dir=DEBIAN_DIR)
    assert ds.images.shape == (n, 1, 28, 28) and ds.labels.shape == (n,)
    assert np.bincount(ds.labels).tolist() == [n // 10] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    if split == "train":
        assert round(float(ds.images.mean()) / 255, 3) == 0.286
        assert round(float(ds.images.std()) / 255, 3) == 0.353
