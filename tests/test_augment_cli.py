"""The CIFAR recipe's flags through ``python -m distnet.train``: each one reaches training (or
evaluation), augmented runs resume exactly and do not depend on the number of ranks, and bad
values are one-line errors."""
import json

import numpy as np
import pytest

from conftest import run_train

BASE = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "32", "--no-progress",
        "--optimizer", "nesterov", "--lr", "0.05", "--weight-decay", "0.05", "--augment-shift", "0",
        "--schedule", "cosine", "--warmup-steps", "100"]  # not the default, so onecycle is a change
RECIPE = ["--augment-crop", "3", "--augment-flip", "--augment-cutout", "6", "--label-smoothing", "0.2",
          "--weight-decay-exclude", "bn-bias", "--schedule", "onecycle", "--warmup-steps", "3"]


def train(tmp_path, name, *args, mpi=0):
    ck, metrics = tmp_path / name, tmp_path / f"{name}.jsonl"
    r = run_train(*BASE, "--checkpoint-dir", ck, "--metrics", metrics, *args, mpi=mpi)
    assert r.returncode == 0, r.stderr
    with np.load(ck / "latest.npz", allow_pickle=False) as z:
        params = z["params"].copy()
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    return params, lines


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return train(tmp_path_factory.mktemp("base"), "base", "--max-steps", "3", "--eval-every", "0")


@pytest.mark.parametrize("flags", [
    ["--augment-crop", "3"], ["--augment-crop", "3", "--augment-crop-mode", "zero"], ["--augment-flip"],
    ["--augment-cutout", "10"], ["--label-smoothing", "0.3"], ["--weight-decay-exclude", "bias"],
    ["--schedule", "onecycle"],
])
def test_each_flag_changes_training(tmp_path, baseline, flags):
    params, _ = train(tmp_path, "x", "--max-steps", "3", "--eval-every", "0", *flags)
    assert params.shape == baseline[0].shape
    assert not np.array_equal(params, baseline[0]), f"{flags} did not change the trained weights"


def test_tta_flip_changes_evaluation_only(tmp_path, baseline):
    params, lines = train(tmp_path, "tta", "--max-steps", "3", "--eval-every", "0", "--tta-flip")
    np.testing.assert_array_equal(params, baseline[0])
    plain = [x for x in baseline[1] if x["event"] == "eval"][-1]
    tta = [x for x in lines if x["event"] == "eval"][-1]
    assert tta["loss"] != plain["loss"]


def test_augmented_resume_is_exact(tmp_path):
    common = RECIPE + ["--epochs", "2", "--eval-every", "0"]
    straight, _ = train(tmp_path, "a", *common, "--max-steps", "12")
    train(tmp_path, "b", *common, "--max-steps", "5")
    resumed, _ = train(tmp_path, "b", *common, "--max-steps", "12", "--resume")
    np.testing.assert_array_equal(straight, resumed)


def test_augmented_training_does_not_depend_on_world_size(tmp_path):
    """--deterministic makes runs bitwise equal for any world size; with the augmentation
    drawn per global batch that must still hold."""
    common = RECIPE + ["--max-steps", "4", "--eval-every", "0", "--deterministic", "--micro-batches", "4"]
    one, _ = train(tmp_path, "one", *common)
    two, _ = train(tmp_path, "two", *common, mpi=2)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("args,needle", [
    (["--augment-crop", "-1", "--augment-shift", "0"], "--augment-crop"),
    (["--augment-crop", "2"], "--augment-shift 0"),  # the default shift (1) is not 0
    (["--augment-cutout", "-3"], "--augment-cutout"),
    (["--label-smoothing", "1.5"], "--label-smoothing"),
    (["--label-smoothing", "nan"], "--label-smoothing"),
    (["--label-smoothing", "-inf"], "--label-smoothing"),
    (["--weight-decay-exclude", "conv"], "--weight-decay-exclude"),
    (["--augment-crop-mode", "wrap"], "--augment-crop-mode"),
    (["--augment-crop", "28", "--augment-shift", "0", "--max-steps", "1"], "larger than 28"),
    (["--bn-bias-lr-scale", "0"], "--bn-bias-lr-scale"),
    (["--bn-bias-lr-scale", "64", "--optimizer", "adam"], "needs an SGD optimizer"),
])
def test_bad_values_are_one_line_errors(args, needle):
    r = run_train("--dataset", "synthetic", "--no-progress", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("distnet: error:") and needle in last, r.stderr


@pytest.mark.parametrize("line,needle", [
    ('augment-flip = "yes"', "augment-flip"),
    ("label-smoothing = 2", "label-smoothing"),
    ('augment-crop = 4.5', "augment-crop"),
])
def test_bad_toml_values_are_one_line_errors(tmp_path, line, needle):
    path = tmp_path / "bad.toml"
    path.write_text(f'dataset = "synthetic"\naugment-shift = 0\n{line}\n')
    r = run_train("--config", path, "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("distnet: error:") and needle in r.stderr



def test_bn_bias_lr_scale_without_batchnorm_is_an_error():
    """(What the scale does to a step is checked by hand in test_nn_whitening.py.)"""
    r = run_train("--dataset", "synthetic", "--no-progress", "--optimizer", "sgd", "--bn-bias-lr-scale", "64",
                  "--max-steps", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no BatchNorm" in r.stderr.strip().splitlines()[-1], r.stderr


def test_freeze_bn_scale_without_batchnorm_is_an_error():
    """(That it keeps the scales at 1 is checked on cifar-resnet in test_augment_recipes.py.)"""
    r = run_train("--dataset", "synthetic", "--no-progress", "--freeze-bn-scale", "--max-steps", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nothing to freeze" in r.stderr.strip().splitlines()[-1], r.stderr


FAST = ["--model", "cifar-fast", "--lookahead", "--bn-bias-lr-scale", "64", "--freeze-bn-scale",
        "--augment-crop", "2", "--augment-flip", "--epochs", "1", "--eval-every", "0"]


def test_cifar_fast_recipe_resumes_exactly(tmp_path):
    """The whitening filters (set from the data at the start), the lookahead's slow weights
    and the BatchNorm shift's own learning rate all come back from a checkpoint: a run cut
    at step 3 and resumed (across the lookahead update at step 5) ends where a straight one does."""
    straight, _ = train(tmp_path, "a", *FAST, "--max-steps", "8")
    train(tmp_path, "b", *FAST, "--max-steps", "3")
    resumed, _ = train(tmp_path, "b", *FAST, "--max-steps", "8", "--resume")
    np.testing.assert_array_equal(straight, resumed)
    with np.load(tmp_path / "a" / "latest.npz", allow_pickle=False) as z:
        assert np.abs(z["buffers"]).max() > 0  # the filters (a buffer) were set


def test_cifar_fast_recipe_does_not_depend_on_world_size(tmp_path):
    common = FAST + ["--max-steps", "6", "--deterministic", "--micro-batches", "4"]
    one, _ = train(tmp_path, "one", *common)
    two, _ = train(tmp_path, "two", *common, mpi=2)
    np.testing.assert_array_equal(one, two)
