"""``python -m distnet.launch -n N [--max-restarts K] -- <train args>``
``python -m distnet.launch --hostfile FILE --elastic [--min-nodes M] -- <train args>``

Starts ``mpirun -n N python -m distnet.train <train args>`` and, when the job fails, starts
it again with ``--resume`` (from the last checkpoint) up to K times, saying why each restart
happened, like torchrun's ``--max-restarts``.  Bad input (exit code 2) is never retried: it
would fail the same way.  SIGTERM/SIGINT are passed to the job, which checkpoints and exits,
and are not retried either.  With ``--elastic`` each start runs on the hosts of FILE that
answer a probe (distnet/elastic.py), so a lost node is dropped and the job continues on
the others.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import elastic

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
    p.add_argument("-n", "--nprocs", type=int, help="number of ranks (required unless --elastic)")
    p.add_argument("--max-restarts", type=int, default=None,
                   help=f"restart a failed job up to K times (default 0; {elastic.DEFAULT_ELASTIC_RESTARTS} with --elastic)")
    p.add_argument("--hostfile", help="MPI hostfile (host:slots per line) for multi-host runs")
    p.add_argument("--elastic", action="store_true",
                   help="before each start, re-read --hostfile and probe its hosts; run on those that "
                        "answer (ranks: their slots), restarting with --resume after a failure")
    p.add_argument("--min-nodes", type=int, default=1, help="--elastic: give up when fewer hosts answer (default 1)")
    p.add_argument("--probe", choices=("ssh", "tcp"), default="ssh",
                   help="--elastic: how a host is probed: 'ssh HOST true' (default) or a TCP connect to --probe-port")
    p.add_argument("--probe-port", type=int, default=22, help="--probe tcp: the port (default 22, ssh)")
    p.add_argument("--probe-timeout", type=float, default=3.0, help="--elastic: seconds a probe may take (default 3)")
    p.add_argument("--probe-command", metavar="CMD",
                   help="--elastic: instead, run 'CMD HOST' for every host (this machine too); exit 0 = alive")
    p.add_argument("--refresh-command", metavar="CMD",
                   help="--elastic: run CMD before each start, to rewrite --hostfile (e.g. from DNS or a scheduler)")
    p.add_argument("--mpirun", help="the mpirun to use (default: the one beside this Python, else PATH)")
    p.add_argument("--mpi-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for mpirun (repeatable), e.g. --mpi-arg=-launcher --mpi-arg=ssh")
    p.add_argument("--restart-delay", type=float, default=2.0, help="seconds to wait before a restart")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of distnet.train")
    return p


def mpirun_command(args, train_args: list[str], nprocs: int | None = None, hostfile: str | None = None) -> list[str]:
    """The mpirun command line; the hostfile flag in its own spelling (MPICH's ``-f``, Open
    MPI's ``--hostfile``, told apart by ``mpirun --version``)."""
    mpirun = find_mpirun(args.mpirun)
    cmd = [mpirun, "-n", str(nprocs if nprocs is not None else args.nprocs)]
    hostfile = hostfile or args.hostfile
    if hostfile:
        cmd += [elastic.hostfile_flag(elastic.mpi_flavour(mpirun)), hostfile]
    cmd += args.mpi_arg
    return cmd + [sys.executable, "-m", "distnet.train", *train_args]


def with_resume(train_args: list[str]) -> list[str]:
    """The same arguments, continuing from the last checkpoint."""
    if any(a == "--resume" or a.startswith("--resume=") for a in train_args):
        return train_args
    return train_args + ["--resume"]


def bad_input(args) -> str | None:
    """What is wrong with the launcher's own flags, or None."""
    if args.elastic:
        if not args.hostfile:
            return "--elastic: needs --hostfile (the hosts to probe before each start)"
        if args.nprocs is not None:
            return "-n: not with --elastic (the ranks are the slots of the hosts that answer)"
        if args.min_nodes < 1:
            return f"--min-nodes: must be >= 1, got {args.min_nodes}"
        if not args.probe_timeout > 0:
            return f"--probe-timeout: must be > 0 seconds, got {args.probe_timeout}"
        if not 1 <= args.probe_port <= 65535:
            return f"--probe-port: must be a port number from 1 to 65535, got {args.probe_port}"
    elif args.nprocs is None:
        return "-n: required (or --elastic with --hostfile)"
    if (args.nprocs is not None and args.nprocs < 1) or (args.max_restarts is not None and args.max_restarts < 0):
        return "-n must be >= 1 and --max-restarts >= 0"
    # a missing hostfile would make mpirun run every rank here, a multi-host job quietly
    # shrunk to one host (--elastic reads the file itself, before each start)
    if args.hostfile and not args.elastic and not Path(args.hostfile).is_file():
        return f"--hostfile: {args.hostfile}: no such file"
    if args.mpirun and not shutil.which(args.mpirun):
        return f"--mpirun: {args.mpirun}: not found or not executable"
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    problem = bad_input(args)
    if problem:
        print(f"distnet: error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.max_restarts is None:
        args.max_restarts = elastic.DEFAULT_ELASTIC_RESTARTS if args.elastic else 0
    can_resume = any(a in ("--checkpoint-dir", "--run-dir") or a.startswith(("--checkpoint-dir=", "--run-dir="))
                     for a in train_args)
    stopping = {"signal": None}
    child = {"proc": None}

    def forward(signum, frame):
        stopping["signal"] = signum
        if child["proc"] is not None and child["proc"].poll() is None:
            child["proc"].send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if args.elastic:
        return run_elastic(args, train_args, can_resume, child, stopping)
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


def run_elastic(args, train_args: list[str], can_resume: bool, child: dict, stopping: dict) -> int:
    """--elastic: each start on the live hosts of --hostfile, written to a hostfile of our own."""
    if args.probe_command:
        probe, skip_local = elastic.command_probe(args.probe_command, args.probe_timeout), False
    elif args.probe == "tcp":
        probe, skip_local = elastic.tcp_probe(args.probe_port, args.probe_timeout), True
    else:
        probe, skip_local = elastic.ssh_probe(args.probe_timeout), True
    mpirun = find_mpirun(args.mpirun)
    if not can_resume:
        print("distnet.launch: warning: no --checkpoint-dir: a restart starts from scratch", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="distnet-elastic-") as tmp:
        live_file = Path(tmp) / "hostfile"

        def start(hosts, nprocs, resume):
            live_file.write_text(elastic.hostfile_text(hosts, elastic.mpi_flavour(mpirun)))
            job_args = with_resume(train_args) if resume and can_resume else train_args
            cmd = mpirun_command(args, job_args, nprocs=nprocs, hostfile=str(live_file))
            print(f"distnet.launch: starting {' '.join(cmd)}", file=sys.stderr, flush=True)
            child["proc"] = subprocess.Popen(cmd)
            return child["proc"].wait()

        def read_hosts():
            if args.refresh_command:
                elastic.refresh(args.refresh_command)
            return elastic.read_hostfile(args.hostfile)

        return elastic.run_elastic(
            read_hosts,
            lambda hosts: elastic.live_hosts(hosts, probe, skip_local=skip_local),
            start, min_nodes=args.min_nodes, max_restarts=args.max_restarts,
            restart_delay=args.restart_delay, ranks_for=lambda slots: elastic.usable_ranks(slots, train_args),
            stopped=lambda: stopping["signal"] is not None)


if __name__ == "__main__":
    sys.exit(main())
