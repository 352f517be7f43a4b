"""The stride-1 convolution through stacked small products on HWCN memory
(kernels._hwcn_forward) against the einsum loops and finite differences, through a small
network whose layers hand HWCN memory to each other, and the rule that decides when a conv
takes it."""
import numpy as np
import pytest

from distnet import nn
from distnet.nn import fourier, kernels
from test_nn_gradients import check_module
from test_nn_perf_paths import (check_conv_backward, conv_case, conv_reference, conv_reference_grads,
                                 same_conv_both_ways)

RNG = np.random.default_rng(13)

CASES = [
    # (N, C, H, W, O, kernel, padding)
    (3, 6, 9, 9, 4, 5, 0),          # LeNet-like: 25 taps, the input gradient goes direct
    (2, 8, 7, 6, 5, 3, 1),          # 9 taps: the input gradient is the full conv, itself HWCN
    (2, 7, 8, 5, 9, (3, 2), 1),     # rectangular kernel, widening, non-square map
    (1, 6, 5, 5, 6, 3, 2),          # batch of one, padding > kernel // 2
    (4, 12, 4, 4, 3, 1, 0),         # 1x1 kernel
    (2, 6, 3, 3, 2, 3, 0),          # kernel as large as the map: 1x1 output
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hwcn_conv_matches_the_einsum_loops(case, dtype):
    conv, x, padding = conv_case(case, dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for _ in range(2):  # the second step reuses the workspace
        y = conv(x)
        assert "hwcn_w" in conv._workspace  # the path under test was taken
        assert y.dtype == dtype and y.transpose(2, 3, 1, 0).flags.c_contiguous  # HWCN memory
        np.testing.assert_allclose(y, conv_reference(x, conv.weight.data, conv.bias.data, 1, padding), **tol)
        check_conv_backward(conv, x, RNG.standard_normal(y.shape).astype(dtype), 1, padding, tol)


def test_the_input_gradient_goes_direct_from_25_taps_and_through_the_full_conv_below():
    for k, direct in ((5, True), (3, False)):
        conv = nn.Conv2d(6, 8, k, padding=1, rng=RNG, dtype=np.float64)
        x = RNG.standard_normal((2, 6, 8, 8))
        g = RNG.standard_normal(conv(x).shape)
        dx = conv.backward(g)
        assert ("direct_g" in conv._workspace) == direct and ("input_grad" in conv._workspace) == (not direct)
        if not direct:  # the full conv of g (6 output channels from 8) took the HWCN path too
            assert "hwcn_w" in conv._workspace["input_grad"]
        np.testing.assert_allclose(dx, conv_reference_grads(x, conv.weight.data, g, 1, 1)[0], rtol=1e-10, atol=1e-10)


def test_a_network_of_hwcn_layers_against_finite_differences():
    """Convs, ReLU, max-pooling and a linear layer handing HWCN memory to each other."""
    model = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1, rng=RNG, dtype=np.float64), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, rng=RNG, dtype=np.float64), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 3, rng=RNG, dtype=np.float64))
    x = RNG.standard_normal((2, 6, 8, 8))
    check_module(model, x, rtol=1e-5, atol=1e-7)
    assert all("hwcn_w" in layer._workspace for layer in model.layers if isinstance(layer, nn.Conv2d))


@pytest.mark.parametrize("c,o,k,size,padding,path", [
    (6, 16, 5, 14, 0, "hwcn"),        # LeNet's second conv
    (32, 32, 3, 32, 1, "hwcn"),       # the CIFAR CNN's 32x32 convs
    (5, 8, 3, 10, 1, "other"),        # fewer than HWCN_MIN_CHANNELS
    (3, 32, 3, 32, 1, "other"),       # a first conv
    (16, 32, 5, 12, 0, "dft"),        # cnn2's second conv: the DFT comes first
    (64, 128, 3, 8, 1, "dft"),        # the CIFAR CNN's 8x8 conv
])
def test_the_rule_takes_hwcn_where_it_was_measured_faster(c, o, k, size, padding, path):
    conv = nn.Conv2d(c, o, k, padding=padding, rng=RNG)
    conv(RNG.standard_normal((2, c, size, size)).astype(np.float32))
    taken = "hwcn" if "hwcn_w" in conv._workspace else "dft" if isinstance(conv._cache, fourier.Spectrum) else "other"
    assert taken == path


def test_switching_hwcn_off_gives_the_same_conv(monkeypatch):
    """The CIFAR CNN's 32->32 3x3 layer at batch 8, float32: HWCN against the direct path."""
    conv = nn.Conv2d(32, 32, 3, padding=1, rng=RNG)
    x = RNG.standard_normal((8, 32, 16, 16)).astype(np.float32)
    g = RNG.standard_normal((8, 32, 16, 16)).astype(np.float32)
    same_conv_both_ways(monkeypatch, conv, x, g, "HWCN_CONV", lambda c: "hwcn_w" in c._workspace, 1e-4)


def test_empty_batches_and_other_dtypes_stay_off_it():
    conv = nn.Conv2d(8, 4, 3, padding=1, rng=RNG)
    y = conv(np.zeros((0, 8, 6, 6), np.float32))  # a rank's empty slice of the batch
    assert y.shape == (0, 4, 6, 6) and "hwcn_w" not in conv._workspace
    assert conv.backward(np.zeros_like(y)).shape == (0, 8, 6, 6)
    assert not kernels._use_hwcn(np.zeros((2, 8, 6, 6), np.float16), np.zeros((4, 8, 3, 3), np.float16), 1)
    assert not kernels._use_hwcn(np.zeros((2, 8, 6, 6), np.float32), np.zeros((4, 8, 3, 3), np.float32), 2)
