"""Every layer and loss against central finite differences, in float64."""
import numpy as np
import pytest

from distnet import nn

RNG = np.random.default_rng(1234)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of scalar f() with respect to every element of x (in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        plus = f()
        x[idx] = old - eps
        minus = f()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def check_module(module, x, rtol=1e-5, atol=1e-7):
    """Compare backward's input and parameter gradients with finite differences of
    L = sum(module(x) * R) for a fixed random R."""
    out = module(x)
    weights = RNG.standard_normal(out.shape)

    def loss():
        return float(np.sum(module(x) * weights))

    module.zero_grad()
    module(x)
    dx = module.backward(weights.copy())
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for p in module.parameters():
        analytic = p.grad.copy()
        np.testing.assert_allclose(analytic, numeric_grad(loss, p.data), rtol=rtol, atol=atol,
                                   err_msg=p.name)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2), (1, 1)])
def test_conv2d(stride, padding):
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=padding, rng=RNG, dtype=np.float64)
    conv.bias.data[:] = RNG.standard_normal(4)
    check_module(conv, RNG.standard_normal((2, 3, 7, 6)))


def test_conv2d_rectangular_kernel():
    conv = nn.Conv2d(2, 3, (2, 3), stride=1, padding=1, rng=RNG, dtype=np.float64)
    check_module(conv, RNG.standard_normal((2, 2, 5, 5)))


def test_conv2d_matches_direct_loop():
    """The im2col convolution equals a literal 6-nested-loop cross-correlation."""
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=RNG, dtype=np.float64)
    conv.bias.data[:] = [0.5, -1.0, 2.0]
    x = RNG.standard_normal((2, 2, 5, 5))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros((2, 3, 3, 3))
    for n in range(2):
        for o in range(3):
            for i in range(3):
                for j in range(3):
                    patch = xp[n, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                    expected[n, o, i, j] = np.sum(patch * conv.weight.data[o]) + conv.bias.data[o]
    np.testing.assert_allclose(conv(x), expected, rtol=1e-12)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (3, 1), (2, 1)])
def test_maxpool(kernel, stride):
    pool = nn.MaxPool2d(kernel, stride)
    x = RNG.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7).astype(np.float64) * 0.01
    check_module(pool, x)  # distinct values: no ties, so the derivative exists


def test_maxpool_values_and_first_max_on_ties():
    pool = nn.MaxPool2d(2)
    x = np.array([[[[1.0, 3.0, 2.0, 2.0], [0.0, 3.0, 2.0, 2.0]]]])
    np.testing.assert_array_equal(pool(x), [[[[3.0, 2.0]]]])
    dx = pool.backward(np.array([[[[10.0, 20.0]]]]))
    # ties: the whole gradient goes to the first maximum only, never duplicated
    np.testing.assert_array_equal(dx, [[[[0.0, 10.0, 20.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (3, 1)])
def test_avgpool(kernel, stride):
    check_module(nn.AvgPool2d(kernel, stride), RNG.standard_normal((2, 2, 6, 7)))


def test_linear():
    lin = nn.Linear(5, 3, rng=RNG, dtype=np.float64)
    lin.bias.data[:] = RNG.standard_normal(3)
    check_module(lin, RNG.standard_normal((4, 5)))


@pytest.mark.parametrize("cls", [nn.ReLU, nn.Sigmoid, nn.Tanh])
def test_activations(cls):
    x = RNG.standard_normal((3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    check_module(cls(), x)


def test_flatten_and_dropout_eval():
    check_module(nn.Flatten(), RNG.standard_normal((2, 3, 2, 2)))
    drop = nn.Dropout(0.5).eval()
    x = RNG.standard_normal((4, 6))
    np.testing.assert_array_equal(drop(x), x)


def test_dropout_train_mask_is_consistent():
    drop = nn.Dropout(0.25, rng=np.random.default_rng(0))
    x = np.ones((200, 50))
    y = drop(x)
    kept = y != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    g = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(g, y)


def test_cross_entropy():
    logits = RNG.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    crit = nn.CrossEntropyLoss()
    loss = crit(logits, labels)
    expected = -np.mean(np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[range(5), labels])
    assert loss == pytest.approx(expected, rel=1e-12)
    grad = crit.backward()
    np.testing.assert_allclose(grad, numeric_grad(lambda: crit(logits, labels), logits), rtol=1e-6, atol=1e-9)


def test_cross_entropy_is_stable_for_huge_logits():
    crit = nn.CrossEntropyLoss()
    loss = crit(np.array([[1000.0, 0.0], [0.0, -1000.0]]), np.array([0, 0]))
    assert np.isfinite(loss) and loss == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse(reduction):
    out, target = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    crit = nn.MSELoss(reduction)
    grad = (crit(out, target), crit.backward())[1]
    np.testing.assert_allclose(grad, numeric_grad(lambda: crit(out, target), out), rtol=1e-6, atol=1e-9)


def test_whole_network_gradient_and_flat_buffers():
    """A small conv net end to end; its grads live in the model's flat buffer."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, rng=RNG, dtype=np.float64), nn.Tanh(), nn.MaxPool2d(3, 2),
        nn.Conv2d(2, 3, 2, stride=1, rng=RNG, dtype=np.float64), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(3, 4, rng=RNG, dtype=np.float64), nn.Sigmoid(),
    )
    x = RNG.standard_normal((2, 1, 7, 7))
    check_module(model, x, rtol=1e-4, atol=1e-8)
    offset = 0
    for p in model.parameters():
        assert np.shares_memory(p.data, model.flat_params) and np.shares_memory(p.grad, model.flat_grads)
        np.testing.assert_array_equal(model.flat_grads[offset:offset + p.size], p.grad.ravel())
        offset += p.size
    assert offset == model.flat_params.size


def test_skipping_input_gradient_keeps_parameter_gradients():
    model = nn.build_model("lenet5", seed=3, dtype=np.float64)
    x = RNG.standard_normal((3, 1, 28, 28))
    labels = np.array([1, 2, 3])
    crit = nn.CrossEntropyLoss()
    crit(model(x), labels)
    model.zero_grad()
    model.backward(crit.backward())
    full = model.flat_grads.copy()
    model.input_grad = False
    crit(model(x), labels)
    model.zero_grad()
    assert model.backward(crit.backward()) is None
    np.testing.assert_array_equal(model.flat_grads, full)
