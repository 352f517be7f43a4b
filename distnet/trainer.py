"""The training loop's state and duties, given its objects: model, loss, optimizer, schedule,
data (a global-batch loader), communicator and coordinator.  ``distnet.fit`` builds them.

One step on every rank: take this rank's slice of the global batch, tell the stochastic
layers which global samples it holds, forward, backward with the loss gradient scaled so
that it is this rank's share of the global-batch mean (sums divided by the GLOBAL batch
size), then the DistributedOptimizer sums the shares and steps.  Every rank runs every step
and joins every collective, even with an empty slice, so nothing can deadlock on uneven data;
with BatchNorm statistics reduced across ranks, forward and backward are collectives too and
run on 0 samples as well.
"""
from __future__ import annotations

import signal
import threading
import time

import numpy as np

from . import checkpoint as ckpt_io
from . import nn
from .data.loader import shard_bounds
from .distributed import broadcast_parameters
from .distributed.checkpoint_broadcast import broadcast_resume_point
from .distributed.faults import InjectedFault, agreed, injected_fault_step
from .errors import UserError
from .evaluation import evaluate
from .optim import evaluation_weights
from .tasks import sums_over
from .timeline import FORWARD_BACKWARD, LOADER, OPTIMIZER, PYTHON, STATS_ALLREDUCE

# Settings that must match between a checkpoint and the run resuming it (when both record them).
RESUME_MUST_MATCH = ("dataset", "model", "batch_size", "seed", "optimizer", "deterministic", "micro_batches")


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop finishes its step, checkpoints and exits 0."""

    def __init__(self):
        self.requested = False
        self.signal_name = None
        self._previous = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        self.requested = True
        self.signal_name = signal.Signals(signum).name


class Trainer:
    """``optimizer`` is a DistributedOptimizer with ``op="sum"``; ``deterministic`` a
    DeterministicStep or None; ``settings`` go into checkpoints' ``config`` (and must match on
    resume, see RESUME_MUST_MATCH); ``meta`` is the checkpoint meta (contract B)."""

    def __init__(self, model, loss, optimizer, schedule, loader, comm, coordinator, *, test=None,
                 total_steps: int, seed: int = 0, task: str = "classification", deterministic=None,
                 eval_batch_size: int = 100, log_every: int = 50, tta_flip: bool = False,
                 watchdog=None, settings: dict | None = None, meta: dict | None = None,
                 resume=None, checkpoint_dir=None):
        self.model, self.criterion, self.optimizer, self.schedule = model, loss, optimizer, schedule
        self.loader, self.comm, self.coordinator, self.test_set = loader, comm, coordinator, test
        self.total_steps, self.seed, self.deterministic = total_steps, seed, deterministic
        self.classify = task == "classification"
        self.mean_loss = not sums_over(loss)
        self.eval_batch_size, self.log_every, self.tta_flip = eval_batch_size, log_every, tta_flip
        self.resume, self.checkpoint_dir = resume, checkpoint_dir  # None, "latest" or a path
        self.watchdog = watchdog
        self.settings, self.meta = dict(settings or {}), dict(meta or {})
        self.dtype = model.flat_params.dtype
        self.step = 0
        self.stop = StopFlag()
        self.timeline = None  # a distnet.timeline.Timeline while one is attached (the bench's)
        self._fault_step = injected_fault_step(comm.rank)

    # --- state ---------------------------------------------------------------------------
    def _buffers(self) -> np.ndarray:
        own = getattr(self.model, "flat_buffers", None)
        return own if own is not None else np.zeros(0, self.dtype)

    def snapshot(self) -> ckpt_io.Checkpoint:
        epoch, position = divmod(self.step, self.loader.steps_per_epoch)
        return ckpt_io.Checkpoint(params=self.model.flat_params.copy(), optimizer=self.optimizer.state_dict(),
                                  step=self.step, epoch=epoch, position=position, seed=self.seed,
                                  config=self.settings, buffers=self._buffers().copy(), meta=self.meta)

    def restore(self, ckpt: ckpt_io.Checkpoint, source: str) -> None:
        what = (self.meta.get("model") or {}).get("spec") or "this model"
        if ckpt.params.size != self.model.flat_params.size:
            raise UserError(f"{source}: checkpoint holds {ckpt.params.size} parameters but model "
                            f"{what} has {self.model.flat_params.size}")
        for key in RESUME_MUST_MATCH:
            if key in ckpt.config and key in self.settings and ckpt.config[key] != self.settings[key]:
                raise UserError(f"{source}: checkpoint was written with {key.replace('_', '-')}="
                                f"{ckpt.config[key]!r}, this run has {self.settings[key]!r}")
        theirs, ours = ckpt.meta.get("model"), self.meta.get("model")
        built_by_hand = "architecture" in (theirs or {}) and "architecture" in (ours or {})
        if theirs is not None and ours is not None and theirs != ours and not built_by_hand:
            raise UserError(f"{source}: checkpoint was written by model {_origin(theirs)}, "
                            f"this run has {_origin(ours)}")
        # hand-built models (no spec): their architectures, in the words of repr(model)
        theirs, ours = ckpt.config.get("architecture"), self.settings.get("architecture")
        if theirs is not None and ours is not None and theirs != ours:
            raise UserError(f"{source}: checkpoint was written by a model of another architecture "
                            f"({_origin(theirs)}), this run has {_origin(ours)}")
        buffers = self._buffers()
        if np.asarray(ckpt.buffers).size != buffers.size:
            raise UserError(f"{source}: checkpoint holds {np.asarray(ckpt.buffers).size} buffer values "
                            f"(BatchNorm statistics) but model {what} has {buffers.size}")
        self.model.flat_params[...] = ckpt.params
        buffers[...] = ckpt.buffers
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except ValueError as exc:
            raise UserError(f"{source}: optimizer state does not fit: {exc}") from None
        self.step = ckpt.step

    def load_resume_point(self) -> None:
        """Rank 0 reads the checkpoint (only it may see the checkpoint volume) and
        broadcasts it, or the error, to everyone."""
        resume, checkpoint_dir = self.resume, self.checkpoint_dir
        payload = None
        if self.comm.rank == 0 and resume:
            from pathlib import Path
            path = Path(checkpoint_dir) / ckpt_io.LATEST if resume == "latest" else Path(resume)
            try:
                if resume == "latest" and not path.exists():
                    payload = ("fresh", str(path))
                else:
                    payload = ("ckpt", (ckpt_io.load(path), str(path)))
            except UserError as exc:
                payload = ("error", str(exc))
        payload = broadcast_resume_point(self.comm, payload)  # raw arrays and JSON: no pickle
        if payload is None:
            return
        kind, value = payload
        if kind == "error":  # every rank got it: they leave together, rank 0 with the line
            with agreed(self.comm):
                if self.comm.rank == 0:
                    raise UserError(value)
        if kind == "fresh":
            self.coordinator.say(f"distnet: no checkpoint at {value} yet; starting from scratch")
            return
        ckpt, source = value
        with agreed(self.comm):  # the same checkpoint and model everywhere: the same verdict
            self.restore(ckpt, source)
        self.coordinator.say(f"distnet: resumed from {source} at step {self.step}")

    # --- numerics ------------------------------------------------------------------------
    def _forward_backward(self, x, y, scale: float, first_index: int) -> np.ndarray:
        """Accumulate grads of (this slice's loss) * scale; return [loss, correct, count].

        ``scale`` turns the criterion's mean over the slice into the slice's sum divided by
        the global count (a summing criterion keeps its sum: scale 1)."""
        nn.set_sample_context(self.model, seed=self.seed, step=self.step, first_index=first_index)
        out = self.model(x.astype(self.dtype, copy=False))
        n = len(y)
        if n:
            target = y if self.classify else y.astype(self.dtype, copy=False)
            loss = self.criterion(out, target)
            grad = self.criterion.backward()
            if self.mean_loss:
                grad *= n * scale  # the criterion averaged over n; we want sum * scale
                loss *= n
        else:  # a rank with no samples this step still runs backward (collective layers)
            loss, grad = 0.0, np.zeros_like(out)
        self.model.backward(grad)
        correct = int(np.count_nonzero(out.argmax(axis=1) == y)) if self.classify and n else 0
        return np.array([loss, correct, n], dtype=np.float64)

    def train_step(self, reduce_stats: bool = False) -> np.ndarray:
        """One optimizer step; returns this rank's [loss, correct, count].

        With ``reduce_stats`` it returns [loss, correct, count, stop] summed over the ranks
        (stop: how many ranks had a stop requested when their backward ended), reduced by a
        non-blocking allreduce started before the gradients' and waited for after it: MPI
        moves those four numbers while the ranks meet in the gradient allreduce, so a step
        has one point where the ranks wait for each other instead of two.  Why: a second
        blocking allreduce after the optimizer step was a second meeting point, where any
        rank delayed in between (a preemption, an interrupt) stalls the other.  Measured
        with ``mpirun -n 2 python -m distnet.bench --timeline`` (lenet5, 64 samples per rank,
        2 cores): that stats_allreduce phase took 0.4-1.6 ms of a 20-60 ms step while other
        jobs loaded the machine, 0.06 ms (0.5%) of an 11.9 ms step when this job had the
        cores to itself (run at real-time priority); riding, it waits 0.01 ms."""
        epoch, position = divmod(self.step, self.loader.steps_per_epoch)
        x, y, count = self.loader.batch(epoch, position)
        tl = self.timeline
        if tl is not None:
            tl.mark(LOADER)
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(self.step)
        offset = shard_bounds(count, self.comm.rank, self.comm.size)[0]
        request = None
        if self.deterministic is not None:
            stats = self.deterministic.run(x, y, offset, count, self._forward_backward)
            if reduce_stats:
                stats, request = self._start_stats(stats)
            with self.optimizer.skip_synchronize():  # the micro-batch sum is the global gradient
                self.optimizer.step()
        else:
            if tl is not None:
                tl.mark(PYTHON)
            self.model.zero_grad()
            stats = self._forward_backward(x, y, 1.0 / count, offset)  # also on 0 samples
            if tl is not None:
                tl.mark(FORWARD_BACKWARD)
            if reduce_stats:
                stats, request = self._start_stats(stats)
            self.optimizer.step()
        if tl is not None:
            tl.mark(OPTIMIZER)  # the deterministic path books all of its step here
        if request is not None:
            request.wait()
            if tl is not None:
                tl.mark(STATS_ALLREDUCE)
        self.step += 1
        return stats

    def _start_stats(self, stats: np.ndarray):
        """(stats with this rank's stop flag appended, the request reducing them in place)."""
        flags = np.append(stats, 1.0 if self.stop.requested else 0.0)
        return flags, (self.comm.iallreduce(flags) if self.comm.size > 1 else None)

    def evaluate(self) -> dict:
        beat = None
        if self.watchdog is not None:
            beat = lambda: self.watchdog.beat(self.step, "evaluation")  # noqa: E731
        with evaluation_weights(self.optimizer.optimizer):  # the weight average, with an EMA
            return evaluate(self.model, self.test_set, loss=self.criterion, batch_size=self.eval_batch_size,
                                  comm=self.comm, on_batch=beat, tta_flip=self.tta_flip)

    DATA_INIT_SAMPLES = 5000  # images a data-dependent first layer is set from

    def initialise_from_data(self) -> None:
        """Set a data-dependent first layer (``nn.PatchWhitening``) from the first
        DATA_INIT_SAMPLES training images, unaugmented.  Every rank computes it from the same
        images; the broadcast that follows makes it bit-identical, and a resumed run then
        overwrites it with the checkpoint's (it is a buffer, saved with the model)."""
        if not any(callable(getattr(m, "init_from_data", None)) for m in self.model.modules()):
            return
        dataset = self.loader.dataset
        x, _ = dataset.batch(np.arange(min(len(dataset), self.DATA_INIT_SAMPLES)))
        nn.initialise_from_data(self.model, x)

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        comm, coord = self.comm, self.coordinator
        self.initialise_from_data()
        broadcast_parameters(self.model, comm)  # one set of initial weights for everyone
        self.load_resume_point()
        self.stop.install()
        try:
            return self._loop()
        finally:
            self.stop.uninstall()
            coord.close()

    def _loop(self) -> dict:
        coord = self.coordinator
        if self.step >= self.total_steps:
            coord.say(f"distnet: already at step {self.step} of {self.total_steps}; nothing to train")
        window = np.zeros(4)  # loss, correct, count, steps since the last log line
        window_time = 0.0  # training time in the window: evaluation and checkpoints excluded
        train_time = 0.0
        images = 0  # trained by this process's run, for the run folder's images/s
        last = {"loss": float("nan"), "accuracy": 0.0, "images_per_sec": 0.0}
        final_eval = None
        tl = self.timeline
        while self.step < self.total_steps:
            if tl is not None:
                tl.begin_step()
            t0 = time.perf_counter()
            # the stats of the step, and whether any rank was told to stop, summed over the ranks
            flags = self.train_step(reduce_stats=True)
            if self.step == self._fault_step:
                raise InjectedFault(f"injected fault after step {self.step}")
            window += [flags[0], flags[1], flags[2], 1]
            images += int(flags[2])
            step_time = time.perf_counter() - t0
            window_time += step_time
            train_time += step_time
            if self.watchdog is not None:
                self.watchdog.beat(self.step, "training")
            stopping = flags[3] > 0
            if self.step % self.log_every == 0 or self.step == self.total_steps or stopping:
                last = self._window_figures(window, window_time)
                fields = {"loss": last["loss"]}
                if self.classify:
                    fields["accuracy"] = last["accuracy"]
                coord.log("train", self.step, **fields, lr=self.optimizer.lr,
                          images_per_sec=last["images_per_sec"])
                window[:], window_time = 0, 0.0
            shown = self._window_figures(window, window_time) if window[2] else last
            coord.progress.update(self.step, coord.epoch_of(self.step), shown["loss"],
                                  shown["accuracy"] if self.classify else None, shown["images_per_sec"])
            if self.test_set is not None and coord.should_evaluate(self.step) and not stopping:
                final_eval = self._evaluate_and_log()
            if coord.should_checkpoint(self.step) or stopping:
                self._checkpoint()
            if stopping:
                coord.say(f"distnet: stopped by {self.stop.signal_name or 'a signal'} at step {self.step}; "
                          f"checkpoint written" if coord.checkpoint_dir else
                          f"distnet: stopped by a signal at step {self.step}")
                break
        else:
            # the last step evaluated and checkpointed already; this is for a run resumed
            # at its end, which trains nothing but still reports its figures
            if final_eval is None and self.test_set is not None:
                final_eval = self._evaluate_and_log()
        return {"step": self.step, "eval": final_eval, "train_time": train_time, "images": images,
                "completed": self.step >= self.total_steps}

    def _window_figures(self, window, seconds: float) -> dict:
        """Mean loss, accuracy and whole-job samples/s over a window of steps."""
        count = max(window[2], 1)
        per = count if self.mean_loss else max(window[3], 1)  # a summing loss: per step
        return {"loss": window[0] / per, "accuracy": window[1] / count,
                "images_per_sec": window[2] / seconds if seconds > 0 else 0.0}

    def _evaluate_and_log(self) -> dict:
        result = self.evaluate()
        result["step"] = self.step
        figures = {k: result[k] for k in ("accuracy", "loss", "samples") if k in result}
        self.coordinator.log("eval", self.step, **figures)
        epoch = self.coordinator.epoch_of(self.step)
        if self.classify:
            self.coordinator.say(f"step {self.step} (epoch {epoch}): test accuracy "
                                 f"{result['accuracy'] * 100:.2f}%  loss {result['loss']:.4f}")
        else:
            self.coordinator.say(f"step {self.step} (epoch {epoch}): test loss {result['loss']:.6g}")
        return result

    def _checkpoint(self) -> None:
        path = self.coordinator.write_checkpoint(self.snapshot())
        if path is not None and self.watchdog is not None:
            self.watchdog.beat(self.step, "checkpoint")


def _origin(value) -> str:
    """A short phrase for a model origin or an architecture in one error line."""
    if isinstance(value, dict) and "spec" in value:
        return repr(value["spec"])
    text = " ".join(str(value).split())
    return text if len(text) < 80 else text[:77] + "..."
