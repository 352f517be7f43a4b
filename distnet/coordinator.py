"""Rank 0's duties: when to evaluate and checkpoint, and the only writer of checkpoints,
metrics and the progress display.

The schedule is a pure function of the step, so every rank reaches the same decision
without a message (each must join the sharded evaluation); only rank 0 acts on the file
side of it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from . import checkpoint as ckpt_io
from .errors import UserError
from .progress import ProgressBar


class Coordinator:
    def __init__(self, cfg, rank: int, steps_per_epoch: int, total_steps: int):
        self.cfg = cfg
        self.rank = rank
        self.active = rank == 0
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self._metrics = None
        self.progress = ProgressBar(total_steps, enabled=self.active and not cfg.no_progress,
                                    steps_per_epoch=steps_per_epoch)
        if self.active and cfg.metrics:
            try:
                Path(cfg.metrics).parent.mkdir(parents=True, exist_ok=True)
                self._metrics = open(cfg.metrics, "a", encoding="utf-8")
            except OSError as exc:
                raise UserError(f"--metrics: cannot open {cfg.metrics}: {exc.strerror}") from None

    # --- decisions (same on every rank) ---------------------------------------------------
    def should_evaluate(self, step: int) -> bool:
        if step == self.total_steps:
            return True
        every = self.cfg.eval_every
        if every is None:
            return step % self.steps_per_epoch == 0
        return every > 0 and step % every == 0

    def should_checkpoint(self, step: int) -> bool:
        if not self.cfg.checkpoint_dir:
            return False
        every = self.cfg.checkpoint_every
        return step == self.total_steps or (every > 0 and step % every == 0)

    def epoch_of(self, step: int) -> int:
        """1-based number of the epoch that the step just completed belongs to."""
        return (max(step, 1) - 1) // self.steps_per_epoch + 1

    # --- rank 0's side -------------------------------------------------------------------
    def log(self, event: str, step: int, **fields) -> None:
        if not self.active or self._metrics is None:
            return
        record = {"event": event, "step": step, "epoch": self.epoch_of(step), "time": round(time.time(), 3)}
        record.update(fields)
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def say(self, text: str) -> None:
        if self.active:
            self.progress.message(text)

    def write_checkpoint(self, checkpoint: ckpt_io.Checkpoint) -> Path | None:
        if not self.active:
            return None
        return ckpt_io.save_in_dir(checkpoint, self.cfg.checkpoint_dir, keep=self.cfg.keep_checkpoints)

    def close(self) -> None:
        if self.active:
            self.progress.close()
            if self._metrics is not None:
                self._metrics.close()

