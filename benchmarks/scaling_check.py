"""Check the scaling model against the docker-compose cluster: measured vs predicted step time.

    python benchmarks/scaling_check.py --run          # 1, 2, 3 nodes x bridge, 1gbit, 100mbit
    python benchmarks/scaling_check.py                # the table again, from the saved runs

``--run`` trains cnn2 (global batch 128, MNIST) on the compose cluster of this checkout
(docker-compose.yml + launch/docker-compose.slow.yml: tc on each node's egress; project
``distnet-scaling``; ``down -v`` after each run so that none resumes the previous one), and
keeps each run's train lines from metrics.jsonl in benchmarks/results/scaling_check_runs.json.
The measured step time is global batch / images_per_sec (distnet's training time per window:
evaluation and checkpoints excluded) as the median of the log windows after the first
(warm-up); the spread is the min-max of those windows.

The prediction (distnet/scaling.py) takes compute per step from benchmarks/results/
calibration.json (``calibrate_links.py --compute``: one process, the bench step), the link's
alpha/beta/gamma from the same file's 2-container fit, and the CPU sharing of this machine:
every container shares the host's cores, so with more ranks than cores each rank's compute is
stretched by ranks/cores (3 containers on 2 cores: 1.5x). A miss (> 20%) is marked.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from distnet import scaling  # noqa: E402

RUNS = os.path.join(HERE, "results", "scaling_check_runs.json")
RATES = {"bridge": "", "1gbit": "1gbit", "100mbit": "100mbit"}


def compose(args, env, *cmd, check=True, capture=False):
    files = ["-f", os.path.join(args.compose_dir, "docker-compose.yml"),
             "-f", os.path.join(args.compose_dir, "launch", "docker-compose.slow.yml")]
    full = ["docker-compose", "-p", args.project, *files, *cmd]
    return subprocess.run(full, env=env, check=check, cwd=args.compose_dir, text=True,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def one_run(args, link: str, nodes: int) -> dict:
    train = (f"--model {args.model} --batch-size {args.batch_size} --max-steps {args.steps} "
             f"--log-every {args.log_every} --eval-every 0 --checkpoint-every 0 {args.extra}")
    env = dict(os.environ, DISTNET_WORKERS=str(nodes - 1), DISTNET_PROCS_PER_NODE="1",
               DISTNET_LINK_RATE=RATES[link], DISTNET_LINK_DELAY="", TRAIN_ARGS=train,
               DISTNET_IMAGE=args.image)
    compose(args, env, "down", "-v", check=False, capture=True)
    compute_now = container_compute(args)
    t0 = time.time()
    up = compose(args, env, "up", "--no-build", "--exit-code-from", "coordinator", "--abort-on-container-exit",
                 check=False, capture=True)
    wall = time.time() - t0
    cid = compose(args, env, "ps", "-q", "coordinator", capture=True, check=False).stdout.strip()
    metrics = ""
    if cid:
        got = subprocess.run(["docker", "cp", f"{cid}:/data/metrics.jsonl", "-"], stdout=subprocess.PIPE)
        if got.returncode == 0:  # a tar stream of one file
            import io
            import tarfile
            with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
                member = tar.getmembers()[0]
                metrics = tar.extractfile(member).read().decode()
    compose(args, env, "down", "-v", check=False, capture=True)
    lines = [json.loads(x) for x in metrics.splitlines() if x.strip()]
    train_lines = [x for x in lines if x.get("event") == "train"]
    return {"link": link, "nodes": nodes, "rc": up.returncode, "wall_s": wall, "train_args": train,
            "compute_now": compute_now, "load_before": os.getloadavg()[0],
            "train": train_lines, "log_tail": up.stdout[-2000:] if up.returncode else "",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def container_compute(args) -> dict | None:
    """The bench step's time at the per-rank batches of this grid, measured in one container of
    the same image right before the run, so that it sees the machine's load of the moment."""
    batches = sorted({-(-args.batch_size // int(n)) for n in args.nodes.split(",")} | {args.batch_size})
    cmd = ["docker", "run", "--rm", "--label", "project=distnet-scaling", "-e", "OPENBLAS_NUM_THREADS=1",
           "-v", f"{ROOT}:/repo:ro", "--entrypoint", "/opt/venv/bin/python", args.image,
           "/repo/benchmarks/calibrate_links.py", "--compute", args.model, "--batch-sizes",
           ",".join(map(str, batches)), "--seconds", "1", "--out", "/tmp/compute.json", "--print-json"]
    got = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if got.returncode != 0:
        return None
    return json.loads(got.stdout.strip().splitlines()[-1])


def measured_step(run: dict, batch: int):
    rates = [x["images_per_sec"] for x in run["train"] if x.get("images_per_sec")]
    rates = rates[1:] if len(rates) > 2 else rates  # the first window holds the warm-up
    if not rates:
        return None
    steps = sorted(batch / r for r in rates)
    return steps[len(steps) // 2], steps[0], steps[-1]


def _predict(run, args, comms, compute, link, cores):
    return scaling.predict(scaling.Setting(run["nodes"], 1, args.batch_size, shared_cores=cores),
                           comms, compute, link)


def table(args) -> str:
    with open(RUNS) as f:
        runs = json.load(f)["runs"]
    doc = scaling.load_calibration(args.calibration)
    compute = scaling.compute_from(doc, args.model)
    comms = scaling.model_comms(args.model)
    cores = args.cores or os.cpu_count()
    out = [f"scaling check: {args.model}, global batch {args.batch_size}, 1 rank per container, compose "
           f"cluster on this {cores}-core machine (the containers share its cores), tc tbf links",
           f"pred A: compute from calibration.json ({compute.intercept * 1e3:.2f} ms + "
           f"{compute.per_sample * 1e3:.3f} ms/sample); pred B: compute measured in the image just "
           f"before the run; pred C: A's compute stretched by measured/predicted of the same link's "
           f"1-node run; all: links from the 2-container fits, compute x max(1, ranks/{cores})", "",
           f"{'link':>8s} {'nodes':>5s} {'measured ms (min-max)':>23s} {'pred A':>7s} {'err A':>6s} "
           f"{'pred B = compute + comm':>24s} {'err B':>6s} {'img/s meas':>10s} {'img/s B':>8s} {'pred C':>7s} {'err C':>6s} {'load':>5s}"]
    one_node = {r["link"]: measured_step(r, args.batch_size) for r in runs
                if r["nodes"] == 1 and r["rc"] == 0 and measured_step(r, args.batch_size)}
    for run in runs:
        got = measured_step(run, args.batch_size)
        if run["rc"] != 0 or got is None:
            out.append(f"{run['link']:>8s} {run['nodes']:5d}  run failed (rc {run['rc']})")
            continue
        med, lo, hi = got
        link = scaling.link_from(doc, run["link"])
        pa = _predict(run, args, comms, compute, link, cores)
        now = run.get("compute_now")
        if now:
            a, b = scaling.fit_line([x[0] for x in now["samples"]], [x[1] for x in now["samples"]])
            pb = _predict(run, args, comms, scaling.Compute(max(a, 0.0), b), link, cores)
        else:
            pb = None
        ea = (pa["step_s"] - med) / med
        cells = (f"{run['link']:>8s} {run['nodes']:5d} {med * 1e3:8.1f} ({lo * 1e3:5.1f}-{hi * 1e3:6.1f}) "
                 f"{pa['step_s'] * 1e3:7.1f} {ea * 100:+5.0f}%")
        if pb:
            eb = (pb["step_s"] - med) / med
            cells += (f" {pb['step_s'] * 1e3:7.1f} = {pb['compute_s'] * 1e3:5.1f} + {pb['comm_s'] * 1e3:6.1f} "
                      f"{eb * 100:+5.0f}% {args.batch_size / med:10.0f} {pb['images_per_s']:8.0f}")
            miss = abs(eb) > 0.2
        else:
            cells += f" {'(no compute measured)':>24s} {'':6s} {args.batch_size / med:10.0f} {'':8s}"
            miss = abs(ea) > 0.2
        # pred C: compute stretched by what the load did to this link's 1-node run (that row is its
        # calibration, so it matches by construction)
        base = one_node.get(run["link"])
        if base:
            stretch = base[0] / pa["compute_s"] if run["nodes"] == 1 else \
                base[0] / _predict({"nodes": 1}, args, comms, compute, link, cores)["compute_s"]
            pc = pa["compute_s"] * stretch + pa["comm_s"]
            cells += f" {pc * 1e3:7.1f} {(pc - med) / med * 100:+5.0f}%"
        else:
            cells += f" {'-':>7s} {'':6s}"
        cells += f" {run.get('load_before', float('nan')):5.1f}" + ("  MISS" if miss else "")
        out.append(cells)
    out.append("err = (predicted - measured) / measured; MISS: pred B (or A without B) more than 20% off (C is shown, not judged: its 1-node row is its own calibration); "
               "load: the host's 1-minute load average before the run")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="store_true", help="run the compose grid first (minutes)")
    p.add_argument("--links", default="bridge,1gbit,100mbit")
    p.add_argument("--nodes", default="1,2,3")
    p.add_argument("--model", default="cnn2")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--extra", default="", help="more distnet.train flags (e.g. --overlap)")
    p.add_argument("--image", default=os.environ.get("DISTNET_IMAGE", "distnet-node:latest"))
    p.add_argument("--project", default="distnet-scaling")
    p.add_argument("--compose-dir", default=ROOT, help="checkout whose compose files to use (default: this one)")
    p.add_argument("--calibration", default=scaling.DEFAULT_CALIBRATION)
    p.add_argument("--cores", type=int, help="cores the containers share (default: this machine's)")
    args = p.parse_args(argv)
    if args.run:
        runs = []
        if os.path.exists(RUNS):  # a rerun of some cells replaces those, keeps the others
            with open(RUNS) as f:
                runs = json.load(f)["runs"]
        for link in args.links.split(","):
            for nodes in [int(n) for n in args.nodes.split(",")]:
                print(f"running {link}, {nodes} node(s) ...", file=sys.stderr, flush=True)
                run = one_run(args, link, nodes)
                if run["rc"] != 0 and not run["train"]:  # e.g. Hydra's "Launch proxy failed" under load
                    print(f"  rc {run['rc']} before any step; once more", file=sys.stderr, flush=True)
                    run = one_run(args, link, nodes)
                runs = [r for r in runs if (r["link"], r["nodes"]) != (link, nodes)] + [run]
                runs.sort(key=lambda r: (list(RATES).index(r["link"]), r["nodes"]))
                got = measured_step(run, args.batch_size)
                print(f"  rc {run['rc']}, {run['wall_s']:.0f} s, step "
                      f"{got[0] * 1e3 if got else float('nan'):.1f} ms", file=sys.stderr, flush=True)
                os.makedirs(os.path.dirname(RUNS), exist_ok=True)
                with open(RUNS + ".tmp", "w") as f:
                    json.dump({"runs": runs, "args": {k: v for k, v in vars(args).items() if k != "run"}}, f, indent=1)
                os.replace(RUNS + ".tmp", RUNS)
    print(table(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
