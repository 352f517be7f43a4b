"""distnet.distributed: communicators (MPI and single-process), gradient synchronisation, and the
failure policy.  The model and optimizer never import this package; it wraps them."""
from .comm import Communicator, SingleProcessCommunicator, get_communicator, launched_world_size

__all__ = ["Communicator", "SingleProcessCommunicator", "get_communicator", "launched_world_size"]
