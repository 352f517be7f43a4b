"""A per-rank timeline of training steps: where each step's time goes.

The Trainer calls ``mark(PHASE)`` at the boundaries of its phases when a timeline is
attached (``Timeline.attach(trainer)``); ``mark`` books the time since the previous mark to
that phase.  Detached (the default, ``trainer.timeline is None``) the loop pays one ``is
None`` test per boundary, about 6 per step: nothing measurable against a step of ~10 ms.

Phases of one step, in the order they happen:

* ``loader``: the loader's batch (indexing the data set, shifts and augmentation);
* ``forward_backward``: zero_grad, forward, loss, backward (with ``overlap``, also starting
  the buckets' allreduce from the backward hooks);
* ``grad_imbalance`` (only with ``barrier=True``): a barrier before the gradient allreduce,
  so waiting for the slower rank is told apart from moving the data;
* ``grad_allreduce``: ``GradientSync.finish``, i.e. the reduction or the wait for it;
* ``optimizer``: the optimizer's update of the flat parameters;
* ``stats_allreduce``: the loop's per-step reduction of loss/accuracy/stop flag (nothing
  when those ride in the gradient allreduce);
* ``python``: everything else (the schedule, logging, progress, the loop itself).

Nothing here touches nn/ or optim/: the gradient allreduce is timed by wrapping the
GradientSync's ``finish`` on the instance, for as long as the timeline is attached.
"""
from __future__ import annotations

import time

import numpy as np

PHASES = ("loader", "forward_backward", "grad_imbalance", "grad_allreduce", "optimizer",
          "stats_allreduce", "python")
LOADER, FORWARD_BACKWARD, GRAD_IMBALANCE, GRAD_ALLREDUCE, OPTIMIZER, STATS_ALLREDUCE, PYTHON = range(len(PHASES))
COMPUTE = (FORWARD_BACKWARD, OPTIMIZER)


class Timeline:
    """Seconds per phase per step, for the steps after ``warmup``."""

    def __init__(self, warmup: int = 20, capacity: int = 100_000):
        self.warmup = warmup
        self._rows = np.zeros((capacity, len(PHASES)))
        self._steps = -1  # rows begun; -1: no step begun yet
        self._last = 0.0
        self._row = None
        self._sync = self._finish = None

    # --- recording (the hot path) ----------------------------------------------------------
    def begin_step(self) -> None:
        """The top of the loop: close the previous step (its tail is Python) and open one."""
        now = time.perf_counter()
        if self._row is not None:
            self._row[PYTHON] += now - self._last
        self._steps += 1
        self._row = self._rows[min(self._steps, len(self._rows) - 1)]
        self._last = now

    def mark(self, phase: int) -> None:
        if self._row is None:
            return
        now = time.perf_counter()
        self._row[phase] += now - self._last
        self._last = now

    def end(self) -> None:
        """After the loop: close the last step."""
        if self._row is not None:
            self.mark(PYTHON)
            self._steps += 1
            self._row = None

    # --- attaching ---------------------------------------------------------------------------
    def attach(self, trainer, barrier: bool = False) -> "Timeline":
        """Record ``trainer``'s steps; ``barrier`` also splits the gradient wait into waiting
        for the slower rank (a barrier, an extra collective) and the allreduce itself."""
        trainer.timeline = self
        sync = trainer.optimizer.sync
        finish = sync.finish
        comm = trainer.comm

        def timed_finish():
            self.mark(OPTIMIZER)  # DistributedOptimizer.step's entry: nothing, in practice
            if barrier and comm.size > 1:
                comm.barrier()
                self.mark(GRAD_IMBALANCE)
            finish()
            self.mark(GRAD_ALLREDUCE)

        own = vars(sync).get("finish")  # an instance's own finish (another wrapper), else None
        sync.finish = timed_finish
        self._sync, self._finish = sync, own
        return self

    def detach(self, trainer) -> None:
        if self._sync is not None:
            if self._finish is None:
                del self._sync.finish  # the class's method again
            else:
                self._sync.finish = self._finish
            self._sync = self._finish = None
        trainer.timeline = None

    # --- results -----------------------------------------------------------------------------
    def rows(self) -> np.ndarray:
        """Seconds per phase of each recorded step after the warm-up (steps x phases)."""
        done = min(self._steps, len(self._rows))
        return self._rows[min(self.warmup, done):done].copy()

    def summary(self) -> dict:
        """Mean ms per step of each phase, the share of each, and the median step."""
        rows = self.rows()
        if len(rows) == 0:
            return {"steps": 0, "ms": {p: 0.0 for p in PHASES}, "step_ms": 0.0, "median_step_ms": 0.0}
        totals = rows.sum(axis=1)
        means = rows.mean(axis=0) * 1e3
        return {"steps": len(rows), "ms": dict(zip(PHASES, means.tolist())),
                "step_ms": float(totals.mean() * 1e3), "median_step_ms": float(np.median(totals) * 1e3)}


BUSY = (LOADER, FORWARD_BACKWARD, OPTIMIZER, PYTHON)  # a rank's own work, no waiting


def lockstep_loss(per_rank_rows: list) -> dict:
    """What running in lockstep costs, from every rank's rows of the same steps.

    Each step every rank is busy for some time (its own work) and then waits.  Independent
    processes would be busy all the time, so the fraction of the job's time not spent busy
    is the loss against them, and it splits into ``imbalance`` (the slowest rank's busy
    time minus the mean rank's: the others wait for it) and ``communication`` (the step's
    time beyond the slowest rank's busy time: moving and reducing the data).  Of the
    imbalance, ``systematic`` is what one rank being slower on average costs (the slowest
    mean busy time minus the mean), which giving that rank fewer samples could recover; the
    rest is step-to-step jitter, which no split of the batch can."""
    steps = min(len(r) for r in per_rank_rows)
    if steps == 0 or len(per_rank_rows) < 2:
        return {"imbalance": 0.0, "communication": 0.0, "busy": 1.0, "systematic": 0.0}
    rows = np.stack([np.asarray(r)[:steps] for r in per_rank_rows])  # ranks x steps x phases
    busy = rows[:, :, list(BUSY)].sum(axis=2)  # ranks x steps
    step = rows.sum(axis=2).mean(axis=0)  # every rank's step lasts the same, up to the marks
    total = step.sum()
    slowest = busy.max(axis=0).sum()
    mean = busy.mean(axis=0).sum()
    systematic = busy.sum(axis=1).max() - mean
    return {"imbalance": float((slowest - mean) / total), "communication": float((total - slowest) / total),
            "busy": float(mean / total), "systematic": float(systematic / total)}


def format_summaries(summaries: list, title: str) -> str:
    """One table: a row per phase, a column (ms and %) per rank."""
    shown = [p for p in PHASES if any(s["ms"][p] > 0 for s in summaries)]
    head = f"{'phase':18s}" + "".join(f"  {'rank ' + str(r) + ' ms':>10s} {'%':>5s}" for r in range(len(summaries)))
    lines = [title, head, "-" * len(head)]
    for phase in shown:
        cells = ""
        for s in summaries:
            ms = s["ms"][phase]
            cells += f"  {ms:10.3f} {100 * ms / s['step_ms'] if s['step_ms'] else 0:5.1f}"
        lines.append(f"{phase:18s}{cells}")
    lines.append(f"{'step (mean)':18s}" + "".join(f"  {s['step_ms']:10.3f} {100.0:5.1f}" for s in summaries))
    lines.append(f"{'step (median)':18s}" + "".join(f"  {s['median_step_ms']:10.3f} {'':5s}" for s in summaries))
    lines.append(f"(compute = forward_backward + optimizer; means over {summaries[0]['steps']} steps after the warm-up)")
    return "\n".join(lines)
