"""MkDocs hook: the CLI reference, generated from the argparse parsers at build time so it cannot drift.

A page holds a marker ``<!-- cli-reference -->``; the hook replaces it with one section per command: its usage,
description and a table of every flag per argument group (flag, value, default, help), read from the parser
objects themselves (``parser._action_groups``: argparse has no public API to walk its actions, and this is the
structure its own help formatter walks). No library renders argparse into Markdown tables for MkDocs with the
project's grouping, so this is written here.

Which parsers: ``differentiable_market.cli.command_parsers()`` where the console script exists (a dict of
subcommand name -> parser), else the entry points' own parsers (train, backtest, study, predict).
"""

from __future__ import annotations

import argparse
import importlib
import re
from typing import Any

MARKER = "<!-- cli-reference -->"


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Subcommand name -> its parser: the console script's where it exists, else the ``python -m`` entry points'."""
    try:
        cli = importlib.import_module("differentiable_market.cli")
    except ModuleNotFoundError:
        cli = None
    if cli is not None and hasattr(cli, "command_parsers"):
        parsers = dict(cli.command_parsers())
        if "pretrain" not in parsers:  # pretraining has its own entry point, python -m differentiable_market.pretrain
            try:
                from differentiable_market.pretrain import cli as pretrain_cli
            except ImportError:
                pretrain_cli = None
            if pretrain_cli is not None:
                parsers["pretrain"] = pretrain_cli.build_parser()
        return parsers
    from differentiable_market import predict, train
    from differentiable_market.marketsimulator import run as backtest
    from differentiable_market.study import run as study

    return {
        "train": train.build_parser(),
        "backtest": backtest.build_parser(),
        "study": study.build_study_parser(),
        "predict": predict.build_parser(),
    }


def _cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    text = " ".join(str(text).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _expand_help(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's %-placeholders filled in, as ``--help`` prints it."""
    text = action.help or ""
    if "%" not in text:
        return text
    params: dict[str, Any] = dict(vars(action), prog=prog)
    for name in list(params):
        if hasattr(params[name], "__name__"):
            params[name] = params[name].__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    try:
        return text % params
    except (KeyError, TypeError, ValueError):
        return text


def _value(action: argparse.Action) -> str:
    """What the flag takes: its choices, its metavar, or nothing for a switch."""
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return f"`{metavar}`"


def split_default(help_text: str) -> tuple[str, str | None]:
    """(help without its "(default: ...)" note, the note's text), for parsers that state defaults in the help
    rather than in ``default=`` (the training flags do: their defaults live in the config dataclasses)."""
    start = help_text.find("(default: ")
    if start < 0:
        return help_text, None
    depth, i = 0, start
    while i < len(help_text):
        depth += {"(": 1, ")": -1}.get(help_text[i], 0)
        if depth == 0:
            break
        i += 1
    if depth != 0:
        return help_text, None
    note = help_text[start + len("(default: "):i].strip()
    rest = (help_text[:start].rstrip() + " " + help_text[i + 1:].lstrip()).strip()
    return rest.replace(" ;", ";").replace(" ,", ","), note


def _default(action: argparse.Action, note: str | None) -> str:
    if action.required:
        return "required"
    default = action.default
    if default is None or default is argparse.SUPPRESS:
        return _cell(note) if note else ""
    if action.nargs == 0 and default is False:
        return ""
    return f"`{default}`"


def _shown(action: argparse.Action) -> list[str]:
    """The option strings ``--help`` shows: the project's parsers keep old names as hidden aliases."""
    try:
        from differentiable_market.argparsing import shown_options
    except ImportError:
        return list(action.option_strings)
    return shown_options(action)


def _is_expert(action: argparse.Action) -> bool:
    try:
        from differentiable_market.argparsing import is_expert
    except ImportError:
        return False
    return is_expert(action)


def documented(action: argparse.Action) -> bool:
    """Whether the reference lists ``action``: not help or version switches, not hidden or refused flags, not the
    subcommand selector (each subcommand gets a section of its own)."""
    if action.help is argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                                                                argparse._SubParsersAction)):
        return False
    return not (action.dest == argparse.SUPPRESS and action.nargs == 0)  # --help-all and the like


def _flags(action: argparse.Action) -> str:
    names = _shown(action) or [action.metavar or action.dest]
    return ", ".join(f"`{n}`" for n in names)


def compact_usage(parser: argparse.ArgumentParser) -> str:
    """``prog REQUIRED... [flags]``: argparse's own usage line lists every flag, a wall of 50 lines for training."""
    words = [parser.prog]
    for action in parser._actions:
        if action.required or not action.option_strings:
            name = action.option_strings[0] if action.option_strings else ""
            metavar = action.metavar or action.dest.upper()
            words.append(f"{name} {metavar}".strip())
    words.append("[flags]")
    return " ".join(words)


def render_parser(name: str, parser: argparse.ArgumentParser, level: int = 2) -> str:
    """One command's section: heading, description, usage and one table per argument group."""
    usage = compact_usage(parser)
    hashes = "#" * level
    out = [f"{hashes} `{name}`", ""]
    if parser.description:
        out += [" ".join(parser.description.split()), ""]
    out += ["```text", usage, "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if documented(a)]
        if not actions:
            continue
        title = group.title or "arguments"
        out += [f"{hashes}# {name}: {title}", ""]
        if group.description:
            out += [" ".join(group.description.split()), ""]
        out += ["| flag | value | default | meaning |", "|---|---|---|---|"]
        for action in actions:
            meaning, note = split_default(_expand_help(action, parser.prog))
            if _is_expert(action):
                meaning += " *(expert: shown by `--help-all`)*"
            out.append(f"| {_flags(action)} | {_value(action)} | {_default(action, note)} | {_cell(meaning)} |")
        out.append("")
    if parser.epilog:
        out += ["```text", parser.epilog.strip(), "```", ""]
    return "\n".join(out)


def render_all() -> str:
    return "\n".join(render_parser(name, parser) for name, parser in command_parsers().items())


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render_all())
