"""``python -m distnet.train``: train on one process, or data-parallel under ``mpirun``.

This module only wires things together; numerics live in nn/ and optim/, data in data/,
communication and the failure policy in distributed/, rank 0's duties in coordinator.py.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

from .cli._common import BLAS_THREAD_VARS


def _set_blas_threads(argv) -> None:
    """One BLAS thread per process unless ``--threads N`` says otherwise, set before NumPy
    loads its BLAS.

    Why one: the kernels' matrices are small, and OpenBLAS threads that share a core with
    anything else (another rank, the data loading, another job) wait on each other; on the
    2-core machine we measured cnn2 at 2,918 images/s with one thread and 55 with two
    (``python -m distnet.bench``).  More cores are used by running more ranks
    (``mpirun -n <cores>``).  An OPENBLAS/OMP/MKL_NUM_THREADS already set in the environment
    is kept unless ``--threads`` is given."""
    threads = None
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = argv[i + 1]
        elif arg.startswith("--threads="):
            threads = arg.split("=", 1)[1]
    explicit = threads is not None
    if not explicit or not threads.isdigit():
        threads = "1"  # a bad --threads value is reported by the argument parser
    for var in BLAS_THREAD_VARS:
        if explicit or var not in os.environ:
            os.environ[var] = threads


def load_both_splits(cfg, comm, load_dataset):
    """Rank 0 loads (and downloads, if needed) first; the others then find the files in
    place when they share its file system, instead of all downloading at once.  An
    ``npz:PATH`` dataset is read by every rank from its own file system."""
    def load():
        if cfg.dataset.startswith("npz:"):
            from .data import load_npz
            return load_npz(cfg.dataset[len("npz:"):])
        return (load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, download=cfg.download),
                load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, download=cfg.download))

    from .distributed.faults import agree
    from .errors import UserError

    def outcome(step):
        try:
            return step(), None
        except UserError as exc:
            return None, exc
        except OSError as exc:
            return None, _os_error(exc)

    if comm.size == 1:
        return load()
    result, failure = outcome(load) if comm.rank == 0 else (None, None)
    agree(comm, failure)  # rank 0 failed: every rank ends with its one line
    if comm.rank != 0:
        result, failure = outcome(load)
    agree(comm, failure)  # the data is missing on another node, say
    return result


def _os_error(exc: OSError):
    """The UserError of an OSError the run met (a path it may not read or write)."""
    from .errors import UserError
    return UserError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))


def _layout_hint(shape) -> str:
    """A hint when (C, H, W) inputs look like (H, W, C) images (channels last)."""
    if len(shape) == 3 and shape[2] in (1, 3) and shape[0] not in (1, 3):
        return "; the inputs look channels-last (H, W, C): distnet wants (N, C, H, W) arrays"
    return ""


def fit_arguments(cfg, comm, train_set, test_set) -> dict:
    """Turn the configuration into objects (model, loss, optimizer, schedule, augmentation)
    and the keyword arguments of ``distnet.fit``."""
    import math

    from .data.augment import ImageAugment
    from .errors import UserError
    from .nn import CrossEntropyLoss, MSELoss, build_model
    from .optim import Lookahead, WeightEMA, make_optimizer, make_schedule
    from .tasks import task_of

    try:
        model = build_model(cfg.model, train_set.input_shape, train_set.num_classes, seed=cfg.seed)
    except UserError:  # already one line (an unknown spec, a user's model function failing)
        raise
    except ValueError as exc:  # a built-in model's layers do not fit these inputs
        shape = train_set.input_shape
        raise UserError(f"--model {cfg.model} does not take {cfg.dataset}'s {'x'.join(map(str, shape))} "
                        f"inputs: {exc}{_layout_hint(shape)}") from None
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               decay_exclude=cfg.weight_decay_exclude,
                               freeze="bn-scale" if cfg.freeze_bn_scale else None,
                               bn_bias_lr_scale=cfg.bn_bias_lr_scale)
    loss = CrossEntropyLoss(label_smoothing=cfg.label_smoothing) if cfg.loss == "cross-entropy" else MSELoss()
    # The schedule spans all epochs; --max-steps only says where to stop (like a
    # preemption), so a run cut short and resumed follows the same learning rates.
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    if cfg.ema:
        optimizer = WeightEMA(optimizer, model, cfg.ema)
    if cfg.lookahead:
        optimizer = Lookahead(optimizer, model, cfg.epochs * steps_per_epoch)
    schedule = make_schedule(cfg.schedule, cfg.lr, cfg.epochs * steps_per_epoch, warmup_steps=cfg.warmup_steps)
    images = len(train_set.input_shape) == 3 and task_of(train_set) == "classification"
    augment = (cfg.augment_shift, ImageAugment.from_config(cfg)) if images else None
    return dict(model=model, train=train_set, loss=loss, optimizer=optimizer, schedule=schedule,
                epochs=cfg.epochs, batch_size=cfg.batch_size, test=test_set, seed=cfg.seed,
                max_steps=cfg.max_steps, eval_every=cfg.eval_every, checkpoint_dir=cfg.checkpoint_dir,
                checkpoint_every=cfg.checkpoint_every, resume=cfg.resume, metrics=cfg.metrics,
                progress=not cfg.no_progress, deterministic=cfg.deterministic, overlap=cfg.overlap,
                augment=augment, tta_flip=cfg.tta_flip, comm=comm, micro_batches=cfg.micro_batches,
                keep_checkpoints=cfg.keep_checkpoints, log_every=cfg.log_every,
                eval_batch_size=cfg.eval_batch_size, bucket_mb=cfg.bucket_mb, compress=cfg.compress,
                timeout=cfg.timeout if comm.size > 1 else None, dataset_name=cfg.dataset, config=cfg.to_dict())


def build_trainer(cfg, comm, train_set, test_set):
    """The Trainer this configuration runs, not started (tests drive it step by step)."""
    from .fitting import make_trainer

    return make_trainer(**fit_arguments(cfg, comm, train_set, test_set))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "numpy" not in sys.modules:
        _set_blas_threads(argv)
    from .process_tuning import keep_freed_memory
    keep_freed_memory()  # why: see process_tuning (the kernel zeroing each step's new pages)
    from .distributed import get_communicator
    from .distributed.faults import abort_job, agree, fail, install_excepthook
    from .errors import UserError

    try:
        comm = get_communicator()
    except UserError as exc:
        print(f"distnet: error: {exc}", file=sys.stderr)
        return 2
    install_excepthook(comm)
    try:
        from .config import parse_config
        from .data import load_dataset

        cfg = failure = None
        try:
            if comm.rank == 0:
                cfg = parse_config(argv)
            else:  # every rank parses the same argv: one usage message, rank 0's, is enough
                with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
                    cfg = parse_config(argv)
        except SystemExit as exc:  # --help, or argparse printed the usage and the error
            if not exc.code:
                return 0
            failure = exc
        except UserError as exc:
            failure = exc
        agree(comm, failure)  # a flag one rank refuses (a --config file it lacks) ends all
        started = time.monotonic()
        if cfg.run_dir and comm.rank == 0:
            from . import rundir
            rundir.start(cfg)
        train_set, test_set = load_both_splits(cfg, comm, load_dataset)
        from .fitting import fit
        history = fit(**fit_arguments(cfg, comm, train_set, test_set))
        if cfg.run_dir:
            from . import rundir
            result = {"step": history.step, "eval": history.final, "train_time": history.train_time,
                      "images": history.images, "completed": history.completed}
            rundir.finish(cfg, comm, result, time.monotonic() - started)
        if comm.size > 1:
            comm.barrier()
        final = history.final
        if final is not None and comm.rank == 0:
            if "accuracy" in final:
                print(f"distnet: final test accuracy {final['accuracy'] * 100:.2f}% "
                      f"after {history.step} steps", flush=True)
            else:
                print(f"distnet: final test loss ({cfg.loss}) {final['loss']:.6g} "
                      f"after {history.step} steps", flush=True)
        return 0
    except UserError as exc:
        fail(comm, exc)
    except OSError as exc:  # e.g. a checkpoint or metrics path we may not write
        fail(comm, _os_error(exc))
    except KeyboardInterrupt:
        print("distnet: interrupted", file=sys.stderr, flush=True)
        if comm.size > 1:
            abort_job(comm, 130)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
