"""Winograd F(2x2, 3x3) for the forward of a 3x3 conv, timed against distnet's own forward.

Why this exists: the CIFAR CNN misses issue 8's 1.1x against PyTorch because its 3x3 convs
with 32-64 channels run at 0.6-0.74x of PyTorch's speed (``conv_layers.py``).  Winograd's
F(2x2, 3x3) computes each 2x2 output tile from a 4x4 input tile with 16 multiplies instead
of 36, so the GEMMs shrink 2.25x: per tile position p of the 4x4 transformed tile,
M[p] (O x tiles) = U[p] (O x C) @ V[p] (C x tiles), with U = G w G^T (the weights) and
V = B^T d B (the input tiles), and the output is A^T M A.  The multiplies saved are paid
for in the transforms, which NumPy can only do as whole-array passes: 4 + 16 for the
input and 8 + 16 for the output, each over a quarter to a half of the layer's input or
output.  This script measures whether that trade pays, before anyone builds the backward
(two more transforms of the same kind) into ``kernels.py``.  It does not, yet: see
``benchmarks/README.md``.

The transforms run in blocks of ``--rows`` tile rows (all channels), so that a block's
transformed input and products stay in cache between its passes and its 16 GEMMs; one
tile row per block was the fastest of 1, 2 and 4 on the 32x32 maps.  Printed per layer:
median milliseconds of distnet's forward (``kernels.conv2d_forward``, as the layer runs
it), of the Winograd forward, and of the Winograd forward's 16 GEMMs alone (its floor if
the transforms were free).  No PyTorch needed::

    python benchmarks/winograd_trial.py --models cifar-cnn-nodrop
"""
from __future__ import annotations

import argparse
import os
import sys

from distnet.cli._common import BLAS_THREAD_VARS  # does not load NumPy

if __name__ == "__main__":  # before NumPy loads its BLAS (not when a test imports this file)
    for _var in BLAS_THREAD_VARS:
        os.environ[_var] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

from conv_layers import conv_cases, interleaved_medians  # noqa: E402
from torch_compare import model_names, sgemm_rate  # noqa: E402

# F(2x2, 3x3)'s weight transform (Lavin & Gray, 2015); B^T and A^T are written out as the
# adds and subtracts in winograd_forward.
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])


def winograd_applies(layer, in_shape) -> bool:
    """A 3x3, stride-1, padding-1 conv on an even-sized map: the case this trial covers."""
    return (tuple(layer.kernel_size) == (3, 3) and layer.stride == 1 and layer.padding == 1
            and in_shape[1] % 2 == 0 and in_shape[2] % 2 == 0)


def winograd_forward(x, weight, bias=None, rows: int = 1, workspace=None):
    """conv2d(x, weight, padding=1) for x NCHW (any memory layout); returns CHWN (O, H, W, N).

    ``workspace`` keeps the block buffers between calls, as a layer's dict does."""
    from distnet.nn import kernels
    workspace = {} if workspace is None else workspace
    o, c = weight.shape[:2]
    xc = kernels.pad_chwn(x, 1)
    _, hp, wp, n = xc.shape
    h, w = hp - 2, wp - 2
    if h % 2 or w % 2 or rows < 1 or (h // 2) % rows:
        raise ValueError(f"winograd_forward: a {h}x{w} map does not split into blocks of {rows} rows of 2x2 tiles")
    th, tw = h // 2, w // 2
    dtype = xc.dtype
    u = np.einsum("ai,ocij,bj->aboc", G, weight, G).astype(dtype).reshape(16, o, c)
    rows_in = workspace.setdefault("rows", np.empty((4, c, rows, wp, n), dtype))
    v = workspace.setdefault("v", np.empty((4, 4, c, rows, tw, n), dtype))
    m = workspace.setdefault("m", np.empty((16, o, rows * tw * n), dtype))
    z = workspace.setdefault("z", np.empty((2, 4, o, rows, tw, n), dtype))
    y = np.empty((o, th, 2, tw, 2, n), dtype)
    v_mat, m_tiles = v.reshape(16, c, -1), m.reshape(4, 4, o, rows, tw, n)
    for t0 in range(0, th, rows):
        # V = B^T d B: first along the tile rows (input rows 2t .. 2t+3), then the columns
        r = [xc[:, 2 * t0 + i:2 * t0 + i + 2 * rows:2] for i in range(4)]
        np.subtract(r[0], r[2], out=rows_in[0])
        np.add(r[1], r[2], out=rows_in[1])
        np.subtract(r[2], r[1], out=rows_in[2])
        np.subtract(r[1], r[3], out=rows_in[3])
        for a in range(4):
            s = [rows_in[a][:, :, j:j + 2 * tw:2] for j in range(4)]
            np.subtract(s[0], s[2], out=v[a, 0])
            np.add(s[1], s[2], out=v[a, 1])
            np.subtract(s[2], s[1], out=v[a, 2])
            np.subtract(s[1], s[3], out=v[a, 3])
        np.matmul(u, v_mat, out=m)
        # Y = A^T M A: the rows of each 4x4 product, then its columns, into the 2x2 tiles
        for b in range(4):
            np.add(m_tiles[0, b], m_tiles[1, b], out=z[0, b])
            z[0, b] += m_tiles[2, b]
            np.subtract(m_tiles[1, b], m_tiles[2, b], out=z[1, b])
            z[1, b] -= m_tiles[3, b]
        block = y[:, t0:t0 + rows]
        for i in range(2):
            np.add(z[i, 0], z[i, 1], out=block[:, :, i, :, 0])
            block[:, :, i, :, 0] += z[i, 2]
            np.subtract(z[i, 1], z[i, 2], out=block[:, :, i, :, 1])
            block[:, :, i, :, 1] -= z[i, 3]
    y = y.reshape(o, h, w, n)
    if bias is not None:
        y += bias[:, None, None, None]
    return y


def compare_layer(layer, in_shape, batch, rows, rounds, rng):
    """Median ms of distnet's forward, the Winograd forward and its GEMMs alone, and the
    largest difference between the two outputs relative to the largest output."""
    from distnet import nn
    from distnet.nn import kernels

    ours = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1, rng=rng)
    x = rng.standard_normal((batch,) + tuple(in_shape)).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)  # as a layer gets it
    weight, bias = ours.weight.data, ours.bias.data
    workspace, ws_wino = {}, {}
    want = kernels.to_chwn(kernels.conv2d_forward(x, weight, bias, 1, 1, workspace)[0])
    got = winograd_forward(x, weight, bias, rows, ws_wino)
    error = float(np.abs(got - want).max() / np.abs(want).max())
    u = np.ones((16, weight.shape[0], weight.shape[1]), np.float32)
    v_mat, m = ws_wino["v"].reshape(16, weight.shape[1], -1), ws_wino["m"]
    blocks = in_shape[1] // 2 // rows

    def ours_forward():
        kernels.conv2d_forward(x, weight, bias, 1, 1, workspace)

    def wino_forward():
        winograd_forward(x, weight, bias, rows, ws_wino)

    def wino_gemms():
        for _ in range(blocks):
            np.matmul(u, v_mat, out=m)

    return interleaved_medians((ours_forward, wino_forward, wino_gemms), rounds) + [error]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="cifar-cnn-nodrop", help="comma-separated (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--rows", type=int, default=1, help="tile rows per transform block (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds per layer (default: %(default)s)")
    args = p.parse_args(argv)
    models = model_names(args.models, "winograd_trial")
    if args.rows < 1 or args.batch_size < 1 or args.rounds < 1:
        raise SystemExit("winograd_trial: --rows, --batch-size and --rounds must be at least 1")
    rng = np.random.default_rng(0)
    peak = max(sgemm_rate() for _ in range(2))
    print(f"one thread, batch {args.batch_size}, {args.rows} tile row(s) per block, "
          f"median of {args.rounds} interleaved rounds; numpy {np.__version__}; "
          f"GEMM peak (2048^3 np.matmul) {peak / 1e9:.1f} GFLOP/s")
    head = (f"{'model':18s} {'layer':>5s} {'conv':20s} {'distnet F':>9s} {'winograd F':>10s} "
            f"{'its GEMMs':>9s} {'distnet/winograd':>16s} {'rel. error':>10s}")
    print(head)
    print("-" * len(head))
    for model in models:
        found = False
        for index, layer, before, after, _ in conv_cases(model):
            if not winograd_applies(layer, before) or (before[1] // 2) % args.rows:
                continue
            found = True
            ours, wino, gemms, error = compare_layer(layer, before, args.batch_size, args.rows, args.rounds, rng)
            shape = f"{before[0]}->{after[0]} @{before[1]}x{before[2]}"
            print(f"{model:18s} {index:5d} {shape:20s} {ours:9.2f} {wino:10.2f} {gemms:9.2f} "
                  f"{ours / wino:16.2f} {error:10.1e}")
        if not found:
            print(f"{model:18s} (no 3x3, stride-1, padding-1 conv on an even map)")
    print("(forward only, ms; 'its GEMMs': the Winograd forward's 16 products per block alone; "
          "distnet/winograd above 1: Winograd faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
