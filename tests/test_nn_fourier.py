"""The convolution through the DFT (distnet.nn.fourier) against the einsum loops and finite
differences, and the rule in kernels that decides when a conv takes it."""
import numpy as np
import pytest

from distnet import nn
from distnet.nn import fourier, kernels
from test_nn_gradients import check_module
from test_nn_perf_paths import conv_case, conv_reference, conv_reference_grads, same_conv_both_ways

RNG = np.random.default_rng(11)

CASES = [
    # (N, C, H, W, O, kernel, padding)
    (4, 16, 12, 12, 32, 5, 0),      # cnn2's second conv
    (3, 5, 7, 9, 4, 3, 1),          # odd width: no Nyquist frequency along W
    (2, 3, 8, 6, 2, (3, 5), 2),     # rectangular kernel, padding, non-square map
    (1, 1, 6, 6, 3, 4, 0),          # batch of one, one channel, even kernel
    (5, 7, 5, 5, 6, 5, 0),          # kernel as large as the map: 1x1 output
]


@pytest.fixture
def fourier_everywhere(monkeypatch):
    """Every stride-1 conv goes through the DFT, whatever the rule would say."""
    monkeypatch.setattr(kernels, "FOURIER_MIN_CHANNELS", 1)
    monkeypatch.setattr(kernels, "FOURIER_MAX_SIZE", 1 << 10)
    monkeypatch.setattr(kernels, "FOURIER_MIN_SAVING", 0.0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fourier_conv_matches_the_einsum_loops(fourier_everywhere, case, dtype):
    """Forward, input, weight and bias gradients, twice (the plan is cached between)."""
    conv, x, padding = conv_case(case, dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for _ in range(2):
        y = conv(x)
        assert isinstance(conv._cache, fourier.Spectrum)  # the path under test was taken
        reference = conv_reference(x.astype(np.float64), conv.weight.data.astype(np.float64),
                                   conv.bias.data.astype(np.float64), 1, padding)
        assert y.dtype == dtype and y.shape == reference.shape
        scale = np.abs(reference).max()
        np.testing.assert_allclose(y / scale, reference / scale, **tol)
        g = RNG.standard_normal(y.shape).astype(dtype)
        conv.zero_grad()
        dx = conv.backward(g)
        ref_dx, ref_dw, ref_db = conv_reference_grads(x.astype(np.float64), conv.weight.data.astype(np.float64),
                                                      g.astype(np.float64), 1, padding)
        assert dx.dtype == dtype and dx.shape == x.shape
        for got, want in ((dx, ref_dx), (conv.weight.grad, ref_dw), (conv.bias.grad, ref_db)):
            scale = np.abs(want).max()
            np.testing.assert_allclose(got / scale, want / scale, **tol)


def test_fourier_conv_gradients_against_finite_differences(fourier_everywhere):
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=RNG, dtype=np.float64)
    conv.bias.data[:] = RNG.standard_normal(4)
    x = RNG.standard_normal((2, 3, 6, 5))
    check_module(conv, x)
    assert isinstance(conv._cache, fourier.Spectrum)


def test_weight_gradient_accumulates_and_input_gradient_can_be_skipped(fourier_everywhere):
    """Like every conv path: backward adds into .grad, and compute_input_grad=False (a
    model's first layer) returns None with the same parameter gradients."""
    conv = nn.Conv2d(4, 6, 5, rng=RNG, dtype=np.float64)
    x = RNG.standard_normal((3, 4, 9, 9))
    g = RNG.standard_normal(conv(x).shape)
    conv.zero_grad()
    conv.backward(g)
    once = conv.weight.grad.copy(), conv.bias.grad.copy()
    conv(x)
    conv.compute_input_grad = False
    assert conv.backward(g) is None
    np.testing.assert_allclose(conv.weight.grad, 2 * once[0], rtol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, 2 * once[1], rtol=1e-12)


@pytest.mark.parametrize("c,o,k,size,padding,taken", [
    (16, 32, 5, 12, 0, True),     # cnn2's second conv: 2x faster forward + backward
    (64, 128, 3, 8, 1, True),     # the CIFAR CNN's last conv (8x8, padded 10x10)
    (6, 16, 5, 14, 0, False),     # LeNet's second conv: too few channels
    (1, 16, 5, 28, 0, False),     # a first conv
    (64, 64, 3, 16, 1, False),    # a 16x16 map, padded 18x18: too large
    (256, 256, 3, 4, 1, False),   # 3x3 on 4x4: too little saved
])
def test_the_rule_takes_the_dft_where_it_was_measured_faster(c, o, k, size, padding, taken):
    conv = nn.Conv2d(c, o, k, padding=padding, rng=RNG)
    x = RNG.standard_normal((2, c, size, size)).astype(np.float32)
    conv(x)
    assert isinstance(conv._cache, fourier.Spectrum) == taken


def test_rule_leaves_strided_float16_and_empty_batches_alone():
    assert not kernels._use_fourier(np.zeros((16, 12, 12, 2), np.float32), np.zeros((32, 16, 5, 5), np.float32), 2)
    assert not kernels._use_fourier(np.zeros((16, 12, 12, 0), np.float32), np.zeros((32, 16, 5, 5), np.float32), 1)
    assert not kernels._use_fourier(np.zeros((16, 12, 12, 2), np.float16), np.zeros((32, 16, 5, 5), np.float16), 1)
    conv = nn.Conv2d(16, 32, 5, rng=RNG)
    y = conv(np.zeros((0, 16, 12, 12), np.float32))  # a rank's empty slice of the batch
    assert y.shape == (0, 32, 8, 8)
    assert conv.backward(np.zeros_like(y)).shape == (0, 16, 12, 12)


def test_switching_the_dft_off_gives_the_same_conv(monkeypatch):
    """cnn2's second conv at batch 8, float32: the DFT against the default without it."""
    conv = nn.Conv2d(16, 32, 5, rng=RNG)
    x = RNG.standard_normal((8, 16, 12, 12)).astype(np.float32)
    g = RNG.standard_normal((8, 32, 8, 8)).astype(np.float32)
    same_conv_both_ways(monkeypatch, conv, x, g, "FOURIER_CONV", lambda c: isinstance(c._cache, fourier.Spectrum), 1e-5)
