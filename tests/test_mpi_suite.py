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


def test_mpirun_and_mpi4py_use_the_same_mpi():
    """mpi4py's wheel picks its MPI library when imported (MPICH or Open MPI, whichever the
    environment holds).  Ranks whose library does not belong to the mpirun that started them
    come up as separate worlds of one and would each train alone: check they agree, and that
    distnet reads the world size from that launcher's environment."""
    from conftest import mpi_is_open_mpi

    # one os.write per rank: print() may write the text and its newline separately, and the
    # two ranks' halves then interleave in mpirun's output ("22 2 [...]" was seen)
    code = ("import os; from mpi4py import MPI; from distnet.distributed import launched_world_size; "
            "os.write(1, f'{MPI.COMM_WORLD.Get_size()} {launched_world_size()} "
            "{MPI.Get_library_version().split()[0:2]}\\n'.encode())")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([mpirun(), "-n", "2", sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    expected = "['Open', 'MPI']" if mpi_is_open_mpi() else "['MPICH"
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("2 2 " + expected) for line in lines), r.stdout
