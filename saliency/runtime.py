"""Process-wide CPU settings that make torch faster here, applied once at start-up.

glibc hands every allocation above a (dynamic) threshold back to the kernel when it is
freed, so each batch of a few-MB tensors page-faults its memory in again. Raising the mmap
threshold to 1 GiB and never trimming the heap keeps that memory for the next batch:
measured on this project's 2-core machine, the `scenes` generator's bare forward went from
about 2,700 to 5,500 images/s (benchmarks/synthesize_speed.py, rounds of 4 s). The cost is
that the process keeps its peak heap until it exits. Set SALIENCY_DEFAULT_MALLOC=1 to opt
out; no effect where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_applied = False


def tune_cpu_allocator() -> bool:
    """Apply the glibc settings above once; True if they took effect."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("SALIENCY_DEFAULT_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    _applied = ok
    return ok
