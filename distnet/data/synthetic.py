"""A deterministic, learnable stand-in dataset for tests and smoke runs.

Each class has a fixed random template: a coarse random pattern blown up in 4x4 blocks
(smooth enough that convolutions and pooling keep it). An image is its class's template
plus per-pixel Gaussian noise, so a small CNN (or even a nearest-mean classifier) can fit
it quickly, while the noise keeps it from being trivially memorised by a single pixel.

Templates depend only on (seed, shape, num_classes), so train and test share them; the
noise and labels of train and test come from separate random streams, so the splits hold
different images. Same arguments, same bytes, on every machine and every MPI rank.
"""

from __future__ import annotations

import numpy as np

from distnet.errors import UserError

from .dataset import Dataset

DEFAULT_SIZES = {"train": 1024, "test": 256}
_STREAM = {"templates": 0, "train": 1, "test": 2}
_BLOCK = 4
_TEMPLATE_AMPLITUDE = 0.3  # templates span 0.5 +- 0.3 in [0, 1] pixel units
_NOISE_STD = 0.15
# Fixed normalisation close to the generated statistics (mean 0.5, std ~0.23).
MEAN, STD = 0.5, 0.23


def synthetic(split: str = "train", n: int | None = None, shape=(1, 28, 28), num_classes: int = 10, seed: int = 0) -> Dataset:
    """Generate the synthetic ``split`` ("train" or "test"): ``n`` uint8 images of ``shape`` (C, H, W).

    ``n`` defaults to 1024 for train and 256 for test. Labels are balanced (as equal as
    ``n`` allows) and shuffled.
    """
    if split not in DEFAULT_SIZES:
        raise UserError(f"synthetic: unknown split {split!r}; expected 'train' or 'test'")
    c, h, w = (int(d) for d in shape)
    if min(c, h, w) < 1 or num_classes < 1:
        raise UserError(f"synthetic: bad shape {tuple(shape)} or num_classes {num_classes}")
    n = DEFAULT_SIZES[split] if n is None else int(n)
    if n < 0:
        raise UserError(f"synthetic: n must be >= 0, got {n}")

    trng = np.random.default_rng([seed, _STREAM["templates"]])
    coarse = trng.uniform(-1.0, 1.0, size=(num_classes, c, -(-h // _BLOCK), -(-w // _BLOCK)))
    templates = coarse.repeat(_BLOCK, axis=2).repeat(_BLOCK, axis=3)[:, :, :h, :w]
    templates = 0.5 + _TEMPLATE_AMPLITUDE * templates

    rng = np.random.default_rng([seed, _STREAM[split]])
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    pixels = templates[labels] + rng.normal(0.0, _NOISE_STD, size=(n, c, h, w))
    images = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return Dataset(
        name="synthetic",
        images=images,
        labels=labels,
        classes=tuple(f"class{i}" for i in range(num_classes)),
        mean=(MEAN,) * c,
        std=(STD,) * c,
    )
