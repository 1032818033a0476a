"""What the commands print, at the verbosity the user asked for (``--quiet``, ``--verbose``), and progress bars that
run only on a terminal.

Levels: ``QUIET`` prints warnings and each command's result (the outcome line, the verdict, where the files went);
``NORMAL`` adds what a run is doing (data notes, run folder, validation lines); ``VERBOSE`` adds detail (each
metrics row, timings). The level is a context variable: a command sets it for its own call (``verbosity``) and code
called from Python without a command prints at ``NORMAL``, as it always did.

Everything goes to standard output through ``tqdm.write``, so a line printed while a bar is drawn does not tear it;
bars go to standard error and are drawn only when it is a terminal (a log file gets no carriage-return junk).
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

QUIET, NORMAL, VERBOSE = 0, 1, 2
_LEVEL: contextvars.ContextVar[int] = contextvars.ContextVar("differentiable_market_verbosity", default=NORMAL)


def level() -> int:
    return _LEVEL.get()


@contextlib.contextmanager
def verbosity(value: int) -> Iterator[None]:
    """Print at ``value`` (QUIET, NORMAL or VERBOSE) inside the block."""
    token = _LEVEL.set(value)
    try:
        yield
    finally:
        _LEVEL.reset(token)


def level_of(quiet: bool, verbose: bool) -> int:
    """The level that ``--quiet`` / ``--verbose`` ask for (both given: quiet wins)."""
    return QUIET if quiet else VERBOSE if verbose else NORMAL


def _write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def say(message: str) -> None:
    """What the command is doing: printed unless ``--quiet``."""
    if level() >= NORMAL:
        _write(message)


def detail(message: str) -> None:
    """Detail printed with ``--verbose`` only."""
    if level() >= VERBOSE:
        _write(message)


def warn(message: str) -> None:
    """A warning: always printed."""
    _write(message)


def result(message: str) -> None:
    """The command's result (outcome, verdict, where its files are): always printed."""
    _write(message)


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: standard error, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def bars_enabled(requested: bool = True) -> bool:
    """Whether to draw progress bars: asked for, not ``--quiet``, and standard error is a terminal."""
    return requested and level() >= NORMAL and is_terminal()


def progress_bar(total: int, *, initial: int = 0, desc: str | None = None, unit: str = "step", enabled: bool = True,
                 position: int | None = None, leave: bool = True) -> Any:
    """A tqdm bar on standard error, disabled unless ``bars_enabled(enabled)``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not bars_enabled(enabled),
                dynamic_ncols=True, position=position, leave=leave, file=sys.stderr)


def format_duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# --- numba's first compilation ---------------------------------------------------------------------------------------

def uncompiled_kernels(modules: Iterable[ModuleType]) -> list[str]:
    """Names of the numba kernels of ``modules`` that this process has not compiled and that have no usable on-disk
    cache, so that their first call compiles them (seconds each). Reads numba's cache index through its internal
    objects; where those change, it returns [] (no message rather than a wrong one)."""
    out = []
    for module in modules:
        for name, obj in vars(module).items():
            cache = getattr(obj, "_cache", None)
            if cache is None or not hasattr(obj, "signatures") or obj.signatures:
                continue
            try:
                if not cache._cache_file._load_index():  # noqa: SLF001
                    out.append(f"{module.__name__}.{name}")
            except Exception:  # noqa: BLE001  numba's internals moved: say nothing
                return []
    return out


def package_kernels(baselines: bool = False) -> list[ModuleType]:
    """The modules of numba kernels that training on the CPU calls (the policies' loops, the band action, the
    digamma), and with ``baselines`` the online-portfolio baselines' loops (a backtest)."""
    from . import actions, special
    from .policy import kernels

    out = [kernels, actions, special]
    if baselines:
        from .baselines import kernels as olps

        out.append(olps)
    return out


def compile_notice(modules: Iterable[ModuleType]) -> str | None:
    """A one-line notice when the next steps compile numba kernels (first use after install or an update)."""
    names = uncompiled_kernels(modules)
    if not names:
        return None
    return (f"Compiling {len(names)} numba kernels on first use (once: they are cached on disk for later runs); "
            "the first step takes longer.")
