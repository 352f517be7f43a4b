"""What every command shares: the one-line error and exit code 2 for bad input, argparse
usage errors in the same form, and one BLAS thread per process before NumPy loads."""
from __future__ import annotations

import argparse
import os
import sys

EXIT_USER_ERROR = 2
# The variables through which OpenBLAS, OpenMP and MKL builds of NumPy take a thread count.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one line ``distnet: error: ...`` and exit 2."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"distnet: error: {message} (see --help)\n")


def one_blas_thread() -> None:
    """Same default as training (see distnet.train): one BLAS thread per process, unless the
    environment says otherwise.  Only effective before NumPy is imported."""
    for var in BLAS_THREAD_VARS:
        os.environ.setdefault(var, "1")


def report_user_error(exc) -> int:
    print(f"distnet: error: {exc}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def require_matplotlib(what: str):
    """matplotlib.pyplot on the Agg backend, or a UserError saying how to get it."""
    from ..errors import UserError
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(f"{what} needs matplotlib, which is not installed; "
                        f"run: pip install 'distnet[plot]'") from None
    return plt


def write_atomically(path, data_or_writer) -> None:
    """Write bytes (or call ``writer(file)``) to ``path`` atomically."""
    from ..atomic import atomic_write

    with atomic_write(path) as f:
        if callable(data_or_writer):
            data_or_writer(f)
        else:
            f.write(data_or_writer)
