"""PatchWhitening (the data-dependent first layer of cifar-fast), its model, and the
per-parameter learning rates of BatchNorm's shift that the cifar-fast recipe uses."""
import numpy as np
import pytest

from distnet import nn
from distnet.nn import models
from distnet.optim import OptimizerError, make_optimizer
from distnet.optim.decay import bn_bias_factors
from distnet.optim.optimizers import SGD, Adam

from test_nn_gradients import check_module
from test_nn_residual import multiply_adds

RNG = np.random.default_rng(31)


def correlated_images(n=64, c=3, size=8):
    """Images whose neighbouring pixels and channels are strongly correlated, as real ones are."""
    base = RNG.standard_normal((n, 1, size + 1, size + 1))
    smooth = base[:, :, 1:, 1:] + base[:, :, :-1, 1:] + base[:, :, 1:, :-1]
    mix = RNG.standard_normal((1, c, 1, 1)) * 0.3 + 1.0
    return smooth * mix + 0.2 * RNG.standard_normal((n, c, size, size))


def patch_rows(x, k=2):
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * k * k)


def test_output_patches_are_white_and_the_second_half_is_the_negation():
    x = correlated_images()
    layer = nn.PatchWhitening(3, 2, eps=1e-9, dtype=np.float64)
    layer.init_from_data(x)
    y = layer(x)
    assert y.shape == (64, 24, 7, 7)
    np.testing.assert_allclose(y[:, 12:], -y[:, :12], rtol=0, atol=0)
    # the first 12 channels at one pixel are the patch there in the whitened basis:
    # their second moment over all patches is the identity
    first = y[:, :12].transpose(0, 2, 3, 1).reshape(-1, 12)
    np.testing.assert_allclose(first.T @ first / first.shape[0], np.eye(12), atol=1e-6)
    # and the input patches really were correlated (the test is not trivially white)
    rows = patch_rows(x)
    moment = rows.T @ rows / rows.shape[0]
    assert np.abs(moment - np.diag(np.diag(moment))).max() > 0.5


def test_components_come_in_order_of_variance_and_eps_damps_the_small_ones():
    x = correlated_images()
    layer = nn.PatchWhitening(3, 2, eps=0.5, dtype=np.float64)
    layer.init_from_data(x)
    rows = patch_rows(x)
    values = np.linalg.eigvalsh(rows.T @ rows / rows.shape[0])[::-1]
    first = layer(x)[:, :12].transpose(0, 2, 3, 1).reshape(-1, 12)
    # component i's output variance is lambda_i / (lambda_i + eps)
    np.testing.assert_allclose((first ** 2).mean(axis=0), values / (values + 0.5), rtol=1e-6)


def test_gradients_match_finite_differences_and_the_filters_get_none():
    x = correlated_images(n=3, size=5)
    layer = nn.PatchWhitening(3, 2, dtype=np.float64)
    layer.init_from_data(x)
    layer.bias.data[:] = RNG.standard_normal(24)
    model = nn.Sequential(layer, nn.Tanh())
    check_module(model, x)
    assert [p.name for p in model.parameters()] == ["bias"]


def test_filters_are_a_buffer_and_survive_a_state_dict_round_trip():
    model = nn.build_model("cifar-fast", (3, 32, 32), 10, seed=0)
    white = model.layers[0]
    assert isinstance(white, nn.PatchWhitening) and not white.filters.any()  # zero until set
    x = RNG.standard_normal((20, 3, 32, 32)).astype(np.float32)
    assert nn.initialise_from_data(model, x) == 1
    assert np.shares_memory(white.filters, model.flat_buffers) and white.filters.any()
    state = model.state_dict()
    other = nn.build_model("cifar-fast", (3, 32, 32), 10, seed=0)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.layers[0].filters, white.filters)
    model.eval()
    other.eval()
    np.testing.assert_array_equal(other(x[:2]), model(x[:2]))


def test_a_data_dependent_layer_must_come_first():
    later = nn.Sequential(nn.Conv2d(3, 3, 1), nn.PatchWhitening(3))
    with pytest.raises(ValueError, match="first layer"):
        nn.initialise_from_data(later, np.zeros((2, 3, 4, 4), np.float32))
    assert nn.initialise_from_data(nn.build_model("cifar-resnet", (3, 32, 32), 10), np.zeros((1, 3, 32, 32))) == 0
    with pytest.raises(ValueError, match="expects"):
        nn.PatchWhitening(3).init_from_data(np.zeros((2, 1, 4, 4)))


def test_cifar_fast_cost_shapes_and_buffers():
    model = nn.build_model("cifar-fast", (3, 32, 32), 10)
    # whiten 12*24 * 31^2; block 1: 24*9*64 * 31^2 + 64*9*64 * 15^2; block 2: 64*9*256 * 15^2
    # + 256*9*256 * 7^2; block 3: 256*9*256 * (7^2 + 3^2); head 256*10.  "118.1 M multiply-adds"
    # (the whitening's are counted here by hand: it is not a Conv2d)
    convs = 24 * 9 * 64 * 961 + 64 * 9 * 64 * 225 + 64 * 9 * 256 * 225 + 256 * 9 * 256 * (49 + 49 + 9) + 2560
    assert multiply_adds(model, (3, 32, 32)) == convs
    assert convs + 12 * 24 * 961 == 118_147_360
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6
    assert model.flat_buffers.size == 2 * sum(bn.num_features for bn in bns) + 24 * 3 * 2 * 2
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    nn.initialise_from_data(model, x)
    y = model(x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    assert nn.build_model("cifar-fast", (1, 28, 28), 10)(RNG.standard_normal((2, 1, 28, 28))).shape == (2, 10)


def test_cifar_fast_gradient_along_a_random_direction():
    """The whole network (narrow, float64): d/dt L(theta + t v) by central differences
    equals <grad L, v>."""
    model = models.cifar_fast(models._Builder((3, 16, 16), np.random.default_rng(0), np.float64), 3,
                              widths=(4, 4, 4))
    x = RNG.standard_normal((4, 3, 16, 16))
    nn.initialise_from_data(model, x)
    model.layers[0].bias.data[:] = 0.1 * RNG.standard_normal(24)
    weights = RNG.standard_normal((4, 3))

    def loss():
        return float(np.sum(model(x) * weights))

    model.zero_grad()
    model(x)
    model.backward(weights.copy())
    grad = model.flat_grads.copy()
    v = RNG.standard_normal(grad.shape)
    base = model.flat_params.copy()
    h = 1e-6
    model.flat_params[...] = base + h * v
    up = loss()
    model.flat_params[...] = base - h * v
    down = loss()
    model.flat_params[...] = base
    np.testing.assert_allclose((up - down) / (2 * h), grad @ v, rtol=1e-5)


def test_trainer_sets_the_filters_from_the_first_training_images():
    """fit() on a small image set: the filters are those init_from_data computes from the
    first images, unaugmented, as the model sees them (normalised)."""
    from distnet import fit, optim
    from distnet.data import ArrayDataset

    images = RNG.integers(0, 256, (40, 3, 12, 12), dtype=np.uint8)
    labels = RNG.integers(0, 3, 40)
    data = ArrayDataset(images, labels)
    model = models.cifar_fast(models._Builder((3, 12, 12), np.random.default_rng(0), np.float32), 3,
                              widths=(4, 4, 4))
    fit(model, data, loss="cross-entropy", optimizer=optim.SGD(model, lr=0.01), epochs=1, batch_size=20,
        max_steps=1, progress=False, verbose=False)
    expected = nn.PatchWhitening(3, dtype=np.float32)
    expected.init_from_data(data.batch(np.arange(40))[0])
    np.testing.assert_allclose(model.layers[0].filters, expected.filters, rtol=1e-5, atol=1e-6)


# ---- per-parameter learning rates for BatchNorm's shift -------------------------------------

def small_bn_model():
    return nn.Sequential(nn.Linear(2, 2, rng=np.random.default_rng(0)), nn.BatchNorm1d(2))


def test_bn_bias_factors_mark_only_the_batchnorm_shift():
    np.testing.assert_array_equal(bn_bias_factors(small_bn_model(), 64.0), [1] * 6 + [1, 1] + [64, 64])
    with pytest.raises(OptimizerError, match="no BatchNorm"):
        bn_bias_factors(nn.Sequential(nn.Linear(2, 2)), 64.0)


def test_nesterov_with_a_bn_bias_rate_by_hand():
    """Nesterov SGD, lr 0.1, momentum 0.5, gradient 1 everywhere, two steps, BatchNorm shift at
    10x the rate and the scale frozen: buf1 = g, p1 = p0 - lr*(g + m*buf1) = p0 - 0.15 f;
    buf2 = m*buf1 + g = 1.5, p2 = p1 - lr*(g + m*buf2) = p1 - 0.175 f, with f the factor."""
    model = small_bn_model()
    model.flat_params[...] = 2.0
    opt = make_optimizer("nesterov", model, lr=0.1, momentum=0.5, freeze="bn-scale", bn_bias_lr_scale=10.0)
    for _ in range(2):
        model.flat_grads[...] = 1.0
        opt.step()
    np.testing.assert_array_equal(model.flat_grads, 1.0)  # the caller's gradients are not written
    factor = np.array([1] * 6 + [0, 0] + [10, 10])
    np.testing.assert_allclose(model.flat_params, 2.0 - (0.15 + 0.175) * factor, rtol=1e-6)


def test_rate_factors_leave_weight_decay_unscaled():
    """Plain SGD, p 2, g 1, lr 0.1, wd 0.5 on all: p - lr*(f*g + wd*p) = 2 - 0.1*(f + 1)."""
    model = small_bn_model()
    model.flat_params[...] = 2.0
    model.flat_grads[...] = 1.0
    make_optimizer("sgd", model, lr=0.1, weight_decay=0.5, bn_bias_lr_scale=4.0).step()
    np.testing.assert_allclose(model.flat_params, [1.8] * 8 + [1.5, 1.5], rtol=1e-6)


def test_rate_factors_need_sgd_and_sane_values():
    model = small_bn_model()
    with pytest.raises(OptimizerError, match="need SGD"):
        make_optimizer("adam", model, lr=0.1, bn_bias_lr_scale=64.0)
    with pytest.raises(OptimizerError, match="need SGD"):
        Adam(model, lr=0.1).scale_learning_rate(np.ones(10))
    with pytest.raises(OptimizerError, match="shape"):
        SGD(model, lr=0.1).scale_learning_rate(np.ones(3))
    with pytest.raises(OptimizerError, match=">= 0"):
        SGD(model, lr=0.1).scale_learning_rate(-np.ones(10))
