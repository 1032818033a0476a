import dataclasses
import json

import pytest
import torch

from differentiable_market import hardware
from differentiable_market.hardware import Bf16Support, MachineInfo, cpu_bf16_support, machine_info
from differentiable_market.trainer import autocast_choice, compile_choice, resolve_autocast, resolve_compile

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def native_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: Bf16Support(True, "avx512_bf16"))


@pytest.fixture
def emulated_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_support", lambda: Bf16Support(False, "the CPU lacks avx512_bf16"))


def test_auto_takes_bf16_on_a_cpu_with_native_bf16(native_cpu):
    dtype, reason = autocast_choice("auto", CPU)
    assert dtype is torch.bfloat16
    assert reason.startswith("auto:") and "native bf16" in reason and "avx512_bf16" in reason
    assert resolve_autocast("auto", CPU) is torch.bfloat16


def test_auto_stays_float32_where_bf16_would_be_emulated(emulated_cpu):
    dtype, reason = autocast_choice("auto", CPU)
    assert dtype is None
    assert reason.startswith("auto:") and "no native bf16" in reason and "lacks avx512_bf16" in reason
    assert "emulated" in reason
    assert resolve_autocast("auto", CPU) is None


def test_explicit_dtypes_are_honoured_whatever_the_cpu(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(hardware, "cpu_bf16_support", lambda n=native: Bf16Support(n, "why"))
        assert autocast_choice("float32", CPU) == (None, "requested")
        dtype, reason = autocast_choice("bfloat16", CPU)
        assert dtype is torch.bfloat16 and reason.startswith("requested")
        assert ("emulated and slow" in reason) == (not native)


def test_auto_on_cuda_follows_native_bf16_of_the_card(monkeypatch):
    seen = []

    def supported(including_emulation: bool = True) -> bool:
        seen.append(including_emulation)
        return support

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    support = True
    assert autocast_choice("auto", CUDA) == (torch.bfloat16, "auto: this GPU supports bf16")
    support = False
    dtype, reason = autocast_choice("auto", CUDA)
    assert dtype is None and "no native bf16" in reason
    assert autocast_choice("bfloat16", CUDA)[0] is torch.bfloat16
    assert seen and not any(seen)  # emulated bf16 (pre-Ampere) does not count as support


def test_compile_auto_is_off_on_cpu_and_cuda_and_explicit_modes_are_honoured():
    on_cuda, reason = compile_choice("auto", CUDA)
    assert not on_cuda and "minutes" in reason
    on_cpu, reason = compile_choice("auto", CPU)
    assert not on_cpu and reason.startswith("auto:") and "CPU" in reason
    assert compile_choice("on", CPU) == (True, "requested")
    assert compile_choice("off", CUDA) == (False, "requested")
    assert not resolve_compile("auto", CUDA) and not resolve_compile("auto", CPU)
    assert resolve_compile("on", CUDA) and resolve_compile("on", CPU)


@pytest.mark.parametrize("cap", ["AVX2", "avx2", "AVX512_CORE", "AVX512_CORE_VNNI"])
def test_onednn_isa_cap_below_bf16_means_no_native_bf16(monkeypatch, cap):
    monkeypatch.setattr(hardware, "torch_bf16_cpu_check", lambda: True)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    support = cpu_bf16_support()
    assert not support.native and cap.upper() in support.why
    dtype, reason = autocast_choice("auto", CPU)
    assert dtype is None and f"ONEDNN_MAX_CPU_ISA={cap.upper()}" in reason


def test_native_bf16_needs_the_instructions_torch_and_no_cap(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(hardware, "torch_bf16_cpu_check", lambda: True)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    assert cpu_bf16_support() == Bf16Support(True, "avx512_bf16 and amx_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap at or above bf16 changes nothing
    assert cpu_bf16_support().native
    # AVX512 without bf16 instructions (Skylake-SP): torch's check passes, but oneDNN would emulate.
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert cpu_bf16_support() == Bf16Support(False, "the CPU lacks avx512_bf16 and amx_bf16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset())  # no x86 flags to read: trust torch
    assert cpu_bf16_support().native
    monkeypatch.setattr(hardware, "torch_bf16_cpu_check", lambda: False)
    assert not cpu_bf16_support().native


def test_dnnl_spelling_of_the_cap_is_read_too(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx2")
    assert hardware.onednn_max_isa() == "AVX2"
    assert not cpu_bf16_support().native


def test_cpuinfo_model_and_flags_come_from_the_first_processor(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    assert hardware.cpu_model() == "Test CPU 9000"
    assert hardware.cpu_flags() == frozenset({"fpu", "avx2", "avx512f", "avx512_bf16", "amx_tile"})
    info = machine_info(CPU)
    assert (info.avx2, info.avx512, info.avx512_bf16, info.amx) == (True, True, True, True)
    monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
    assert hardware.cpu_flags() == frozenset()
    assert hardware.cpu_model()  # falls back to platform


def test_machine_info_fields_have_their_types_and_round_trip_through_json():
    info = machine_info(CPU)
    assert isinstance(info, MachineInfo)
    hints = {"cpu_model": str, "aten_capability": str, "native_bf16_why": str, "threads": int}
    for name, kind in hints.items():
        assert isinstance(getattr(info, name), kind), name
    for name in ("avx2", "avx512", "avx512_bf16", "amx", "native_bf16"):
        assert isinstance(getattr(info, name), bool), name
    assert info.onednn_max_isa is None or isinstance(info.onednn_max_isa, str)
    assert info.gpu_name is None and info.gpu_bf16 is None
    assert info.threads == torch.get_num_threads()
    assert info.aten_capability == torch.backends.cpu.get_cpu_capability()
    assert info.native_bf16 == cpu_bf16_support().native
    line = info.describe()
    assert info.cpu_model in line and f"{info.threads} threads" in line and "\n" not in line
    assert json.loads(json.dumps(dataclasses.asdict(info))) == dataclasses.asdict(info)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.threads = 1  # type: ignore[misc]


def test_describe_names_the_gpu_when_there_is_one():
    info = MachineInfo("CPU", True, False, False, False, "AVX2", "AVX2", False, "capped", 4, "H100", True)
    assert info.describe() == "CPU; AVX2; ATen AVX2; ONEDNN_MAX_CPU_ISA=AVX2; native bf16 no; 4 threads; GPU H100 " \
        "(bf16 yes)"
