"""Gradient synchronisation over the model's flat gradient buffer.

Plain mode: one in-place SUM-allreduce of the whole buffer after backward (every rank has
already divided by the global batch size, so the sum is the global mean gradient).

Overlap mode (``--overlap``): the buffer is cut into contiguous buckets in reverse layer
order (the order in which backward finishes them, as PyTorch DDP does); as soon as backward
has passed every layer of a bucket, a non-blocking allreduce of that slice starts, and
``finish()`` waits for all of them before the optimizer step.

Deterministic mode lives in ``deterministic.py``: it changes how gradients are computed,
not only how they are summed.
"""
from __future__ import annotations

import numpy as np

from .comm import Communicator


class GradientSync:
    def __init__(self, comm: Communicator, model, overlap: bool = False, bucket_bytes: int = 1 << 20):
        self.comm = comm
        self.model = model
        self.grads = model.flat_grads
        self.overlap = overlap and comm.size > 1
        self._pending = []
        if self.overlap:
            self.buckets = self._plan_buckets(bucket_bytes)
            self._bucket_of_layer = {b["last_layer"]: b for b in self.buckets}
            model.backward_hooks.append(self._on_layer_done)

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
        bucket = self._bucket_of_layer.get(index)
        if bucket is not None:
            view = self.grads[bucket["start"]:bucket["stop"]]
            self._pending.append(self.comm.iallreduce(view))

    def finish(self) -> None:
        """Make ``model.flat_grads`` the global-batch mean gradient on every rank."""
        if self.comm.size == 1:
            return
        if self.overlap:
            for request in self._pending:
                request.wait()
            self._pending.clear()
        else:
            self.comm.allreduce(self.grads)
