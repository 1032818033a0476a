"""Backtest CLI: ``python -m differentiable_market.marketsimulator.run --checkpoint <run folder or .pt>``.

Env, features, symbols and costs come from the checkpoint; every flag that changes one of them is printed and
recorded in the report. Outputs go to a new folder under --report-dir (see ``report.py``).
"""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from ..baselines import registry
from ..config import SplitName
from ..errors import DifferentiableMarketError
from .backtester import BacktestOptions, run_backtest
from .report import summary_table, write_report


BASELINES_HELP = (
    "baselines to run next to the policy: a set, core (default; equal weight, buy and hold, OLMAR, inverse "
    "volatility, the cash baselines, single assets, best single asset in hindsight), olps (the online-portfolio "
    "zoo), risk (risk-based portfolios) or all; or comma-separated set and baseline names, e.g. core,eg,erc. Names: "
    + ", ".join(registry.ORDER) + ". equal_weight always runs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m differentiable_market.marketsimulator.run",
        description="Backtest a checkpoint on a split (one path, or windows of it) against simple baselines, after "
                    "costs.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder (uses checkpoints/best.pt) or a .pt file")
    p.add_argument("--window-length", type=int, default=None, help="decision bars per window, each started from "
                   "cash (default: the whole split as one path)")
    p.add_argument("--stride", type=int, default=None, help="bars between window starts, with --window-length "
                   "(default: the window length, so windows do not overlap). A shorter stride makes windows that "
                   "share bars: the report says so, and 'policy beats' counts only a non-overlapping chain of them")
    p.add_argument("--split", choices=get_args(SplitName), default="test", help="which split to score (default: test)")
    p.add_argument("--data-root", default=None, help="data folder (default: the checkpoint's)")
    p.add_argument("--data-glob", default=None, help="file pattern in the data folder (default: the checkpoint's)")
    p.add_argument("--cost-bps", type=float, default=None,
                   help="one-way fee in basis points (default: the checkpoint's)")
    p.add_argument("--include-cash", action=argparse.BooleanOptionalAction, default=None,
                   help="cash asset (default: the checkpoint's; must match what the policy was trained with)")
    p.add_argument("--transfer-universe", action="store_true", help="run a cross-sectional policy on the symbols "
                   "of --data-root/--data-glob even where they differ from those it was trained on (another set, "
                   "another count; same feature spec). Every symbol in the data is used (the assets kept are decided on "
                   "these data's training split) and the splits are the configured fractions of these bars; the "
                   "report records both symbol lists. Without it, other symbols are refused")
    p.add_argument("--baselines", default=registry.DEFAULT, metavar="SET|NAMES",
                   help=BASELINES_HELP)
    p.add_argument("--no-trades", action="store_true", help="do not write trades.jsonl")
    p.add_argument("--report-dir", default="differentiable_market/evals", help="parent folder of report folders (default: differentiable_market/evals)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = BacktestOptions(
            checkpoint=args.checkpoint, window_length=args.window_length, stride=args.stride, split=args.split,
            data_root=args.data_root, data_glob=args.data_glob, cost_bps=args.cost_bps,
            include_cash=args.include_cash, trades=not args.no_trades, transfer_universe=args.transfer_universe,
            baselines=args.baselines,
        )
        result = run_backtest(options)
        out = write_report(result, args.report_dir)
    except DifferentiableMarketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(result))
    t = result.timings
    print(f"Backtest took {t['total_s']:.2f} s (load {t['load_s']:.2f}, policy {t['policy_s']:.2f}, baselines and "
          f"metrics {t['baselines_and_metrics_s']:.2f}). Report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
