"""Tests for distnet.optim optimizers.

Expected values come from the update formulas written out below as independent scalar
loops over plain Python floats (or, where the numbers are exact binary fractions, written
literally) -- never from the code under test.  Those loops use the textbook form of each
formula; the implementation follows PyTorch's operation order, so the two agree to rounding
(rtol 1e-12), which is far tighter than any formula mistake (wrong eps placement, missing
bias correction, zero-initialised momentum) could hide behind.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from distnet.errors import UserError
from distnet.nn.module import Module, Parameter, Sequential
from distnet.optim import (
    OPTIMIZER_NAMES,
    SGD,
    Adam,
    AdamW,
    Optimizer,
    OptimizerError,
    RMSprop,
    make_optimizer,
)

RTOL = 1e-12

# A tiny 3-float parameter and a sequence of gradients / learning rates for it.
P0 = [1.0, -2.0, 0.5]
GRADS = [[0.1, -0.2, 0.3], [0.4, 0.1, -0.5], [-0.3, 0.2, 0.2], [0.05, -0.1, 0.0]]
LRS = [0.1, 0.05, 0.08, 0.02]  # changing lr: the current lr must be used at every step


class Holder(Module):
    """A module that just owns some parameters, to build a Sequential (flat buffers)."""

    def __init__(self, *arrays):
        self.params = [Parameter(np.array(a), f"p{i}") for i, a in enumerate(arrays)]

    def own_parameters(self):
        return self.params


def separate(*arrays, dtype=np.float64):
    """Independent Parameters (no shared buffer): the per-parameter fallback path."""
    return [Parameter(np.array(a, dtype=dtype), f"p{i}") for i, a in enumerate(arrays)]


def flat(*arrays, dtype=np.float64):
    """Parameters living in one Sequential's flat buffers: the flat path."""
    model = Sequential(Holder(*[np.asarray(a, dtype=dtype) for a in arrays]))
    return model


def run(opt, params, grads, lrs):
    """Feed ``grads[k]`` (one array per parameter) with lr ``lrs[k]``; return data copies."""
    for g_list, lr in zip(grads, lrs):
        for p, g in zip(params, g_list):
            p.grad[...] = g
        opt.lr = lr
        opt.step()
    return [p.data.copy() for p in params]


def run_single(opt_cls, grads=GRADS, lrs=LRS, p0=P0, **kw):
    params = separate(p0)
    opt = opt_cls(params, lr=lrs[0], **kw)
    return run(opt, params, [[g] for g in grads], lrs)[0]


# --------------------------------------------------------------------------- references
# Plain-Python, element-by-element, textbook formulas (PyTorch's documented algorithms).

def ref_sgd(p0, grads, lrs, momentum=0.0, dampening=0.0, nesterov=False, wd=0.0):
    p, buf = list(p0), None
    for step, (g, lr) in enumerate(zip(grads, lrs)):
        d = [gi + wd * pi for gi, pi in zip(g, p)]
        if momentum:
            if step == 0:
                buf = list(d)  # first step: buffer = gradient, no dampening
            else:
                buf = [momentum * b + (1 - dampening) * di for b, di in zip(buf, d)]
            d = [di + momentum * b for di, b in zip(d, buf)] if nesterov else buf
        p = [pi - lr * di for pi, di in zip(p, d)]
    return p


def ref_rmsprop(p0, grads, lrs, alpha=0.99, eps=1e-8, momentum=0.0, wd=0.0, centered=False):
    n = len(p0)
    p, v, gavg, buf = list(p0), [0.0] * n, [0.0] * n, [0.0] * n
    for g, lr in zip(grads, lrs):
        for i in range(n):
            d = g[i] + wd * p[i]
            v[i] = alpha * v[i] + (1 - alpha) * d * d
            if centered:
                gavg[i] = alpha * gavg[i] + (1 - alpha) * d
                avg = math.sqrt(v[i] - gavg[i] ** 2) + eps  # eps outside the sqrt
            else:
                avg = math.sqrt(v[i]) + eps
            if momentum > 0:
                buf[i] = momentum * buf[i] + d / avg  # buffer starts at zero
                p[i] -= lr * buf[i]
            else:
                p[i] -= lr * d / avg
    return p


def ref_adam(p0, grads, lrs, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    n = len(p0)
    p, m, v = list(p0), [0.0] * n, [0.0] * n
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        for i in range(n):
            d = g[i]
            if decoupled:
                p[i] *= 1 - lr * wd
            else:
                d += wd * p[i]
            m[i] = beta1 * m[i] + (1 - beta1) * d
            v[i] = beta2 * v[i] + (1 - beta2) * d * d
            m_hat = m[i] / (1 - beta1 ** t)
            v_hat = v[i] / (1 - beta2 ** t)
            p[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


# --------------------------------------------------------------------------- literal values

def test_sgd_plain_literal():
    # p = p - lr * g with exact binary fractions.
    got = run_single(SGD, grads=[[1.0], [2.0], [-4.0]], lrs=[0.5, 0.25, 0.125], p0=[1.0])
    assert got.tolist() == [1.0 - 0.5 - 0.5 + 0.5]


def test_sgd_momentum_first_step_initialises_buffer_to_gradient():
    # lr 0.5, momentum 0.5, dampening 0.5: PyTorch sets buf = g on the first step (no
    # dampening, not 0.5 * 0 + 0.5 * g), then buf = 0.5 buf + 0.5 g.
    #   step 1: buf = 1,                       p = 1 - 0.5 * 1     = 0.5
    #   step 2: buf = 0.5 * 1 + 0.5 * 2 = 1.5,  p = 0.5 - 0.75      = -0.25
    #   step 3: buf = 0.75 + 1.5 = 2.25,        p = -0.25 - 1.125   = -1.375
    params = separate([1.0])
    opt = SGD(params, lr=0.5, momentum=0.5, dampening=0.5)
    history = []
    for g in (1.0, 2.0, 3.0):
        params[0].grad[...] = g
        opt.step()
        history.append((params[0].data[0], opt.state_dict()["momentum_buffer"][0]))
    assert history == [(0.5, 1.0), (-0.25, 1.5), (-1.375, 2.25)]


def test_sgd_nesterov_literal():
    # lr 0.5, momentum 0.5:  buf = 0.5 buf + g (buf = g first),  p -= 0.5 * (g + 0.5 buf)
    #   g=1: buf=1,    d=1.5,   p = 1 - 0.75        = 0.25
    #   g=2: buf=2.5,  d=3.25,  p = 0.25 - 1.625    = -1.375
    #   g=3: buf=4.25, d=5.125, p = -1.375 - 2.5625 = -3.9375
    got = run_single(SGD, grads=[[1.0], [2.0], [3.0]], lrs=[0.5] * 3, p0=[1.0],
                     momentum=0.5, nesterov=True)
    assert got.tolist() == [-3.9375]


def test_sgd_l2_weight_decay_literal():
    # d = g + 0.5 p, lr 0.5:  g=1: d = 1.5, p = 0.25;  g=2: d = 2.125, p = 0.25 - 1.0625
    got = run_single(SGD, grads=[[1.0], [2.0]], lrs=[0.5, 0.5], p0=[1.0], weight_decay=0.5)
    assert got.tolist() == [-0.8125]


def test_adam_first_step_is_about_lr_times_sign_thanks_to_bias_correction():
    # m_hat = g and v_hat = g^2 after one step, so p moves by lr * g / (|g| + eps) whatever
    # the gradient's scale.  Without bias correction it would move by ~3.16 * lr.
    params = separate([1.0, 1.0, 1.0])
    opt = Adam(params, lr=0.01)
    params[0].grad[...] = [0.5, -2.0, 1e-3]
    opt.step()
    expected = [1 - 0.01 * 0.5 / (0.5 + 1e-8), 1 + 0.01 * 2.0 / (2.0 + 1e-8),
                1 - 0.01 * 1e-3 / (1e-3 + 1e-8)]
    np.testing.assert_allclose(params[0].data, expected, rtol=RTOL)


def test_adamw_decay_is_decoupled_and_adam_decay_is_l2():
    # Zero gradient: AdamW's moments stay 0 (update 0 / eps = 0), only p *= 1 - lr * wd;
    # Adam's L2 term becomes the gradient, so its first step is ~lr * sign(p).
    zero = [[0.0]] * 3
    got_w = run_single(AdamW, grads=zero, lrs=[0.1] * 3, p0=[2.0], weight_decay=0.25)
    np.testing.assert_allclose(got_w, [2.0 * 0.975 ** 3], rtol=RTOL)
    got_a = run_single(Adam, grads=zero[:1], lrs=[0.1], p0=[2.0], weight_decay=0.25)
    np.testing.assert_allclose(got_a, [2.0 - 0.1 * 0.5 / (0.5 + 1e-8)], rtol=RTOL)


def test_rmsprop_first_step_literal():
    # v = 0.01 g^2, avg = 0.1 |g| + eps, so the first step moves by ~10 lr * sign(g).
    params = separate([0.0, 0.0])
    opt = RMSprop(params, lr=0.01)
    params[0].grad[...] = [0.3, -4.0]
    opt.step()
    expected = [-0.01 * 0.3 / (math.sqrt(0.01 * 0.09) + 1e-8),
                0.01 * 4.0 / (math.sqrt(0.01 * 16.0) + 1e-8)]
    np.testing.assert_allclose(params[0].data, expected, rtol=1e-10)  # 1 - 0.99 != 0.01 exactly
    np.testing.assert_allclose(params[0].data, [-0.1, 0.1], rtol=1e-6)


# --------------------------------------------------------------------------- vs references

SGD_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.8, nesterov=True, weight_decay=0.01),
    dict(weight_decay=0.1),
    dict(momentum=0.5, weight_decay=0.1, dampening=0.5),
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
def test_sgd_matches_reference(kw):
    ref_kw = {("wd" if k == "weight_decay" else k): v for k, v in kw.items()}
    np.testing.assert_allclose(run_single(SGD, **kw), ref_sgd(P0, GRADS, LRS, **ref_kw),
                               rtol=RTOL)


RMSPROP_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(centered=True),
    dict(centered=True, momentum=0.7, alpha=0.9),
    dict(weight_decay=0.05, alpha=0.8),
    dict(eps=1e-2),  # large eps: must be added outside the square root
    dict(centered=True, eps=1e-2, weight_decay=0.1),
]


@pytest.mark.parametrize("kw", RMSPROP_CASES, ids=str)
def test_rmsprop_matches_reference(kw):
    ref_kw = {("wd" if k == "weight_decay" else k): v for k, v in kw.items()}
    np.testing.assert_allclose(run_single(RMSprop, **kw),
                               ref_rmsprop(P0, GRADS, LRS, **ref_kw), rtol=RTOL)


ADAM_CASES = [
    (Adam, dict()),
    (Adam, dict(weight_decay=0.1)),
    (Adam, dict(betas=(0.5, 0.9), eps=1e-2)),  # large eps: sqrt(v_hat) + eps
    (Adam, dict(betas=(0.3, 0.6))),  # beta1 < 0.5: the other branch of PyTorch's lerp
    (AdamW, dict()),
    (AdamW, dict(weight_decay=0.2, betas=(0.8, 0.99))),
    (AdamW, dict(weight_decay=0.0)),
]


@pytest.mark.parametrize("cls,kw", ADAM_CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_adam_matches_reference(cls, kw):
    beta1, beta2 = kw.get("betas", (0.9, 0.999))
    wd = kw.get("weight_decay", 0.01 if cls is AdamW else 0.0)
    expected = ref_adam(P0, GRADS, LRS, beta1=beta1, beta2=beta2, eps=kw.get("eps", 1e-8),
                        wd=wd, decoupled=cls is AdamW)
    np.testing.assert_allclose(run_single(cls, **kw), expected, rtol=RTOL)


def test_adam_without_bias_correction_would_differ():
    """Guard the tolerance: a reference without bias correction is far outside it."""
    got = run_single(Adam)
    n = len(P0)
    p, m, v = list(P0), [0.0] * n, [0.0] * n
    for g, lr in zip(GRADS, LRS):
        for i in range(n):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.999 * v[i] + 0.001 * g[i] ** 2
            p[i] -= lr * m[i] / (math.sqrt(v[i]) + 1e-8)
    assert not np.allclose(got, p, rtol=1e-3)


# --------------------------------------------------------------------------- flat vs fallback

ALL_CONFIGS = [(SGD, kw) for kw in SGD_CASES] + [(RMSprop, kw) for kw in RMSPROP_CASES] \
    + ADAM_CASES
SHAPES = [(4, 3), (3,), (2, 1, 3), (1,)]


def random_problem(rng, dtype, steps=5):
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    lrs = [0.05 * (1 + 0.5 * math.cos(k)) for k in range(steps)]
    return init, grads, lrs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,kw", ALL_CONFIGS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_flat_path_bit_identical_to_per_parameter_path(cls, kw, dtype):
    init, grads, lrs = random_problem(np.random.default_rng(0), dtype)
    model = flat(*init, dtype=dtype)
    opt_flat = cls(model, lr=lrs[0], **kw)
    params_sep = separate(*init, dtype=dtype)
    opt_sep = cls(params_sep, lr=lrs[0], **kw)
    assert opt_flat.num_segments == 1 and opt_sep.num_segments == len(SHAPES)

    got_flat = run(opt_flat, model.parameters(), grads, lrs)
    got_sep = run(opt_sep, params_sep, grads, lrs)
    for a, b in zip(got_flat, got_sep):
        assert a.dtype == dtype and np.array_equal(a, b)
    sd_flat, sd_sep = opt_flat.state_dict(), opt_sep.state_dict()
    assert sd_flat.keys() == sd_sep.keys()
    for key, value in sd_flat.items():
        assert np.array_equal(value, sd_sep[key]), key
    # The flat path really updated the model's buffer (not a copy).
    assert np.array_equal(model.flat_params, np.concatenate([a.ravel() for a in got_sep]))


def test_hand_built_views_form_one_segment():
    data, grad = np.arange(10.0), np.zeros(10)
    params = [Parameter(np.zeros(1)), Parameter(np.zeros(1))]
    params[0].data, params[0].grad = data[:4].reshape(2, 2), grad[:4].reshape(2, 2)
    params[1].data, params[1].grad = data[4:], grad[4:]
    opt = SGD(params, lr=0.5)
    assert opt.num_segments == 1
    grad[:] = 2.0
    opt.step()
    assert np.array_equal(data, np.arange(10.0) - 1.0)


def test_segments_split_where_buffers_are_not_consecutive():
    data, grad = np.arange(10.0), np.zeros(10)
    a, b, c = Parameter(np.zeros(1)), Parameter(np.zeros(1)), Parameter(np.zeros(1))
    a.data, a.grad = data[:3], grad[:3]
    b.data, b.grad = data[5:], grad[5:]  # gap before b
    c.data, c.grad = np.ones(2), np.ones(2)  # a separate array
    assert SGD([a, b, c], lr=0.1).num_segments == 3
    assert SGD([b, a], lr=0.1).num_segments == 2  # out of order
    model = flat([1.0, 2.0], [3.0])
    assert SGD(model.parameters() + [c], lr=0.1).num_segments == 2


def test_non_contiguous_parameter_is_updated_in_place():
    p = Parameter(np.zeros(1))
    p.data = np.arange(6.0).reshape(2, 3).T  # a transposed, non-contiguous view
    p.grad = np.ones((3, 2))
    before = p.data.copy()
    opt = Adam([p], lr=0.1)
    opt.step()
    np.testing.assert_allclose(p.data, before - 0.1, rtol=1e-6)


# --------------------------------------------------------------------------- gradients untouched

@pytest.mark.parametrize("cls,kw", ALL_CONFIGS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_step_does_not_modify_gradients(cls, kw):
    init, grads, lrs = random_problem(np.random.default_rng(1), np.float64, steps=3)
    kw = dict(kw, weight_decay=0.1) if cls is not AdamW else kw
    for model_or_params in (flat(*init), separate(*init)):
        opt = cls(model_or_params, lr=0.1, **kw)
        params = opt.params
        for g_list in grads:
            for p, g in zip(params, g_list):
                p.grad[...] = g
            opt.step()
            for p, g in zip(params, g_list):
                assert np.array_equal(p.grad, g)


def test_zero_grad_flat_and_separate():
    model = flat([1.0, 2.0], [3.0])
    model.flat_grads[:] = 5.0
    SGD(model, lr=0.1).zero_grad()
    assert not model.flat_grads.any()
    params = separate([1.0], [2.0, 3.0])
    for p in params:
        p.grad[...] = 1.0
    SGD(params, lr=0.1).zero_grad()
    assert all(not p.grad.any() for p in params)


# --------------------------------------------------------------------------- state dict

@pytest.mark.parametrize("cls,kw", ALL_CONFIGS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_state_dict_npz_round_trip_resumes_bit_identically(cls, kw, tmp_path):
    init, grads, lrs = random_problem(np.random.default_rng(2), np.float32, steps=6)
    model = flat(*init, dtype=np.float32)
    opt = cls(model, lr=lrs[0], **kw)
    run(opt, model.parameters(), grads[:3], lrs[:3])

    state = opt.state_dict()
    assert isinstance(state["lr"], float) and isinstance(state["step"], int)
    assert state["step"] == 3 and state["lr"] == lrs[2]
    for key, value in state.items():
        if key not in ("lr", "step"):
            assert isinstance(value, np.ndarray) and value.shape == (model.flat_params.size,)
            assert value.dtype == np.float32
    np.savez(tmp_path / "opt.npz", **state)
    np.save(tmp_path / "params.npy", model.flat_params)

    expected = run(opt, model.parameters(), grads[3:], lrs[3:])  # uninterrupted

    model2 = flat(*init, dtype=np.float32)
    model2.flat_params[:] = np.load(tmp_path / "params.npy")
    opt2 = cls(model2, lr=1.0, **kw)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as saved:
        opt2.load_state_dict(saved)
    assert opt2.step_count == 3 and opt2.lr == lrs[2]
    resumed = run(opt2, model2.parameters(), grads[3:], lrs[3:])
    for a, b in zip(expected, resumed):
        assert np.array_equal(a, b)


def test_state_dict_is_a_copy():
    params = separate([1.0, 2.0])
    opt = Adam(params, lr=0.1)
    params[0].grad[...] = 1.0
    opt.step()
    state = opt.state_dict()
    saved = state["exp_avg"].copy()
    opt.step()
    assert np.array_equal(state["exp_avg"], saved)


def _trained_sgd():
    params = separate([1.0, 2.0, 3.0])
    opt = SGD(params, lr=0.1, momentum=0.9)
    params[0].grad[...] = 1.0
    opt.step()
    return opt


@pytest.mark.parametrize("mutate,match", [
    (lambda s: s.pop("momentum_buffer"), "missing keys \\['momentum_buffer'\\]"),
    (lambda s: s.update(exp_avg=np.zeros(3)), "unexpected keys \\['exp_avg'\\]"),
    (lambda s: s.update(momentum_buffer=np.zeros(4)), "shape \\(4,\\).*\\(3,\\)"),
    (lambda s: s.update(momentum_buffer=np.zeros((3, 1))), "shape"),
    (lambda s: s.update(momentum_buffer=np.zeros(3, dtype=np.int64)), "dtype"),
    (lambda s: s.update(step=-1), "step"),
    (lambda s: s.update(step=1.5), "step"),
    (lambda s: s.update(lr=-0.1), "lr"),
    (lambda s: s.update(lr=np.zeros(2)), "lr"),
])
def test_load_state_dict_rejects_mismatches(mutate, match):
    opt = _trained_sgd()
    state = opt.state_dict()
    mutate(state)
    before = opt.state_dict()
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state)
    after = opt.state_dict()  # nothing was half-loaded
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_load_state_dict_rejects_other_optimizer_kind():
    adam_state = Adam(separate([1.0, 2.0, 3.0]), lr=0.1).state_dict()
    with pytest.raises(ValueError, match="SGD state mismatch"):
        _trained_sgd().load_state_dict(adam_state)
    plain = RMSprop(separate([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="grad_avg"):
        RMSprop(separate([1.0, 2.0, 3.0]), centered=True).load_state_dict(plain.state_dict())


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("make,name", [
    (lambda p: SGD(p, lr=-0.1), "lr"),
    (lambda p: SGD(p, lr=float("nan")), "lr"),
    (lambda p: SGD(p, lr="fast"), "lr"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1e-4), "weight_decay"),
    (lambda p: SGD(p, lr=0.1, dampening=1.5), "dampening"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda p: RMSprop(p, alpha=1.0), "alpha"),
    (lambda p: RMSprop(p, alpha=-0.1), "alpha"),
    (lambda p: RMSprop(p, eps=-1e-8), "eps"),
    (lambda p: RMSprop(p, momentum=-0.1), "momentum"),
    (lambda p: RMSprop(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), "betas\\[0\\]"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), "betas\\[1\\]"),
    (lambda p: Adam(p, betas=0.9), "betas"),
    (lambda p: Adam(p, eps=-1.0), "eps"),
    (lambda p: Adam(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: AdamW(p, lr=-1.0), "lr"),
])
def test_invalid_hyperparameters_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make(separate([1.0]))


def test_lr_attribute_is_mutable_and_validated():
    opt = SGD(separate([1.0]), lr=0.1)
    opt.lr = 0.25
    assert opt.lr == 0.25 and opt.state_dict()["lr"] == 0.25
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


def test_bad_parameter_lists():
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    p = separate([1.0])[0]
    with pytest.raises(ValueError, match="more than once"):
        SGD([p, p], lr=0.1)
    mixed = separate([1.0]) + separate([1.0], dtype=np.float32)
    with pytest.raises(ValueError, match="dtype"):
        SGD(mixed, lr=0.1)
    with pytest.raises(ValueError, match="numpy arrays"):
        SGD([object()], lr=0.1)


def test_errors_are_also_user_errors():
    """So the command line reports them as one line, not a traceback."""
    with pytest.raises(UserError):
        SGD(separate([1.0]), lr=-1.0)
    assert issubclass(OptimizerError, ValueError)


# --------------------------------------------------------------------------- factory

def test_make_optimizer_names():
    params = lambda: separate([1.0, 2.0])  # noqa: E731
    sgd = make_optimizer("sgd", params(), 0.1, weight_decay=1e-4)
    assert type(sgd) is SGD and sgd.momentum == 0 and sgd.weight_decay == 1e-4
    mom = make_optimizer("momentum", params(), 0.1, momentum=0.8)
    assert type(mom) is SGD and mom.momentum == 0.8 and not mom.nesterov
    nes = make_optimizer("nesterov", params(), 0.1)
    assert type(nes) is SGD and nes.momentum == 0.9 and nes.nesterov
    assert type(make_optimizer("rmsprop", params(), 0.01)) is RMSprop
    assert type(make_optimizer("adam", params(), 1e-3)) is Adam
    adamw = make_optimizer("AdamW", params(), 1e-3, weight_decay=0.05)
    assert type(adamw) is AdamW and adamw.weight_decay == 0.05
    for name in OPTIMIZER_NAMES:
        opt = make_optimizer(name, flat([1.0, 2.0]), 0.1)
        assert isinstance(opt, Optimizer) and opt.lr == 0.1


def test_make_optimizer_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'.*sgd, momentum, nesterov, "
                                         "rmsprop, adam, adamw"):
        make_optimizer("lamb", separate([1.0]), 0.1)


def test_adam_follows_pytorch_operation_order_bitwise():
    """Pin PyTorch's (unfused) operation order, which the textbook form only matches to
    rounding: m.lerp_(d, 1 - beta1) (two formulas depending on the weight), v = v * beta2
    + ((1 - beta2) * d) * d, denom = sqrt(v) / sqrt(bc2) + eps, p += (-lr / bc1) * m / denom.
    Python floats and float64 NumPy round element-wise ops identically, so this is exact."""
    for beta1 in (0.9, 0.3):  # lerp weight 0.1 (< 0.5) and 0.7 (>= 0.5)
        n = len(P0)
        p, m, v = list(P0), [0.0] * n, [0.0] * n
        for t, (g, lr) in enumerate(zip(GRADS, LRS), start=1):
            for i in range(n):
                w = 1.0 - beta1
                m[i] = m[i] + w * (g[i] - m[i]) if w < 0.5 else g[i] - (g[i] - m[i]) * (1.0 - w)
                v[i] = v[i] * 0.999 + ((1.0 - 0.999) * g[i]) * g[i]
                denom = math.sqrt(v[i]) / (1.0 - 0.999 ** t) ** 0.5 + 1e-8
                p[i] = p[i] - ((lr / (1.0 - beta1 ** t)) * m[i]) / denom
        assert run_single(Adam, betas=(beta1, 0.999)).tolist() == p
