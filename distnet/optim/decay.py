"""Which parameters weight decay applies to, and which are frozen: per-element masks over
the flat parameter order.

Why: decaying BatchNorm's scale and shift and the biases toward zero regularises nothing
useful (they do not set the function's capacity, and BatchNorm makes the layer before it
scale-invariant), but does fight the normalisation; fast CIFAR-10 recipes leave them out.
The optimizers update one flat buffer with a handful of vectorised operations, so rather
than PyTorch's parameter groups, exclusion is a 0/1 mask over that buffer: the decay term
becomes ``(weight_decay * mask) * p``, still one multiply per step.
"""
from __future__ import annotations

import numpy as np

from distnet.optim.optimizers import OptimizerError

EXCLUDE_KINDS = ("bn", "bias")


def parse_exclude(spec) -> tuple[str, ...]:
    """"none", "bn", "bias", "bn-bias" (or a sequence of kinds) -> a tuple of kinds."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        spec = () if spec.lower() in ("", "none") else spec.lower().split("-")
    kinds = tuple(spec)
    unknown = [k for k in kinds if k not in EXCLUDE_KINDS]
    if unknown:
        raise OptimizerError(f"invalid weight-decay exclusion {unknown[0]!r}; kinds are "
                             f"{', '.join(EXCLUDE_KINDS)} (e.g. 'bn-bias')")
    return kinds


def _is_norm_layer(module) -> bool:
    from distnet.nn.normalization import _BatchNorm

    return isinstance(module, _BatchNorm)


def decay_mask(model, exclude=("bn", "bias")) -> np.ndarray:
    """A float 0/1 vector over ``model.parameters()`` order (the flat buffer's): 0 for every
    element of a parameter of an excluded kind -- ``bn``: all parameters of a BatchNorm
    layer; ``bias``: every parameter named "bias" -- and 1 elsewhere.

    ``model`` is a Module (its ``modules()`` say which layer holds which parameter);
    the order of ``modules()`` with each one's ``own_parameters()`` is ``parameters()``."""
    kinds = parse_exclude(exclude)
    if not hasattr(model, "modules"):
        raise OptimizerError("excluding parameters from weight decay needs the model (a Module), "
                             "not a list of parameters")
    pieces = []
    for module in model.modules():
        norm = _is_norm_layer(module)
        for p in module.own_parameters():
            skip = ("bn" in kinds and norm) or ("bias" in kinds and p.name == "bias")
            pieces.append(np.full(p.data.size, 0.0 if skip else 1.0, dtype=p.data.dtype))
    mask = np.concatenate(pieces) if pieces else np.zeros(0)
    expected = sum(p.data.size for p in model.parameters())
    if mask.size != expected:  # a Module whose parameters() is not its modules' own_parameters()
        raise OptimizerError(f"decay mask covers {mask.size} values but the model has {expected} parameters")
    return mask


FREEZE_KINDS = ("bn-scale",)


def frozen_mask(model, kind="bn-scale") -> np.ndarray:
    """A float 0/1 vector over ``model.parameters()`` order: 1 for the elements to freeze.
    ``bn-scale``: the scale (``weight``) of every BatchNorm layer, which then stays at its
    initial 1 -- BatchNorm without an affine scale, as the fast CIFAR-10 ResNets train it
    (the shift still learns).  Freezing through the optimizer keeps the parameter layout,
    so checkpoints and the flat buffers are unchanged."""
    if kind not in FREEZE_KINDS:
        raise OptimizerError(f"invalid freeze kind {kind!r}; kinds are {', '.join(FREEZE_KINDS)}")
    if not hasattr(model, "modules"):
        raise OptimizerError("freezing parameters needs the model (a Module), not a list of parameters")
    pieces = []
    for module in model.modules():
        norm = _is_norm_layer(module)
        for p in module.own_parameters():
            frozen = norm and p.name == "weight"
            pieces.append(np.full(p.data.size, 1.0 if frozen else 0.0, dtype=p.data.dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0)


def bn_bias_factors(model, scale: float) -> np.ndarray:
    """A vector over ``model.parameters()`` order: ``scale`` for every element of a BatchNorm
    layer's shift (``bias``), 1 elsewhere (``Optimizer.scale_learning_rate``'s factors)."""
    if not hasattr(model, "modules"):
        raise OptimizerError("a BatchNorm learning-rate scale needs the model (a Module), not a list of parameters")
    pieces = [np.full(p.data.size, scale if _is_norm_layer(m) and p.name == "bias" else 1.0, dtype=np.float64)
              for m in model.modules() for p in m.own_parameters()]
    factors = np.concatenate(pieces) if pieces else np.zeros(0)
    if not (factors == scale).any():
        raise OptimizerError("a BatchNorm learning-rate scale was given but the model has no BatchNorm layer")
    return factors
