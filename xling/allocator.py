"""Keep freed memory for the next step: glibc's malloc set for tensors that are freed and allocated again each step.

A training step frees and allocates the same large tensors (activations, logits, gradients) every time. glibc serves
an allocation above its mmap threshold (128 KiB at start, raised on its own up to 32 MiB) with a fresh mmap and
hands it back with munmap when freed, so every step page-faults its working set in again: ~18,000 minor faults a
step of the demo model, ~9% of a compiled bf16 step (bench/train_throughput.py; docs/measurements.md). PyTorch's CPU
tuning guide answers with jemalloc or tcmalloc through LD_PRELOAD; two mallopt calls give the same here without a
preload: allocations up to 32 MiB come from the heap, and up to 1 GiB of freed heap is kept rather than trimmed.

    keep_freed_memory()   # once per process, before the work; the CLI and Trainer call it

It leaves malloc alone off Linux/glibc, and when the user chose already: a preloaded allocator or glibc's own
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (or GLIBC_TUNABLES) in the environment.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to here come from the heap
TRIM_THRESHOLD = 1 << 30  # free heap kept before malloc gives memory back to the system
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True when they are set (now or before)."""
    global _done
    if _done is None:
        _done = _set_thresholds()
    return _done


def _set_thresholds() -> bool:
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # not a POSIX confstr name here
        glibc = None
    if not glibc or any(os.environ.get(k) for k in _USER_SETTINGS) or os.environ.get("LD_PRELOAD"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
