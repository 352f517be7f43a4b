"""The one BLAS call np.matmul does not offer: C = A @ B + beta * C on strided matrices.

``np.matmul`` always overwrites its output, so summing nine (or 25) GEMMs into one
convolution output costs a temporary and a NumPy add per term; it also cannot say "the
rows of B start 4 values further on".  The direct convolution in ``kernels`` needs both:
each kernel position is one GEMM that reads the input in place, at an offset, and adds
into the output.  So this module calls ``cblas_sgemm``/``cblas_dgemm`` through ctypes,
from the OpenBLAS that NumPy's own wheel ships (``numpy.libs/libscipy_openblas64_*``,
or the older ``libopenblas64_p*``): no new dependency, and the same kernels np.matmul runs.

When no such library is found (a NumPy built against MKL or Accelerate, say), or the
library fails the self-check below, ``available()`` is False and the kernels keep their
im2col path; nothing else changes.  ``DISTNET_DIRECT_CONV=0`` turns it off by hand.

The calls take raw addresses: the kernels compute them from a base array's address plus
offsets, because ``ndarray.ctypes`` costs about a microsecond per access and a CIFAR step
makes a few thousand of these calls.  ``gemm`` checks nothing, ``gemm_arrays`` (for the
tests) checks everything.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

# (library file patterns, symbol prefix, symbol suffix, integer type), in the order tried
_CANDIDATES = (
    ("libscipy_openblas64_*", "scipy_cblas_", "64_", ctypes.c_int64),  # NumPy >= 2.0 wheels
    ("libscipy_openblas*", "scipy_cblas_", "", ctypes.c_int32),
    ("libopenblas64_*", "cblas_", "64_", ctypes.c_int64),               # NumPy 1.2x wheels
    ("libopenblas*", "cblas_", "", ctypes.c_int32),
)

_functions: dict = {}  # np.dtype -> the ctypes function, once loaded and checked


def _library_dirs() -> list[str]:
    root = os.path.dirname(os.path.dirname(np.__file__))
    return [os.path.join(root, "numpy.libs"), os.path.join(os.path.dirname(np.__file__), ".dylibs")]


def _load() -> dict:
    if os.environ.get("DISTNET_DIRECT_CONV", "1") == "0":
        return {}
    for pattern, prefix, suffix, integer in _CANDIDATES:
        for folder in _library_dirs():
            for path in sorted(glob.glob(os.path.join(folder, pattern + ".so*")) +
                               glob.glob(os.path.join(folder, pattern + ".dylib"))):
                try:
                    lib = ctypes.CDLL(path)
                    found = {}
                    for dtype, letter, real in ((np.dtype(np.float32), "s", ctypes.c_float),
                                                (np.dtype(np.float64), "d", ctypes.c_double)):
                        fn = getattr(lib, f"{prefix}{letter}gemm{suffix}")
                        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, integer, integer, integer,
                                       real, ctypes.c_void_p, integer, ctypes.c_void_p, integer,
                                       real, ctypes.c_void_p, integer]
                        fn.restype = None
                        found[dtype] = fn
                except (OSError, AttributeError):
                    continue
                if _self_check(found):
                    return found
    return {}


def _self_check(found: dict) -> bool:
    """One small accumulate-and-transpose product per dtype against np.matmul: a wrong
    integer width or calling convention shows up here, not in a training run."""
    rng = np.random.default_rng(0)
    for dtype, fn in found.items():
        a = rng.standard_normal((3, 5)).astype(dtype)
        b = rng.standard_normal((4, 5)).astype(dtype)
        c = rng.standard_normal((3, 4)).astype(dtype)
        want = a @ b.T + 0.5 * c
        fn(_ROW_MAJOR, _NO_TRANS, _TRANS, 3, 4, 5, 1.0, a.ctypes.data, 5, b.ctypes.data, 5,
           0.5, c.ctypes.data, 4)
        if not np.allclose(c, want, rtol=1e-5, atol=1e-5):
            return False
    return True


def available(dtype=np.float32) -> bool:
    """Whether ``gemm`` can run for this dtype (float32 or float64) here."""
    if "loaded" not in _functions:
        _functions.update(_load())
        _functions["loaded"] = True
    return np.dtype(dtype) in _functions


def gemm(dtype, m: int, n: int, k: int, a: int, lda: int, b: int, ldb: int,
         c: int, ldc: int, beta: float, trans_b: bool = False) -> None:
    """C (m x n, row pitch ldc) = A (m x k) @ B (k x n, or n x k when trans_b) + beta * C.

    a, b, c are addresses; lda, ldb, ldc are row pitches in elements.  Unchecked: the
    caller guarantees the shapes, pitches and dtype (call ``available`` first)."""
    _functions[dtype](_ROW_MAJOR, _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k, 1.0,
                      a, lda, b, ldb, beta, c, ldc)


def _pitch(x: np.ndarray, name: str) -> int:
    if x.ndim != 2 or x.strides[1] != x.itemsize or x.strides[0] % x.itemsize or x.strides[0] < x.shape[1] * x.itemsize:
        raise ValueError(f"{name} must be a 2-D row-major view with unit column stride, got strides {x.strides}")
    return x.strides[0] // x.itemsize


def gemm_arrays(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float = 0.0, trans_b: bool = False) -> None:
    """``gemm`` on arrays, every shape, pitch and dtype checked: c = a @ b(.T) + beta * c."""
    if not (a.dtype == b.dtype == c.dtype) or not available(a.dtype):
        raise ValueError(f"gemm needs one float32 or float64 dtype and a loaded BLAS, got {a.dtype}, {b.dtype}, {c.dtype}")
    bk, bn = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if a.shape[1] != bk or c.shape != (a.shape[0], bn):
        raise ValueError(f"shapes {a.shape} @ {b.shape}{'.T' if trans_b else ''} -> {c.shape} do not match")
    gemm(a.dtype, a.shape[0], bn, a.shape[1], a.ctypes.data, _pitch(a, "a"), b.ctypes.data, _pitch(b, "b"),
         c.ctypes.data, _pitch(c, "c"), beta, trans_b)
