"""Console output levels, progress bars only on a terminal, and the notice of numba's first compilation
(console.py)."""

import importlib.util
import io
import sys
import textwrap

import pytest

from differentiable_market import console


def test_levels_decide_what_prints(capsys):
    for level, expected in ((console.QUIET, ["w", "r"]), (console.NORMAL, ["s", "w", "r"]),
                            (console.VERBOSE, ["s", "d", "w", "r"])):
        with console.verbosity(level):
            console.say("s")
            console.detail("d")
            console.warn("w")
            console.result("r")
        assert capsys.readouterr().out.split() == expected
    assert console.level() == console.NORMAL  # the level is reset after the block
    assert console.level_of(True, True) == console.QUIET and console.level_of(False, True) == console.VERBOSE


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_are_drawn_only_on_a_terminal_and_never_when_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not console.bars_enabled()
    bar = console.progress_bar(10)
    bar.update(5)
    bar.close()
    assert sys.stderr.getvalue() == ""  # a log file gets nothing
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert console.bars_enabled() and not console.bars_enabled(False)
    with console.verbosity(console.QUIET):
        assert not console.bars_enabled()
    bar = console.progress_bar(10, desc="x")
    bar.update(5)
    bar.close()
    assert "5/10" in sys.stderr.getvalue()


def test_durations_read_as_a_person_would_say_them():
    assert [console.format_duration(s) for s in (0.4, 59, 61, 3599, 3600, 7384)] == \
        ["0 s", "59 s", "1 min 01 s", "59 min 59 s", "1 h 00 min", "2 h 03 min"]


def test_the_first_compilation_of_a_numba_kernel_is_announced_once(tmp_path, monkeypatch):
    (tmp_path / "dm_probe_kernels.py").write_text(textwrap.dedent("""
        from numba import njit

        @njit(cache=True)
        def add_one(x):
            return x + 1
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.find_spec("dm_probe_kernels")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert console.uncompiled_kernels([module]) == ["dm_probe_kernels.add_one"]
    assert "Compiling 1 numba kernels on first use" in console.compile_notice([module])
    assert module.add_one(1) == 2  # compiles and writes the cache
    assert console.uncompiled_kernels([module]) == [] and console.compile_notice([module]) is None
    fresh = importlib.util.module_from_spec(spec)  # a new process: the on-disk cache serves it
    spec.loader.exec_module(fresh)
    assert console.uncompiled_kernels([fresh]) == []


def test_the_packages_kernels_are_found():
    names = {m.__name__ for m in console.package_kernels(baselines=True)}
    assert names == {"differentiable_market.policy.kernels", "differentiable_market.actions",
                     "differentiable_market.special", "differentiable_market.baselines.kernels"}
    for module in console.package_kernels(baselines=True):
        assert any(hasattr(obj, "_cache") for obj in vars(module).values()), module.__name__
