"""``python -m distnet.train``: train on one process, or data-parallel under ``mpirun``.

This module only wires things together; numerics live in nn/ and optim/, data in data/,
communication and the failure policy in distributed/, rank 0's duties in coordinator.py.
"""
from __future__ import annotations

import os
import sys
import time


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
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if explicit or var not in os.environ:
            os.environ[var] = threads


def load_both_splits(cfg, comm, load_dataset):
    """Rank 0 loads (and downloads, if needed) first; the others then find the files in
    place when they share its file system, instead of all downloading at once."""
    def load():
        return (load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, download=cfg.download),
                load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, download=cfg.download))

    if comm.size == 1:
        return load()
    result = load() if comm.rank == 0 else None
    comm.barrier()  # if rank 0 failed, its abort ends everyone waiting here
    return result if result is not None else load()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "numpy" not in sys.modules:
        _set_blas_threads(argv)
    from .distributed import get_communicator
    from .distributed.faults import Watchdog, fail, install_excepthook
    from .errors import UserError

    try:
        comm = get_communicator()
    except UserError as exc:
        print(f"distnet: error: {exc}", file=sys.stderr)
        return 2
    install_excepthook(comm)
    watchdog = None
    try:
        from .config import parse_config
        from .data import load_dataset
        from .trainer import Trainer

        try:
            cfg = parse_config(argv)
        except SystemExit as exc:  # argparse already printed usage and the error
            if comm.size > 1 and exc.code:
                comm.abort(2)
            return int(exc.code or 0)
        started = time.monotonic()
        if cfg.run_dir and comm.rank == 0:
            from . import rundir
            rundir.start(cfg)
        train_set, test_set = load_both_splits(cfg, comm, load_dataset)
        if comm.size > 1:
            watchdog = Watchdog(comm, cfg.timeout).start()
        trainer = Trainer(cfg, comm, train_set, test_set, watchdog=watchdog)
        result = trainer.run()
        if watchdog is not None:
            watchdog.stop()
        if cfg.run_dir:
            from . import rundir
            rundir.finish(cfg, comm, result, time.monotonic() - started)
        if comm.size > 1:
            comm.barrier()
        if result["eval"] is not None and comm.rank == 0:
            print(f"distnet: final test accuracy {result['eval']['accuracy'] * 100:.2f}% "
                  f"after {result['step']} steps", flush=True)
        return 0
    except UserError as exc:
        fail(comm, exc)
    except OSError as exc:  # e.g. a checkpoint or metrics path we may not write
        fail(comm, UserError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)))
    except KeyboardInterrupt:
        print("distnet: interrupted", file=sys.stderr)
        if comm.size > 1:
            comm.abort(130)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
