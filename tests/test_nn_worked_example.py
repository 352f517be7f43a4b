"""The classic 2-2-2 sigmoid network worked example (Mazur), step by step."""
import numpy as np
import pytest

from distnet import nn
from distnet.optim import SGD


def build():
    l1 = nn.Linear(2, 2, dtype=np.float64)
    l2 = nn.Linear(2, 2, dtype=np.float64)
    l1.weight.data[:] = [[0.15, 0.20], [0.25, 0.30]]
    l1.bias.data[:] = 0.35
    l2.weight.data[:] = [[0.40, 0.45], [0.50, 0.55]]
    l2.bias.data[:] = 0.60
    return nn.Sequential(l1, nn.Sigmoid(), l2, nn.Sigmoid()), l1, l2


def test_forward_backward_and_one_sgd_step():
    model, l1, l2 = build()
    x = np.array([[0.05, 0.10]])
    target = np.array([[0.01, 0.99]])
    crit = nn.MSELoss(reduction="sum")
    out = model(x)
    loss = 0.5 * crit(out, target)  # loss = 1/2 sum (out - target)^2
    assert round(loss, 4) == 0.2984
    np.testing.assert_allclose(out, [[0.75136507, 0.77292847]], atol=1e-8)
    model.zero_grad()
    model.backward(0.5 * crit.backward())
    np.testing.assert_allclose(l2.weight.grad, [[0.0822, 0.0827], [-0.0226, -0.0227]], atol=5e-5)
    np.testing.assert_allclose(l1.weight.grad, [[0.0004, 0.0009], [0.0005, 0.0010]], atol=5e-5)
    SGD(model, lr=0.5).step()
    np.testing.assert_allclose(l2.weight.data, [[0.3589, 0.4087], [0.5113, 0.5614]], atol=5e-5)
    np.testing.assert_allclose(l1.bias.data, [0.3456, 0.3450], atol=5e-5)
    np.testing.assert_allclose(l2.bias.data, [0.5308, 0.6190], atol=5e-5)
    assert l1.weight.data[0, 0] == pytest.approx(0.14978, abs=1e-5)
