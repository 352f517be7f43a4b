"""End-to-end tests of ``python -m distnet.train`` on one process."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_train

SMALL = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "64", "--no-progress",
         "--optimizer", "momentum", "--lr", "0.01"]


def test_trains_and_writes_metrics_and_checkpoint(tmp_path):
    metrics, ckdir = tmp_path / "m.jsonl", tmp_path / "ck"
    r = run_train(*SMALL, "--epochs", "2", "--log-every", "4", "--metrics", metrics,
                  "--checkpoint-dir", ckdir, "--checkpoint-every", "10")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [x for x in lines if x["event"] == "train"]
    evals = [x for x in lines if x["event"] == "eval"]
    assert train and all({"step", "epoch", "loss", "images_per_sec"} <= x.keys() for x in train)
    assert [e["step"] for e in evals] == [16, 32] and [e["epoch"] for e in evals] == [1, 2]
    assert all(0.0 <= e["accuracy"] <= 1.0 and "loss" in e for e in evals)
    assert evals[-1]["accuracy"] > 0.5, "should learn the synthetic task"
    with np.load(ckdir / "latest.npz", allow_pickle=False) as ck:
        assert int(ck["step"]) == 32
        assert ck["params"].dtype == np.float32 and ck["params"].ndim == 1
        assert ck["params"].size == 61706  # LeNet-5's parameter count
    assert sorted(p.name for p in ckdir.glob("ckpt-*.npz")) == [
        "ckpt-00000010.npz", "ckpt-00000020.npz", "ckpt-00000030.npz", "ckpt-00000032.npz"][-3:]


def test_resume_is_exact(tmp_path):
    """40 steps straight == 20 steps, stop, 20 resumed steps (bitwise, one process)."""
    common = SMALL + ["--epochs", "3", "--optimizer", "adam", "--lr", "0.001", "--eval-every", "0"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_train(*common, "--max-steps", "40", "--checkpoint-dir", a).returncode == 0
    assert run_train(*common, "--max-steps", "20", "--checkpoint-dir", b).returncode == 0
    r = run_train(*common, "--max-steps", "40", "--checkpoint-dir", b, "--resume")
    assert r.returncode == 0, r.stderr
    with np.load(a / "latest.npz") as x, np.load(b / "latest.npz") as y:
        assert int(y["step"]) == 40
        np.testing.assert_array_equal(x["params"], y["params"])
        np.testing.assert_array_equal(x["optim/exp_avg"], y["optim/exp_avg"])


def test_toml_config_and_flag_precedence(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "synthetic"\nmodel = "lenet5"\nbatch-size = 128\nmax_steps = 3\n'
                   'eval-every = 0\nno-progress = true\n')
    ck = tmp_path / "ck"
    r = run_train("--config", cfg, "--max-steps", "5", "--checkpoint-dir", ck)
    assert r.returncode == 0, r.stderr
    with np.load(ck / "latest.npz") as x:
        assert int(x["step"]) == 5  # the flag beats the file
        assert json.loads(str(x["config"]))["batch_size"] == 128


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--model", "resnet"], "model"),
    (["--dataset", "imagenet"], "imagenet"),
    (["--config", "/nonexistent/x.toml"], "/nonexistent/x.toml"),
    (["--checkpoint-every", "5"], "--checkpoint-every"),
    (["--optimizer", "lbfgs"], "--optimizer"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    r = run_train("--dataset", "synthetic", "--no-progress", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert needle in r.stderr and "error" in r.stderr.strip().splitlines()[-1]


def test_missing_data_offline_fails_fast(tmp_path):
    start = time.monotonic()
    r = run_train("--dataset", "fashion-mnist", "--data-dir", tmp_path, "--no-progress")
    assert time.monotonic() - start < 20
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("distnet: error:") and "train-images-idx3-ubyte" in last


def test_corrupt_checkpoint_is_refused_not_ignored(tmp_path):
    ck = tmp_path / "ck"
    assert run_train(*SMALL, "--max-steps", "3", "--eval-every", "0", "--checkpoint-dir", ck).returncode == 0
    latest = ck / "latest.npz"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    r = run_train(*SMALL, "--max-steps", "6", "--checkpoint-dir", ck, "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(latest) in r.stderr and "corrupt" in r.stderr
    latest.write_bytes(data)
    r = run_train(*SMALL, "--model", "cnn2", "--max-steps", "6", "--checkpoint-dir", ck, "--resume")
    assert r.returncode == 2 and "parameters" in r.stderr


def test_sigterm_finishes_step_checkpoints_and_exits_0(tmp_path):
    ck = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "distnet.train", *SMALL, "--epochs", "200",
                             "--eval-every", "0", "--checkpoint-dir", ck],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with np.load(ck / "latest.npz") as x:
        step = int(x["step"])
    assert 0 < step < 200 * 16
    assert f"step {step}" in out + err
