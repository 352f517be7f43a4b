"""The in-memory dataset every loader returns, and the one place pixels become floats.

Images stay uint8 until a batch is asked for: a full MNIST train set is 47 MB as uint8
but 188 MB as float32, and every MPI rank holds its own copy, so converting up front
would multiply memory by four on each rank for no gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images for one split of one dataset.

    ``images`` is uint8 (N, C, H, W), C-contiguous; ``labels`` is int64 (N,).
    ``mean``/``std`` are per channel in [0, 1] pixel units (pixel / 255). They are fixed
    per dataset rather than computed from the data, so train and test are normalised the
    same way and every rank agrees without a reduction.

    Loaders hand out read-only arrays (they may be shared through an in-process cache);
    take a subset or copy instead of writing into them.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # These are programming errors (a loader built a bad Dataset), not user errors.
        img, lab = self.images, self.labels
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 4:
            raise ValueError(f"{self.name}: images must be a uint8 (N, C, H, W) array")
        if not img.flags.c_contiguous:
            raise ValueError(f"{self.name}: images must be C-contiguous")
        if not isinstance(lab, np.ndarray) or lab.dtype != np.int64 or lab.shape != (img.shape[0],):
            raise ValueError(f"{self.name}: labels must be int64 of shape ({img.shape[0]},)")
        channels = img.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean/std need one value per channel ({channels})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive")
        if lab.size and (lab.min() < 0 or lab.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in [0, {len(self.classes)})")
        # Fold "/255, -mean, /std" into one multiply and one subtract, precomputed once.
        std = np.asarray(self.std, dtype=np.float64)
        mean = np.asarray(self.mean, dtype=np.float64)
        shape = (1, channels, 1, 1)
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).astype(np.float32).reshape(shape))
        object.__setattr__(self, "_shift", (mean / std).astype(np.float32).reshape(shape))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 images ``(images/255 - mean)/std`` and int64 labels for ``indices``.

        Indexes the uint8 array first (a quarter of the bytes to gather), then converts in
        one pass into a fresh float32 buffer, so the result is always a writable copy.
        """
        idx = np.asarray(indices)
        if idx.size == 0:  # an empty list would be float64; a rank may get an empty slice
            idx = idx.astype(np.intp)
        raw = self.images[idx]
        x = np.multiply(raw, self._scale, dtype=np.float32)
        x -= self._shift
        return x, self.labels[idx]

    def subset(self, indices) -> "Dataset":
        """A new Dataset holding only ``indices`` (copied), with the same classes and stats."""
        idx = np.asarray(indices)
        return Dataset(
            name=self.name,
            images=np.ascontiguousarray(self.images[idx]),
            labels=np.ascontiguousarray(self.labels[idx]),
            classes=self.classes,
            mean=self.mean,
            std=self.std,
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )
