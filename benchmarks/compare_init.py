"""Scratch, zero-shot and fine-tuned, judged by walk-forward studies against the whole baseline zoo.

For every market, one study with ``--init CKPT`` (the shipped pretrained policy by default) and training steps
trains every member twice, fine-tuned from the checkpoint and from scratch, and scores the checkpoint itself per
fold without training (zero-shot, its evidence pooled over the folds before). All three are stitched over the same
out-of-sample bars and compared, with stationary-bootstrap intervals, to equal weight and to the best causal
baseline of ``--baselines all`` (OLMAR, Anticor, RMR, PAMR, CWMR, CORN, ONS, ... and the risk-based ones; the best
is chosen after the fact on the out-of-sample path, so it is a hard benchmark). Costs: 10 bps one way by default.

Markets (the development set; held-back real markets are not here):
- ``reversal``: ``synthetic.reversal_market`` (2,520 bars x 32 assets), open execution;
- ``nyse``: Cover's NYSE 1962-1984 (36 stocks, close execution; needs the crosscheck group); the shipped policy
  learned from its years up to 1973, and every fold validates and tests after that;
- ``planted``: ``synthetic.planted_signal_market`` (3,000 bars x 4 assets, asset 0 AR(1) phi 0.5);
- ``random``: ``synthetic.random_walk_market`` (2,520 bars x 8 assets): no edge;
- ``sample``: the bundled 4-stock daily sample: no edge found so far;
- ``random-cash``, ``sample-cash``: the same two with ``--include-cash`` (the pretrained cash variant).
The synthetic markets here use seeds that the pretraining corpus does not (its seeds are drawn from its own
generator), so they are unseen realisations of families the policy learned from.

Run: uv run --group crosscheck python benchmarks/compare_init.py [--markets reversal nyse ...] [--init pretrained]
     [--folds 3] [--seeds 3] [--epochs 600] [--baselines all] [--work-dir DIR]
Prints one JSON line per study and a table: per market, each variant's excess log growth per year over equal weight
and over the best causal baseline (90% intervals), its turnover against equal weight's, and how many folds or
members kept the untrained policy. ``--markdown FILE`` also writes the table as markdown (the model card's
evaluation section).
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

from differentiable_market.config import DataConfig, EnvConfig, ExperimentConfig, TrainConfig
from differentiable_market.data import bundled_sample_dir
from differentiable_market.datasets import nyse_o, write_market_folder
from differentiable_market.hardware import machine_info
from differentiable_market.study.report import StudySettings
from differentiable_market.study.run import run_study
from differentiable_market.synthetic import planted_signal_market, random_walk_market, reversal_market

MARKETS = ("reversal", "nyse", "planted", "random", "sample", "random-cash", "sample-cash")


def market_root(name: str, work: Path) -> tuple[str, str, bool]:
    """(data folder, execution, include_cash) of a market, written under ``work`` once."""
    base, cash = name.removesuffix("-cash"), name.endswith("-cash")
    if base == "sample":
        return str(bundled_sample_dir()), "open", cash
    folder = work / "data" / base
    if not folder.exists():
        build = {"reversal": lambda: reversal_market(2520, 32, seed=0), "nyse": nyse_o,
                 "planted": lambda: planted_signal_market(3000, 4, seed=0),
                 "random": lambda: random_walk_market(2520, 8, seed=0)}[base]
        write_market_folder(build(), folder)
    return str(folder), "close" if base == "nyse" else "open", cash


def interval(iv: dict) -> list[float]:
    return [100 * iv["estimate"], 100 * iv["low"], 100 * iv["high"]]


def study_rows(market: str, study: dict, seconds: float) -> list[dict]:
    """One row per variant (scratch, zero-shot, fine-tuned) of a study run with --init and training steps."""
    res = study["results"]
    st, strategies = res["statistics"], res["strategies"]
    best = st["best_causal_baseline"]
    ew = strategies["equal_weight"]
    rows = []
    jobs = study["jobs"]
    kept = {"fine-tuned": sum(bool(j.get("untrained")) for j in jobs if not j.get("variant")),
            "scratch": sum(bool(j.get("untrained")) for j in jobs if j.get("variant") == "scratch"),
            "zero-shot": sum(not r["passed"] for r in study.get("zero_shot") or [])}
    members = {"fine-tuned": sum(not j.get("variant") for j in jobs),
               "scratch": sum(j.get("variant") == "scratch" for j in jobs),
               "zero-shot": len(study.get("zero_shot") or [])}
    for variant, name in (("scratch", "scratch"), ("zero-shot", "zero_shot"), ("fine-tuned", "ensemble")):
        if name not in strategies:
            continue
        if name == "ensemble":
            vs_ew = interval(st["vs_equal_weight"]["excess_log_growth_per_year"])
            vs_best = interval(st["vs_best_causal_baseline"]["excess_log_growth_per_year"])
        else:
            v = st["variants"][name]
            vs_ew, vs_best = interval(v["excess_vs_equal_weight"]), interval(v["excess_vs_best_causal_baseline"])
        rows.append({
            "market": market, "variant": variant, "pct_yr": 100 * strategies[name]["log_growth_per_year"],
            "excess_vs_ew_pct_yr": vs_ew, "excess_vs_best_pct_yr": vs_best, "best_causal_baseline": best,
            "best_pct_yr": 100 * strategies[best]["log_growth_per_year"],
            "equal_weight_pct_yr": 100 * ew["log_growth_per_year"],
            "turnover": strategies[name]["turnover"], "equal_weight_turnover": ew["turnover"],
            "kept_untrained": kept[variant], "members": members[variant], "seconds": seconds,
        })
    return rows


def table(rows: list[dict]) -> str:
    head = ("| market | variant | %/yr | excess vs EW %/yr [90% CI] | best causal baseline (%/yr) | excess vs it "
            "[90% CI] | turnover (EW) | kept untrained |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ew, bb = r["excess_vs_ew_pct_yr"], r["excess_vs_best_pct_yr"]
        lines.append(f"| {r['market']} | {r['variant']} | {r['pct_yr']:+.1f} | {ew[0]:+.1f} [{ew[1]:+.1f}, "
                     f"{ew[2]:+.1f}] | {r['best_causal_baseline']} ({r['best_pct_yr']:+.1f}) | {bb[0]:+.1f} "
                     f"[{bb[1]:+.1f}, {bb[2]:+.1f}] | {r['turnover']:.3f} ({r['equal_weight_turnover']:.3f}) | "
                     f"{r['kept_untrained']} / {r['members']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", nargs="+", default=list(MARKETS), choices=MARKETS)
    ap.add_argument("--init", default="pretrained", help="the checkpoint to compare (default: the shipped one)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=600)
    ap.add_argument("--lookback", type=int, default=64)
    ap.add_argument("--batch-windows", type=int, default=32)
    ap.add_argument("--eval-interval", type=int, default=50)
    ap.add_argument("--cost-bps", type=float, default=10.0)
    ap.add_argument("--baselines", default="all")
    ap.add_argument("--work-dir", type=Path, help="keep data and study folders here (default: a temporary folder)")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    args = ap.parse_args()
    print(f"# {machine_info().describe()}", flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="compare_init_"))
    rows: list[dict] = []
    try:
        for market in args.markets:
            root, execution, cash = market_root(market, work)
            cfg = ExperimentConfig(
                data=DataConfig(root=root), env=EnvConfig(cost_bps=args.cost_bps, execution=execution,
                                                          include_cash=cash),
                train=TrainConfig(lookback=args.lookback, batch_windows=args.batch_windows, epochs=args.epochs,
                                  eval_interval=args.eval_interval, dtype="float32", device="cpu",
                                  save_dir=str(work / "studies" / market)))
            settings = StudySettings(folds=args.folds, seeds=args.seeds, baselines=args.baselines, init=args.init)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                folder = run_study(cfg, settings, log=lambda *_: None)
            study = json.loads((folder / "study.json").read_text())
            for row in study_rows(market, study, time.perf_counter() - t0):
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = table(rows)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
