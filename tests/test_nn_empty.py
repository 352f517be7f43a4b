"""Contract A: every layer, activation and loss accepts a batch of 0 samples.

A rank whose slice of the global batch is empty still runs forward and backward (BatchNorm's
reductions are collectives), so each must return correctly shaped empty outputs and input
gradients and leave the parameter gradients at zero."""
import numpy as np
import pytest

from distnet import nn

F64 = dict(dtype=np.float64)

LAYERS = {
    "linear": (lambda: nn.Linear(5, 3, **F64), (5,), (3,)),
    "conv s1 p1": (lambda: nn.Conv2d(2, 4, 3, padding=1, **F64), (2, 6, 6), (4, 6, 6)),
    "conv s2": (lambda: nn.Conv2d(2, 4, 3, stride=2, **F64), (2, 7, 7), (4, 3, 3)),
    "maxpool": (lambda: nn.MaxPool2d(2), (2, 6, 6), (2, 3, 3)),
    "maxpool overlapping": (lambda: nn.MaxPool2d(3, 2), (2, 7, 7), (2, 3, 3)),
    "avgpool": (lambda: nn.AvgPool2d(2), (2, 6, 6), (2, 3, 3)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 4), (24,)),
    "dropout": (lambda: nn.Dropout(0.5), (7,), (7,)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(4, **F64), (4,), (4,)),
    "batchnorm1d NCL": (lambda: nn.BatchNorm1d(4, **F64), (4, 3), (4, 3)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3, **F64), (3, 4, 4), (3, 4, 4)),
    "relu": (lambda: nn.ReLU(), (2, 3, 3), (2, 3, 3)),
    "sigmoid": (lambda: nn.Sigmoid(), (6,), (6,)),
    "tanh": (lambda: nn.Tanh(), (6,), (6,)),
    "residual": (lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, **F64), nn.ReLU())),
                 (2, 5, 5), (2, 5, 5)),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("context", [False, True])
def test_layer_accepts_an_empty_batch(name, context):
    make, in_shape, out_shape = LAYERS[name]
    model = nn.Sequential(make())
    model(np.random.default_rng(0).standard_normal((4,) + in_shape))  # a normal batch first
    model.zero_grad()
    if context:
        nn.set_sample_context(model, seed=0, step=0, first_index=10)
    y = model(np.zeros((0,) + in_shape))
    assert y.shape == (0,) + out_shape
    dx = model.backward(np.zeros_like(y))
    assert dx.shape == (0,) + in_shape
    assert not model.flat_grads.any()


def test_batchnorm_with_every_slice_empty_leaves_running_statistics_alone():
    bn = nn.Sequential(nn.BatchNorm2d(3, **F64))
    before = bn.flat_buffers.copy()
    y = bn(np.zeros((0, 3, 2, 2)))
    assert y.shape == (0, 3, 2, 2)
    np.testing.assert_array_equal(bn.flat_buffers, before)


def test_cross_entropy_on_an_empty_batch():
    crit = nn.CrossEntropyLoss()
    assert crit(np.zeros((0, 10)), np.zeros(0, dtype=np.int64)) == 0.0
    assert crit.backward().shape == (0, 10)
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert smooth(np.zeros((0, 10)), np.zeros(0, dtype=np.int64)) == 0.0
    assert smooth.backward().shape == (0, 10)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_on_an_empty_batch(reduction):
    crit = nn.MSELoss(reduction)
    assert crit(np.zeros((0, 3)), np.zeros((0, 3))) == 0.0
    assert crit.backward().shape == (0, 3)
