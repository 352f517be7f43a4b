"""Elastic continuation: after a failure, restart on the nodes that still answer.

``python -m distnet.launch --hostfile FILE --elastic [--min-nodes M] -- <train args>``

Before every start the launcher re-reads FILE and probes each host with a probe of its own
(``ssh -o ConnectTimeout=T HOST true`` by default, or a TCP connect to the ssh port), so a
node that died is left out, and a node that came back, or a line added to FILE, is used at
the next start.  The job then runs on the live hosts' slots and, after the first start,
with ``--resume``: the last checkpoint continues on whatever world size is left.

Why the trajectory does not change: distnet's global batch is fixed (each rank computes its
slice of it, DESIGN.md rule 2), the data order depends on (seed, epoch) only and the
optimizer state in a checkpoint is global, so a run on 3 ranks, then 2, lands where one
uninterrupted run does (to float rounding; bitwise with --deterministic when the
micro-batch count divides every world size used: the launcher picks such a world size).
Horovod's elastic mode instead changes the effective batch when workers leave.

The loop (``run_elastic``) takes the probe and the starter as functions, so that its
decisions are tested without MPI or a network (tests/test_launch_elastic.py).
"""
from __future__ import annotations

import ipaddress
import shlex
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import UserError

EXIT_USER_ERROR = 2
EXIT_TOO_FEW_NODES = 1
DEFAULT_ELASTIC_RESTARTS = 10
DETERMINISTIC_DEFAULT_MICRO_BATCHES = 8  # fitting.make_trainer's default


@dataclass(frozen=True)
class Host:
    name: str
    slots: int


# ------------------------------------------------------------------------- hostfiles

def parse_hostfile(text: str, where: str = "hostfile") -> list[Host]:
    """Hosts of an MPICH (``host:N``) or Open MPI (``host slots=N``) hostfile, or bare
    ``host`` lines (1 slot); ``#`` comments and blank lines are skipped.  A host named
    twice is refused: MPI would start ranks there twice over."""
    hosts: list[Host] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        name, slots = words[0], "1"
        if ":" in name and not _is_ipv6(name):
            name, _, slots = name.partition(":")
        for word in words[1:]:
            key, _, value = word.partition("=")
            if key in ("slots", "max_slots", "max-slots") and value:
                slots = value if key == "slots" else slots
            else:
                raise UserError(f"{where}: line {number}: cannot read {raw.strip()!r} "
                                f"(expected 'host', 'host:N' or 'host slots=N')")
        if not name or not slots.isdigit() or int(slots) < 1:
            raise UserError(f"{where}: line {number}: {raw.strip()!r}: slots must be a whole number >= 1")
        if any(h.name == name for h in hosts):
            raise UserError(f"{where}: line {number}: host {name} is listed twice")
        hosts.append(Host(name, int(slots)))
    if not hosts:
        raise UserError(f"{where}: no hosts in the file")
    return hosts


def read_hostfile(path) -> list[Host]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the hostfile: {exc.strerror}") from None
    return parse_hostfile(text, str(path))


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def hostfile_text(hosts: list[Host], flavour: str) -> str:
    """The hostfile in the spelling of ``flavour``'s mpirun."""
    if flavour == "openmpi":
        return "".join(f"{h.name} slots={h.slots}\n" for h in hosts)
    return "".join(f"{h.name}:{h.slots}\n" for h in hosts)


# ------------------------------------------------------------------------- which mpirun

_FLAVOURS: dict[str, str] = {}


def mpi_flavour(mpirun: str) -> str:
    """"openmpi" or "mpich", from ``mpirun --version`` (Open MPI's says "Open MPI", MPICH's
    Hydra "HYDRA build details"); anything else is taken for MPICH, the project's default."""
    if mpirun not in _FLAVOURS:
        try:
            out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
            text = out.stdout + out.stderr
        except (OSError, subprocess.TimeoutExpired):
            text = ""
        _FLAVOURS[mpirun] = "openmpi" if ("Open MPI" in text or "OpenRTE" in text) else "mpich"
    return _FLAVOURS[mpirun]


def hostfile_flag(flavour: str) -> str:
    return "--hostfile" if flavour == "openmpi" else "-f"


# ------------------------------------------------------------------------- probes

def is_local(name: str) -> bool:
    """Whether NAME is this machine (it runs mpirun, so it is alive; the coordinator of the
    compose cluster runs no sshd to probe).  Local means: one of its addresses can be bound
    here."""
    if name in ("localhost", socket.gethostname()):
        return True
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    for family, _, _, _, address in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((address[0], 0))
            return True
        except OSError:
            continue
    return False


def ssh_probe(timeout: float, ssh: str = "ssh") -> Callable[[str], bool]:
    """Alive when ``ssh HOST true`` succeeds within TIMEOUT: the host is up, its sshd
    answers and lets us in, which is what mpirun's ssh launcher needs next."""
    def probe(host: str) -> bool:
        cmd = [ssh, "-o", f"ConnectTimeout={max(1, round(timeout))}", "-o", "BatchMode=yes", host, "true"]
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=timeout + 5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    return probe


def tcp_probe(port: int, timeout: float) -> Callable[[str], bool]:
    """Alive when HOST accepts a TCP connection on PORT within TIMEOUT."""
    def probe(host: str) -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    return probe


def command_probe(command: str, timeout: float) -> Callable[[str], bool]:
    """Alive when ``COMMAND HOST`` exits 0 (a site's own health check)."""
    words = shlex.split(command)

    def probe(host: str) -> bool:
        try:
            return subprocess.run([*words, host], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  timeout=timeout + 5).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    return probe


def live_hosts(hosts: list[Host], probe: Callable[[str], bool], skip_local: bool = True) -> list[Host]:
    """The hosts that answer, in the hostfile's order (rank 0 stays on the first live one).
    Probed in parallel, so a round costs one probe timeout however many hosts are dead."""
    def alive(host: Host) -> bool:
        return (skip_local and is_local(host.name)) or probe(host.name)

    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        answers = list(pool.map(alive, hosts))
    return [h for h, ok in zip(hosts, answers) if ok]


def refresh(command: str, timeout: float = 60.0) -> None:
    """Run COMMAND (which rewrites the hostfile) before a start; when it fails, say so and
    go on with the hostfile as it is: its hosts are probed anyway."""
    try:
        code = subprocess.run(shlex.split(command), stdin=subprocess.DEVNULL, timeout=timeout).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        code = str(exc)
    if code != 0:
        print(f"distnet.launch: warning: --refresh-command failed ({code}); using the hostfile as it is",
              file=sys.stderr, flush=True)


# ------------------------------------------------------------------------- world size

def usable_ranks(slots: int, train_args: list[str]) -> int:
    """How many of SLOTS ranks to start.  All of them, except with --deterministic, whose
    micro-batch count K must be divisible by the world size: then the largest divisor of K
    that fits, so that the run stays bitwise the same on whatever is left."""
    if "--deterministic" not in train_args:
        return slots
    k = DETERMINISTIC_DEFAULT_MICRO_BATCHES
    for i, arg in enumerate(train_args):
        value = arg.split("=", 1)[1] if arg.startswith("--micro-batches=") else (
            train_args[i + 1] if arg == "--micro-batches" and i + 1 < len(train_args) else None)
        if value is not None and value.isdigit() and int(value) > 0:
            k = int(value)
    return max(d for d in range(1, min(slots, k) + 1) if k % d == 0)


# ------------------------------------------------------------------------- the loop

def run_elastic(read_hosts: Callable[[], list[Host]], probe: Callable[[list[Host]], list[Host]],
                start: Callable[[list[Host], int, bool], int], *, min_nodes: int, max_restarts: int,
                restart_delay: float, ranks_for: Callable[[int], int] = lambda slots: slots,
                stopped: Callable[[], bool] = lambda: False,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> int:
    """Start the job on the live hosts; after a failure, re-read and re-probe, restart with
    resume=True on what is alive.  ``probe(hosts)`` returns the live ones; ``start(hosts,
    nprocs, resume)`` runs the job and returns its exit code.

    Returns 0 when the job finished, its code when it failed with bad input (2, never
    retried), was stopped by a signal, or failed with no restarts left, and
    EXIT_TOO_FEW_NODES when fewer than ``min_nodes`` hosts answer."""
    attempt, previous, last_code = 0, None, None
    while True:
        try:
            hosts = read_hosts()
        except UserError as exc:
            log(f"distnet: error: {exc}")
            return EXIT_USER_ERROR
        alive = probe(hosts)
        names = [h.name for h in alive]
        dead = [h.name for h in hosts if h.name not in names]
        if previous is not None:
            back = [n for n in names if n not in previous]
            if back:
                log(f"distnet.launch: using again or newly: {', '.join(back)}")
            gone = [n for n in previous if all(h.name != n for h in hosts)]
            if gone:
                log(f"distnet.launch: no longer in the hostfile: {', '.join(gone)}")
        if dead:
            log(f"distnet.launch: not answering, left out: {', '.join(dead)}")
        if len(alive) < min_nodes:
            log(f"distnet.launch: only {len(alive)} of {len(hosts)} node(s) answer "
                f"({', '.join(names) or 'none'}); --min-nodes is {min_nodes}: giving up"
                + (f" (the last job exited with {last_code})" if last_code is not None else ""))
            return EXIT_TOO_FEW_NODES
        if stopped():  # SIGTERM/SIGINT while between jobs: nothing more to start
            return last_code if last_code is not None else 0
        slots = sum(h.slots for h in alive)
        nprocs = ranks_for(slots)
        if nprocs < slots:
            log(f"distnet.launch: {nprocs} of {slots} slots used (--deterministic: the world size "
                f"must divide the micro-batch count)")
        log(f"distnet.launch: {'restart ' + str(attempt) + ' on' if attempt else 'starting on'} "
            f"{len(alive)} node(s), {nprocs} rank(s): {', '.join(f'{h.name}:{h.slots}' for h in alive)}")
        code = start(alive, nprocs, attempt > 0)
        previous, last_code = names, code
        if code == 0 or stopped():
            return code
        if code == EXIT_USER_ERROR:
            log("distnet.launch: the job rejected its input (exit code 2); not restarting")
            return code
        if attempt >= max_restarts:
            log(f"distnet.launch: job failed with exit code {code}; no restarts left ({max_restarts} allowed)")
            return code
        attempt += 1
        why = f"signal {-code}" if code < 0 else f"exit code {code}"
        log(f"distnet.launch: job failed ({why}); probing the nodes, then restart "
            f"{attempt}/{max_restarts} with --resume from the last checkpoint")
        time.sleep(restart_delay)
