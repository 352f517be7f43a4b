"""Collective semantics, sharding and sharded evaluation under real MPI.

Run as ``mpirun -n N python -m pytest --with-mpi tests/mpi`` (tests/test_mpi_suite.py does,
for N = 2 and 4).
"""
import numpy as np
import pytest

from distnet.data.loader import GlobalBatchLoader
from distnet.data.synthetic import synthetic
from distnet.distributed import SingleProcessCommunicator
from distnet.distributed.deterministic import pairwise_sum
from distnet.distributed.sync import GradientSync
from distnet.evaluation import evaluate
from distnet.nn import CrossEntropyLoss, build_model

pytestmark = pytest.mark.mpi(min_size=2)


def test_allreduce_sum_and_max_in_place(comm):
    buf = np.arange(5, dtype=np.float32) + comm.rank
    out = comm.allreduce(buf)
    assert out is buf
    n = comm.size
    np.testing.assert_array_equal(buf, n * np.arange(5) + n * (n - 1) / 2)
    flag = np.array([1.0 if comm.rank == n - 1 else 0.0])
    comm.allreduce(flag, op="max")
    assert flag[0] == 1.0


def test_iallreduce(comm):
    buf = np.full(1000, comm.rank + 1, dtype=np.float64)
    comm.iallreduce(buf[:500]).wait()
    assert (buf[:500] == comm.size * (comm.size + 1) / 2).all() and (buf[500:] == comm.rank + 1).all()


@pytest.mark.parametrize("root", [0, -1])
def test_broadcast(comm, root):
    root = root % comm.size
    buf = np.full(7, float(comm.rank))
    comm.broadcast(buf, root=root)
    assert (buf == root).all()
    assert comm.broadcast_object({"r": comm.rank}, root=root) == {"r": root}


def test_allgather_and_gather_object(comm):
    rows = comm.allgather(np.array([comm.rank, 10 * comm.rank]))
    np.testing.assert_array_equal(rows, [[r, 10 * r] for r in range(comm.size)])
    gathered = comm.gather_object(("rank", comm.rank))
    if comm.rank == 0:
        assert gathered == [("rank", r) for r in range(comm.size)]
    else:
        assert gathered is None


@pytest.mark.parametrize("n,batch", [(100, 10), (101, 16), (7, 4), (5, 8), (37, 3), (64, 64)])
def test_sharding_covers_every_sample_once(comm, n, batch):
    """Concatenating the ranks' slices of each step gives the global batch, and one epoch's
    global batches give every sample exactly once, for uneven sizes and empty slices too."""
    dataset = np.zeros(n)
    loader = GlobalBatchLoader(dataset, batch, seed=5, rank=comm.rank, world=comm.size)
    steps = comm.allgather(np.array([loader.steps_per_epoch]))
    assert (steps == steps[0]).all()
    for epoch in (0, 1):
        seen = []
        for index in range(loader.steps_per_epoch):
            local, count = loader.local_indices(epoch, index)
            parts = comm.gather_object(local.tolist())
            if comm.rank == 0:
                joined = [i for part in parts for i in part]
                assert joined == loader.global_indices(epoch, index).tolist()
                assert len(joined) == count
                seen += joined
        if comm.rank == 0:
            assert sorted(seen) == list(range(n))


def test_sharded_evaluation_equals_single_process(comm):
    test = synthetic("test", n=101)
    model = build_model("lenet5", seed=0)
    distributed = evaluate(model, test, loss=CrossEntropyLoss(), batch_size=37, comm=comm)
    single = evaluate(model, test, loss=CrossEntropyLoss(), batch_size=37, comm=SingleProcessCommunicator())
    assert distributed["samples"] == single["samples"] == 101
    assert distributed["accuracy"] == single["accuracy"]
    assert distributed["loss"] == pytest.approx(single["loss"], rel=1e-6)


def test_overlapped_buckets_equal_one_allreduce(comm):
    """--overlap's bucketed, non-blocking allreduces give the same sums as one call."""
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    results = []
    for overlap in (False, True):
        model = build_model("lenet5", seed=1)
        sync = GradientSync(comm, model, overlap=overlap, bucket_bytes=16 * 1024)
        if overlap:
            assert len(sync.buckets) > 2
        crit = CrossEntropyLoss()
        crit(model(x), y)
        model.zero_grad()
        model.backward(crit.backward())
        sync.finish()
        results.append(model.flat_grads.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_pairwise_sum_order_is_fixed():
    stack = np.array([[1e8], [1.0], [-1e8], [1.0], [3.0]], dtype=np.float32)
    # ((1e8 + 1) + (-1e8 + 1)) + 3 in float32: 1e8+1 rounds to 1e8
    expected = np.float32(np.float32(np.float32(1e8) + np.float32(-1e8 + 1.0)) + np.float32(3.0))
    assert pairwise_sum(stack)[0] == expected
