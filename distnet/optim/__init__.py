"""Optimizers and learning-rate schedules for distnet (pure NumPy, PyTorch's formulas).

Typical use::

    opt = make_optimizer("momentum", model, lr=0.1, weight_decay=5e-4)
    sched = make_schedule("cosine", 0.1, total_steps, warmup_steps=100)
    for batch in batches:
        model.zero_grad(); ...backward...; (allreduce model.flat_grads)
        opt.lr = sched(opt.step_count)
        opt.step()
"""
from distnet.optim.optimizers import (
    OPTIMIZER_NAMES,
    SGD,
    Adam,
    AdamW,
    Optimizer,
    OptimizerError,
    RMSprop,
    make_optimizer,
)
from distnet.optim.decay import decay_mask, frozen_mask
from distnet.optim.ema import WeightEMA, evaluation_weights
from distnet.optim.lookahead import Lookahead
from distnet.optim.schedules import (
    SCHEDULE_NAMES,
    Constant,
    Cosine,
    OneCycle,
    Schedule,
    StepLR,
    Warmup,
    constant,
    cosine,
    make_schedule,
    one_cycle,
    step_lr,
    warmup,
)

__all__ = [
    "Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "make_optimizer", "OPTIMIZER_NAMES",
    "OptimizerError", "decay_mask", "frozen_mask", "WeightEMA", "evaluation_weights", "Lookahead",
    "Schedule", "Constant", "StepLR", "Cosine", "Warmup", "OneCycle", "one_cycle", "constant", "step_lr", "cosine",
    "warmup", "make_schedule", "SCHEDULE_NAMES",
]
