"""Numeric kernels for convolution and pooling, kept apart from the layer bookkeeping.

Memory layout: layers speak NCHW (the public contract), but these kernels work on CHWN
*memory* (batch innermost) and hand back NCHW *views* of it.  A conv output is computed as
one (O, OH*OW*N) matrix, i.e. CHWN memory, and returned as ``y.transpose(3, 0, 1, 2)``: no
copy.  Element-wise layers keep that layout (NumPy ufuncs allocate their output in the
input's memory order), and the next pooling or conv layer transposes the view back to
CHWN, which is contiguous again: no copy either.  Any other layout (e.g. a plain NCHW
array fed to the first layer) is accepted and copied once.

Why CHWN rather than NHWC: with small channel counts (LeNet has 1, 6 and 16) NumPy's cost
is dominated by per-inner-loop overhead and memory traffic, so what matters is the length
of the contiguous runs each operation walks.  With the batch innermost:

* the im2col matrix ``cols`` is (C*KH*KW, OH*OW*N) with rows in (c, kh, kw) order, so the
  conv weight (O, C, KH, KW) is used as it is stored, ``weight.reshape(O, -1)``, and every
  row of ``cols`` is a copy of runs of OW*N contiguous values (NHWC gives runs of KW*C:
  5 values for LeNet's first conv, ~10x slower to build).  It is never built whole, but in
  cache-sized blocks of output pixels that each GEMM consumes at once (``column_blocks``);
* the per-channel bias add and bias-gradient sum work on whole contiguous rows (in NHWC a
  broadcast over an innermost axis of 6 channels costs ~10x more);
* the input gradient ``W^T @ g`` is added back per kernel position in long contiguous
  spans, without ``np.add.at`` (see ``_input_grad_stride1``), or, for wide layers, is
  itself a blocked conv of the output gradient (``_input_grad_full_conv``);
* pooling windows are strided views whose inner runs are the N contiguous batch entries;
* a stride-1 conv needs no im2col at all: written with the input's row pitch, the pixels
  that kernel position (i, j) meets are one contiguous span per channel, so each kernel
  position is one BLAS GEMM reading the input in place and adding into the output
  (``_direct_forward``, ``_direct_input_grad``; ``blas.py`` supplies the accumulating GEMM);
* a stride-1 conv with 16+ channels on a small map goes through the DFT instead
  (``fourier.py``; the rule and its measurements are ``_use_fourier``'s);
* any other stride-1 conv with 6+ input channels runs its forward, and its input gradient
  as the full convolution of g, on an HWCN copy of its input (rows, columns, channels,
  batch), where a kernel row meets one contiguous block per output pixel: stacked small
  products, which OpenBLAS runs without packing (``_hwcn_forward``).  Its output is HWCN
  memory behind the NCHW view; the layers after it take that as they take CHWN (ReLU
  keeps the layout, pooling reads strided views, the next conv pads into HWCN again).

Measured on LeNet-5, batch 64, one core: 2.4k images/s with the NHWC kernels, ~6k with
these (see ``python -m distnet.bench``).  Against PyTorch: ``benchmarks/torch_compare.py``,
which also prints the fraction of the single-core GEMM peak each model's step reaches.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import blas, fourier

# Bound on the size (elements) of the column-gradient matrix of a strided conv's input
# gradient; larger problems go one kernel position at a time.
_DCOLS_MAX_ELEMENTS = 1 << 22
# Size of the blocks in which a stride-1 conv's input gradient is computed (see
# _input_grad_stride1): a few MB, so a block stays in cache between its GEMM and col2im.
_DX_BLOCK_BYTES = 4 << 20


def _keep_freed_blocks_in_heap(nbytes: int = 16 << 20) -> None:
    """Free one ``nbytes`` block so glibc stops returning ~MB-sized arrays to the OS.

    glibc serves blocks above its mmap threshold (128 KiB at start) with fresh ``mmap``s and
    trims the heap top beyond twice that, so a training step that allocates and frees a few
    multi-MB activations pays page faults (kernel zeroing) on every step: 300-500 faults and
    ~1.5 ms a step for LeNet-5 at batch 64, 15% of the step.  Freeing an mmapped block
    raises the (dynamic) threshold to its size, here 16 MiB (trim threshold 32 MiB), and
    the faults vanish.  Nothing is touched, so this costs nothing; with another allocator it
    is a harmless no-op.  The price is that up to ~32 MiB of freed memory stays in the heap.
    """
    np.empty(nbytes, dtype=np.uint8)


_keep_freed_blocks_in_heap()


def to_chwn(x: np.ndarray) -> np.ndarray:
    """NCHW view -> CHWN view (contiguous when the memory already is CHWN)."""
    return x.transpose(1, 2, 3, 0)


def to_nchw(x: np.ndarray) -> np.ndarray:
    """CHWN view -> NCHW view of the same memory."""
    return x.transpose(3, 0, 1, 2)


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"input size {size} (padding {padding}) is smaller than kernel {kernel}")
    return out


def pad_chwn(x: np.ndarray, padding) -> np.ndarray:
    """NCHW view -> contiguous CHWN array with H and W zero-padded (one copy at most).

    ``padding`` is an int or an (H, W) pair."""
    xc = to_chwn(x)
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(xc)
    c, h, w, n = xc.shape
    out = np.empty((c, h + 2 * ph, w + 2 * pw, n), dtype=x.dtype)
    _fill_padded(out.transpose(1, 2, 0, 3), xc.transpose(1, 2, 0, 3), ph, pw)
    return out


def _fill_padded(out, src, ph: int, pw: int) -> None:
    """out (H + 2ph, W + 2pw, ...) = src (H, W, ...) with a zero border; H and W first in
    both views.  Only the border is zeroed: the interior is overwritten."""
    h, w = src.shape[:2]
    out[:ph] = 0
    out[h + ph:] = 0
    out[ph:h + ph, :pw] = 0
    out[ph:h + ph, w + pw:] = 0
    out[ph:h + ph, pw:w + pw] = src


def pad_hwcn(x: np.ndarray, padding) -> np.ndarray:
    """NCHW view -> contiguous HWCN array (rows, columns, channels, batch) with H and W
    zero-padded: the layout of ``_hwcn_forward``.  One copy; ``padding`` as in pad_chwn."""
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    n, c, h, w = x.shape
    out = np.empty((h + 2 * ph, w + 2 * pw, c, n), dtype=x.dtype)
    _fill_padded(out, x.transpose(2, 3, 1, 0), ph, pw)
    return out


def window_slices(kh: int, kw: int, stride: int, oh: int, ow: int):
    """For each kernel position (i, j): the strided H and W slices it reads from the input."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + stride * (oh - 1) + 1, stride), slice(j, j + stride * (ow - 1) + 1, stride)


# Bytes of im2col columns built at a time (see column_blocks).  Whole training steps at
# batch 64 measured 512 KiB faster than this 1 MiB (images per CPU second, 9 interleaved
# rounds, under load: LeNet-5 1.19x, cnn2 1.02x, cifar-cnn 1.12x), but with 512, 256 or
# 128 KiB (or 2 MiB) the float32 weights of tests/test_slurm.py's 2-rank run drift from the
# 1-process run by 1.6-3.2e-5 after 300 steps (1 MiB: 3.5e-7, before blocking: 1.0e-7),
# beyond that test's tolerance; kept at 1 MiB until that is understood.
_COLS_BLOCK_BYTES = 1 << 20
# Narrow im2col matrices (fewer than _NARROW_ROWS rows: the first convs, C*KH*KW = 25 to
# 150) go in blocks whose columns *and* GEMM output fit in _NARROW_BLOCK_BYTES.  Measured
# per layer (one thread, batch 64, median of 20, forward / weight gradient, 1 MiB of
# columns -> this): LeNet conv1 (1->6, 5x5) 0.64 / 0.70 -> 0.32 / 0.39 ms, cnn2 conv1
# (1->16) 0.55 / 0.80 -> 0.43 / 0.55 ms, LeNet conv2 (6->16) 0.44 / 0.49 -> 0.38 / 0.56,
# the CIFAR nets' first conv (3->32, 3x3) 1.96 / 2.56 -> 1.34 / 1.87 ms.  Beyond it each
# of them falls off a cliff within a factor 1.5 (the GEMM's output block no longer stays
# in cache beside its columns); wide matrices (cnn2's 400 rows, CIFAR's 288+) are 10-15%
# slower with blocks this small, hence the two regimes.
_NARROW_ROWS = 256
_NARROW_BLOCK_BYTES = 256 << 10


def _block_pixels(rows: int, out_rows: int, n: int, itemsize: int) -> int:
    """Output pixels (each N columns) per im2col block: see the two budgets above."""
    if rows < _NARROW_ROWS:
        return max(1, _NARROW_BLOCK_BYTES // ((rows + out_rows) * max(n, 1) * itemsize))
    return max(1, _COLS_BLOCK_BYTES // (rows * max(n, 1) * itemsize))


def _pixel_blocks(oh: int, ow: int, pixels: int) -> list[tuple[int, int, int, int]]:
    """Output-pixel ranges of at most ``pixels`` pixels, each a contiguous column range of a
    CHWN output: (r0, r1, w0, w1) is rows r0..r1-1 whole, or one row's columns w0..w1-1."""
    if pixels >= ow:
        rows = pixels // ow
        return [(r0, min(oh, r0 + rows), 0, ow) for r0 in range(0, oh, rows)]
    return [(r, r + 1, w0, min(ow, w0 + pixels)) for r in range(oh) for w0 in range(0, ow, pixels)]


def column_blocks(xc, kh: int, kw: int, stride: int, workspace=None, out_rows: int = 0):
    """The im2col matrix of the padded CHWN input xc, one cache-sized block at a time.

    Yields (cols, start, stop): cols is the (C*KH*KW, stop - start) block of the matrix
    whose rows are in (c, kh, kw) order and whose columns are the output pixels in
    (oh, ow, n) order, so y[:, start:stop] = W.reshape(O, -1) @ cols.  Every block is built
    in the same scratch buffer of about ``_COLS_BLOCK_BYTES`` (1 MiB, half this machine's
    2 MiB L2), which the caller's GEMM reads while it is still in cache.  With stride 1 each
    block row is a copy of runs of OW*N contiguous values.  A 1x1 stride-1 conv needs no
    copy: xc is its own matrix.

    Why blocks: the whole matrix is C*KH*KW times the input (75 MB for the CIFAR net's
    32->32 3x3 conv at batch 64, 5 MB for LeNet's first conv), so building it went to DRAM
    and the GEMM read it back from there; the forward kept it for the weight gradient, and
    the backward read it a third time.  Now the forward keeps only xc and the backward
    rebuilds the blocks (the copy into cache costs less than the DRAM traffic it replaces).
    Measured as whole training steps at batch 64, one thread, images per CPU second,
    15 interleaved rounds against the whole-matrix code while the machine was loaded
    (load average ~20 on 2 cores): LeNet-5 1.20x (1.05-1.57), cnn2 1.17x (1.06-1.25),
    cifar-cnn without dropout 1.01x (0.98-1.05).  It also drops the largest array of a step.
    """
    c, h, w, n = xc.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    if kh == kw == stride == 1:
        yield xc.reshape(c, h * w * n), 0, h * w * n
        return
    rows = c * kh * kw
    sc, sh, sw, sn = xc.strides
    win = as_strided(xc, (c, kh, kw, oh, ow, n), (sc, sh, sw, sh * stride, sw * stride, sn),
                     writeable=False)
    pixels = min(_block_pixels(rows, out_rows, n, xc.itemsize), oh * ow)
    buf = _scratch(workspace, "cols", (rows * pixels * n,), xc.dtype)
    for r0, r1, w0, w1 in _pixel_blocks(oh, ow, pixels):
        m = (r1 - r0) * (w1 - w0) * n
        cols = buf[:rows * m].reshape(c, kh, kw, r1 - r0, w1 - w0, n)
        np.copyto(cols, win[:, :, :, r0:r1, w0:w1])
        yield cols.reshape(rows, m), (r0 * ow + w0) * n, ((r1 - 1) * ow + w1) * n


def conv2d_forward(x, weight, bias, stride: int, padding, workspace=None):
    """x NCHW (any memory layout), weight (O, C, KH, KW) -> (y NCHW view of CHWN, cache).

    One GEMM per im2col block (``column_blocks``), each writing its columns of y, or, for
    wide stride-1 convs, the direct convolution (``_direct_forward``).  The cache is the
    padded CHWN input, from which the backward rebuilds the blocks.  ``workspace`` (the
    layer's dict) keeps the block buffer from step to step.  Where ``_use_fourier`` says
    so, the conv goes through the DFT and the cache is a ``fourier.Spectrum``.
    """
    o, c, kh, kw = weight.shape
    if _use_hwcn(x, weight, stride) and not _fourier_rule(x.shape[1:], padding, weight, stride):
        xp = pad_hwcn(x, padding)
        y = _hwcn_forward(xp, weight, bias, workspace)  # (OH, OW, O, N)
        return y.transpose(3, 2, 0, 1), xp.transpose(2, 0, 1, 3)  # NCHW and CHWN views
    xc = pad_chwn(x, padding)
    _, hp, wp, n = xc.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    if _use_fourier(xc, weight, stride):
        y, spectrum = fourier.forward(xc, weight, bias)
        return to_nchw(y), spectrum
    if _use_direct(xc, weight, stride, DIRECT_MIN_CHANNELS):
        return to_nchw(_direct_forward(xc, weight, bias, workspace)), xc
    y = np.empty((o, oh * ow * n), dtype=np.result_type(x.dtype, weight.dtype))
    wmat = weight.reshape(o, c * kh * kw)
    for cols, start, stop in column_blocks(xc, kh, kw, stride, workspace, o):
        np.matmul(wmat, cols, out=y[:, start:stop])
    if bias is not None:
        y += bias[:, None]
    return to_nchw(y.reshape(o, oh, ow, n)), xc


def col2im_add(dxc, dcols, c: int, kh: int, kw: int, stride: int, oh: int, ow: int):
    """Add (C*KH*KW, OH*OW*N) column gradients back into the padded CHWN gradient dxc."""
    n = dxc.shape[3]
    blocks = dcols.reshape(c, kh, kw, oh, ow, n)
    for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
        dxc[:, si, sj, :] += blocks[:, i, j]


def _scratch(workspace, kind: str, shape, dtype, fill=None) -> np.ndarray:
    """A scratch array kept in the layer's ``workspace`` dict, one per kind (so a change of
    batch size replaces it instead of piling up buffers).  ``fill`` initialises a new one;
    callers rely on it only for entries they never overwrite."""
    shape = tuple(shape)
    buf = workspace.get(kind) if workspace is not None else None
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.empty(shape, dtype=dtype) if fill is None else np.full(shape, fill, dtype=dtype)
        if workspace is not None:
            workspace[kind] = buf
    return buf


def _input_grad_stride1(g, weight, padded_shape, oh: int, ow: int, workspace):
    """dL/d(padded input) of a stride-1 conv, CHWN, without strided scatter-adds.

    The column gradients W^T g are written into a buffer whose rows have the *input's*
    row pitch (Wp*N values instead of OW*N, zeros in between).  Kernel position (i, j) then
    maps a channel's block of output rows onto one contiguous span of the flattened input
    gradient, shifted by i*Wp*N + j*N, so col2im is KH*KW adds of long contiguous runs
    (instead of C*OH runs of OW*N: 2-4x faster for LeNet-sized maps).  The GEMM is done per
    output row, writing straight into the pitched buffer through ``matmul(out=)``.

    The work is split into blocks of output rows (all channels, or channel groups when one
    row of them is already too big) whose buffer stays within ``_DX_BLOCK_BYTES``, so it is
    still in cache when col2im reads it back.  Measured with cold caches, as in a training
    step: LeNet conv2 at batch 256 5.7 ms (one GEMM + strided col2im: 8.0 ms, per kernel
    position: 8.5 ms); CIFAR 32->32 3x3 at 32x32, batch 64: 61-65 ms (per position: 92 ms).
    """
    o, c, kh, kw = weight.shape
    _, hp, wp, n = padded_shape
    pitch = wp * n
    kk = kh * kw
    per_row = kk * pitch  # buffer elements per (channel, output row)
    budget = max(1, _DX_BLOCK_BYTES // g.itemsize)
    # all channels per block if a row of them fits (one taller GEMM), else channel groups
    if c * per_row <= budget:
        rows, group = max(1, min(oh, budget // (c * per_row))), c
    else:
        rows, group = 1, max(1, budget // per_row)
    wt = weight.reshape(o, c * kk).T  # (C*KH*KW, O)
    g_rows = g.reshape(o, oh, ow * n).transpose(1, 0, 2)  # (OH, O, OW*N)
    dxc = np.zeros(padded_shape, dtype=g.dtype)
    dflat = dxc.reshape(c, hp * pitch)
    # zero-filled once; only the first OW*N columns of each row are ever written
    pitched = _scratch(workspace, "dcols", (group * kk, rows, pitch), g.dtype, 0)
    for c0 in range(0, c, group):
        c1 = min(c, c0 + group)
        for r0 in range(0, oh, rows):
            r1 = min(oh, r0 + rows)
            # a contiguous prefix of the buffer: every row still has its zero padding
            buf = pitched.reshape(-1)[:(c1 - c0) * kk * (r1 - r0) * pitch]
            buf = buf.reshape((c1 - c0) * kk, r1 - r0, pitch)
            np.matmul(wt[c0 * kk:c1 * kk], g_rows[r0:r1], out=buf[:, :, :ow * n].transpose(1, 0, 2))
            src = buf.reshape(c1 - c0, kh, kw, (r1 - r0) * pitch)
            length = (r1 - r0 - 1) * pitch + ow * n
            for i in range(kh):
                for j in range(kw):
                    off = (r0 + i) * pitch + j * n
                    dflat[c0:c1, off:off + length] += src[:, i, j, :length]
    return dxc


def conv2d_backward(grad_out, weight, cache, stride: int, padding: int,
                    weight_grad, bias_grad, need_input_grad: bool = True, workspace=None):
    """Accumulate dW, db into the given arrays; return dL/dx (NCHW view) or None.

    ``workspace`` (a dict the layer keeps) lets scratch buffers live across steps.
    """
    o, c, kh, kw = weight.shape
    gc = np.ascontiguousarray(to_chwn(grad_out))  # free when grad_out came from our layers
    _, oh, ow, n = gc.shape
    g = gc.reshape(o, oh * ow * n)
    if bias_grad is not None:
        bias_grad += g @ _scratch(workspace, "ones", g.shape[1:], g.dtype, 1)  # gemv: 3x g.sum(1)
    if isinstance(cache, fourier.Spectrum):  # the forward went through the DFT
        dxc = fourier.backward(gc, weight, cache, weight_grad, need_input_grad)
        return None if dxc is None else _unpad(dxc, padding)
    xc = cache
    hwcn_cache = not xc.flags.c_contiguous  # only _hwcn_forward's cache is a strided view
    padded_shape = xc.shape
    _, hp, wp, _ = padded_shape
    # dW[o, (c, kh, kw)] = sum over output pixels: exactly weight's (O, C, KH, KW) order.
    # Summed over the im2col blocks, each term computed transposed, cols @ g^T: OpenBLAS is
    # faster with the long inner dimension on that side.  Measured on the whole matrix (CPU
    # time, one thread, under load), g @ cols^T -> (cols @ g^T)^T: LeNet conv1 at batch 64
    # 1.07 -> 0.80 ms, conv2 0.81 -> 0.50 ms, CIFAR 32->32 at 32x32 23.9 -> 19.4 ms.
    dwt = _scratch(workspace, "dwt", (c * kh * kw, o), np.result_type(g.dtype, xc.dtype))
    part = _scratch(workspace, "dwt_part", dwt.shape, dwt.dtype)
    dwt.fill(0)
    for cols, start, stop in column_blocks(xc, kh, kw, stride, workspace, o):
        np.matmul(cols, g[:, start:stop].T, out=part)
        dwt += part
    weight_grad += dwt.T.reshape(weight_grad.shape)
    if not need_input_grad:
        return None
    if n == 0:  # an empty batch (a rank's empty slice): nothing to scatter back
        dxc = np.zeros(padded_shape, dtype=g.dtype)
    elif hwcn_cache and kh * kw < _DIRECT_INPUT_GRAD_MIN_TAPS and padding < min(kh, kw):
        # the forward ran through _hwcn_forward: dx does too, as the full convolution of g
        # (kernels of 25+ taps keep the direct input gradient below)
        return _input_grad_full_conv(gc, weight, padding, workspace)
    elif _use_direct(xc, weight, stride) and (o <= c or kh * kw >= _DIRECT_INPUT_GRAD_MIN_TAPS):
        dxc = _direct_input_grad(gc, weight, xc, workspace)
    elif stride == 1 and o <= c and c >= _FULL_CONV_MIN_CHANNELS and padding < min(kh, kw):
        return _input_grad_full_conv(gc, weight, padding, workspace)
    elif stride == 1:
        dxc = _input_grad_stride1(g, weight, padded_shape, oh, ow, workspace)
    else:
        dxc = np.zeros(padded_shape, dtype=g.dtype)
        if xc.size * kh * kw <= _DCOLS_MAX_ELEMENTS:  # the column gradients' size
            col2im_add(dxc, weight.reshape(o, c * kh * kw).T @ g, c, kh, kw, stride, oh, ow)
        else:  # one kernel position at a time, to bound memory
            wk = weight.transpose(2, 3, 1, 0)  # (KH, KW, C, O)
            for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
                dxc[:, si, sj, :] += (wk[i, j] @ g).reshape(c, oh, ow, n)
    return _unpad(dxc, padding)


def _unpad(dxc, padding: int):
    """The gradient of the padded CHWN input -> that of the input itself, as an NCHW view."""
    if padding:
        _, hp, wp, _ = dxc.shape
        dxc = dxc[:, padding:hp - padding, padding:wp - padding, :]
    return to_nchw(dxc)


# Input channels from which a stride-1 conv's forward is computed directly (see
# _direct_forward).  Its input gradient is (_direct_input_grad) unless the conv widens
# (O > C) with a kernel of fewer than _DIRECT_INPUT_GRAD_MIN_TAPS positions: see there.
# DIRECT_CONV = False keeps every conv on im2col (the tests compare the two).
DIRECT_MIN_CHANNELS = 24
_DIRECT_INPUT_GRAD_MIN_TAPS = 25
DIRECT_CONV = True
# Bytes of padded input rows one block of the direct convolution reads.  Measured as
# 512 KiB, 1, 2 and 4 MiB (forward and input gradient, the CIFAR CNN's layers at batch 64):
# 1 MiB is within 3% of the best for every layer; 2-4 MiB cost 5-15% on 16x16 maps.
_DIRECT_BLOCK_BYTES = 1 << 20


# When a stride-1 conv goes through the DFT (``fourier``): at least FOURIER_MIN_CHANNELS
# input channels, a padded map of at most FOURIER_MAX_SIZE pixels a side, and a kernel
# large enough for the map that the direct multiply-adds (KH*KW per output pixel) are at
# least FOURIER_MIN_SAVING times the spectrum's (4 real per frequency, H*(W//2+1) of them).
# FOURIER_CONV = False keeps every conv off it (the tests compare the paths).
FOURIER_CONV = True
FOURIER_MIN_CHANNELS = 16
FOURIER_MAX_SIZE = 16
FOURIER_MIN_SAVING = 2.0


def _use_fourier(xc, weight, stride: int) -> bool:
    """Measured on the AMD EPYC (Zen 4, OpenBLAS SkylakeX kernels), one thread, batch 64,
    forward + backward with the input gradient, ms, median of 25 interleaved rounds, the
    direct and im2col paths against ``fourier``: cnn2's 16->32 5x5 at 12x12 6.38 -> 3.58 (the
    forward 1.79 -> 1.69, the backward 4.6 -> 1.9), the CIFAR CNN's 64->128 3x3 at 8x8
    (padded 10x10) 23.1 -> 18.6.  Not taken, because it loses: LeNet's 6->16 5x5 at 14x14
    2.29 -> 2.44 (six channels make each frequency's product too small to pay for the
    transforms), first convs of one channel 1.6 -> 9.8, 3x3 convs on 18x18 padded maps
    48.3 -> 47.6 (64->64, even) and 23.4 -> 25.5 (32->64), on 34x34 58 -> 92 (the dense
    DFT matrices cost O(H) per pixel, so large maps lose)."""
    _, h, w, n = xc.shape
    return (n > 0 and xc.dtype == weight.dtype and xc.dtype in (np.float32, np.float64)
            and _fourier_rule((xc.shape[0], h, w), 0, weight, stride))


def _fourier_rule(chw, padding, weight, stride: int) -> bool:
    """``_use_fourier``'s test on the shape alone: (C, H, W) before ``padding``."""
    o, c, kh, kw = weight.shape
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    h, w = chw[1] + 2 * ph, chw[2] + 2 * pw
    if not (FOURIER_CONV and stride == 1 and c >= FOURIER_MIN_CHANNELS and max(h, w) <= FOURIER_MAX_SIZE):
        return False
    direct = kh * kw * (h - kh + 1) * (w - kw + 1)
    return direct >= FOURIER_MIN_SAVING * 4 * h * (w // 2 + 1)


def _use_direct(xc, weight, stride: int, min_channels: int = 0) -> bool:
    return (DIRECT_CONV and stride == 1 and weight.shape[1] >= min_channels and xc.shape[3] > 0
            and xc.dtype == weight.dtype and blas.available(xc.dtype))


# Stride-1 convs with at least HWCN_MIN_CHANNELS input channels run their forward (and,
# as the "full" convolution of the output gradient, their input gradient) through
# ``_hwcn_forward``.  HWCN_CONV = False keeps every conv off it (the tests compare the paths).
HWCN_CONV = True
HWCN_MIN_CHANNELS = 6


def _use_hwcn(x, weight, stride: int) -> bool:
    """x is the NCHW input before padding."""
    return (HWCN_CONV and stride == 1 and weight.shape[1] >= HWCN_MIN_CHANNELS and x.shape[0] > 0
            and x.dtype == weight.dtype and x.dtype in (np.float32, np.float64))


def _hwcn_forward(xp, weight, bias, workspace):
    """y (OH, OW, O, N) = the stride-1 correlation of the padded HWCN input xp with weight.

    In HWCN memory (rows, columns, channels, batch) the input a kernel row i meets at output
    pixel (r, p) is one contiguous (KW*C, N) block: xp[r+i, p:p+KW], its KW columns of C
    channels, each channel a run of N.  So kernel row i is one stacked product over all
    output pixels, W_i (O, KW*C) @ block(r+i, p) -> y[r, p] (O, N), the blocks read in place
    through a strided view (neighbouring pixels' blocks overlap), and the KH rows are summed.
    Each product is small (O x KW*C x N: 32 x 96 x 64 for the CIFAR CNN's 32->32), and
    OpenBLAS runs products that small without packing its operands, where the large GEMMs
    of ``_direct_forward`` repack their large operand for only O multiply-adds per value.

    Measured on the Intel Xeon of 12-06, one thread, batch 64, forward with the padding copy,
    ms, the paths before it (direct or im2col) -> this: the CIFAR CNN's 32->32 3x3 at 32x32
    12.7 -> 9.9, 32->64 at 16x16 5.9 -> 4.5, 64->64 at 16x16 9.5 -> 9.6, 64->128 at 8x8
    5.7 -> 5.1; LeNet's 6->16 5x5 at 14x14 0.39 -> 0.29, cnn2's 16->32 5x5 at 12x12 1.06 ->
    0.73 (135-150 GFLOP/s, the core's sgemm peak being ~157-177).  First convs of 1 or 3
    channels lose (0.27 -> 0.41, 1.33 -> 2.50: a block of KW*C = 5-9 rows is too short),
    hence HWCN_MIN_CHANNELS.  Its weight gradient stays on im2col blocks, which read the
    HWCN cache as fast as a CHWN one; the same stacked form for it (per-pixel (O, N) @
    (N, KW*C) products, summed) was 1.2-2.5x slower.  The input gradient is the full
    convolution of g through this forward (32->32: 15.8 -> 10.4 ms) except for kernels of
    25+ taps, whose direct input gradient stays faster (LeNet's 6->16: 0.54 against 0.68).

    Whole training steps, this path on against off (batch 64, CPU time, 9 interleaved
    rounds): the CIFAR CNN 1.056x (0.94-1.14; per layer, 166 -> 150 ms summed, the pooling
    after it faster too, its windows now runs of C*N), LeNet-5 0.99x and cnn2 1.01x, within
    the noise (their second convs: LeNet's gains 0.1 ms of 4.4, cnn2's takes the DFT).
    """
    o, c, kh, kw = weight.shape
    hp, wp, _, n = xp.shape
    oh, ow = hp - kh + 1, wp - kw + 1
    wt = _scratch(workspace, "hwcn_w", (kh, o, kw, c), weight.dtype)
    np.copyto(wt, weight.transpose(2, 0, 3, 1))
    wt = wt.reshape(kh, o, kw * c)
    sh, sw, sc, sn = xp.strides
    y = np.empty((oh, ow, o, n), dtype=xp.dtype)
    part = np.empty_like(y) if kh > 1 else None
    for i in range(kh):
        blocks = as_strided(xp[i:], (oh, ow, kw * c, n), (sh, sw, sc, sn), writeable=False)
        if i == 0:
            np.matmul(wt[0], blocks, out=y)
        else:
            np.matmul(wt[i], blocks, out=part)
            y += part
    if bias is not None:
        y += bias[:, None]
    return y


def _direct_rows(c: int, kh: int, oh: int, pitch: int, itemsize: int) -> int:
    """Output rows per block: their KH-1 taller span of padded input rows within
    ``_DIRECT_BLOCK_BYTES``, so every kernel position's GEMM finds it in cache."""
    return max(1, min(oh, _DIRECT_BLOCK_BYTES // (c * pitch * itemsize) - (kh - 1)))


def _direct_forward(xc, weight, bias, workspace):
    """y = conv(xc) for a stride-1 conv with no im2col: one GEMM per kernel position,
    W[:, :, i, j] (O x C) @ the input shifted by (i, j), summed in BLAS (beta = 1).

    Why it needs no copy of the input: in CHWN memory, the input pixels that kernel
    position (i, j) meets for a run of output rows are, per channel, one contiguous span of
    the padded input, starting i*Wp*N + j*N values in, if the output is written with the
    input's row pitch Wp*N instead of OW*N (its KW-1 extra columns per row are garbage and
    dropped).  So each GEMM reads the input in place, as a (C, span) matrix whose row
    pitch is a whole channel.  The output rows go in blocks whose input rows fit in cache
    (``_direct_rows``) through a pitched scratch buffer, copied out with the bias added.

    im2col copies the input KH*KW times and then OpenBLAS packs that copy again; here
    OpenBLAS packs the input straight from the source.  Measured (one thread, batch 64,
    median of 30, forward only): CIFAR 32->32 3x3 at 32x32 16.7 -> 12.0 ms, 64->64 at
    16x16 12.2 -> 9.2 ms, 32->64 at 16x16 5.9 -> 5.4 ms, 64->128 at 8x8 5.1 -> 5.0 ms;
    and at batch 256 (cifar-fast) 64->256 at 16x16 131 -> 124 ms, 256->256 at 8x8 114 ->
    102 ms, 24->64 at 32x32 70 -> 68 ms; but a 16-channel 5x5 (cnn2's conv2) 1.2 -> 1.5 ms
    and 6 channels break even: each GEMM sums over only C values.  Hence
    ``DIRECT_MIN_CHANNELS``.

    Tried and not kept: Winograd F(2x2, 3x3) for the 3x3 convs (``benchmarks/
    winograd_trial.py``).  Its 16 GEMMs take ~0.4x of this forward, but its transforms, 44
    NumPy passes per block of tile rows, cost 1.5-2.5x those GEMMs: the CIFAR CNN's
    forwards ran at 0.78-1.04x of this one's speed at batch 64, the 3-channel first 0.37x.
    """
    o, c, kh, kw = weight.shape
    _, hp, wp, n = xc.shape
    oh, ow = hp - kh + 1, wp - kw + 1
    pitch, size = wp * n, xc.itemsize
    rows = _direct_rows(c, kh, oh, pitch, size)
    wt = _scratch(workspace, "direct_w", (kh, kw, o, c), weight.dtype)
    np.copyto(wt, weight.transpose(2, 3, 0, 1))
    buf = _scratch(workspace, "direct_y", (o, rows, wp, n), xc.dtype)
    y = np.empty((o, oh, ow, n), dtype=xc.dtype)
    x_at, w_at, buf_at = xc.ctypes.data, wt.ctypes.data, buf.ctypes.data
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        span = (r1 - r0 - 1) * pitch + ow * n  # through the block's last valid output column
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            blas.gemm(xc.dtype, o, span, c, w_at + k * o * c * size, c,
                      x_at + ((r0 + i) * pitch + j * n) * size, hp * pitch,
                      buf_at, rows * pitch, 0.0 if k == 0 else 1.0)
        valid = buf[:, :r1 - r0, :ow]
        if bias is None:
            np.copyto(y[:, r0:r1], valid)
        else:
            np.add(valid, bias[:, None, None, None], out=y[:, r0:r1])
    return y


def _direct_input_grad(gc, weight, xc, workspace):
    """The padded CHWN dL/dx of ``_direct_forward``: col2im's scatter-add done by BLAS.

    The output gradient is first copied into the forward's pitched layout, zeros in the
    KW-1 extra columns of every row; then, in the same row blocks, every kernel position is
    one GEMM dx_span(i, j) += W[:, :, i, j]^T (C x O) @ g_block (beta = 1), where
    dx_span(i, j) is the same in-place span of the padded input that the forward read.  The
    zero columns are exactly what lands where a span wraps into the next row.

    Measured (one thread, median of 3-50, input gradient only; direct against
    ``_input_grad_stride1``): at batch 64, CIFAR 32->32 3x3 at 32x32 13.6 against 22.3 ms,
    64->64 at 16x16 9.6 / 14.0, cnn2's 16->32 5x5 2.1 / 2.3, LeNet's 6->16 5x5 0.50 /
    0.71; cifar-fast's 256->256 at 8x8, batch 256, 132 / 152.  But where a 3x3 conv widens
    the repacked output gradient is the larger operand, and the single GEMM of the pitched
    col2im wins: 32->64 at 16x16 6.8 / 6.0, 24->64 at 32x32 20.4 / 17.4, 64->256 at 16x16
    and batch 256 190 / 153 ms.  Hence the rule in ``conv2d_backward``: direct when O <= C
    or the kernel has 25 positions or more.  The weight gradient stays on im2col blocks:
    done the same way, as one (O x span) @ (span x C) GEMM per kernel position, it was
    slower (32->32: 20 against 14 ms), since each of those GEMMs packs both of its large
    operands for only O*C/(O+C) multiply-adds per packed value.

    Tried and not kept: one GEMM per kernel *row* (M = C*KW instead of C, so the output
    gradient is repacked KH times instead of KH*KW) into a scratch of KW shifted copies,
    folded back with KW adds.  cnn2's 16->32 5x5: 1.71 -> 1.47 ms (7 interleaved rounds),
    but LeNet's 6->16 0.50 -> 0.67 ms and the CIFAR layers 5-30% slower; a third path for
    3% of a cnn2 step.  The same fold for the forward was slower everywhere (32->32: 13.2
    against 16.6-20.5 ms).
    """
    o, c, kh, kw = weight.shape
    _, hp, wp, n = xc.shape
    oh, ow = gc.shape[1], gc.shape[2]
    pitch, size, dtype = wp * n, xc.itemsize, xc.dtype
    rows = _direct_rows(c, kh, oh, pitch, size)
    g = _scratch(workspace, "direct_g", (o, oh, wp, n), dtype, 0)  # the extra columns stay 0
    np.copyto(g[:, :, :ow], gc)
    wt = _scratch(workspace, "direct_wt", (kh, kw, c, o), dtype)
    np.copyto(wt, weight.transpose(2, 3, 1, 0))
    dx = np.zeros(xc.shape, dtype=dtype)
    wt_at, g_at, dx_at = wt.ctypes.data, g.ctypes.data, dx.ctypes.data
    for r0 in range(0, oh, rows):
        span = (min(oh, r0 + rows) - r0 - 1) * pitch + ow * n
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            blas.gemm(dtype, c, span, o, wt_at + k * c * o * size, o, g_at + r0 * pitch * size, oh * pitch,
                      dx_at + ((r0 + i) * pitch + j * n) * size, hp * pitch, 1.0)
    return dx


# Input channels from which a stride-1 conv's input gradient is a "full" convolution.
_FULL_CONV_MIN_CHANNELS = 32


def _input_grad_full_conv(gc, weight, padding: int, workspace):
    """dL/dx of a stride-1 conv as the "full" convolution of the output gradient: g
    zero-padded by K-1-padding, correlated with the kernel flipped in H and W and with C
    and O swapped.  Written out, dx[c, h] = sum over (o, i) of g[o, h + p - i] W[o, c, i],
    the forward conv of the padded g with W'[c, o, K-1-i] = W[o, c, i].

    It is one more blocked im2col GEMM, (C, O*KH*KW) @ (O*KH*KW, pixels), and needs no
    scatter-add; but its GEMM has only C rows and its im2col is O*KH*KW rows tall, so it
    pays off only for wide inputs that are not narrower than the output.  Measured against
    ``_input_grad_stride1`` (CPU time, batch 64, one thread, under load): CIFAR 32->32 at
    32x32 34 -> 28 ms, 64->64 at 16x16 21 -> 21 ms; but 32->64 10 -> 16 ms and 64->128
    8 -> 11 ms, hence the rule in ``conv2d_backward`` (C >= 32 and O <= C).
    """
    o, c, kh, kw = weight.shape
    flipped = _scratch(workspace, "flipped", (c, o, kh, kw), weight.dtype)
    np.copyto(flipped, weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    inner = workspace.setdefault("input_grad", {}) if workspace is not None else None
    dx, _ = conv2d_forward(to_nchw(gc), flipped, None, 1, (kh - 1 - padding, kw - 1 - padding), inner)
    return dx


def maxpool_forward(x, kh: int, kw: int, stride: int):
    """Max over each window; remembers which kernel position won (the first max on ties).

    The winner index is kept as a uint8 per output element and updated with arithmetic
    (``np.maximum(idx, better * k)`` works because k only grows), which is an order of
    magnitude faster in NumPy than masked assignment (``np.copyto(where=)``/``putmask``).
    2x2 windows with stride 2, the common case, take ``_maxpool2x2_forward``.
    """
    xc = to_chwn(x)
    c, h, w, n = xc.shape
    oh, ow = output_size(h, kh, stride), output_size(w, kw, stride)
    if kh == kw == stride == 2:
        out, wins = _maxpool2x2_forward(xc, oh, ow)
        return to_nchw(out), (wins, xc.shape)
    if kh * kw > 255:
        raise ValueError(f"pooling window {kh}x{kw} is too large")
    out = idx = None
    for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
        v = xc[:, si, sj, :]
        if out is None:
            out = v.copy()
            idx = np.zeros(out.shape, dtype=np.uint8)
            continue
        better = np.greater(v, out).view(np.uint8)
        better *= np.uint8(i * kw + j)
        np.maximum(idx, better, out=idx)
        np.maximum(out, v, out=out)
    return to_nchw(out), (idx, xc.shape)


def maxpool_backward(grad_out, kh: int, kw: int, stride: int, cache):
    idx, shape = cache
    g = to_chwn(grad_out)
    dtype = grad_out.dtype
    oh, ow = g.shape[1], g.shape[2]
    overlapping = stride < max(kh, kw)
    covered = not overlapping and stride * oh == shape[1] and stride * ow == shape[2]
    # disjoint windows that tile the input write every element exactly once
    dxc = np.empty(shape, dtype=dtype) if covered else np.zeros(shape, dtype=dtype)
    if isinstance(idx, tuple):
        _maxpool2x2_backward(g, idx, dxc, oh, ow)
        return to_nchw(dxc)
    for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
        won = idx == i * kw + j
        if overlapping:
            dxc[:, si, sj, :] += g * won
        else:
            np.multiply(g, won, out=dxc[:, si, sj, :])
    return to_nchw(dxc)


def _quadrants(xc, oh: int, ow: int):
    """The four strided views of a 2x2/stride-2 window: top-left, top-right, bottom-left,
    bottom-right element of every window, each (C, OH, OW, N)."""
    return [xc[:, i:i + 2 * oh:2, j:j + 2 * ow:2, :] for i in (0, 1) for j in (0, 1)]


def _maxpool2x2_forward(xc, oh: int, ow: int):
    """2x2/stride-2 max as a tree of three pairwise maxima; the winner is kept as the three
    comparisons that chose it (right beat left in the top row, in the bottom row, bottom
    beat top), strict so that ties go to the first position in (row, column) order, as in
    the general path.  6 NumPy passes over the output instead of 13, no uint8 arithmetic.
    Measured against the general path (CPU time, batch 64, 15 interleaved rounds, under
    load): forward 0.29 -> 0.24 ms on LeNet's 6x28x28, 1.70 -> 1.51 ms on 64x16x16, 0.68 ->
    0.51 ms on 128x8x8; the backward (``_maxpool2x2_backward``) is as fast as before.
    """
    a, b, c, d = _quadrants(xc, oh, ow)
    right_top = np.greater(b, a)
    top = np.maximum(a, b)
    right_bottom = np.greater(d, c)
    bottom = np.maximum(c, d)
    lower = np.greater(bottom, top)
    np.maximum(top, bottom, out=top)
    return top, (right_top, right_bottom, lower)


def _maxpool2x2_backward(g, wins, dxc, oh: int, ow: int):
    """Route each output gradient to its window's winner, writing all four quadrants of the
    (tiled) input gradient, each as g times its (boolean) winner mask."""
    right_top, right_bottom, lower = wins
    upper = ~lower
    for quadrant, won in zip(_quadrants(dxc, oh, ow),
                             (upper & ~right_top, upper & right_top, lower & ~right_bottom, lower & right_bottom)):
        np.multiply(g, won, out=quadrant)


def avgpool_forward(x, kh: int, kw: int, stride: int):
    xc = to_chwn(x)
    c, h, w, n = xc.shape
    oh, ow = output_size(h, kh, stride), output_size(w, kw, stride)
    out = np.zeros((c, oh, ow, n), dtype=x.dtype)
    for _, _, si, sj in window_slices(kh, kw, stride, oh, ow):
        out += xc[:, si, sj, :]
    out *= 1.0 / (kh * kw)
    return to_nchw(out), xc.shape


def avgpool_backward(grad_out, kh: int, kw: int, stride: int, shape):
    g = to_chwn(grad_out) * (1.0 / (kh * kw))
    oh, ow = g.shape[1], g.shape[2]
    dxc = np.zeros(shape, dtype=grad_out.dtype)
    for _, _, si, sj in window_slices(kh, kw, stride, oh, ow):
        dxc[:, si, sj, :] += g
    return to_nchw(dxc)
