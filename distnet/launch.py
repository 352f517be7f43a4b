"""``python -m distnet.launch -n N [--max-restarts K] -- <train args>``

Starts ``mpirun -n N python -m distnet.train <train args>`` and, when the job fails, starts
it again with ``--resume`` (from the last checkpoint) up to K times, saying why each restart
happened, like torchrun's ``--max-restarts``.  Bad input (exit code 2) is never retried: it
would fail the same way.  SIGTERM/SIGINT are passed to the job, which checkpoints and exits,
and are not retried either.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_USER_ERROR = 2


def find_mpirun(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside_python = Path(sys.executable).with_name("mpirun")
    if beside_python.exists():
        return str(beside_python)  # the mpich wheel's, in this environment
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    if not found:
        raise SystemExit("distnet: error: mpirun not found; pip install 'distnet[mpi]' (mpi4py and the mpich wheel)")
    return found


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m distnet.launch", description=__doc__.split("\n\n")[1])
    p.add_argument("-n", "--nprocs", type=int, required=True, help="number of ranks")
    p.add_argument("--max-restarts", type=int, default=0, help="restart a failed job up to K times (default 0)")
    p.add_argument("--hostfile", help="MPI hostfile (host:slots per line) for multi-host runs")
    p.add_argument("--mpirun", help="the mpirun to use (default: the one beside this Python, else PATH)")
    p.add_argument("--mpi-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for mpirun (repeatable), e.g. --mpi-arg=-launcher --mpi-arg=ssh")
    p.add_argument("--restart-delay", type=float, default=2.0, help="seconds to wait before a restart")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of distnet.train")
    return p


def mpirun_command(args, train_args: list[str]) -> list[str]:
    cmd = [find_mpirun(args.mpirun), "-n", str(args.nprocs)]
    if args.hostfile:
        cmd += ["-f", args.hostfile]
    cmd += args.mpi_arg
    return cmd + [sys.executable, "-m", "distnet.train", *train_args]


def with_resume(train_args: list[str]) -> list[str]:
    """The same arguments, continuing from the last checkpoint."""
    if any(a == "--resume" or a.startswith("--resume=") for a in train_args):
        return train_args
    return train_args + ["--resume"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.nprocs < 1 or args.max_restarts < 0:
        print("distnet: error: -n must be >= 1 and --max-restarts >= 0", file=sys.stderr)
        return EXIT_USER_ERROR
    can_resume = any(a == "--checkpoint-dir" or a.startswith("--checkpoint-dir=") for a in train_args)
    stopping = {"signal": None}
    child = {"proc": None}

    def forward(signum, frame):
        stopping["signal"] = signum
        if child["proc"] is not None and child["proc"].poll() is None:
            child["proc"].send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    attempt = 0
    while True:
        cmd = mpirun_command(args, train_args)
        print(f"distnet.launch: starting {' '.join(cmd)}", file=sys.stderr, flush=True)
        child["proc"] = subprocess.Popen(cmd)
        code = child["proc"].wait()
        if code == 0 or stopping["signal"] is not None:
            return code
        if code == EXIT_USER_ERROR:
            print("distnet.launch: the job rejected its input (exit code 2); not restarting", file=sys.stderr)
            return code
        if attempt >= args.max_restarts:
            print(f"distnet.launch: job failed with exit code {code}; no restarts left "
                  f"({args.max_restarts} allowed)", file=sys.stderr)
            return code
        attempt += 1
        why = f"signal {-code}" if code < 0 else f"exit code {code}"
        how = "with --resume from the last checkpoint" if can_resume else "from scratch (no --checkpoint-dir)"
        print(f"distnet.launch: job failed ({why}); restart {attempt}/{args.max_restarts} {how}",
              file=sys.stderr, flush=True)
        if can_resume:
            train_args = with_resume(train_args)
        time.sleep(args.restart_delay)


if __name__ == "__main__":
    sys.exit(main())
