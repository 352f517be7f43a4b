"""Training-throughput benchmark: ``python -m distnet.bench``.

Measures images per second of full training steps (forward, cross-entropy loss, backward,
and an SGD-style update of the flat parameter buffer) of the named models on random data,
at several batch sizes, with one BLAS thread and with all of them.

BLAS libraries read their thread count when they are loaded, so each thread setting runs in
its own subprocess with ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
set; the parent collects the results and prints one table.  The figure reported is the
median over several timed blocks (best and worst are kept in the JSON); on a machine shared
with other work, compare medians of repeated runs rather than single figures.

Examples::

    python -m distnet.bench                                  # everything, a few minutes
    python -m distnet.bench --models lenet5 --batch-sizes 64 --threads 1 --seconds 5
    python -m distnet.bench --json results.json
    mpirun -n 2 python -m distnet.bench --timeline     # where a step's time goes, per rank
    python -m distnet.bench --ceiling                  # 2 ranks against 2 single jobs together

``--timeline`` and ``--ceiling`` are distnet/bench_sync.py's (see there).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from .cli._common import BLAS_THREAD_VARS, one_blas_thread

# one BLAS thread unless told otherwise, before NumPy loads: the --timeline/--ceiling jobs
# train in this process (the throughput table's workers get their thread counts explicitly)
one_blas_thread()

import numpy as np  # noqa: E402

INPUT_SHAPES = {"lenet5": (1, 28, 28), "cnn2": (1, 28, 28), "mlp": (3, 32, 32), "cifar-cnn": (3, 32, 32),
                "cifar-resnet": (3, 32, 32), "cifar-fast": (3, 32, 32)}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> dict:
    """What BLAS NumPy was built with and, when threadpoolctl is importable, what is loaded
    (OpenBLAS's chosen kernel, e.g. Haswell/Zen/SkylakeX, and its thread count)."""
    info: dict = {}
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info["build"] = {k: blas[k] for k in ("name", "version", "openblas configuration") if k in blas}
    except Exception:  # older NumPy: show_config() only prints
        pass
    try:
        from threadpoolctl import threadpool_info
        info["loaded"] = [
            {k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for d in threadpool_info() if d.get("user_api") == "blas"
        ]
    except ImportError:
        pass
    return info


def machine_facts() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "platform": platform.platform(),
        "blas": blas_info(),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ},
    }


def make_step(model_name: str, batch_size: int, dtype=np.float32, seed: int = 0, lr: float = 0.01):
    """A closure running one training step of ``model_name`` on fixed random data."""
    from distnet import nn

    shape = INPUT_SHAPES[model_name]
    return model_step(nn.build_model(model_name, shape, 10, seed=seed, dtype=dtype), shape, batch_size,
                      seed=seed, lr=lr)


def model_step(model, input_shape, batch_size: int, seed: int = 0, lr: float = 0.01):
    """A closure running one training step of ``model`` (forward, cross-entropy, backward,
    a plain SGD update of the flat buffer) on fixed random data of ``input_shape``."""
    from distnet import nn

    model.input_grad = False
    crit = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *input_shape)).astype(model.flat_params.dtype)
    labels = rng.integers(0, 10, batch_size)
    lr = model.flat_params.dtype.type(lr)

    def step():
        model.zero_grad()
        crit(model(x), labels)
        model.backward(crit.backward())
        model.flat_params -= lr * model.flat_grads

    return step


def measure(step, batch_size: int, seconds: float, blocks: int = 5, min_steps: int = 2) -> dict:
    """Run ``step`` for about ``seconds`` after a warm-up, in ``blocks`` timed blocks.

    Returns images/s of each block's median, best and worst, and the steps timed.
    """
    t0 = time.perf_counter()
    step()  # warm-up: first-touch allocations, BLAS thread start-up
    step()
    per_step = (time.perf_counter() - t0) / 2
    steps_per_block = max(min_steps, int(seconds / blocks / max(per_step, 1e-6)))
    rates = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(steps_per_block):
            step()
        rates.append(batch_size * steps_per_block / (time.perf_counter() - t0))
    rates.sort()
    return {"images_per_s": rates[len(rates) // 2], "best": rates[-1], "worst": rates[0],
            "steps": steps_per_block * blocks, "blocks": blocks}


def worker(args) -> None:
    """Measure every (model, batch size) in this process; print one JSON object."""
    dtype = np.dtype(args.dtype)
    results = []
    for model in args.models:
        for bs in args.batch_sizes:
            r = measure(make_step(model, bs, dtype), bs, args.seconds)
            results.append({"model": model, "batch_size": bs, **r})
            print(f"  {model:10s} batch {bs:4d}: {r['images_per_s']:9.0f} img/s", file=sys.stderr, flush=True)
    print(json.dumps({"facts": machine_facts(), "results": results}))


def thread_env(setting: str) -> dict:
    env = dict(os.environ)
    n = str(cpu_count()) if setting == "all" else setting
    for var in BLAS_THREAD_VARS:
        env[var] = n
    # let the worker import this very copy of distnet, installed or not
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def run_setting(setting: str, args) -> dict:
    cmd = [sys.executable, "-m", "distnet.bench", "--worker",
           "--models", ",".join(args.models), "--batch-sizes", ",".join(map(str, args.batch_sizes)),
           "--seconds", str(args.seconds), "--dtype", args.dtype]
    print(f"threads={setting}:", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=thread_env(setting), stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker for threads={setting} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_report(facts: dict, table: dict, settings, args) -> str:
    lines = [
        "distnet training throughput (forward + cross-entropy + backward + SGD update of the "
        "flat buffer, random data, input_grad=False)",
        f"  python {facts['python']}, numpy {facts['numpy']}, {facts['cpu']}, {facts['cores']} cores",
    ]
    build = facts["blas"].get("build")
    if build:
        lines.append("  BLAS (build): " + ", ".join(str(v) for v in build.values()))
    for lib in facts["blas"].get("loaded", []):
        lines.append(f"  BLAS (loaded): {lib['internal_api']} {lib['version']}, "
                     f"kernel {lib['architecture']}")
    if facts["env"]:
        lines.append("  environment: " + ", ".join(f"{k}={v}" for k, v in facts["env"].items()))
    lines.append(f"  dtype {args.dtype}, ~{args.seconds:g} s per measurement, median of 5 blocks, images/s")
    lines.append("")
    head = f"{'model':10s} {'batch':>5s}" + "".join(f" {'threads=' + s:>13s}" for s in settings)
    if len(settings) > 1:
        head += f" {'speedup':>8s}"
    lines += [head, "-" * len(head)]
    for (model, bs), row in table.items():
        line = f"{model:10s} {bs:5d}" + "".join(f" {row[s]['images_per_s']:13.0f}" for s in settings)
        if len(settings) > 1:
            line += f" {row[settings[-1]]['images_per_s'] / row[settings[0]]['images_per_s']:7.2f}x"
        lines.append(line)
    if len(settings) > 1:
        lines.append(f"(speedup: threads={settings[-1]} over threads={settings[0]})")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m distnet.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="--timeline (per-rank step timeline, under mpirun) and --ceiling (mpirun -n N "
                                       "against N single jobs): see python -m distnet.bench --timeline --help")
    p.add_argument("--models", default=",".join(INPUT_SHAPES),
                   help="comma-separated model names (default: %(default)s)")
    p.add_argument("--batch-sizes", default="32,64,128,256", help="comma-separated (default: %(default)s)")
    p.add_argument("--threads", default="1,all",
                   help="comma-separated BLAS thread counts, 'all' = every core (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="timed seconds per measurement, after warm-up (default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH ('-': stdout)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in INPUT_SHAPES]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(INPUT_SHAPES)}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    args.threads = [t.strip() for t in args.threads.split(",") if t.strip()]
    for t in args.threads:
        if t != "all" and not (t.isdigit() and int(t) > 0):
            p.error(f"--threads entries must be positive integers or 'all', got {t!r}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from .process_tuning import keep_freed_memory
    keep_freed_memory()  # as distnet.train does, so the figures are what training sees
    if "--timeline" in argv or "--ceiling" in argv:  # the per-rank step timeline, bench_sync.py
        from .bench_sync import main as sync_main
        return sync_main(argv)
    if "--predict" in argv:  # the scaling model, scaling.py
        from .scaling import main as scaling_main
        return scaling_main(argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    runs = {s: run_setting(s, args) for s in args.threads}
    table: dict = {}
    flat = []
    for s, run in runs.items():
        for r in run["results"]:
            table.setdefault((r["model"], r["batch_size"]), {})[s] = r
            flat.append({"threads": s, **r})
    facts = runs[args.threads[0]]["facts"]
    report = format_report(facts, table, args.threads, args)
    document = {"facts": facts, "dtype": args.dtype, "seconds": args.seconds,
                "blas_per_threads_setting": {s: run["facts"]["blas"].get("loaded") for s, run in runs.items()},
                "results": flat}
    if args.json == "-":
        print(json.dumps(document, indent=1))
    else:
        print(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(document, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
