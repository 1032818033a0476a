"""The data command: ``differentiable-market data check DIR`` loads a folder as training would and says what it
holds, fills and refuses; ``differentiable-market data demo NAME DIR`` writes a seeded market folder.

Demo markets (``synthetic.py``, ``datasets.py``), each written with ``datasets.write_market_folder`` (or, for
``churn``, ``synthetic.churn_universe``) into a new or empty folder, with a ``demo.json`` that records what it is:

- ``reversal``: 32 assets on one market factor whose idiosyncratic prices revert (a cross-sectional reversal edge
  that OLMAR finds and a policy can learn); daily trading days, open = previous close;
- ``planted``: 4 random walks, one of them AR(1) with autocorrelation 0.5 (an edge in one asset);
- ``random``: 8 driftless random walks: no edge, whatever a backtest says;
- ``churn``: a universe whose members list, delist and halt (train it with ``--calendar union``);
- ``nyse``: Cover's NYSE set, 36 stocks 1962-1984, close only (train it with ``--execution close``); read from the
  ``universal-portfolios`` package of the ``crosscheck`` dependency group, never downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, console
from .argparsing import Parser
from .config import DataConfig, TrainConfig
from .errors import DataError, DifferentiableMarketError

PROG = "differentiable-market data"


@dataclass(frozen=True)
class Demo:
    summary: str
    bars: int | None  # default bar count (None: fixed by the data set)
    assets: int | None
    train_hint: str  # flags to train it with


DEMOS: dict[str, Demo] = {
    "reversal": Demo("assets on one factor whose idiosyncratic prices revert: an edge a policy can learn", 2520, 32, ""),
    "planted": Demo("random walks but one, AR(1) with autocorrelation 0.5: an edge in one asset", 3000, 4, ""),
    "random": Demo("driftless random walks: no edge to find", 2520, 8, ""),
    "churn": Demo("a universe whose members list, delist and halt (survivorship)", 2520, 50, " --calendar union"),
    "nyse": Demo("Cover's NYSE set: 36 stocks, 1962-1984, closes only", None, None, " --execution close"),
}


def build_parser(prog: str = PROG) -> Parser:
    ap = Parser(prog=prog, usage="%(prog)s {check,demo} ...",
                description="Check a data folder the way training reads it, or write a demo market folder.",
                examples=(f"{PROG} check my-data", f"{PROG} demo reversal demo-market",
                          f"{PROG} demo planted planted-market --seed 3"))
    sub = ap.add_subparsers(dest="action", metavar="{check,demo}", parser_class=Parser)
    sub.required = True
    check = sub.add_parser("check", prog=f"{prog} check", usage="%(prog)s DIR [options]",
                           help="load a folder as training would: calendar, universe, gaps, and what is refused",
                           description="Load DIR as training would (a dry run: nothing is trained or written) and "
                           "print the calendar, the assets kept, the gaps filled, what was left out and why, and "
                           "the train / validation / test splits. A file the loader refuses gives its error (the "
                           "file, row and fix) and exit status 2.",
                           examples=(f"{PROG} check my-data", f"{PROG} check my-data --calendar union"))
    check.add_argument("root", metavar="DIR", help="folder of per-symbol OHLC files")
    d, t = DataConfig(), TrainConfig()
    g = check.add_argument_group("read it as these training flags would")
    g.add_argument("--data-glob", metavar="PATTERN", default=d.glob, help=f"file pattern (default: {d.glob})")
    g.add_argument("--include", metavar="SYMBOLS", help="comma-separated symbols to keep (default: all)")
    g.add_argument("--exclude", metavar="SYMBOLS", help="comma-separated symbols to leave out")
    g.add_argument("--calendar", choices=["intersection", "union"], default=d.calendar, help="'intersection' or "
                   f"'union' (default: {d.calendar})")
    g.add_argument("--max-fill-bars", type=int, metavar="N", default=d.max_fill_bars, help="longest gap that is "
                   f"forward-filled (default: {d.max_fill_bars})")
    g.add_argument("--lookback", type=int, metavar="BARS", default=t.lookback, help="bars per training window: the "
                   f"shortest usable file and the embargo between splits (default: {t.lookback})")
    g.add_argument("--val-fraction", type=float, metavar="F", default=d.val_fraction, help="fraction of bars for "
                   f"validation (default: {d.val_fraction})")
    g.add_argument("--test-fraction", type=float, metavar="F", default=d.test_fraction, help="fraction of bars for "
                   f"test (default: {d.test_fraction})")
    demo = sub.add_parser("demo", prog=f"{prog} demo", usage="%(prog)s NAME DIR [--seed N]",
                          help="write a seeded demo market folder: " + ", ".join(DEMOS),
                          description="Write a seeded demo market into DIR (new or empty; nothing is overwritten), "
                          "one CSV per asset plus demo.json saying what it is.\n\n"
                          + "\n".join(f"  {n:<9} {m.summary}" for n, m in DEMOS.items()),
                          examples=(f"{PROG} demo reversal demo-market",
                                    "differentiable-market train --data-root demo-market --epochs 300"))
    demo.add_argument("name", choices=list(DEMOS), metavar="NAME", help=f"one of {', '.join(DEMOS)}")
    demo.add_argument("out", metavar="DIR", help="folder to write (created; must be new or empty)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generator (default: 0)")
    demo.add_argument("--bars", type=int, metavar="N", help="bars per asset (default: the demo's own)")
    demo.add_argument("--assets", type=int, metavar="N", help="assets (default: the demo's own)")
    for p in (check, demo):
        p.add_argument("-q", "--quiet", action="store_true", help="print only warnings and the result")
        p.add_argument("-v", "--verbose", action="store_true", help="print more detail")
    return ap


def _csv(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def _when(t: Any) -> str:
    """A timestamp as a plain date at midnight, else to the second."""
    text = str(t)[:19]
    return text[:10] if text.endswith("T00:00:00") else text


# --- check ---------------------------------------------------------------------------------------------------------

def check(args: argparse.Namespace) -> list[str]:
    """The lines ``data check`` prints: what the loader makes of the folder (raises DataError on refused data)."""
    from .data import _list_files, execution_note, load_market, resolve_data_root
    from .metrics import bars_per_year
    from .splits import make_splits, train_end_cutoff

    root = Path(args.root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder of per-symbol OHLC files.")
    cfg = DataConfig(root=str(root), glob=args.data_glob, include=_csv(args.include), exclude=_csv(args.exclude),
                     max_fill_bars=args.max_fill_bars, val_fraction=args.val_fraction,
                     test_fraction=args.test_fraction, calendar=args.calendar)
    resolved, _ = resolve_data_root(cfg.root)
    files = _list_files(resolved, cfg.glob)
    market = load_market(cfg, min_bars=args.lookback + 3, universe_cutoff=train_end_cutoff(cfg, args.lookback))
    ts = market.timestamps
    ppy = bars_per_year(ts)
    lines = [f"Folder {root}: {len(files)} file(s) match '{cfg.glob}'; {market.n_assets} asset(s) kept: "
             + ", ".join(market.symbols[:20]) + (f" and {market.n_assets - 20} more" if market.n_assets > 20 else ""),
             f"Calendar ({market.calendar}): {market.n_bars:,} bars, {_when(ts[0])} .. {_when(ts[-1])}, about "
             f"{ppy:.0f} bars per year"]
    left_out = sorted(set(files) - set(market.symbols))
    if left_out:
        lines.append(f"Left out ({len(left_out)}): {', '.join(left_out[:20])}" + (" ..." if len(left_out) > 20 else "")
                     + " (the notes below say why)")
    notes = list(market.notes)
    fills = execution_note(market, "open")
    if fills:
        notes.append(fills)
    lines.append("Notes (what the loader filled, dropped or noticed):" if notes else "Notes: none; no gaps, no "
                 "missing columns.")
    lines += [f"  - {n}" for n in notes]
    missing = market.missing_prices()
    if missing:
        lines.append(f"Close-only or partial files: {len(missing)} ({', '.join(list(missing)[:8])}"
                     f"{' ...' if len(missing) > 8 else ''})")
    splits = make_splits(market.n_bars, cfg, args.lookback)
    lines.append(f"Splits with --lookback {args.lookback} (embargo {splits.embargo} bars between them):")
    for name in ("train", "validation", "test"):
        a, b = splits.bounds(name)
        lines.append(f"  {name:<10} bars {a:>6} .. {b - 1:<6} {_when(ts[a])} .. {_when(ts[b - 1])} "
                     f"({b - a:,} bars)")
    return lines


# --- demo ----------------------------------------------------------------------------------------------------------

def _market(name: str, seed: int, bars: int | None, assets: int | None) -> Any:
    from . import datasets, synthetic

    demo = DEMOS[name]
    n_bars, n_assets = bars or demo.bars, assets or demo.assets
    builders: dict[str, Callable[[], Any]] = {
        "reversal": lambda: synthetic.reversal_market(n_bars, n_assets, seed),
        "planted": lambda: synthetic.planted_signal_market(n_bars, n_assets, seed),
        "random": lambda: synthetic.random_walk_market(n_bars, n_assets, seed),
        "nyse": datasets.nyse_o,
    }
    return builders[name]()


def write_demo(name: str, out: str | Path, seed: int = 0, bars: int | None = None,
               assets: int | None = None) -> dict[str, Any]:
    """Write demo market ``name`` into ``out`` (new or empty) and return what demo.json records."""
    from .datasets import write_market_folder

    out = Path(out)
    if name not in DEMOS:
        raise DataError(f"no demo market {name!r}; choose one of {', '.join(DEMOS)}.")
    demo = DEMOS[name]
    if demo.bars is None and (bars or assets):
        raise DataError(f"the {name} demo is a fixed data set: drop --bars and --assets.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} is not an empty folder; write the demo into a new or empty folder (nothing was "
                        "written).")
    if bars is not None and bars < 64:
        raise DataError(f"--bars must be at least 64, got {bars}.")
    if assets is not None and assets < 2:
        raise DataError(f"--assets must be at least 2, got {assets}.")
    if name == "churn":
        from .synthetic import churn_universe

        years = max(2, (bars or demo.bars or 2520) // 252)
        plan = churn_universe(out, n_assets=assets or demo.assets or 50, years=years, seed=seed)
        n_assets, n_bars = len(plan), years * 252
    else:
        market = _market(name, seed, bars, assets)
        write_market_folder(market, out)
        n_assets, n_bars = market.n_assets, market.n_bars
    record = {"demo": name, "summary": demo.summary, "seed": seed if demo.bars is not None else None,
              "bars": n_bars, "assets": n_assets, "package_version": __version__,
              "train": f"differentiable-market train --data-root {out}{demo.train_hint}"}
    (out / "demo.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with console.verbosity(console.level_of(args.quiet, args.verbose)):
        try:
            if args.action == "check":
                for line in check(args):
                    console.say(line)
                console.result(f"OK: {args.root} loads as training would load it.")
            else:
                try:
                    record = write_demo(args.name, args.out, args.seed, args.bars, args.assets)
                except ValueError as exc:  # a generator's own check of its parameters
                    raise DataError(str(exc)) from None
                console.result(f"Wrote the {record['demo']} demo ({record['assets']} assets x {record['bars']:,} "
                               f"bars) to {args.out}: {record['summary']}.")
                console.result(f"Next: {record['train']}")
        except DifferentiableMarketError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
