"""SIGTERM to a run that has no --checkpoint-dir: it stops after the step, says so and exits 0.

Found while sweeping recipes (issue 8): the stop path always wrote a checkpoint, and without
a checkpoint folder it ended in ``distnet: error: TypeError: expected str, bytes or
os.PathLike object, not NoneType``.
"""
import os
import signal
import subprocess
import sys
import time

from conftest import REPO


def test_sigterm_without_checkpoint_dir_stops_cleanly(tmp_path):
    metrics = tmp_path / "m.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "distnet.train", "--dataset", "synthetic", "--model", "mlp", "--epochs", "1000",
           "--no-progress", "--log-every", "1", "--eval-every", "0", "--metrics", str(metrics)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by a signal at step" in out + err and "error" not in err, out + err
    assert not list(tmp_path.glob("*.npz")) and not (tmp_path / "checkpoints").exists()
