"""CPU-side performance settings that only a program, not a library import, should make.

glibc serves allocations above its (dynamic) mmap threshold with fresh ``mmap`` pages and
returns them to the system when freed, and trims the heap top above its trim threshold. A
PyTorch model on the CPU allocates and frees its activations at every step, so it page-faults
them in anew each time. Keeping them in the heap made energy+gradient evaluations of an MNIST
CNN (batch 64) 1.28x faster on 2 cores (``benchmarks/bench_sampler.py``, alternating fresh
processes with and without it). The command-line tool and the benchmarks call this at
start-up; a library user can call it too, at the price of freed memory kept by the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(*, mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds; returns False where there is no glibc.

    Parameters
    ----------
    mmap_threshold : int
        Allocations below this many bytes come from the heap (glibc's maximum is 32 MiB).
    trim_threshold : int
        Free memory at the heap top kept before it is returned to the system.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
