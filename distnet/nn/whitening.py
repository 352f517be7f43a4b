"""PatchWhitening: a fixed first convolution whose filters whiten the image's small patches.

Why: fast CIFAR-10 training (Page 2018; Jordan's airbench, 2024) starts the network with a
2x2 convolution whose filters are the principal components of the training images' 2x2
patches, each scaled by one over the square root of its variance, and a negated copy of
each (so that a ReLU after it passes both signs).  The next layer then sees decorrelated,
unit-variance inputs from the first step, and the layer is never trained: the published
recipe credits it with a large share of its epochs saved.

The filters depend on the data, so the model builder cannot set them.  The layer starts as
all-zero filters and ``init_from_data(x)`` (``initialise_from_data(model, x)`` for a whole
model; the trainer calls it with the first training images before broadcasting the
weights) computes them.  They are a *buffer*, not a Parameter: the optimizer never sees
them, broadcast and checkpoints carry them with the BatchNorm statistics, and no weight
gradient is computed.  The bias is an ordinary trained Parameter.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .module import Module, Parameter


class PatchWhitening(Module):
    """(N, C, H, W) -> (N, 2*C*k*k, H-k+1, W-k+1): the whitened k x k patches and their negation."""

    fresh_output = fresh_input_grad = True  # y and dx are new arrays, not kept

    def __init__(self, in_channels: int, patch: int = 2, eps: float = 5e-4, *, dtype=np.float32):
        if in_channels < 1 or patch < 1 or eps <= 0:
            raise ValueError(f"PatchWhitening needs in_channels >= 1, patch >= 1 and eps > 0; "
                             f"got {in_channels}, {patch}, {eps}")
        self.in_channels, self.patch, self.eps = int(in_channels), int(patch), float(eps)
        self.out_channels = 2 * in_channels * patch * patch
        self.filters = np.zeros((self.out_channels, in_channels, patch, patch), dtype=dtype)
        self.bias = Parameter(np.zeros(self.out_channels, dtype=dtype), "bias")
        self.compute_input_grad = True
        self._cache = None
        self._workspace = {}
        self._filters_grad = None  # where the kernel's weight gradient goes (discarded)

    def own_parameters(self):
        return [self.bias]

    def own_buffers(self):
        return [("filters", self.filters)]

    def init_from_data(self, x: np.ndarray, chunk: int = 500) -> None:
        """Set the filters from images ``x`` (N, C, H, W), as the model will see them
        (normalised).  The k x k patches' second-moment matrix (uncentred: the data are
        normalised to mean ~0) is accumulated ``chunk`` images at a time in float64, so 5,000
        CIFAR images take ~40 MB rather than the 230 MB of all their patches at once."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < self.patch:
            raise ValueError(f"PatchWhitening.init_from_data expects (N, {self.in_channels}, H, W) "
                             f"images of at least {self.patch}x{self.patch}, got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("PatchWhitening.init_from_data needs at least one image")
        k, d = self.patch, self.in_channels * self.patch * self.patch
        moment, count = np.zeros((d, d)), 0
        for start in range(0, x.shape[0], chunk):
            windows = np.lib.stride_tricks.sliding_window_view(x[start:start + chunk], (k, k), axis=(2, 3))
            # (n, C, OH, OW, k, k) -> one row per patch, in the filters' (C, k, k) order
            rows = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, d).astype(np.float64)
            moment += rows.T @ rows
            count += rows.shape[0]
        values, vectors = np.linalg.eigh(moment / count)  # ascending; columns are the components
        order = np.argsort(values)[::-1]
        scaled = (vectors[:, order] / np.sqrt(np.maximum(values[order], 0.0) + self.eps)).T
        filters = np.concatenate([scaled, -scaled]).reshape(self.filters.shape)
        self.filters[...] = filters  # in place: the array is a view of the model's buffers

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchWhitening expects (N, {self.in_channels}, H, W) input, got {x.shape}")
        y, self._cache = kernels.conv2d_forward(x, self.filters, self.bias.data, 1, 0, self._workspace)
        return y

    def backward(self, grad_out):
        if self._filters_grad is None or self._filters_grad.shape != self.filters.shape:
            self._filters_grad = np.zeros_like(self.filters)
        dx = kernels.conv2d_backward(grad_out, self.filters, self._cache, 1, 0, self._filters_grad,
                                     self.bias.grad, need_input_grad=self.compute_input_grad,
                                     workspace=self._workspace)
        self._filters_grad.fill(0)
        return dx

    def __repr__(self):
        return f"PatchWhitening({self.in_channels}, patch={self.patch}, eps={self.eps:g})"


def initialise_from_data(model, x: np.ndarray) -> int:
    """Set every data-dependent layer of ``model`` (one with ``init_from_data``, such as
    PatchWhitening) from the input images ``x``, and return how many there were.

    Such a layer sees ``x`` itself, so it must be the model's first layer: a later one
    would need the activations of the layers before it, which are random at this point
    anyway.  A model without one is left untouched (returns 0)."""
    leaves = [m for m in model.modules() if not m.children()]
    targets = [m for m in leaves if callable(getattr(m, "init_from_data", None))]
    if targets and (len(targets) > 1 or leaves[0] is not targets[0]):
        raise ValueError("a data-dependent layer (PatchWhitening) must be the model's first layer, "
                         "and there can be only one")
    for layer in targets:
        layer.init_from_data(x)
    return len(targets)
