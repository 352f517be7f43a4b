"""World-size-independent gradients, down to the bit.

A float sum depends on its order, and an allreduce's order depends on the number of ranks.
So instead: each global batch is cut into K equal micro-batches (K fixed for the run,
divisible by the world size); each micro-batch's gradient is computed on its own into the
flat buffer, the ranks exchange them (allgather), and every rank adds the K vectors in the
same fixed pairwise order.  Each micro-batch gradient is the same computation on the same
data whichever rank does it, so the result is bitwise identical for 1, 2, 4 ... ranks.
Cost: K smaller matrix products instead of one, and K gradient vectors on the wire.
"""
from __future__ import annotations

import numpy as np

from ..data.loader import shard_bounds
from ..errors import UserError


def pairwise_sum(stack: np.ndarray) -> np.ndarray:
    """Sum the rows of ``stack`` in a fixed tree order: (0+1)+(2+3), ... ."""
    rows = stack
    while rows.shape[0] > 1:
        even = rows.shape[0] // 2 * 2
        summed = rows[0:even:2] + rows[1:even:2]
        rows = np.concatenate([summed, rows[even:]]) if rows.shape[0] % 2 else summed
    return rows[0].copy()


class DeterministicStep:
    """Computes the global mean gradient into ``model.flat_grads`` micro-batch by micro-batch."""

    def __init__(self, comm, model, micro_batches: int):
        if micro_batches % comm.size:
            raise UserError(f"--micro-batches: {micro_batches} is not divisible by the world size "
                            f"{comm.size}; --deterministic needs it to be")
        self.comm, self.model, self.k = comm, model, micro_batches
        self.mine = range(comm.rank * micro_batches // comm.size, (comm.rank + 1) * micro_batches // comm.size)
        self.local = np.zeros((len(self.mine), model.flat_grads.size), dtype=model.flat_grads.dtype)

    def micro_slices(self, global_count: int):
        """(micro-batch index, [start, stop) within the global batch) of this rank's share."""
        return [(j, shard_bounds(global_count, j, self.k)) for j in self.mine]

    def run(self, x_global_part, y_global_part, offset: int, global_count: int, compute):
        """``compute(x, y, scale, first_index)`` runs forward/backward into flat_grads and
        returns stats; ``first_index`` is the micro-batch's first position in the global batch
        (what keyed dropout needs).

        ``x_global_part`` holds samples [offset, offset+len) of the global batch: exactly the
        union of this rank's micro-batches.

        Buffers (BatchNorm running statistics, updated by each micro-batch's forward on
        whichever rank holds it) would otherwise depend on the world size.  So every
        non-empty micro-batch starts from the step's initial buffers, its updated buffers are
        gathered like its gradient, and the new buffers are their pairwise mean: one momentum
        update per step with the mean of the micro-batch statistics, bitwise the same for
        any world size."""
        buffers = getattr(self.model, "flat_buffers", None)
        track = buffers is not None and buffers.size > 0
        if track:
            start_buffers = buffers.copy()
            local_buffers = np.zeros((len(self.mine), buffers.size), dtype=buffers.dtype)
        stats = np.zeros(3)
        slices = self.micro_slices(global_count)
        for row, (j, (start, stop)) in enumerate(slices):
            self.model.zero_grad()
            if stop > start:
                if track:
                    buffers[...] = start_buffers
                stats += compute(x_global_part[start - offset:stop - offset],
                                 y_global_part[start - offset:stop - offset], 1.0 / global_count, start)
                if track:
                    local_buffers[row] = buffers
            self.local[row] = self.model.flat_grads
        everything = self.comm.allgather(self.local).reshape(self.k, -1)
        self.model.flat_grads[...] = pairwise_sum(everything)
        if track:
            every_buffer = self.comm.allgather(local_buffers).reshape(self.k, -1)
            used = [j for j in range(self.k) if shard_bounds(global_count, j, self.k)[1]
                    > shard_bounds(global_count, j, self.k)[0]]
            buffers[...] = pairwise_sum(every_buffer[used]) / buffers.dtype.type(len(used))
        return stats
