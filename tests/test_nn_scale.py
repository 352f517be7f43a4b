"""nn.Scale (a fixed multiplier) and its place at the end of cifar-resnet."""
import numpy as np

from distnet import nn
from distnet.data.synthetic import synthetic


def test_scale_forward_backward_by_hand():
    s = nn.Scale(0.125)
    x = np.array([[8.0, -16.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(s(x), [[1.0, -2.0, 0.0625]])
    assert s(x).dtype == np.float32
    np.testing.assert_array_equal(s.backward(np.array([[1.0, 2.0, -8.0]], np.float32)), [[0.125, 0.25, -1.0]])
    assert s(np.zeros((0, 3), np.float32)).shape == (0, 3)  # empty batches (contract A)
    assert s.own_parameters() == [] and repr(s) == "Scale(0.125)"


def test_cifar_resnet_ends_in_the_logit_scale_and_starts_near_chance():
    """Without the 0.125 the initial loss on CIFAR-shaped inputs was ~6-7 (logit std ~4)."""
    model = nn.build_model("cifar-resnet", (3, 32, 32), 10, seed=0)
    assert isinstance(model.layers[-1], nn.Scale) and model.layers[-1].factor == 0.125
    data = synthetic("train", n=32, shape=(3, 32, 32))
    x, y = data.batch(np.arange(32))
    loss = nn.CrossEntropyLoss()(model(x), y)
    assert loss < 3.0, loss  # log(10) = 2.30
