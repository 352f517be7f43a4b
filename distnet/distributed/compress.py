"""Gradient compression for slow networks: ``--compress fp16`` sends float16 with error feedback.

Why: on a 100 Mbit/s link the gradient allreduce of a network with a few hundred thousand
parameters takes longer than its forward and backward (README, "Slow networks").  Sending
2 bytes per value instead of 4 halves the bytes on the wire.

What travels.  The reduction is done by hand in two collectives on ``uint16`` words, because
summing float16 inside MPI is not portable (MPICH 5 has it as an extension, the MPI standard
has no float16 type) and because a float16 sum of N ranks' values rounds N times:

1. reduce-scatter: the slice (a ``--overlap`` bucket, or the whole buffer) is cut into one
   chunk per rank; each rank adds its residual (below) to its gradient, rounds each chunk to
   float16 with a power-of-two scale of its own, and an ``alltoall`` sends chunk p to rank p.
   Rank p decodes the N float16 chunks it received and sums them in the gradient's own dtype
   (float32), in rank order.
2. allgather: rank p rounds its summed chunk to float16 (a scale of its own again) and an
   ``allgather`` gives every rank every summed chunk, decoded into the gradient buffer.

Each chunk travels with its scale (a float32 in two uint16 words in front of it), so no extra
collective agrees on one.  Bytes per rank and step, for G values and N ranks: about
2 * (N - 1) / N * G * 2 (plain float32 ring allreduce: the same with 4), so half.

Scaling.  Gradients are already divided by the global batch, so they are small (1e-5 and
below is common) and float16's normal range ends at 6.1e-5.  Each chunk is multiplied by
2^k chosen so that its largest magnitude lies in (2^14, 2^15] (float16's largest finite value
is 65504), so nothing overflows and only values 2^-39 below the chunk's largest are flushed
to zero; the scale is a power of two, so scaling and unscaling are exact.

Error feedback.  What rounding loses is kept and sent later, so nothing is lost over time:
every rank keeps ``residual = (gradient + residual) - decoded(sent)`` for every value it
sends in step 1, and the owner of a chunk keeps the same for the sum it sends in step 2.  Over
K steps, the sum of the gradients the optimizer saw equals the sum of the true global
gradients minus the residuals left after step K (the ranks' summed plus the owners'), each of
them at most one rounding (2^-11 relative) of one step's values; tests/mpi/test_compress.py
checks this identity.

What it changes.  The trajectory is no longer bitwise that of one process (plain mode agrees to
float32 rounding): every step's gradient is off by a rounding that the next steps repay.
Hence no ``--deterministic`` with it (refused).  With one rank nothing travels and nothing is
rounded.  Residuals are NOT in checkpoints: they are per rank and their layout depends on the
world size and the buckets, while checkpoints hold one copy of the model written by rank 0.  A
resumed run starts with zero residuals, so it drops at most one step's rounding error (about
2^-11 of one step's gradient) and is not bitwise the uninterrupted compressed run.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from .comm import Communicator

COMPRESSIONS = ("none", "fp16")

# float16's largest finite value is 65504 < 2^16; a chunk's largest magnitude is scaled into
# (2^14, 2^15], so rounding it up can never overflow.
_TOP_EXPONENT = 15
_SCALE_WORDS = 2  # one float32 scale, as two uint16 words, in front of every chunk


def make_compression(name: str | None, comm: Communicator, grads: np.ndarray):
    """The compression GradientSync calls for ``name`` ("none"/None: no compression)."""
    if name is None or name == "none":
        return None
    if name == "fp16":
        return FP16Compression(comm, grads)
    raise UserError(f"compress must be one of {', '.join(COMPRESSIONS)}, got {name!r}")


def _power_of_two_scales(rows: np.ndarray) -> np.ndarray:
    """One scale 2^k per row: the row's largest magnitude times 2^k lies in (2^14, 2^15].

    1 for a row of zeros, or one holding inf/nan (which then travel as they are)."""
    top = np.abs(rows).max(axis=1) if rows.size else np.zeros(rows.shape[0], rows.dtype)
    scales = np.ones(rows.shape[0], dtype=np.float32)
    usable = np.isfinite(top) & (top > 0)
    if usable.any():
        _, exponent = np.frexp(top[usable])  # top = m * 2^exponent, 0.5 <= m < 1
        scales[usable] = np.ldexp(np.float32(1), np.clip(_TOP_EXPONENT - exponent, -120, 120))
    return scales


def encode(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Round ``rows`` (P, C) to float16 into ``out`` (P, 2 + C) uint16 words, each row after its
    scale; returns what the receiver will decode (in rows' dtype), for the residual."""
    scales = _power_of_two_scales(rows)
    halves = (rows * scales[:, None].astype(rows.dtype)).astype(np.float16)
    out[:, _SCALE_WORDS:] = halves.view(np.uint16)
    out[:, :_SCALE_WORDS] = scales.view(np.uint16).reshape(-1, _SCALE_WORDS)
    return halves.astype(rows.dtype) / scales[:, None].astype(rows.dtype)


def decode(words: np.ndarray, dtype) -> np.ndarray:
    """(P, 2 + C) uint16 words as written by ``encode``: the (P, C) values in ``dtype``."""
    scales = np.ascontiguousarray(words[:, :_SCALE_WORDS]).view(np.float32)[:, 0].astype(dtype)
    halves = np.ascontiguousarray(words[:, _SCALE_WORDS:]).view(np.float16)
    return halves.astype(dtype) / scales[:, None]


def _keep_finite(residual: np.ndarray) -> None:
    """A step with inf/nan gradients must not poison every later step through the residual."""
    bad = ~np.isfinite(residual)
    if bad.any():
        residual[bad] = 0


class FP16Compression:
    """Error-feedback float16 reduction of slices of one flat gradient buffer (see the module
    docstring).  ``start(view)`` begins the reduction of a slice of ``grads`` and returns a
    request whose ``wait()`` leaves the global sum in the slice, like ``iallreduce``.

    Collective order: every rank must start the same slices in the same order (GradientSync
    does) and wait them in that order; the first ``wait()`` moves every started request through
    step 1 in start order, so the allgathers of all buckets are issued before the first is
    waited for, and in the same order on every rank."""

    def __init__(self, comm: Communicator, grads: np.ndarray):
        self.comm, self.grads = comm, grads
        self.residual = np.zeros_like(grads)  # this rank's rounding debt, per value it sends
        self.owner_residual: dict[tuple[int, int], np.ndarray] = {}  # per (offset, size) slice
        self._in_step_one: list[_Request] = []
        self.bytes_sent = 0  # payload bytes this rank handed to MPI (both collectives)

    def _offset(self, view: np.ndarray) -> int:
        offset, rest = divmod(view.ctypes.data - self.grads.ctypes.data, self.grads.itemsize)
        if (view.ndim != 1 or view.dtype != self.grads.dtype or rest or view.strides != self.grads.strides
                or not 0 <= offset <= self.grads.size - view.size):
            raise ValueError("compression reduces contiguous slices of the gradient buffer it was made for")
        return int(offset)

    def start(self, view: np.ndarray) -> "_Request":
        offset, size, ranks = self._offset(view), view.size, self.comm.size
        chunk = -(-size // ranks)
        residual = self.residual[offset:offset + size]
        rows = np.zeros((ranks, chunk), dtype=self.grads.dtype)  # chunk p goes to rank p
        np.add(view, residual, out=rows.reshape(-1)[:size])
        send = np.empty((ranks, _SCALE_WORDS + chunk), dtype=np.uint16)
        sent = encode(rows, send)
        with np.errstate(invalid="ignore"):  # inf - inf: a bad step; _keep_finite clears it
            np.subtract(rows.reshape(-1)[:size], sent.reshape(-1)[:size], out=residual)
        _keep_finite(residual)
        recv = np.empty_like(send)
        self.bytes_sent += send.nbytes * (ranks - 1) // ranks
        request = _Request(self, view, offset, chunk, send, recv, self.comm.ialltoall(send, recv))
        self._in_step_one.append(request)
        return request

    def allreduce(self, view: np.ndarray) -> np.ndarray:
        self.start(view).wait()
        return view

    def _sum_and_share(self, request: "_Request") -> None:
        """Step 2 of one request: sum the chunk this rank owns, start its allgather."""
        request.step_one.wait()
        summed = decode(request.recv, self.grads.dtype).sum(axis=0)  # rank order
        key = (request.offset, request.view.size)
        owed = self.owner_residual.setdefault(key, np.zeros(request.chunk, dtype=self.grads.dtype))
        summed += owed
        mine = np.empty((1, _SCALE_WORDS + request.chunk), dtype=np.uint16)
        sent = encode(summed[None], mine)[0]
        with np.errstate(invalid="ignore"):
            np.subtract(summed, sent, out=owed)
        _keep_finite(owed)
        request.gathered = np.empty((self.comm.size, _SCALE_WORDS + request.chunk), dtype=np.uint16)
        self.bytes_sent += mine.nbytes * (self.comm.size - 1)
        request.step_two = self.comm.iallgather(mine[0], request.gathered)

    def _advance_all(self) -> None:
        while self._in_step_one:
            self._sum_and_share(self._in_step_one.pop(0))


class _Request:
    def __init__(self, owner, view, offset, chunk, send, recv, step_one):
        self.owner, self.view, self.offset, self.chunk = owner, view, offset, chunk
        self.send, self.recv, self.step_one = send, recv, step_one
        self.step_two = self.gathered = None
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        self.owner._advance_all()
        self.step_two.wait()
        size = self.view.size
        self.view[:] = decode(self.gathered, self.view.dtype).reshape(-1)[:size]
        self.done = True
        self.send = self.recv = self.gathered = None
