"""Weight initialisers.

He (Kaiming) initialisation keeps the activation variance constant through ReLU layers;
Xavier (Glorot) does the same for tanh/sigmoid.  ``fan_in`` of a conv weight
(out, in, kh, kw) is in*kh*kw, ``fan_out`` is out*kh*kw.
"""
from __future__ import annotations

import numpy as np


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def he_uniform(shape, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    fan_in, _ = fans(shape)
    bound = np.sqrt(6.0 / fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def he_normal(shape, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    fan_in, _ = fans(shape)
    return (rng.standard_normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


def xavier_uniform(shape, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def xavier_normal(shape, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    return (rng.standard_normal(size=shape) * np.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


INITIALISERS = {
    "he": he_uniform,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "xavier": xavier_uniform,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
}


def initialise(name: str, shape, rng: np.random.Generator | None, dtype) -> np.ndarray:
    if name not in INITIALISERS:
        raise ValueError(f"unknown initialiser {name!r}; choose from {sorted(INITIALISERS)}")
    return INITIALISERS[name](tuple(shape), rng if rng is not None else np.random.default_rng(), dtype)
