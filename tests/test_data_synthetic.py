"""Synthetic data is deterministic and learnable; Dataset validates and normalises."""

import numpy as np
import pytest

from distnet.data import Dataset, synthetic
from distnet.errors import UserError


def test_same_args_same_bytes():
    a, b = synthetic("train"), synthetic("train")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert a.images.shape == (1024, 1, 28, 28) and a.images.dtype == np.uint8
    assert len(synthetic("test")) == 256


def test_seed_and_split_change_the_data():
    train, test = synthetic("train"), synthetic("test")
    assert not np.array_equal(train.images[:256], test.images)
    assert not np.array_equal(synthetic("train", seed=1).images, train.images)


def test_options_and_balance():
    ds = synthetic("test", n=50, shape=(3, 8, 12), num_classes=5, seed=3)
    assert ds.images.shape == (50, 3, 8, 12) and ds.num_classes == 5 and ds.input_shape == (3, 8, 12)
    assert np.bincount(ds.labels).tolist() == [10] * 5
    assert ds.mean == (0.5,) * 3
    with pytest.raises(UserError, match="unknown split"):
        synthetic("validation")


def test_learnable_and_train_test_share_templates():
    """A nearest-class-mean classifier fit on train must do well on test."""
    train, test = synthetic("train"), synthetic("test")
    xtr, ytr = train.batch(np.arange(len(train)))
    xte, yte = test.batch(np.arange(len(test)))
    means = np.stack([xtr[ytr == c].mean(axis=0).ravel() for c in range(10)])
    dists = ((xte.reshape(len(xte), 1, -1) - means[None]) ** 2).sum(axis=2)
    accuracy = float((dists.argmin(axis=1) == yte).mean())
    assert accuracy > 0.95
    # The fixed normalisation gives roughly zero mean and unit variance.
    assert abs(float(xtr.mean())) < 0.3 and 0.7 < float(xtr.std()) < 1.3


def test_batch_and_subset():
    ds = synthetic("test", n=40)
    x, y = ds.batch(np.array([3, 1, 3]))
    expected = (ds.images[[3, 1, 3]].astype(np.float64) / 255 - 0.5) / 0.23
    np.testing.assert_allclose(x, expected, atol=1e-5)
    assert x.dtype == np.float32 and y.dtype == np.int64
    for empty in ([], np.array([], dtype=np.int64)):  # a rank can get an empty slice
        x0, y0 = ds.batch(empty)
        assert x0.shape == (0, 1, 28, 28) and x0.dtype == np.float32 and y0.shape == (0,)
    sub = ds.subset(np.arange(10, 20))
    assert len(sub) == 10 and np.array_equal(sub.images, ds.images[10:20]) and sub.classes == ds.classes


def test_dataset_validation():
    images = np.zeros((2, 1, 4, 4), np.uint8)
    labels = np.zeros(2, np.int64)
    Dataset("ok", images, labels, ("a", "b"), (0.5,), (0.2,))
    with pytest.raises(ValueError):
        Dataset("bad", images.astype(np.float32), labels, ("a",), (0.5,), (0.2,))
    with pytest.raises(ValueError):
        Dataset("bad", images, labels.astype(np.int32), ("a",), (0.5,), (0.2,))
    with pytest.raises(ValueError):
        Dataset("bad", images, np.array([0, 2]), ("a", "b"), (0.5,), (0.2,))
    with pytest.raises(ValueError):
        Dataset("bad", images, labels, ("a",), (0.5, 0.5), (0.2, 0.2))
