"""Self-describing checkpoints: the ``meta`` a checkpoint carries (contract B), and the loader
that rebuilds a trained model from a checkpoint file alone.

Why a meta block and not the run's configuration: the configuration says how a model was
*trained* (optimizer, batch size, data directory on some machine); evaluating or predicting
needs only what rebuilds the model and its input pipeline: the model's origin and arguments,
the input shape, the class names, the normalisation and the task.  With that, ``distnet
evaluate`` and ``distnet predict`` need nothing but the checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint as ckpt_io
from .errors import UserError

REQUIRED = ("model", "input_shape", "num_outputs", "mean", "task")

# What checkpoints written before meta existed (format 1) were trained on: the dataset names
# of the registry, whose shapes are fixed.  Lets old checkpoints still be evaluated.
_KNOWN_SHAPES = {"mnist": [1, 28, 28], "fashion-mnist": [1, 28, 28], "synthetic": [1, 28, 28],
                 "cifar10": [3, 32, 32]}


def _meta_from_config(config: dict, source: str) -> dict:
    """Meta for a checkpoint written before meta existed, from its run configuration."""
    dataset, model = config.get("dataset"), config.get("model")
    if dataset not in _KNOWN_SHAPES or not model:
        raise UserError(f"{source}: checkpoint carries no model description (meta) and its "
                        f"configuration names no known dataset; cannot rebuild the model")
    from .data.registry import get_spec
    spec = get_spec(dataset)
    classes, mean, std = list(spec.classes), list(spec.mean), list(spec.std)
    return {"model": {"spec": model, "args": {}}, "input_shape": _KNOWN_SHAPES[dataset],
            "num_outputs": len(classes), "classes": classes, "mean": mean, "std": std,
            "task": "classification", "loss": "cross-entropy", "dataset": dataset}


def _check_meta(meta: dict, source: str) -> None:
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise UserError(f"{source}: checkpoint meta lacks {', '.join(missing)}")
    model = meta["model"]
    if not isinstance(model, dict) or not isinstance(model.get("spec"), str):
        raise UserError(f"{source}: checkpoint meta has no model spec: the model was built in Python "
                        f"and the file does not describe it, so only that program can rebuild it")
    shape = meta["input_shape"]
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise UserError(f"{source}: checkpoint meta has a bad input_shape {shape!r}")
    classes = meta.get("classes")
    if classes is not None and len(classes) != meta["num_outputs"]:
        raise UserError(f"{source}: checkpoint meta names {len(classes)} classes for "
                        f"{meta['num_outputs']} outputs")


def shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def describe(meta: dict) -> str:
    """One phrase for messages: 'lenet5 for 1x28x28 input (mnist, 10 classes)'."""
    what = meta.get("dataset") or "unknown data"
    return (f"{meta['model']['spec']} for {shape_text(meta['input_shape'])} input "
            f"({what}, {meta['num_outputs']} outputs)")


def rebuild(checkpoint: ckpt_io.Checkpoint, source: str):
    """The model described by ``checkpoint.meta`` with the checkpoint's weights, in eval mode."""
    meta = checkpoint.meta or _meta_from_config(checkpoint.config, source)
    _check_meta(meta, source)
    from .nn import build_model

    spec, args = meta["model"]["spec"], meta["model"].get("args") or {}
    layers = meta["model"].get("architecture")
    try:
        if layers is not None:
            model = _from_architecture(layers, checkpoint)
        else:
            model = build_model(spec, tuple(meta["input_shape"]), meta["num_outputs"], seed=0, **args)
    except (ValueError, TypeError, ImportError) as exc:
        raise UserError(f"{source}: cannot rebuild model {spec!r}: {exc}") from None
    if checkpoint.params.size != model.flat_params.size:
        raise UserError(f"{source}: checkpoint holds {checkpoint.params.size} parameters but "
                        f"{describe(meta)} has {model.flat_params.size}; the file is not of this model")
    model.flat_params[...] = checkpoint.params
    buffers = np.asarray(checkpoint.buffers)
    own = getattr(model, "flat_buffers", None)
    own_size = 0 if own is None else own.size
    if buffers.size != own_size:
        raise UserError(f"{source}: checkpoint holds {buffers.size} buffer values (BatchNorm statistics) "
                        f"but {describe(meta)} has {own_size}")
    if own_size:
        own[...] = buffers
    model.eval()
    return model, meta


def _from_architecture(layers, checkpoint: ckpt_io.Checkpoint):
    """A hand-built network from its recorded architecture (``nn.architecture``), once its
    size is known to match the checkpoint's weights (so a doctored description cannot make
    us allocate more than the file holds)."""
    from .nn import Sequential
    from .nn.architecture import build, sizes

    params, buffers = sizes(layers)
    held = (checkpoint.params.size, np.asarray(checkpoint.buffers).size)
    if (params, buffers) != held:
        raise ValueError(f"its architecture has {params} parameters and {buffers} buffer values, "
                         f"the file holds {held[0]} and {held[1]}")
    model = build(layers)
    if not isinstance(model, Sequential):
        raise ValueError("its architecture is not a Sequential")
    return model


def load_trained(checkpoint_path):
    """``(model in eval mode, meta)`` from a checkpoint file alone; UserError naming the file
    for anything wrong with it (missing, corrupt, of a model this distnet cannot rebuild)."""
    source = str(Path(checkpoint_path))
    return rebuild(ckpt_io.load(checkpoint_path), source)
