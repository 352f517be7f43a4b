"""The mpi4py implementation of the Communicator."""
from __future__ import annotations

import sys

import numpy as np

from ..errors import UserError

try:
    from mpi4py import MPI
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise UserError("launched under mpirun but mpi4py is not installed; "
                    "pip install 'distnet[mpi]' (mpi4py and the mpich wheel)") from exc

from .comm import Communicator

_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


class MPICommunicator(Communicator):
    def __init__(self, comm=None):
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def allreduce(self, buf, op="sum"):
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=_OPS[op])
        return buf

    def iallreduce(self, buf):
        return self.comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def ialltoall(self, send, recv):
        return self.comm.Ialltoall(send, recv)

    def iallgather(self, send, recv):
        return self.comm.Iallgather(send, recv)

    def broadcast(self, buf, root=0):
        self.comm.Bcast(buf, root=root)
        return buf

    def broadcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def gather_object(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def allgather(self, buf):
        buf = np.ascontiguousarray(buf)
        out = np.empty((self.size,) + buf.shape, dtype=buf.dtype)
        self.comm.Allgather(buf, out)
        return out

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)
