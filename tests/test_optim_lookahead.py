"""Lookahead: the slow weights by hand, exact resume through the state dict, and the flag."""
import numpy as np
import pytest

from distnet import nn
from distnet.optim import SGD, Lookahead, OptimizerError

from conftest import run_train


def one_unit():
    model = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    model.flat_params[...] = 1.0
    return model


def test_slow_weights_by_hand():
    """SGD lr 0.1, gradient 1, every 2 steps, T = 4, d(t) = 0.5 * t / T (power 1).
    Fast: 1 -> 0.9 -> 0.8; t = 2, d = 0.25: slow = 0.25*1 + 0.75*0.8 = 0.85, fast = 0.85;
    -> 0.75 -> 0.65; t = 4, d = 0.5: slow = 0.5*0.85 + 0.5*0.65 = 0.75, and the run ends on it."""
    model = one_unit()
    opt = Lookahead(SGD(model, lr=0.1), model, total_steps=4, every=2, decay=0.5, power=1)
    seen = []
    for _ in range(4):
        model.flat_grads[...] = 1.0
        opt.step()
        seen.append(float(model.flat_params[0]))
    np.testing.assert_allclose(seen, [0.9, 0.85, 0.75, 0.75], rtol=1e-6)
    np.testing.assert_allclose(opt.params, 0.75, rtol=1e-6)
    assert opt.step_count == 4


def test_buffers_are_averaged_alike_and_the_start_is_the_first_step():
    """The slow copy starts from the weights of the first step, not those at construction
    (the trainer broadcasts and sets data-dependent layers in between)."""
    model = one_unit()
    opt = Lookahead(SGD(model, lr=0.0), model, total_steps=2, every=2, decay=1.0, power=0)
    model.flat_params[...] = 3.0  # after construction, before the first step
    model.flat_buffers[...] = [2.0, 4.0]
    model.flat_grads[...] = 0.0
    opt.step()
    model.flat_buffers[...] = [6.0, 8.0]
    opt.step()  # d = 1: everything goes back to the slow copy taken at the first step
    np.testing.assert_array_equal(model.flat_params, 3.0)
    np.testing.assert_array_equal(model.flat_buffers, [2.0, 4.0])


def test_state_dict_resumes_bit_for_bit():
    rng = np.random.default_rng(3)
    grads = rng.standard_normal((9, 4)).astype(np.float32)

    def run(steps, state=None):
        model = one_unit()
        opt = Lookahead(SGD(model, lr=0.05, momentum=0.9), model, total_steps=9, every=3)
        if state is not None:
            model.flat_params[...] = state["params"]
            opt.load_state_dict(state["opt"])
        for g in grads[opt.step_count:steps]:
            model.flat_grads[...] = g
            opt.step()
        return model, opt

    straight, _ = run(9)
    half, opt = run(4)
    state = {"params": half.flat_params.copy(), "opt": opt.state_dict()}
    resumed, _ = run(9, state)
    np.testing.assert_array_equal(resumed.flat_params, straight.flat_params)
    with pytest.raises(OptimizerError, match="lookahead"):
        opt.load_state_dict(SGD(one_unit(), lr=0.1).state_dict())


def test_bad_settings_and_the_flag():
    with pytest.raises(OptimizerError):
        Lookahead(SGD(one_unit(), lr=0.1), one_unit(), total_steps=0)
    r = run_train("--dataset", "synthetic", "--no-progress", "--lookahead", "--ema", "0.9")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "choose one" in r.stderr.strip().splitlines()[-1], r.stderr
