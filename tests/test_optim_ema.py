"""The weight average (optim/ema.py) against hand values, its state in checkpoints, and
--ema through the command line."""
import json

import numpy as np
import pytest

from conftest import run_train
from distnet.nn import BatchNorm1d, Linear, Sequential
from distnet.optim import SGD, WeightEMA, evaluation_weights
from distnet.optim.optimizers import OptimizerError


def linear():
    return Sequential(Linear(1, 1, bias=False, rng=np.random.default_rng(0)))


def run(ema, model, steps):
    for _ in range(steps):
        model.flat_grads[...] = 1.0
        ema.step()


def test_average_by_hand_without_warmup():
    """SGD lr 1, grad 1, w0 = 10: w = 9, 8, 7; decay 0.5: avg 9, 8.5, 7.75."""
    model = linear()
    model.flat_params[...] = 10.0
    ema = WeightEMA(SGD(model, lr=1.0), model, decay=0.5, warmup=False)
    seen = []
    for _ in range(3):
        run(ema, model, 1)
        seen.append(float(ema.params[0]))
    assert seen == [9.0, 8.5, 7.75]
    assert model.flat_params[0] == 7.0 and ema.step_count == 3 and ema.updates == 3


def test_average_by_hand_with_warmup():
    """decay 0.999 capped by (1 + t) / (10 + t): t = 2 gives 0.25, so 0.25 * 9 + 0.75 * 8 = 8.25;
    t = 3 gives 4/13: 4/13 * 8.25 + 9/13 * 7 = 96/13."""
    model = linear()
    model.flat_params[...] = 10.0
    ema = WeightEMA(SGD(model, lr=1.0), model, decay=0.999)
    run(ema, model, 2)
    assert ema.params[0] == pytest.approx(8.25)
    run(ema, model, 1)
    assert ema.params[0] == pytest.approx(96 / 13, rel=1e-6)


def test_batchnorm_statistics_are_averaged_too():
    rng = np.random.default_rng(1)
    model = Sequential(Linear(3, 2, rng=rng), BatchNorm1d(2))
    ema = WeightEMA(SGD(model, lr=0.1), model, decay=0.5, warmup=False)
    history = []
    for _ in range(3):
        model.zero_grad()
        out = model(rng.standard_normal((8, 3)).astype(np.float32))
        model.backward(np.ones_like(out))
        ema.step()
        history.append(model.flat_buffers.copy())
    want = history[0]
    for b in history[1:]:
        want = 0.5 * want + 0.5 * b
    np.testing.assert_allclose(ema.buffers, want, rtol=1e-6)
    assert not np.allclose(history[0], history[-1])


def test_applied_swaps_in_and_back_even_on_error():
    model = linear()
    ema = WeightEMA(SGD(model, lr=1.0), model, decay=0.5, warmup=False)
    run(ema, model, 3)
    raw = model.flat_params.copy()
    with evaluation_weights(ema):
        np.testing.assert_array_equal(model.flat_params, ema.params)
    np.testing.assert_array_equal(model.flat_params, raw)
    with pytest.raises(RuntimeError):
        with ema.applied():
            raise RuntimeError("evaluation failed")
    np.testing.assert_array_equal(model.flat_params, raw)
    plain = SGD(model, lr=1.0)
    with evaluation_weights(plain):  # no average: nothing changes
        np.testing.assert_array_equal(model.flat_params, raw)


def test_state_dict_resumes_exactly():
    a_model, b_model = linear(), linear()
    a = WeightEMA(SGD(a_model, lr=0.1, momentum=0.9), a_model, decay=0.9)
    run(a, a_model, 3)
    state = a.state_dict()
    assert {"ema_params", "ema_buffers", "ema_updates", "momentum_buffer"} <= set(state)
    b_model.flat_params[...] = a_model.flat_params
    b = WeightEMA(SGD(b_model, lr=0.1, momentum=0.9), b_model, decay=0.9)
    b.load_state_dict({k: np.asarray(v) for k, v in state.items()})  # as np.load gives them
    run(a, a_model, 2)
    run(b, b_model, 2)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a_model.flat_params, b_model.flat_params)
    with pytest.raises(OptimizerError, match="--ema"):
        b.load_state_dict(SGD(linear(), lr=0.1).state_dict())
    with pytest.raises(OptimizerError):
        WeightEMA(SGD(linear(), lr=0.1), linear(), decay=1.0)


BASE = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "32", "--no-progress",
        "--optimizer", "momentum", "--lr", "0.05", "--eval-every", "0"]


def _run(tmp_path, name, *args):
    ck, metrics = tmp_path / name, tmp_path / f"{name}.jsonl"
    r = run_train(*BASE, "--checkpoint-dir", ck, "--metrics", metrics, *args)
    assert r.returncode == 0, r.stderr
    with np.load(ck / "latest.npz", allow_pickle=False) as z:
        params = z["params"].copy()
    final = [json.loads(x) for x in metrics.read_text().splitlines() if '"eval"' in x][-1]
    return params, final


def test_ema_flag_changes_evaluation_only_and_resumes_exactly(tmp_path):
    plain, plain_eval = _run(tmp_path, "plain", "--max-steps", "8")
    averaged, ema_eval = _run(tmp_path, "ema", "--max-steps", "8", "--ema", "0.9")
    np.testing.assert_array_equal(plain, averaged)  # training uses the raw weights
    assert ema_eval["loss"] != plain_eval["loss"]
    _run(tmp_path, "half", "--max-steps", "4", "--ema", "0.9")
    resumed, resumed_eval = _run(tmp_path, "half", "--max-steps", "8", "--ema", "0.9", "--resume")
    np.testing.assert_array_equal(resumed, averaged)
    assert resumed_eval["loss"] == ema_eval["loss"] and resumed_eval["accuracy"] == ema_eval["accuracy"]
    r = run_train(*BASE, "--max-steps", "8", "--checkpoint-dir", tmp_path / "half", "--resume")
    assert r.returncode == 2 and "optimizer state does not fit" in r.stderr, r.stderr
