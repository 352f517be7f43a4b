"""Memory per rank: ``python benchmarks/memory.py [--ranks 2] [--steps 50] [-- TRAIN FLAGS]``

Runs ``mpirun -n N python -m distnet.train`` (the default MNIST job unless flags follow
``--``) for a few steps and a final evaluation, twice: "cold", with an empty decoded cache
(rank 0 decodes and writes it), and "warm", with the cache in place (every rank only maps
it).  Each rank measures itself and prints nothing; this script prints, per rank:

* peak RSS: the kernel's high-water mark (VmHWM), what ``/usr/bin/time -v`` calls maximum
  resident set size;
* PSS at the end, and the PSS of the decoded-cache mappings alone: pages shared by k
  processes count 1/k in each, so the sum over ranks is what the job really holds, and
  the data part of it is about one copy of the data set whatever N is;
* the size of the decoded data set on disk, for comparison.

Example: ``python benchmarks/memory.py --ranks 2 -- --dataset cifar10 --data-dir /work/cifar-jpeg
--model cifar-cnn``.  ``--ranks 1`` runs without mpirun.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rollup() -> dict:
    """Rss and Pss of this process, in kB."""
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty"):
                out[key] = int(rest.split()[0])
    return out


def _mapped_under(folder: str) -> dict:
    """Rss and Pss (kB) of this process's mappings of files under ``folder``."""
    rss = pss = 0
    current = False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                fields = line.split()
                current = len(fields) >= 6 and fields[5].startswith(folder)
            elif current and first == "Rss:":
                rss += int(line.split()[1])
            elif current and first == "Pss:":
                pss += int(line.split()[1])
    return {"Rss": rss, "Pss": pss}


def worker(out_dir: str, train_args: list[str]) -> int:
    """One rank: train, then measure while every rank is still alive."""
    peak_pss = [0]
    done = threading.Event()

    def sample():  # PSS has no high-water mark in the kernel: sample it
        while not done.wait(0.2):
            peak_pss[0] = max(peak_pss[0], _rollup().get("Pss", 0))

    threading.Thread(target=sample, daemon=True).start()
    from distnet.train import main
    rc = main(train_args)
    done.set()
    from distnet.data.cache import cache_root
    from distnet.distributed import get_communicator
    comm = get_communicator()
    if comm.size > 1:
        comm.barrier()  # everyone has finished allocating; nobody has exited
    roll = _rollup()
    result = {"rank": comm.rank, "rc": rc, "hwm_kb": _status_kb("VmHWM"), "rss_kb": roll.get("Rss", 0),
              "pss_kb": roll.get("Pss", 0), "peak_pss_kb": max(peak_pss[0], roll.get("Pss", 0)),
              "data": _mapped_under(str(cache_root()))}
    Path(out_dir, f"rank{comm.rank}.json").write_text(json.dumps(result))
    if comm.size > 1:
        comm.barrier()  # the others measured while this rank was still mapped
    return rc


def run(ranks: int, train_args: list[str], cache_home: str, timeout: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", out, "--", *train_args]
        if ranks > 1:
            mpirun = Path(sys.executable).with_name("mpirun")
            cmd = [str(mpirun) if mpirun.exists() else "mpirun", "-n", str(ranks), *cmd]
        env = dict(os.environ, XDG_CACHE_HOME=cache_home, PYTHONPATH=str(REPO))
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            sys.exit(f"memory.py: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return [json.loads(Path(out, f"rank{i}.json").read_text()) for i in range(ranks)]


def report(title: str, results: list[dict], data_mb: float) -> None:
    mb = lambda kb: kb / 1024  # noqa: E731
    print(f"{title}: rank  peak RSS  end RSS  end PSS  peak PSS  data RSS  data PSS   (MB)")
    for r in results:
        print(f"{'':{len(title) + 2}}{r['rank']:4d}  {mb(r['hwm_kb']):8.1f}  {mb(r['rss_kb']):7.1f}"
              f"  {mb(r['pss_kb']):7.1f}  {mb(r['peak_pss_kb']):8.1f}  {mb(r['data']['Rss']):8.1f}"
              f"  {mb(r['data']['Pss']):8.1f}")
    tot = lambda key: sum(r[key] for r in results) / 1024  # noqa: E731
    print(f"{'':{len(title) + 2}} sum  {tot('hwm_kb'):8.1f}  {tot('rss_kb'):7.1f}  {tot('pss_kb'):7.1f}"
          f"  {tot('peak_pss_kb'):8.1f}  {sum(r['data']['Rss'] for r in results) / 1024:8.1f}"
          f"  {sum(r['data']['Pss'] for r in results) / 1024:8.1f}"
          f"   (decoded data on disk: {data_mb:.1f} MB)")


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    if own[:1] == ["--worker"]:
        sys.exit(worker(own[1], train_args))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=50, help="optimizer steps (then the final evaluation)")
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args(own)
    train_args = ["--max-steps", str(args.steps), "--no-progress", *train_args]
    home = tempfile.mkdtemp(prefix="distnet-memory-")
    try:
        cold = run(args.ranks, train_args, home, args.timeout)
        decoded = Path(home) / "distnet" / "decoded"
        data_mb = sum(f.stat().st_size for f in decoded.rglob("*.npy")) / 2**20
        warm = run(args.ranks, train_args, home, args.timeout)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"distnet.train {' '.join(train_args)} on {args.ranks} rank(s)")
    report("cold cache", cold, data_mb)
    report("warm cache", warm, data_mb)


if __name__ == "__main__":
    main()
