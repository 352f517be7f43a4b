"""The one-cycle schedule against values computed by hand."""
import math

import pytest

from distnet.optim import OneCycle, make_schedule, one_cycle
from distnet.optim.optimizers import OptimizerError


def test_cosine_one_cycle_by_hand():
    """max 1, 10 steps, rise 4: start 1/25 = 0.04, peak at 4, final 0.04 / 1e4 = 4e-6 at 10."""
    s = OneCycle(1.0, 10, 4)
    assert s(0) == pytest.approx(0.04)
    assert s(2) == pytest.approx(1 + (0.04 - 1) * 0.5)  # halfway up: cos(pi/2) = 0
    assert s(1) == pytest.approx(1 + (0.04 - 1) * (1 + math.cos(math.pi / 4)) / 2)
    assert s(4) == pytest.approx(1.0)
    assert s(7) == pytest.approx(4e-6 + (1 - 4e-6) * 0.5)  # halfway down
    assert s(10) == pytest.approx(4e-6) and s(1000) == pytest.approx(4e-6)
    values = [s(i) for i in range(11)]
    assert values.index(max(values)) == 4


def test_linear_one_cycle_by_hand():
    s = OneCycle(0.4, 24, 6, div_factor=10, final_div_factor=100, anneal="linear")
    assert s(0) == pytest.approx(0.04)
    assert s(3) == pytest.approx(0.04 + 0.36 * 0.5)
    assert s(6) == pytest.approx(0.4)
    assert s(15) == pytest.approx(0.4 + (0.0004 - 0.4) * 0.5)
    assert s(24) == pytest.approx(0.0004)


def test_edges_no_rise_and_all_rise():
    assert OneCycle(1.0, 10, 0)(0) == pytest.approx(1.0)
    assert OneCycle(1.0, 10, 1)(0) == pytest.approx(0.04) and OneCycle(1.0, 10, 1)(1) == 1.0
    all_rise = OneCycle(1.0, 10, 10)
    assert all_rise(10) == 1.0 and all_rise(50) == 1.0 and all_rise(5) < 1.0


def test_make_schedule_uses_warmup_as_the_rise_and_clips_it():
    s = make_schedule("onecycle", 0.2, 100, warmup_steps=30)
    assert isinstance(s, OneCycle) and s.rise_steps == 30 and s(30) == pytest.approx(0.2)
    assert make_schedule("onecycle", 0.2, 100, warmup_steps=500).rise_steps == 100
    assert one_cycle(0.2, 100, 30)(57) == s(57)


@pytest.mark.parametrize("kw,needle", [
    (dict(max_lr=1.0, total_steps=10, rise_steps=11), "rise_steps"),
    (dict(max_lr=-1.0, total_steps=10, rise_steps=1), "max_lr"),
    (dict(max_lr=1.0, total_steps=10, rise_steps=1, div_factor=0.5), "div_factor"),
    (dict(max_lr=1.0, total_steps=10, rise_steps=1, anneal="exp"), "anneal"),
    (dict(max_lr=float("inf"), total_steps=10, rise_steps=1), "finite"),
])
def test_bad_arguments(kw, needle):
    with pytest.raises(OptimizerError, match=needle):
        OneCycle(**kw)
