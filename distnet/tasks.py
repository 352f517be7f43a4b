"""What a loss needs of the targets, checked once before training instead of failing mid-run.

Cross-entropy takes integer class labels below the model's number of outputs; MSE takes
float targets shaped like the model's output.  A dataset whose targets do not fit its loss is
a ``UserError`` (a ``ValueError``) naming the dataset (the file, for an ``.npz``).
"""
from __future__ import annotations

import numpy as np

from .errors import UserError
from .nn import CrossEntropyLoss, MSELoss

LOSSES = {"cross-entropy": CrossEntropyLoss, "mse": MSELoss}


def resolve_loss(loss):
    """A loss object from a loss object or its name ("cross-entropy", "mse")."""
    if isinstance(loss, str):
        key = loss.lower().replace("_", "-")
        if key not in LOSSES:
            raise UserError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        return LOSSES[key]()
    if loss is None or not callable(loss) or not hasattr(loss, "backward"):
        raise UserError(f"loss must be a distnet loss (nn.CrossEntropyLoss(), nn.MSELoss()) or its "
                        f"name, got {loss!r}")
    return loss


def loss_name(loss) -> str:
    for name, kind in LOSSES.items():
        if isinstance(loss, kind):
            return name
    return type(loss).__name__


def task_of(data) -> str:
    """"classification" or "regression"; the named datasets are all classification."""
    return getattr(data, "task", "classification")


def _name(data) -> str:
    return getattr(data, "name", type(data).__name__)


def probe_outputs(model, data) -> tuple[int, ...]:
    """Shape of one sample's model output, from a forward pass of one sample in eval mode
    (no statistics change, no dropout); a model that cannot take the data's inputs is a
    UserError here rather than a traceback at step 1."""
    x, _ = data.batch(np.arange(1))
    was_training = model.training
    model.eval()
    try:
        out = model(x.astype(model.flat_params.dtype, copy=False))
    except (ValueError, IndexError) as exc:
        raise UserError(f"{_name(data)}: the model does not take inputs of shape "
                        f"{tuple(x.shape[1:])}: {exc}") from None
    finally:
        model.train(was_training)
    return tuple(int(d) for d in out.shape[1:])


def check_targets(data, loss, output_shape: tuple[int, ...]) -> None:
    """Refuse targets that do not fit ``loss`` and a model whose outputs are ``output_shape``."""
    name, task = _name(data), task_of(data)
    if isinstance(loss, CrossEntropyLoss):
        if task != "classification":
            raise UserError(f"{name}: float targets (regression) do not fit the cross-entropy loss, "
                            f"which needs integer class labels; use the mse loss (--loss mse) or "
                            f"integer labels")
        if len(output_shape) != 1:
            raise UserError(f"{name}: cross-entropy needs a model with outputs (N, classes), this one "
                            f"gives (N, {', '.join(map(str, output_shape))})")
        labels = _labels(data)
        if labels.size and int(labels.max()) >= output_shape[0]:
            raise UserError(f"{name}: label {int(labels.max())} is >= the number of classes the model "
                            f"predicts ({output_shape[0]})")
    elif isinstance(loss, MSELoss):
        if task == "classification":
            raise UserError(f"{name}: integer targets are class labels; the mse loss needs float "
                            f"targets shaped like the model's output (use --loss cross-entropy, or "
                            f"float targets)")
        target_shape = tuple(int(d) for d in _targets(data).shape[1:])
        if target_shape != output_shape:
            raise UserError(f"{name}: targets have shape {target_shape} per sample but the model "
                            f"outputs {output_shape}")


def _labels(data) -> np.ndarray:
    return np.asarray(getattr(data, "labels", None) if hasattr(data, "labels") else data.targets)


def _targets(data) -> np.ndarray:
    return np.asarray(data.targets)


def sums_over(loss) -> bool:
    """True for a loss that sums over the batch (``MSELoss(reduction="sum")``) instead of
    averaging: its figure for a data set is the total, not the mean per sample."""
    return getattr(loss, "reduction", "mean") == "sum"
