"""Residual(block, shortcut): forward block(x) + shortcut(x), backward the sum of both paths."""
import numpy as np
import pytest

from distnet import nn

from test_nn_gradients import check_module

RNG = np.random.default_rng(2024)
F64 = dict(dtype=np.float64)


def conv_block(c_in, c_out, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, rng=RNG, **F64),
                         nn.BatchNorm2d(c_out, **F64), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, rng=RNG, **F64), nn.BatchNorm2d(c_out, **F64))


def test_identity_shortcut_forward_is_block_plus_input():
    block = nn.Sequential(nn.Linear(4, 4, rng=RNG, **F64), nn.Tanh())
    res = nn.Residual(block)
    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(res(x), block(x) + x, rtol=1e-15)


def test_finite_differences_identity_shortcut():
    res = nn.Sequential(nn.Residual(conv_block(2, 2)))
    check_module(res, RNG.standard_normal((3, 2, 5, 5)))


def test_finite_differences_projection_shortcut():
    shortcut = nn.Sequential(nn.Conv2d(2, 3, 1, stride=2, rng=RNG, **F64), nn.BatchNorm2d(3, **F64))
    res = nn.Sequential(nn.Residual(conv_block(2, 3, stride=2), shortcut), nn.ReLU())
    for p in res.parameters():  # move BN's affine parameters off (1, 0)
        p.data += RNG.standard_normal(p.shape) * 0.1
    check_module(res, RNG.standard_normal((3, 2, 6, 6)))


def test_backward_is_the_sum_of_both_paths():
    block, shortcut = nn.Linear(3, 2, rng=RNG, **F64), nn.Linear(3, 2, rng=RNG, **F64)
    res = nn.Residual(block, shortcut)
    x, g = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 2))
    res(x)
    dx = res.backward(g)
    np.testing.assert_allclose(dx, g @ block.weight.data + g @ shortcut.weight.data, rtol=1e-13)
    np.testing.assert_allclose(block.weight.grad, g.T @ x, rtol=1e-13)
    np.testing.assert_allclose(shortcut.weight.grad, g.T @ x, rtol=1e-13)


def test_parameters_and_buffers_land_in_the_flat_arrays_block_first():
    stem = nn.Conv2d(1, 2, 3, padding=1, rng=RNG, **F64)
    block = conv_block(2, 4, stride=2)
    shortcut = nn.Sequential(nn.Conv2d(2, 4, 1, stride=2, rng=RNG, **F64), nn.BatchNorm2d(4, **F64))
    model = nn.Sequential(stem, nn.Residual(block, shortcut), nn.ReLU())
    params = model.parameters()
    assert params == stem.own_parameters() + block.parameters() + shortcut.parameters()
    for p in params:
        assert np.shares_memory(p.data, model.flat_params) and np.shares_memory(p.grad, model.flat_grads)
    assert model.flat_buffers.size == 2 * (4 + 4 + 4)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns[-1] is shortcut[1]
    assert all(np.shares_memory(bn.running_var, model.flat_buffers) for bn in bns)


def test_inside_sequential_with_backward_hooks():
    """The hook for a Residual layer fires when both paths' gradients are final."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, rng=RNG, **F64),
                          nn.Residual(conv_block(2, 2)), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 16, 3, rng=RNG, **F64))
    spans = model.param_offsets()
    seen = {}
    model.backward_hooks.append(lambda index: seen.setdefault(index, model.flat_grads.copy()))
    x = RNG.standard_normal((2, 1, 4, 4))
    model.zero_grad()
    y = model(x)
    model.backward(RNG.standard_normal(y.shape))
    assert sorted(seen) == [0, 1, 2, 3, 4]
    n_res = len(model[1].parameters())
    lo, hi = spans[2][0], spans[2 + n_res - 1][1]  # the residual's slice (after the stem's 2)
    np.testing.assert_array_equal(seen[1][lo:hi], model.flat_grads[lo:hi])  # final at its hook
    assert np.any(seen[1][lo:hi]) and not np.any(seen[1][:lo])  # the stem comes later


def test_train_and_eval_reach_both_paths():
    shortcut = nn.Sequential(nn.BatchNorm2d(2, **F64))
    res = nn.Residual(conv_block(2, 2), shortcut)
    res.eval()
    assert all(not m.training for m in res.modules())


def test_shape_mismatch_is_reported():
    res = nn.Residual(nn.Conv2d(2, 3, 3, padding=1, **F64))
    with pytest.raises(ValueError, match="shortcut"):
        res(np.ones((1, 2, 4, 4)))


def test_1x1_stride1_conv_trains_for_several_steps():
    """Regression: im2col returns a read-only view for 1x1 stride-1 convs; it must not be
    kept as the reusable workspace (the second step used to fail writing into it)."""
    conv = nn.Conv2d(3, 4, 1, rng=RNG, **F64)
    for _ in range(3):
        x = RNG.standard_normal((5, 3, 4, 4))
        y = conv(x)
        np.testing.assert_allclose(y, np.einsum("oc,nchw->nohw", conv.weight.data[:, :, 0, 0], x), rtol=1e-12)
        conv.backward(np.ones_like(y))


# ---- the cifar-resnet model -----------------------------------------------------------------

from distnet.nn import models  # noqa: E402


def multiply_adds(model, input_shape):
    """Multiply-adds of one image's forward through the Conv2d and Linear layers, counted
    from the output shapes seen in a real forward."""
    total = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            forward = m.forward

            def counting(x, m=m, forward=forward):
                nonlocal total
                y = forward(x)
                per_output = m.weight.size // m.weight.shape[0]  # in * kh * kw, or in
                total += per_output * y[0].size
                return y
            m.forward = counting
    model.eval()(np.zeros((1,) + tuple(input_shape), dtype=np.float32))
    return total


def test_cifar_resnet_cost_is_as_documented():
    resnet = nn.build_model("cifar-resnet", (3, 32, 32), 10)
    # by hand: prep 3*9*32 * 32^2; five convs of 18.87 M each (64*9*64 * 16^2 and the like);
    # FC 256*10.  "95.3 M multiply-adds"
    assert multiply_adds(resnet, (3, 32, 32)) == 3 * 9 * 32 * 1024 + 5 * 18_874_368 + 2560 == 95_259_136
    cnn = 3 * 9 * 32 * 1024 + 32 * 9 * 32 * 1024 + 32 * 9 * 64 * 256 + 64 * 9 * 64 * 256 \
        + 64 * 9 * 128 * 64 + 2048 * 256 + 256 * 10
    assert multiply_adds(nn.build_model("cifar-cnn", (3, 32, 32), 10), (3, 32, 32)) == cnn == 29_723_136
    small = models.cifar_resnet(models._Builder((3, 32, 32), RNG, np.float32), 10, width=16)
    assert multiply_adds(small, (3, 32, 32)) == 3 * 9 * 16 * 1024 + 5 * 18_874_368 // 4 + 1280


def test_cifar_resnet_shapes_buffers_and_modes():
    model = nn.build_model("cifar-resnet", (3, 32, 32), 10, seed=0)
    assert sum(isinstance(m, nn.Residual) for m in model.modules()) == 2
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 8 and model.flat_buffers.size == 2 * sum(bn.num_features for bn in bns)
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    assert model.backward(np.ones_like(y)).shape == x.shape
    assert nn.build_model("cifar-resnet", (1, 28, 28), 10)(RNG.standard_normal((2, 1, 28, 28))).shape == (2, 10)
    same = nn.build_model("cifar-resnet", (3, 32, 32), 10, seed=0)
    np.testing.assert_array_equal(same.flat_params, nn.build_model("cifar-resnet", (3, 32, 32), 10, seed=0).flat_params)


def test_cifar_resnet_gradient_along_a_random_direction():
    """Whole-network check at width 2 in float64: d/dt L(theta + t v) by central differences
    equals <grad L, v> (and the same for the input)."""
    model = models.cifar_resnet(models._Builder((3, 16, 16), np.random.default_rng(0), np.float64), 3, width=2)
    x = RNG.standard_normal((4, 3, 16, 16))
    weights = RNG.standard_normal((4, 3))

    def loss():
        return float(np.sum(model(x) * weights))

    model.zero_grad()
    model(x)
    dx = model.backward(weights.copy())
    grad = model.flat_grads.copy()
    for target, analytic in ((model.flat_params, grad), (x, dx)):
        v = RNG.standard_normal(target.shape)
        base = target.copy()
        h = 1e-6
        target[...] = base + h * v
        plus = loss()
        target[...] = base - h * v
        minus = loss()
        target[...] = base
        np.testing.assert_allclose((plus - minus) / (2 * h), np.sum(analytic * v), rtol=1e-6)
