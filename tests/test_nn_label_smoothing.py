"""CrossEntropyLoss(label_smoothing=eps): PyTorch's target (1 - eps) * onehot + eps / K."""
import math

import numpy as np
import pytest

from distnet import nn

from test_nn_gradients import numeric_grad


def test_a_value_worked_by_hand():
    # logits (1, 2, 3), label 0, eps 0.1: log-sum-exp = 3 + log(1 + e^-1 + e^-2);
    # loss = 0.9 * (lse - 1) + 0.1 * mean(lse - 1, lse - 2, lse - 3) = lse - 0.9 - 0.2
    lse = 3 + math.log(1 + math.exp(-1) + math.exp(-2))
    assert lse - 1.1 == pytest.approx(2.3076059644, abs=1e-9)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert crit(np.array([[1.0, 2.0, 3.0]]), np.array([0])) == pytest.approx(lse - 1.1, rel=1e-14)


def test_matches_the_soft_target_cross_entropy_and_its_gradient():
    rng = np.random.default_rng(3)
    logits, labels, eps = rng.standard_normal((6, 5)) * 3, rng.integers(0, 5, 6), 0.2
    target = np.full((6, 5), eps / 5)
    target[np.arange(6), labels] += 1 - eps
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    crit = nn.CrossEntropyLoss(label_smoothing=eps)
    assert crit(logits, labels) == pytest.approx(-(target * log_p).sum(axis=1).mean(), rel=1e-13)
    np.testing.assert_allclose(crit.backward(), (np.exp(log_p) - target) / 6, rtol=1e-12, atol=1e-15)
    fd = numeric_grad(lambda: crit(logits, labels), logits)
    crit(logits, labels)
    np.testing.assert_allclose(crit.backward(), fd, rtol=1e-6, atol=1e-9)


def test_zero_smoothing_is_plain_cross_entropy():
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
    plain, zero = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.0)
    assert plain(logits, labels) == zero(logits, labels)
    np.testing.assert_array_equal(plain.backward(), zero.backward())


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_out_of_range_smoothing_is_refused(bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=bad)
