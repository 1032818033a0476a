"""The backtest command: ``differentiable-market backtest --checkpoint <run folder or .pt>`` (also
``python -m differentiable_market.marketsimulator.run``).

Env, features, symbols and costs come from the checkpoint; every flag that changes one of them is printed and
recorded in the report. Outputs go to a new folder under --out-dir (see ``report.py``); the report's options make it
replayable: ``differentiable-market backtest --config <report folder>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import get_args

from .. import console
from ..argparsing import Parser, expert
from ..baselines import registry
from ..config import SplitName
from ..configfile import check_sections, dump, read_config_file, section_values
from ..errors import ConfigError, DifferentiableMarketError
from ..flags import add_config_flags, add_output_flags
from .backtester import BacktestOptions, run_backtest
from .report import summary_table, write_report

PROG = "differentiable-market backtest"
DEFAULT_OUT_DIR = "backtests"
BASELINES_HELP = (
    "baselines to run next to the policy: a set, core (default; equal weight, buy and hold, OLMAR, inverse "
    "volatility, the cash baselines, single assets, best single asset in hindsight), olps (the online-portfolio "
    "zoo), risk (risk-based portfolios) or all; or comma-separated set and baseline names, e.g. core,eg,erc. Names: "
    + ", ".join(registry.ORDER) + ". equal_weight always runs")
# flag dest -> BacktestOptions field (the rest of the options have flags of their own names)
OPTION_FLAGS = ("checkpoint", "window_length", "stride", "split", "data_root", "data_glob", "cost_bps", "include_cash",
                "transfer_universe", "baselines", "olmar_window", "olmar_eps", "vol_lookback")


def build_parser(prog: str = PROG) -> Parser:
    p = Parser(
        prog=prog,
        usage="%(prog)s --checkpoint RUN [options]",
        description="Score a checkpoint on a split it was not trained on (the test split by default), as one path "
                    "or in windows, next to simple baselines on the same bars, after costs; then say whether it beat "
                    "equal weight, with an interval.",
        examples=("differentiable-market backtest --checkpoint runs/20260101-120000",
                  "differentiable-market backtest --checkpoint runs/20260101-120000 --baselines all --cost-bps 5",
                  "differentiable-market backtest --config backtests/20260101-130000"),
    )
    g = p.add_argument_group("what to score")
    g.add_argument("--checkpoint", metavar="RUN", help="run folder (uses checkpoints/best.pt) or a .pt file")
    g.add_argument("--split", choices=get_args(SplitName), help="which split to score (default: test)")
    g.add_argument("--baselines", metavar="SET|NAMES", help=BASELINES_HELP + f" (default: {registry.DEFAULT})")
    g.add_argument("--window-length", type=int, metavar="BARS", help="decision bars per window, each started from "
                   "cash (default: the whole split as one path)")
    expert(g.add_argument("--stride", type=int, metavar="BARS", help="bars between window starts, with "
                          "--window-length (default: the window length, so windows do not overlap). A shorter stride "
                          "makes windows that share bars: the report says so, and 'policy beats' counts only a "
                          "non-overlapping chain of them"))
    g = p.add_argument_group("data and market (default: the checkpoint's)")
    g.add_argument("--data-root", metavar="DIR", help="data folder (default: the checkpoint's)")
    g.add_argument("--data-glob", metavar="PATTERN", help="file pattern in the data folder (default: the checkpoint's)")
    g.add_argument("--cost-bps", type=float, metavar="BPS", help="one-way fee in basis points (default: the "
                   "checkpoint's)")
    g.add_argument("--include-cash", action=argparse.BooleanOptionalAction,
                   help="cash asset (default: the checkpoint's; must match what the policy was trained with)")
    expert(g.add_argument("--transfer-universe", action="store_const", const=True, help="run a cross-sectional "
                          "policy on the symbols of --data-root/--data-glob even where they differ from those it was "
                          "trained on (another set, another count; same feature spec). Every symbol in the data is "
                          "used (the assets kept are decided on these data's training split) and the splits are the "
                          "configured fractions of these bars; the report records both symbol lists. Without it, "
                          "other symbols are refused"))
    d = BacktestOptions(checkpoint="")
    g = p.add_argument_group("baseline parameters")
    expert(g.add_argument("--olmar-window", type=int, metavar="BARS", help="OLMAR's moving-average window (default: "
                          f"{d.olmar_window})"))
    expert(g.add_argument("--olmar-eps", type=float, metavar="EPS", help="OLMAR's reversion threshold (default: "
                          f"{d.olmar_eps:g})"))
    expert(g.add_argument("--vol-lookback", type=int, metavar="BARS", help="trailing bars of the inverse-volatility "
                          f"baseline (default: {d.vol_lookback})"))
    g = p.add_argument_group("report folder")
    out = g.add_argument("--out-dir", metavar="DIR", help="parent folder of report folders; each backtest gets a new "
                         f"timestamped folder inside (default: {DEFAULT_OUT_DIR})")
    p.add_alias(out, "--report-dir")
    g.add_argument("--no-trades", dest="trades", action="store_const", const=False, help="do not write trades.jsonl")
    add_config_flags(p, "the backtest's options", "a backtest's report.json")
    add_output_flags(p, progress=False)
    return p


def resolve_options(args: argparse.Namespace) -> tuple[BacktestOptions, str]:
    """The backtest's options and output folder: defaults, then the --config file's [backtest], then flags."""
    values: dict = {}
    out_dir = DEFAULT_OUT_DIR
    if args.config:
        file = read_config_file(args.config)
        check_sections(file, ("backtest",), "backtest")
        raw = dict(file.sections.get("backtest", {}))
        if "out_dir" in raw:
            out_dir = str(raw.pop("out_dir"))
        values = section_values(dataclasses.replace(file, sections={"backtest": raw}), "backtest", BacktestOptions)
    for name in (*OPTION_FLAGS, "trades"):
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if args.out_dir is not None:
        out_dir = args.out_dir
    if not values.get("checkpoint"):
        raise ConfigError("--checkpoint is required: a run folder (its checkpoints/best.pt) or a .pt file (or a "
                          "[backtest] checkpoint in --config).")
    return BacktestOptions(**values), out_dir


def options_sections(options: BacktestOptions, out_dir: str) -> dict:
    """The [backtest] section that replays ``options`` (what --print-config prints and report.json records)."""
    return {"backtest": {**dataclasses.asdict(options), "out_dir": out_dir}}


def _log(line: str) -> None:
    """The backtester's notes: warnings always, the rest unless --quiet."""
    (console.warn if line.lower().startswith("warning") else console.say)(line)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with console.verbosity(console.level_of(args.quiet, args.verbose)):
        try:
            options, out_dir = resolve_options(args)
            if args.print_config:
                console.result(dump(options_sections(options, out_dir), args.print_config,
                                    f"{PROG} options; pass them back with --config FILE").rstrip())
                return 0
            result = run_backtest(options, log=_log)
            out = write_report(result, out_dir)
        except DifferentiableMarketError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        console.say(summary_table(result))
        t = result.timings
        console.detail(f"Backtest took {t['total_s']:.2f} s (load {t['load_s']:.2f}, policy {t['policy_s']:.2f}, "
                       f"baselines and metrics {t['baselines_and_metrics_s']:.2f}).")
        console.result(json.loads((out / "report.json").read_text(encoding="utf-8"))["answer"]["text"])
        console.result(f"Report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m differentiable_market.marketsimulator.run"))
