"""Runs the tests under tests/mpi with real MPI, as ``mpirun -n N pytest --with-mpi``."""
import os
import subprocess
import sys

import pytest

from conftest import REPO, mpirun


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_suite(ranks):
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", DISTNET_OFFLINE="1")
    cmd = [mpirun(), "-n", str(ranks), sys.executable, "-m", "pytest", "--with-mpi", "-q",
           "-p", "no:cacheprovider", str(REPO / "tests" / "mpi")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]
