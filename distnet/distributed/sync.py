"""Gradient synchronisation over the model's flat gradient buffer.

Plain mode: one in-place SUM-allreduce of the whole buffer after backward (every rank has
already divided by the global batch size, so the sum is the global mean gradient).

Overlap mode (``--overlap``): the buffer is cut into contiguous buckets in reverse layer
order (the order in which backward finishes them, as PyTorch DDP does); as soon as backward
has passed every layer of a bucket, a non-blocking allreduce of that slice starts, and
``finish()`` waits for all of them before the optimizer step.

Every rank must issue the same collectives in the same order (MPI's rule for collectives on
one communicator).  A rank whose slice of the global batch is empty may not run backward at
all, or may run it on 0 samples; either way its buckets still have to be reduced, or its
peers wait forever in theirs.  So buckets are started strictly in plan order, never twice in
a step, and ``finish()`` starts, in that same order, every bucket that backward has not
started, before waiting for them all.  Whatever mix of "backward ran" and "backward did not
run" the ranks are in, each issues bucket 0, 1, 2, ... exactly once.

Compression (``--compress fp16``, ``compress.py``): the same buckets and order, each reduced
by the compression's ``start(view)`` instead of ``iallreduce``.

Deterministic mode lives in ``deterministic.py``: it changes how gradients are computed,
not only how they are summed.
"""
from __future__ import annotations


from .comm import Communicator
from .compress import make_compression


class GradientSync:
    def __init__(self, comm: Communicator, model, overlap: bool = False, bucket_bytes: int = 1 << 20,
                 compress: str | None = None):
        self.comm = comm
        self.compression = make_compression(compress, comm, model.flat_grads)
        self._start = self.compression.start if self.compression is not None else comm.iallreduce
        self.model = model
        self.grads = model.flat_grads
        self.overlap = overlap and comm.size > 1
        self._pending = []
        if self.overlap:
            self.buckets = self._plan_buckets(bucket_bytes)
            self._bucket_of_layer = {b["last_layer"]: number for number, b in enumerate(self.buckets)}
            model.backward_hooks.append(self._on_layer_done)

    def close(self) -> None:
        """Detach from the model (its backward hook), so the model can be trained without it."""
        if self.overlap and self._on_layer_done in self.model.backward_hooks:
            self.model.backward_hooks.remove(self._on_layer_done)

    def _plan_buckets(self, bucket_bytes: int):
        """Group layers, last to first, into buckets of about ``bucket_bytes`` of gradients.

        A bucket is a contiguous slice of the flat buffer because layers own contiguous
        spans in order; it is ready when backward has finished its lowest-index layer."""
        spans, offset = [], 0
        for index, layer in enumerate(self.model.layers):
            size = sum(p.size for p in layer.parameters())
            spans.append((index, offset, offset + size))
            offset += size
        itemsize = self.grads.itemsize
        buckets, current = [], None
        for index, start, stop in reversed(spans):
            if stop == start:
                continue
            if current is None:
                current = {"start": start, "stop": stop, "last_layer": index}
            else:
                current["start"], current["last_layer"] = start, index
            if (current["stop"] - current["start"]) * itemsize >= bucket_bytes:
                buckets.append(current)
                current = None
        if current is not None:
            buckets.append(current)
        return buckets

    def _on_layer_done(self, index: int) -> None:
        number = self._bucket_of_layer.get(index)
        if number is None:
            return
        if number < len(self._pending):
            raise RuntimeError(f"gradient bucket {number} was finished twice in one step: backward ran "
                               f"again before GradientSync.finish() (its allreduce is already in flight)")
        self._start_through(number)

    def _start_through(self, last: int) -> None:
        """Start every bucket not started yet up to number ``last``, in plan order.

        Backward finishes buckets in plan order, so from the hook this starts exactly one;
        starting any skipped earlier one first keeps the order the same on every rank."""
        for number in range(len(self._pending), last + 1):
            bucket = self.buckets[number]
            view = self.grads[bucket["start"]:bucket["stop"]]
            self._pending.append(self._start(view))

    def finish(self) -> None:
        """Make ``model.flat_grads`` the global-batch mean gradient on every rank.

        Also correct on a rank that ran no backward this step (an empty slice): its buckets
        (zeros) are started here, in the same order as on the ranks whose backward did."""
        if self.comm.size == 1:
            return
        if self.overlap:
            self._start_through(len(self.buckets) - 1)
            for request in self._pending:
                request.wait()
            self._pending.clear()
        elif self.compression is not None:
            self.compression.allreduce(self.grads)
        else:
            self.comm.allreduce(self.grads)
