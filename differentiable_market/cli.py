"""The console script ``differentiable-market`` (also ``python -m differentiable_market``): one command with
subcommands train, backtest, study, predict, data and version.

Each subcommand is a module with ``build_parser(prog=...)`` and ``main(argv, prog=...)``; the table ``COMMANDS``
names them, and ``register`` adds one (a new command needs one line here, nothing else). Modules are imported only
when their command runs, so ``differentiable-market --help`` and ``--version`` start at once.

``command_parsers()`` returns every subcommand's full parser (expert flags included; ``Parser.format_help_all``
prints them all), the source of the generated CLI reference. Building the parsers has no side effects: nothing is
printed, written or started.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from . import __version__
from .argparsing import Parser, suggest

PROG = "differentiable-market"


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line summary and where its parser and entry point live (``module:function``)."""

    name: str
    summary: str
    parser: str
    main: str

    def _load(self, target: str) -> Callable:
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)

    def build_parser(self) -> argparse.ArgumentParser:
        return self._load(self.parser)(prog=f"{PROG} {self.name}")

    def run(self, argv: list[str]) -> int:
        return int(self._load(self.main)(argv, prog=f"{PROG} {self.name}") or 0)


COMMANDS: dict[str, Command] = {}


def register(name: str, summary: str, parser: str, main: str) -> Command:
    """Add (or replace) subcommand ``name``; ``parser`` and ``main`` are ``"module:function"`` paths, imported only
    when used. The parser function takes ``prog=``; the main takes ``(argv, prog=)`` and returns an exit status."""
    COMMANDS[name] = Command(name, summary, parser, main)
    return COMMANDS[name]


register("train", "train a policy on a folder of OHLC files", "differentiable_market.train:build_parser",
         "differentiable_market.train:main")
register("backtest", "score a checkpoint against simple baselines on unseen bars, after costs",
         "differentiable_market.marketsimulator.run:build_parser", "differentiable_market.marketsimulator.run:main")
register("study", "walk-forward study: retrain over folds and seeds; is the edge more than luck?",
         "differentiable_market.study.run:build_study_parser", "differentiable_market.study.run:main")
register("predict", "target weights for the next bar from a checkpoint and the latest data",
         "differentiable_market.predict:build_parser", "differentiable_market.predict:main")
register("data", "check a data folder (what the loader keeps, fills and refuses), or write a demo market",
         "differentiable_market.data_cli:build_parser", "differentiable_market.data_cli:main")
register("version", "print the versions of this package, Python, torch and numpy",
         "differentiable_market.cli:build_version_parser", "differentiable_market.cli:version_main")

FIRST_RUN = (
    f"{PROG} data demo reversal demo-market",
    f"{PROG} train --data-root demo-market --epochs 300",
    f"{PROG} backtest --checkpoint runs/<run folder>",
    f"{PROG} study --data-root demo-market",
)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Subcommand name -> its full parser (every flag; ``--help-all`` shows the expert ones). Nested commands are
    listed too, under their full names ("data check", "data demo")."""
    out: dict[str, argparse.ArgumentParser] = {}
    for name, command in COMMANDS.items():
        parser = command.build_parser()
        out[name] = parser
        for sub_name, sub in subcommand_parsers(parser).items():
            out[f"{name} {sub_name}"] = sub
    return out


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parsers of ``parser``'s own subcommands (``data check``, ``data demo``), by name."""
    for action in parser._actions:  # noqa: SLF001  argparse keeps them only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def top_help() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: {PROG} <command> [flags]      ({PROG} <command> --help lists a command's flags)", "",
             "Train portfolio-allocation policies through a differentiable market simulator, then judge them",
             "honestly on data they have never seen.", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help     show this help and exit", "  -V, --version  print the version and exit",
              "", "a first run (a market where a policy can learn, then the honest checks):"]
    lines += [f"  {line}" for line in FIRST_RUN]
    return "\n".join(lines) + "\n"


def build_version_parser(prog: str = f"{PROG} version") -> Parser:
    return Parser(prog=prog, usage="%(prog)s", description="Print the versions of this package, Python, torch and "
                  "numpy (what a bug report needs).")


def version_main(argv: list[str] | None = None, prog: str = f"{PROG} version") -> int:
    build_version_parser(prog).parse_args(argv or [])
    import platform

    import numpy
    import torch

    print(f"{PROG} {__version__}")
    print(f"python {platform.python_version()}; torch {torch.__version__}; numpy {numpy.__version__}; "
          f"{platform.platform()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --quiet / --verbose given before the command belong to it
    lead = [a for a in argv[: next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))]
            if a in ("-q", "--quiet", "-v", "--verbose")]
    rest = argv[len(lead):] if argv[: len(lead)] == lead else argv
    if not rest:
        sys.stdout.write(top_help())
        return 2
    first = rest[0]
    if first in ("-h", "--help"):
        sys.stdout.write(top_help())
        return 0
    if first in ("-V", "--version"):
        print(f"{PROG} {__version__}")
        return 0
    command = COMMANDS.get(first)
    if command is None:
        what = "flag" if first.startswith("-") else "command"
        close = suggest(first, ["--help", "--version"] if what == "flag" else list(COMMANDS))
        sys.stderr.write(f"{PROG}: error: unknown {what} {first!r}" + (f"; did you mean {close}?" if close else "")
                         + f"\nCommands: {', '.join(COMMANDS)}. Run '{PROG} --help' for more.\n")
        return 2
    return command.run(rest[1:] + lead)


if __name__ == "__main__":
    sys.exit(main())
