"""Failure policy: one rank's failure ends the whole job, promptly and loudly.

* An uncaught exception on any rank prints one line naming the rank and aborts every rank
  (MPI_Abort), instead of leaving the peers blocked forever in the next collective.
* Where every rank runs the same step at the same point (parsing the flags, loading the
  data, checking fit's arguments), ``agree`` lets them compare outcomes first: then a
  failure on any rank ends every rank with one line and a plain exit, no MPI_Abort (whose
  launcher adds a line of its own, "Abort(2) on node 0 ...").
* A watchdog thread turns "no step completed for --timeout seconds" (a peer stopped,
  killed without the launcher noticing, or a lost network) into an abort naming the step.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback

from ..errors import UserError

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


def error_line(rank: int, size: int, exc: BaseException) -> str:
    where = f"rank {rank}: " if size > 1 else ""
    if isinstance(exc, UserError):
        return f"distnet: error: {where}{exc}"
    return f"distnet: error: {where}{type(exc).__name__}: {exc}"


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):  # argparse's, after it printed the usage
        return exc.code if isinstance(exc.code, int) and 0 < exc.code < 256 else EXIT_FAILURE
    return EXIT_USER_ERROR if isinstance(exc, UserError) else EXIT_FAILURE


def agree(comm, exc: BaseException | None) -> None:
    """Every rank calls this at the same point with its own outcome of the same step: the
    exception it raised, or None.  If no rank failed, it returns.  Otherwise it raises on
    every rank: the lowest failing rank re-raises its own exception, the others a UserError
    (RuntimeError for a crash) with that rank's message, all marked so that ``fail``
    knows every rank is leaving: the failing rank prints the one line, and every rank exits
    with its exit code, without MPI_Abort.  One allreduce when nothing failed.

    Only for steps with no collective inside (a rank that fails must not leave a peer
    waiting in one); elsewhere a failure still aborts the job."""
    if comm.size == 1:
        if exc is not None:
            raise exc
        return
    import numpy as np

    from .checkpoint_broadcast import broadcast_text

    key = np.array([comm.rank * 256 + _exit_code(exc) if exc is not None else comm.size * 256], dtype=np.int64)
    first, code = divmod(int(comm.allreduce(key, op="min")[0]), 256)
    if first == comm.size:
        return
    reporter = comm.rank == first
    message = None
    if reporter:
        message = str(exc) if isinstance(exc, (UserError, SystemExit)) else f"{type(exc).__name__}: {exc}"
    message = broadcast_text(comm, message, root=first)
    if reporter:
        exc.distnet_agreed = (code, True)
        raise exc
    peer = UserError(message) if code == EXIT_USER_ERROR else RuntimeError(message)
    peer.distnet_agreed = (code, False)
    raise peer


@contextlib.contextmanager
def agreed(comm):
    """``with agreed(comm): step`` runs ``step`` and then ``agree``s on its outcome."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every kind of failure is agreed on, then raised
        agree(comm, exc)
        raise  # (agree raised already; this line is not reached)
    agree(comm, None)


def fail(comm, exc: BaseException) -> None:
    """Report ``exc`` and end the job with the right exit code, on every rank."""
    user = isinstance(exc, UserError)
    code = EXIT_USER_ERROR if user else EXIT_FAILURE
    agreed = getattr(exc, "distnet_agreed", None)
    if agreed is not None:  # every rank knows (``agree``): one line, a plain exit everywhere
        code, reporter = agreed
        if reporter and not isinstance(exc, SystemExit):
            if not user:
                traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
            print(error_line(comm.rank, comm.size, exc), file=sys.stderr, flush=True)
        sys.exit(code)
    if comm.size > 1 and comm.rank != 0 and user:
        # the same bad input usually fails every rank: let rank 0 speak first
        time.sleep(1.0)
    if not user:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(error_line(comm.rank, comm.size, exc), file=sys.stderr, flush=True)
    if comm.size > 1:
        abort_job(comm, code)
    sys.exit(code)


def abort_job(comm, code: int) -> None:
    """MPI_Abort, after a pause that lets the launcher forward the error line just printed.

    mpirun stops forwarding a rank's output once MPI_Abort reaches it: the error line was
    lost in about 4 of 115 runs without the pause, in none of 40 with 0.3 s. The watchdog's
    line, printed without it, was lost in CI on 2026-12-02 (empty stderr, exit 1); 0.5 s
    leaves room for a loaded machine (its test: 25/25 idle, 20/20 beside two CPU burners)."""
    time.sleep(0.5)
    comm.abort(code)


def install_excepthook(comm) -> None:
    """Any exception that escapes on any thread ends the whole job."""
    def hook(exc_type, exc, tb):
        fail(comm, exc)

    sys.excepthook = hook
    threading.excepthook = lambda args: fail(comm, args.exc_value)


class Watchdog:
    """Aborts the job when ``beat`` has not been called for ``timeout`` seconds."""

    def __init__(self, comm, timeout: float, poll: float = 1.0):
        self.comm, self.timeout, self.poll = comm, timeout, min(poll, timeout / 4)
        self._last = time.monotonic()
        self._step, self._phase = 0, "start-up"
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="distnet-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._last = time.monotonic()
        self._thread.start()
        return self

    def beat(self, step: int, phase: str = "training") -> None:
        self._last = time.monotonic()
        self._step, self._phase = step, phase

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self.poll):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                where = f"rank {self.comm.rank}: " if self.comm.size > 1 else ""
                print(f"distnet: error: {where}no progress for {idle:.0f} s after step {self._step} "
                      f"({self._phase}); a peer may have died or hung; aborting the job "
                      f"(rerun with --resume to continue from the last checkpoint)",
                      file=sys.stderr, flush=True)
                try:
                    abort_job(self.comm, EXIT_FAILURE)
                finally:
                    os._exit(EXIT_FAILURE)


class InjectedFault(RuntimeError):
    """Raised on purpose by the fault tests (see ``injected_fault_step``)."""


def injected_fault_step(rank: int) -> int | None:
    """Step after which this rank raises InjectedFault, from
    $DISTNET_INJECT_FAULT="RANK:STEP[:ONCE_FILE]" (with ONCE_FILE, only while that file
    does not exist yet; it is created when the fault fires, so a restarted job runs clean).

    A test hook: the fault tests use it to make one rank fail mid-training."""
    spec = os.environ.get("DISTNET_INJECT_FAULT", "")
    parts = spec.split(":", 2)
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()) or int(parts[0]) != rank:
        return None
    if len(parts) == 3:
        if os.path.exists(parts[2]):
            return None
        open(parts[2], "w").close()  # noqa: SIM115 - a marker file
    return int(parts[1])
