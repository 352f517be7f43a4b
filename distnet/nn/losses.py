"""Losses: ``loss = crit(output, target)`` then ``crit.backward()`` returns dloss/doutput."""
from __future__ import annotations

import numpy as np


class CrossEntropyLoss:
    """Softmax fused with negative log-likelihood over integer labels, mean over the batch.

    Fusing them gives the simple, stable gradient (softmax - target) / N.  With
    ``label_smoothing=eps`` the target is PyTorch's mixture (1 - eps) * onehot + eps / K
    (K classes), so the loss is (1 - eps) * NLL + eps * mean over classes of -log p.
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self._probs = None
        self._labels = None

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:
        if logits.ndim != 2 or labels.shape != (logits.shape[0],):
            raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape}, {labels.shape}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sums = exp.sum(axis=1, keepdims=True)
        rows = np.arange(len(labels))
        log_norm = np.log(sums[:, 0])
        log_likelihood = shifted[rows, labels] - log_norm
        self._probs = exp / sums
        self._labels = labels
        if not len(labels):
            return 0.0
        loss = -log_likelihood.mean()
        if self.label_smoothing:
            uniform = -(shifted.mean(axis=1) - log_norm).mean()  # mean over classes of -log p
            loss = (1.0 - self.label_smoothing) * loss + self.label_smoothing * uniform
        return float(loss)

    def backward(self) -> np.ndarray:
        grad = self._probs.copy()
        n, k = grad.shape
        eps = self.label_smoothing
        grad[np.arange(n), self._labels] -= 1.0 - eps
        if eps:
            grad -= eps / k
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
        if self.reduction == "mean":
            return total / self._diff.size if self._diff.size else 0.0  # empty batch: 0, as CE
        return total

    def backward(self) -> np.ndarray:
        grad = 2.0 * self._diff
        if self.reduction == "mean" and self._diff.size:
            grad *= 1.0 / self._diff.size
        return grad
