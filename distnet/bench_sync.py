"""Where a distributed step's time goes: ``python -m distnet.bench --timeline`` / ``--ceiling``.

``--timeline`` (under ``mpirun -n N`` or alone) trains a model with the real Trainer loop
(``make_trainer``: loader with the default 2-pixel shifts, Adam, a cosine schedule, logging
every 50 steps) on synthetic MNIST-shaped data and prints, per rank, the ms per step and the
share of each phase of ``distnet.timeline``: the loader, forward/backward, waiting in the
gradient allreduce, the optimizer, the per-step statistics allreduce and Python.

``--ceiling`` measures the machine's own ceiling for N busy processes against the N-rank job:
it starts N independent single-process ``--timeline`` jobs together (their timed steps begin
at one agreed instant), then the ``mpirun -n N`` job with the same samples per rank, and
prints the ratio  (N-rank images/s) / (sum of the N single jobs' images/s), per repeat and
the median with its spread.  Repeats alternate which side runs first.

    mpirun -n 2 python -m distnet.bench --timeline --model lenet5 --per-rank-batch 64 --steps 300
    python -m distnet.bench --ceiling --ranks 2 --model lenet5 --per-rank-batch 64 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .cli._common import BLAS_THREAD_VARS

SHAPES = {"lenet5": (1, 28, 28), "cnn2": (1, 28, 28), "mlp": (3, 32, 32), "cifar-cnn": (3, 32, 32)}


def parse_args(argv):
    from .cli._common import Parser

    p = Parser(prog="python -m distnet.bench", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--timeline", action="store_true", help="train and print the per-rank step timeline")
    mode.add_argument("--ceiling", action="store_true",
                      help="N single-process jobs started together against the mpirun -n N job")
    p.add_argument("--model", default="lenet5", choices=tuple(SHAPES))
    p.add_argument("--per-rank-batch", type=int, default=64, help="samples per rank per step (default 64)")
    p.add_argument("--steps", type=int, default=300, help="steps to train (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="first steps left out of the figures (default 30)")
    p.add_argument("--overlap", action="store_true", help="overlap the allreduce with backward (buckets)")
    p.add_argument("--barrier", action="store_true",
                   help="a barrier before the gradient allreduce: tells waiting for the slower rank "
                        "(grad_imbalance) from moving data (grad_allreduce); adds a collective")
    p.add_argument("--ranks", type=int, default=2, help="--ceiling: ranks of the job (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="--ceiling: rounds (default 5)")
    p.add_argument("--json", metavar="PATH", help="--timeline: also write the figures as JSON ('-': stdout only)")
    p.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)  # time.time() to start steps
    args = p.parse_args(argv)
    for name in ("per_rank_batch", "steps", "ranks", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.warmup < args.steps:
        p.error(f"--warmup: must be >= 0 and below --steps ({args.steps}), got {args.warmup}")
    return args


# --- one job: the timeline ------------------------------------------------------------------
def build_trainer(args, comm):
    """The Trainer of a default-recipe MNIST-like run on synthetic data, no evaluation."""
    from . import nn, optim
    from .data.synthetic import synthetic
    from .fitting import make_trainer

    shape = SHAPES[args.model]
    global_batch = args.per_rank_batch * comm.size
    train = synthetic("train", n=max(8192, 4 * global_batch), shape=shape)
    model = nn.build_model(args.model, shape, 10, seed=0)
    opt = optim.make_optimizer("adam", model, lr=2e-3)
    schedule = optim.make_schedule("cosine", 2e-3, args.steps, warmup_steps=100)
    return make_trainer(model, train, loss="cross-entropy", optimizer=opt, batch_size=global_batch,
                        epochs=10 ** 6, max_steps=args.steps, schedule=schedule, augment=2,
                        overlap=args.overlap, comm=comm, log_every=50, progress=False, verbose=False)


def run_timeline(args, comm):
    """Train ``args.steps`` steps with a Timeline attached; every rank's summary, on rank 0."""
    from .timeline import Timeline, lockstep_loss

    trainer = build_trainer(args, comm)
    timeline = Timeline(warmup=args.warmup).attach(trainer, barrier=args.barrier)
    if args.start_at is not None:  # independent jobs started together: agree on the instant
        time.sleep(max(0.0, args.start_at - time.time()))
    try:
        trainer.run()
    finally:
        timeline.end()
        timeline.detach(trainer)
        trainer.optimizer.close()
    summary = timeline.summary()
    summary["images_per_s"] = args.per_rank_batch * comm.size / (summary["step_ms"] / 1e3)
    summaries = comm.gather_object(summary, root=0)
    rows = comm.gather_object(timeline.rows(), root=0)
    return summaries, (lockstep_loss(rows) if rows is not None else None)


def timeline_main(args) -> int:
    from .distributed import init
    from .timeline import format_summaries

    comm = init()
    summaries, loss = run_timeline(args, comm)
    if comm.rank != 0:
        return 0
    result = {"lockstep_loss": loss, "model": args.model, "ranks": comm.size, "per_rank_batch": args.per_rank_batch,
              "steps": args.steps, "warmup": args.warmup, "overlap": args.overlap, "barrier": args.barrier,
              "images_per_s": summaries[0]["images_per_s"], "per_rank": summaries}
    if args.json == "-":
        print(json.dumps(result), flush=True)
        return 0
    title = (f"{args.model}, {comm.size} rank(s) x {args.per_rank_batch} samples, {args.steps} steps "
             f"({args.warmup} warm-up), {'overlap' if args.overlap else 'one allreduce'}"
             f"{', barrier' if args.barrier else ''}: {result['images_per_s']:.0f} images/s (job)")
    print(format_summaries(summaries, title), flush=True)
    if comm.size > 1:
        print(f"lockstep: ranks busy {100 * loss['busy']:.1f}% of the job's time; lost to waiting for the "
              f"slowest rank {100 * loss['imbalance']:.1f}% ({100 * loss['systematic']:.1f}% systematic: one rank slower "
              f"on average), to communication {100 * loss['communication']:.1f}%",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


# --- the ceiling: N single jobs together against the N-rank job -------------------------------
def _job_command(args, extra=()):
    cmd = [sys.executable, "-m", "distnet.bench", "--timeline", "--json", "-", "--model", args.model,
           "--per-rank-batch", str(args.per_rank_batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), *extra]
    if args.overlap:
        cmd.append("--overlap")
    return cmd


def _job_env():
    env = dict(os.environ)
    for var in BLAS_THREAD_VARS:
        env[var] = "1"
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "DISTNET_FORCE_MPI"):
        env.pop(var, None)  # the single jobs must not think they are ranks
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def singles_together(args) -> list[dict]:
    """The figures of each of ``args.ranks`` single-process jobs whose timed steps start together."""
    start = time.time() + 5.0  # enough for the imports and the set-up of every job
    procs = [subprocess.Popen(_job_command(args, ["--start-at", f"{start:.3f}"]), env=_job_env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(args.ranks)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"distnet: error: a single-process job failed ({[p.returncode for p in procs]})")
    return [_last_json(o) for o in outs]


def mpi_job(args) -> dict:
    mpirun = shutil.which("mpirun", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                           os.environ.get("PATH", "")]))
    if mpirun is None:
        raise SystemExit("distnet: error: --ceiling: mpirun not found (pip install mpich)")
    proc = subprocess.run([mpirun, "-n", str(args.ranks)] + _job_command(args), env=_job_env(),
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"distnet: error: the mpirun -n {args.ranks} job failed ({proc.returncode})")
    return _last_json(proc.stdout)


def ceiling_main(args) -> int:
    from .timeline import BUSY, PHASES

    print(f"{args.model}, {args.per_rank_batch} samples per rank, {args.steps} steps ({args.warmup} warm-up): "
          f"mpirun -n {args.ranks} against {args.ranks} single-process jobs started together", flush=True)
    print(f"{'round':>5} {'singles img/s (sum)':>24} {'mpirun img/s':>13} {'ratio':>6}  "
          f"{'single step/busy ms':>19} {'rank step/busy ms':>17}  lockstep loss", flush=True)
    ratios = []
    for round_ in range(args.repeats):
        if round_ % 2 == 0:
            singles, job = singles_together(args), mpi_job(args)
        else:
            job = mpi_job(args)
            singles = singles_together(args)
        rates = [s["images_per_s"] for s in singles]
        ratio = job["images_per_s"] / sum(rates)
        ratios.append(ratio)
        alone = [s["per_rank"][0] for s in singles]
        ranks = job["per_rank"]
        busy = lambda ms: sum(ms[PHASES[i]] for i in BUSY)  # noqa: E731
        single_ms = f"{statistics.mean(a['step_ms'] for a in alone):.2f}/{statistics.mean(busy(a['ms']) for a in alone):.2f}"
        rank_ms = f"{ranks[0]['step_ms']:.2f}/{statistics.mean(busy(r['ms']) for r in ranks):.2f}"
        loss = job["lockstep_loss"]
        shown = "+".join(f"{r:.0f}" for r in rates) + f" = {sum(rates):.0f}"
        print(f"{round_ + 1:5d} {shown:>24} {job['images_per_s']:13.0f} {ratio:6.3f}  {single_ms:>19} {rank_ms:>17}  "
              f"imbalance {100 * loss['imbalance']:.1f}% ({100 * loss['systematic']:.1f}% systematic), communication {100 * loss['communication']:.1f}%",
              flush=True)
    ratios.sort()
    print(f"ratio: median {statistics.median(ratios):.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f} "
          f"over {len(ratios)} rounds", flush=True)
    print("(busy: a process's own work per step, loader + forward/backward + optimizer + Python; a rank's "
          "step beyond it is waiting: for the slowest rank, or for the data to move)", flush=True)
    return 0


def main(argv) -> int:
    args = parse_args(argv)
    return timeline_main(args) if args.timeline else ceiling_main(args)
