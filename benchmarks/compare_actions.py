"""Action designs x policies, judged by walk-forward studies on markets with and without an edge.

For every market and variant it runs a full study (folds x seeds, stitched out-of-sample path, 10 bps one-way by
default) and prints the seed ensemble's annualised excess log growth against equal weight and against OLMAR with
their stationary-bootstrap intervals, the SPA p-value against equal weight, the ensemble's and equal weight's
turnover per bar, and the cost breakeven. These markets are the development set on which the defaults are chosen;
other real markets, held back, are the test.

Markets:
- ``reversal``: ``synthetic.reversal_market`` (2520 daily bars x 32 assets, a common factor plus mean-reverting
  idiosyncratic prices; OLMAR well above equal weight), open execution;
- ``nyse``: Cover's NYSE 1962-1984 set (36 stocks, closes only, from the ``crosscheck`` dependency group), close
  execution;
- ``planted``: ``synthetic.planted_signal_market`` (3000 bars x 4 assets, asset 0 AR(1) with phi 0.5);
- ``random``: ``synthetic.random_walk_market`` (2520 bars x 8 assets): no edge;
- ``sample``: the bundled 4-stock daily sample: no edge found so far;
- ``random-cash``, ``sample-cash``: the same two with ``--include-cash``.

Variants are ``<architecture>-<action>`` (``flat-target``, ``cross-band``, ...), optionally with a training fee
(``flat-band@20`` trains with ``--train-cost-bps 20``), an encoder context and a cross-sectional head
(``cross-band/history/affine`` trains with ``--context history --asset-head affine``), the selection gate
(``cross-band/t=off`` trains with ``--select-min-t off``), the cash target (``cross-band/cash=share``), the EMA
reference (``cross-band/ref=weights`` trains with ``--reference weights``), the cross policy's width
(``cross-band/w=16`` trains with ``--asset-hidden 16``), its head's width (``cross-band/hw=32``, ``--asset-head-hidden
32``) and its mixing (``cross-band/mix=mean`` trains with ``--mixing mean``); without them, the configured defaults. ``untrained``
counts the seed-ensemble members whose best.pt is the untrained policy (no trained checkpoint passed the selection
gate).

Float32 throughout (the comparison does not depend on the CPU's bf16 support). Each study's row is printed as one JSON
line as it finishes; a summary table closes the output. Study folders go under ``--work-dir`` (default: a temporary
folder, removed at the end).

Run: uv run --group crosscheck python benchmarks/compare_actions.py [--markets reversal nyse ...]
     [--variants flat-target flat-partial flat-band ...] [--folds 3] [--seeds 3] [--epochs 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import get_args

from differentiable_market.config import (AssetHead, Context, DataConfig, EnvConfig, ExperimentConfig, PolicyConfig,
                                         TrainConfig)
from differentiable_market.data import bundled_sample_dir
from differentiable_market.datasets import nyse_o, write_market_folder
from differentiable_market.hardware import machine_info
from differentiable_market.study.report import StudySettings
from differentiable_market.study.run import run_study
from differentiable_market.synthetic import planted_signal_market, random_walk_market, reversal_market

MARKETS = ("reversal", "nyse", "planted", "random", "sample", "random-cash", "sample-cash")


def build_market(base: str):
    """The synthetic or reference market named ``reversal``, ``nyse``, ``planted`` or ``random`` (not the sample)."""
    return {"reversal": lambda: reversal_market(2520, 32, seed=0),
            "nyse": nyse_o,
            "planted": lambda: planted_signal_market(3000, 4, seed=0),
            "random": lambda: random_walk_market(2520, 8, seed=0)}[base]()


def market_root(name: str, work: Path) -> tuple[str, str, bool]:
    """(data folder, execution, include_cash) of a market, written under ``work`` once."""
    base = name.removesuffix("-cash")
    cash = name.endswith("-cash")
    if base == "sample":
        return str(bundled_sample_dir()), "open", cash
    folder = work / "data" / base
    if not folder.exists():
        write_market_folder(build_market(base), folder)
    return str(folder), "close" if base == "nyse" else "open", cash


def variant_config(variant: str, root: str, execution: str, cash: bool, args: argparse.Namespace,
                   save_dir: Path) -> ExperimentConfig:
    """The study's training config of a variant,
    ``<architecture>-<action>[@train_cost_bps][/context][/asset_head][/key=value ...]``."""
    variant, *options = variant.split("/")
    name, _, fee = variant.partition("@")
    context = next((o for o in options if o in get_args(Context)), PolicyConfig().context)
    head = next((o for o in options if o in get_args(AssetHead)), PolicyConfig().asset_head)
    settings = dict(o.split("=", 1) for o in options if "=" in o)
    unknown = set(options) - {context, head} - {f"{k}={v}" for k, v in settings.items()}
    unknown |= {f"{k}=" for k in settings} - {"t=", "cash=", "ref=", "w=", "hw=", "mix="}
    if unknown:
        raise SystemExit(f"unknown variant option(s) {sorted(unknown)}: use {get_args(Context)}, {get_args(AssetHead)}, "
                         "t=<select-min-t or off>, cash=<share or excess>, ref=<auto, outputs or weights>, "
                         "w=<asset hidden units>, hw=<asset head hidden units> or mix=<pool, mean or attention>")
    t = settings.get("t", TrainConfig().select_min_t)
    architecture, action = name.split("-")
    return ExperimentConfig(
        data=DataConfig(root=root),
        env=EnvConfig(cost_bps=args.cost_bps, execution=execution, include_cash=cash,
                      train_cost_bps=float(fee) if fee else None),
        policy=PolicyConfig(architecture=architecture, action=action, context=context, asset_head=head,
                            cash_target=settings.get("cash", PolicyConfig().cash_target),
                            asset_hidden=int(settings.get("w", PolicyConfig().asset_hidden)),
                            asset_head_hidden=int(settings.get("hw", PolicyConfig().asset_head_hidden)),
                            mixing=settings.get("mix", PolicyConfig().mixing)),
        train=TrainConfig(lookback=args.lookback, batch_windows=args.batch_windows, epochs=args.epochs,
                          eval_interval=args.eval_interval, dtype="float32", device="cpu", save_dir=str(save_dir),
                          select_min_t=None if t == "off" else float(t),
                          reference=settings.get("ref", TrainConfig().reference)),
    )


def study_row(market: str, variant: str, study: dict, seconds: float) -> dict:
    res = study["results"]
    st, strategies = res["statistics"], res["strategies"]

    def interval(key: str) -> list[float]:
        iv = st[key]["excess_log_growth_per_year"]
        return [100 * iv["estimate"], 100 * iv["low"], 100 * iv["high"]]

    return {
        "market": market, "variant": variant,
        "excess_vs_ew_pct_yr": interval("vs_equal_weight"),
        "excess_vs_olmar_pct_yr": interval("vs_olmar"),
        "spa_p_vs_ew": st["vs_equal_weight"]["spa"]["pvalue"],
        "ensemble_pct_yr": 100 * strategies["ensemble"]["log_growth_per_year"],
        "equal_weight_pct_yr": 100 * strategies["equal_weight"]["log_growth_per_year"],
        "olmar_pct_yr": 100 * strategies["olmar"]["log_growth_per_year"],
        "turnover": strategies["ensemble"]["turnover"],
        "equal_weight_turnover": strategies["equal_weight"]["turnover"],
        "seed_pct_yr": {k: 100 * v for k, v in st["seed_spread"]["log_growth_per_year"].items()},
        "cost_breakeven_bps": st["cost_breakeven_bps"]["vs_equal_weight"],
        "validation_scores": [j.get("best_validation_objective") for j in study["jobs"]],
        "untrained_members": sum(j.get("best_step") == 0 for j in study["jobs"]),
        "members": len(study["jobs"]),
        "seconds": seconds,
    }


def summary(rows: list[dict]) -> None:
    print(f"\n{'market':<12}{'variant':<18}{'excess vs EW %/yr [CI]':>28}{'vs OLMAR %/yr [CI]':>28}"
          f"{'SPA p':>7}{'turnover':>10}{'EW turn':>9}{'untrained':>10}{'breakeven':>10}")
    for r in rows:
        ew, ol = r["excess_vs_ew_pct_yr"], r["excess_vs_olmar_pct_yr"]
        be = r["cost_breakeven_bps"]
        print(f"{r['market']:<12}{r['variant']:<18}{ew[0]:+8.1f} [{ew[1]:+6.1f}, {ew[2]:+6.1f}]"
              f"{ol[0]:+10.1f} [{ol[1]:+6.1f}, {ol[2]:+6.1f}]{r['spa_p_vs_ew']:7.2f}{r['turnover']:10.3f}"
              f"{r['equal_weight_turnover']:9.3f}{r['untrained_members']:>6}/{r['members']:<3}"
              f"{'' if be is None else f'{be:10.1f}'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", nargs="+", default=list(MARKETS), choices=MARKETS)
    ap.add_argument("--variants", nargs="+", default=["flat-target", "flat-partial", "flat-band", "cross-target",
                                                       "cross-partial", "cross-band"])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--lookback", type=int, default=64)
    ap.add_argument("--batch-windows", type=int, default=32)
    ap.add_argument("--eval-interval", type=int, default=50)
    ap.add_argument("--cost-bps", type=float, default=10.0)
    ap.add_argument("--work-dir", type=Path, help="keep data and study folders here (default: a temporary folder)")
    args = ap.parse_args()
    print(f"# {machine_info().describe()}", flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="compare_actions_"))
    rows = []
    try:
        for market in args.markets:
            root, execution, cash = market_root(market, work)
            for variant in args.variants:
                cfg = variant_config(variant, root, execution, cash, args, work / "studies" / market)
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    folder = run_study(cfg, StudySettings(folds=args.folds, seeds=args.seeds), log=lambda *_: None)
                study = json.loads((folder / "study.json").read_text())
                rows.append(study_row(market, variant, study, time.perf_counter() - t0))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary(rows)


if __name__ == "__main__":
    main()
