"""``--run-dir`` and the one ``distnet`` entry point."""
import json
import os
import stat
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import run_train
from test_cli_evaluate import ENV, assert_user_error

from distnet.config import parse_config, tomllib

SMALL = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "64", "--optimizer", "momentum",
         "--lr", "0.01", "--eval-every", "10", "--no-progress"]


def evals(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]


def test_run_dir_holds_config_metrics_checkpoints_summary(tmp_path):
    run = tmp_path / "runs" / "first"
    r = run_train(*SMALL, "--max-steps", "30", "--run-dir", run)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.toml", "metrics.jsonl", "summary.json"]
    assert (run / "checkpoints" / "latest.npz").is_file()
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["model"] == "lenet5" and config["max-steps"] == 30 and config["run-dir"] == str(run)
    assert config["checkpoint-dir"] == str(run / "checkpoints") and config["metrics"] == str(run / "metrics.jsonl")
    # the file is the resolved configuration: read back, it is the same configuration
    assert parse_config(["--config", str(run / "config.toml")]).to_dict() == parse_config(
        [*SMALL, "--max-steps", "30", "--run-dir", str(run)]).to_dict()
    summary = json.loads((run / "summary.json").read_text())
    accuracies = [e["accuracy"] for e in evals(run)]
    assert summary["final_accuracy"] == accuracies[-1] and summary["best_accuracy"] == max(accuracies)
    assert summary["steps"] == 30 and summary["completed"] is True
    assert summary["world_size"] == 1 and summary["hosts"] == [socket.gethostname()]
    assert summary["images_trained"] == 30 * 64
    assert summary["images_per_sec"] > 0 and summary["wall_seconds"] >= summary["train_seconds"] > 0
    assert summary["versions"]["distnet"] == "0.1.0" and summary["versions"]["numpy"] == np.__version__
    assert summary["checkpoint"] == str(run / "checkpoints" / "latest.npz")
    umask = os.umask(0)
    os.umask(umask)
    for name in ("summary.json", "config.toml"):  # readable like any file the user writes
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~umask


def test_config_toml_reuse_resumes_the_run(tmp_path):
    run = tmp_path / "r"
    assert run_train(*SMALL, "--max-steps", "20", "--run-dir", run).returncode == 0
    r = run_train("--config", run / "config.toml", "--max-steps", "40", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resumed from {run / 'checkpoints' / 'latest.npz'} at step 20" in r.stdout + r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["images_trained"] == 20 * 64  # this part's images
    assert [e["step"] for e in evals(run)] == [10, 20, 30, 40]
    assert summary["best_accuracy"] == max(e["accuracy"] for e in evals(run))


def test_run_dir_under_mpirun(tmp_path):
    run = tmp_path / "mpi"
    r = run_train(*SMALL, "--max-steps", "20", "--run-dir", run, mpi=2)
    assert r.returncode == 0, r.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["hosts"] == [socket.gethostname()]
    assert summary["versions"]["mpi4py"] and summary["versions"]["mpi"].startswith("MPICH")


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = run_train(*SMALL, "--run-dir", f)
    assert r.returncode == 2 and "--run-dir" in r.stderr and "Traceback" not in r.stderr


def distnet_script() -> str:
    return str(Path(sys.executable).with_name("distnet"))


def test_one_entry_point_runs_every_command(tmp_path):
    run = tmp_path / "e"
    assert Path(distnet_script()).is_file(), "pip install -e . puts the distnet command beside python"
    for cmd in (["train", *SMALL, "--max-steps", "20", "--run-dir", str(run)],
                ["evaluate", str(run / "checkpoints" / "latest.npz"), "--json"],
                ["plot", str(run), "-o", str(tmp_path / "c.png")]):
        r = subprocess.run([distnet_script(), *cmd], env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (cmd, r.stderr)
    assert "wrote" in r.stdout
    result = subprocess.run([sys.executable, "-m", "distnet", "evaluate", str(run / "checkpoints" / "latest.npz"),
                             "--json"], env=ENV, capture_output=True, text=True)
    assert json.loads(result.stdout)["accuracy"] == json.loads((run / "summary.json").read_text())["final_accuracy"]
    np.save(tmp_path / "x.npy", np.zeros((28, 28), np.uint8))
    r = subprocess.run([distnet_script(), "predict", str(run / "checkpoints" / "latest.npz"), str(tmp_path / "x.npy")],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith(f"{tmp_path / 'x.npy'}: class"), r.stderr
    for name in ("train", "evaluate", "predict", "plot", "bench", "launch"):
        r = subprocess.run([distnet_script(), name, "--help"], env=ENV, capture_output=True, text=True)
        assert r.returncode == 0 and "usage:" in r.stdout, (name, r.stderr)
    r = subprocess.run([distnet_script(), "--help"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0 and all(n in r.stdout for n in ("train", "evaluate", "predict", "plot", "bench", "launch"))
    assert_user_error(subprocess.run([distnet_script(), "fly"], env=ENV, capture_output=True, text=True), "'fly'")
