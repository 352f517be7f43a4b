"""Tests for distnet.optim.schedules: values at known steps, purity, validation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from distnet.nn.module import Parameter
from distnet.optim import (
    SCHEDULE_NAMES,
    SGD,
    Constant,
    Cosine,
    StepLR,
    Warmup,
    constant,
    cosine,
    make_schedule,
    step_lr,
    warmup,
)


def test_constant():
    s = constant(0.1)
    assert [s(k) for k in (0, 1, 1000)] == [0.1, 0.1, 0.1]


def test_step_lr_values():
    s = step_lr(1.0, step_size=10, gamma=0.5)
    assert [s(k) for k in (0, 9, 10, 19, 20, 35)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    s = step_lr(0.1, step_size=3)  # default gamma 0.1
    assert s(2) == 0.1
    assert s(3) == pytest.approx(0.01, rel=1e-12)
    assert s(6) == pytest.approx(0.001, rel=1e-12)


def test_cosine_values():
    s = cosine(1.0, total_steps=100)
    assert s(0) == 1.0
    assert s(25) == pytest.approx((1 + math.sqrt(0.5)) / 2, rel=1e-12)  # 0.853553...
    assert s(25) == pytest.approx(0.8535533905932737, rel=1e-12)
    assert s(50) == pytest.approx(0.5, rel=1e-12)
    assert s(100) == pytest.approx(0.0, abs=1e-15)
    assert s(250) == s(100)  # held at min_lr after the end, not rising again
    s = cosine(0.5, total_steps=10, min_lr=0.1)
    assert s(0) == 0.5
    assert s(5) == pytest.approx(0.3, rel=1e-12)
    assert s(10) == pytest.approx(0.1, rel=1e-12)
    values = [s(k) for k in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_warmup_values():
    s = warmup(constant(1.0), warmup_steps=4, start_factor=0.2)
    # factor = 0.2 + 0.8 * step / 4 until step 4
    assert [s(k) for k in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0], rel=1e-12)
    base = cosine(1.0, total_steps=100)
    s = warmup(base, warmup_steps=10, start_factor=0.1)
    assert s(0) == pytest.approx(0.1, rel=1e-12)
    assert s(5) == pytest.approx(0.55 * base(5), rel=1e-12)
    assert s(10) == base(10) and s(60) == base(60)  # the wrapped schedule is not shifted
    assert warmup(base, warmup_steps=0)(0) == base(0)


def test_schedules_are_pure_functions_of_the_step():
    """Resuming at step k must give the lr an uninterrupted run would use."""
    for make in (lambda: constant(0.1), lambda: step_lr(0.1, 7), lambda: cosine(0.1, 50),
                 lambda: warmup(cosine(0.1, 50, min_lr=0.01), 5)):
        forward = [make()(k) for k in range(60)]
        s = make()
        backward = [s(k) for k in reversed(range(60))][::-1]
        assert forward == backward
        assert [s.lr_at(k) for k in range(60)] == forward


def test_make_schedule():
    assert isinstance(make_schedule("constant", 0.1, 100), Constant)
    s = make_schedule("step", 0.1, 90)
    assert isinstance(s, StepLR) and s.step_size == 30 and s.gamma == 0.1  # two decays
    s = make_schedule("step", 1.0, 100, step_size=10, gamma=0.5)
    assert s(25) == 0.25
    s = make_schedule("cosine", 1.0, 100, min_lr=0.1)
    assert isinstance(s, Cosine) and s(100) == pytest.approx(0.1)
    s = make_schedule("cosine", 1.0, 100, warmup_steps=10)
    assert isinstance(s, Warmup) and isinstance(s.schedule, Cosine)
    assert s(0) == pytest.approx(0.1) and s(10) == cosine(1.0, 100)(10)
    assert set(SCHEDULE_NAMES) == {"constant", "step", "cosine", "onecycle"}


def test_make_schedule_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown schedule 'linear'.*constant, step, cosine"):
        make_schedule("linear", 0.1, 100)


@pytest.mark.parametrize("make,name", [
    (lambda: constant(-0.1), "base_lr"),
    (lambda: step_lr(0.1, 0), "step_size"),
    (lambda: step_lr(0.1, 2.5), "step_size"),
    (lambda: step_lr(0.1, 5, gamma=-1.0), "gamma"),
    (lambda: cosine(0.1, 0), "total_steps"),
    (lambda: cosine(0.1, 10, min_lr=-1.0), "min_lr"),
    (lambda: warmup(constant(0.1), -1), "warmup_steps"),
    (lambda: warmup(constant(0.1), 5, start_factor=1.5), "start_factor"),
    (lambda: warmup(0.1, 5), "schedule"),
    (lambda: make_schedule("cosine", 0.1, 100, warmup_steps=-3), "warmup_steps"),
    (lambda: constant(0.1)(-1), "step"),
    (lambda: constant(0.1)(1.5), "step"),
])
def test_invalid_arguments_raise_value_error_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_schedule_drives_optimizer_lr():
    """The documented loop: opt.lr = schedule(opt.step_count) before each opt.step()."""
    p = Parameter(np.zeros(1))
    opt = SGD([p], lr=0.0)
    sched = step_lr(1.0, step_size=2, gamma=0.5)
    p.grad[...] = 1.0
    used = []
    for _ in range(5):
        opt.lr = sched(opt.step_count)
        used.append(opt.lr)
        opt.step()
    assert used == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert p.data[0] == -sum(used)
