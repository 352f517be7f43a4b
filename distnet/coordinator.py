"""Rank 0's duties: when to evaluate and checkpoint, and the only writer of checkpoints,
metrics and the progress display.

The schedule is a pure function of the step, so every rank reaches the same decision
without a message (each must join the sharded evaluation); only rank 0 acts on the file
side of it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from . import checkpoint as ckpt_io
from .errors import UserError
from .progress import ProgressBar


class Coordinator:
    """Built from plain values (``fit``'s keywords), not from the command line's config.

    ``records`` holds every metric line as a dict on EVERY rank (the figures are reduced
    over the ranks before they are logged), so ``fit`` can return them everywhere; only rank
    0 writes them to the ``metrics`` file."""

    def __init__(self, rank: int, steps_per_epoch: int, total_steps: int, *, eval_every: int | None = None,
                 checkpoint_dir=None, checkpoint_every: int = 0, keep_checkpoints: int = 3,
                 metrics=None, progress: bool = True, verbose: bool = True):
        self.rank = rank
        self.active = rank == 0
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.eval_every = eval_every
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.verbose = verbose
        self.records: list[dict] = []
        self._metrics = None
        self.progress = ProgressBar(total_steps, enabled=self.active and progress,
                                    steps_per_epoch=steps_per_epoch)
        if self.active and checkpoint_dir:
            _check_writable(checkpoint_dir)
        if self.active and metrics:
            parent = Path(metrics).parent
            if parent.exists() and not parent.is_dir():
                raise UserError(f"{metrics}: cannot open the metrics file: {parent} is not a directory")
            try:
                parent.mkdir(parents=True, exist_ok=True)
                self._metrics = open(metrics, "a", encoding="utf-8")
            except OSError as exc:
                raise UserError(f"{metrics}: cannot open the metrics file: {exc.strerror}") from None

    # --- decisions (same on every rank) ---------------------------------------------------
    def should_evaluate(self, step: int) -> bool:
        if step == self.total_steps:
            return True
        every = self.eval_every
        if every is None:
            return step % self.steps_per_epoch == 0
        return every > 0 and step % every == 0

    def should_checkpoint(self, step: int) -> bool:
        if not self.checkpoint_dir:
            return False
        every = self.checkpoint_every
        return step == self.total_steps or (every > 0 and step % every == 0)

    def epoch_of(self, step: int) -> int:
        """1-based number of the epoch that the step just completed belongs to."""
        return (max(step, 1) - 1) // self.steps_per_epoch + 1

    # --- rank 0's side -------------------------------------------------------------------
    def log(self, event: str, step: int, **fields) -> dict:
        record = {"event": event, "step": step, "epoch": self.epoch_of(step), "time": round(time.time(), 3)}
        record.update(fields)
        self.records.append(record)
        if self.active and self._metrics is not None:
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()
        return record

    def say(self, text: str) -> None:
        if self.active and self.verbose:
            self.progress.message(text)

    def write_checkpoint(self, checkpoint: ckpt_io.Checkpoint) -> Path | None:
        if not self.active or not self.checkpoint_dir:  # a signal stops a run without one too
            return None
        return ckpt_io.save_in_dir(checkpoint, self.checkpoint_dir, keep=self.keep_checkpoints)

    def close(self) -> None:
        if self.active:
            self.progress.close()
            if self._metrics is not None:
                self._metrics.close()


def _check_writable(directory) -> None:
    """Create the checkpoint directory and write and remove one scratch file in it now, so
    that a directory that cannot take checkpoints stops the run before its first step
    instead of after its last."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".distnet-write-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{directory}: cannot write checkpoints there: {exc.strerror or exc}") from None
