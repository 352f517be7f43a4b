"""Progress display: a tqdm bar in a real terminal (tmux), plain lines without one."""
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, run_train
from test_cli_evaluate import blocker

SMALL = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "64", "--optimizer", "momentum",
         "--lr", "0.01", "--eval-every", "0", "--epochs", "10"]  # the default is 6 epochs


def tmux():
    path = shutil.which("tmux")
    if path is None:  # a user may lack it; CI installs it (.ci/run), where a skip fails the run
        pytest.skip("tmux is not installed (apt-get install tmux); the progress bar test needs a real terminal")
    return path


def run_in_terminal(tmp_path, args, env_extra=None, wait_for="final test accuracy", timeout=120):
    """Run training in a detached tmux session (a real pseudo-terminal, 150 columns) and
    return what the screen shows once ``wait_for`` appears.

    Each call gets a tmux server of its own (``-L``, no config file): with the shared default
    server, a session started just as the previous test's last one was killed met a server
    on its way out ("server exited unexpectedly", seen once in CI's fresh-clone run)."""
    server = f"distnet-test-{uuid.uuid4().hex[:8]}"
    tmux_cmd = [tmux(), "-L", server, "-f", "/dev/null"]
    env = {"PYTHONPATH": str(REPO), "DISTNET_OFFLINE": "1", **(env_extra or {})}
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    command = f"env {exports} {sys.executable} -m distnet.train {' '.join(args)}; sleep 600"
    subprocess.run(tmux_cmd + ["new-session", "-d", "-s", "train", "-x", "150", "-y", "40", command],
                   check=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(tmux_cmd + ["capture-pane", "-p", "-t", "train"], capture_output=True,
                                    text=True).stdout
            if wait_for in screen:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{wait_for!r} never appeared; the screen:\n{screen}")
    finally:
        subprocess.run(tmux_cmd + ["kill-server"], capture_output=True)


def test_tqdm_bar_in_a_real_terminal(tmp_path):
    screen = run_in_terminal(tmp_path, SMALL + ["--max-steps", "120"])
    bars = [line for line in screen.splitlines() if "step/s" in line or "|" in line]
    assert bars, screen
    bar = bars[-1]
    # epoch, step, loss, accuracy, images/s and the ETA (tqdm's [elapsed<remaining])
    assert bar.startswith("epoch 8/8: 100%|"), bar
    assert "120/120" in bar and "loss " in bar and "acc " in bar and "img/s" in bar and "<" in bar, bar
    assert "final test accuracy" in screen
    # messages are printed above the bar, not into it
    assert any(line.startswith("distnet: lenet5 on synthetic") for line in screen.splitlines())


def test_terminal_without_tqdm_prints_plain_lines(tmp_path):
    d = blocker(tmp_path, "tqdm")["PYTHONPATH"]
    screen = run_in_terminal(tmp_path, SMALL + ["--max-steps", "40"], env_extra={"PYTHONPATH": d})
    lines = [line for line in screen.splitlines() if line.startswith("epoch ")]
    assert lines and all("|" not in line for line in lines), screen
    assert lines[-1].startswith("epoch 3/3 step 40/40 loss ") and "img/s eta " in lines[-1]


def test_plain_lines_when_not_a_terminal():
    r = run_train(*SMALL, "--max-steps", "40")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    steps = [int(line.split()[3].split("/")[0]) for line in lines]
    assert steps == [1, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40], r.stdout  # about one line per tenth
    assert all("loss " in line and "acc " in line and "img/s" in line and "eta " in line for line in lines)
    assert "\r" not in r.stdout + r.stderr


def test_no_progress_shows_none():
    r = run_train(*SMALL, "--max-steps", "20", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert not [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert "final test accuracy" in r.stdout
