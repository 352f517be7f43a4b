"""A model's architecture as plain data, and back: what lets a checkpoint of a network built
by hand in Python (``nn.Sequential(nn.Conv2d(...), ...)``, no ``--model`` spec to rebuild it
from) be evaluated and predicted from the file alone, as Keras' ``get_config`` does.

``describe(model)`` gives nested lists and dicts of numbers and strings (JSON as it is), one
entry per layer with the arguments its constructor needs; ``build(description)`` makes the
same model again with fresh weights, which the checkpoint then overwrites.  Only distnet's
own layers are described: a model with any other Module gives None (it cannot be rebuilt
without the user's code), and a description naming anything else is refused with a
ValueError, so a checkpoint can only ever construct these classes.
"""
from __future__ import annotations

import numpy as np

from .activations import ReLU, Sigmoid, Tanh
from .layers import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Scale
from .module import Module, Sequential
from .normalization import BatchNorm1d, BatchNorm2d
from .residual import Residual
from .whitening import PatchWhitening


def _bn(m):
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum}


def _pool(m):
    return {"kernel_size": list(m.kernel_size), "stride": m.stride}


# layer class -> its constructor arguments, read back from the instance
_ARGUMENTS = {
    Linear: lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    Conv2d: lambda m: {"in_channels": m.in_channels, "out_channels": m.out_channels,
                       "kernel_size": list(m.kernel_size), "stride": m.stride, "padding": m.padding,
                       "bias": m.bias is not None},
    MaxPool2d: _pool, AvgPool2d: _pool,
    BatchNorm1d: _bn, BatchNorm2d: _bn,
    Dropout: lambda m: {"p": float(m.p)},
    Scale: lambda m: {"factor": m.factor},
    PatchWhitening: lambda m: {"in_channels": m.in_channels, "patch": m.patch, "eps": m.eps},
    ReLU: lambda m: {}, Sigmoid: lambda m: {}, Tanh: lambda m: {}, Flatten: lambda m: {},
}
_CLASSES = {cls.__name__: cls for cls in _ARGUMENTS}
_TAKES_DTYPE = (Linear, Conv2d, BatchNorm1d, BatchNorm2d, PatchWhitening)


def describe(module: Module):
    """The architecture of ``module`` as JSON-able data, or None if it holds a layer that is
    not one of distnet's (only its exact classes: a subclass may change what they do)."""
    kind = type(module)
    if kind is Sequential:
        layers = [describe(layer) for layer in module.layers]
        return None if any(layer is None for layer in layers) else {"layer": "Sequential", "layers": layers}
    if kind is Residual:
        block = describe(module.block)
        shortcut = None if module.shortcut is None else describe(module.shortcut)
        if block is None or (module.shortcut is not None and shortcut is None):
            return None
        return {"layer": "Residual", "block": block, "shortcut": shortcut}
    if kind not in _ARGUMENTS:
        return None
    return {"layer": kind.__name__, "args": _ARGUMENTS[kind](module)}


def build(description, dtype=np.float32, _depth: int = 0) -> Module:
    """The module ``description`` (from ``describe``) stands for, with fresh weights.

    ValueError, in one line, for anything that is not such a description."""
    if _depth > 64:
        raise ValueError("architecture is nested too deeply")
    if not isinstance(description, dict) or not isinstance(description.get("layer"), str):
        raise ValueError(f"architecture entry {_short(description)} is not a layer")
    name = description["layer"]
    if name == "Sequential":
        layers = description.get("layers")
        if not isinstance(layers, list):
            raise ValueError("architecture: a Sequential without a list of layers")
        return Sequential(*[build(layer, dtype, _depth + 1) for layer in layers])
    if name == "Residual":
        shortcut = description.get("shortcut")
        return Residual(build(description.get("block"), dtype, _depth + 1),
                        None if shortcut is None else build(shortcut, dtype, _depth + 1))
    cls = _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"architecture names an unknown layer {name[:40]!r}")
    args = description.get("args")
    if not isinstance(args, dict) or not all(_plain(v) for v in args.values()):
        raise ValueError(f"architecture: {name} has arguments {_short(args)}, not plain numbers")
    if cls in _TAKES_DTYPE:
        args = dict(args, dtype=dtype)
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"architecture: {name}({_short(description['args'])}): {exc}") from None


def sizes(description, _depth: int = 0) -> tuple[int, int]:
    """(parameters, buffer values) the module ``description`` stands for, counted from its
    arguments without building it, so that a checkpoint whose description would allocate
    far more than the weights it holds is refused before any memory is taken."""
    if _depth > 64 or not isinstance(description, dict):
        raise ValueError("architecture entry is not a layer")
    name = description.get("layer")
    if name == "Sequential":
        layers = description.get("layers")
        counts = [sizes(layer, _depth + 1) for layer in (layers if isinstance(layers, list) else [])]
    elif name == "Residual":
        counts = [sizes(description.get(part), _depth + 1)
                  for part in ("block", "shortcut") if description.get(part) is not None]
    else:
        args = description.get("args")
        counts = [_layer_sizes(name, args if isinstance(args, dict) else {})]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _layer_sizes(name: str, a: dict) -> tuple[int, int]:
    def whole(key, default=None):
        value = a.get(key, default)
        if isinstance(value, list):
            return int(np.prod([whole_number(v) for v in value], dtype=object))
        return whole_number(value)

    def whole_number(value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"architecture: {name} has arguments {_short(a)}, not plain numbers")
        return value

    bias = a.get("bias", True) is not False
    if name == "Linear":
        return whole("in_features") * whole("out_features") + bias * whole("out_features"), 0
    if name == "Conv2d":
        kernel = whole("kernel_size") if isinstance(a.get("kernel_size"), list) else whole("kernel_size") ** 2
        return whole("out_channels") * (whole("in_channels") * kernel + bias), 0
    if name in ("BatchNorm1d", "BatchNorm2d"):
        return 2 * whole("num_features"), 2 * whole("num_features")
    if name == "PatchWhitening":
        out = 2 * whole("in_channels") * whole("patch", 2) ** 2
        return out, out * whole("in_channels") * whole("patch", 2) ** 2
    return 0, 0


def _plain(value) -> bool:
    if isinstance(value, list):
        return len(value) <= 4 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return value is None or isinstance(value, (bool, int, float))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
