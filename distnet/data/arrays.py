"""Your own data as NumPy arrays: ``ArrayDataset``, and the ``.npz`` files behind ``--dataset npz:PATH``.

An ArrayDataset is what ``distnet.fit`` trains on when the data is not one of the named
datasets.  It answers the same questions the loader and the trainer ask of the built-in
``Dataset`` (``len``, ``batch(indices)``, ``input_shape``, ``classes``, ``mean``/``std``),
plus what a task-agnostic trainer needs: ``task`` ("classification" for integer targets,
"regression" for float ones) and ``num_outputs``.

Inputs keep their own dtype until a batch is asked for (a uint8 image set stays a quarter of
the size of its float32 form on every rank); ``batch`` returns normalised floats.

Every defect is a ``UserError`` (a ``ValueError``) that starts with the dataset's ``name``: the
file for an ``.npz``, else "ArrayDataset".
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError

CLASSIFICATION, REGRESSION = "classification", "regression"


def _numeric(name: str, what: str, array) -> np.ndarray:
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise UserError(f"{name}: {what} is not a numeric array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise UserError(f"{name}: {what} is not numeric (dtype {array.dtype}); "
                        f"expected an integer or float array")
    return array


def _per_channel(name: str, what: str, value, channels: int, ndim: int) -> np.ndarray | None:
    """``value`` (a scalar or one per channel) shaped to broadcast against a batch."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size not in (1, channels):
        raise UserError(f"{name}: {what} needs 1 value or one per channel ({channels}), got {arr.size}")
    if not np.isfinite(arr).all():
        raise UserError(f"{name}: {what} holds a non-finite value")
    shape = (1, arr.size) + (1,) * (ndim - 2) if arr.size > 1 else (1,) * ndim
    return arr.reshape(shape)


class ArrayDataset:
    """Inputs (N, ...) of any real dtype and targets (N,) or (N, ...), wrapped for ``fit``.

    * Integer targets of shape (N,) are class labels: the task is classification,
      ``classes`` defaults to "0" .. str(max label) and a label outside it is refused.
    * Float targets are regression targets; (N,) becomes (N, 1) so that it matches a model
      with one output.  ``num_outputs`` is the size of one target.
    * ``mean``/``std`` (a scalar or one value per channel, channel = axis 1 of the inputs)
      normalise inputs as ``(x - mean) / std`` in ``batch``; None leaves them as they are.
    * Inputs of shape (N,) are N samples of one feature: they become (N, 1).

    ``batch(indices)`` returns float inputs (float32 for integer inputs, else the inputs'
    own float dtype) and the targets for those indices.
    """

    def __init__(self, inputs, targets, *, mean=None, std=None, classes=None, name: str = "ArrayDataset"):
        self.name = name
        x = _numeric(name, "inputs", inputs)
        y = _numeric(name, "targets", targets)
        if x.ndim == 0 or y.ndim == 0:
            raise UserError(f"{name}: inputs and targets must be arrays with one row per sample")
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        if len(x) != len(y):
            raise UserError(f"{name}: inputs hold {len(x)} samples but targets hold {len(y)}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise UserError(f"{name}: inputs hold NaN or infinite values")
        if y.dtype.kind in "iu":
            self.task = CLASSIFICATION
            if y.ndim != 1:
                raise UserError(f"{name}: integer targets are class labels and must have shape (N,), "
                                f"got {y.shape}; use float targets for regression")
            y = y.astype(np.int64, copy=False)
            if y.size and y.min() < 0:
                raise UserError(f"{name}: class label {int(y.min())} is negative")
            top = int(y.max()) + 1 if y.size else 0
            if classes is None:
                classes = [str(c) for c in range(top)]
            classes = tuple(str(c) for c in classes)
            if top > len(classes):
                raise UserError(f"{name}: label {top - 1} is >= the number of classes ({len(classes)})")
            self.classes = classes
        elif y.dtype.kind == "f":
            self.task = REGRESSION
            if classes is not None:
                raise UserError(f"{name}: classes given but the targets are floats (regression); "
                                f"class labels must be integers")
            if not np.isfinite(y).all():
                raise UserError(f"{name}: targets hold NaN or infinite values")
            self.classes = None
            if y.ndim == 1:
                y = y.reshape(-1, 1)
        else:  # bool
            raise UserError(f"{name}: boolean targets are ambiguous; give integer class labels "
                            f"or float regression targets")
        channels = x.shape[1] if x.ndim >= 2 else 1
        self._mean = _per_channel(name, "mean", mean, channels, x.ndim)
        self._std = _per_channel(name, "std", std, channels, x.ndim)
        if self._std is not None and (self._std <= 0).any():
            raise UserError(f"{name}: std must be positive")
        self.mean = None if mean is None else tuple(float(v) for v in self._mean.reshape(-1))
        self.std = None if std is None else tuple(float(v) for v in self._std.reshape(-1))
        self.inputs, self.targets = x, y
        self._float = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inputs.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Classes for classification, the size of one target for regression."""
        if self.task == CLASSIFICATION:
            return len(self.classes)
        return int(np.prod(self.targets.shape[1:]))

    @property
    def num_classes(self) -> int:
        """``num_outputs`` under the name the built-in datasets use (what the model builders take)."""
        return self.num_outputs

    @property
    def background(self) -> np.ndarray:
        """Per-channel normalised value of a zero input: what a translation shift uncovers."""
        channels = self.inputs.shape[1] if self.inputs.ndim >= 2 else 1
        zero = np.zeros(channels)
        if self._mean is not None:
            zero = zero - self._mean.reshape(-1)
        if self._std is not None:
            zero = zero / self._std.reshape(-1)
        return np.broadcast_to(zero, (channels,)).astype(self._float)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices)
        if idx.size == 0:  # an empty list would be float64; a rank may get an empty slice
            idx = idx.astype(np.intp)
        x = self.inputs[idx].astype(self._float, copy=True)
        if self._mean is not None:
            x -= self._mean.astype(self._float)
        if self._std is not None:
            x /= self._std.astype(self._float)
        return x, self.targets[idx]

    def subset(self, indices) -> "ArrayDataset":
        """A new ArrayDataset of only ``indices`` (copied), with the same classes and normalisation."""
        idx = np.asarray(indices, dtype=np.intp)
        return ArrayDataset(self.inputs[idx], self.targets[idx], mean=self.mean, std=self.std, classes=self.classes,
                            name=self.name)

    def __repr__(self) -> str:
        return (f"ArrayDataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
                f"task={self.task}, num_outputs={self.num_outputs})")


# ------------------------------------------------------------------------------ .npz files
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _train_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training inputs (one of each for non-image inputs).

    An .npz carries raw arrays (often uint8 pixels); normalising them by the training set's
    own statistics is what makes a named model train on them without tuning, and the values
    go into the checkpoint's meta so that evaluation normalises the same way."""
    x = x.astype(np.float64)
    axes = (0, 2, 3) if x.ndim == 4 else None
    mean, std = x.mean(axis=axes), x.std(axis=axes)
    std = np.where(std > 0, std, 1.0)  # a constant input stays constant instead of dividing by 0
    return np.atleast_1d(mean), np.atleast_1d(std)


def load_npz(path) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) ArrayDatasets from an ``.npz`` holding x_train, y_train, x_test, y_test.

    Read with ``allow_pickle=False``: an object array is refused, never unpickled.  Images of
    shape (N, H, W) get a channel axis, (N, 1, H, W).  Inputs are normalised by the training
    split's per-channel mean and std.  An optional ``classes`` array names the classes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            missing = [k for k in NPZ_KEYS if k not in names]
            if missing:
                raise UserError(f"{path}: no array {missing[0]!r} in the file (it holds "
                                f"{', '.join(sorted(names)) or 'nothing'}; expected {', '.join(NPZ_KEYS)})")
            arrays = {k: data[k] for k in NPZ_KEYS}
            classes = data["classes"] if "classes" in names else None
    except UserError:
        raise
    except ValueError as exc:  # allow_pickle=False met an object array
        raise UserError(f"{path}: holds an object (pickled) array, which distnet does not load: "
                        f"store numeric arrays ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise UserError(f"{path}: not a readable .npz file ({exc})") from None
    for key in NPZ_KEYS:
        _numeric(f"{path}: {key}", "the array", arrays[key])
        if arrays[key].ndim == 3 and key.startswith("x"):
            arrays[key] = arrays[key][:, None]
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise UserError(f"{path}: x_train samples have shape {arrays['x_train'].shape[1:]} but "
                        f"x_test samples {arrays['x_test'].shape[1:]}")
    if classes is None and arrays["y_train"].dtype.kind in "iu" and arrays["y_test"].dtype.kind in "iu":
        top = max([int(a.max()) + 1 for a in (arrays["y_train"], arrays["y_test"]) if a.size] or [0])
        classes = [str(c) for c in range(top)]
    if classes is not None:
        classes = [str(c) for c in np.asarray(classes).reshape(-1).tolist()]
    if len(arrays["x_train"]) == 0:
        raise UserError(f"{path}: x_train holds no samples")
    if arrays["x_train"].dtype.kind == "f" and not np.isfinite(arrays["x_train"]).all():
        raise UserError(f"{path}: x_train holds NaN or infinite values")
    mean, std = _train_statistics(_numeric(f"{path}: x_train", "the array", arrays["x_train"]))
    split = {}
    for part in ("train", "test"):
        split[part] = ArrayDataset(arrays[f"x_{part}"], arrays[f"y_{part}"], mean=mean, std=std,
                                   classes=classes if arrays[f"y_{part}"].dtype.kind in "iu" else None,
                                   name=f"{path}: x_{part}/y_{part}")
    if split["train"].task != split["test"].task:
        raise UserError(f"{path}: y_train is {split['train'].task} (dtype {arrays['y_train'].dtype}) but "
                        f"y_test is {split['test'].task} (dtype {arrays['y_test'].dtype})")
    if split["train"].targets.shape[1:] != split["test"].targets.shape[1:]:
        raise UserError(f"{path}: y_train and y_test targets differ in shape")
    return split["train"], split["test"]
