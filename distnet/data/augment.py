"""Random translation, the augmentation that helps digit-like data most.

Shifts are drawn for the whole GLOBAL batch from (seed, epoch, batch index) and each rank
applies its own slice of them, so augmented training still does not depend on the number of
ranks and a resumed run sees the same shifts.
"""
from __future__ import annotations

import numpy as np


def batch_shifts(count: int, max_shift: int, seed: int, epoch: int, index: int) -> np.ndarray:
    """(count, 2) integer (dy, dx) offsets in [-max_shift, max_shift] for one global batch."""
    rng = np.random.default_rng([seed, epoch, index, 0x5A17])
    return rng.integers(-max_shift, max_shift + 1, size=(count, 2))


def translate(x: np.ndarray, shifts: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Shift each image of NCHW ``x`` by its (dy, dx); uncovered pixels take the per-channel
    ``fill`` (the normalised value of a black pixel, i.e. the background)."""
    n, c, h, w = x.shape
    out = np.empty_like(x)
    out[...] = fill.reshape(1, c, 1, 1)
    for dy, dx in {tuple(s) for s in shifts.tolist()}:
        rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
        src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
        out[rows, :, dst_y, dst_x] = x[rows][:, :, src_y, src_x]
    return out
