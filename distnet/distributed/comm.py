"""The communicator interface and its single-process implementation.

Everything above this layer (trainer, coordinator, evaluation) talks to a Communicator and
never to MPI directly, so every code path runs the same with and without ``mpirun``.
"""
from __future__ import annotations

import os
import sys

import numpy as np


class Communicator:
    """What the trainer needs from a group of ranks.  Buffers are NumPy arrays."""

    rank: int = 0
    size: int = 1

    @property
    def is_coordinator(self) -> bool:
        return self.rank == 0

    def allreduce(self, buf: np.ndarray, op: str = "sum") -> np.ndarray:
        """In-place elementwise reduction (``sum`` or ``max``) across ranks; returns buf."""
        raise NotImplementedError

    def iallreduce(self, buf: np.ndarray):
        """Start an in-place SUM allreduce; returns an object with ``wait()``."""
        raise NotImplementedError

    def ialltoall(self, send: np.ndarray, recv: np.ndarray):
        """Start an alltoall: row p of ``send`` (shape (size, ...)) goes to rank p, which
        receives it as row ``rank`` of its ``recv``; returns an object with ``wait()``."""
        raise NotImplementedError

    def iallgather(self, send: np.ndarray, recv: np.ndarray):
        """Start an allgather into ``recv`` (shape (size,) + send.shape), in rank order."""
        raise NotImplementedError

    def broadcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """In place: every rank's buf becomes root's."""
        raise NotImplementedError

    def broadcast_object(self, obj, root: int = 0):
        raise NotImplementedError

    def gather_object(self, obj, root: int = 0):
        """List of every rank's obj on root, None elsewhere."""
        raise NotImplementedError

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        """Stack every rank's equally shaped buf along a new first axis, in rank order."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End the whole job now, on every rank."""
        raise NotImplementedError


class _Done:
    def wait(self):
        return None


class SingleProcessCommunicator(Communicator):
    """World of one: every collective is the identity."""

    rank = 0
    size = 1

    def allreduce(self, buf, op="sum"):
        return buf

    def iallreduce(self, buf):
        return _Done()

    def ialltoall(self, send, recv):
        recv[...] = send
        return _Done()

    def iallgather(self, send, recv):
        recv[0] = send
        return _Done()

    def broadcast(self, buf, root=0):
        return buf

    def broadcast_object(self, obj, root=0):
        return obj

    def gather_object(self, obj, root=0):
        return [obj]

    def allgather(self, buf):
        return np.asarray(buf)[None].copy()

    def barrier(self):
        return None

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# Environment variables through which MPI launchers announce the world size.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def launched_world_size() -> int:
    """World size announced by an MPI launcher's environment, 1 when not launched by one.

    Slurm's ``srun`` starts the ranks itself.  With ``--mpi=pmi2`` it sets PMI_SIZE like
    mpirun; with ``--mpi=pmix`` (Open MPI) it announces only a PMIx namespace, so the size is
    the step's task count.  Without a PMI plugin (``--mpi=none``, many sites' default) every
    task would train a model of its own and all of them would write the same checkpoints:
    that is refused, naming the fix.
    """
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    slurm_tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    if slurm_tasks.isdigit() and int(slurm_tasks) > 1:
        if "PMIX_NAMESPACE" in os.environ or "PMIX_RANK" in os.environ:
            return int(slurm_tasks)
        from ..errors import UserError

        raise UserError(f"srun: {slurm_tasks} tasks but no MPI wire-up (PMI), so each would train alone: "
                        "use srun --mpi=pmi2 (MPICH) or --mpi=pmix (Open MPI)")
    return 1


def get_communicator() -> Communicator:
    """MPI when started by ``mpirun`` with more than one rank, else the single-process one.

    Checking the launcher's environment first means a plain ``python -m distnet.train``
    never imports (or needs) mpi4py.
    """
    if launched_world_size() <= 1 and os.environ.get("DISTNET_FORCE_MPI") != "1":
        return SingleProcessCommunicator()
    from .mpi import MPICommunicator  # deferred: mpi4py is an optional dependency

    return MPICommunicator()
