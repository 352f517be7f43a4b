"""Rendezvous of a distnet cluster: who the nodes are, how to trust them, the MPI hostfile.

Standard library only; runs inside the node image (launch/Dockerfile) and in the tests.

  rendezvous.py register --keydir DIR --pubkey FILE
      (worker) publish this node's ssh host key as DIR/<address>.pub, once per name the
      coordinator may use for it (its IP address and its hostname).

  rendezvous.py coordinator --service worker --expect N --ppn P --keydir DIR \
                            --hostfile OUT --known-hosts OUT
      (coordinator) wait until the compose DNS name SERVICE resolves to N addresses, each of
      which has published its host key and accepts connections on the ssh port; write the
      hostfile (this node first, so that rank 0 runs here, then the workers, P slots each)
      and an ssh known_hosts file; print the number of ranks.
      With --hostfile-in FILE (real hosts) the node list comes from that file instead.
      Without --known-hosts (a known_hosts file given by the operator) it waits only for
      the ssh ports.

  rendezvous.py refresh (the coordinator's arguments, without --expect/--timeout)
      (coordinator, before each start of an elastic job: DISTNET_ELASTIC=1) rewrite the
      hostfile and known_hosts from what is there now, without waiting: the workers SERVICE
      resolves to that have published a host key (a worker started again publishes its new
      one), or the lines of --hostfile-in.  distnet.launch --elastic then probes each host
      and leaves out those that do not answer.

  rendezvous.py iface-address IFACE
      print the IPv4 address of network interface IFACE (to bind sshd to it).

The hostfile holds addresses resolved from DNS at start, never addresses written by hand.
The entry point runs the coordinator side as the unprivileged user, and every file is
written with O_CREAT|O_EXCL|O_NOFOLLOW under a random name, then renamed into place: a
planted symlink is never followed.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"[rendezvous] {msg}", file=sys.stderr, flush=True)


def resolve(name: str) -> list[str]:
    """All IPv4 addresses NAME resolves to (compose's DNS answers a service name with one
    address per running replica), sorted numerically; [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sort_addresses({info[4][0] for info in infos})


def sort_addresses(addresses) -> list[str]:
    return sorted(set(addresses), key=lambda a: (0, int(ipaddress.ip_address(a))) if _is_ip(a) else (1, a))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def own_address() -> str:
    """The address other nodes reach this one at: $DISTNET_ADVERTISE_ADDR, else what this
    container's hostname resolves to (compose writes it into /etc/hosts)."""
    explicit = os.environ.get("DISTNET_ADVERTISE_ADDR")
    if explicit:
        return explicit
    return socket.gethostbyname(socket.gethostname())


def hostfile_lines(coordinator: str, workers: list[str], ppn: int) -> list[str]:
    """MPICH hostfile lines ``host:slots``: the coordinator first (Hydra fills hosts in
    order, so ranks 0..ppn-1 -- rank 0 writes checkpoints -- run on the coordinator)."""
    if ppn < 1:
        raise ValueError(f"processes per node must be >= 1, got {ppn}")
    hosts = [coordinator] + [w for w in workers if w != coordinator]
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"duplicate hosts in {hosts}")
    return [f"{h}:{ppn}" for h in hosts]


def parse_hostfile(text: str) -> list[tuple[str, int]]:
    """``host[:slots]`` lines (comments and blank lines skipped) -> [(host, slots)]."""
    hosts = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, slots = line.partition(":")
        n = int(slots) if slots else 1
        if not host or n < 1:
            raise ValueError(f"bad hostfile line {raw!r}")
        hosts.append((host, n))
    if not hosts:
        raise ValueError("empty hostfile")
    return hosts


def total_slots(lines: list[str]) -> int:
    return sum(n for _, n in parse_hostfile("\n".join(lines)))


def known_hosts_lines(hosts: list[str], keydir: Path, port: int = 22) -> tuple[list[str], list[str]]:
    """known_hosts lines for HOSTS from KEYDIR/<host>.pub (one ``type base64 [comment]`` line
    each); returns (lines, hosts without a published key)."""
    lines, missing = [], []
    for host in hosts:
        path = keydir / f"{host}.pub"
        try:
            key = path.read_text().split()
        except OSError:
            missing.append(host)
            continue
        if len(key) < 2 or not key[0].startswith(("ssh-", "ecdsa-")):
            missing.append(host)
            continue
        name = host if port == 22 else f"[{host}]:{port}"
        lines.append(f"{name} {key[0]} {key[1]}")
    return lines, missing


def port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether an ssh server answers at HOST:PORT (its banner), saying goodbye politely
    (our own identification line) so that sshd does not log an error for the probe."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            banner = sock.recv(256)
            if banner.startswith(b"SSH-"):
                sock.sendall(b"SSH-2.0-distnet-rendezvous-probe\r\n")
            return banner.startswith(b"SSH-")
    except OSError:
        return False


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write PATH whole or not at all, never through a symlink: a new file under a random
    name (O_EXCL|O_NOFOLLOW: fails rather than follow a planted link), then rename(2),
    which replaces a link at PATH instead of writing where it points."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def iface_address(name: str) -> str:
    """IPv4 address of network interface NAME (SIOCGIFADDR; no iproute2 in the image)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError as exc:
            raise ValueError(f"network interface {name!r}: {exc.strerror}") from None
    return socket.inet_ntoa(packed[20:24])


def cmd_register(args) -> int:
    keydir = Path(args.keydir)
    keydir.mkdir(parents=True, exist_ok=True)
    key = Path(args.pubkey).read_text().strip()
    names = {own_address(), socket.gethostname()}
    for name in sorted(names):
        write_atomic(keydir / f"{name}.pub", key + "\n")
    log(f"published host key for {', '.join(sorted(names))}")
    return 0


def cmd_coordinator(args) -> int:
    keydir = Path(args.keydir)
    me = args.self_address or own_address()
    deadline = time.monotonic() + args.timeout
    if args.hostfile_in:
        nodes = parse_hostfile(Path(args.hostfile_in).read_text())
        lines = [f"{h}:{n}" for h, n in nodes]
        workers = [h for h, _ in nodes[1:]]
        log(f"hostfile {args.hostfile_in}: {', '.join(lines)} (its first host runs rank 0 and must be this node)")
    else:
        workers = []
        while True:
            workers = [w for w in resolve(args.service) if w != me] if args.expect > 0 else []
            if len(workers) >= args.expect:
                break
            if time.monotonic() > deadline:
                log(f"gave up after {args.timeout:g}s: '{args.service}' resolves to {len(workers)} "
                    f"address(es) {workers}, expected {args.expect} (DISTNET_WORKERS)")
                return 1
            time.sleep(1)
        if len(workers) > args.expect:
            log(f"'{args.service}' resolves to {len(workers)} addresses, more than the {args.expect} expected; using all")
        lines = hostfile_lines(me, workers, args.ppn)
    # Every worker must have published its host key and be accepting ssh connections.
    pending = list(workers)
    while pending:
        _, missing = known_hosts_lines(pending, keydir, args.port)
        if args.trust_on_first_use or not args.known_hosts:
            missing = []  # not waiting for published keys: ssh checks its own known_hosts
        pending = [w for w in pending if w in missing or not port_open(w, args.port)]
        if not pending:
            break
        if time.monotonic() > deadline:
            log(f"gave up after {args.timeout:g}s waiting for {pending} (host key in {keydir}, ssh port {args.port})")
            return 1
        time.sleep(1)
    if args.known_hosts:
        known, _ = known_hosts_lines(workers, keydir, args.port)
        write_atomic(Path(args.known_hosts), "".join(line + "\n" for line in known))
    write_atomic(Path(args.hostfile), "".join(line + "\n" for line in lines))
    log(f"{len(lines)} node(s): {', '.join(lines)}")
    print(total_slots(lines))
    return 0


def cmd_refresh(args) -> int:
    keydir = Path(args.keydir)
    me = args.self_address or own_address()
    if args.hostfile_in:
        lines = [f"{h}:{n}" for h, n in parse_hostfile(Path(args.hostfile_in).read_text())]
        workers = [line.rsplit(":", 1)[0] for line in lines[1:]]
    else:
        workers = [w for w in resolve(args.service) if w != me]
        if args.known_hosts and not args.trust_on_first_use:
            _, missing = known_hosts_lines(workers, keydir, args.port)
            workers = [w for w in workers if w not in missing]  # strict checking would refuse them
        lines = hostfile_lines(me, workers, args.ppn)
    if args.known_hosts:
        known, _ = known_hosts_lines(workers, keydir, args.port)
        write_atomic(Path(args.known_hosts), "".join(line + "\n" for line in known))
    write_atomic(Path(args.hostfile), "".join(line + "\n" for line in lines))
    log(f"refreshed: {len(lines)} node(s): {', '.join(lines)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("register", help="(worker) publish this node's ssh host key")
    r.add_argument("--keydir", required=True)
    r.add_argument("--pubkey", required=True)
    c = sub.add_parser("coordinator", help="(coordinator) wait for the workers, write hostfile and known_hosts")
    f = sub.add_parser("refresh", help="(coordinator, elastic) rewrite hostfile and known_hosts from the workers there now")
    c.add_argument("--expect", type=int, default=0, help="number of worker nodes to wait for")
    for q in (c, f):
        q.add_argument("--service", default="worker", help="DNS name of the workers (the compose service)")
        q.add_argument("--ppn", type=int, default=1, help="MPI processes per node")
        q.add_argument("--keydir", required=True, help="where workers publish their host keys")
        q.add_argument("--port", type=int, default=22, help="the workers' ssh port")
        q.add_argument("--hostfile", required=True, help="hostfile to write")
        q.add_argument("--known-hosts", help="known_hosts file to write (omit: the operator gave one)")
        q.add_argument("--hostfile-in", help="use this hostfile (real hosts) instead of DNS discovery")
        q.add_argument("--self-address", help="this node's address (default: $DISTNET_ADVERTISE_ADDR or its hostname's)")
        q.add_argument("--trust-on-first-use", action="store_true",
                       help="do not wait for published host keys (ssh then uses StrictHostKeyChecking=accept-new)")
    c.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the workers")
    i = sub.add_parser("iface-address", help="print the IPv4 address of a network interface")
    i.add_argument("iface")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "iface-address":
        try:
            print(iface_address(args.iface))
        except ValueError as exc:
            log(str(exc))
            return 2
        return 0
    if args.cmd == "refresh":
        return cmd_refresh(args)
    return cmd_register(args) if args.cmd == "register" else cmd_coordinator(args)


if __name__ == "__main__":
    sys.exit(main())
