"""Batch normalisation with statistics of the GLOBAL batch, and the reducer that provides them.

PyTorch's semantics (``torch.nn.BatchNorm1d/2d``, affine, track_running_stats):
  training:  mean, var = per-channel mean and BIASED variance of the batch;
             y = weight * (x - mean) / sqrt(var + eps) + bias;
             running_mean = (1 - momentum) * running_mean + momentum * mean;
             running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)
             (the UNBIASED variance; m = values per channel in the batch);
  eval:      the same affine map with running_mean and running_var.

Global statistics: under data parallelism each rank holds a slice of the global batch.  The
layer never talks to MPI; it calls ``self.stat_reducer(arr)`` on a float64 vector of
per-channel partial SUMS and gets the global sums back (``set_stat_reducer`` installs
``lambda a: comm.allreduce(a)``; None = this process's batch is the whole batch).  Forward
reduces [sum x, sum x^2, count], so mean, variance and m (for the unbiased running
variance) are those of the global batch; backward reduces [sum dy, sum dy * xhat], the two
sums the input gradient needs:

  dx = weight / sqrt(var + eps) * (dy - sum(dy) / m - xhat * sum(dy * xhat) / m).

Parameter gradients stay LOCAL partial sums (dbias = sum dy, dweight = sum dy * xhat over
this rank's rows): the gradient allreduce of the distributed layer sums them like every
other gradient.  W ranks holding slices of a batch thus compute what one rank computes on
the whole batch, up to rounding.  Every rank must run forward and backward, also with an
empty slice (the reductions are collectives); an empty slice contributes zeros.

The sums are float64 (float32 blocks of 256 values added in float64, see ``_row_dots``), so
sum(x^2)/m - mean^2 does not lose the variance to cancellation for activations of ordinary
scale (the hand-reference test includes means of 9 with unit spread).

Per-micro-batch ("ghost") statistics, for bitwise W-invariance, are the caller's choice:
leave the reducer unset and feed micro-batches.  Note that the running statistics are then
updated once per micro-batch, so they follow the micro-batch sequence.

Layout: BatchNorm2d works on the CHWN memory the conv kernels produce (see ``kernels``),
as (C, H*W*N) rows: every per-channel operation is a broadcast over long contiguous rows,
and the output is again an NCHW view of CHWN memory, so the next conv, pool or ReLU reads
it without a copy.  Other layouts are copied once.

Cost, measured UNDER LOAD (2 shared cores, load average ~3, one BLAS thread), float32,
batch 64, forward + backward, against a 3x3 padded Conv2d of the same width on the same map
(time.perf_counter, best of 15-40 calls): 32 ch at 32x32: BatchNorm2d 5.3 ms, Conv2d
118-151 ms (~4%), ReLU 1.8 ms; 64 ch at 16x16: 3.2 ms vs 47 ms (7%); 128 ch at 8x8: 1.8 ms vs 50 ms (4%).
The two per-channel sums of each direction take ~0.3 ms each (blocked, see _row_dots); the
rest is four element-wise passes per direction.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .module import Module, Parameter


# Row sums of contiguous (C, M) data are taken in blocks of _BLOCK values in the data's own
# dtype, and the block sums are added in float64.  Measured under load (float32, C=32,
# M=65536): sum(dtype=float64) 0.81 ms, blocked 0.40 ms; square + sum(float64) 1.34 ms,
# blocked einsum 0.35 ms.  A block's float32 rounding is ~sqrt(_BLOCK) * 6e-8 relative (einsum
# accumulates in SIMD lanes), far below what float32 training resolves.
_BLOCK = 256


def _row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 per-row sums of a * b (b is None: of a) for (C, M) arrays."""
    c, m = a.shape
    if m == 0:
        return np.zeros(c)
    head = m - m % _BLOCK
    if not (a.flags.c_contiguous and (b is None or b.flags.c_contiguous)) or head == 0:
        if b is None:
            return a.sum(axis=1, dtype=np.float64)
        return np.einsum("cm,cm->c", a, b, dtype=np.float64)
    ab = a[:, :head].reshape(c, -1, _BLOCK)
    if b is None:
        blocks = np.einsum("cbm->cb", ab)
        tail = a[:, head:].sum(axis=1, dtype=np.float64)
    else:
        blocks = np.einsum("cbm,cbm->cb", ab, b[:, :head].reshape(c, -1, _BLOCK))
        tail = np.einsum("cm,cm->c", a[:, head:], b[:, head:], dtype=np.float64)
    return blocks.sum(axis=1, dtype=np.float64) + tail


def set_stat_reducer(model, reducer) -> None:
    """Install ``reducer`` (float64 partial sums -> global sums, or None for local
    statistics) on every module of ``model`` that has a ``stat_reducer`` attribute."""
    for module in model.modules():
        if hasattr(module, "stat_reducer"):
            module.stat_reducer = reducer


class _BatchNorm(Module):
    """The shared work on a (C, M) matrix of channels x values; subclasses map layouts."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 dtype=np.float32):
        if num_features < 1 or eps <= 0 or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm needs num_features >= 1, eps > 0 and momentum in [0, 1]; "
                             f"got {num_features}, {eps}, {momentum}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.weight = Parameter(np.ones(num_features, dtype=dtype), "weight")
        self.bias = Parameter(np.zeros(num_features, dtype=dtype), "bias")
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self.stat_reducer = None
        self._cache = None

    def own_parameters(self):
        return [self.weight, self.bias]

    def own_buffers(self):
        return [("running_mean", self.running_mean), ("running_var", self.running_var)]

    def _reduce(self, partial: np.ndarray) -> np.ndarray:
        if self.stat_reducer is None:
            return partial
        total = np.asarray(self.stat_reducer(partial), dtype=np.float64)
        if total.shape != partial.shape:
            raise ValueError(f"stat_reducer returned shape {total.shape}, expected {partial.shape}")
        return total

    def _forward_rows(self, z: np.ndarray) -> np.ndarray:
        """z: (C, M) of any strides -> y of the same shape (a new array)."""
        c = self.num_features
        dtype = z.dtype
        if not self.training:
            scale = self.weight.data / np.sqrt(self.running_var + self.eps)
            xhat_scale = 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
            y = z * scale[:, None]
            y += (self.bias.data - self.running_mean * scale)[:, None]
            self._cache = ("eval", z, xhat_scale.astype(dtype))
            return y
        partial = np.empty(2 * c + 1)
        partial[:c] = _row_dots(z, None)
        partial[c:2 * c] = _row_dots(z, z)
        partial[2 * c] = z.shape[1]
        total = self._reduce(partial)
        m = total[2 * c]
        if m == 0:  # every rank's slice is empty: nothing to normalise or to learn from
            self._cache = ("empty", None, None)
            return np.empty_like(z)
        if m == 1:
            raise ValueError("BatchNorm in training mode needs more than 1 value per channel")
        mean = total[:c] / m
        var = np.maximum(total[c:2 * c] / m - mean * mean, 0.0)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        mom = self.momentum
        self.running_mean *= 1.0 - mom
        self.running_mean += (mom * mean).astype(dtype)
        self.running_var *= 1.0 - mom
        self.running_var += (mom * var * (m / (m - 1))).astype(dtype)
        xhat = z - mean.astype(dtype)[:, None]
        xhat *= inv_std.astype(dtype)[:, None]
        y = xhat * self.weight.data[:, None]
        y += self.bias.data[:, None]
        self._cache = ("train", xhat, (inv_std, m))
        return y

    def _backward_rows(self, g: np.ndarray) -> np.ndarray:
        """g: (C, M) -> dL/dz (C, M); accumulates the parameter gradients."""
        kind, saved, extra = self._cache
        c = self.num_features
        dtype = g.dtype
        if kind == "empty":
            self._reduce(np.zeros(2 * c))  # the peers are in this collective too
            return np.zeros_like(g)
        xhat = saved if kind == "train" else (saved - self.running_mean[:, None]) * extra[:, None]
        partial = np.empty(2 * c)
        partial[:c] = _row_dots(g, None)
        partial[c:] = _row_dots(g, xhat)
        self.bias.grad += partial[:c].astype(dtype)
        self.weight.grad += partial[c:].astype(dtype)
        if kind == "eval":
            return g * (self.weight.data * extra)[:, None]
        inv_std, m = extra
        total = self._reduce(partial)
        scale = self.weight.data.astype(np.float64) * inv_std
        dz = g * scale.astype(dtype)[:, None]
        dz -= xhat * (scale * total[c:] / m).astype(dtype)[:, None]
        dz -= (scale * total[:c] / m).astype(dtype)[:, None]
        return dz


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) (per feature) or (N, C, L) (per channel, over N and L) input."""

    def forward(self, x):
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d expects (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L) input, got {x.shape}")
        self._shape = x.shape
        if x.ndim == 2:
            return self._forward_rows(x.T).T
        z = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(self.num_features, -1)
        return self._forward_rows(z).reshape(self.num_features, x.shape[0], x.shape[2]).transpose(1, 0, 2)

    def backward(self, grad_out):
        if grad_out.ndim == 2:
            return self._backward_rows(grad_out.T).T
        n, c, length = grad_out.shape
        g = np.ascontiguousarray(grad_out.transpose(1, 0, 2)).reshape(c, -1)
        return self._backward_rows(g).reshape(c, n, length).transpose(1, 0, 2)

    def __repr__(self):
        return f"BatchNorm1d({self.num_features}, eps={self.eps}, momentum={self.momentum})"


class BatchNorm2d(_BatchNorm):
    """Batch norm of (N, C, H, W) input per channel, over N, H and W."""

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d expects (N, {self.num_features}, H, W) input, got {x.shape}")
        xc = np.ascontiguousarray(kernels.to_chwn(x))  # no copy after a conv or pool
        y = self._forward_rows(xc.reshape(self.num_features, -1))
        return kernels.to_nchw(y.reshape(xc.shape))

    def backward(self, grad_out):
        gc = np.ascontiguousarray(kernels.to_chwn(grad_out))
        dz = self._backward_rows(gc.reshape(self.num_features, -1))
        return kernels.to_nchw(dz.reshape(gc.shape))

    def __repr__(self):
        return f"BatchNorm2d({self.num_features}, eps={self.eps}, momentum={self.momentum})"
