"""Layers with parameters or shape changes: Linear, Conv2d, pooling, Flatten, Dropout.

Each layer keeps just what its backward needs from the last forward.  Parameter gradients
are *accumulated* into ``Parameter.grad`` (which Sequential makes a view of the flat
gradient buffer).
"""
from __future__ import annotations

import numpy as np

from . import kernels, randomness
from .init import initialise
from .module import Module, Parameter


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features)."""

    fresh_output = fresh_input_grad = True  # y and dx are new arrays, not kept

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 init: str = "he", rng: np.random.Generator | None = None, dtype=np.float32):
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(initialise(init, (out_features, in_features), rng, dtype), "weight")
        self.bias = Parameter(np.zeros(out_features, dtype=dtype), "bias") if bias else None
        self.compute_input_grad = True
        self._x = None

    def own_parameters(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def forward(self, x):
        self._x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_out):
        self.weight.grad += grad_out.T @ self._x
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=0)
        if not self.compute_input_grad:
            return None
        return grad_out @ self.weight.data

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features}, bias={self.bias is not None})"


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch); weight (out, in, kh, kw)."""

    fresh_output = fresh_input_grad = True  # y and dx are new arrays, not kept

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 padding: int = 0, bias: bool = True, *, init: str = "he",
                 rng: np.random.Generator | None = None, dtype=np.float32):
        kh, kw = _pair(kernel_size)
        if stride < 1 or padding < 0:
            raise ValueError(f"stride must be >= 1 and padding >= 0, got {stride}, {padding}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), int(stride), int(padding)
        shape = (out_channels, in_channels, kh, kw)
        self.weight = Parameter(initialise(init, shape, rng, dtype), "weight")
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype), "bias") if bias else None
        self.compute_input_grad = True
        self._cache = None
        self._workspace = {}  # scratch buffers reused from step to step (see kernels)

    def own_parameters(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, {self.in_channels}, H, W) input, got {x.shape}")
        bias = self.bias.data if self.bias is not None else None
        y, self._cache = kernels.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding,
                                                self._workspace)
        return y

    def backward(self, grad_out):
        bias_grad = self.bias.grad if self.bias is not None else None
        return kernels.conv2d_backward(grad_out, self.weight.data, self._cache, self.stride,
                                       self.padding, self.weight.grad, bias_grad,
                                       need_input_grad=self.compute_input_grad,
                                       workspace=self._workspace)

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding})")


class _Pool2d(Module):
    """Shared bookkeeping of the pooling layers; the kernels differ, nothing else."""

    _forward = _backward = None  # the kernels, set by each subclass

    def __init__(self, kernel_size, stride=None):
        self.kernel_size = _pair(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size[0]
        self._cache = None

    def forward(self, x):
        y, self._cache = type(self)._forward(x, *self.kernel_size, self.stride)
        return y

    def backward(self, grad_out):
        return type(self)._backward(grad_out, *self.kernel_size, self.stride, self._cache)

    def __repr__(self):
        return f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride})"


class MaxPool2d(_Pool2d):
    """Max pooling; windows may overlap (stride < kernel).  stride defaults to kernel_size."""

    fresh_output = fresh_input_grad = True  # y and dx are new arrays, not kept

    _forward, _backward = kernels.maxpool_forward, kernels.maxpool_backward


class AvgPool2d(_Pool2d):
    """Average pooling over each window; stride defaults to kernel_size."""

    _forward, _backward = kernels.avgpool_forward, kernels.avgpool_backward


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W) in NCHW order, so Linear weights match PyTorch's."""

    def __init__(self):
        self._shape = None

    def forward(self, x):
        self._shape = x.shape
        # the feature count is spelled out: reshape(0, -1) of an empty batch is ambiguous
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))

    def backward(self, grad_out):
        return grad_out.reshape(self._shape)

    def __repr__(self):
        return "Flatten()"


class Dropout(Module):
    """Inverted dropout: scales kept units by 1/(1-p) in training, identity in eval.

    Masks are keyed (see ``randomness``): after ``set_sample_context(model, seed=, step=,
    first_index=)`` the mask of row i is a pure function of (seed, step, this layer's number
    in ``model.modules()``, global sample first_index + i), so a sample gets the same mask on
    whichever rank and in whichever batch position it is, and a resumed run draws the same
    masks.  Without a context (plain library use) it falls back to ``self.rng``.  The keyed
    draw's cost is stated in ``randomness``.
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng()
        self.sample_context = None  # set by randomness.set_sample_context, used once
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        context, self.sample_context = self.sample_context, None
        if context is not None:
            keep = randomness.keep_mask(context.key(), context.first_index, x.shape, self.p)
        else:
            keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self._mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.p))
        return x * self._mask

    def backward(self, grad_out):
        return grad_out if self._mask is None else grad_out * self._mask

    def __repr__(self):
        return f"Dropout(p={self.p})"


class Scale(Module):
    """y = factor * x, a fixed (not trained) multiplier; the gradient is scaled alike.

    Why: a network whose last layer reads a global max pool of BatchNorm-ed features puts out
    large logits at initialisation.  The fast-CIFAR ResNet-9 multiplies its logits by 0.125 for
    this reason; without it our cifar-resnet started at a loss of ~7 (logits with std ~4) and
    plain SGD at lr 0.02 did not reduce it in 12 steps (7.5 -> 7.3, losses up to 10.9), while with
    it the loss went 2.59 -> 2.24 (measured on 2,000 CIFAR-10 images, batch 64)."""

    def __init__(self, factor: float):
        self.factor = float(factor)

    def forward(self, x):
        return x * np.asarray(self.factor, dtype=x.dtype)

    def backward(self, grad_out):
        return grad_out * np.asarray(self.factor, dtype=grad_out.dtype)

    def __repr__(self):
        return f"Scale({self.factor:g})"
