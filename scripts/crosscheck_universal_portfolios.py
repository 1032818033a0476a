"""Cross-check the backtester's online-portfolio baselines against the universal-portfolios package.

Run from the repository root:

    uv run --group crosscheck python scripts/crosscheck_universal_portfolios.py [--cost-bps 10] [--dataset sample]
        [--only EG,PAMR] [--max-bars N] [--out FILE]

Datasets: the bundled sample, and ``synthetic50`` (50 random walks, 300 bars). Each algorithm's tolerance class and
any convention difference are in ``NOTES`` and in the printed figures.

(universal-portfolios 0.4.17 imports ``six`` without declaring it, hence ``--with six``.)

Set-up, so that both sides see the same thing: the closes, "close" execution (a decision after
bar t's close earns C[t+1] / C[t], which is universal-portfolios' convention: its weight row k is decided on rows up to
k-1 and earns S[k] / S[k-1]), one window covering every bar from the first, no cash. Our weights come from
``differentiable_market.baselines`` and are accounted by the backtester's ``evaluate_weights`` (``env.account``, exact).
universal-portfolios' OLMAR and RMR are run with ``min_history = window`` so that they skip their warm-up steps (which
feed raw normalised prices, not price relatives, to the update) and start exactly when ours do; the step-wise
algorithms with ``min_history = 1``, skipping the update with the placeholder relative of the first row (ours never
updates on it).

Fee conventions. Both charge a one-way proportional fee on sum_i |w_t,i - drifted w_{t-1},i|. They differ in two
documented ways: (1) universal-portfolios subtracts the fee from the period's gross return, r_t = w.g - c * turnover,
where we multiply, (1 - c * turnover) * w.g (the fee leaves the account before the new position earns anything);
(2) its first row is a free entry (no fee on buying in), where we start from cash and pay the entry fee. The script
reports the raw difference, and the difference after re-accounting our own weights and turnovers under its convention,
which must vanish to rounding if everything else (weights, drift, turnover) agrees.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from differentiable_market import baselines
from differentiable_market.baselines import olps
from differentiable_market.config import DataConfig
from differentiable_market.data import bundled_sample_dir, load_market
from differentiable_market.env import decision_growth
from differentiable_market.marketsimulator.backtester import StrategyResult, evaluate_weights
from differentiable_market.synthetic import random_walk_market


def _import_universal() -> Any:
    try:
        from universal import algos
    except ImportError as exc:
        sys.exit(f"error: cannot import universal-portfolios ({exc}). Run with: uv run --group crosscheck --with six "
                 "python scripts/crosscheck_universal_portfolios.py")
    return algos


def _compare(name: str, ours: StrategyResult, ours_w: np.ndarray, univ: Any, cost_rate: float) -> dict[str, Any]:
    """Figures for one strategy. Our decision t is universal-portfolios' row t + 1."""
    b = univ.B[[c for c in univ.B.columns if c != "CASH"]].to_numpy()[1:]
    x = univ.X.to_numpy()[1:]
    turn_univ = univ._to_rebalance().abs().sum(axis=1, skipna=True).to_numpy()[1:]  # row 1 is its free entry
    gross_ours = np.exp(ours.log_growth[0]) / (1.0 - ours.cost[0])
    gross_univ = (b * x).sum(axis=1)
    wealth_ours = float(np.exp(ours.log_growth[0].sum()))
    univ.fee = cost_rate
    wealth_univ = float(univ.r.to_numpy()[1:].prod())
    # Our own weights and turnovers, re-accounted with its convention: additive fee, free entry.
    turn_free_entry = ours.turnover[0].copy()
    turn_free_entry[0] = 0.0
    wealth_ours_univ_conv = float(np.prod(gross_ours - cost_rate * turn_free_entry))
    return {
        "strategy": name,
        "bars": int(b.shape[0]),
        "weights_max_abs_diff": float(np.abs(ours_w - b).max()),
        "gross_return_max_abs_diff": float(np.abs(gross_ours - gross_univ).max()),
        "turnover_max_abs_diff_after_entry": float(np.abs(ours.turnover[0][1:] - turn_univ[1:]).max()),
        "mean_turnover_per_bar": float(ours.turnover[0][1:].mean()),
        "final_wealth_ours": wealth_ours,
        "final_wealth_universal": wealth_univ,
        "relative_diff": wealth_ours / wealth_univ - 1.0,
        "final_wealth_ours_in_universal_convention": wealth_ours_univ_conv,
        "relative_diff_same_convention": wealth_ours_univ_conv / wealth_univ - 1.0,
    }


def _data(dataset: str) -> tuple[np.ndarray, pd.DatetimeIndex, tuple[str, ...], str]:
    """Closes [T, A], timestamps, symbols and a description of ``dataset``: "sample" (the bundled daily sample) or
    "synthetic50" (50 driftless random walks, 2% daily volatility, 300 bars, seed 0)."""
    if dataset == "sample":
        market = load_market(DataConfig(root=str(bundled_sample_dir())), min_bars=1)
        return (np.array(market.close), pd.DatetimeIndex(market.timestamps), tuple(market.symbols),
                f"bundled sample {list(market.symbols)}, {market.n_bars} daily closes "
                f"{str(market.timestamps[0])[:10]}..{str(market.timestamps[-1])[:10]}")
    if dataset == "synthetic50":
        market = random_walk_market(300, 50, seed=0, vol=0.02)
        return (np.array(market.close), pd.DatetimeIndex(market.timestamps), tuple(market.symbols),
                "synthetic: 50 driftless log-normal random walks, 2% daily volatility, 300 bars, seed 0")
    raise ValueError(f"unknown dataset {dataset!r}; use 'sample' or 'synthetic50'.")


# Our decision t is universal-portfolios' row t + 1. "exact": deterministic, same algorithm, weights must agree to
# rounding. The others are compared to the precision their reference can give (see ``NOTES``).
NOTES = {
    "ONS": "universal-portfolios projects with cvxopt's interior-point QP (tolerances ~1e-7); we solve the same QP "
           "exactly, so weights differ by the solver tolerance, and the difference grows along the path because "
           "each step's gradient depends on the last weights",
    "CWMR": "compared with our paper=False mode, which reproduces universal-portfolios' Sigma update (its np.diag of "
            "a column matrix adds phi*lambda/sqrt(U)*x_1^2 to every entry of Sigma^-1); that update makes Sigma nearly "
            "singular, so rounding is amplified and the two agree to 1e-9 only for the first decisions",
    "Anticor": "compared with our paper=False mode (universal-portfolios uses raw relatives, the transposed "
               "cross-correlation and starts one bar earlier); our default follows the paper (log relatives)",
    "RMR": "compared with our scale_ta = first close (universal-portfolios' normalisation); our default divides by "
           "the current close",
    "CORN": "universal-portfolios solves each similar-day log-optimal portfolio with SLSQP (approximate; when it "
            "fails it returns all-zero weights) and the optimum is not unique with fewer similar days than assets",
    "BCRP": "universal-portfolios' SLSQP optimum against our exact Newton/active-set optimum: ours must grow at "
            "least as much",
    "UP": "both use universal-portfolios' own random sample of 10,000 CRPs",
}


def cases(close: torch.Tensor, bars: torch.Tensor, growth: torch.Tensor, algos: Any, tools: Any,
          names: tuple[str, ...] | None = None) -> list[tuple[str, str, Any, Any]]:
    """(name, tolerance class, our weights thunk, universal-portfolios algorithm thunk) of every comparison."""
    n_assets = close.shape[1]

    def with_history(algo: Any, k: int) -> Any:
        algo.min_history = k
        return algo

    def up_pair() -> tuple[Any, Any]:
        np.random.seed(12345)
        points = torch.tensor(tools.mc_simplex(n_assets - 1, 10_000))
        np.random.seed(12345)  # universal-portfolios draws the same sample again in its init_step
        return points, with_history(algos.UP(), 1)

    out = [
        ("UCRP", "exact", lambda: baselines.equal_weight(tuple(bars.shape), n_assets, False), lambda: algos.CRP()),
        ("OLMAR", "exact", lambda: baselines.olmar(close, bars, False),
         lambda: with_history(algos.OLMAR(window=baselines.OLMAR_WINDOW, eps=baselines.OLMAR_EPS),
                              baselines.OLMAR_WINDOW)),
        ("EG", "exact", lambda: olps.eg(close, bars, False), lambda: with_history(algos.EG(eta=olps.EG_ETA), 1)),
        ("PAMR", "exact", lambda: olps.pamr(close, bars, False, variant=0),
         lambda: with_history(algos.PAMR(eps=olps.PAMR_EPS, C=olps.PAMR_C, variant=0), 1)),
        ("PAMR-1", "exact", lambda: olps.pamr(close, bars, False, variant=1),
         lambda: with_history(algos.PAMR(eps=olps.PAMR_EPS, C=olps.PAMR_C, variant=1), 1)),
        ("PAMR-2", "exact", lambda: olps.pamr(close, bars, False, variant=2),
         lambda: with_history(algos.PAMR(eps=olps.PAMR_EPS, C=olps.PAMR_C, variant=2), 1)),
        ("RMR", "exact", lambda: olps.rmr(close, bars, False, scale_ta=close[0]),
         lambda: with_history(algos.RMR(window=olps.RMR_WINDOW, eps=olps.RMR_EPS, tau=olps.RMR_TAU),
                              olps.RMR_WINDOW)),
        ("Anticor", "exact", lambda: olps.anticor(close, bars, False, paper=False),
         lambda: algos.Anticor(window=olps.ANTICOR_WINDOW, c_version=False)),
        ("UP", "exact", None, None),
        ("CWMR", "prefix", lambda: olps.cwmr(close, bars, False, paper=False),
         lambda: with_history(algos.CWMR(eps=olps.CWMR_EPS, confidence=olps.CWMR_CONFIDENCE), 1)),
        ("ONS", "solver", lambda: olps.ons(close, bars, False),
         lambda: with_history(algos.ONS(delta=olps.ONS_DELTA, beta=olps.ONS_BETA, eta=olps.ONS_ETA), 1)),
        ("CORN", "solver", lambda: olps.corn(close, bars, False),
         lambda: with_history(algos.CORN(window=olps.CORN_WINDOW, rho=olps.CORN_RHO), 1)),
        ("BCRP", "optimum", lambda: olps.bcrp_hindsight(growth, False), lambda: algos.BCRP()),
    ]
    resolved = []
    for name, tol, ours, ref in out:
        if names is not None and name not in names:
            continue
        if name == "UP":
            points, algo = up_pair()
            ours, ref = (lambda p=points: olps.universal_portfolio(close, bars, False, points=p)), (lambda a=algo: a)
        resolved.append((name, tol, ours, ref))
    return resolved


def run(cost_bps: float, dataset: str = "sample", names: tuple[str, ...] | None = None,
        max_bars: int | None = None) -> dict[str, Any]:
    """Every comparison on ``dataset`` (its first ``max_bars`` bars when given) at ``cost_bps``."""
    algos = _import_universal()
    from universal import tools

    closes, index, symbols, description = _data(dataset)
    if max_bars is not None:
        closes, index = closes[:max_bars], index[:max_bars]
        description += f", first {len(index)} bars"
    close = torch.tensor(closes)
    g = decision_growth(close, close, "close", include_cash=False)  # [T - 1, A]
    bars = torch.arange(g.shape[0])[None]  # one window: every decision bar
    growth = g[bars]
    rate = cost_bps * 1e-4
    ppy = 252.0  # unused by the comparison; metrics need a value
    frame = pd.DataFrame(closes, index=index, columns=list(symbols))
    out: dict[str, Any] = {"data": description, "cost_bps_one_way": cost_bps, "execution": "close", "results": []}
    for name, tol, ours_fn, ref_fn in cases(close, bars, growth, algos, tools, names):
        t0 = time.perf_counter()
        w = ours_fn()
        t1 = time.perf_counter()
        with warnings.catch_warnings():  # its numpy.matrix and divide-by-zero warnings, by the thousand
            warnings.simplefilter("ignore")
            univ = ref_fn().run(frame, log_progress=False)
        t2 = time.perf_counter()
        ours = evaluate_weights(name, name, "baseline", w, growth, rate, False, ppy)
        row = _compare(name, ours, w[0].numpy(), univ, rate)
        b = univ.B[[c for c in univ.B.columns if c != "CASH"]].to_numpy()[1:]
        diff = np.abs(w[0].numpy() - b).max(axis=1)
        row.update({"tolerance_class": tol, "note": NOTES.get(name, ""), "ours_s": t1 - t0, "universal_s": t2 - t1,
                    "decisions_agreeing_1e-9": int(np.argmax(diff > 1e-9)) if (diff > 1e-9).any() else len(diff),
                    "median_weights_abs_diff": float(np.median(diff))})
        out["results"].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cost-bps", type=float, default=10.0, help="one-way fee in basis points")
    p.add_argument("--dataset", choices=["sample", "synthetic50"], default="sample", help="which closes")
    p.add_argument("--only", default=None, help="comma-separated algorithm names (default: all)")
    p.add_argument("--max-bars", type=int, default=None, help="use only the first N bars")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    names = None if args.only is None else tuple(args.only.split(","))
    figures = {str(bps): run(bps, args.dataset, names, args.max_bars) for bps in sorted({0.0, args.cost_bps})}
    for bps, res in figures.items():
        print(f"cost {bps} bps one-way, {res['data']}, execution {res['execution']}")
        for r in res["results"]:
            print(f"  {r['strategy']:8s} [{r['tolerance_class']}] max|diff| weights {r['weights_max_abs_diff']:.1e} "
                  f"(median {r['median_weights_abs_diff']:.1e}; first {r['decisions_agreeing_1e-9']} decisions to "
                  f"1e-9), turnover {r['turnover_max_abs_diff_after_entry']:.1e}; final wealth ours "
                  f"{r['final_wealth_ours']:.6f} vs universal {r['final_wealth_universal']:.6f} "
                  f"({r['relative_diff']:+.3e} relative; {r['relative_diff_same_convention']:+.1e} in its fee "
                  f"convention); {1e3 * r['ours_s']:.0f} ms vs {1e3 * r['universal_s']:.0f} ms")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
