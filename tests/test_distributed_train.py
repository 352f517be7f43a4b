"""``mpirun -n N python -m distnet.train``: world-size equivalence, resume across world
sizes, and the failure policy (no hangs, no leftover processes, intact checkpoints)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, mpirun, run_train

BASE = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "32", "--no-progress",
        "--eval-every", "0", "--schedule", "constant", "--warmup-steps", "0"]


def final_params(ckdir):
    with np.load(ckdir / "latest.npz", allow_pickle=False) as ck:
        return ck["params"].copy(), int(ck["step"])


def train(tmp_path, name, ranks, *args):
    ck = tmp_path / name
    r = run_train(*BASE, "--checkpoint-dir", ck, *args, mpi=ranks if ranks > 1 else 0)
    assert r.returncode == 0, f"{ranks} ranks: {r.stdout}\n{r.stderr}"
    return ck


def rel_diff(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(a))


def test_world_size_equivalence_plain_sgd(tmp_path):
    """50 steps, same seed and global batch, 1/2/4 ranks: parameters agree to 1e-5 relative."""
    args = ["--optimizer", "sgd", "--lr", "0.01", "--max-steps", "50"]
    ref, steps = final_params(train(tmp_path, "w1", 1, *args))
    assert steps == 50
    for ranks in (2, 4):
        params, _ = final_params(train(tmp_path, f"w{ranks}", ranks, *args))
        assert rel_diff(ref, params) < 1e-5, ranks
    assert rel_diff(ref, final_params(train(tmp_path, "w2o", 2, *args, "--overlap"))[0]) < 1e-5


@pytest.mark.parametrize("batch", [341, 1])
def test_overlap_on_an_empty_shard_does_not_hang(tmp_path, batch):
    """Issue 12 item 2, as reported: 1024 samples in batches of 341 end with a batch of 1, so
    one of 2 ranks has an empty slice (and with --batch-size 1 one rank always has); with
    several buckets, --overlap must finish, and land where plain mode does."""
    args = ["--optimizer", "sgd", "--lr", "0.01", "--max-steps", "8", "--batch-size", str(batch),
            "--timeout", "10"]
    plain, _ = final_params(train(tmp_path, "plain", 2, *args))
    overlap, steps = final_params(train(tmp_path, "overlap", 2, *args, "--overlap", "--bucket-mb", "0.02"))
    assert steps == 8
    assert rel_diff(plain, overlap) < 1e-5


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_deterministic_is_bitwise_across_world_sizes(tmp_path, optimizer):
    args = ["--optimizer", optimizer, "--lr", "0.003", "--max-steps", "12", "--deterministic",
            "--weight-decay", "0.001"]
    ref, _ = final_params(train(tmp_path, "d1", 1, *args))
    for ranks in (2, 4):
        params, _ = final_params(train(tmp_path, f"d{ranks}", ranks, *args))
        np.testing.assert_array_equal(ref, params, err_msg=f"{optimizer}, {ranks} ranks")


def test_resume_on_a_different_world_size(tmp_path):
    """40 steps straight on 2 ranks == 20 on 4 ranks + 20 resumed on 1 (bitwise with
    --deterministic), and close without it."""
    for extra, exact in ((["--deterministic"], True), ([], False)):
        args = ["--optimizer", "adam", "--lr", "0.001", *extra]
        straight, _ = final_params(train(tmp_path, f"s{exact}", 2, *args, "--max-steps", "40"))
        train(tmp_path, f"r{exact}", 4, *args, "--max-steps", "20")
        resumed, step = final_params(train(tmp_path, f"r{exact}", 1, *args, "--max-steps", "40", "--resume"))
        assert step == 40
        if exact:
            np.testing.assert_array_equal(straight, resumed)
        else:
            assert rel_diff(straight, resumed) < 1e-4


def _python_procs_running(marker):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [line for line in out.split() if line.strip()]


def _start(tmp_path, ranks, *args, env=None):
    full_env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1", **(env or {}))
    marker = str(tmp_path / "ck")
    cmd = [mpirun(), "-n", str(ranks), sys.executable, "-m", "distnet.train", *BASE,
           "--epochs", "400", "--checkpoint-dir", marker, "--checkpoint-every", "20", *args]
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True), marker


def _rank_pids(marker):
    out = subprocess.run(["pgrep", "-f", f"distnet.train.*{marker}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    launchers = ("mpirun", "mpiexec", "prterun")  # MPICH's and Open MPI's launcher processes
    return [p for p in pids
            if not any(name in open(f"/proc/{p}/cmdline").read().replace("\0", " ").split(" ")[0]
                       for name in launchers)]


def _wait_for_checkpoint(marker, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (os.path.exists(os.path.join(marker, "latest.npz"))):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def _assert_no_leftovers(marker):
    deadline = time.monotonic() + 5
    while _python_procs_running(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _python_procs_running(marker), "processes left running"


def _resume_completes(tmp_path, marker):
    r = run_train(*BASE, "--checkpoint-dir", marker, "--resume", "--max-steps",
                  str(final_params(tmp_path / "ck")[1] + 5), mpi=2)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout + r.stderr


def test_sigkill_of_one_rank_ends_the_job_quickly(tmp_path):
    proc, marker = _start(tmp_path, 3)
    try:
        _wait_for_checkpoint(marker, proc)
        time.sleep(1)
        victims = _rank_pids(marker)
        assert len(victims) == 3, victims
        os.kill(victims[1], signal.SIGKILL)
        start = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 15
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _assert_no_leftovers(marker)
    final_params(tmp_path / "ck")  # the last checkpoint is intact
    _resume_completes(tmp_path, marker)


def test_exception_on_one_rank_aborts_all(tmp_path):
    proc, marker = _start(tmp_path, 2, env={"DISTNET_INJECT_FAULT": "1:30"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "rank 1" in err and "injected fault after step 30" in err
    _assert_no_leftovers(marker)
    assert final_params(tmp_path / "ck")[1] == 20
    _resume_completes(tmp_path, marker)


def test_watchdog_turns_a_stopped_peer_into_an_abort(tmp_path):
    proc, marker = _start(tmp_path, 2, "--timeout", "4")
    try:
        _wait_for_checkpoint(marker, proc)
        victims = _rank_pids(marker)
        os.kill(victims[-1], signal.SIGSTOP)
        start = time.monotonic()
        out, err = proc.communicate(timeout=40)
        assert time.monotonic() - start < 20
        assert proc.returncode != 0
        assert "no progress for" in err and "after step" in err
    finally:
        for pid in _rank_pids(marker):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _assert_no_leftovers(marker)


def test_sigterm_under_mpirun_checkpoints_and_exits_0(tmp_path):
    proc, marker = _start(tmp_path, 2)
    _wait_for_checkpoint(marker, proc)
    os.kill(proc.pid, signal.SIGTERM)  # mpirun forwards it to every rank
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    params, step = final_params(tmp_path / "ck")
    assert "stopped by SIGTERM at step" in out + err
    assert f"at step {step}" in out + err
    _assert_no_leftovers(marker)
