"""The step timeline (distnet/timeline.py) and ``python -m distnet.bench --timeline``."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from distnet import timeline as tlmod
from distnet.timeline import PHASES, Timeline, lockstep_loss


class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def test_marks_book_the_time_since_the_previous_mark_to_their_phase(monkeypatch):
    # step 0 (warm-up): begin 0, loader at 1; step 1: begin 3 (2 s of Python to step 0),
    # loader 3.5, forward_backward 6.5, grad 7; end at 8 (1 s of Python)
    monkeypatch.setattr(tlmod.time, "perf_counter", FakeClock([0, 1, 3, 3.5, 6.5, 7, 8]))
    t = Timeline(warmup=1)
    t.mark(tlmod.LOADER)  # before any step: ignored, reads no clock
    t.begin_step()
    t.mark(tlmod.LOADER)
    t.begin_step()
    t.mark(tlmod.LOADER)
    t.mark(tlmod.FORWARD_BACKWARD)
    t.mark(tlmod.GRAD_ALLREDUCE)
    t.end()
    rows = t.rows()
    assert rows.shape == (1, len(PHASES))
    expected = dict.fromkeys(PHASES, 0.0)
    expected.update(loader=0.5, forward_backward=3.0, grad_allreduce=0.5, python=1.0)
    assert dict(zip(PHASES, rows[0])) == expected
    summary = t.summary()
    assert summary["steps"] == 1 and summary["step_ms"] == pytest.approx(5000.0)
    assert summary["ms"]["forward_backward"] == pytest.approx(3000.0)


def test_lockstep_loss_splits_waiting_into_the_slowest_rank_and_communication():
    """Two ranks, two steps of 10 s each: rank 0 busy 8 and 6, rank 1 busy 6 and 8, so the
    slowest is busy 8 of each 10 s (2 s communication), the mean rank 7 (1 s imbalance)."""
    def row(busy, wait):
        r = np.zeros(len(PHASES))
        r[tlmod.FORWARD_BACKWARD], r[tlmod.GRAD_ALLREDUCE] = busy, wait
        return r
    rank0 = [row(8, 2), row(6, 4)]
    rank1 = [row(6, 4), row(8, 2)]
    loss = lockstep_loss([rank0, rank1])
    assert loss == pytest.approx({"imbalance": 0.1, "communication": 0.2, "busy": 0.7, "systematic": 0.0})
    assert lockstep_loss([rank0]) == {"imbalance": 0.0, "communication": 0.0, "busy": 1.0, "systematic": 0.0}
    # rank 1 slower on average: busy 7 and 9 against rank 0's 6 and 6
    loss = lockstep_loss([[row(6, 4), row(6, 4)], [row(7, 3), row(9, 1)]])
    assert loss["imbalance"] == pytest.approx(0.1) and loss["systematic"] == pytest.approx(0.1)


def test_a_timeline_on_a_real_trainer_records_every_step_and_detaches():
    from distnet.bench_sync import build_trainer, parse_args
    from distnet.distributed import SingleProcessCommunicator

    args = parse_args(["--timeline", "--steps", "12", "--warmup", "2", "--per-rank-batch", "16"])
    trainer = build_trainer(args, SingleProcessCommunicator())
    sync = trainer.optimizer.sync
    t = Timeline(warmup=2).attach(trainer)
    assert trainer.timeline is t and "finish" in vars(sync)
    trainer.run()
    t.end()
    t.detach(trainer)
    assert trainer.timeline is None and "finish" not in vars(sync)  # the class's method again
    rows = t.rows()
    assert rows.shape == (10, len(PHASES))
    ms = dict(zip(PHASES, rows.mean(axis=0)))
    assert ms["forward_backward"] > 0 and ms["loader"] > 0 and ms["optimizer"] > 0
    assert ms["grad_imbalance"] == 0  # no barrier asked for
    assert ms["forward_backward"] > ms["grad_allreduce"] + ms["stats_allreduce"]  # one process: no waiting


def test_bench_timeline_prints_the_breakdown_and_refuses_bad_flags():
    cmd = [sys.executable, "-m", "distnet.bench", "--timeline", "--steps", "15", "--warmup", "5",
           "--per-rank-batch", "16"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for phase in ("loader", "forward_backward", "optimizer", "python", "step (mean)"):
        assert phase in r.stdout, r.stdout
    assert "1 rank(s) x 16 samples" in r.stdout
    bad = subprocess.run(cmd[:4] + ["--steps", "10", "--warmup", "10"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("distnet: error: --warmup:"), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
