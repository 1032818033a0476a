"""Config files: ``--config FILE`` and ``--print-config`` of every command, so any run, backtest or study can be
replayed from its folder.

A config file is a set of sections. The training config tree's are ``[data]``, ``[features]``, ``[env]``,
``[policy]`` and ``[train]`` (the fields of ``config.ExperimentConfig``); a study adds ``[study]``
(``study.report.StudySettings``), a backtest reads ``[backtest]`` (``marketsimulator.backtester.BacktestOptions``)
and predict ``[predict]``. A section may leave out any key (it keeps its default); an unknown section or key is an
error that names the file, the section and the key. Command-line flags override the file.

Files read:

- TOML (``*.toml``), as ``--print-config`` writes it. TOML has no null: the string ``"none"`` stands for it where a
  field may be unset (``select_min_t = "none"`` is ``--select-min-t off``).
- A run folder's ``config.json`` (its ``config``), a study's ``study.json`` (its ``config`` and ``settings``), a
  backtest's ``report.json`` (its ``options``), or JSON sections as ``--print-config json`` writes them.
- A folder holding one of those files.

TOML is written here by hand (``dump_toml``): the standard library reads TOML but does not write it, and the files
are flat tables of scalars and lists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from .config import (DataConfig, EnvConfig, ExperimentConfig, FeatureConfig, PolicyConfig, TrainConfig, _coerce,
                     config_from_dict)
from .errors import ConfigError

TREE: dict[str, type] = {"data": DataConfig, "features": FeatureConfig, "env": EnvConfig, "policy": PolicyConfig,
                         "train": TrainConfig}
FOLDER_FILES = ("config.json", "study.json", "report.json")
NONE = "none"  # TOML's stand-in for null


@dataclass(frozen=True)
class ConfigFile:
    """A config file's sections as read (raw values), and what kind of file it was."""

    path: Path
    kind: str  # "toml", "json", "run" (config.json), "study" (study.json), "backtest" (report.json)
    sections: dict[str, dict[str, Any]]

    def where(self, section: str) -> str:
        return f"{self.path} [{section}]"


def read_config_file(path: str | Path) -> ConfigFile:
    """Read ``path`` (a file or a folder holding config.json, study.json or report.json) into its sections."""
    p = Path(path)
    if p.is_dir():
        found = [p / name for name in FOLDER_FILES if (p / name).is_file()]
        if not found:
            raise ConfigError(f"--config {p}: the folder holds none of {', '.join(FOLDER_FILES)}; pass a TOML file, a "
                              "run folder, a study folder or a backtest report folder.")
        p = found[0]
    if not p.is_file():
        raise ConfigError(f"--config {p}: no such file.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {p}: cannot read it ({getattr(exc, 'strerror', None) or exc}).") from None
    if p.suffix.lower() == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc}).") from None
        return ConfigFile(p, "toml", _sections(doc, p))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: neither TOML (name it *.toml) nor valid JSON ({exc}).") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected an object of sections, got {type(doc).__name__}.")
    if doc.get("type") == "header" and isinstance(doc.get("config"), dict):
        return ConfigFile(p, "run", _sections(doc["config"], p))
    if doc.get("format") == "differentiable_market.study":
        return ConfigFile(p, "study", {**_sections(doc.get("config") or {}, p), "study": doc.get("settings") or {}})
    if doc.get("format") == "differentiable_market.backtest":
        if not isinstance(doc.get("options"), dict):
            raise ConfigError(f"{p}: this report does not record the backtest's options (it was written by an older "
                              "version); pass the flags instead.")
        return ConfigFile(p, "backtest", {"backtest": doc["options"]})
    return ConfigFile(p, "json", _sections(doc, p))


def _sections(doc: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name, body in doc.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: '{name}' must be a section ([{name}] with keys under it), got {body!r}.")
        out[name] = body
    return out


def check_sections(file: ConfigFile, allowed: tuple[str, ...], command: str) -> None:
    """Refuse sections that ``command`` does not read. A study's study.json read by train gives its training config
    (the study settings are left out); every other file must hold only sections the command reads."""
    extra = [s for s in file.sections if s not in allowed and not (file.kind == "study" and s == "study")]
    if extra:
        from .argparsing import suggest

        hint = suggest(extra[0], allowed)
        raise ConfigError(f"{file.path}: section [{extra[0]}] is not read by {command}, which reads "
                          f"{', '.join(f'[{s}]' for s in allowed)}" + (f"; did you mean [{hint}]?" if hint else "."))


def _none_strings(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """TOML's "none" -> None for the fields of ``cls`` that may be None."""
    hints = get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        if value == NONE and hint is not None and typing.get_origin(hint) in (typing.Union, types.UnionType) \
                and type(None) in typing.get_args(hint):
            out[key] = None
    return out


def _check_keys(cls: type, given: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        from .argparsing import suggest

        hint = suggest(unknown[0], names)
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                          + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else "")
                          + f"; valid keys are {', '.join(sorted(names))}.")


def section(file: ConfigFile, name: str, cls: type) -> Any:
    """Section ``name`` of ``file`` as a ``cls`` dataclass (defaults for keys it leaves out); errors name the file,
    the section and the key."""
    given = _none_strings(cls, file.sections.get(name, {}))
    _check_keys(cls, given, file.where(name))
    return config_from_dict(cls, given, file.where(name))


def section_values(file: ConfigFile, name: str, cls: type) -> dict[str, Any]:
    """The keys section ``name`` of ``file`` sets, checked against ``cls``'s fields and coerced to their types."""
    given = _none_strings(cls, file.sections.get(name, {}))
    where = file.where(name)
    _check_keys(cls, given, where)
    hints = get_type_hints(cls)
    return {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in given.items()}


def experiment_config(file: ConfigFile) -> ExperimentConfig:
    """The training config tree a file sets (defaults for what it leaves out). A study's study.json has
    ``data.universe_through`` set by the study from its first fold; it is cleared, so the replayed study derives it
    again from its own folds."""
    parts = {name: section(file, name, cls) for name, cls in TREE.items()}
    if file.kind == "study":
        parts["data"] = dataclasses.replace(parts["data"], universe_through=None)
    try:
        return ExperimentConfig(**parts)
    except ConfigError as exc:
        raise ConfigError(f"{file.path}: {exc}") from None


def tree_sections(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    return {name: _plain(dataclasses.asdict(getattr(cfg, name))) for name in TREE}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def dataclass_section(obj: Any) -> dict[str, Any]:
    return _plain(dataclasses.asdict(obj))


# --- writing -----------------------------------------------------------------------------------------------------

def _toml_value(value: Any, where: str) -> str:
    if value is None:
        return json.dumps(NONE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # TOML basic strings share JSON's escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    raise ConfigError(f"{where}: cannot write {value!r} ({type(value).__name__}) to TOML.")


def dump_toml(sections: dict[str, dict[str, Any]], header: str = "") -> str:
    """TOML text of ``sections`` (name -> flat dict of scalars and lists); None is written as "none"."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()] if header else []
    for name, body in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value, f'[{name}] {key}')}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


def dump(sections: dict[str, dict[str, Any]], fmt: str, header: str = "") -> str:
    """``sections`` as TOML (``fmt`` "toml") or JSON ("json")."""
    if fmt == "json":
        return json.dumps(sections, indent=2, allow_nan=True) + "\n"
    return dump_toml(sections, header)
