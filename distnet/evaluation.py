"""``distnet.evaluate`` and ``distnet.predict``: a trained model on data, in eval mode.

Evaluation is sharded like training: each rank takes a contiguous slice of the data set, and
one allreduce of [loss sum, correct, count] gives every rank the exact figures over all of it
(the sums do not depend on how the data was cut).  Prediction runs where it is called: it
returns the outputs in input order.
"""
from __future__ import annotations

import numpy as np

from .data.loader import shard_bounds
from .errors import UserError
from .tasks import check_targets, resolve_loss, sums_over, task_of


def evaluate(model, data, *, loss, batch_size: int = 100, comm=None, tta_flip: bool = False,
             on_batch=None) -> dict:
    """``{"loss", "samples"}`` (+ ``"accuracy"`` for classification) of ``model`` on ``data``.

    ``loss`` is the per-data-set mean of the loss function (the total for a loss with
    ``reduction="sum"``).  Under mpirun every rank must call it; each computes its shard and
    every rank gets the same result.  ``comm`` defaults to ``distnet.distributed.init()``.
    ``tta_flip`` averages the outputs for each image and its mirror image.  The model is
    evaluated in eval mode and left in the mode it was in."""
    from .data.augment import flip_averaged_logits
    from .distributed import init

    comm = comm if comm is not None else init()
    loss = resolve_loss(loss)
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    classify = task_of(data) == "classification"
    start, stop = shard_bounds(len(data), comm.rank, comm.size)
    dtype = model.flat_params.dtype
    totals = np.zeros(3)  # loss (sum over samples, or over batches for a summing loss), correct, count
    was_training = model.training
    model.eval()
    try:
        for lo in range(start, stop, batch_size):
            x, y = data.batch(np.arange(lo, min(lo + batch_size, stop)))
            x = x.astype(dtype, copy=False)
            out = flip_averaged_logits(model, x) if tta_flip else model(x)
            if lo == start:
                check_targets(data, loss, tuple(out.shape[1:]))
            if not classify:
                y = y.astype(dtype, copy=False)
            value = loss(out, y)
            totals[0] += value if sums_over(loss) else value * len(y)
            if classify:
                totals[1] += np.count_nonzero(out.argmax(axis=1) == y)
            totals[2] += len(y)
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    if comm.size > 1:
        comm.allreduce(totals)
    count = max(totals[2], 1)
    result = {"loss": float(totals[0] if sums_over(loss) else totals[0] / count), "samples": int(totals[2])}
    if classify:
        result["accuracy"] = float(totals[1] / count)
    return result


def predict(model, inputs, *, batch_size: int = 1000) -> np.ndarray:
    """The model's outputs for ``inputs`` in input order, computed in eval mode.

    ``inputs`` is an array (N, ...) already in the form the model was trained on, or a
    dataset (an ArrayDataset, a named dataset's split), whose ``batch`` normalises them."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    dtype = model.flat_params.dtype
    if hasattr(inputs, "batch") and hasattr(inputs, "__len__"):
        n = len(inputs)
        get = lambda idx: inputs.batch(idx)[0]  # noqa: E731
    else:
        arr = np.asarray(inputs)
        if arr.dtype.kind not in "biuf":
            raise UserError(f"predict: inputs are not numeric (dtype {arr.dtype})")
        n = len(arr)
        get = lambda idx: arr[idx]  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        parts = [model(np.asarray(get(np.arange(lo, min(lo + batch_size, n)))).astype(dtype, copy=False))
                 for lo in range(0, n, batch_size)]
    finally:
        model.train(was_training)
    if not parts:
        raise UserError("predict: no inputs (0 samples)")
    return np.concatenate(parts)
