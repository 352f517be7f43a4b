"""Process-wide settings that make NumPy training faster: keep freed memory for reuse.

``keep_freed_memory()`` asks glibc's malloc to serve every allocation from its heap and to
never hand freed memory back to the kernel.  Why: a training step allocates and frees the
same large activation and gradient arrays every step.  glibc serves blocks above its mmap
threshold (dynamic, at most 32 MiB) with a fresh mmap and unmaps them on free, and it trims
the top of the heap once more than twice that threshold is free; either way the next step's
arrays are new pages, and the kernel zeroes each one on first touch.  On cifar-resnet at
128 images per rank (activations of 33.5 MB, over the 32 MiB ceiling) ``perf`` showed
8% of a rank's time in the kernel's ``clear_page_erms`` (plus the page faults' own cost),
measured on the 2-core Xeon during the examples/cifar10.toml run.  With the heap kept, the
pages are faulted in once and reused.  Measured A/B, one process, 10 cifar-resnet steps of
128 images from that run's final weights, alternating: kernel time 1.31 and 1.69 s without,
0.28 and 0.23 s with (of ~17 s); 72.6 and 69.1 images/s without, 74.1 and 77.1 with.
The price is that the process keeps its peak heap until it exits, which peak RSS
(what the memory targets measure) counts anyway.

It is called by the command-line entry points (``distnet.train``, ``distnet.bench``), not on
import: a library must not change the allocator of its user's process behind their back.
``distnet.process_tuning.keep_freed_memory()`` is one line for a user's own training script.
Without glibc (musl, macOS) it does nothing and says so by returning False.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# glibc's <malloc.h> parameter numbers for mallopt().
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_done = False


def keep_freed_memory() -> bool:
    """Serve all allocations from the heap (no mmap) and never trim it; True when set.

    Idempotent; returns False where the C library is not glibc or refuses the settings."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success.  The trim threshold is an int: 2**31 - 1 bytes is ~2 GiB
    # of free heap top before any is returned, beyond any step's working set here.
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
