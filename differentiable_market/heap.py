"""How the C allocator keeps the CPU memory PyTorch frees: set once per training process (``TrainConfig.cpu_heap``).

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves a request above its mmap threshold with
fresh pages from the kernel and hands them back on ``free``; the threshold starts at 128 KiB and rises only as such
blocks are freed, and whenever more than twice the threshold lies free at the top of the heap, the top goes back to
the kernel too. A training step allocates and frees thousands of tensors of 0.1 to 100 MiB (the rollout loop's
per-bar tensors, the encoder's activations), so the kernel faulted in and zeroed the same memory again every step:
at 256 assets on 2 cores, the kernel's share was a third of a step (``fill_`` alone, the first touch, took 1.8 s).

"keep" fixes the threshold at glibc's ceiling, 32 MiB, and lets up to 1 GiB lie free at the heap's top, so blocks up
to 32 MiB are reused from step to step without the kernel. Larger blocks are still mapped and unmapped, so the peak
resident memory does not grow with fragmentation (turning mmap off altogether was faster still at 256 assets, but its
peak grew by a third, and a 1,024-asset step no longer fitted in 8 GB). "system" leaves the allocator as the process
has it. Only glibc is set; elsewhere (macOS, musl) both modes leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Literal

CpuHeap = Literal["keep", "system"]

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for the mmap threshold on 64-bit (mallopt refuses more)
KEEP_TRIM_THRESHOLD = 1 << 30  # free memory the heap's top may hold before it goes back to the kernel


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def set_cpu_heap(mode: CpuHeap) -> bool:
    """Apply ``mode`` to this process's allocator; True when glibc took the "keep" settings, False otherwise
    ("system", or a C library other than glibc). Process-wide and lasting: later Trainers in the process see it."""
    libc = _glibc()
    if mode == "system" or libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD))
