"""distnet's conv layers against PyTorch's, one layer at a time: where a model's step goes.

``torch_compare.py`` times whole training steps; this times each Conv2d of a model on its
own, forward alone and forward + backward, at the shapes the model gives it, so that a
missed ratio can be traced to the layers that lose.  Run it with a Python that has torch::

    /tmp/torchvenv/bin/python benchmarks/conv_layers.py --models cnn2,cifar-cnn-nodrop

Both sides run in this one process, one thread each (``torch.set_num_threads(1)``,
``OPENBLAS_NUM_THREADS=1`` for NumPy, set before either is imported), and the four
measurements of a layer take turns in every round, so a slow phase of a shared machine
hits them alike.  distnet's input is an NCHW view of CHWN memory, as a layer inside a
distnet model receives it; torch's is contiguous NCHW.  The backward computes the input
gradient except for a model's first layer (its input is data), as in a training step.
Printed per layer: median milliseconds over the rounds, the forward + backward rate in
GFLOP/s (2 x MACs per pass), and torch's time over distnet's (above 1: distnet faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from distnet.cli._common import BLAS_THREAD_VARS  # does not load NumPy

if __name__ == "__main__":  # before NumPy loads its BLAS (not when a test imports this file)
    for _var in BLAS_THREAD_VARS:
        os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

from torch_compare import layer_macs, layer_shapes, model_names, sgemm_rate  # noqa: E402


def conv_cases(model_name):
    """(index, layer, input shape, output shape, needs input gradient) for each Conv2d."""
    from distnet import nn
    first = True
    for index, (layer, before, after) in enumerate(layer_shapes(model_name)):
        if isinstance(layer, nn.Conv2d):
            yield index, layer, before, after, not first
        if layer_macs(layer, after):
            first = False


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(cases, rounds):
    """Median milliseconds of each function in ``cases``, all of them called once per round,
    in turn, so that a slow phase of a shared machine hits them alike."""
    times = [[] for _ in cases]
    for _ in range(rounds):
        for fn, seen in zip(cases, times):
            seen.append(timed(fn))
    return [float(np.median(seen)) * 1e3 for seen in times]


def compare_layer(layer, in_shape, out_shape, input_grad, batch, rounds, rng):
    """Median ms of distnet F, distnet F+B, torch F, torch F+B for one conv layer."""
    import torch
    from distnet import nn

    (kh, kw) = layer.kernel_size
    ours = nn.Conv2d(layer.in_channels, layer.out_channels, (kh, kw), stride=layer.stride,
                     padding=layer.padding, bias=layer.bias is not None, rng=rng)
    ours.compute_input_grad = input_grad
    x = rng.standard_normal((batch,) + tuple(in_shape)).astype(np.float32)
    g = rng.standard_normal((batch,) + tuple(out_shape)).astype(np.float32)
    x_chwn = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    g_chwn = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    theirs = torch.nn.Conv2d(layer.in_channels, layer.out_channels, (kh, kw), stride=layer.stride,
                             padding=layer.padding, bias=layer.bias is not None)
    tx = torch.from_numpy(x).requires_grad_(input_grad)
    tg = torch.from_numpy(g)

    def our_forward():
        ours.forward(x_chwn)

    def our_step():
        ours.forward(x_chwn)
        ours.backward(g_chwn)

    def their_forward():
        with torch.no_grad():
            theirs(tx)

    def their_step():
        theirs(tx).backward(tg)

    cases = (our_forward, our_step, their_forward, their_step)
    for fn in cases:  # warm-up: scratch buffers, oneDNN's primitive cache
        fn()
        fn()
    return interleaved_medians(cases, rounds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="cnn2,cifar-cnn-nodrop", help="comma-separated (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds per layer (default: %(default)s)")
    args = p.parse_args(argv)
    models = model_names(args.models, "conv_layers")
    try:
        import torch
    except ImportError:
        raise SystemExit("conv_layers: needs PyTorch (pip install torch==2.13.0); distnet itself does not")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    peak = max(sgemm_rate() for _ in range(2))
    print(f"one thread each, batch {args.batch_size}, median of {args.rounds} interleaved rounds; "
          f"torch {torch.__version__}, numpy {np.__version__}; "
          f"GEMM peak (2048^3 np.matmul) {peak / 1e9:.1f} GFLOP/s")
    head = (f"{'model':18s} {'layer':>5s} {'conv':24s} {'distnet F':>9s} {'F+B':>7s} {'torch F':>8s} {'F+B':>7s} "
            f"{'distnet GF/s':>12s} {'torch GF/s':>10s} {'torch/distnet':>13s}")
    print(head)
    print("-" * len(head))
    for model in models:
        total = [0.0, 0.0]
        for index, layer, before, after, input_grad in conv_cases(model):
            ours_f, ours_fb, theirs_f, theirs_fb = compare_layer(layer, before, after, input_grad,
                                                                 args.batch_size, args.rounds, rng)
            flops = 2 * layer_macs(layer, after) * args.batch_size * (3 if input_grad else 2)
            total[0] += ours_fb
            total[1] += theirs_fb
            shape = f"{before[0]}->{after[0]} {layer.kernel_size[0]}x{layer.kernel_size[1]} @{before[1]}x{before[2]}"
            print(f"{model:18s} {index:5d} {shape:24s} {ours_f:9.2f} {ours_fb:7.2f} {theirs_f:8.2f} {theirs_fb:7.2f} "
                  f"{flops / ours_fb / 1e6:12.1f} {flops / theirs_fb / 1e6:10.1f} {theirs_fb / ours_fb:13.2f}")
        if not total[0]:
            print(f"{model:18s} (no conv layers)")
            continue
        print(f"{model:18s} {'all':>5s} {'convs, F+B (ms)':24s} {'':9s} {total[0]:7.2f} {'':8s} {total[1]:7.2f} "
              f"{'':12s} {'':10s} {total[1] / total[0]:13.2f}")
    print("(F: forward; F+B: forward and backward, the input gradient included except for a "
          "model's first layer; GF/s from F+B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
