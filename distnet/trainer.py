"""The training loop: wires data, model, optimizer, communicator and coordinator.

One step on every rank: take this rank's slice of the global batch, forward, backward with
the loss gradient scaled by local/global count (so gradients are sums divided by the GLOBAL
batch size), synchronise gradients, one optimizer step.  Every rank runs every step and
joins every collective, even with an empty slice, so nothing can deadlock on uneven data.
"""
from __future__ import annotations

import signal
import time

import numpy as np

from . import checkpoint as ckpt_io
from .coordinator import Coordinator
from .data.augment import ImageAugment, flip_averaged_logits
from .data.loader import GlobalBatchLoader, shard_bounds
from .distributed.checkpoint_broadcast import broadcast_resume_point
from .distributed.deterministic import DeterministicStep
from .distributed.faults import InjectedFault, injected_fault_step
from .distributed.sync import GradientSync
from .errors import UserError
from .meta import checkpoint_meta
from .nn import CrossEntropyLoss, build_model
from .optim import WeightEMA, evaluation_weights, make_optimizer, make_schedule


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and exits 0."""

    def __init__(self):
        self.requested = False
        self.signal_name = None

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.requested = True
        self.signal_name = signal.Signals(signum).name


class Trainer:
    def __init__(self, cfg, comm, train_set, test_set, watchdog=None):
        self.cfg, self.comm = cfg, comm
        self.train_set, self.test_set = train_set, test_set
        self.watchdog = watchdog
        self.model = build_model(cfg.model, train_set.input_shape, train_set.num_classes, seed=cfg.seed)
        self.model.input_grad = False  # the input is data: no gradient needed
        self.criterion = CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.optimizer = make_optimizer(cfg.optimizer, self.model, cfg.lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay, decay_exclude=cfg.weight_decay_exclude,
                                        freeze="bn-scale" if cfg.freeze_bn_scale else None)
        if cfg.ema:
            self.optimizer = WeightEMA(self.optimizer, self.model, cfg.ema)
        self.loader = GlobalBatchLoader(train_set, cfg.batch_size, cfg.seed, comm.rank, comm.size,
                                        max_shift=cfg.augment_shift, augment=ImageAugment.from_config(cfg))
        spe = self.loader.steps_per_epoch
        # The schedule spans all epochs; --max-steps only says where to stop (like a
        # preemption), so a run cut short and resumed follows the same learning rates.
        self.schedule = make_schedule(cfg.schedule, cfg.lr, cfg.epochs * spe, warmup_steps=cfg.warmup_steps)
        self.total_steps = cfg.epochs * spe
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.coordinator = Coordinator(cfg, comm.rank, spe, self.total_steps)
        self.sync = GradientSync(comm, self.model, overlap=cfg.overlap and not cfg.deterministic,
                                 bucket_bytes=int(cfg.bucket_mb * (1 << 20)))
        self.deterministic = None
        if cfg.deterministic:
            self.deterministic = DeterministicStep(comm, self.model, cfg.micro_batches or 8)
        self.step = 0
        self.stop = StopFlag()
        self._fault_step = injected_fault_step(comm.rank)

    # --- state ---------------------------------------------------------------------------
    def snapshot(self) -> ckpt_io.Checkpoint:
        epoch, position = divmod(self.step, self.loader.steps_per_epoch)
        return ckpt_io.Checkpoint(params=self.model.flat_params.copy(), optimizer=self.optimizer.state_dict(),
                                  step=self.step, epoch=epoch, position=position, seed=self.cfg.seed,
                                  config=self.cfg.to_dict(), meta=checkpoint_meta(self.cfg, self.train_set))

    def restore(self, ckpt: ckpt_io.Checkpoint, source: str) -> None:
        if ckpt.params.size != self.model.flat_params.size:
            raise UserError(f"{source}: checkpoint holds {ckpt.params.size} parameters but model "
                            f"{self.cfg.model} has {self.model.flat_params.size}")
        from .config import RESUME_MUST_MATCH
        for key in RESUME_MUST_MATCH:
            if key in ckpt.config and ckpt.config[key] != getattr(self.cfg, key):
                raise UserError(f"{source}: checkpoint was written with {key.replace('_', '-')}="
                                f"{ckpt.config[key]!r}, this run has {getattr(self.cfg, key)!r}")
        self.model.flat_params[...] = ckpt.params
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except ValueError as exc:
            raise UserError(f"{source}: optimizer state does not fit: {exc}") from None
        self.step = ckpt.step

    def load_resume_point(self) -> None:
        """Rank 0 reads the checkpoint (only it may see the checkpoint volume) and
        broadcasts it, or the error, to everyone."""
        cfg = self.cfg
        payload = None
        if self.comm.rank == 0 and cfg.resume:
            from pathlib import Path
            path = Path(cfg.checkpoint_dir) / ckpt_io.LATEST if cfg.resume == "latest" else Path(cfg.resume)
            try:
                if cfg.resume == "latest" and not path.exists():
                    payload = ("fresh", str(path))
                else:
                    payload = ("ckpt", (ckpt_io.load(path), str(path)))
            except UserError as exc:
                payload = ("error", str(exc))
        payload = broadcast_resume_point(self.comm, payload)  # raw arrays and JSON: no pickle
        if payload is None:
            return
        kind, value = payload
        if kind == "error":
            raise UserError(value)
        if kind == "fresh":
            self.coordinator.say(f"distnet: no checkpoint at {value} yet; starting from scratch")
            return
        ckpt, source = value
        self.restore(ckpt, source)
        self.coordinator.say(f"distnet: resumed from {source} at step {self.step}")

    # --- numerics ------------------------------------------------------------------------
    def _forward_backward(self, x, y, scale: float) -> np.ndarray:
        """Accumulate grads of (sum of losses) * scale; return [loss sum, correct, count]."""
        logits = self.model(x)
        loss = self.criterion(logits, y)
        grad = self.criterion.backward()
        grad *= len(y) * scale  # the criterion averaged over len(y); we want sum * scale
        self.model.backward(grad)
        correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
        return np.array([loss * len(y), correct, len(y)], dtype=np.float64)

    def train_step(self) -> np.ndarray:
        epoch, position = divmod(self.step, self.loader.steps_per_epoch)
        x, y, count = self.loader.batch(epoch, position)
        self.optimizer.lr = self.schedule(self.step)
        if self.deterministic is not None:
            offset = shard_bounds(count, self.comm.rank, self.comm.size)[0]
            stats = self.deterministic.run(x, y, offset, count, self._forward_backward)
        else:
            self.model.zero_grad()
            stats = self._forward_backward(x, y, 1.0 / count) if len(y) else np.zeros(3)
            self.sync.finish()
        self.optimizer.step()
        self.step += 1
        return stats

    def evaluate(self) -> dict:
        with evaluation_weights(self.optimizer):  # the weight average, with --ema
            return self._evaluate()

    def _evaluate(self) -> dict:
        """Sharded over the ranks; the reduced sums make the accuracy exact over the test set."""
        self.model.eval()
        start, stop = shard_bounds(len(self.test_set), self.comm.rank, self.comm.size)
        totals = np.zeros(3)
        for lo in range(start, stop, self.cfg.eval_batch_size):
            idx = np.arange(lo, min(lo + self.cfg.eval_batch_size, stop))
            x, y = self.test_set.batch(idx)
            logits = flip_averaged_logits(self.model, x) if self.cfg.tta_flip else self.model(x)
            totals += [self.criterion(logits, y) * len(y), np.count_nonzero(logits.argmax(axis=1) == y), len(y)]
            if self.watchdog is not None:
                self.watchdog.beat(self.step, "evaluation")
        self.comm.allreduce(totals)
        self.model.train()
        return {"accuracy": totals[1] / totals[2], "loss": totals[0] / totals[2], "samples": int(totals[2])}

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, comm, coord = self.cfg, self.comm, self.coordinator
        comm.broadcast(self.model.flat_params)  # one set of initial weights for everyone
        self.load_resume_point()
        self.stop.install()
        if self.step >= self.total_steps:
            coord.say(f"distnet: already at step {self.step} of {self.total_steps}; nothing to train")
        coord.say(f"distnet: {cfg.model} on {cfg.dataset} ({len(self.train_set)} train / "
                  f"{len(self.test_set)} test), {comm.size} rank(s), global batch {cfg.batch_size}, "
                  f"{self.total_steps} steps")
        window = np.zeros(3)  # loss sum, correct, count since the last log line
        window_time = 0.0  # training time in the window: evaluation and checkpoints excluded
        train_time = 0.0
        images = 0  # trained by this process's run, for the run folder's images/s
        last = {"loss": float("nan"), "accuracy": 0.0, "images_per_sec": 0.0}
        final_eval = None
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            stats = self.train_step()
            if self.step == self._fault_step:
                raise InjectedFault(f"injected fault after step {self.step}")
            # one tiny collective per step: the stats, and whether any rank was told to stop
            flags = np.concatenate([stats, [1.0 if self.stop.requested else 0.0]])
            if comm.size > 1:
                comm.allreduce(flags)
            window += flags[:3]
            images += int(flags[2])
            step_time = time.perf_counter() - t0
            window_time += step_time
            train_time += step_time
            if self.watchdog is not None:
                self.watchdog.beat(self.step, "training")
            stopping = flags[3] > 0
            if self.step % cfg.log_every == 0 or self.step == self.total_steps or stopping:
                last = self._window_figures(window, window_time)
                coord.log("train", self.step, loss=last["loss"], accuracy=last["accuracy"],
                          lr=self.optimizer.lr, images_per_sec=last["images_per_sec"])
                window[:], window_time = 0, 0.0
            shown = self._window_figures(window, window_time) if window[2] else last
            coord.progress.update(self.step, coord.epoch_of(self.step), shown["loss"], shown["accuracy"],
                                  shown["images_per_sec"])
            if coord.should_evaluate(self.step) and not stopping:
                final_eval = self._evaluate_and_log()
            if coord.should_checkpoint(self.step) or stopping:
                self._checkpoint()
            if stopping:
                coord.say(f"distnet: stopped by {self.stop.signal_name or 'a signal'} at step {self.step}; "
                          f"checkpoint written" if cfg.checkpoint_dir else
                          f"distnet: stopped by a signal at step {self.step}")
                break
        else:
            # the last step evaluated and checkpointed already; this is for a run resumed
            # at its end, which trains nothing but still reports its accuracy
            if final_eval is None:
                final_eval = self._evaluate_and_log()
        coord.close()
        return {"step": self.step, "eval": final_eval, "train_time": train_time, "images": images,
                "completed": self.step >= self.total_steps}

    @staticmethod
    def _window_figures(window, seconds: float) -> dict:
        """Mean loss, accuracy and whole-job images/s over a window of steps."""
        count = max(window[2], 1)
        return {"loss": window[0] / count, "accuracy": window[1] / count,
                "images_per_sec": window[2] / seconds if seconds > 0 else 0.0}

    def _evaluate_and_log(self) -> dict:
        result = self.evaluate()
        result["step"] = self.step
        self.coordinator.log("eval", self.step, accuracy=result["accuracy"], loss=result["loss"],
                             samples=result["samples"])
        self.coordinator.say(f"step {self.step} (epoch {self.coordinator.epoch_of(self.step)}): test accuracy "
                             f"{result['accuracy'] * 100:.2f}%  loss {result['loss']:.4f}")
        return result

    def _checkpoint(self) -> None:
        path = self.coordinator.write_checkpoint(self.snapshot())
        if path is not None and self.watchdog is not None:
            self.watchdog.beat(self.step, "checkpoint")
