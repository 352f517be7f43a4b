"""The global-batch loader: the one place that decides which sample goes where.

The order of samples depends only on (seed, epoch), never on the number of workers.  Each
epoch's order is cut into global batches of ``global_batch`` samples (the last one may be
short); each global batch is cut into ``world`` contiguous slices, one per rank, as even as
possible (some may be empty).  Every rank therefore runs the same number of steps, and the
union of the slices of one epoch is every sample exactly once, for any world size.  Because a
rank divides its summed gradient by the *global* count, a SUM-allreduce gives the exact mean
gradient of the global batch: the trajectory does not depend on the world size.
"""
from __future__ import annotations

import math

import numpy as np

from .augment import ImageAugment, batch_shifts, translate


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch: a permutation drawn from (seed, epoch) alone."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous [start, stop) of ``count`` items owned by ``rank`` of ``world``; sizes differ
    by at most one and the slices tile [0, count) in rank order."""
    return count * rank // world, count * (rank + 1) // world


class GlobalBatchLoader:
    """Yields this rank's slice of each global batch, plus the global batch's size."""

    def __init__(self, dataset, global_batch: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True, drop_last: bool = False, max_shift: int = 0,
                 augment: ImageAugment | None = None):
        """``max_shift``: translate images by up to that many pixels; ``augment``: an
        ImageAugment (crop, flip, cutout), applied after the shift."""
        if global_batch < 1:
            raise ValueError(f"global batch size must be >= 1, got {global_batch}")
        self.dataset = dataset
        self.global_batch = global_batch
        self.seed, self.rank, self.world = seed, rank, world
        self.shuffle, self.drop_last = shuffle, drop_last
        self.max_shift = max_shift
        self.augment = augment if augment else None
        if self.augment is not None:
            self.augment.check(dataset.input_shape)
        # the normalised value of a black pixel fills what a shift, zero padding or cutout uncovers
        self._background = None
        if max_shift or self.augment:
            own = getattr(dataset, "background", None)  # an ArrayDataset knows its own
            self._background = own if own is not None else \
                (-np.asarray(dataset.mean) / np.asarray(dataset.std)).astype(np.float32)
        n = len(dataset)
        self.steps_per_epoch = n // global_batch if drop_last else math.ceil(n / global_batch)
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset of {n} samples is smaller than one global batch of {global_batch}")
        self._order_epoch, self._order = None, None

    def order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            self._order = epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)
            self._order_epoch = epoch
        return self._order

    def global_indices(self, epoch: int, index: int) -> np.ndarray:
        """Sample indices of global batch ``index`` of ``epoch`` (all ranks' together)."""
        start = index * self.global_batch
        return self.order(epoch)[start:start + self.global_batch]

    def local_indices(self, epoch: int, index: int) -> tuple[np.ndarray, int]:
        """This rank's contiguous slice of the global batch and the global batch size."""
        indices = self.global_indices(epoch, index)
        start, stop = shard_bounds(len(indices), self.rank, self.world)
        return indices[start:stop], len(indices)

    def batch(self, epoch: int, index: int):
        """(x, y, global_count) for this rank; x may have zero rows."""
        local, count = self.local_indices(epoch, index)
        x, y = self.dataset.batch(local)
        start, stop = shard_bounds(count, self.rank, self.world)
        if self.max_shift:
            shifts = batch_shifts(count, self.max_shift, self.seed, epoch, index)[start:stop]
            x = translate(x, shifts, self._background)
        if self.augment is not None:
            x = self.augment(x, self._background, seed=self.seed, epoch=epoch, index=index,
                             count=count, start=start, stop=stop)
        return x, y, count
