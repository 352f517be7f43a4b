"""The fast paths of distnet.nn.kernels against plain reference implementations.

The kernels keep activations in CHWN memory behind NCHW views, compute the stride-1 conv
input gradient through a row-pitched scratch buffer in cache-sized blocks, reuse scratch
buffers between steps, track max-pool winners with uint8 arithmetic, and let ReLU reuse a
broadcast zero slice.  Each is checked here against a direct formulation, for odd shapes,
both dtypes and the block splits, and for the layer contract (NCHW in and out, float32
stays float32, returned arrays never alias scratch space).
"""
import numpy as np
import pytest

from distnet import nn
from distnet.nn import kernels

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def no_hwcn(monkeypatch):
    """These tests are of the direct and im2col paths: the HWCN one has its own file."""
    monkeypatch.setattr(kernels, "HWCN_CONV", False)


def conv_reference(x, w, b, stride, padding):
    """Direct cross-correlation with einsum over the (kh, kw) offsets, NCHW."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return y if b is None else y + b[None, :, None, None]


def conv_reference_grads(x, w, g, stride, padding):
    """dL/dx, dL/dW and dL/db of sum(conv(x) * g), by the transposed loops."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    oh, ow = g.shape[2], g.shape[3]
    for i in range(kh):
        for j in range(kw):
            si = slice(i, i + stride * (oh - 1) + 1, stride)
            sj = slice(j, j + stride * (ow - 1) + 1, stride)
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", g, xp[:, :, si, sj])
            dxp[:, :, si, sj] += np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
    dx = dxp[:, :, padding:padding + h, padding:padding + wd]
    return dx, dw, g.sum(axis=(0, 2, 3))


CONV_CASES = [
    # (N, C, H, W, O, kernel, stride, padding)
    (2, 32, 6, 5, 32, 3, 1, 1),    # CIFAR-like: input gradient as a full convolution
    (2, 33, 5, 6, 7, 3, 1, 0),
    (64, 1, 28, 28, 6, 5, 1, 2),   # LeNet conv1
    (8, 6, 14, 14, 16, 5, 1, 0),   # LeNet conv2
    (3, 3, 9, 7, 4, 3, 1, 1),
    (1, 2, 6, 6, 3, 3, 1, 2),      # batch of one, padding > kernel // 2
    (2, 3, 7, 6, 4, 3, 2, 1),      # strided: the general col2im
    (2, 2, 8, 8, 3, (2, 3), 1, 0),  # rectangular kernel
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("layout", ["nchw", "chwn", "strided"])
def test_conv_matches_reference_for_any_input_layout(case, layout):
    n, c, h, w, o, k, stride, padding = case
    conv = nn.Conv2d(c, o, k, stride=stride, padding=padding, rng=RNG, dtype=np.float64)
    conv.bias.data[:] = RNG.standard_normal(o)
    x = RNG.standard_normal((n, c, h, w))
    if layout == "chwn":  # the memory our own layers produce
        x = kernels.to_nchw(np.ascontiguousarray(kernels.to_chwn(x)))
    elif layout == "strided":  # a non-contiguous view
        x = np.repeat(x, 2, axis=3)[:, :, :, ::2]
    y = conv(x)
    np.testing.assert_allclose(y, conv_reference(x, conv.weight.data, conv.bias.data, stride, padding),
                               rtol=1e-10, atol=1e-10)
    g = RNG.standard_normal(y.shape)
    conv.zero_grad()
    dx = conv.backward(g)
    ref_dx, ref_dw, ref_db = conv_reference_grads(x, conv.weight.data, g, stride, padding)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv.weight.grad, ref_dw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(conv.bias.grad, ref_db, rtol=1e-10, atol=1e-10)
    assert dx.shape == x.shape


@pytest.mark.parametrize("block_bytes", [1, 300, 4000, 40000, 1 << 30])
def test_stride1_input_gradient_is_the_same_for_every_block_split(monkeypatch, block_bytes):
    """Blocks of one row, of several rows, of channel groups, or everything at once (the
    im2col path's pitched col2im, used when the direct convolution is off or unavailable)."""
    monkeypatch.setattr(kernels, "DIRECT_CONV", False)
    monkeypatch.setattr(kernels, "_DX_BLOCK_BYTES", block_bytes)
    conv = nn.Conv2d(5, 3, 3, padding=1, rng=RNG, dtype=np.float64)
    x = RNG.standard_normal((3, 5, 7, 6))
    g = RNG.standard_normal(conv(x).shape)
    ref_dx, _, _ = conv_reference_grads(x, conv.weight.data, g, 1, 1)
    for _ in range(2):  # the second call reuses the workspace buffers
        np.testing.assert_allclose(conv.backward(g), ref_dx, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block_bytes", [1, 200, 2000, 9000, 1 << 30])
@pytest.mark.parametrize("case", [(3, 5, 7, 6, 3, 3, 1, 1), (2, 3, 7, 6, 4, 3, 2, 1), (2, 2, 8, 5, 3, (2, 3), 1, 0),
                                  (2, 4, 6, 7, 2, (3, 2), 1, 1), (1, 3, 5, 5, 3, 3, 1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("full_conv", [True, False])
def test_conv_is_the_same_for_every_im2col_block_split(monkeypatch, block_bytes, case, dtype, full_conv):
    """Blocks of single pixels, parts of a row, several rows, or the whole matrix at once;
    forward, weight gradient and input gradient (as a full convolution wherever O <= C, or
    through the pitched col2im) against the direct formulation.  The im2col path alone: the
    direct convolution (tested below) is off."""
    monkeypatch.setattr(kernels, "DIRECT_CONV", False)
    monkeypatch.setattr(kernels, "_COLS_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(kernels, "_NARROW_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(kernels, "_FULL_CONV_MIN_CHANNELS", 1 if full_conv else 1 << 30)
    n, c, h, w, o, k, stride, padding = case
    conv = nn.Conv2d(c, o, k, stride=stride, padding=padding, rng=RNG, dtype=dtype)
    conv.bias.data[:] = RNG.standard_normal(o)
    x = RNG.standard_normal((n, c, h, w)).astype(dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for _ in range(2):  # the second step reuses the block buffer
        y = conv(x)
        assert y.dtype == dtype
        np.testing.assert_allclose(y, conv_reference(x, conv.weight.data, conv.bias.data, stride, padding), **tol)
        check_conv_backward(conv, x, RNG.standard_normal(y.shape).astype(dtype), stride, padding, tol)


def numpy_ships_openblas() -> bool:
    try:
        blas_dep = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:
        return False
    return "openblas" in str(blas_dep.get("name", "")).lower()


def test_the_direct_convolution_finds_numpys_openblas():
    """Where NumPy is built with OpenBLAS (every PyPI wheel), kernels.blas must load it;
    otherwise the direct-convolution tests below would quietly test the im2col path."""
    if not numpy_ships_openblas():
        pytest.skip("this NumPy is not built with OpenBLAS; the convs stay on im2col")
    assert kernels.blas.available(np.float32) and kernels.blas.available(np.float64)


def check_conv_backward(conv, x, g, stride, padding, tol):
    """conv.backward(g) after conv(x): the input, weight and bias gradients against the
    einsum loops (in float64), to ``tol``; returns dx."""
    conv.zero_grad()
    dx = conv.backward(g)
    ref_dx, ref_dw, ref_db = conv_reference_grads(x.astype(np.float64), conv.weight.data.astype(np.float64),
                                                  g.astype(np.float64), stride, padding)
    np.testing.assert_allclose(dx, ref_dx, **tol)
    np.testing.assert_allclose(conv.weight.grad, ref_dw, **tol)
    np.testing.assert_allclose(conv.bias.grad, ref_db, **tol)
    assert dx.dtype == conv.weight.grad.dtype == x.dtype and dx.shape == x.shape
    return dx


def conv_case(case, dtype):
    """(conv with a random bias, its random input, padding) for a case (N, C, H, W, O,
    kernel, padding) of stride 1."""
    n, c, h, w, o, k, padding = case
    conv = nn.Conv2d(c, o, k, padding=padding, rng=RNG, dtype=dtype)
    conv.bias.data[:] = RNG.standard_normal(o)
    return conv, RNG.standard_normal((n, c, h, w)).astype(dtype), padding


DIRECT_CASES = [
    # (N, C, H, W, O, kernel, padding): stride 1 only
    (3, 5, 7, 6, 3, 3, 1),
    (2, 4, 6, 7, 2, (3, 2), 1),      # rectangular kernel
    (2, 2, 8, 5, 3, (2, 3), 0),
    (1, 3, 5, 5, 3, 3, 2),           # batch of one, padding > kernel // 2
    (2, 6, 9, 9, 4, 5, 0),           # 5x5, no padding
    (4, 1, 6, 6, 2, 3, 1),           # one input channel
]


@pytest.mark.parametrize("block_bytes", [1, 600, 5000, 1 << 30])
@pytest.mark.parametrize("case", DIRECT_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_conv_matches_reference_for_every_row_block(monkeypatch, block_bytes, case, dtype):
    """The direct convolution (one BLAS GEMM per kernel position on in-place spans of the
    input, output rows in blocks): forward, weight, bias and input gradients against the
    einsum loops, for blocks of one output row, a few, or the whole map, twice (the second
    step reuses the pitched scratch buffers)."""
    if not kernels.blas.available(dtype):
        pytest.skip("no BLAS for the direct convolution here (see the test above)")
    monkeypatch.setattr(kernels, "_DIRECT_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(kernels, "DIRECT_MIN_CHANNELS", 1)  # the forward goes direct too
    monkeypatch.setattr(kernels, "_DIRECT_INPUT_GRAD_MIN_TAPS", 1)  # and every input gradient
    conv, x, padding = conv_case(case, dtype)
    n, o = x.shape[0], conv.out_channels
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for _ in range(2):
        y = conv(x)
        assert "direct_y" in conv._workspace  # the path under test was taken
        assert y.dtype == dtype and y.shape == (n, o) + conv_reference(x, conv.weight.data, None, 1, padding).shape[2:]
        np.testing.assert_allclose(y, conv_reference(x, conv.weight.data, conv.bias.data, 1, padding), **tol)
        check_conv_backward(conv, x, RNG.standard_normal(y.shape).astype(dtype), 1, padding, tol)
        assert "direct_g" in conv._workspace


@pytest.mark.parametrize("c,o,k,direct", [(8, 8, 3, True), (8, 4, 3, True), (4, 8, 3, False), (4, 8, 5, True)])
def test_input_gradient_path_follows_the_measured_rule(c, o, k, direct):
    """Direct when the conv does not widen or has 25+ kernel positions, else the pitched
    col2im (see kernels._direct_input_grad); both against the reference."""
    if not kernels.blas.available(np.float64):
        pytest.skip("no BLAS for the direct convolution here")
    conv = nn.Conv2d(c, o, k, padding=1, rng=RNG, dtype=np.float64)
    x = RNG.standard_normal((2, c, 7, 7))
    g = RNG.standard_normal(conv(x).shape)
    dx = conv.backward(g)
    assert ("direct_g" in conv._workspace) == direct and ("dcols" in conv._workspace) == (not direct)
    np.testing.assert_allclose(dx, conv_reference_grads(x, conv.weight.data, g, 1, 1)[0], rtol=1e-10, atol=1e-10)


def test_direct_and_im2col_convs_agree_on_a_cifar_sized_layer(monkeypatch):
    """The CIFAR CNN's 32->32 3x3 layer at batch 8, float32, both ways: the default (direct
    forward and input gradient) against im2col, to float32 rounding."""
    if not kernels.blas.available(np.float32):
        pytest.skip("no BLAS for the direct convolution here")
    conv = nn.Conv2d(32, 32, 3, padding=1, rng=RNG)
    x = RNG.standard_normal((8, 32, 16, 16)).astype(np.float32)
    g = RNG.standard_normal((8, 32, 16, 16)).astype(np.float32)
    same_conv_both_ways(monkeypatch, conv, x, g, "DIRECT_CONV", lambda c: "direct_y" in c._workspace, 1e-4)


def same_conv_both_ways(monkeypatch, conv, x, g, switch, took, rtol):
    """Forward and backward of ``conv`` with ``kernels.<switch>`` on, then off; ``took(conv)``
    says whether the path it switches ran.  Output, input, weight and bias gradients agree
    to ``rtol`` (relative to each one's largest value)."""
    results = []
    for on in (True, False):
        monkeypatch.setattr(kernels, switch, on)
        conv._workspace.clear()
        y = conv(x).copy()
        assert took(conv) == on
        conv.zero_grad()
        results.append((y, conv.backward(g).copy(), conv.weight.grad.copy(), conv.bias.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_conv_workspace_never_aliases_results_and_follows_batch_size():
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=RNG)
    def buffers(workspace):  # arrays in the workspace, nested dicts included
        return sum(buffers(v) if isinstance(v, dict) else 1 for v in workspace.values())

    results, counts = [], []
    for n in (4, 4, 3, 4):  # a smaller last batch, then the usual size again
        x = RNG.standard_normal((n, 2, 5, 5)).astype(np.float32)
        y = conv(x)
        g = RNG.standard_normal(y.shape).astype(np.float32)
        conv.zero_grad()
        dx = conv.backward(g)
        results.append((x, y, g, dx, y.copy(), dx.copy(), conv.weight.grad.copy()))
        counts.append(buffers(conv._workspace))
    for x, y, g, dx, y_then, dx_then, dw_then in results:
        # what a call returned is untouched by later calls
        np.testing.assert_array_equal(y, y_then)
        np.testing.assert_array_equal(dx, dx_then)
        fresh = nn.Conv2d(2, 3, 3, padding=1)
        fresh.weight.data[...] = conv.weight.data
        fresh.bias.data[...] = conv.bias.data
        np.testing.assert_allclose(fresh(x), y_then, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fresh.backward(g), dx_then, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fresh.weight.grad, dw_then, rtol=1e-4, atol=1e-4)
    assert counts == [counts[0]] * 4  # one buffer per kind, not one per batch size


def maxpool_reference(x, k, stride):
    """Loops: output max and dx with the whole gradient on the first maximum."""
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, c, oh, ow))
    first = np.zeros((n, c, oh, ow, 2), dtype=int)
    for a in range(oh):
        for b in range(ow):
            win = x[:, :, a * stride:a * stride + k, b * stride:b * stride + k].reshape(n, c, -1)
            pos = win.argmax(axis=2)  # argmax returns the first maximum
            out[:, :, a, b] = win.max(axis=2)
            first[:, :, a, b] = np.stack([a * stride + pos // k, b * stride + pos % k], axis=-1)
    return out, first


@pytest.mark.parametrize("shape,k,stride", [((3, 4, 8, 8), 2, 2), ((2, 3, 7, 9), 2, 2),
                                            ((2, 2, 7, 7), 3, 2), ((2, 2, 6, 6), 3, 1),
                                            ((1, 1, 4, 4), 4, 4)])
@pytest.mark.parametrize("ties", [False, True])
def test_maxpool_winner_tracking_matches_reference(shape, k, stride, ties):
    x = RNG.standard_normal(shape)
    if ties:  # few distinct values: plenty of ties, like the zeros after a ReLU
        x = np.maximum(np.round(x), 0)
    pool = nn.MaxPool2d(k, stride)
    y = pool(x)
    out, first = maxpool_reference(x, k, stride)
    np.testing.assert_array_equal(y, out)
    g = RNG.standard_normal(y.shape)
    expected = np.zeros_like(x)
    n, c, oh, ow = g.shape
    for i in range(n):
        for j in range(c):
            for a in range(oh):
                for b in range(ow):
                    r, s = first[i, j, a, b]
                    expected[i, j, r, s] += g[i, j, a, b]
    np.testing.assert_allclose(pool.backward(g), expected, rtol=1e-12, atol=1e-12)


def test_maxpool_all_equal_window_sends_gradient_to_first_position_only():
    pool = nn.MaxPool2d(2)
    x = np.zeros((1, 1, 2, 4), dtype=np.float32)
    x[0, 0, 1, 3] = 5.0
    x[0, 0, 0, 2] = 5.0  # tie between positions (0, 0) and (1, 1) of the second window
    pool(x)
    dx = pool.backward(np.array([[[[1.0, 2.0]]]], dtype=np.float32))
    np.testing.assert_array_equal(dx, [[[[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
    assert dx.dtype == np.float32


@pytest.mark.parametrize("make", [
    lambda: RNG.standard_normal((4, 5)),
    lambda: RNG.standard_normal((3, 1)),
    lambda: RNG.standard_normal(7),
    lambda: kernels.to_nchw(RNG.standard_normal((3, 4, 5, 2))),  # CHWN memory
    lambda: RNG.standard_normal((2, 3, 4, 6))[:, :, :, ::2],     # non-contiguous
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_with_cached_zero_slice(make, dtype):
    relu = nn.ReLU()
    for _ in range(2):  # the second call reuses the zeros
        x = make().astype(dtype)
        y = relu(x)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        assert y.dtype == dtype
        g = RNG.standard_normal(x.shape).astype(dtype)
        np.testing.assert_array_equal(relu.backward(g), np.where(x > 0, g, 0))


def test_float32_stays_float32_through_lenet():
    model = nn.build_model("lenet5", (1, 28, 28), 10)
    model.input_grad = True
    crit = nn.CrossEntropyLoss()
    h = RNG.standard_normal((5, 1, 28, 28)).astype(np.float32)
    for layer in model.layers:
        h = layer(h)
        assert h.dtype == np.float32, layer
    crit(h, np.arange(5))
    g = crit.backward()
    assert g.dtype == np.float32
    for layer in reversed(model.layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, layer
    assert model.flat_grads.dtype == np.float32


def test_lenet_float32_training_step_matches_float64():
    """The whole fast path in float32 agrees with the float64 one to float32 precision."""
    x = RNG.standard_normal((16, 1, 28, 28))
    labels = RNG.integers(0, 10, 16)
    grads = []
    for dtype in (np.float32, np.float64):
        model = nn.build_model("lenet5", (1, 28, 28), 10, seed=5, dtype=dtype)
        model.input_grad = False
        crit = nn.CrossEntropyLoss()
        crit(model(x.astype(dtype)), labels)
        model.zero_grad()
        model.backward(crit.backward())
        grads.append(model.flat_grads.astype(np.float64))
    np.testing.assert_allclose(grads[0], grads[1], rtol=2e-3, atol=2e-5)


# ---- Sequential's execution order (ReLU after MaxPool) and in-place ReLU ----------------

def _pool_net(dtype, pool, seed=3):
    rng = np.random.default_rng(seed)
    return [nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=dtype), nn.ReLU(), pool(),
            nn.Conv2d(4, 3, 3, rng=rng, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3, 5, rng=rng, dtype=dtype), nn.ReLU(), nn.Linear(5, 4, rng=rng, dtype=dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool", [lambda: nn.MaxPool2d(2), lambda: nn.MaxPool2d(3, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_relu_after_pool_order_gives_the_listed_order_results(dtype, pool, ties):
    """Sequential runs ReLU after the MaxPool2d that follows it and ReLU in place; outputs
    and all gradients equal the layers called one by one in their listed order."""
    x = RNG.standard_normal((3, 2, 9, 9)).astype(dtype)
    if ties:  # many equal values, ReLU zeros: every tie rule is exercised
        x = np.round(x)
    model = nn.Sequential(*_pool_net(dtype, pool))
    assert model.execution_order() == [0, 2, 1, 3, 5, 4, 6, 7, 8, 9]
    plain = _pool_net(dtype, pool)
    x_before = x.copy()
    y = model(x)
    np.testing.assert_array_equal(x, x_before)  # the caller's input is never overwritten
    h = x
    for layer in plain:
        h = layer(h)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, h, **tol)
    g = RNG.standard_normal(y.shape).astype(dtype)
    g_before = g.copy()
    model.zero_grad()
    dx = model.backward(g)
    np.testing.assert_array_equal(g, g_before)  # nor the caller's gradient
    gp = g
    for layer in reversed(plain):
        gp = layer.backward(gp)
    np.testing.assert_allclose(dx, gp, **tol)
    expected = np.concatenate([p.grad.ravel() for layer in plain for p in layer.own_parameters()])
    np.testing.assert_allclose(model.flat_grads, expected, **tol)
    assert dx.dtype == y.dtype == dtype


def test_backward_hooks_see_every_layer_once_with_the_swapped_order():
    model = nn.Sequential(*_pool_net(np.float64, lambda: nn.MaxPool2d(2)))
    seen = []
    model.backward_hooks.append(seen.append)
    model.input_grad = False
    y = model(RNG.standard_normal((2, 2, 9, 9)))
    assert model.backward(np.ones_like(y)) is None  # the first conv skipped its input grad
    assert sorted(seen) == list(range(len(model.layers)))
    assert seen[-1] == 0


def test_relu_first_and_pool_first_layers_leave_the_input_alone():
    """A leading ReLU (then pool) gets the caller's array: it must not work in place."""
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    assert model.execution_order() == [1, 0, 2]
    x = RNG.standard_normal((2, 1, 4, 4))
    x_before = x.copy()
    y = model(x)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, np.maximum(x, 0).reshape(2, 1, 2, 2, 2, 2).max(axis=(3, 5)).reshape(2, -1))
    g = np.ones_like(y)
    dx = model.backward(g)
    np.testing.assert_array_equal(g, np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == np.count_nonzero(y > 0)
    head = nn.Sequential(nn.ReLU(), nn.Linear(3, 2, rng=RNG, dtype=np.float64))
    x = RNG.standard_normal((4, 3))
    x_before = x.copy()
    np.testing.assert_allclose(head(x), np.maximum(x_before, 0) @ head[1].weight.data.T + head[1].bias.data)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (1, 1, 2, 2), (2, 5, 5, 4)])
@pytest.mark.parametrize("layout", ["nchw", "chwn"])
def test_maxpool_2x2_fast_path_matches_reference(dtype, shape, layout):
    x = np.maximum(np.round(RNG.standard_normal(shape) * 2), 0).astype(dtype)  # ties galore
    if layout == "chwn":
        x = kernels.to_nchw(np.ascontiguousarray(kernels.to_chwn(x)))
    pool = nn.MaxPool2d(2)
    y = pool(x)
    out, first = maxpool_reference(x.astype(np.float64), 2, 2)
    np.testing.assert_array_equal(y, out)
    assert y.dtype == dtype
    g = RNG.standard_normal(y.shape).astype(dtype)
    expected = np.zeros(x.shape)
    n, c, oh, ow = g.shape
    for i in range(n):
        for j in range(c):
            for a in range(oh):
                for b in range(ow):
                    r, s = first[i, j, a, b]
                    expected[i, j, r, s] += g[i, j, a, b]
    dx = pool.backward(g)
    np.testing.assert_array_equal(dx, expected)
    assert dx.dtype == dtype
