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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: this module loads before it
    import torch

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


PRECISIONS = ("auto", "fp32", "bf16")


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS has one), at least 1: what
    a default pool size is measured against."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value in ``/proc/cpuinfo`` (Linux), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux) and its widest vector instructions,
    for benchmark output: a speed is only meaningful beside the machine it was measured on, and
    one model name ("AMD EPYC") covers CPUs with and without AVX-512 or native bf16."""
    import platform

    name = _cpuinfo("model name") or platform.processor() or platform.machine()
    isa = vector_instructions(set((_cpuinfo("flags") or "").split()))
    return f"{name} ({isa})" if isa else name


def vector_instructions(flags: set[str]) -> str:
    """The widest of the instruction sets that set a CPU's speed here, from its cpuinfo flags."""
    for tag, needed in (("AMX", {"amx_bf16"}), ("AVX-512 BF16", {"avx512_bf16"}), ("AVX-512", {"avx512f"}),
                        ("AVX2", {"avx2"}), ("NEON", {"asimd"})):
        if needed <= flags:
            return tag
    return ""


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    return bool(set((_cpuinfo("flags") or "").split()) & {"avx512_bf16", "amx_bf16"})


class EmulatedPrecisionWarning(UserWarning):
    """bf16 asked for on a CPU without native bf16: torch emulates it, many times slower."""


def resolve_precision(spec: str, device: "torch.device", cpu_bf16: bool = False) -> str:
    """``auto``: bf16 autocast on a CUDA GPU that supports it; on a CPU, bf16 only where the
    caller measured it faster (``cpu_bf16``) and the CPU has native bf16, else fp32.

    Callers pass ``cpu_bf16`` where docs/benchmarks.md holds the measurement: U-Net training
    (train-unet) and the discovery game of a generator whose profile says so (sngan-mnist);
    the scenes generator was no faster in bf16, so the other stages stay fp32 on a CPU.
    """
    import torch

    from saliency.core.errors import ConfigError

    if spec not in PRECISIONS:
        raise ConfigError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    if spec == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        import warnings

        warnings.warn(EmulatedPrecisionWarning(
            "bf16 on a CPU without native bf16 is emulated, many times slower than fp32 (the MNIST game: "
            "13.6x, docs/benchmarks.md); `--precision auto` picks fp32 here"), stacklevel=2)
    if spec != "auto":
        return spec
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_bf16 and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(device: "torch.device", precision: str):
    """A torch.autocast context for ``precision`` (a no-op for fp32)."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def configure_device(device: "torch.device") -> None:
    """Fast math where it costs no accuracy that matters here: TF32 matmuls and cuDNN autotuning."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
