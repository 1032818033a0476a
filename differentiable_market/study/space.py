"""Search spaces: which training flags a study's search may change, and over what values.

A space is a TOML file with one table per training flag (the flag's name with ``-`` or ``_``), for example::

    [lr]                  # a number drawn between low and high; log = true draws its logarithm uniformly
    low = 3e-4
    high = 3e-3
    log = true

    [lookback]            # an integer (both bounds integers), optionally with a step
    low = 32
    high = 128
    step = 32

    [action]              # one of a list
    choices = ["target", "partial", "band"]

Every value is checked up front against the training config's own rules (a value a run would refuse is refused
here, with the line of its table). Flags that decide what the study measures or where it reads and writes (the
data, the evaluation fee, the execution, cash, the seed, the device) cannot be searched: changing them would compare
trials on different questions. ``default_space.toml`` next to this module is the space used when none is given.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..errors import ConfigError

DEFAULT_SPACE = Path(__file__).with_name("default_space.toml")

# Flags a trial may not change, and why (the message a user sees).
FIXED_FLAGS: dict[str, str] = {
    **{f: "it selects the data" for f in ("data_root", "data_glob", "include", "exclude", "max_assets",
                                           "max_fill_bars", "val_fraction", "test_fraction", "embargo_bars")},
    "cost_bps": "it is the evaluation fee every trial is scored at (search --train-cost-bps instead)",
    "include_cash": "it changes the question (what the policy may hold)",
    "execution": "it changes the question (when trades fill)",
    "seed": "seeds are the study's --seeds, not a parameter to select on",
    "device": "it does not change what is learned",
    "dtype": "it does not change what is learned",
    "compile": "it does not change what is learned",
    "cpu_heap": "it does not change what is learned",
    "eval_interval": "it sets when trials are scored and pruned",
    "log_interval": "it does not change what is learned",
    "save_dir": "it does not change what is learned",
    "tensorboard": "it does not change what is learned",
}


@dataclass(frozen=True)
class Param:
    """One searched flag: a float or int range (``log``, ``step``) or a list of ``choices``; ``line`` is where its
    table starts in the file (for messages)."""

    flag: str
    section: str
    field: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] | None = None
    line: int = 0

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "choice"
        return "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"

    def extremes(self) -> list[Any]:
        """The values whose validity implies every value's (the bounds of a range, every choice)."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def describe(self) -> str:
        if self.choices is not None:
            return f"--{self.flag.replace('_', '-')} in {list(self.choices)}"
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step is not None else ""
        return f"--{self.flag.replace('_', '-')} in [{self.low}, {self.high}]{scale}{step}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"flag": self.flag, "kind": self.kind}
        if self.choices is not None:
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high, log=self.log, step=self.step)
        return d


def _table_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of each top-level table header ``[name]`` in the TOML text."""
    out = {}
    for i, raw in enumerate(text.splitlines(), 1):
        s = raw.split("#", 1)[0].strip()
        if s.startswith("[") and s.endswith("]") and not s.startswith("[["):
            out.setdefault(s[1:-1].strip().strip('"').strip("'"), i)
    return out


def load_space(path: str | Path, base: ExperimentConfig) -> tuple[Param, ...]:
    """Read and check a search space file against the study's base config; errors name the file and line."""
    from ..flags import FLAG_FIELDS

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the search space {path}: {exc.strerror or exc}. Pass a TOML file with "
                          f"--space, or leave it out for the default space ({DEFAULT_SPACE}).") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    lines = _table_lines(text)
    params = []
    for key, spec in doc.items():
        line = lines.get(key, 0)
        where = f"{path}, line {line}, [{key}]"
        flag = key.replace("-", "_")
        if flag in FIXED_FLAGS:
            raise ConfigError(f"{where}: --{key.replace('_', '-')} cannot be searched: {FIXED_FLAGS[flag]}.")
        if flag not in FLAG_FIELDS:
            valid = sorted(f.replace("_", "-") for f in FLAG_FIELDS if f not in FIXED_FLAGS)
            raise ConfigError(f"{where}: no training flag --{key.replace('_', '-')}; searchable flags: "
                              f"{', '.join(valid)}.")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a table with low/high (and optionally log, step) or choices, got "
                              f"{spec!r}. Write it as [{key}] on its own line, then low = ... and high = ...")
        section, field = FLAG_FIELDS[flag]
        params.append(_param(spec, flag, section, field, line, where))
    if not params:
        raise ConfigError(f"{path} names no flag to search; add tables such as [lr] with low and high.")
    space = tuple(params)
    _check_values(space, base, path)
    return space


def _param(spec: dict[str, Any], flag: str, section: str, field: str, line: int, where: str) -> Param:
    unknown = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; use low, high, log, step or choices.")
    if "choices" in spec:
        if set(spec) - {"choices"}:
            raise ConfigError(f"{where}: give either choices or low/high, not both.")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}.")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value: {choices!r}.")
        return Param(flag, section, field, choices=tuple(choices), line=line)
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both low and high (or give choices = [...]).")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for name, v in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: {name} must be a finite number, got {v!r}.")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}.")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high}).")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}.")
    if log and step is not None:
        raise ConfigError(f"{where}: log and step exclude each other (Optuna draws a log scale without steps).")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}: step must be > 0, got {step}.")
    if isinstance(low, int) != isinstance(high, int):
        raise ConfigError(f"{where}: low and high must both be integers (an integer flag) or both be decimals "
                          f"(write {float(low)} and {float(high)}).")
    return Param(flag, section, field, low, high, log, step, line=line)


def apply(base: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """``base`` with the searched flags set to ``values`` (flag -> value); the config's own checks apply."""
    from ..flags import FLAG_FIELDS

    sections: dict[str, dict[str, Any]] = {}
    for flag, value in values.items():
        section, field = FLAG_FIELDS[flag]
        sections.setdefault(section, {})[field] = value
    return dataclasses.replace(base, **{s: dataclasses.replace(getattr(base, s), **c) for s, c in sections.items()})


def _check_values(space: tuple[Param, ...], base: ExperimentConfig, path: Path) -> None:
    """Every bound and choice must make a config the training run accepts, of the flag's type."""
    from ..config import _coerce
    from typing import get_type_hints

    for p in space:
        hint = get_type_hints(type(getattr(base, p.section)))[p.field]
        where = f"{path}, line {p.line}, [{p.flag.replace('_', '-')}]"
        for value in p.extremes():
            try:
                _coerce(value, hint, f"{where}: {p.section}.{p.field}")
                apply(base, {p.flag: value})
            except ConfigError as exc:
                msg = str(exc)
                raise ConfigError(msg if msg.startswith(str(path)) else f"{where}: value {value!r}: {msg}") from None


def suggest(trial: Any, space: tuple[Param, ...]) -> dict[str, Any]:
    """Draw one value of every parameter from an Optuna trial (flag -> value)."""
    out: dict[str, Any] = {}
    for p in space:
        if p.choices is not None:
            out[p.flag] = trial.suggest_categorical(p.flag, list(p.choices))
        elif p.kind == "int":
            out[p.flag] = trial.suggest_int(p.flag, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            out[p.flag] = trial.suggest_float(p.flag, float(p.low), float(p.high), step=p.step, log=p.log)
    return out


def max_lookback(space: tuple[Param, ...], base: ExperimentConfig) -> int:
    """The longest lookback any trial can use (the study plans its gaps for it)."""
    for p in space:
        if p.flag == "lookback":
            return max(int(v) for v in p.extremes())
    return base.train.lookback
