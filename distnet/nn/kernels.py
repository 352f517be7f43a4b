"""Numeric kernels for convolution and pooling, kept apart from the layer bookkeeping.

Memory layout: layers speak NCHW (the public contract), but these kernels work on NHWC
*memory*.  A conv output is computed as an (N*OH*OW, O) matrix, i.e. NHWC, and handed back
as a transposed NCHW *view* of it: no copy.  Element-wise layers keep that layout (NumPy's
ufuncs preserve it), and the next pooling or conv layer transposes the view back to NHWC,
which is contiguous again: no copy either.  Why NHWC: the im2col row of an output pixel is
then (kernel-row, kernel-col, channel) with the channel innermost and contiguous, and the
input gradient can be added back one kernel position at a time in contiguous channel blocks,
without ``np.add.at``.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW view -> NHWC view (contiguous when the memory already is NHWC)."""
    return x.transpose(0, 2, 3, 1)


def to_nchw(x: np.ndarray) -> np.ndarray:
    """NHWC view -> NCHW view of the same memory."""
    return x.transpose(0, 3, 1, 2)


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"input size {size} (padding {padding}) is smaller than kernel {kernel}")
    return out


def pad_nhwc(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad H and W of an NHWC array; returns a contiguous array."""
    if padding == 0:
        return np.ascontiguousarray(x)
    n, h, w, c = x.shape
    out = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    out[:, padding:padding + h, padding:padding + w, :] = x
    return out


def window_view(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """(N, OH, OW, KH, KW, C) read-only view of the sliding windows of contiguous NHWC x."""
    n, h, w, c = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    return as_strided(x, (n, oh, ow, kh, kw, c), (sn, sh * stride, sw * stride, sh, sw, sc),
                      writeable=False)


def im2col(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Rows = output pixels (N*OH*OW), columns = (KH, KW, C) of the window; one copy."""
    win = window_view(x, kh, kw, stride)
    n, oh, ow = win.shape[:3]
    return win.reshape(n * oh * ow, kh * kw * x.shape[3])


def window_slices(kh: int, kw: int, stride: int, oh: int, ow: int):
    """For each kernel position (i, j): the strided H and W slices it reads from the input."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + stride * (oh - 1) + 1, stride), slice(j, j + stride * (ow - 1) + 1, stride)


def conv2d_forward(x, weight, bias, stride: int, padding: int):
    """x NCHW (any memory layout), weight (O, C, KH, KW) -> (y NCHW view of NHWC, cache)."""
    o, c, kh, kw = weight.shape
    xh = pad_nhwc(to_nhwc(x), padding)
    n, hp, wp, _ = xh.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = im2col(xh, kh, kw, stride)
    wmat = weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
    y = cols @ wmat
    if bias is not None:
        y += bias
    return to_nchw(y.reshape(n, oh, ow, o)), (cols, xh.shape)


def conv2d_backward(grad_out, weight, cache, stride: int, padding: int,
                    weight_grad, bias_grad, need_input_grad: bool = True):
    """Accumulate dW, db into the given arrays; return dL/dx (NCHW view) or None."""
    cols, padded_shape = cache
    o, c, kh, kw = weight.shape
    n, hp, wp, _ = padded_shape
    g = to_nhwc(grad_out)
    oh, ow = g.shape[1], g.shape[2]
    g2 = g.reshape(n * oh * ow, o)
    # dW[o, (kh, kw, c)] = sum over pixels; stored as (O, C, KH, KW)
    dw = (g2.T @ cols).reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
    weight_grad += dw
    if bias_grad is not None:
        bias_grad += g2.sum(axis=0)
    if not need_input_grad:
        return None
    dxh = np.zeros(padded_shape, dtype=cols.dtype)
    wk = weight.transpose(2, 3, 0, 1)  # (KH, KW, O, C)
    for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
        dxh[:, si, sj, :] += (g2 @ wk[i, j]).reshape(n, oh, ow, c)
    if padding:
        dxh = dxh[:, padding:hp - padding, padding:wp - padding, :]
    return to_nchw(dxh)


def maxpool_forward(x, kh: int, kw: int, stride: int):
    """Max over each window; remembers which kernel position won (first max on ties)."""
    xh = to_nhwc(x)
    n, h, w, c = xh.shape
    oh, ow = output_size(h, kh, stride), output_size(w, kw, stride)
    out = None
    argpos = np.zeros((n, oh, ow, c), dtype=np.uint8)
    for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
        v = xh[:, si, sj, :]
        if out is None:
            out = v.copy()
            continue
        better = v > out
        np.copyto(out, v, where=better)
        np.copyto(argpos, i * kw + j, where=better)
    return to_nchw(out), (argpos, xh.shape)


def maxpool_backward(grad_out, kh: int, kw: int, stride: int, cache):
    argpos, shape = cache
    g = to_nhwc(grad_out)
    oh, ow = g.shape[1], g.shape[2]
    dxh = np.zeros(shape, dtype=grad_out.dtype)
    overlapping = stride < max(kh, kw)
    for i, j, si, sj in window_slices(kh, kw, stride, oh, ow):
        contrib = np.where(argpos == i * kw + j, g, 0)
        if overlapping:
            dxh[:, si, sj, :] += contrib
        else:
            dxh[:, si, sj, :] = contrib
    return to_nchw(dxh)


def avgpool_forward(x, kh: int, kw: int, stride: int):
    xh = to_nhwc(x)
    n, h, w, c = xh.shape
    oh, ow = output_size(h, kh, stride), output_size(w, kw, stride)
    out = np.zeros((n, oh, ow, c), dtype=x.dtype)
    for _, _, si, sj in window_slices(kh, kw, stride, oh, ow):
        out += xh[:, si, sj, :]
    out *= 1.0 / (kh * kw)
    return to_nchw(out), xh.shape


def avgpool_backward(grad_out, kh: int, kw: int, stride: int, shape):
    g = to_nhwc(grad_out) * (1.0 / (kh * kw))
    oh, ow = g.shape[1], g.shape[2]
    dxh = np.zeros(shape, dtype=grad_out.dtype)
    for _, _, si, sj in window_slices(kh, kw, stride, oh, ow):
        dxh[:, si, sj, :] += g
    return to_nchw(dxh)
