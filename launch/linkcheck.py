"""What a link between two nodes really does: TCP throughput and round-trip time.

Checks that ``tc`` shaping (launch/docker-compose.slow.yml, DISTNET_LINK_RATE/DELAY) is real,
and gives the scaling model its alpha (latency) and beta (1 / bandwidth).  Standard library
only, so it runs in the node image as it is:

    python linkcheck.py serve [--port 5201]                 # on one node (loops forever)
    python linkcheck.py measure HOST [--port 5201] [--seconds 3] [--pings 200]

``measure`` prints one line:
    link HOST: 941.2 Mbit/s (HOST <- here, 3.0 s), rtt median 0.112 ms (p10 0.09, p90 0.16, 200 pings)
The round trip is a 1-byte TCP ping-pong with TCP_NODELAY (one-way delay ~ rtt / 2).
launch/slownet-bench.sh runs it between two containers of the cluster.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time

CHUNK = 1 << 20


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"p":  # ping-pong: echo single bytes until the peer closes
            while True:
                b = conn.recv(1)
                if not b:
                    return
                conn.sendall(b)
        elif mode == b"b":  # bulk: swallow everything up to the peer's shutdown, report the count
            total, view = 0, memoryview(bytearray(CHUNK))
            while (n := conn.recv_into(view)):
                total += n
            conn.sendall(str(total).encode())


def serve(port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def measure(host: str, port: int, seconds: float, pings: int) -> str:
    rtts = []
    with socket.create_connection((host, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"p")
        for _ in range(pings):
            t0 = time.perf_counter()
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise RuntimeError("ping-pong: the server answered something else")
            rtts.append(time.perf_counter() - t0)
    payload = b"\x01" * CHUNK
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"b")
        sent, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s.sendall(payload)
            sent += len(payload)
        s.shutdown(socket.SHUT_WR)
        received = int(s.recv(64).decode())  # arrives once the server has read everything
        elapsed = time.perf_counter() - t0
    if received < sent:
        raise RuntimeError(f"bulk: sent {sent} bytes, the server counted {received}")
    q = statistics.quantiles([r * 1e3 for r in rtts], n=10)
    return (f"link {host}: {sent * 8 / elapsed / 1e6:.1f} Mbit/s ({host} <- here, {elapsed:.1f} s), "
            f"rtt median {statistics.median(rtts) * 1e3:.3f} ms (p10 {q[0]:.3f}, p90 {q[-1]:.3f}, {pings} pings)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=5201)
    m = sub.add_parser("measure")
    m.add_argument("host")
    m.add_argument("--port", type=int, default=5201)
    m.add_argument("--seconds", type=float, default=3.0)
    m.add_argument("--pings", type=int, default=200)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port)
        return 0
    print(measure(args.host, args.port, args.seconds, args.pings), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
