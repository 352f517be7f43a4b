"""The optimizer's face for wrappers that keep weights of their own beside an optimizer
(WeightEMA, Lookahead): ``lr``, ``step_count`` and ``zero_grad`` pass through, and the
wrapper's arrays travel in the optimizer's state dict under its own keys, so checkpoints
carry them with no change to the checkpoint format."""
from __future__ import annotations

import numpy as np

from distnet.optim.optimizers import OptimizerError


class OptimizerWrapper:
    """Subclasses set ``KEYS`` (their state-dict keys) and ``WHAT`` (the flag that adds them,
    for the error when a state lacks them)."""

    KEYS: tuple[str, ...] = ()
    WHAT = ""

    def __init__(self, optimizer, model):
        self.optimizer, self.model = optimizer, model
        self._work = {}  # scratch vectors for _move_toward, by size

    def _move_toward(self, average, current, fraction: float) -> None:
        """``average += fraction * (current - average)`` in place, through one scratch vector
        per size rather than two temporaries every step."""
        work = self._work.get(average.size)
        if work is None:
            work = self._work[average.size] = np.empty_like(average)
        np.subtract(current, average, out=work)
        work *= fraction
        average += work

    @property
    def lr(self):
        return self.optimizer.lr

    @lr.setter
    def lr(self, value):
        self.optimizer.lr = value

    @property
    def step_count(self):
        return self.optimizer.step_count

    def zero_grad(self):
        self.optimizer.zero_grad()

    def _load_inner(self, state, shaped: dict) -> None:
        """Check that ``state`` has every key and that each key of ``shaped`` (key -> the
        array it is loaded into) fits its array, before anything changes; then load the
        wrapped optimizer's part and copy the arrays in."""
        missing = [k for k in self.KEYS if k not in state]
        if missing:
            raise OptimizerError(f"state has no {missing[0]!r}: it was not saved with {self.WHAT}")
        for key, target in shaped.items():
            if np.shape(state[key]) != target.shape:
                raise OptimizerError(f"{key} of shape {np.shape(state[key])} does not fit {target.shape}")
        self.optimizer.load_state_dict({k: state[k] for k in state.keys() if k not in self.KEYS})
        for key, target in shaped.items():
            target[...] = state[key]


def model_buffers(model) -> np.ndarray:
    """The model's flat buffer array (BatchNorm statistics, whitening filters), or an empty one."""
    own = getattr(model, "flat_buffers", None)
    return own if own is not None else np.zeros(0, model.flat_params.dtype)
