"""Losses: ``loss = crit(output, target)`` then ``crit.backward()`` returns dloss/doutput."""
from __future__ import annotations

import numpy as np


class CrossEntropyLoss:
    """Softmax fused with negative log-likelihood over integer labels, mean over the batch.

    Fusing them gives the simple, stable gradient (softmax - onehot) / N.
    """

    def __init__(self):
        self._probs = None
        self._labels = None

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape}, {labels.shape}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sums = exp.sum(axis=1, keepdims=True)
        rows = np.arange(len(labels))
        log_likelihood = shifted[rows, labels] - np.log(sums[:, 0])
        self._probs = exp / sums
        self._labels = labels
        return float(-log_likelihood.mean()) if len(labels) else 0.0

    def backward(self) -> np.ndarray:
        grad = self._probs.copy()
        n = len(self._labels)
        grad[np.arange(n), self._labels] -= 1
        if n:
            grad *= 1.0 / n
        return grad


class MSELoss:
    """Squared error, ``reduction="mean"`` over all elements or ``"sum"``."""

    def __init__(self, reduction: str = "mean"):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self._diff = None

    def __call__(self, output: np.ndarray, target: np.ndarray) -> float:
        if output.shape != target.shape:
            raise ValueError(f"output {output.shape} and target {target.shape} differ in shape")
        self._diff = output - target
        total = float(np.sum(self._diff * self._diff))
        return total / self._diff.size if self.reduction == "mean" else total

    def backward(self) -> np.ndarray:
        grad = 2.0 * self._diff
        if self.reduction == "mean":
            grad *= 1.0 / self._diff.size
        return grad
