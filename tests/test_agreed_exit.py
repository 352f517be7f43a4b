"""A failure before the first collective ends every rank with one line and a plain exit
(``faults.agree``): no MPI_Abort, so no "Abort(2) on node ..." line from the launcher,
whichever rank failed.  The ranks are started with different flags (an MPMD launch,
``mpirun -n 1 A : -n 1 B``) to make one rank alone fail, as when one node lacks a file."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, mpirun
from distnet.distributed.comm import SingleProcessCommunicator
from distnet.distributed.faults import agree, agreed
from distnet.errors import UserError

QUICK = ["--no-progress", "--max-steps", "2", "--batch-size", "8"]


def launch(*per_rank, timeout=120):
    """mpirun with one "-n 1 python -m distnet.train ARGS" per rank."""
    cmd = [mpirun()]
    for i, args in enumerate(per_rank):
        cmd += ([":"] if i else []) + ["-n", "1", sys.executable, "-m", "distnet.train", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def only_line(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.standard_normal((40, 6)).astype(np.float32), y_train=np.arange(40) % 3,
             x_test=rng.standard_normal((10, 6)).astype(np.float32), y_test=np.arange(10) % 3)
    return path


def test_a_flag_every_rank_refuses_is_one_line():
    line = only_line(launch(["--dataset", "synthetic", "--lr", "nan"], ["--dataset", "synthetic", "--lr", "nan"]))
    assert line == "distnet: error: rank 0: --lr: must be a finite number > 0, got nan"


def test_a_flag_only_rank_1_refuses_is_its_one_line():
    good = ["--dataset", "synthetic", *QUICK]
    line = only_line(launch(good, good + ["--momentum", "0.5"]))
    assert line.startswith("distnet: error: rank 1: --momentum: is used by --optimizer momentum and nesterov")


def test_data_only_rank_1_lacks_is_its_one_line(tmp_path, arrays):
    missing = tmp_path / "elsewhere.npz"
    line = only_line(launch(["--dataset", f"npz:{arrays}", "--model", "mlp", *QUICK],
                            ["--dataset", f"npz:{missing}", "--model", "mlp", *QUICK]))
    assert line.startswith(f"distnet: error: rank 1: {missing}") and "not found" in line, line


def test_a_checkpoint_dir_rank_0_cannot_write_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["--dataset", "synthetic", *QUICK, "--checkpoint-dir", blocker / "ck"]
    line = only_line(launch(args, args))
    assert line.startswith(f"distnet: error: rank 0: {blocker / 'ck'}: cannot write checkpoints there")


def test_a_resume_point_that_does_not_fit_is_one_line(tmp_path):
    ck = tmp_path / "ck"
    base = ["--dataset", "synthetic", "--no-progress", "--checkpoint-dir", ck]
    first = launch(base + ["--max-steps", "2", "--model", "mlp"], base + ["--max-steps", "2", "--model", "mlp"])
    assert first.returncode == 0, first.stderr
    again = base + ["--max-steps", "4", "--model", "cnn2", "--resume"]
    line = only_line(launch(again, again))
    assert line.startswith(f"distnet: error: rank 0: {ck / 'latest.npz'}: checkpoint holds"), line


def test_agree_alone_reraises_or_returns():
    comm = SingleProcessCommunicator()
    assert agree(comm, None) is None
    exc = UserError("bad")
    with pytest.raises(UserError) as info:
        agree(comm, exc)
    assert info.value is exc
    with pytest.raises(ZeroDivisionError):
        with agreed(comm):
            1 / 0
    with agreed(comm):
        pass
