"""distnet against PyTorch on the CPU, same model, same batch, one thread each.

Run it with a Python that has torch (and distnet) installed, e.g.::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install numpy torch==2.13.0 threadpoolctl
    /tmp/torchvenv/bin/pip install -e . --no-deps
    /tmp/torchvenv/bin/python benchmarks/torch_compare.py                  # lenet5, batch 64
    /tmp/torchvenv/bin/python benchmarks/torch_compare.py \\
        --models lenet5,cnn2,cifar-cnn-nodrop --batch-sizes 32,64,128,256 --repeats 7 --seconds 2

Both frameworks train the same architecture (the PyTorch model is translated layer by layer
from ``distnet.nn.build_model``), with cross-entropy loss and a plain SGD step, on random
data whose input needs no gradient.  ``cifar-cnn-nodrop`` is cifar-cnn with its Dropout
layers left out (dropout's mask drawing is not what this compares).  Each side runs in its
own long-lived subprocess, pinned to one thread (``torch.set_num_threads(1)``;
``OPENBLAS_NUM_THREADS=1`` etc. for NumPy) so the settings cannot interfere; for every
(model, batch size) the parent asks them for a measurement in turn, alternating who goes
first, so slow phases of a shared machine hit both alike.  Reported per configuration: the
median images/s of each side and the median, min and max of the per-round ratios, both
of wall-clock rates and of rates per CPU second of each worker (``time.process_time``):
on a machine shared with other jobs, time slicing changes the wall-clock rates by 2x from
round to round, the CPU-time rates much less (caches are still shared).

The physical limit: each configuration also prints the FLOPs of one training step counted
from the layer shapes (``step_flops``: conv and linear layers only; 2 x MACs forward, 2 x
MACs for the weight gradient, 2 x MACs for the input gradient except the first layer's,
which nothing needs), and the fraction of the machine's single-core float32 GEMM rate it
reaches.  That rate is measured in the same run, by the NumPy worker, as a 2048 x 2048
float32 ``np.matmul`` with one thread, once before every configuration; the best one is the
peak.  Both the step rates and the GEMM rate are taken per CPU second here, so that time
slicing on a shared machine cancels out.

``--unset-openblas-tuning`` removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the NumPy
worker's environment (some environments set them, forcing a slower kernel); the printout
says so when it is used.  distnet itself never imports torch; only this script does.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

from distnet.cli._common import BLAS_THREAD_VARS as THREAD_VARS  # does not load NumPy

TUNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
NO_DROPOUT = "-nodrop"


# ----------------------------------------------------------------------------- models

def input_shape(model_name):
    from distnet.bench import INPUT_SHAPES
    return INPUT_SHAPES[model_name.removesuffix(NO_DROPOUT)]


def model_names(text, program):
    """The comma-separated model names of ``--models``; exits with one line on an unknown one."""
    from distnet.bench import INPUT_SHAPES
    names = [m for m in text.split(",") if m]
    for name in names:
        if name.removesuffix(NO_DROPOUT) not in INPUT_SHAPES:
            raise SystemExit(f"{program}: unknown model {name!r}; choose from {', '.join(INPUT_SHAPES)} "
                             f"(each also as NAME{NO_DROPOUT})")
        try:
            list(layer_shapes(name))
        except TypeError as e:
            raise SystemExit(f"{program}: model {name!r}: {e}")
    return names


def distnet_model(model_name, dtype=None, seed=0):
    """distnet's model; ``NAME-nodrop`` is NAME with its Dropout layers left out."""
    import numpy as np
    from distnet import nn
    base = model_name.removesuffix(NO_DROPOUT)
    model = nn.build_model(base, input_shape(model_name), 10, seed=seed, dtype=dtype or np.float32)
    if model_name.endswith(NO_DROPOUT):
        model = nn.Sequential(*[layer for layer in model.layers if not isinstance(layer, nn.Dropout)])
    return model


def layer_shapes(model_name):
    """Each layer of the model with its per-image input and output shapes, (C, H, W) for
    images and (features,) after Flatten, walked from ``input_shape``."""
    from distnet import nn
    from distnet.nn.kernels import output_size
    shape = tuple(input_shape(model_name))
    for layer in distnet_model(model_name).layers:
        before = shape
        if isinstance(layer, nn.Conv2d):
            (kh, kw), s, p = layer.kernel_size, layer.stride, layer.padding
            shape = (layer.out_channels, output_size(shape[1], kh, s, p), output_size(shape[2], kw, s, p))
        elif isinstance(layer, nn.MaxPool2d):
            (kh, kw), s = layer.kernel_size, layer.stride
            shape = (shape[0], output_size(shape[1], kh, s), output_size(shape[2], kw, s))
        elif isinstance(layer, nn.Flatten):
            shape = (math.prod(shape),)
        elif isinstance(layer, nn.Linear):
            shape = (layer.out_features,)
        elif not isinstance(layer, (nn.ReLU, nn.Dropout)):
            raise TypeError(f"no shape rule (and no PyTorch translation) for {type(layer).__name__}")
        yield layer, before, shape


def layer_macs(layer, out_shape):
    """Multiply-adds of one image through a conv or linear layer (0 for any other)."""
    from distnet import nn
    if isinstance(layer, nn.Conv2d):
        (kh, kw) = layer.kernel_size
        return layer.out_channels * layer.in_channels * kh * kw * out_shape[1] * out_shape[2]
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    return 0


def step_flops(model_name, batch_size):
    """FLOPs of one training step of the conv and linear layers (see the module docstring)."""
    flops = 0
    first = True
    for layer, _, out_shape in layer_shapes(model_name):
        macs = layer_macs(layer, out_shape)
        if macs:
            flops += 2 * macs * (2 if first else 3)  # forward, weight grad, input grad
            first = False
    return flops * batch_size


# ----------------------------------------------------------------------------- workers

def distnet_step(model_name, batch_size, seed=0, lr=0.01):
    """distnet.bench's training step, for any name this script knows."""
    import numpy as np
    from distnet.bench import model_step
    return model_step(distnet_model(model_name, np.float32, seed), input_shape(model_name), batch_size,
                      seed=seed, lr=lr)


def torch_model(model_name):
    """The distnet model's architecture, rebuilt layer by layer in PyTorch."""
    import torch.nn as tnn
    from distnet import nn

    layers = []
    for layer in distnet_model(model_name).layers:
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

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = torch_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    crit = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch_size, *input_shape(model_name))
    labels = torch.randint(0, 10, (batch_size,))

    def step():
        opt.zero_grad(set_to_none=False)
        crit(model(x), labels).backward()
        opt.step()

    return step


def sgemm_rate(n=2048, repeats=3):
    """FLOP/s of the best of ``repeats`` float32 (n x n) @ (n x n) np.matmul calls."""
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        np.matmul(a, b, out=out)
        best = min(best, time.process_time() - t0)
    return 2 * n ** 3 / best


def facts(side):
    out = {"pid": os.getpid()}
    import numpy as np
    out["numpy"] = np.__version__
    if side == "torch":
        import torch
        torch.set_num_threads(1)
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


def worker(side):
    """Answer one JSON line per request line on stdin:

    ``build MODEL BATCH`` builds and warms up that step (dropping the previous one),
    ``measure SECONDS`` times it, ``sgemm`` measures the GEMM rate.  The distnet side keeps
    freed memory for reuse, as ``distnet.train`` does (``distnet.process_tuning``); the torch
    side runs as PyTorch users run it."""
    if side == "distnet":
        from distnet.process_tuning import keep_freed_memory
        keep_freed_memory()
    print(json.dumps(facts(side)), flush=True)
    step = batch_size = None
    for line in sys.stdin:
        words = line.split()
        if words[0] == "build":
            step = None  # free the previous model's memory first
            batch_size = int(words[2])
            step = (torch_step if side == "torch" else distnet_step)(words[1], batch_size)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 1.0:  # warm-up
                step()
            print(json.dumps({"ok": True}), flush=True)
        elif words[0] == "sgemm":
            print(json.dumps({"flops": sgemm_rate()}), flush=True)
        else:
            seconds = float(words[1])
            steps, t0, c0 = 0, time.perf_counter(), time.process_time()
            while True:
                step()
                steps += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    break
            cpu = time.process_time() - c0
            print(json.dumps({"images_per_s": steps * batch_size / elapsed,
                              "images_per_cpu_s": steps * batch_size / cpu, "steps": steps}), flush=True)


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
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", side],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    return proc, info


def ask(proc, request):
    proc.stdin.write(request + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"torch_compare: a worker died answering {request!r}")
    return json.loads(line)


def compare(procs, model, batch_size, args):
    """Interleaved rounds for one configuration: {"distnet": [...], "torch": [...]} img/s."""
    for side in procs:
        ask(procs[side], f"build {model} {batch_size}")
    rates = {"distnet": [], "torch": []}
    cpu_rates = {"distnet": [], "torch": []}
    for r in range(args.repeats):
        order = ("distnet", "torch") if r % 2 == 0 else ("torch", "distnet")
        for side in order:
            answer = ask(procs[side], f"measure {args.seconds}")
            rates[side].append(answer["images_per_s"])
            cpu_rates[side].append(answer["images_per_cpu_s"])
        print(f"{model} batch {batch_size} round {r + 1}/{args.repeats}: distnet {rates['distnet'][-1]:7.0f}  "
              f"torch {rates['torch'][-1]:7.0f} img/s", file=sys.stderr, flush=True)
    return rates, cpu_rates


def describe(side, info):
    pools = info["threadpools"]
    pools = pools if isinstance(pools, str) else ", ".join(
        f"{d['internal_api']} {d['version']} {d['architecture'] or ''} threads={d['num_threads']}".replace("  ", " ")
        for d in pools)
    extra = (f"torch {info['torch']} ({info['torch_cpu_capability']}, threads={info['torch_threads']}), "
             if side == "torch" else "")
    return f"  {side:8s}: {extra}numpy {info['numpy']}; {pools}; env {info['env']}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", "--model", default="lenet5",
                   help="comma-separated: lenet5, cnn2, cifar-cnn, cifar-cnn-nodrop, ... (default: %(default)s)")
    p.add_argument("--batch-sizes", "--batch-size", default="64", help="comma-separated (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="measurement rounds (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement (default: %(default)s)")
    p.add_argument("--unset-openblas-tuning", action="store_true",
                   help="remove OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for the NumPy worker")
    p.add_argument("--json", metavar="PATH", help="write the raw figures as JSON")
    p.add_argument("--worker", choices=("distnet", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    models = model_names(args.models, "torch_compare")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]

    procs, infos = {}, {}
    for side in ("distnet", "torch"):
        procs[side], infos[side] = start(side, args)
    results, peaks = [], []
    try:
        for model in models:
            for bs in batch_sizes:
                peaks.append(ask(procs["distnet"], "sgemm")["flops"])
                rates, cpu_rates = compare(procs, model, bs, args)
                results.append({"model": model, "batch_size": bs, "flops_per_step": step_flops(model, bs),
                                "rates": rates, "cpu_rates": cpu_rates})
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()

    peak = max(peaks)
    print(f"distnet against PyTorch, 1 thread each, {args.repeats} interleaved rounds of {args.seconds:g} s "
          "per configuration (training step: forward, cross-entropy, backward, SGD update)")
    for side in ("distnet", "torch"):
        print(describe(side, infos[side]))
    if args.unset_openblas_tuning:
        print("  note: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE were unset for the distnet worker only")
    print(f"  peak: single-core float32 GEMM (2048^3 np.matmul, 1 thread) {peak / 1e9:.1f} GFLOP/s per CPU second "
          f"(best of {len(peaks)} measurements, lowest {min(peaks) / 1e9:.1f})")
    print()
    head = (f"{'model':18s} {'batch':>5s} {'distnet':>8s} {'torch':>8s} {'ratio':>6s} {'(min-max)':>11s} "
            f"{'cpu-ratio':>9s} {'(min-max)':>11s} {'GFLOP/step':>10s} {'distnet %peak':>13s} {'torch %peak':>11s}")
    print(head)
    print("-" * len(head))
    for r in results:
        d, t = r["rates"]["distnet"], r["rates"]["torch"]
        ratios = sorted(a / b for a, b in zip(d, t))
        cpu = sorted(a / b for a, b in zip(r["cpu_rates"]["distnet"], r["cpu_rates"]["torch"]))
        md, mt = statistics.median(d), statistics.median(t)
        f = r["flops_per_step"]
        r["summary"] = {"distnet_median": md, "torch_median": mt, "ratio_median": statistics.median(ratios),
                        "ratio_min": ratios[0], "ratio_max": ratios[-1],
                        "cpu_ratio_median": statistics.median(cpu), "cpu_ratio_min": cpu[0], "cpu_ratio_max": cpu[-1],
                        "distnet_peak_fraction": f * statistics.median(r["cpu_rates"]["distnet"]) / r["batch_size"] / peak,
                        "torch_peak_fraction": f * statistics.median(r["cpu_rates"]["torch"]) / r["batch_size"] / peak}
        s = r["summary"]
        print(f"{r['model']:18s} {r['batch_size']:5d} {md:8.0f} {mt:8.0f} {s['ratio_median']:5.2f}x "
              f"{ratios[0]:5.2f}-{ratios[-1]:4.2f} {s['cpu_ratio_median']:8.2f}x {cpu[0]:5.2f}-{cpu[-1]:4.2f} "
              f"{f / 1e9:10.3f} {100 * s['distnet_peak_fraction']:12.1f}% {100 * s['torch_peak_fraction']:10.1f}%")
    print("(img/s: wall-clock medians; ratio: median of the per-round distnet/torch ratios of wall-clock rates, "
          "with their min-max;\n cpu-ratio: the same from images per CPU second of each worker, which time "
          "slicing by other jobs does not disturb;\n %peak: step FLOPs x steps per CPU second over the GEMM peak, also "
          "per CPU second)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "info": infos, "peak_flops": peaks, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
