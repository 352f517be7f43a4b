"""Learning-rate schedules as pure functions of the step.

Convention: ``step`` counts *completed* optimizer steps, starting at 0, and
``schedule(step)`` (also spelled ``schedule.lr_at(step)``) is the learning rate used for the
update that produces step ``step + 1``.  A training loop therefore does::

    opt.lr = schedule(opt.step_count)
    opt.step()

Why pure functions: there is no hidden state to checkpoint.  A run resumed from a checkpoint
taken after ``k`` steps restores ``opt.step_count == k`` and gets exactly the learning rates
an uninterrupted run would have used, on every rank, with nothing else to save.
"""
from __future__ import annotations

import math
import operator

from distnet.optim.optimizers import OptimizerError, _number

__all__ = ["Schedule", "Constant", "StepLR", "Cosine", "Warmup", "OneCycle", "constant", "step_lr",
           "cosine", "warmup", "one_cycle", "make_schedule", "SCHEDULE_NAMES"]


def _count(name: str, value, lo: int = 0) -> int:
    """``value`` as an int >= lo, or raise naming the argument."""
    try:
        n = operator.index(value)
    except TypeError:
        raise OptimizerError(f"invalid {name}: {value!r} (must be an integer)") from None
    if n < lo:
        raise OptimizerError(f"invalid {name}: {value!r} (must be >= {lo})")
    return n


class Schedule:
    """Base class: ``schedule(step) -> lr`` for ``step`` completed steps (see module doc)."""

    def __call__(self, step: int) -> float:
        return self.lr_at(_count("step", step))

    def lr_at(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Schedule):
    """The same learning rate at every step."""

    def __init__(self, base_lr: float):
        self.base_lr = _number("base_lr", base_lr, lo=0.0)

    def lr_at(self, step: int) -> float:
        return self.base_lr


class StepLR(Schedule):
    """``base_lr * gamma ** (step // step_size)``: multiply by ``gamma`` every ``step_size``
    steps (closed form of ``torch.optim.lr_scheduler.StepLR``)."""

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1):
        self.base_lr = _number("base_lr", base_lr, lo=0.0)
        self.step_size = _count("step_size", step_size, lo=1)
        self.gamma = _number("gamma", gamma, lo=0.0)

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)


class Cosine(Schedule):
    """Cosine annealing from ``base_lr`` at step 0 to ``min_lr`` at ``total_steps``::

        min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2

    (closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR``), held at ``min_lr``
    after ``total_steps`` instead of rising again.
    """

    def __init__(self, base_lr: float, total_steps: int, min_lr: float = 0.0):
        self.base_lr = _number("base_lr", base_lr, lo=0.0)
        self.total_steps = _count("total_steps", total_steps, lo=1)
        self.min_lr = _number("min_lr", min_lr, lo=0.0)

    def lr_at(self, step: int) -> float:
        t = min(step, self.total_steps)
        cos = (1.0 + math.cos(math.pi * t / self.total_steps)) / 2.0
        return self.min_lr + (self.base_lr - self.min_lr) * cos


class Warmup(Schedule):
    """Linear warm-up in front of another schedule.

    For ``step < warmup_steps`` the lr is ``schedule(step)`` scaled by a factor rising
    linearly from ``start_factor`` (at step 0) towards 1 (reached at ``warmup_steps``, like
    ``torch.optim.lr_scheduler.LinearLR``); from ``warmup_steps`` on it is ``schedule(step)``.
    The wrapped schedule is not shifted, so it stays a function of the global step and the
    two join continuously.  Why warm up: large effective batches (many ranks) are unstable
    at full lr in the first steps.
    """

    def __init__(self, schedule, warmup_steps: int, start_factor: float = 0.1):
        if not callable(schedule):
            raise OptimizerError(f"invalid schedule: {schedule!r} is not callable")
        self.schedule = schedule
        self.warmup_steps = _count("warmup_steps", warmup_steps)
        self.start_factor = _number("start_factor", start_factor, lo=0.0, hi=1.0)

    def lr_at(self, step: int) -> float:
        lr = self.schedule(step)
        if step >= self.warmup_steps:
            return lr
        factor = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        return lr * factor


class OneCycle(Schedule):
    """Smith's one-cycle policy: rise from ``max_lr / div_factor`` at step 0 to ``max_lr`` at
    step ``rise_steps``, then fall to ``max_lr / (div_factor * final_div_factor)`` at
    ``total_steps`` (held there after), each phase annealed by ``anneal``::

        cos:    end + (start - end) * (1 + cos(pi * t)) / 2      t in [0, 1] through the phase
        linear: start + (end - start) * t

    The defaults (div_factor 25, final_div_factor 1e4, cosine) are those of
    ``torch.optim.lr_scheduler.OneCycleLR``, which places the peak at step
    ``pct_start * total_steps - 1`` and the minimum at ``total_steps - 1``; here the phases
    end at ``rise_steps`` and ``total_steps``, like Cosine, and ``rise_steps`` of 0 or 1
    work (PyTorch divides by zero for a one-step rise).  Why one-cycle: the fast CIFAR-10
    recipes train at a high peak rate for few epochs; the low start does the warm-up.
    """

    ANNEALS = ("cos", "linear")

    def __init__(self, max_lr: float, total_steps: int, rise_steps: int, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, anneal: str = "cos"):
        self.max_lr = _number("max_lr", max_lr, lo=0.0)
        self.total_steps = _count("total_steps", total_steps, lo=1)
        self.rise_steps = _count("rise_steps", rise_steps)
        if self.rise_steps > self.total_steps:
            raise OptimizerError(f"invalid rise_steps: {rise_steps} (must be <= total_steps {total_steps})")
        self.div_factor = _number("div_factor", div_factor, lo=1.0)
        self.final_div_factor = _number("final_div_factor", final_div_factor, lo=1.0)
        if anneal not in self.ANNEALS:
            raise OptimizerError(f"invalid anneal: {anneal!r} (must be one of {', '.join(self.ANNEALS)})")
        self.anneal = anneal

    def _between(self, start: float, end: float, t: float) -> float:
        if self.anneal == "linear":
            return start + (end - start) * t
        return end + (start - end) * (1.0 + math.cos(math.pi * t)) / 2.0

    def lr_at(self, step: int) -> float:
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        if step < self.rise_steps:
            return self._between(initial, self.max_lr, step / self.rise_steps)
        fall = self.total_steps - self.rise_steps
        if fall == 0:
            return self.max_lr
        return self._between(self.max_lr, final, min(step - self.rise_steps, fall) / fall)


def constant(base_lr: float) -> Constant:
    """The same lr at every step."""
    return Constant(base_lr)


def step_lr(base_lr: float, step_size: int, gamma: float = 0.1) -> StepLR:
    """``base_lr * gamma ** (step // step_size)``."""
    return StepLR(base_lr, step_size, gamma)


def cosine(base_lr: float, total_steps: int, min_lr: float = 0.0) -> Cosine:
    """Cosine decay from ``base_lr`` to ``min_lr`` over ``total_steps``."""
    return Cosine(base_lr, total_steps, min_lr)


def warmup(schedule, warmup_steps: int, start_factor: float = 0.1) -> Warmup:
    """Linear warm-up from ``start_factor * schedule(0)`` to ``schedule(warmup_steps)``."""
    return Warmup(schedule, warmup_steps, start_factor)


def one_cycle(max_lr: float, total_steps: int, rise_steps: int, **kw) -> OneCycle:
    """One-cycle: up to ``max_lr`` over ``rise_steps``, then down until ``total_steps``."""
    return OneCycle(max_lr, total_steps, rise_steps, **kw)


SCHEDULE_NAMES = ("constant", "step", "cosine", "onecycle")


def make_schedule(name: str, base_lr: float, total_steps: int, warmup_steps: int = 0,
                  step_size: int | None = None, gamma: float = 0.1, min_lr: float = 0.0,
                  start_factor: float = 0.1) -> Schedule:
    """Build a schedule by name (e.g. from command-line flags).

    ``total_steps`` is the length of the whole run (warm-up included).  ``step`` decays by
    ``gamma`` every ``step_size`` steps (default: a third of the run, so two decays);
    ``cosine`` decays to ``min_lr`` at ``total_steps``.  ``warmup_steps > 0`` adds a linear
    warm-up from ``start_factor * base_lr``.  ``onecycle`` (OneCycle, cosine annealing)
    peaks at ``base_lr`` after ``warmup_steps`` (at most ``total_steps``): its rise is the
    warm-up, so no second one is added.
    """
    key = str(name).lower()
    total_steps = _count("total_steps", total_steps, lo=1)
    if key == "onecycle":
        return OneCycle(base_lr, total_steps, min(_count("warmup_steps", warmup_steps), total_steps))
    if key == "constant":
        schedule: Schedule = Constant(base_lr)
    elif key == "step":
        schedule = StepLR(base_lr, max(1, total_steps // 3) if step_size is None else step_size,
                          gamma)
    elif key == "cosine":
        schedule = Cosine(base_lr, total_steps, min_lr)
    else:
        raise OptimizerError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}")
    if _count("warmup_steps", warmup_steps) > 0:
        schedule = Warmup(schedule, warmup_steps, start_factor)
    return schedule
