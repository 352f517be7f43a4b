"""Calibrate the scaling model (distnet/scaling.py): alpha/beta/gamma of a link, compute per step.

Link (under MPI, 2 or more ranks; rank 0 and rank 1 ping-pong, all ranks then allreduce)::

    mpirun -n 2 python benchmarks/calibrate_links.py --link shm --out benchmarks/results/calibration.json
    # between containers: benchmarks/calibrate_containers.sh runs this over ssh with tc links

* alpha, beta: one-way time (half the median round trip of MPI Send/Recv) at message sizes from
  8 B to --max-bytes, fitted as ``alpha + n * beta`` by least squares weighted by 1/t (so the
  small messages pin alpha and the large ones beta);
* gamma: the slope of MPI's own local reduction (``Op.Reduce_local``, float32 SUM) per byte;
* a check: timed MPI_Allreduce (float32 SUM, in place) at each size against the model's
  prediction for this many ranks, printed and kept in the JSON (``allreduce``).

Compute (one process; the same step as ``python -m distnet.bench``)::

    python benchmarks/calibrate_links.py --compute cnn2 --batch-sizes 16,32,64,128 --out ...

Every figure is a median of timed repetitions; on a shared machine re-run and compare.
The JSON is merged: an existing file keeps the links and models this run did not measure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's distnet (the container has its own too)


def sizes_up_to(max_bytes: int) -> list[int]:
    out, n = [], 8
    while n <= max_bytes:
        out.append(n)
        n *= 4
    return out


def timed_median(fn, seconds: float, min_reps: int = 5, max_reps: int = 2000) -> float:
    fn()  # warm-up (connection set-up, first touch)
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def reps_for(nbytes: int, scale: float = 1.0) -> int:
    """Repetitions per size, the same on every rank (no negotiation): many for small messages,
    at least 5 for the largest (5 round trips of 2 MiB at 100 Mbit/s take 1.7 s)."""
    return int(max(5, min(400, scale * 4e6 / max(nbytes, 1))))


def measure_link(comm, sizes, scale: float = 1.0) -> dict:
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    pingpong = []
    for n in sizes:
        buf = np.zeros(n, dtype=np.uint8)
        reps = reps_for(n, scale)
        comm.Barrier()
        times = []
        for _ in range(reps + 2):  # the first two are warm-up
            if rank == 0:
                t0 = time.perf_counter()
                comm.Send(buf, dest=1, tag=8)
                comm.Recv(buf, source=1, tag=8)
                times.append(time.perf_counter() - t0)
            elif rank == 1:
                comm.Recv(buf, source=0, tag=8)
                comm.Send(buf, dest=0, tag=8)
        if rank == 0:
            times = sorted(times[2:])
            pingpong.append([n, times[len(times) // 2] / 2])
    comm.Barrier()
    # local reduction speed (gamma): MPI's own SUM kernel on float32
    reduce_local = []
    for n in sizes:
        count = max(1, n // 4)
        a = np.ones(count, dtype=np.float32)
        b = np.ones(count, dtype=np.float32)
        t = timed_median(lambda: MPI.SUM.Reduce_local(a, b), 0.05 * scale)
        reduce_local.append([count * 4, t])
    allreduce = []
    for n in sizes:
        count = max(1, n // 4)
        a = np.ones(count, dtype=np.float32)
        reps = reps_for(n, scale)
        comm.Barrier()
        times = []
        for _ in range(reps + 2):  # back to back, as in training (a barrier per call times its skew)
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, a)
            times.append(time.perf_counter() - t0)
        # the median call: on a loaded machine the mean is the scheduler's (a rank waiting for
        # a core), which the model does not know about
        times = sorted(times[2:])
        mid = times[len(times) // 2]
        worst = comm.reduce(mid, op=MPI.MAX, root=0)
        if rank == 0:
            allreduce.append([count * 4, count, worst])
    return {"pingpong": pingpong, "reduce_local": reduce_local, "allreduce": allreduce, "ranks": size}


def merge_out(path: str, update) -> dict:
    doc = {"links": {}, "compute": {}}
    if path and os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    update(doc)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
    return doc


def link_main(args) -> int:
    from mpi4py import MPI

    from distnet import scaling

    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        print("distnet: error: --link: run under mpirun with at least 2 ranks", file=sys.stderr)
        return 2
    r = measure_link(comm, sizes_up_to(args.max_bytes), args.scale)
    if comm.Get_rank() != 0:
        return 0
    link = scaling.fit_link(r["pingpong"], r["reduce_local"], args.link)
    p = r["ranks"]
    print(f"link {args.link}: {p} ranks, alpha {link.alpha * 1e6:.2f} us, beta {link.beta * 1e9:.4f} ns/B "
          f"({8 / link.beta / 1e9:.3g} Gbit/s), gamma {link.gamma * 1e9:.4f} ns/B")
    print(f"{'bytes':>9s} {'one-way us':>11s} {'fit us':>9s} | {'allreduce us':>12s} {'model us':>9s} "
          f"{'err':>6s}  algorithm")
    rows = []
    for (n, t), (_, count, ta) in zip(r["pingpong"], r["allreduce"]):
        pred, algo = scaling.allreduce_time(p, n, count, link)
        rows.append({"bytes": n, "allreduce_s": ta, "model_s": pred, "algorithm": algo})
        print(f"{n:9d} {t * 1e6:11.2f} {(link.alpha + n * link.beta) * 1e6:9.2f} | {ta * 1e6:12.2f} "
              f"{pred * 1e6:9.2f} {(pred - ta) / ta * 100:+5.0f}%  {algo}")
    entry = {"alpha": link.alpha, "beta": link.beta, "gamma": link.gamma, "ranks": p,
             "pingpong": r["pingpong"], "reduce_local": r["reduce_local"], "allreduce_check": rows,
             "note": args.note, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    merge_out(args.out, lambda d: d.setdefault("links", {}).__setitem__(args.link, entry))
    return 0


def compute_main(args) -> int:
    from distnet import scaling

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    batches = [int(b) for b in args.batch_sizes.split(",") if b]
    m = scaling.measure_compute(args.compute, batches, args.seconds)
    a, b = scaling.fit_line([s[0] for s in m["samples"]], [s[1] for s in m["samples"]])
    print(f"compute {args.compute}: {a * 1e3:.2f} ms + {b * 1e3:.3f} ms/sample; backward share "
          f"{m['backward_share']:.2f}")
    for batch, t in m["samples"]:
        print(f"  batch {batch:4d}: {t * 1e3:8.2f} ms/step (fit {(a + b * batch) * 1e3:8.2f})")
    m["note"] = args.note
    m["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    merge_out(args.out, lambda d: d.setdefault("compute", {}).__setitem__(args.compute, m))
    if args.print_json:
        print(json.dumps(m))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--link", help="name of the link to calibrate (under mpirun): shm, bridge, 1gbit, 100mbit")
    p.add_argument("--compute", metavar="MODEL", help="measure compute per step of MODEL instead")
    p.add_argument("--batch-sizes", default="8,16,32,64,128")
    p.add_argument("--max-bytes", type=int, default=2 << 20, help="largest message (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batch size (--compute)")
    p.add_argument("--scale", type=float, default=1.0, help="more (>1) or fewer repetitions per size (--link)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "calibration.json"))
    p.add_argument("--note", default="", help="conditions to record with the figures")
    p.add_argument("--print-json", action="store_true", help="(--compute) also print the result as one JSON line")
    args = p.parse_args(argv)
    if bool(args.link) == bool(args.compute):
        p.error("give exactly one of --link NAME (under mpirun) or --compute MODEL")
    return compute_main(args) if args.compute else link_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
