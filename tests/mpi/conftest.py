"""Fixtures of the tests that run under mpirun (tests/test_mpi_suite.py starts them).

One place for them: each file used to define its own copy of ``comm`` and ``watchdog``."""
import pytest

from distnet.distributed import init
from distnet.distributed.faults import Watchdog


@pytest.fixture(scope="session")
def comm():
    """The job's communicator (``distnet.distributed.init``: one object for the session)."""
    c = init()
    assert c.size >= 2, "these tests must run under mpirun with several ranks"
    return c


@pytest.fixture
def watchdog(comm):
    """A regression in a collective is a hang: turn it into an abort of the suite.  A file
    whose every test talks to its peers takes it for all of them with
    ``pytestmark = pytest.mark.usefixtures("watchdog")``."""
    dog = Watchdog(comm, timeout=60).start()
    yield dog
    dog.stop()
