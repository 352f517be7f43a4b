"""End-to-end tests of ``python -m distnet.evaluate`` and self-describing checkpoints."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, mpirun, run_train

from distnet import checkpoint as ckpt_io
from distnet.data import synthetic
from distnet.meta import load_trained
from distnet.nn import build_model

ENV = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1")


def run_cli(module, *args, mpi=0, env=None, timeout=300):
    cmd = [sys.executable, "-m", module, *map(str, args)]
    if mpi:
        cmd = [mpirun(), "-n", str(mpi)] + cmd
    return subprocess.run(cmd, env=dict(ENV, **(env or {})), capture_output=True, text=True, timeout=timeout)


def assert_user_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distnet: error: "), r.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained 40 steps on the synthetic set, in a run folder."""
    run = tmp_path_factory.mktemp("evalrun") / "run"
    r = run_train("--dataset", "synthetic", "--model", "lenet5", "--batch-size", "64", "--max-steps", "40",
                  "--optimizer", "momentum", "--lr", "0.01", "--eval-every", "0", "--no-progress",
                  "--run-dir", run)
    assert r.returncode == 0, r.stderr
    return run


def test_checkpoint_meta_describes_the_model(trained):
    ckpt = ckpt_io.load(trained / "checkpoints" / "latest.npz")
    meta = ckpt.meta
    assert meta["model"] == {"spec": "lenet5", "args": {}}
    assert meta["input_shape"] == [1, 28, 28] and meta["num_outputs"] == 10
    assert meta["classes"] == [f"class{i}" for i in range(10)]
    assert meta["mean"] == [0.5] and meta["std"] == [0.23]
    assert meta["task"] == "classification" and meta["loss"] == "cross-entropy"
    assert meta["dataset"] == "synthetic" and meta["distnet_version"] == "0.1.0"
    model, meta2 = load_trained(trained / "checkpoints" / "latest.npz")
    assert meta2 == meta and not model.training
    np.testing.assert_array_equal(model.flat_params, ckpt.params)


def independent_confusion(checkpoint):
    """The confusion matrix computed here, from the model and the dataset directly."""
    model, _ = load_trained(checkpoint)
    test = synthetic("test")
    x, y = test.batch(np.arange(len(test)))
    pred = model(x).argmax(axis=1)
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (y, pred), 1)
    return confusion


def test_evaluate_json_is_exact(trained):
    ck = trained / "checkpoints" / "latest.npz"
    r = run_cli("distnet.evaluate", ck, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    confusion = independent_confusion(ck)
    assert result["confusion"] == confusion.tolist()
    assert result["samples"] == 256
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / 256, abs=0)
    per_class = [confusion[i, i] / confusion[i].sum() for i in range(10)]
    assert result["per_class_accuracy"] == pytest.approx(per_class)
    # the trainer's own evaluation at the last step said the same
    evals = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert result["accuracy"] == pytest.approx(evals[-1]["accuracy"], abs=0)
    assert result["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-5)


def test_evaluate_tta_flip_scores_the_mean_of_both_views(trained):
    ck = trained / "checkpoints" / "latest.npz"
    r = run_cli("distnet.evaluate", ck, "--json", "--tta-flip")
    assert r.returncode == 0, r.stderr
    model, _ = load_trained(ck)
    x, y = synthetic("test").batch(np.arange(256))
    pred = (model(x) + model(x[..., ::-1].copy())).argmax(axis=1)
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (y, pred), 1)
    result = json.loads(r.stdout)
    assert result["confusion"] == confusion.tolist()
    assert confusion.tolist() != independent_confusion(ck).tolist()  # the flip changed something


def test_evaluate_text(trained):
    r = run_cli("distnet.evaluate", trained / "checkpoints" / "latest.npz")
    assert r.returncode == 0, r.stderr
    confusion = independent_confusion(trained / "checkpoints" / "latest.npz")
    acc = np.trace(confusion) / confusion.sum()
    assert f"accuracy {acc * 100:.2f}%" in r.stdout
    assert "per-class accuracy:" in r.stdout and "confusion matrix (rows: true class" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("   ") and "class" in line
            and "%" not in line]
    assert [[int(v) for v in row[2:]] for row in rows] == confusion.tolist()


@pytest.mark.parametrize("ranks", [2, 3])
def test_evaluate_under_mpirun_equals_one_process(trained, ranks):
    ck = trained / "checkpoints" / "latest.npz"
    one = json.loads(run_cli("distnet.evaluate", ck, "--json", "--batch-size", "50").stdout)
    r = run_cli("distnet.evaluate", ck, "--json", "--batch-size", "50", mpi=ranks)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, "rank 0 alone prints"
    many = json.loads(lines[0])
    assert many["confusion"] == one["confusion"] and many["samples"] == one["samples"] == 256
    assert many["accuracy"] == one["accuracy"]
    assert many["loss"] == pytest.approx(one["loss"], rel=1e-6)


def test_evaluate_plot_draws_the_matrix(trained, tmp_path):
    out = tmp_path / "confusion.png"
    r = run_cli("distnet.evaluate", trained / "checkpoints" / "latest.npz", "--plot", out)
    assert r.returncode == 0, r.stderr
    from PIL import Image
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 400


def blocker(tmp_path, name):
    """A directory that makes ``import NAME`` fail, to run a command as if NAME were not installed."""
    d = tmp_path / f"no-{name}"
    (d / name).mkdir(parents=True)
    (d / name / "__init__.py").write_text(f"raise ImportError('{name} blocked for this test')\n")
    return {"PYTHONPATH": f"{d}{os.pathsep}{REPO}"}


def test_evaluate_plot_without_matplotlib_is_one_line(trained, tmp_path):
    out = tmp_path / "c.png"
    r = run_cli("distnet.evaluate", trained / "checkpoints" / "latest.npz", "--plot", out,
                env=blocker(tmp_path, "matplotlib"))
    assert_user_error(r, "matplotlib", "distnet[plot]", out)
    assert not out.exists()


def test_missing_and_corrupt_checkpoints(trained, tmp_path):
    assert_user_error(run_cli("distnet.evaluate", tmp_path / "nope.npz"), tmp_path / "nope.npz", "not found")
    bad = tmp_path / "bad.npz"
    data = (trained / "checkpoints" / "latest.npz").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    assert_user_error(run_cli("distnet.evaluate", bad), bad, "corrupt")


def write_checkpoint(path, model, meta, config=None):
    ckpt_io.save(ckpt_io.Checkpoint(params=model.flat_params.copy(), optimizer={}, step=1, epoch=0, position=1,
                                    seed=0, config=config or {}, meta=meta), path)


def cifar_meta():
    return {"model": {"spec": "lenet5", "args": {}}, "input_shape": [3, 32, 32], "num_outputs": 10,
            "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616], "task": "classification",
            "loss": "cross-entropy", "dataset": "cifar10", "distnet_version": "0.1.0"}


def test_cifar_checkpoint_on_mnist_data_is_refused(tmp_path):
    ck = tmp_path / "cifar.npz"
    write_checkpoint(ck, build_model("lenet5", (3, 32, 32), 10), cifar_meta())
    r = run_cli("distnet.evaluate", ck, "--dataset", "mnist")
    assert_user_error(r, ck, "3x32x32", "1x28x28")
    r = run_cli("distnet.evaluate", ck, "--dataset", "mnist", mpi=2)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("distnet: error:") == 1 and "3x32x32" in r.stderr


def test_checkpoint_of_another_model_is_refused(tmp_path):
    """The meta says cnn2 but the weights are LeNet-5's."""
    meta = dict(cifar_meta(), model={"spec": "cnn2", "args": {}}, input_shape=[1, 28, 28], mean=[0.5], std=[0.23],
                dataset="synthetic", classes=[f"class{i}" for i in range(10)])
    ck = tmp_path / "other.npz"
    write_checkpoint(ck, build_model("lenet5", (1, 28, 28), 10), meta)
    assert_user_error(run_cli("distnet.evaluate", ck), ck, "61706 parameters", "cnn2")
    meta["model"] = {"spec": "resnet-9000", "args": {}}
    write_checkpoint(ck, build_model("lenet5", (1, 28, 28), 10), meta)
    assert_user_error(run_cli("distnet.evaluate", ck), ck, "resnet-9000")


def test_checkpoint_without_meta_is_rebuilt_from_its_config(trained, tmp_path):
    """Checkpoints written before meta existed still evaluate (their config names model and dataset)."""
    ck = ckpt_io.load(trained / "checkpoints" / "latest.npz")
    old = tmp_path / "old.npz"
    ckpt_io.save(ckpt_io.Checkpoint(params=ck.params, optimizer={}, step=ck.step, epoch=0, position=0, seed=0,
                                    config=ck.config, meta={}), old)
    a = json.loads(run_cli("distnet.evaluate", old, "--json").stdout)
    b = json.loads(run_cli("distnet.evaluate", trained / "checkpoints" / "latest.npz", "--json").stdout)
    assert a["confusion"] == b["confusion"]


def test_bad_flags(trained):
    ck = trained / "checkpoints" / "latest.npz"
    assert_user_error(run_cli("distnet.evaluate", ck, "--batch-size", "0"), "--batch-size")
    assert_user_error(run_cli("distnet.evaluate", ck, "--split", "valid"), "--split")
    assert_user_error(run_cli("distnet.evaluate", ck, "--dataset", "imagenet"), "imagenet")


def test_modules_stay_callable_when_imported(trained):
    """Contract C: ``import distnet.evaluate`` must not hide the API function distnet.evaluate."""
    code = r"""
import importlib.util, json, sys
import numpy as np
import distnet, distnet.evaluate, distnet.predict
from distnet.data import synthetic
from distnet.meta import load_trained
from distnet.nn import CrossEntropyLoss
assert callable(distnet.evaluate) and callable(distnet.predict), (distnet.evaluate, distnet.predict)
model, meta = load_trained(sys.argv[1])
test = synthetic("test")
x, y = test.batch(np.arange(len(test)))
has_api = importlib.util.find_spec("distnet.api") is not None
try:
    result = distnet.evaluate(model, test, loss=CrossEntropyLoss())
    out = distnet.predict(model, x)
    print(json.dumps({"api": has_api, "accuracy": float(result["accuracy"]),
                      "argmax": np.asarray(out).argmax(axis=1).tolist() if np.asarray(out).ndim == 2 else None}))
except NotImplementedError as exc:
    print(json.dumps({"api": has_api, "not_implemented": str(exc)}))
"""
    ck = trained / "checkpoints" / "latest.npz"
    r = subprocess.run([sys.executable, "-c", code, str(ck)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    expected = json.loads(run_cli("distnet.evaluate", ck, "--json").stdout)
    if got["api"]:
        assert got["accuracy"] == pytest.approx(expected["accuracy"])
    else:  # this branch has no distnet.api yet: the call says so instead of failing oddly
        assert "distnet.api" in got["not_implemented"]


def test_python_m_forms_run(trained):
    r = run_cli("distnet.evaluate", "--help")
    assert r.returncode == 0 and "CHECKPOINT" in r.stdout
    r = run_cli("distnet.predict", "--help")
    assert r.returncode == 0 and "--top-k" in r.stdout


def test_a_model_trained_on_npz_arrays_is_scored_on_them(tmp_path):
    """--dataset npz:PATH is a way to train, so evaluate takes it too (by default from the
    checkpoint, normalised with the training statistics it recorded)."""
    rng = np.random.default_rng(4)
    x, y = rng.random((96, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 96)
    x[np.arange(96), 0, 0, y] += 3.0  # learnable: the label is written into the first row
    npz = tmp_path / "arrays.npz"
    np.savez(npz, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    ck = tmp_path / "ck"
    r = run_train("--dataset", f"npz:{npz}", "--model", "mlp", "--max-steps", "20", "--batch-size", "16",
                  "--checkpoint-dir", ck, "--no-progress")
    assert r.returncode == 0, r.stderr
    trained_accuracy = r.stdout.strip().splitlines()[-1].split("accuracy ")[1].split("%")[0]
    scored = json.loads(run_cli("distnet.evaluate", ck / "latest.npz", "--json").stdout)
    assert scored["split"] == "test" and scored["samples"] == 32
    assert f"{scored['accuracy'] * 100:.2f}" == trained_accuracy  # the same 32 test samples, the same score
    train_split = json.loads(run_cli("distnet.evaluate", ck / "latest.npz", "--split", "train", "--json").stdout)
    assert train_split["split"] == "train" and train_split["samples"] == 64
    other = tmp_path / "other.npz"
    np.savez(other, x_train=x[:, :, :4], y_train=y, x_test=x[:8, :, :4], y_test=y[:8])
    assert_user_error(run_cli("distnet.evaluate", ck / "latest.npz", "--dataset", f"npz:{other}"),
                      "checkpoint is mlp for 1x8x8 input", "1x4x8")
