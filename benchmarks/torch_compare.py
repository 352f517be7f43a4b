"""distnet against PyTorch on the CPU, same model, same batch, one thread each.

Run it with a Python that has torch (and distnet) installed, e.g.::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install numpy torch==2.13.0 threadpoolctl
    /tmp/torchvenv/bin/pip install -e . --no-deps
    /tmp/torchvenv/bin/python benchmarks/torch_compare.py                  # lenet5, batch 64
    /tmp/torchvenv/bin/python benchmarks/torch_compare.py --batch-size 128 --repeats 9

Both frameworks train the same architecture (the PyTorch model is translated layer by layer
from ``distnet.nn.build_model``), with cross-entropy loss and a plain SGD step, on random
data whose input needs no gradient.  Each side runs in its own long-lived subprocess, pinned
to one thread (``torch.set_num_threads(1)``; ``OPENBLAS_NUM_THREADS=1`` etc. for NumPy) so
the settings cannot interfere; the parent asks them for a measurement in turn, so slow
phases of a shared machine hit both alike.  Reported: the median images/s of each side and
the ratio of the medians, plus the median of the per-round ratios.

``--unset-openblas-tuning`` removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the NumPy
worker's environment (some environments set them, forcing a slower kernel); the printout
says so when it is used.  distnet itself never imports torch; only this script does.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ----------------------------------------------------------------------------- workers

def distnet_step(model_name, batch_size, seed=0, lr=0.01):
    import numpy as np
    from distnet.bench import make_step
    return make_step(model_name, batch_size, np.float32, seed, lr)


def torch_model(model_name):
    """The distnet model's architecture, rebuilt layer by layer in PyTorch."""
    import torch.nn as tnn
    from distnet import nn
    from distnet.bench import INPUT_SHAPES

    layers = []
    for layer in nn.build_model(model_name, INPUT_SHAPES[model_name], 10).layers:
        if isinstance(layer, nn.Conv2d):
            layers.append(tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                     stride=layer.stride, padding=layer.padding,
                                     bias=layer.bias is not None))
        elif isinstance(layer, nn.Linear):
            layers.append(tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None))
        elif isinstance(layer, nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(layer.kernel_size, layer.stride))
        elif isinstance(layer, nn.Flatten):
            layers.append(tnn.Flatten())
        elif isinstance(layer, nn.Dropout):
            layers.append(tnn.Dropout(layer.p))
        else:
            raise TypeError(f"no PyTorch translation for {layer!r}")
    return tnn.Sequential(*layers)


def torch_step(model_name, batch_size, seed=0, lr=0.01):
    import torch
    from distnet.bench import INPUT_SHAPES

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = torch_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    crit = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch_size, *INPUT_SHAPES[model_name])
    labels = torch.randint(0, 10, (batch_size,))

    def step():
        opt.zero_grad(set_to_none=False)
        crit(model(x), labels).backward()
        opt.step()

    return step


def facts(side):
    out = {"pid": os.getpid()}
    import numpy as np
    out["numpy"] = np.__version__
    if side == "torch":
        import torch
        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        from threadpoolctl import threadpool_info
        out["threadpools"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                              for d in threadpool_info()]
    except ImportError:
        out["threadpools"] = "threadpoolctl not installed"
    out["env"] = {k: os.environ.get(k) for k in THREAD_VARS + TUNING_VARS if k in os.environ}
    return out


def worker(side, model_name, batch_size):
    """Build, warm up, then answer 'measure SECONDS' lines with one JSON line each."""
    step = (torch_step if side == "torch" else distnet_step)(model_name, batch_size)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:  # warm-up
        step()
    print(json.dumps(facts(side)), flush=True)
    for line in sys.stdin:
        seconds = float(line.split()[1])
        steps, t0 = 0, time.perf_counter()
        while True:
            step()
            steps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        print(json.dumps({"images_per_s": steps * batch_size / elapsed, "steps": steps}), flush=True)


# ----------------------------------------------------------------------------- parent

def start(side, args):
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = "1"
    if side == "distnet" and args.unset_openblas_tuning:
        for var in TUNING_VARS:
            env.pop(var, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", side,
                             "--model", args.model, "--batch-size", str(args.batch_size)],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    return proc, info


def ask(proc, seconds):
    proc.stdin.write(f"measure {seconds}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())["images_per_s"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lenet5")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7, help="measurement rounds (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement (default: %(default)s)")
    p.add_argument("--unset-openblas-tuning", action="store_true",
                   help="remove OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for the NumPy worker")
    p.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    p.add_argument("--worker", choices=("distnet", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.model, args.batch_size)
        return 0

    procs, infos = {}, {}
    for side in ("distnet", "torch"):
        procs[side], infos[side] = start(side, args)
    rates = {"distnet": [], "torch": []}
    try:
        for r in range(args.repeats):
            order = ("distnet", "torch") if r % 2 == 0 else ("torch", "distnet")
            for side in order:
                rates[side].append(ask(procs[side], args.seconds))
            print(f"round {r + 1}/{args.repeats}: distnet {rates['distnet'][-1]:7.0f}  "
                  f"torch {rates['torch'][-1]:7.0f} img/s", file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()

    med = {s: statistics.median(v) for s, v in rates.items()}
    paired = statistics.median(d / t for d, t in zip(rates["distnet"], rates["torch"]))
    print(f"{args.model}, batch {args.batch_size}, 1 thread each, {args.repeats} interleaved rounds "
          f"of {args.seconds:g} s (training step: forward, cross-entropy, backward, SGD update)")
    for side in ("distnet", "torch"):
        i = infos[side]
        pools = i["threadpools"]
        pools = pools if isinstance(pools, str) else ", ".join(
            f"{d['internal_api']} {d['version']} {d['architecture'] or ''} threads={d['num_threads']}".replace("  ", " ")
            for d in pools)
        extra = f"torch {i['torch']} ({i['torch_cpu_capability']}, threads={i['torch_threads']}), " if side == "torch" else ""
        print(f"  {side:8s}: {extra}numpy {i['numpy']}; {pools}; env {i['env']}")
    if args.unset_openblas_tuning:
        print("  note: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE were unset for the distnet worker only")
    for side in ("distnet", "torch"):
        v = sorted(rates[side])
        print(f"  {side:8s}: median {med[side]:7.0f} img/s  (min {v[0]:.0f}, max {v[-1]:.0f})")
    print(f"  ratio distnet/torch: {med['distnet'] / med['torch']:.2f}x (medians), "
          f"{paired:.2f}x (median of per-round ratios)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "info": infos, "rates": rates}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
