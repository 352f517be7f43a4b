"""The command line's library doors: --model FILE.py:function, --loss mse, --dataset npz:PATH,
and the one-line errors (exit 2) for bad input through them."""
import json
import textwrap

import numpy as np
import pytest

from conftest import run_train

MODELS = textwrap.dedent("""
    import numpy as np
    from distnet import nn

    def build(input_shape, num_classes, seed=0):
        rng = np.random.default_rng(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 32, rng=rng), nn.ReLU(),
                             nn.Linear(32, num_classes, rng=rng))

    def same_size_other_layers(input_shape, num_classes, seed=0):
        rng = np.random.default_rng(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 32, rng=rng), nn.Tanh(),
                             nn.Linear(32, num_classes, rng=rng))

    def three_outputs(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), 3))

    def broken(input_shape, num_classes):
        raise RuntimeError("out of ideas")

    def not_a_model(input_shape, num_classes):
        return "Sequential"
""")

QUIET = ["--no-progress", "--eval-every", "0", "--batch-size", "32"]


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(MODELS)
    return path


def regression_npz(path, n_train=256, n_test=64):
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (n_train + n_test, 2)).astype(np.float32)
    y = np.stack([np.sin(x[:, 0]), 0.3 * x[:, 1] ** 2], axis=1).astype(np.float32)
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


def params(ckdir):
    with np.load(ckdir / "latest.npz", allow_pickle=False) as ck:
        return ck["params"].copy(), json.loads(str(ck["meta"])), json.loads(str(ck["config"]))


def test_model_from_a_file_trains_alone_and_under_mpirun(tmp_path, models):
    args = ["--dataset", "synthetic", "--model", f"{models}:build", *QUIET, "--max-steps", "6",
            "--optimizer", "sgd", "--lr", "0.05", "--schedule", "constant", "--warmup-steps", "0"]
    r1 = run_train(*args, "--checkpoint-dir", tmp_path / "one")
    assert r1.returncode == 0, r1.stderr
    assert "final test accuracy" in r1.stdout
    r2 = run_train(*args, "--checkpoint-dir", tmp_path / "two", mpi=2)
    assert r2.returncode == 0, r2.stderr
    (p1, meta, _), (p2, _, _) = params(tmp_path / "one"), params(tmp_path / "two")
    assert meta["model"] == {"spec": f"{models}:build", "args": {}} and meta["task"] == "classification"
    assert np.max(np.abs(p1 - p2)) / np.max(np.abs(p1)) < 1e-5
    # a resume with another model of the same size is refused, not silently continued
    r = run_train(*args, "--model", f"{models}:same_size_other_layers", "--checkpoint-dir", tmp_path / "one",
                  "--resume", "--max-steps", "8")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "checkpoint was written with model=" in r.stderr and "same_size_other_layers" in r.stderr


def test_regression_on_an_npz_with_mse(tmp_path):
    data = regression_npz(tmp_path / "fn.npz")
    metrics = tmp_path / "m.jsonl"
    r = run_train("--dataset", f"npz:{data}", "--model", "mlp", "--loss", "mse", "--no-progress",
                  "--batch-size", "32", "--epochs", "6", "--optimizer", "adam", "--lr", "0.003",
                  "--metrics", metrics, "--checkpoint-dir", tmp_path / "ck", "--log-every", "8")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("distnet: final test loss (mse)") and "accuracy" not in r.stdout
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    evals = [x for x in lines if x["event"] == "eval"]
    assert evals and all("accuracy" not in x for x in lines)
    assert evals[-1]["loss"] < evals[0]["loss"] < 1.0
    assert float(last.split()[-4]) == pytest.approx(evals[-1]["loss"], rel=1e-5)
    _, meta, _ = params(tmp_path / "ck")
    assert meta["task"] == "regression" and meta["loss"] == "mse" and meta["classes"] is None
    assert meta["num_outputs"] == 2 and meta["input_shape"] == [2] and meta["dataset"] == f"npz:{data}"


def test_classification_npz_of_images(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = rng.integers(0, 60, (200, 28, 28)).astype(np.uint8)
    x[y == 1, 10:18, 10:18] = 250  # a bright square means class 1
    path = tmp_path / "sq.npz"
    np.savez(path, x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    r = run_train("--dataset", f"npz:{path}", "--model", "lenet5", "--no-progress", "--batch-size", "32",
                  "--epochs", "2", "--lr", "0.003")
    assert r.returncode == 0, r.stderr
    accuracy = float(r.stdout.split("final test accuracy")[1].split("%")[0])
    assert accuracy > 90


def _bad_npz(tmp_path, kind):
    path = tmp_path / f"{kind}.npz"
    x, y = np.zeros((8, 3), np.float32), np.zeros(8, np.int64)
    arrays = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    if kind == "no_x_train":
        del arrays["x_train"]
    elif kind == "lengths":
        arrays["y_train"] = np.zeros(7, np.int64)
    elif kind == "strings":
        arrays["x_train"] = np.array([["a", "b", "c"]] * 8)
    elif kind == "objects":
        arrays["x_test"] = np.array([np.zeros(2), np.zeros(3)], dtype=object)
    elif kind == "float_labels":
        arrays["y_train"] = np.zeros(8, np.float32)
        arrays["y_test"] = np.zeros(8, np.float32)
    elif kind == "classes":
        arrays["y_train"] = np.arange(8) % 4
        arrays["classes"] = np.array(["cat", "dog", "emu"])
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kind,needles", [
    ("no_x_train", ["no array 'x_train' in the file"]),
    ("lengths", ["x_train/y_train: inputs hold 8 samples but targets hold 7"]),
    ("strings", ["x_train: the array is not numeric (dtype <U1)"]),
    ("objects", ["object (pickled) array"]),
    ("float_labels", ["float targets (regression) do not fit the cross-entropy loss", "--loss mse"]),
    ("classes", ["label 3 is >= the number of classes (3)"]),
])
def test_bad_npz_is_one_line_exit_2(tmp_path, kind, needles):
    path = _bad_npz(tmp_path, kind)
    r = run_train("--dataset", f"npz:{path}", "--model", "mlp", *QUIET, "--max-steps", "1")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"distnet: error: {path}") and all(n in last for n in needles), last


@pytest.mark.parametrize("spec,needle", [
    ("{dir}/missing.py:build", "missing.py: model file not found"),
    ("{file}:nope", "my_models.py: no function 'nope'"),
    ("{file}:broken", "the model function raised RuntimeError: out of ideas"),
    ("{file}:not_a_model", "the model function returned str, not a model"),
    ("{file}:three_outputs", "label 9 is >= the number of classes the model predicts (3)"),
    ("not_a_module_xyz:build", "not_a_module_xyz: cannot import model module"),
])
def test_bad_model_is_one_line_exit_2(tmp_path, models, spec, needle):
    r = run_train("--dataset", "synthetic", "--model", spec.format(dir=tmp_path, file=models), *QUIET,
                  "--max-steps", "1")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("distnet: error: ") and needle in last, last


def test_bad_model_under_mpirun_is_one_line_exit_2(tmp_path, models):
    r = run_train("--dataset", "synthetic", "--model", f"{models}:broken", *QUIET, "--max-steps", "1", mpi=2)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "out of ideas" in r.stderr
