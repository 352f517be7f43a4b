"""BatchNorm1d/2d: finite differences, PyTorch's formulas computed by hand, and global-batch
statistics through an injected reducer (W simulated ranks in threads == one rank)."""
import threading

import numpy as np
import pytest

from distnet import nn

from test_nn_gradients import check_module

RNG = np.random.default_rng(77)
EPS, MOM = 1e-5, 0.1


def make(kind, c, **kw):
    return (nn.BatchNorm1d if kind == "1d" else nn.BatchNorm2d)(c, dtype=np.float64, **kw)


def batch(kind, n, c, rng=RNG, loc=0.0):
    shape = {"1d": (n, c), "1d-ncl": (n, c, 5), "2d": (n, c, 4, 3)}[kind]
    return loc + rng.standard_normal(shape) * rng.uniform(0.5, 2.0, size=(1, c) + (1,) * (len(shape) - 2))


def axes(x):
    return (0,) if x.ndim == 2 else (0, 2) if x.ndim == 3 else (0, 2, 3)


def per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def reference_forward(x, w, b):
    """PyTorch's training forward, two-pass statistics: returns y, xhat, mean, biased var."""
    mean = x.mean(axis=axes(x))
    var = ((x - per_channel(mean, x)) ** 2).mean(axis=axes(x))
    xhat = (x - per_channel(mean, x)) / per_channel(np.sqrt(var + EPS), x)
    return per_channel(w, x) * xhat + per_channel(b, x), xhat, mean, var


def reference_backward(dy, xhat, var, w):
    """PyTorch's batch-norm backward (native_batch_norm_backward, training)."""
    m = dy.size // dy.shape[1]
    ax = axes(dy)
    dxhat = dy * per_channel(w, dy)
    dx = (per_channel(1.0 / np.sqrt(var + EPS), dy) / m
          * (m * dxhat - dxhat.sum(axis=ax, keepdims=True) - xhat * (dxhat * xhat).sum(axis=ax, keepdims=True)))
    return dx, (dy * xhat).sum(axis=ax), dy.sum(axis=ax)


def kind_of(k):
    return "1d" if k.startswith("1d") else "2d"


@pytest.mark.parametrize("kind", ["1d", "1d-ncl", "2d"])
def test_finite_differences_training(kind):
    bn = make(kind_of(kind), 3)
    bn.weight.data[:] = RNG.uniform(0.5, 1.5, 3)
    bn.bias.data[:] = RNG.standard_normal(3)
    check_module(bn, batch(kind, 6, 3), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_finite_differences_eval(kind):
    bn = make(kind, 3)
    bn.weight.data[:] = RNG.uniform(0.5, 1.5, 3)
    bn.bias.data[:] = RNG.standard_normal(3)
    bn.running_mean[:] = RNG.standard_normal(3)
    bn.running_var[:] = RNG.uniform(0.5, 2.0, 3)
    bn.eval()
    check_module(bn, batch(kind, 5, 3))


@pytest.mark.parametrize("kind", ["1d", "1d-ncl", "2d"])
def test_matches_pytorch_formulas_over_several_steps_then_eval(kind):
    c = 4
    bn = make(kind_of(kind), c, eps=EPS, momentum=MOM)
    w, b = RNG.uniform(0.5, 1.5, c), RNG.standard_normal(c)
    bn.weight.data[:], bn.bias.data[:] = w, b
    running_mean, running_var = np.zeros(c), np.ones(c)
    for step, n in enumerate([8, 5, 11, 2]):
        x = batch(kind, n, c, loc=3.0 * step)  # moving statistics, a large mean included
        dy = RNG.standard_normal(x.shape)
        y_ref, xhat, mean, var = reference_forward(x, w, b)
        dx_ref, dw_ref, db_ref = reference_backward(dy, xhat, var, w)
        m = x.size // c
        running_mean = (1 - MOM) * running_mean + MOM * mean
        running_var = (1 - MOM) * running_var + MOM * var * m / (m - 1)
        bn.zero_grad()
        np.testing.assert_allclose(bn(x), y_ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(bn.backward(dy), dx_ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(bn.weight.grad, dw_ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(bn.bias.grad, db_ref, rtol=0, atol=1e-9)
        np.testing.assert_allclose(bn.running_mean, running_mean, rtol=0, atol=1e-9)
        np.testing.assert_allclose(bn.running_var, running_var, rtol=0, atol=1e-9)
    bn.eval()
    x = batch(kind, 3, c)
    y_eval = per_channel(w, x) * (x - per_channel(running_mean, x)) / per_channel(np.sqrt(running_var + EPS), x)
    y_eval += per_channel(b, x)
    frozen = np.r_[bn.running_mean, bn.running_var]
    np.testing.assert_allclose(bn(x), y_eval, rtol=0, atol=1e-9)
    dy = RNG.standard_normal(x.shape)
    bn.zero_grad()
    dx = bn.backward(dy)  # eval: a fixed per-channel affine map
    np.testing.assert_allclose(dx, dy * per_channel(w / np.sqrt(running_var + EPS), x), rtol=0, atol=1e-9)
    xhat = (x - per_channel(running_mean, x)) / per_channel(np.sqrt(running_var + EPS), x)
    np.testing.assert_allclose(bn.weight.grad, (dy * xhat).sum(axis=axes(x)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(bn.bias.grad, dy.sum(axis=axes(x)), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(np.r_[bn.running_mean, bn.running_var], frozen)  # eval leaves them


def test_defaults_are_pytorchs():
    bn = nn.BatchNorm2d(3)
    assert (bn.eps, bn.momentum) == (1e-5, 0.1)
    assert bn.weight.data.tolist() == [1, 1, 1] and bn.bias.data.tolist() == [0, 0, 0]
    assert bn.running_mean.tolist() == [0, 0, 0] and bn.running_var.tolist() == [1, 1, 1]
    assert bn.weight.data.dtype == bn.running_var.dtype == np.float32
    y = bn(np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32))
    assert y.dtype == np.float32


def test_one_value_per_channel_is_refused_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(np.ones((1, 3), dtype=np.float32))


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        nn.BatchNorm2d(3)(np.ones((2, 4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        nn.BatchNorm1d(3)(np.ones((2, 4), dtype=np.float32))


# ---- global-batch statistics across simulated ranks -----------------------------------------


class ThreadAllreduce:
    """An in-process SUM allreduce among W threads: each rank's reducer posts its partial
    array, waits for all, and gets the sum (summed in rank order, like a fixed reduction)."""

    def __init__(self, world):
        self.parts = [None] * world
        self.calls = [0] * world
        self.barrier = threading.Barrier(world, timeout=30)

    def reducer(self, rank):
        def reduce(partial):
            self.calls[rank] += 1
            self.parts[rank] = np.array(partial, dtype=np.float64)
            self.barrier.wait()
            total = np.sum(self.parts, axis=0)
            self.barrier.wait()  # nobody overwrites parts before everyone has summed
            return total
        return reduce


def bn_net(seed):
    rng = np.random.default_rng(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), nn.BatchNorm2d(3, dtype=np.float64),
        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 5, rng=rng, dtype=np.float64),
        nn.BatchNorm1d(5, dtype=np.float64), nn.Tanh())
    net.flat_params[:] += rng.standard_normal(net.flat_params.size) * 0.1  # non-trivial affine
    return net


def run_ranks(cuts, x, dy, steps=3):
    """Train-mode forward/backward of each rank's slice [cuts[r], cuts[r+1]) for `steps`
    steps; returns per-rank (outputs, input grads, flat grads, flat buffers)."""
    world = len(cuts) - 1
    comm = ThreadAllreduce(world)
    results, errors = [None] * world, []

    def rank_main(r):
        try:
            net = bn_net(0)
            nn.set_stat_reducer(net, comm.reducer(r))
            lo, hi = cuts[r], cuts[r + 1]
            outs = []
            for step in range(steps):
                net.zero_grad()
                y = net(x[step, lo:hi])
                dx = net.backward(dy[step, lo:hi])
                outs.append((y, dx))
            results[r] = (outs, net.flat_grads.copy(), net.flat_buffers.copy())
        except Exception as exc:  # surface thread failures in the test
            errors.append(exc)
            comm.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert comm.calls == [4 * steps] * world  # 2 BN layers x (forward + backward)
    return results


@pytest.mark.parametrize("cuts", [[0, 5, 10], [0, 3, 5, 8, 10], [0, 4, 4, 10, 10]],
                         ids=["W=2", "W=4", "W=4 with empty slices"])
def test_ranks_with_slices_compute_what_one_rank_computes_on_the_whole_batch(cuts):
    steps = 3
    x = np.random.default_rng(5).standard_normal((steps, 10, 2, 4, 4)) + 1.0
    dy = np.random.default_rng(6).standard_normal((steps, 10, 5))
    (single_outs, single_grads, single_bufs), = run_ranks([0, 10], x, dy, steps)
    ranks = run_ranks(cuts, x, dy, steps)
    for step in range(steps):
        y = np.concatenate([outs[step][0] for outs, _, _ in ranks])
        dx = np.concatenate([outs[step][1] for outs, _, _ in ranks])
        np.testing.assert_allclose(y, single_outs[step][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(dx, single_outs[step][1], rtol=0, atol=1e-12)
    # parameter gradients are local partial sums: their SUM over ranks is the whole batch's
    np.testing.assert_allclose(sum(g for _, g, _ in ranks), single_grads, rtol=0, atol=1e-12)
    for _, _, bufs in ranks:  # the running statistics (unbiased with the GLOBAL count) agree
        np.testing.assert_allclose(bufs, single_bufs, rtol=0, atol=1e-12)


def test_local_statistics_without_a_reducer_differ_from_global_ones():
    """The reducer is what makes the statistics global: without it a slice normalises by its
    own mean (so the comparison above is not vacuous)."""
    x = np.random.default_rng(5).standard_normal((10, 3, 2, 2)) + np.arange(10)[:, None, None, None]
    whole = nn.BatchNorm2d(3, dtype=np.float64)(x)
    half = nn.BatchNorm2d(3, dtype=np.float64)(x[:5])
    assert np.abs(whole[:5] - half).max() > 0.1


def test_set_stat_reducer_reaches_nested_modules_and_can_be_removed():
    net = nn.Sequential(nn.Residual(nn.Sequential(nn.BatchNorm2d(2))), nn.BatchNorm2d(2))
    seen = []
    nn.set_stat_reducer(net, lambda a: seen.append(a.size) or a)
    net(np.ones((2, 2, 2, 2), dtype=np.float32) * np.arange(2)[:, None, None, None])
    assert seen == [5, 5]
    nn.set_stat_reducer(net, None)
    assert all(getattr(m, "stat_reducer", None) is None for m in net.modules())


def test_a_reducer_returning_the_wrong_shape_is_an_error():
    bn = nn.BatchNorm1d(2)
    bn.stat_reducer = lambda a: a[:-1]
    with pytest.raises(ValueError, match="stat_reducer returned shape"):
        bn(np.ones((3, 2), dtype=np.float32))
