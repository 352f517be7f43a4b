"""An exponential moving average (EMA) of the weights, kept beside an optimizer, for evaluation.

Why: the weights at the end of an epoch are one noisy point of SGD's walk; their running
average is a smoother model that usually tests better (the fast CIFAR-10 recipes evaluate
such an average).  It is an optimizer wrapper so that its state travels in the optimizer's
state dict: checkpoints carry it and a resumed run continues the same average, bit for bit,
with no change to the checkpoint format.  It averages BatchNorm's running statistics
(``flat_buffers``) too, so the averaged weights are evaluated with statistics that belong to
them.  Training always uses the raw weights; ``applied()`` swaps the average in for an
evaluation and back.  Checkpoints' ``params`` stay the raw weights (what resuming needs).
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import numpy as np

from distnet.optim.optimizers import _number, _scalar
from distnet.optim.wrapper import OptimizerWrapper
from distnet.optim.wrapper import model_buffers as _buffers


class WeightEMA(OptimizerWrapper):
    """After the first optimizer step the average is the weights; after the t-th (t >= 2),
    ``avg = d * avg + (1 - d) * weights`` with ``d = min(decay, (1 + t) / (10 + t))`` when
    ``warmup`` (TensorFlow's ExponentialMovingAverage with num_updates), so a short run's
    average is not dominated by its first steps; ``warmup=False`` uses ``decay`` throughout.
    Starting from the weights after step 1 (not before) keeps the random initial weights, and
    when they were broadcast, out of it.

    Behaves like the optimizer it wraps (``lr``, ``step_count``, ``step``, ``zero_grad``,
    ``state_dict``, ``load_state_dict``); ``model`` is the Sequential whose flat arrays the
    optimizer updates."""

    KEYS, WHAT = ("ema_params", "ema_buffers", "ema_updates"), "a weight average (--ema)"

    def __init__(self, optimizer, model, decay: float = 0.999, warmup: bool = True):
        super().__init__(optimizer, model)
        self.decay = _number("ema decay", decay, lo=0.0, hi=1.0, hi_open=True)
        self.warmup = bool(warmup)
        self.params = np.zeros_like(model.flat_params)
        self.buffers = np.zeros_like(_buffers(model))
        self.updates = 0

    def step(self) -> None:
        self.optimizer.step()
        self.update()

    def update(self) -> None:
        """Fold the current weights and buffers into the average."""
        self.updates += 1
        t = self.updates
        if t == 1:
            self.params[...] = self.model.flat_params
            self.buffers[...] = _buffers(self.model)
            return
        d = min(self.decay, (1.0 + t) / (10.0 + t)) if self.warmup else self.decay
        for avg, now in ((self.params, self.model.flat_params), (self.buffers, _buffers(self.model))):
            self._move_toward(avg, now, 1.0 - d)

    @contextmanager
    def applied(self):
        """The model holds the averaged weights and buffers inside the block, its own after."""
        raw_params, raw_buffers = self.model.flat_params.copy(), _buffers(self.model).copy()
        self.model.flat_params[...] = self.params
        _buffers(self.model)[...] = self.buffers
        try:
            yield self.model
        finally:
            self.model.flat_params[...] = raw_params
            _buffers(self.model)[...] = raw_buffers

    def state_dict(self) -> dict:
        out = self.optimizer.state_dict()
        out.update(ema_params=self.params.copy(), ema_buffers=self.buffers.copy(), ema_updates=self.updates)
        return out

    def load_state_dict(self, state) -> None:
        self._load_inner(state, {"ema_params": self.params, "ema_buffers": self.buffers})
        self.updates = int(_scalar(state, "ema_updates"))

    def __repr__(self):
        return f"WeightEMA({self.optimizer!r}, decay={self.decay:g}, updates={self.updates})"


def evaluation_weights(optimizer):
    """A context for evaluating: the weight average when ``optimizer`` keeps one, else nothing."""
    return optimizer.applied() if isinstance(optimizer, WeightEMA) else nullcontext()
