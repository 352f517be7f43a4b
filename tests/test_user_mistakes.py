"""Mistakes a new user makes, each a one-line error before any training (found by a review
from a fresh clone): a checkpoint directory that cannot be written, a negative seed, a shift
larger than the images, a built-in model on inputs it cannot take (channels-last ones
named), an empty test split, an optimizer over another model, a launcher pointed at a
hostfile or an mpirun that is not there."""
import numpy as np
import pytest

import distnet
from conftest import run_train
from distnet import launch, nn, optim
from distnet.data import ArrayDataset
from distnet.errors import UserError

QUICK = ["--dataset", "synthetic", "--no-progress", "--max-steps", "2"]


def one_line_error(r, needle):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    # one line, under mpirun too: every rank agrees on the failure and exits, so MPI_Abort
    # and its launcher's "Abort(2) on node ..." line are not needed (faults.agree)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("distnet: error:") and needle in lines[0], r.stderr
    return lines[0]


@pytest.mark.parametrize("mpi", [0, 2])
def test_unwritable_checkpoint_dir_is_refused_before_the_first_step(tmp_path, mpi):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_train(*QUICK, "--max-steps", "50", "--checkpoint-dir", blocker / "ck", mpi=mpi, timeout=120)
    last = one_line_error(r, str(blocker / "ck"))
    assert "cannot write checkpoints there" in last
    assert "step" not in r.stdout  # refused before training, not after it
    assert blocker.read_text() == "not a directory"


def test_writable_checkpoint_dir_keeps_only_the_checkpoint(tmp_path):
    ck = tmp_path / "new" / "ck"
    assert run_train(*QUICK, "--checkpoint-dir", ck).returncode == 0
    assert sorted(p.name for p in ck.iterdir()) == ["ckpt-00000002.npz", "latest.npz"]  # no probe left


@pytest.mark.parametrize("args,needle", [
    (["--seed", "-1"], "--seed"),
    (["--augment-shift", "28"], "28x28 images out of the frame"),
])
def test_bad_seed_and_shift_are_one_line(args, needle):
    one_line_error(run_train(*QUICK, *args), needle)


def test_a_shift_smaller_than_the_images_still_trains():
    assert run_train(*QUICK, "--augment-shift", "27").returncode == 0


def write_npz(path, x_shape, test_rows=16):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((32,) + x_shape, dtype=np.float32), y_train=rng.integers(0, 3, 32),
             x_test=rng.random((test_rows,) + x_shape, dtype=np.float32), y_test=rng.integers(0, 3, test_rows))
    return f"npz:{path}"


def test_builtin_model_on_inputs_it_cannot_take(tmp_path):
    small = write_npz(tmp_path / "small.npz", (1, 8, 8))
    last = one_line_error(run_train(*QUICK, "--dataset", small, "--model", "cnn2"), "--model cnn2 does not take")
    assert "1x8x8" in last and "channels-last" not in last
    nhwc = write_npz(tmp_path / "nhwc.npz", (32, 32, 3))
    one_line_error(run_train(*QUICK, "--dataset", nhwc, "--model", "cifar-cnn"), "channels-last (H, W, C)")


def test_empty_test_split_is_an_error_not_a_zero_accuracy(tmp_path):
    empty = write_npz(tmp_path / "empty.npz", (1, 8, 8), test_rows=0)
    one_line_error(run_train(*QUICK, "--dataset", empty, "--model", "mlp"), "the test set is empty")


def small_data():
    rng = np.random.default_rng(1)
    return ArrayDataset(rng.random((16, 4), dtype=np.float32), rng.integers(0, 2, 16))


def mlp(seed):
    return nn.Sequential(nn.Linear(4, 2, rng=np.random.default_rng(seed)))


def test_fit_refuses_an_optimizer_over_another_model():
    model, other = mlp(0), mlp(1)
    before = model.flat_params.copy()
    for opt in (optim.Adam(other, lr=0.1), optim.WeightEMA(optim.SGD(other, lr=0.1), other, 0.9)):
        with pytest.raises(UserError, match="another model's parameters"):
            distnet.fit(model, small_data(), loss="cross-entropy", optimizer=opt, verbose=False)
    np.testing.assert_array_equal(model.flat_params, before)
    # its own optimizer, plain or wrapped, trains it
    distnet.fit(model, small_data(), loss="cross-entropy",
                optimizer=optim.WeightEMA(optim.SGD(model, lr=0.1), model, 0.9), verbose=False)
    assert not np.array_equal(model.flat_params, before)


def test_fit_refuses_a_negative_seed():
    model = mlp(0)
    with pytest.raises(UserError, match="seed must be an integer >= 0"):
        distnet.fit(model, small_data(), loss="cross-entropy", optimizer=optim.SGD(model, lr=0.1),
                    seed=-1, verbose=False)


def test_launcher_refuses_a_missing_hostfile_or_mpirun(tmp_path, capsys):
    assert launch.main(["-n", "2", "--hostfile", str(tmp_path / "nope"), "--", "--max-steps", "1"]) == 2
    assert f"--hostfile: {tmp_path / 'nope'}: no such file" in capsys.readouterr().err
    assert launch.main(["-n", "2", "--mpirun", str(tmp_path / "mpirun"), "--", "--max-steps", "1"]) == 2
    assert "--mpirun:" in capsys.readouterr().err


def test_toml_takes_the_negated_flag_names_readme_promises(tmp_path):
    from distnet.config import parse_config
    for text, download in (("no-download = true\n", False), ("no_download = false\n", True),
                           ("download = false\n", False)):
        (tmp_path / "run.toml").write_text(text)
        assert parse_config(["--config", str(tmp_path / "run.toml")]).download is download, text
    (tmp_path / "run.toml").write_text("no-download = 1\n")
    with pytest.raises(UserError, match="no-download must be true or false"):
        parse_config(["--config", str(tmp_path / "run.toml")])


def test_a_checkpoint_directory_where_a_file_is_wanted_says_so(tmp_path):
    from distnet import checkpoint
    with pytest.raises(UserError, match=r"is a directory, not a checkpoint file; give the file, e\.g\. .*latest\.npz"):
        checkpoint.load(tmp_path)


def test_metrics_under_a_file_says_which_is_not_a_directory(tmp_path):
    blocker = tmp_path / "data.npz"
    blocker.write_text("x")
    one_line_error(run_train(*QUICK, "--metrics", blocker / "m.jsonl"), f"{blocker} is not a directory")


def test_a_cutout_as_large_as_the_images_is_refused():
    one_line_error(run_train(*QUICK, "--augment-shift", "0", "--augment-cutout", "28"), "--augment-cutout 28")
    assert run_train(*QUICK, "--augment-shift", "0", "--augment-cutout", "8").returncode == 0


@pytest.mark.parametrize("args,needle", [
    (["--optimizer", "sgd", "--momentum", "0.5"], "--momentum: is used by --optimizer momentum and nesterov only"),
    (["--optimizer", "adam", "--momentum", "0.8"], "not adam"),
    (["--micro-batches", "4"], "--micro-batches: splits the batch for --deterministic only"),
    (["--deterministic", "--micro-batches", "200", "--batch-size", "128"], "do not fit a batch of 128"),
    (["--bucket-mb", "4"], "--bucket-mb: sizes the buckets of --overlap only; add --overlap"),
])
def test_settings_the_run_would_ignore_are_refused(args, needle):
    from distnet.config import parse_config
    with pytest.raises(UserError, match=needle):
        parse_config(["--dataset", "synthetic", *args])


def test_the_settings_that_use_them_are_accepted():
    from distnet.config import parse_config
    assert parse_config(["--optimizer", "nesterov", "--momentum", "0.85"]).momentum == 0.85
    assert parse_config(["--deterministic", "--micro-batches", "4"]).micro_batches == 4
    assert parse_config(["--overlap", "--bucket-mb", "4"]).bucket_mb == 4


def test_predict_names_the_dtype_of_an_array_that_is_not_numbers(tmp_path):
    from distnet.cli.inputs import read_samples
    path = tmp_path / "words.npy"
    np.save(path, np.array(["a", "b"]))
    with pytest.raises(UserError, match=r"words\.npy: array of <U1 is not numbers"):
        read_samples(path, (1, 28, 28), dark_background=True)
