"""The distributed layer for people who write their own loop, in Horovod's shape.

    comm = distnet.distributed.init()                 # .rank, .size; works without mpirun too
    distnet.distributed.broadcast_parameters(model, comm)
    opt = distnet.distributed.DistributedOptimizer(optim.SGD(model, lr=0.01), model, comm)
    for x, y in my_batches_for(comm.rank):
        model.zero_grad(); crit(model(x), y); model.backward(crit.backward())
        opt.step()                                    # averages model.flat_grads, then steps

``distnet.fit`` is written from these same pieces.  They wrap the model and the optimizer;
neither of those ever imports MPI.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .comm import Communicator, get_communicator
from .sync import GradientSync

_world: Communicator | None = None


def init(*, abort_on_error: bool = True) -> Communicator:
    """The communicator of this job: MPI's world under ``mpirun -n N`` (N > 1), else a
    single-process one, so the same script runs both ways.  The same object on every call.

    With ``abort_on_error`` (the default) and several ranks, an exception that escapes on any
    rank ends the whole job at once (MPI_Abort) with that rank's error, instead of leaving
    the other ranks blocked forever in their next collective."""
    global _world
    if _world is None:
        _world = get_communicator()
        if abort_on_error and _world.size > 1:
            from .faults import install_excepthook
            install_excepthook(_world)
    return _world


def broadcast_parameters(model, comm: Communicator, root: int = 0) -> None:
    """Make every rank's parameters and buffers (BatchNorm running statistics) root's.

    Call once after building the model (ranks that drew their own initial weights then start
    from one set) and after loading weights on one rank only."""
    if comm.size == 1:
        return
    comm.broadcast(model.flat_params, root=root)
    buffers = getattr(model, "flat_buffers", None)
    if buffers is not None and buffers.size:
        comm.broadcast(buffers, root=root)


class DistributedOptimizer:
    """Wraps an optimizer: ``step()`` first makes ``model.flat_grads`` the same global
    gradient on every rank, then runs the wrapped optimizer's step.

    What it expects in ``model.flat_grads`` depends on ``op``:

    * ``op="average"`` (the default, Horovod's): each rank's gradient of the MEAN loss over its
      own slice.  ``step()`` sums over the ranks and divides by the world size, which is the
      mean gradient of the global batch when every rank's slice has the same size.
    * ``op="sum"``: each rank's gradient of the SUM of its samples' losses divided by the
      GLOBAL batch size (``local mean * local_count / global_count``).  ``step()`` only sums,
      and the result is the exact mean gradient of the global batch also for uneven slices
      (a short last batch, a rank with no samples at all).  This is what ``distnet.fit`` does.

    ``overlap=True`` starts the reduction in buckets while backward is still running (see
    ``sync.py``); it registers a hook on the model, so use one DistributedOptimizer per model.
    ``compress="fp16"`` sends the gradients as float16 with error feedback (``compress.py``):
    half the bytes, and no longer the bitwise trajectory of one process.
    The wrapped optimizer's attributes (``lr``, ``state_dict``...) are reachable through this
    object.
    """

    def __init__(self, optimizer, model, comm: Communicator, *, op: str = "average",
                 overlap: bool = False, bucket_mb: float = 1.0, compress: str | None = None):
        if op not in ("average", "sum"):
            raise ValueError(f"op must be 'average' or 'sum', got {op!r}")
        self.optimizer, self.model, self.comm, self.op = optimizer, model, comm, op
        self.sync = GradientSync(comm, model, overlap=overlap, bucket_bytes=int(bucket_mb * (1 << 20)),
                                 compress=compress)
        self._skip = False

    def synchronize(self) -> None:
        """Reduce the gradients now (``step`` does this itself)."""
        self.sync.finish()
        if self.op == "average" and self.comm.size > 1:
            np.multiply(self.model.flat_grads, 1.0 / self.comm.size, out=self.model.flat_grads)

    def close(self) -> None:
        """Detach the gradient synchronisation from the model (the overlap hook)."""
        self.sync.close()

    @contextmanager
    def skip_synchronize(self):
        """Inside, ``step()`` does not reduce: for gradients that are already global (as
        Horovod's ``optimizer.skip_synchronize()``; deterministic mode's micro-batch sum)."""
        self._skip = True
        try:
            yield self
        finally:
            self._skip = False

    def step(self) -> None:
        """Reduce the gradients (unless inside ``skip_synchronize()``), then step."""
        if not self._skip:
            self.synchronize()
        self.optimizer.step()

    def zero_grad(self) -> None:
        self.model.zero_grad()

    # the wrapped optimizer's learning rate and state, as if this were it
    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state) -> None:
        self.optimizer.load_state_dict(state)

    def __getattr__(self, name):
        if name == "optimizer":  # not set yet (during unpickling, copy): no recursion
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r}, op={self.op!r}, ranks={self.comm.size})"
