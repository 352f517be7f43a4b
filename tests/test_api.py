"""The public Python API: distnet.fit / evaluate / predict, ArrayDataset, build_model specs,
distributed.init / broadcast_parameters / DistributedOptimizer, on one process."""
import json
import textwrap

import numpy as np
import pytest

import distnet
from distnet import nn, optim
from distnet.data import ArrayDataset, load_npz
from distnet.distributed import DistributedOptimizer, SingleProcessCommunicator, broadcast_parameters, init
from distnet.errors import UserError


def mlp(rng, d_in=4, hidden=16, d_out=3, dtype=np.float32):
    return nn.Sequential(nn.Linear(d_in, hidden, rng=rng, dtype=dtype), nn.ReLU(),
                         nn.Linear(hidden, d_out, rng=rng, dtype=dtype))


def blobs(n=240, seed=0):
    """Three separable clusters in 4-D: a classification task a small MLP learns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=np.float32)
    return (centres[y] + 0.3 * rng.standard_normal((n, 4))).astype(np.float32), y


# --- errors ------------------------------------------------------------------------------
def test_user_error_is_a_value_error():
    assert issubclass(UserError, ValueError)
    with pytest.raises(ValueError, match="inputs hold 3 samples but targets hold 2"):
        ArrayDataset(np.zeros((3, 2)), np.zeros(2, np.int64))


# --- ArrayDataset ------------------------------------------------------------------------
def test_array_dataset_classification_and_normalisation():
    x = np.arange(24, dtype=np.uint8).reshape(3, 2, 2, 2)
    ds = ArrayDataset(x, np.array([0, 2, 1]), mean=[1.0, 5.0], std=[2.0, 4.0])
    assert ds.task == "classification" and ds.classes == ("0", "1", "2") and ds.num_outputs == 3
    assert ds.input_shape == (2, 2, 2) and len(ds) == 3
    xb, yb = ds.batch([2, 0])
    assert xb.dtype == np.float32 and yb.tolist() == [1, 0]
    expected = (x[[2, 0]].astype(np.float64) - np.array([1.0, 5.0]).reshape(1, 2, 1, 1)) / \
        np.array([2.0, 4.0]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(xb, expected, rtol=1e-6)
    np.testing.assert_allclose(ds.background, [-0.5, -1.25])
    assert ds.batch([])[0].shape == (0, 2, 2, 2)


def test_array_dataset_subset_keeps_classes_and_normalisation():
    ds = ArrayDataset(np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6) % 3, mean=1.0, std=2.0,
                      classes=["a", "b", "c"])
    part = ds.subset([4, 1])
    assert len(part) == 2 and part.classes == ("a", "b", "c") and part.mean == (1.0,)
    np.testing.assert_array_equal(part.batch([0, 1])[0], ds.batch([4, 1])[0])
    np.testing.assert_array_equal(part.batch([0, 1])[1], [1, 1])


def test_array_dataset_regression_keeps_float_dtype_and_makes_targets_2d():
    x = np.linspace(0, 1, 5)  # (N,): N samples of one feature
    ds = ArrayDataset(x, x ** 2)
    assert ds.task == "regression" and ds.classes is None
    assert ds.input_shape == (1,) and ds.num_outputs == 1 and ds.targets.shape == (5, 1)
    xb, yb = ds.batch([4])
    assert xb.dtype == np.float64 and xb[0, 0] == 1.0 and yb.shape == (1, 1)


@pytest.mark.parametrize("inputs,targets,kwargs,needle", [
    (np.array([["a", "b"]]), np.array([0]), {}, "inputs is not numeric (dtype <U1)"),
    (np.zeros((2, 2)), np.array(["x", "y"]), {}, "targets is not numeric"),
    (np.zeros((2, 2), dtype=object), np.array([0, 1]), {}, "inputs is not numeric"),
    (np.zeros((4, 2)), np.array([0, 1, 2]), {}, "inputs hold 4 samples but targets hold 3"),
    (np.zeros((2, 2)), np.array([0, 5]), {"classes": ["a", "b"]}, "label 5 is >= the number of classes (2)"),
    (np.zeros((2, 2)), np.array([0, -1]), {}, "class label -1 is negative"),
    (np.zeros((2, 2)), np.array([[0, 1], [1, 0]]), {}, "must have shape (N,)"),
    (np.full((2, 2), np.nan), np.array([0, 1]), {}, "NaN"),
    (np.zeros((2, 3)), np.array([0, 1]), {"std": [1.0, 0.0, 1.0]}, "std must be positive"),
    (np.zeros((2, 3)), np.array([0, 1]), {"mean": [1.0, 2.0]}, "one per channel (3)"),
])
def test_array_dataset_refuses_bad_arrays(inputs, targets, kwargs, needle):
    with pytest.raises(ValueError) as info:
        ArrayDataset(inputs, targets, name="mine", **kwargs)
    assert str(info.value).startswith("mine: ") and needle in str(info.value)


# --- fit / evaluate / predict ----------------------------------------------------------
def test_fit_classification_history_evaluate_predict(tmp_path):
    x, y = blobs()
    train, test = ArrayDataset(x[:192], y[:192]), ArrayDataset(x[192:], y[192:])
    model = mlp(np.random.default_rng(0))
    metrics = tmp_path / "m.jsonl"
    history = distnet.fit(model, train, loss=nn.CrossEntropyLoss(), optimizer=optim.Adam(model, lr=0.01),
                          epochs=4, batch_size=32, test=test, metrics=metrics, log_every=3, verbose=False)
    assert history.step == 4 * 6
    evals = [r for r in history.records if r["event"] == "eval"]
    assert [e["step"] for e in evals] == [6, 12, 18, 24]
    assert history.final["accuracy"] > 0.95 and history.final["samples"] == 48
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == history.records
    # evaluate: the same figures, computed by hand from predict's outputs
    result = distnet.evaluate(model, test, loss="cross-entropy", batch_size=7)
    out = distnet.predict(model, test.inputs, batch_size=5)
    assert out.shape == (48, 3)
    shifted = out - out.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert result["loss"] == pytest.approx(-logp[np.arange(48), test.targets].mean(), rel=1e-5)
    assert result["accuracy"] == np.mean(out.argmax(axis=1) == test.targets) == history.final["accuracy"]
    assert model.training  # left as it was


def test_predict_is_in_eval_mode_and_in_input_order():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(4, 8, rng=rng), nn.Dropout(0.5, rng=rng), nn.Linear(8, 2, rng=rng))
    x = rng.standard_normal((11, 4)).astype(np.float32)
    out = distnet.predict(model, x, batch_size=3)
    model.eval()
    np.testing.assert_array_equal(out, model(x))  # no dropout: deterministic, same order
    model.train()
    np.testing.assert_array_equal(distnet.predict(model, ArrayDataset(x, np.zeros(11, np.int64))), out)


def test_fit_regression_by_mse():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (1024, 1)).astype(np.float32)
    y = np.sin(x) + 0.3 * x ** 2
    train, test = ArrayDataset(x[:768], y[:768]), ArrayDataset(x[768:], y[768:])
    model = nn.Sequential(nn.Linear(1, 64, rng=rng), nn.ReLU(), nn.Linear(64, 1, rng=rng))
    history = distnet.fit(model, train, loss=nn.MSELoss(), optimizer=optim.Adam(model, lr=0.01),
                          epochs=30, batch_size=64, test=test, eval_every=0, verbose=False)
    assert set(history.final) == {"loss", "samples", "step"}
    assert history.final["loss"] < 0.01
    train_lines = [r for r in history.records if r["event"] == "train"]
    assert "accuracy" not in train_lines[-1] and train_lines[-1]["loss"] < train_lines[0]["loss"]
    pred = distnet.predict(model, test.inputs)
    assert np.mean((pred - test.targets) ** 2) == pytest.approx(history.final["loss"], rel=1e-5)


def test_fit_matches_a_hand_written_loop():
    """fit's step is the textbook one: mean loss gradient of the global batch, SGD."""
    x, y = blobs(64)
    a, b = mlp(np.random.default_rng(3)), mlp(np.random.default_rng(3))
    distnet.fit(a, ArrayDataset(x, y), loss="cross-entropy", optimizer=optim.SGD(a, lr=0.1),
                batch_size=16, epochs=1, verbose=False)
    crit, opt = nn.CrossEntropyLoss(), optim.SGD(b, lr=0.1)
    order = np.random.default_rng([0, 0]).permutation(64)  # the loader's order for (seed 0, epoch 0)
    for i in range(4):
        idx = order[16 * i:16 * (i + 1)]
        b.zero_grad()
        crit(b(x[idx]), y[idx])
        b.backward(crit.backward())
        opt.step()
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("targets,loss,needle", [
    (np.zeros((8, 3), np.float32), "cross-entropy", "float targets (regression) do not fit the cross-entropy"),
    (np.array([0, 1, 2, 3, 4, 5, 6, 7]), "cross-entropy", "label 7 is >= the number of classes the model predicts (3)"),
    (np.zeros(8, np.int64), "mse", "integer targets are class labels"),
    (np.zeros((8, 2), np.float32), "mse", "targets have shape (2,) per sample but the model outputs (3,)"),
])
def test_targets_that_do_not_fit_the_loss_raise_value_error(targets, loss, needle):
    model = mlp(np.random.default_rng(0))
    data = ArrayDataset(np.zeros((8, 4), np.float32), targets, name="my data")
    with pytest.raises(ValueError) as info:
        distnet.fit(model, data, loss=loss, optimizer=optim.SGD(model, lr=0.1), batch_size=4, verbose=False)
    assert str(info.value).startswith("my data: ") and needle in str(info.value)
    with pytest.raises(ValueError, match="my data: "):
        distnet.evaluate(model, data, loss=loss)


def test_fit_refuses_inputs_the_model_cannot_take():
    model = mlp(np.random.default_rng(0), d_in=5)
    with pytest.raises(ValueError, match=r"the model does not take inputs of shape \(4,\)"):
        distnet.fit(model, ArrayDataset(np.zeros((8, 4), np.float32), np.zeros(8, np.int64)),
                    loss="cross-entropy", optimizer=optim.SGD(model, lr=0.1), verbose=False)


@pytest.mark.parametrize("kwargs,needle", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"checkpoint_every": 5}, "checkpoint_every needs checkpoint_dir"),
    ({"resume": True}, "resume=True needs checkpoint_dir"),
    ({"augment": 2}, "augment shifts images"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
])
def test_fit_refuses_bad_arguments(kwargs, needle):
    x, y = blobs(16)
    model = mlp(np.random.default_rng(0))
    args = {"loss": "cross-entropy", "optimizer": optim.SGD(model, lr=0.1), "verbose": False, **kwargs}
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        distnet.fit(model, ArrayDataset(x, y), **args)


def test_resume_through_the_api_is_exact_and_refuses_another_model(tmp_path):
    x, y = blobs(96)
    data = ArrayDataset(x, y)

    def run(ckdir, max_steps, resume=False, hidden=16):
        model = mlp(np.random.default_rng(5), hidden=hidden)
        distnet.fit(model, data, loss="cross-entropy", optimizer=optim.Adam(model, lr=0.01), epochs=3,
                    batch_size=16, max_steps=max_steps, checkpoint_dir=ckdir, resume=resume, verbose=False)
        return model.flat_params.copy()

    straight = run(tmp_path / "a", 10)
    run(tmp_path / "b", 4)
    np.testing.assert_array_equal(straight, run(tmp_path / "b", 10, resume=True))
    with pytest.raises(ValueError, match="parameters"):
        run(tmp_path / "b", 12, resume=True, hidden=17)
    other = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))  # same size, other layers
    with pytest.raises(ValueError, match="another architecture"):
        distnet.fit(other, data, loss="cross-entropy", optimizer=optim.Adam(other, lr=0.01), epochs=3,
                    batch_size=16, checkpoint_dir=tmp_path / "b", resume=True, verbose=False)


def test_checkpoint_records_the_model_origin_and_pipeline(tmp_path):
    from distnet import checkpoint as ckpt_io
    x = np.random.default_rng(0).integers(0, 255, (40, 1, 28, 28)).astype(np.uint8)
    y = np.arange(40) % 10
    data = ArrayDataset(x, y, mean=[0.5 * 255], std=[0.25 * 255], classes=list("abcdefghij"))
    model = nn.build_model("lenet5", (1, 28, 28), 10, seed=0)
    distnet.fit(model, data, loss="cross-entropy", optimizer=optim.SGD(model, lr=0.01), batch_size=20,
                checkpoint_dir=tmp_path, verbose=False, dataset_name="mine")
    meta = ckpt_io.load(tmp_path / "latest.npz").meta
    assert meta == {"model": {"spec": "lenet5", "args": {}}, "input_shape": [1, 28, 28], "num_outputs": 10,
                    "classes": list("abcdefghij"), "mean": [127.5], "std": [63.75], "task": "classification",
                    "loss": "cross-entropy", "dataset": "mine", "distnet_version": distnet.__version__,
                    "inputs": "as given", "input_range": [float(x.min()), float(x.max())]}
    rebuilt = nn.build_model(meta["model"]["spec"], tuple(meta["input_shape"]), meta["num_outputs"], seed=0)
    assert rebuilt.flat_params.size == model.flat_params.size


# --- the distributed pieces on one process ----------------------------------------------
def test_init_broadcast_and_distributed_optimizer_on_one_process():
    comm = init()
    assert comm is init() and (comm.rank, comm.size) == (0, 1)
    model = mlp(np.random.default_rng(0))
    before = model.flat_params.copy()
    broadcast_parameters(model, comm)
    np.testing.assert_array_equal(model.flat_params, before)
    opt = DistributedOptimizer(optim.SGD(model, lr=0.5), model, comm)
    model.flat_grads[...] = 1.0
    opt.lr = 0.25
    opt.step()
    np.testing.assert_allclose(model.flat_params, before - 0.25)
    assert opt.step_count == 1 and opt.state_dict()["lr"] == 0.25
    with pytest.raises(ValueError):
        DistributedOptimizer(optim.SGD(model, lr=0.5), model, comm, op="max")


class _TwoRanks(SingleProcessCommunicator):
    """A stand-in for two ranks whose other rank holds the same gradients: sums double."""

    size = 2

    def allreduce(self, buf, op="sum"):
        buf *= 2
        return buf


def test_distributed_optimizer_average_and_sum():
    for op, factor in (("average", 1.0), ("sum", 2.0)):
        model = mlp(np.random.default_rng(0))
        start = model.flat_params.copy()
        opt = DistributedOptimizer(optim.SGD(model, lr=1.0), model, _TwoRanks(), op=op)
        model.flat_grads[...] = 0.5
        opt.step()
        np.testing.assert_allclose(model.flat_params, start - 0.5 * factor)


# --- model specs -------------------------------------------------------------------------
BUILDER = textwrap.dedent("""
    import numpy as np
    from distnet import nn

    def build(input_shape, num_classes, seed=0):
        rng = np.random.default_rng(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 16, rng=rng), nn.ReLU(),
                             nn.Linear(16, num_classes, rng=rng))

    def broken(input_shape, num_classes):
        raise RuntimeError("no GPU found")

    def not_a_model(input_shape, num_classes):
        return [1, 2, 3]
""")


@pytest.fixture
def models_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(BUILDER)
    return path


def test_build_model_from_a_file_and_a_module(models_file, monkeypatch):
    model = nn.build_model(f"{models_file}:build", (1, 4, 4), 3, seed=7)
    assert model.origin == {"spec": f"{models_file}:build", "args": {}}
    assert model(np.zeros((2, 1, 4, 4), np.float32)).shape == (2, 3)
    again = nn.build_model(f"{models_file}:build", (1, 4, 4), 3, seed=7)
    np.testing.assert_array_equal(model.flat_params, again.flat_params)  # the seed reached it
    monkeypatch.syspath_prepend(str(models_file.parent))
    by_module = nn.build_model("my_models:build", (1, 4, 4), 3, seed=7)
    np.testing.assert_array_equal(model.flat_params, by_module.flat_params)


@pytest.mark.parametrize("spec,needle", [
    ("{dir}/nope.py:build", "nope.py: model file not found"),
    ("{file}:buidl", "my_models.py: no function 'buidl' (functions there: broken, build, not_a_model)"),
    ("{file}:broken", "the model function raised RuntimeError: no GPU found"),
    ("{file}:not_a_model", "the model function returned list, not a model"),
    ("no_such_module_xyz:build", "no_such_module_xyz: cannot import model module"),
    ("resnet", "unknown model 'resnet'"),
])
def test_bad_model_specs_raise_value_error(models_file, spec, needle):
    with pytest.raises(ValueError) as info:
        nn.build_model(spec.format(dir=models_file.parent, file=models_file), (1, 4, 4), 3)
    assert needle in str(info.value)


# --- .npz --------------------------------------------------------------------------------
def test_load_npz_normalises_by_training_statistics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (30, 8, 8)).astype(np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x[:20], y_train=np.arange(20) % 4, x_test=x[20:], y_test=np.arange(10) % 4)
    train, test = load_npz(path)
    assert train.input_shape == (1, 8, 8) and train.classes == ("0", "1", "2", "3")
    xb, _ = train.batch(np.arange(20))
    assert abs(xb.mean()) < 1e-5 and xb.std() == pytest.approx(1.0, rel=1e-5)
    assert test.mean == train.mean and test.std == train.std


def test_the_runnable_modules_stay_callable_as_the_api_functions():
    """Contract C: importing the submodule distnet.evaluate (the command) rebinds the package
    attribute; the module still works as the function."""
    import importlib

    from distnet.evaluation import evaluate as api_evaluate, predict as api_predict

    x, y = blobs(30)
    data = ArrayDataset(x, y)
    model = mlp(np.random.default_rng(0))
    expected = api_evaluate(model, data, loss="cross-entropy")
    evaluate_module = importlib.import_module("distnet.evaluate")
    predict_module = importlib.import_module("distnet.predict")
    assert distnet.evaluate is evaluate_module
    assert distnet.evaluate(model, data, loss="cross-entropy") == expected
    np.testing.assert_array_equal(distnet.predict(model, x), predict_module(model, x))
    np.testing.assert_array_equal(distnet.predict(model, x), api_predict(model, x))
