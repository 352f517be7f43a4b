"""distnet.distributed: communicators (MPI and single-process), gradient synchronisation, and the
failure policy.  The model and optimizer never import this package; it wraps them.

For your own training loop: ``init()``, ``broadcast_parameters(model, comm)`` and
``DistributedOptimizer(optimizer, model, comm)`` (see ``api.py``)."""
from .api import DistributedOptimizer, broadcast_parameters, init
from .comm import Communicator, SingleProcessCommunicator, get_communicator, launched_world_size

__all__ = ["init", "broadcast_parameters", "DistributedOptimizer", "Communicator",
           "SingleProcessCommunicator", "get_communicator", "launched_world_size"]
