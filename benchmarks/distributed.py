"""Distributed throughput: ``python benchmarks/distributed.py [--ranks 1,2,4] [--steps 300]``

Runs ``mpirun -n N python -m distnet.train`` on MNIST for a fixed number of steps in three
modes (plain allreduce, ``--overlap`` buckets, ``--deterministic``) and prints the
whole-job images/s that the trainer logs (evaluation excluded), so the cost or benefit of
each mode and the scaling with ranks can be read side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {"plain": [], "overlap": ["--overlap"], "deterministic": ["--deterministic"]}


def run(ranks: int, mode: str, args) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.jsonl"
        cmd = [sys.executable, "-m", "distnet.train", "--dataset", args.dataset, "--model", args.model,
               "--batch-size", str(args.batch_size), "--max-steps", str(args.steps), "--eval-every", "0",
               "--log-every", str(max(args.steps // 6, 1)), "--no-progress", "--metrics", str(metrics),
               *MODES[mode]]
        if ranks > 1:
            cmd = [str(Path(sys.executable).with_name("mpirun")), "-n", str(ranks)] + cmd
        env = dict(os.environ, PYTHONPATH=str(REPO))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        rates = [json.loads(line)["images_per_sec"] for line in metrics.read_text().splitlines()
                 if json.loads(line)["event"] == "train"]
    return statistics.median(rates[1:] or rates)  # the first window includes warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--modes", default="plain,overlap,deterministic")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--model", default="cnn2")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    print(f"{args.model} on {args.dataset}, global batch {args.batch_size}, {args.steps} steps, "
          f"{os.cpu_count()} cores; images/s of the whole job (median of logging windows)")
    print(f"{'ranks':>5}  " + "  ".join(f"{m:>13}" for m in args.modes.split(",")))
    for ranks in map(int, args.ranks.split(",")):
        rates = [run(ranks, mode, args) for mode in args.modes.split(",")]
        print(f"{ranks:>5}  " + "  ".join(f"{r:13,.0f}" for r in rates), flush=True)


if __name__ == "__main__":
    main()
