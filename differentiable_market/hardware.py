"""What the machine can do fast: CPU model, the ISA flags the code relies on, torch's dispatch level, native bf16.

Only the standard library and torch. Everything is read at call time, so the environment variables that cap the
kernels torch may use (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``) are honoured as the process sees them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

CPUINFO = Path("/proc/cpuinfo")
# oneDNN ISA caps below AVX512_CORE_BF16: under them oneDNN has no bf16 dot-product instructions and emulates bf16,
# or torch hands the matmul to ATen's reference kernel. On a 2-core AMD EPYC with avx512_bf16, bf16 matmul ran at about
# twice the float32 rate natively, half of it under AVX512_CORE and about 1/100 of it under AVX2.
ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute bf16 dot products


class Bf16Support(NamedTuple):
    """Whether bf16 matmul runs natively on this CPU, and why (a short phrase for messages)."""

    native: bool
    why: str


@dataclass(frozen=True)
class MachineInfo:
    """One machine as the training defaults see it. The GPU fields are None unless a CUDA device was asked about."""

    cpu_model: str
    avx2: bool
    avx512: bool  # avx512f
    avx512_bf16: bool
    amx: bool  # amx_tile or amx_bf16
    aten_capability: str  # ATen's CPU dispatch level: "DEFAULT", "AVX2", "AVX512", ...
    onednn_max_isa: str | None  # ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) when set
    native_bf16: bool
    native_bf16_why: str
    threads: int  # torch intra-op threads
    gpu_name: str | None = None
    gpu_bf16: bool | None = None

    def describe(self) -> str:
        """One line, e.g. ``AMD EPYC; AVX2 AVX512 AVX512_BF16; ATen AVX512; native bf16 yes; 2 threads``."""
        isa = [name.upper() for name in ("avx2", "avx512", "avx512_bf16", "amx") if getattr(self, name)]
        parts = [self.cpu_model, " ".join(isa) or "no AVX2", f"ATen {self.aten_capability}"]
        if self.onednn_max_isa:
            parts.append(f"ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}")
        parts += [f"native bf16 {'yes' if self.native_bf16 else 'no'}", f"{self.threads} threads"]
        if self.gpu_name is not None:
            parts.append(f"GPU {self.gpu_name} (bf16 {'yes' if self.gpu_bf16 else 'no'})")
        return "; ".join(parts)


def cpu_model() -> str:
    """The "model name" of the first processor in /proc/cpuinfo, else what ``platform`` knows."""
    for line in _cpuinfo_lines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    """ISA flags of the first processor in /proc/cpuinfo; empty where there is none (not Linux, or not x86)."""
    for line in _cpuinfo_lines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _cpuinfo_lines() -> list[str]:
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as fh:
            lines = []
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                lines.append(line)
            return lines
    except OSError:
        return []


def aten_capability() -> str:
    """ATen's CPU kernel dispatch level; ``ATEN_CPU_CAPABILITY`` lowers it."""
    return torch.backends.cpu.get_cpu_capability()


def onednn_max_isa() -> str | None:
    """The ISA cap given to oneDNN, upper-cased, or None. oneDNN reads ONEDNN_MAX_CPU_ISA, then DNNL_MAX_CPU_ISA."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def torch_bf16_cpu_check() -> bool:
    """torch's own test, which oneDNN answers from its effective ISA (at least AVX512_CORE on x86). It is True on
    AVX512 CPUs without bf16 instructions too, where oneDNN emulates bf16, so it is necessary, not sufficient."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and torch.backends.mkldnn.is_available() and check())


def cpu_bf16_support() -> Bf16Support:
    """Whether this process gets native bf16 matmul on the CPU: torch's oneDNN check, no ``ONEDNN_MAX_CPU_ISA`` cap
    below AVX512_CORE_BF16, and (where /proc/cpuinfo lists x86 flags) avx512_bf16 or amx_bf16 in hardware."""
    cap = onednn_max_isa()
    if cap in ONEDNN_ISAS_WITHOUT_BF16:
        return Bf16Support(False, f"ONEDNN_MAX_CPU_ISA={cap} is below AVX512_CORE_BF16")
    if not torch_bf16_cpu_check():
        return Bf16Support(False, f"oneDNN has no bf16 kernels here, ATen dispatch {aten_capability()}")
    flags = cpu_flags()
    if not flags:
        return Bf16Support(True, "oneDNN reports bf16 support")
    present = [flag for flag in BF16_FLAGS if flag in flags]
    if not present:
        return Bf16Support(False, "the CPU lacks avx512_bf16 and amx_bf16")
    return Bf16Support(True, " and ".join(present))


def cuda_bf16_supported() -> bool:
    """bf16 in hardware on the current CUDA device (Ampere or later), not the emulation torch also accepts."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def machine_info(device: torch.device | None = None) -> MachineInfo:
    """Describe this machine; with a CUDA ``device``, its card too."""
    flags = cpu_flags()
    bf16 = cpu_bf16_support()
    on_gpu = device is not None and device.type == "cuda"
    return MachineInfo(
        cpu_model=cpu_model(),
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        avx512_bf16="avx512_bf16" in flags,
        amx=bool(flags & {"amx_tile", "amx_bf16"}),
        aten_capability=aten_capability(),
        onednn_max_isa=onednn_max_isa(),
        native_bf16=bf16.native,
        native_bf16_why=bf16.why,
        threads=torch.get_num_threads(),
        gpu_name=torch.cuda.get_device_name(device) if on_gpu else None,
        gpu_bf16=cuda_bf16_supported() if on_gpu else None,
    )
