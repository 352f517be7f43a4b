"""GradientSync's bucket plan and the order in which it starts the bucket allreduces, with a
fake two-rank communicator in one process (the MPI behaviour itself is tested under mpirun
in tests/mpi/test_uneven_shards.py).  MPI requires every rank to issue its collectives in
the same order, so the order is the contract: bucket 0, 1, 2, ... exactly once per step,
whether backward ran on data, ran on 0 samples, or did not run at all."""
import numpy as np
import pytest

from distnet.distributed.sync import GradientSync
from distnet.nn import CrossEntropyLoss, build_model


class Request:
    def __init__(self, log, span):
        self.log, self.span = log, span

    def wait(self):
        self.log.append(("wait", self.span))


class FakeComm:
    """Size 2; records what is started, waited for and reduced; a sum over two equal ranks
    doubles the buffer, so a reduced bucket is visible in the result."""

    rank, size = 0, 2

    def __init__(self, grads):
        self.grads, self.log = grads, []

    def _span(self, buf):
        start = (buf.__array_interface__["data"][0] - self.grads.__array_interface__["data"][0]) // buf.itemsize
        return int(start), int(start + buf.size)

    def iallreduce(self, buf):
        span = self._span(buf)
        self.log.append(("start", span))
        buf *= 2
        return Request(self.log, span)

    def allreduce(self, buf, op="sum"):
        self.log.append(("allreduce", self._span(buf)))
        buf *= 2
        return buf


def setup(overlap=True, bucket_bytes=16 * 1024):
    model = build_model("lenet5", seed=3)
    comm = FakeComm(model.flat_grads)
    return model, comm, GradientSync(comm, model, overlap=overlap, bucket_bytes=bucket_bytes)


def backward(model, n=4):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    crit = CrossEntropyLoss()
    crit(model(x), rng.integers(0, 10, n))
    model.zero_grad()
    model.backward(crit.backward())


def test_buckets_tile_the_buffer_in_reverse_layer_order():
    model, _, sync = setup()
    spans = [(b["start"], b["stop"]) for b in sync.buckets]
    assert len(spans) == 3
    assert spans[0][1] == model.flat_grads.size and spans[-1][0] == 0
    assert all(a[0] == b[1] for a, b in zip(spans, spans[1:]))  # contiguous, last layer first
    sizes = [(stop - start) * 4 for start, stop in spans]
    assert all(size >= 16 * 1024 for size in sizes[:-1])  # only the last may be short
    # one bucket when the size allows everything
    assert len(setup(bucket_bytes=1 << 30)[2].buckets) == 1
    # one bucket per layer with parameters when it is tiny
    assert len(setup(bucket_bytes=1)[2].buckets) == 5


def expected_log(sync):
    spans = [(b["start"], b["stop"]) for b in sync.buckets]
    return [("start", s) for s in spans] + [("wait", s) for s in spans]


def test_backward_starts_each_bucket_once_in_order_and_finish_waits():
    model, comm, sync = setup()
    backward(model)
    assert [e for e in comm.log if e[0] == "start"] == expected_log(sync)[:3]  # started during backward
    before = model.flat_grads.copy()
    sync.finish()
    assert comm.log == expected_log(sync)
    np.testing.assert_array_equal(model.flat_grads, before)  # finish only waits: nothing reduced twice
    comm.log.clear()
    backward(model)  # the next step starts afresh
    sync.finish()
    assert comm.log == expected_log(sync)


def test_a_rank_without_backward_starts_every_bucket_in_finish():
    model, comm, sync = setup()
    model.zero_grad()
    model.flat_grads[...] = 1.0
    sync.finish()
    assert comm.log == expected_log(sync)
    assert (model.flat_grads == 2.0).all()  # every element was in exactly one bucket


def test_a_backward_over_zero_samples_matches_too():
    model, comm, sync = setup()
    model.zero_grad()
    for index in range(len(model.layers) - 1, -1, -1):  # what backward does with 0 samples
        for hook in model.backward_hooks:
            hook(index)
    sync.finish()
    assert comm.log == expected_log(sync)


def test_a_skipped_bucket_is_started_before_a_later_one():
    model, comm, sync = setup()
    last_layer_of_bucket_1 = sync.buckets[1]["last_layer"]
    sync._on_layer_done(last_layer_of_bucket_1)  # bucket 0's hook never came
    spans = [(b["start"], b["stop"]) for b in sync.buckets]
    assert comm.log == [("start", spans[0]), ("start", spans[1])]
    sync.finish()
    assert comm.log == expected_log(sync)


def test_a_second_backward_before_finish_is_refused():
    model, comm, sync = setup()
    backward(model)
    with pytest.raises(RuntimeError, match="finished twice in one step"):
        backward(model)


def test_plain_mode_is_one_allreduce_and_a_world_of_one_nothing():
    model, comm, sync = setup(overlap=False)
    backward(model)
    sync.finish()
    assert comm.log == [("allreduce", (0, model.flat_grads.size))]
    model = build_model("lenet5", seed=3)
    one = FakeComm(model.flat_grads)
    one.size = 1
    sync = GradientSync(one, model, overlap=True)
    assert not sync.overlap and model.backward_hooks == []
    backward(model)
    sync.finish()
    assert one.log == []
