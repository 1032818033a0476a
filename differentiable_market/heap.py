"""How the C allocator keeps the CPU memory PyTorch frees: set once per training process (``TrainConfig.cpu_heap``).

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves a request above its mmap threshold with
fresh pages from the kernel and hands them back on ``free``; the threshold starts at 128 KiB and rises only as such
blocks are freed, and whenever more than twice the threshold lies free at the top of the heap, the top goes back to
the kernel too. A training step allocates and frees thousands of tensors of 0.1 to 100 MiB (the rollout loop's
per-bar tensors, the encoder's activations), so the kernel faulted in and zeroed the same memory again every step:
at 256 assets on 2 cores, the kernel's share was a third of a step (``fill_`` alone, the first touch, took 1.8 s).

- "keep" fixes the threshold at glibc's ceiling, 32 MiB, and lets up to 1 GiB lie free at the heap's top, so blocks
  up to 32 MiB are reused from step to step without the kernel. Larger blocks are mapped afresh whenever the heap
  has no free space for them, and faulted in again: a step at 256 assets allocates about 40 blocks of 32-170 MiB
  (4.5 GB; the rollouts' [bars, rows, windows, assets] buffers, the scoring's concentrations and their gradients),
  and the cross policy's faulted in 0.6-0.7 GB of them per step, a tenth of its time (1.7 us a 4 KiB page).
- "heap" also turns mapping off: every block comes from the heap and is reused. No page is faulted in after the
  first steps, but what lies free inside the heap between blocks counts towards the resident peak: +2% at 256
  assets (3.70 to 3.77 GB), +6-12% at 1,024 with gradient checkpointing (7.0-7.1 to 7.5-7.8 GB, too close to
  8 GB), where steps took 13.0-15.2 s against 14.9-18.6 s (Intel Xeon, 2 cores; see the README's Performance).
- "auto" (the default): "keep" where the run already trades time for memory (``gradient_checkpointing``,
  ``microbatch_windows``), "heap" otherwise.
- "system" leaves the allocator as the process has it.

Only glibc is set; elsewhere (macOS, musl) every mode leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Literal

CpuHeap = Literal["auto", "keep", "heap", "system"]

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536  # glibc's own limit on simultaneously mapped blocks (what "keep" restores)
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


def resolve_cpu_heap(mode: CpuHeap, saves_memory: bool) -> CpuHeap:
    """``mode`` with "auto" resolved: "keep" when the run trades time for memory (``saves_memory``: gradient
    checkpointing or microbatches), "heap" otherwise."""
    if mode != "auto":
        return mode
    return "keep" if saves_memory else "heap"


def set_cpu_heap(mode: CpuHeap, saves_memory: bool = False) -> bool:
    """Apply ``mode`` ("auto" resolved by ``resolve_cpu_heap``) to this process's allocator; True when glibc took
    the "keep" or "heap" settings, False otherwise ("system", or a C library other than glibc). Process-wide and
    lasting: later Trainers in the process see it, or set their own ("keep" turns mapping back on)."""
    mode = resolve_cpu_heap(mode, saves_memory)
    libc = _glibc()
    if mode == "system" or libc is None:
        return False
    mapped = 0 if mode == "heap" else DEFAULT_MMAP_MAX
    return (bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD))
            and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)) and bool(libc.mallopt(M_MMAP_MAX, mapped)))
