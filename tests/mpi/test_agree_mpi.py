"""``faults.agree`` with real peers: one rank's failure is raised on every rank, the lowest
failing rank's, with its message and exit code, and marked for a plain exit."""
import pytest

from distnet.distributed.faults import EXIT_FAILURE, EXIT_USER_ERROR, agree, agreed
from distnet.errors import UserError

pytestmark = pytest.mark.usefixtures("watchdog")


def test_nothing_failed_returns_everywhere(comm):
    assert agree(comm, None) is None
    with agreed(comm):
        pass


def test_the_last_rank_alone_fails_and_every_rank_raises_its_message(comm):
    last = comm.size - 1
    own = UserError(f"data missing on rank {last}") if comm.rank == last else None
    with pytest.raises(UserError, match=f"^data missing on rank {last}$") as info:
        agree(comm, own)
    assert info.value.distnet_agreed == (EXIT_USER_ERROR, comm.rank == last)
    if comm.rank == last:
        assert info.value is own


def test_the_lowest_failing_rank_speaks_and_a_crash_exits_1(comm):
    with pytest.raises(KeyError if comm.rank == 1 else RuntimeError) as info:
        with agreed(comm):
            if comm.rank >= 1:
                raise KeyError(f"rank {comm.rank}")
    assert info.value.distnet_agreed == (EXIT_FAILURE, comm.rank == 1)
    assert "rank 1" in str(info.value)
