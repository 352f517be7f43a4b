"""Lookahead (Zhang et al., 2019) in the form the fastest CIFAR-10 trainer uses (airbench).

Every ``every`` optimizer steps the "slow" copy of the weights moves toward the trained
("fast") ones, ``slow = d * slow + (1 - d) * fast``, and training continues from the slow
copy (``fast = slow``).  The pull ``d`` grows over the run, ``d(t) = decay * (t / T)^power``:
0 at the start (the slow copy just follows), ``decay`` at the end.  After the last step
the model holds the slow weights.  Why: at the high learning rates of a short schedule the
weights rattle around the valley's floor; averaging them in (increasingly, as the rate
falls) lands nearer its middle.  airbench's defaults are ``every=5``, ``decay=0.95**5``,
``power=3``.  Unlike WeightEMA it changes the weights training continues from, and every
rank does the same arithmetic on the same weights, so ranks stay identical.  BatchNorm's
running statistics (``flat_buffers``) are averaged alike, as airbench does.

It wraps the optimizer so that its state travels in the optimizer's state dict: checkpoints
carry the slow weights and a resumed run continues bit for bit.
"""
from __future__ import annotations

import numpy as np

from distnet.optim.optimizers import OptimizerError, _number
from distnet.optim.wrapper import OptimizerWrapper
from distnet.optim.wrapper import model_buffers as _buffers


class Lookahead(OptimizerWrapper):
    """``Lookahead(optimizer, model, total_steps)``; behaves like the optimizer it wraps
    (``lr``, ``step_count``, ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict``).
    ``model`` is the Sequential whose flat arrays the optimizer updates; ``total_steps`` is
    the run's length T (the schedule's, not where a run is cut short)."""

    KEYS, WHAT = ("lookahead_params", "lookahead_buffers"), "lookahead (--lookahead)"

    def __init__(self, optimizer, model, total_steps: int, every: int = 5, decay: float = 0.95 ** 5,
                 power: float = 3.0):
        super().__init__(optimizer, model)
        if int(total_steps) < 1 or int(every) < 1:
            raise OptimizerError(f"lookahead needs total_steps >= 1 and every >= 1, got {total_steps}, {every}")
        self.total_steps, self.every = int(total_steps), int(every)
        self.decay = _number("lookahead decay", decay, lo=0.0, hi=1.0)
        self.power = _number("lookahead power", power, lo=0.0)
        self.params = np.zeros_like(model.flat_params)
        self.buffers = np.zeros_like(_buffers(model))
        # the slow copy starts as the weights the first step starts from: those after the
        # trainer's broadcast and data-dependent initialisation, not those at construction
        self._started = False

    def pull(self, t: int) -> float:
        """d(t), the weight of the slow copy in the update after step t."""
        return self.decay * (min(t, self.total_steps) / self.total_steps) ** self.power

    def step(self) -> None:
        if not self._started:
            self.params[...] = self.model.flat_params
            self.buffers[...] = _buffers(self.model)
            self._started = True
        self.optimizer.step()
        t = self.optimizer.step_count
        if t % self.every == 0:
            d = self.pull(t)
            for slow, fast in ((self.params, self.model.flat_params), (self.buffers, _buffers(self.model))):
                self._move_toward(slow, fast, 1.0 - d)
                fast[...] = slow
        if t == self.total_steps:  # the run ends on the slow weights
            self.model.flat_params[...] = self.params
            _buffers(self.model)[...] = self.buffers

    def state_dict(self) -> dict:
        out = self.optimizer.state_dict()
        out.update(lookahead_params=self.params.copy(), lookahead_buffers=self.buffers.copy())
        return out

    def load_state_dict(self, state) -> None:
        self._load_inner(state, {"lookahead_params": self.params, "lookahead_buffers": self.buffers})
        self._started = True

    def __repr__(self):
        return f"Lookahead({self.optimizer!r}, every={self.every}, decay={self.decay:g}, T={self.total_steps})"
