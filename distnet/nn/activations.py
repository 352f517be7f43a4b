"""Element-wise activations.  Each backward reuses its forward output, not its input."""
from __future__ import annotations

import numpy as np

from .module import Module


class ReLU(Module):
    """max(x, 0); the gradient passes where the output is positive (0 at the kink).

    ``np.maximum(x, 0)`` with a Python scalar runs NumPy's slow broadcasting loop (~4x
    slower than two arrays laid out alike), so each instance keeps a zero array shaped and
    laid out like one slice of its input along the outermost memory axis (one channel of a
    CHWN conv output, one row of a Linear output) and reuses it every step: the inner loop
    is then contiguous and vectorised, and the zeros stay in cache.  The backward multiplies
    by the boolean mask instead of ``np.where`` (~10x slower); the two differ only for a
    non-finite incoming gradient at an inactive unit (NaN instead of 0), where training has
    diverged anyway.

    Inside a Sequential it may work in place (``overwrite_input``/``overwrite_grad``, set by
    Sequential for one call when the array is a fresh conv, linear or pool result that no
    one else holds), and it runs after a MaxPool2d that follows it, on the pooled map (see
    ``Sequential.execution_order``).  Both together, whole training steps at batch 64 (CPU
    time, 7 interleaved rounds, under load): LeNet-5 1.11x (1.06-1.19), cnn2 1.08x
    (0.94-1.13), together with the 2x2 pooling of ``kernels._maxpool2x2_forward``.
    """

    def __init__(self):
        self._out = None
        self._zeros = None
        self._zeros_key = None
        # set by Sequential for one call when the input (incoming gradient) is a fresh
        # array nothing else holds: the result is then written into it
        self.overwrite_input = False
        self.overwrite_grad = False

    def _zeros_for(self, x):
        key = (x.shape, x.strides, x.dtype)
        if key != self._zeros_key:
            if x.ndim > 1:
                outer = max(range(x.ndim), key=lambda a: abs(x.strides[a]))
                index = [slice(None)] * x.ndim
                index[outer] = slice(0, 1)
                self._zeros = np.zeros_like(x[tuple(index)])  # order "K": x's layout
            else:
                self._zeros = np.zeros_like(x)
            self._zeros_key = key
        return self._zeros

    def forward(self, x):
        self._out = np.maximum(x, self._zeros_for(x), out=x if self.overwrite_input else None)
        return self._out

    def backward(self, grad_out):
        return np.multiply(grad_out, self._out > 0, out=grad_out if self.overwrite_grad else None)

    def __repr__(self):
        return "ReLU()"


class Sigmoid(Module):
    def __init__(self):
        self._out = None

    def forward(self, x):
        # the tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x
        out = np.tanh(x * 0.5)
        out *= 0.5
        out += 0.5
        self._out = out
        return out

    def backward(self, grad_out):
        return grad_out * self._out * (1.0 - self._out)

    def __repr__(self):
        return "Sigmoid()"


class Tanh(Module):
    def __init__(self):
        self._out = None

    def forward(self, x):
        self._out = np.tanh(x)
        return self._out

    def backward(self, grad_out):
        return grad_out * (1.0 - self._out * self._out)

    def __repr__(self):
        return "Tanh()"
