"""The argument parser every command uses: no abbreviations, short errors that name the closest flag or choice, a
``--help`` of the flags most users touch with the expert ones under ``--help-all``, hidden aliases for old flag names,
and flags that a command refuses with the reason.

argparse does the parsing; this subclass changes what it shows. Written here because no maintained library adds
"did you mean" to argparse's own errors and help splits while keeping plain ``argparse.ArgumentParser`` objects, which
the generated CLI reference reads (``cli.command_parsers``).
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from . import __version__

EXPERT = "_dm_expert"  # attribute set on an action shown only by --help-all
HIDDEN = "_dm_hidden"  # attribute: option strings of an action that help never shows (old names kept working)


def expert(action: argparse.Action) -> argparse.Action:
    """Mark ``action`` as an expert flag: listed by ``--help-all``, not by ``--help``. Returns it."""
    setattr(action, EXPERT, True)
    return action


def is_expert(action: argparse.Action) -> bool:
    return bool(getattr(action, EXPERT, False))


def hidden_aliases(action: argparse.Action) -> tuple[str, ...]:
    """The option strings of ``action`` that help leaves out (old names that keep working)."""
    return tuple(getattr(action, HIDDEN, ()))


def shown_options(action: argparse.Action) -> list[str]:
    """The option strings of ``action`` that help shows."""
    hidden = set(hidden_aliases(action))
    return [s for s in action.option_strings if s not in hidden]


WIDTH = 100


def wrap(text: str) -> str:
    """Paragraphs of ``text`` filled to the help's width; indented lines (lists, commands) are kept as written."""
    import textwrap

    out = []
    for para in text.split("\n\n"):
        if any(line.startswith(" ") for line in para.splitlines()):
            out.append(para)
        else:
            out.append(textwrap.fill(" ".join(para.split()), WIDTH))
    return "\n\n".join(out)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description and the examples as written; leaves hidden aliases out of the flag column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=WIDTH)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = set(hidden_aliases(action))
        if not hidden or not action.option_strings:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if s not in hidden]
        copy = argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        copy.choices, copy.default, copy.type = action.choices, action.default, action.type
        return super()._format_action_invocation(copy)


class _HelpAll(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        assert isinstance(parser, Parser)
        parser.print_help(show_all=True)
        parser.exit()


class _Refused(argparse.Action):
    """A flag the command does not take, with the reason: an error, never silently ignored."""

    def __init__(self, option_strings: Sequence[str], dest: str, reason: str = "", **kwargs: Any) -> None:
        kwargs["nargs"] = "?"
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                         **kwargs)
        self.reason = reason

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: str | None = None) -> None:
        parser.error(f"{option} is not a flag of this command: {self.reason}")


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with ``allow_abbrev=False``, short errors ("did you mean --epochs?"), expert flags
    shown only by ``--help-all``, hidden aliases and refused flags.

    ``examples`` are shell lines printed under "examples:" at the end of the help.
    """

    def __init__(self, *args: Any, examples: Iterable[str] = (), **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", _Formatter)
        lines = [f"  {e}" for e in examples]
        if lines and "epilog" not in kwargs:
            kwargs["epilog"] = "examples:\n" + "\n".join(lines)
        if kwargs.get("description"):
            kwargs["description"] = wrap(kwargs["description"])
        super().__init__(*args, **kwargs)
        self._show_all = False
        self.add_argument("--help-all", action=_HelpAll, help="show every flag, the expert ones too, and exit")
        self.add_argument("--version", action="version", version=f"differentiable-market {__version__}",
                          help=argparse.SUPPRESS)

    # --- help ------------------------------------------------------------------------------------------------------
    def format_help(self) -> str:
        experts = [] if self._show_all else [a for a in self._actions if is_expert(a) and a.help != argparse.SUPPRESS]
        saved = [(a, a.help) for a in experts]
        for a in experts:
            a.help = argparse.SUPPRESS
        try:
            text = super().format_help()
        finally:
            for a, h in saved:
                a.help = h
        if experts:
            names = ", ".join(shown_options(a)[-1] for a in experts[:4])
            text += "\n" + wrap(f"{len(experts)} expert flags are not listed here ({names}, ...); "
                                f"'{self.prog} --help-all' lists every flag.") + "\n"
        return text

    def print_help(self, file: Any = None, show_all: bool = False) -> None:
        self._show_all = show_all
        try:
            super().print_help(file)
        finally:
            self._show_all = False

    def format_help_all(self) -> str:
        """The help with every flag (what ``--help-all`` prints)."""
        self._show_all = True
        try:
            return self.format_help()
        finally:
            self._show_all = False

    # --- aliases and refused flags ---------------------------------------------------------------------------------
    def add_alias(self, action: argparse.Action, *names: str) -> None:
        """Let ``names`` (old flag names) set ``action`` too, without showing them in help."""
        for name in names:
            self._option_string_actions[name] = action
        action.option_strings = [*action.option_strings, *names]
        setattr(action, HIDDEN, (*hidden_aliases(action), *names))

    def refuse(self, *names: str, reason: str) -> None:
        """Flags this command does not take: giving one is an error that says ``reason``."""
        self.add_argument(*names, action=_Refused, reason=reason)

    # --- errors ----------------------------------------------------------------------------------------------------
    def error(self, message: str) -> NoReturn:
        """A short error (no usage block): the problem, then where the flags are listed. Exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\nRun '{self.prog} --help' for the flags.\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unknown_message(extras))
        return ns

    def flag_names(self) -> list[str]:
        """Every option string that help shows (hidden aliases and refused flags left out)."""
        return [s for a in self._actions if not isinstance(a, _Refused) for s in shown_options(a)]

    def closest_flag(self, flag: str) -> str | None:
        """The shown flag closest to ``flag`` (old names match and map to the current one), or None."""
        by_name: dict[str, str] = {}
        for a in self._actions:
            if isinstance(a, _Refused) or not a.option_strings or a.help == argparse.SUPPRESS:
                continue
            shown = shown_options(a)
            primary = next((s for s in shown if s.startswith("--")), shown[0] if shown else None)
            if primary is None:
                continue
            for s in a.option_strings:
                by_name.setdefault(s, primary)
        # a prefix of exactly one flag (what abbreviations used to accept) names it
        starts = sorted({p for s, p in by_name.items() if s.startswith(flag) and flag.startswith("--")})
        if len(starts) == 1:
            return starts[0]
        close = difflib.get_close_matches(flag, list(by_name), n=1, cutoff=0.6)
        return by_name[close[0]] if close else None

    def unknown_message(self, extras: list[str]) -> str:
        flags = [e.split("=", 1)[0] for e in extras if e.startswith("-") and len(e) > 1]
        if not flags:
            return f"unexpected argument(s): {' '.join(extras)} (values follow the flag they belong to)"
        flag = flags[0]
        close = self.closest_flag(flag)
        more = f" (and {len(flags) - 1} more unknown)" if len(flags) > 1 else ""
        return f"unknown flag {flag}{more}" + (f"; did you mean {close}?" if close else "")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.5)
            raise argparse.ArgumentError(
                action, f"invalid choice {value!r} (choose from {', '.join(names)})"
                + (f"; did you mean {close[0]}?" if close else ""))


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (difflib), or None: for errors raised after parsing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return close[0] if close else None
