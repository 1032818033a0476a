"""The CPU heap's modes (heap.py): "keep" serves blocks up to 32 MiB from the reusable heap and still maps larger
ones; "heap" serves every block from it; "auto" picks between them."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from differentiable_market.heap import resolve_cpu_heap, set_cpu_heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
HEAP_PY = Path(__file__).resolve().parents[2] / "differentiable_market" / "heap.py"

# Runs in a fresh interpreter (the setting is process-wide); loads heap.py by path so torch is not imported.
PROBE = """
import ctypes, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("heap", sys.argv[1])
heap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heap)

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
for mode in sys.argv[2].split(","):  # applied in turn, as Trainers of one process would
    applied = heap.set_cpu_heap(mode)
out = {"applied": applied}
for mib in (24, 40, 200):
    before = libc.mallinfo2()
    block = libc.malloc(mib << 20)
    during = libc.mallinfo2()
    libc.free(block)
    after = libc.mallinfo2()
    out[mib] = {"mapped": during.hblkhd - before.hblkhd, "heap_grown": during.arena - before.arena,
                "trimmed": during.arena - after.arena}
print(json.dumps(out))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, str(HEAP_PY), mode], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="the keep setting applies to glibc only")
def test_keep_serves_blocks_up_to_32_mib_from_a_heap_that_keeps_them():
    system, keep = _probe("system"), _probe("keep")
    assert system["applied"] is False and keep["applied"] is True
    # glibc's own setting in a fresh process: a 24 MiB block is mapped for itself and unmapped on free
    assert system["24"]["mapped"] >= 24 << 20
    # keep: it comes from the heap, which still holds it after the free (the next step reuses it)
    assert keep["24"]["mapped"] == 0
    assert keep["24"]["heap_grown"] >= 16 << 20  # (less than 24 MiB where free space at the top served part of it)
    assert keep["24"]["trimmed"] == 0
    # above the 32 MiB ceiling blocks are still mapped, so fragmentation cannot grow the peak with them
    assert keep["40"]["mapped"] >= 40 << 20


def test_system_leaves_the_allocator_alone():
    assert set_cpu_heap("system") is False


@pytest.mark.skipif(not GLIBC, reason="the heap setting applies to glibc only")
def test_heap_serves_every_block_from_the_heap_and_keep_maps_large_ones_again():
    heap = _probe("heap")
    assert heap["applied"] is True
    for mib in ("24", "40", "200"):  # nothing is mapped, and the heap keeps what was freed for the next step
        assert heap[mib]["mapped"] == 0 and heap[mib]["trimmed"] == 0
    assert heap["200"]["heap_grown"] >= 150 << 20
    # the setting is process-wide: a later Trainer's "keep" turns mapping back on for large blocks
    again = _probe("heap,keep")
    assert again["40"]["mapped"] >= 40 << 20 and again["24"]["mapped"] == 0


def test_auto_keeps_mapping_where_the_run_saves_memory_and_uses_the_heap_otherwise():
    assert resolve_cpu_heap("auto", saves_memory=True) == "keep"
    assert resolve_cpu_heap("auto", saves_memory=False) == "heap"
    assert resolve_cpu_heap("keep", saves_memory=False) == "keep"
    assert resolve_cpu_heap("system", saves_memory=False) == "system"
