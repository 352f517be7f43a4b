"""Element-wise activations.  Each backward reuses its forward output, not its input."""
from __future__ import annotations

import numpy as np

from .module import Module


class ReLU(Module):
    def __init__(self):
        self._out = None

    def forward(self, x):
        self._out = np.maximum(x, 0)
        return self._out

    def backward(self, grad_out):
        return np.where(self._out > 0, grad_out, 0)

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
