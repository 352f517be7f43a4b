"""PyTorch DDP (gloo) against the machine's ceiling, measured as ``distnet.bench --ceiling``.

    /work/torchvenv/bin/python benchmarks/ddp_compare.py                 # lenet5, 64 per rank, 2 ranks
    /work/torchvenv/bin/python benchmarks/ddp_compare.py --repeats 7 --steps 400

Each round starts N independent single-process PyTorch jobs whose timed steps begin at one
agreed instant, then an N-process DistributedDataParallel job (gloo, loopback) with the same
samples per rank, and prints  (DDP images/s) / (sum of the single jobs' images/s)  per round
and the median with its range; rounds alternate which side runs first.  Every process uses
one thread (``torch.set_num_threads(1)``), trains distnet's architecture translated layer by
layer (``torch_compare.torch_model``) with Adam on fixed random data, and reads its loss
every step (``loss.item()``, no collective: DDP's own loop needs none).  The distnet figure
to set beside it: ``python -m distnet.bench --ceiling``.  distnet never imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(HERE))
    from torch_compare import torch_model
    from distnet.bench import INPUT_SHAPES

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch_model(args.model)
    if args.world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                                rank=args.rank, world_size=args.world)
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    crit = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.rank)
    x = torch.randn(args.per_rank_batch, *INPUT_SHAPES[args.model], generator=gen)
    labels = torch.randint(0, 10, (args.per_rank_batch,), generator=gen)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = crit(model(x), labels)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    if args.world > 1:
        dist.barrier()
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    t0 = time.perf_counter()
    for _ in range(args.steps - args.warmup):
        step()
    seconds = time.perf_counter() - t0
    if args.world > 1:
        # every rank done before any tears gloo down: a rank that exits while its peer is
        # still in the last allreduce made gloo abort ("terminate called without an active
        # exception"), seen once in the third of five rounds
        dist.barrier()
        dist.destroy_process_group()
    if args.rank == 0:
        rate = args.per_rank_batch * args.world * (args.steps - args.warmup) / seconds
        print(json.dumps({"images_per_s": rate}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, rank: int, world: int, port: int, start_at=None):
    cmd = [sys.executable, __file__, "--worker", "--rank", str(rank), "--world", str(world), "--port", str(port),
           "--model", args.model, "--per-rank-batch", str(args.per_rank_batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    if start_at is not None:
        cmd += ["--start-at", f"{start_at:.3f}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def _results(procs) -> list[float]:
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"ddp_compare: a worker failed ({[p.returncode for p in procs]})")
    return [json.loads(o.strip().splitlines()[-1])["images_per_s"] for o in outs if o.strip()]


def singles_together(args) -> list[float]:
    start = time.time() + 6.0  # after every job's imports and warm-up
    return _results([_start(args, 0, 1, 0, start) for _ in range(args.ranks)])


def ddp_job(args, tries: int = 2) -> float:
    """One DDP job's images/s; a job whose worker fails (a port taken between choosing
    it and binding it, a gloo abort at exit) is run once more, and says so."""
    for attempt in range(1, tries + 1):
        port = _free_port()
        try:
            return _results([_start(args, r, args.ranks, port) for r in range(args.ranks)])[0]
        except SystemExit as failure:
            if attempt == tries:
                raise
            print(f"{failure}; running that DDP job again", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet5")
    p.add_argument("--per-rank-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"PyTorch DDP (gloo), {args.model}, {args.per_rank_batch} samples per rank, {args.steps} steps "
          f"({args.warmup} warm-up): {args.ranks} processes against {args.ranks} single jobs started together")
    print(f"{'round':>5} {'singles img/s (sum)':>24} {'DDP img/s':>10} {'ratio':>6}", flush=True)
    ratios = []
    for round_ in range(args.repeats):
        if round_ % 2 == 0:
            singles, job = singles_together(args), ddp_job(args)
        else:
            job = ddp_job(args)
            singles = singles_together(args)
        ratios.append(job / sum(singles))
        shown = "+".join(f"{s:.0f}" for s in singles) + f" = {sum(singles):.0f}"
        print(f"{round_ + 1:5d} {shown:>24} {job:10.0f} {ratios[-1]:6.3f}", flush=True)
    ratios.sort()
    print(f"ratio: median {statistics.median(ratios):.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f} "
          f"over {len(ratios)} rounds")


if __name__ == "__main__":
    main()
