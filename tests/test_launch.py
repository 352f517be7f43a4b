"""``python -m distnet.launch``: restarts a failed job with --resume, never retries bad input."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from distnet.launch import main as launch_main

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


def fake_mpirun(tmp_path, exit_code):
    """An 'mpirun' that records each start (one line in a file) and exits with EXIT_CODE;
    asked ``--version`` it answers as MPICH's Hydra does (the launcher asks, to spell the
    hostfile flag)."""
    starts = tmp_path / "starts"
    script = tmp_path / "fake-mpirun"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'HYDRA build details:'; exit 0; }}\n"
                      f"echo \"$*\" >> '{starts}'\nexit {exit_code}\n")
    script.chmod(0o755)
    return script, starts


@pytest.fixture
def keep_signal_handlers():
    """launch.main installs SIGTERM/SIGINT handlers; put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("max_restarts", [0, 1, 3])
def test_a_job_that_always_fails_is_started_exactly_max_restarts_plus_one_times(
        tmp_path, capsys, keep_signal_handlers, max_restarts):
    script, starts = fake_mpirun(tmp_path, 3)
    code = launch_main(["-n", "2", "--mpirun", str(script), "--max-restarts", str(max_restarts),
                        "--restart-delay", "0", "--", "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 3  # the job's own exit code comes back
    lines = starts.read_text().splitlines()
    assert len(lines) == max_restarts + 1
    # the first start is as given, every restart continues from the checkpoint
    assert not lines[0].endswith("--resume") and all(line.endswith("--resume") for line in lines[1:])
    err = capsys.readouterr().err
    assert err.count("distnet.launch: starting") == max_restarts + 1
    assert f"no restarts left ({max_restarts} allowed)" in err
    if max_restarts:
        assert f"restart {max_restarts}/{max_restarts} with --resume" in err


@pytest.mark.parametrize("code", [0, 2])
def test_success_and_bad_input_start_the_job_once(tmp_path, keep_signal_handlers, code):
    script, starts = fake_mpirun(tmp_path, code)
    assert launch_main(["-n", "1", "--mpirun", str(script), "--max-restarts", "5", "--restart-delay", "0"]) == code
    assert len(starts.read_text().splitlines()) == 1


def starts_of(tmp_path, *argv, exit_code=3):
    script, starts = fake_mpirun(tmp_path, exit_code)
    code = launch_main(["--mpirun", str(script), "--restart-delay", "0", *argv])
    return code, starts.read_text().splitlines() if starts.exists() else []


def test_the_exact_mpirun_command_and_its_restarts(tmp_path, capsys, keep_signal_handlers):
    ck, hostfile = tmp_path / "ck", tmp_path / "hosts"
    hostfile.write_text("node0:2\nnode1:1\n")
    code, lines = starts_of(tmp_path, "-n", "3", "--hostfile", str(hostfile), "--mpi-arg=-launcher", "--mpi-arg=ssh",
                            "--max-restarts", "1", "--", "--max-steps", "5", "--checkpoint-dir", str(ck))
    job = f"-n 3 -f {hostfile} -launcher ssh {sys.executable} -m distnet.train --max-steps 5 --checkpoint-dir {ck}"
    assert (code, lines) == (3, [job, job + " --resume"])
    err = capsys.readouterr().err
    assert "job failed (exit code 3); restart 1/1 with --resume from the last checkpoint" in err


@pytest.mark.parametrize("resume", ["--resume", "--resume=/ck/x.npz"])
def test_a_given_resume_is_not_added_twice(tmp_path, keep_signal_handlers, resume):
    code, lines = starts_of(tmp_path, "-n", "1", "--max-restarts", "1", "--", "--checkpoint-dir=/ck", resume)
    job = f"-n 1 {sys.executable} -m distnet.train --checkpoint-dir=/ck {resume}"
    assert lines == [job, job]


def test_without_a_checkpoint_dir_a_restart_starts_from_scratch(tmp_path, capsys, keep_signal_handlers):
    code, lines = starts_of(tmp_path, "-n", "1", "--max-restarts", "1", "--", "--max-steps", "5")
    assert lines == [f"-n 1 {sys.executable} -m distnet.train --max-steps 5"] * 2
    assert "restart 1/1 from scratch (no --checkpoint-dir)" in capsys.readouterr().err


def test_a_job_killed_by_a_signal_is_reported_as_such(tmp_path, capsys, keep_signal_handlers):
    script = tmp_path / "fake-mpirun"
    script.write_text("#!/bin/sh\nkill -9 $$\n")
    script.chmod(0o755)
    code = launch_main(["-n", "1", "--mpirun", str(script), "--max-restarts", "1", "--restart-delay", "0"])
    assert code == -9
    assert "job failed (signal 9); restart 1/1" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-n", "0"], ["-n", "2", "--max-restarts", "-1"]])
def test_impossible_counts_are_bad_input(tmp_path, capsys, keep_signal_handlers, argv):
    code, lines = starts_of(tmp_path, *argv)
    assert (code, lines) == (2, [])
    assert "distnet: error: -n must be >= 1 and --max-restarts >= 0" in capsys.readouterr().err
