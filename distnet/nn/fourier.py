"""Stride-1 convolution through the discrete Fourier transform, forward and backward.

A KxK correlation over an HxW map costs K*K multiply-adds per input channel, output channel
and pixel; in the frequency domain it is one complex multiply-add per frequency: the
spectrum of every output channel is a matrix product, over input channels, of the weights'
spectrum with the input's, one small matrix product per frequency.  With a 5x5 kernel on a
12x12 map (cnn2's second conv) that is 25 against 4 real multiply-adds per pair of
channels and input pixel, and the transforms, done as GEMMs, cost little beside it.

Every transform is a matrix product with a precomputed DFT matrix (``_plan``), applied one
axis at a time to CHWN memory: along W as real products (half the spectrum, the input being
real), along H as one complex GEMM, so the spectrum comes out as one (C, N) matrix per
frequency, ready for the stacked products ``np.matmul`` hands to BLAS.  Along W it is one
small (2wf, W) @ (W, N) product per channel and row, stacked, read from the input in place:
OpenBLAS runs products that small without packing its operands, where the one large GEMM
(2wf, W) @ (W, rows*C*N) this replaces packed a transposed copy of the whole input.
Measured on the Intel Xeon of 12-06 (one thread, batch 64, median of 5 x 100), a spectrum
of cnn2's 16->32 5x5 conv at 12x12: input 0.43 -> 0.31 ms, output gradient 0.56 -> 0.45;
the CIFAR CNN's 64->128 at 8x8 (padded 10x10): 1.13 -> 0.81 and 1.73 -> 1.38; cnn2's whole
training step 1.054x faster (0.98-1.20, 15 interleaved rounds, CPU time).  The same for the
inverse (a stacked (cols, wf) @ (wf, N) product per channel and row) was no faster.  NumPy's
FFT would do fewer operations but pays per transform: 1.7-2.9 ms for cnn2's 1024 12x12
inputs against 0.42 ms for the two GEMMs.

The correlation is circular over the padded HxW input; none of it wraps, because:
  * forward: y[p] = sum_i x[p+i] w[i] reads p+i <= (OH-1)+(KH-1) = H-1;
  * input gradient: dx[q] = sum_i g[q-i] w[i] on g zero-padded to HxW; q-i < 0 wraps to
    rows >= H-KH+1 = OH, which are the zero padding;
  * weight gradient: dw[i] = sum_p g[p] x[p+i], the forward's range again.
So the results are the convolution's, to the rounding of the transforms (a few units of
float32 precision relative to the largest term: tests/test_nn_fourier.py).

The spectra obey one convention: spectrum(a) = F_H a F_W^T with F[k, p] = exp(-2 pi i kp/n),
kept as (H * (W//2+1), channels, N).  The weights' spectrum enters conjugated (correlation,
not convolution).  The backward transforms g with the conjugate matrices, which gives
conj(spectrum(g)) directly (g is real), and so needs no conjugation pass:
  dw spectrum = conj(G) @ X^T per frequency (O, N) @ (N, C);
  conj(dx spectrum) = conj(W)^T @ conj(G) (C, O) @ (O, N), transformed back with the
  conjugate inverse matrices, whose real part is dx.

Where it pays (``kernels._use_fourier`` has the figures): 16+ channels on small maps.  The
dense DFT matrices cost O(H) per pixel and every transform is a pass over complex arrays,
so large maps lose.  Tried and not kept: overlap-save tiles (the map cut into overlapping
tiles of 4-14 output pixels a side, the tiles batched as extra images), which bounds that
cost per pixel.  It lost to the whole-map transform and more to today's paths, forward +
backward at batch 64 (Zen 4, median of 9): the CIFAR CNN's 32->32 3x3 at 32x32 59 ms
today, 87 whole-map, 99-146 tiled; 64->64 at 16x16 48 / 53 / 60-123; 32->64 at 16x16
25 / 37 / 44-52.  With 32-64 channels the per-frequency products save too little beside
the tiling copies and the extra transforms.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np


class Plan(NamedTuple):
    """The DFT matrices of one (H, W, KH, KW, dtype); ``wf`` = W//2 + 1 frequencies along W."""
    forward_w: np.ndarray   # (2*wf, W) real: rows cos then -sin, the half spectrum along W
    forward_h: np.ndarray   # (H, H) complex
    inverse_h: np.ndarray   # (H, H) complex, with the 1/H
    inverse_w: np.ndarray   # (W, wf) complex, with the 1/W and the weights of the half spectrum
    kernel: np.ndarray      # (KH*KW, H*wf) complex: spectrum of a kernel tap at (i, j)
    kernel_inverse: np.ndarray  # (KH*KW, H*wf) complex: back to the taps, real part taken


class Spectrum(NamedTuple):
    """What the forward keeps for the backward: the input's spectrum and the weights'."""
    x: np.ndarray        # (H*wf, C, N) complex
    w_conj: np.ndarray   # (H*wf, O, C) complex: conj(spectrum(weight))
    padded_shape: tuple  # (C, H, W, N) of the padded input
    plan: Plan


@functools.lru_cache(maxsize=16)
def _plan(h: int, w: int, kh: int, kw: int, dtype_name: str) -> Plan:
    real = np.dtype(dtype_name)
    cplx = np.result_type(real, np.complex64)
    wf = w // 2 + 1
    fw = np.exp(-2j * np.pi * np.outer(np.arange(wf), np.arange(w)) / w)       # (wf, W)
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)        # (H, H)
    half = np.full(wf, 2.0)  # a real signal's spectrum: the frequencies not stored count twice
    half[0] = 1.0
    if w % 2 == 0:
        half[-1] = 1.0
    iw = half * np.exp(2j * np.pi * np.outer(np.arange(w), np.arange(wf)) / w) / w  # (W, wf)
    ih = np.exp(2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h) / h
    tap_h, tap_w = np.divmod(np.arange(kh * kw), kw)
    phase = np.outer(tap_h, np.arange(h))[:, :, None] / h + np.outer(tap_w, np.arange(wf))[:, None, :] / w
    kernel = np.exp(-2j * np.pi * phase).reshape(kh * kw, h * wf)
    kernel_inverse = (np.exp(2j * np.pi * phase) * half / (h * w)).reshape(kh * kw, h * wf)
    return Plan(np.concatenate([fw.real, fw.imag]).astype(real), fh.astype(cplx), ih.astype(cplx),
                iw.astype(cplx), kernel.astype(cplx), kernel_inverse.astype(cplx))


def plan_for(padded_shape, weight) -> Plan:
    _, h, w, _ = padded_shape
    return _plan(h, w, weight.shape[2], weight.shape[3], np.dtype(weight.dtype).name)


def _spectrum(a, plan: Plan, conjugate: bool = False):
    """spectrum (H*wf, C, N) of the real CHWN array a (C, R, S, N), read as zero-padded to
    HxW when R < H or S < W (the output gradient).  ``conjugate``: its complex conjugate."""
    c, r, s, n = a.shape
    h, wf = plan.forward_h.shape[0], plan.forward_w.shape[0] // 2
    # along W: one (2wf, S) @ (S, N) product per channel and row, in place on the CHWN input
    along_w = np.matmul(plan.forward_w[:, :s], a)  # (C, R, 2wf, N): cos rows, then -sin rows
    z = np.empty((r, wf, c, n), dtype=plan.forward_h.dtype)
    z.real = along_w[:, :, :wf].transpose(1, 2, 0, 3)
    if conjugate:  # negated as it is copied, not in a second pass
        np.negative(along_w[:, :, wf:].transpose(1, 2, 0, 3), out=z.imag)
        fh = plan.forward_h[:, :r].conj()
    else:
        z.imag = along_w[:, :, wf:].transpose(1, 2, 0, 3)
        fh = plan.forward_h[:, :r]
    return (fh @ z.reshape(r, wf * c * n)).reshape(h * wf, c, n)


def _real_inverse(spec, plan: Plan, rows: int, cols: int, conjugate: bool = False):
    """The real CHWN array (C, rows, cols, N): the first rows x cols pixels of the inverse
    transform of ``spec`` (H*wf, C, N); ``conjugate``: of its complex conjugate."""
    _, c, n = spec.shape
    h, wf = plan.forward_h.shape[0], plan.forward_w.shape[0] // 2
    ih, iw = plan.inverse_h[:rows], plan.inverse_w[:cols]
    if conjugate:
        ih, iw = ih.conj(), iw.conj()
    along_h = (ih @ spec.reshape(h, wf * c * n)).reshape(rows, wf, c * n)
    pixels = np.matmul(iw, along_h)  # (rows, cols, C*N); its imaginary part is rounding
    return np.ascontiguousarray(pixels.real.reshape(rows, cols, c, n).transpose(2, 0, 1, 3))


def forward(xc, weight, bias):
    """y (O, OH, OW, N) = the stride-1 correlation of the padded CHWN input xc with weight
    (O, C, KH, KW), plus bias; and the Spectrum the backward needs."""
    o, c, kh, kw = weight.shape
    _, h, w, n = xc.shape
    plan = plan_for(xc.shape, weight)
    x_spec = _spectrum(xc, plan)
    w_conj = np.ascontiguousarray((weight.reshape(o * c, kh * kw) @ plan.kernel.conj()).T)
    w_conj = w_conj.reshape(-1, o, c)
    y = _real_inverse(np.matmul(w_conj, x_spec), plan, h - kh + 1, w - kw + 1)
    if bias is not None:
        y += bias[:, None, None, None]
    return y, Spectrum(x_spec, w_conj, xc.shape, plan)


def backward(gc, weight, cache: Spectrum, weight_grad, need_input_grad: bool = True):
    """Accumulate dW of ``forward`` from the CHWN output gradient gc; return the padded
    CHWN input gradient, or None.  (The bias gradient is the caller's: the same for every
    conv path, ``kernels.conv2d_backward`` computes it.)"""
    o, c, kh, kw = weight.shape
    _, h, w, n = cache.padded_shape
    plan = cache.plan
    g_conj = _spectrum(gc, plan, conjugate=True)  # (H*wf, O, N)
    dw_spec = np.matmul(g_conj, cache.x.transpose(0, 2, 1))  # (H*wf, O, C)
    taps = plan.kernel_inverse @ dw_spec.reshape(-1, o * c)  # (KH*KW, O*C)
    weight_grad += taps.real.T.reshape(o, c, kh, kw)
    if not need_input_grad:
        return None
    dx_conj = np.matmul(cache.w_conj.transpose(0, 2, 1), g_conj)  # (H*wf, C, N)
    return _real_inverse(dx_conj, plan, h, w, conjugate=True)
