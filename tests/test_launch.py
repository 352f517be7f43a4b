"""``python -m distnet.launch``: restarts a failed job with --resume, never retries bad input."""
import os
import subprocess
import sys

import numpy as np

from conftest import REPO

ARGS = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "32", "--max-steps", "40",
        "--checkpoint-every", "10", "--no-progress", "--eval-every", "0"]


def launch(*args, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "distnet.launch", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_failed_job_is_restarted_and_resumes(tmp_path):
    ck = tmp_path / "ck"
    fault = {"DISTNET_INJECT_FAULT": f"1:25:{tmp_path / 'fired'}"}
    r = launch("-n", 2, "--max-restarts", 1, "--restart-delay", 0, "--", *ARGS, "--checkpoint-dir", ck, env=fault)
    assert r.returncode == 0, r.stderr
    assert "injected fault after step 25" in r.stderr
    assert "restart 1/1 with --resume" in r.stderr
    assert "resumed from" in r.stdout + r.stderr and "at step 20" in r.stdout + r.stderr
    with np.load(ck / "latest.npz", allow_pickle=False) as x:
        assert int(x["step"]) == 40


def test_no_restarts_left_returns_the_failure(tmp_path):
    fault = {"DISTNET_INJECT_FAULT": "0:5"}
    r = launch("-n", 2, "--max-restarts", 0, "--", *ARGS, "--checkpoint-dir", tmp_path, env=fault)
    assert r.returncode != 0 and "no restarts left" in r.stderr


def test_bad_input_is_not_retried(tmp_path):
    r = launch("-n", 2, "--max-restarts", 3, "--", *ARGS, "--epochs", "0")
    assert r.returncode == 2
    assert "not restarting" in r.stderr and r.stderr.count("distnet.launch: starting") == 1
