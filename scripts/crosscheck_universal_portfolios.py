"""Cross-check the backtester's UCRP and OLMAR against the universal-portfolios package on the bundled sample.

Run from the repository root:

    uv run --group crosscheck --with six python scripts/crosscheck_universal_portfolios.py [--cost-bps 10] [--out FILE]

(universal-portfolios 0.4.17 imports ``six`` without declaring it, hence ``--with six``.)

Set-up, so that both sides see the same thing: the bundled daily sample's closes, "close" execution (a decision after
bar t's close earns C[t+1] / C[t], which is universal-portfolios' convention: its weight row k is decided on rows up to
k-1 and earns S[k] / S[k-1]), one window covering every bar from the first, no cash. Our weights come from
``differentiable_market.baselines`` and are accounted by the backtester's ``evaluate_weights`` (``env.account``, exact).
universal-portfolios' OLMAR is run with ``min_history = window`` so that it skips its warm-up steps (which feed raw
normalised prices, not price relatives, to the update) and starts exactly when ours does.

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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from differentiable_market import baselines
from differentiable_market.config import DataConfig
from differentiable_market.data import bundled_sample_dir, load_market
from differentiable_market.env import decision_growth
from differentiable_market.marketsimulator.backtester import StrategyResult, evaluate_weights


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


def run(cost_bps: float) -> dict[str, Any]:
    algos = _import_universal()
    market = load_market(DataConfig(root=str(bundled_sample_dir())), min_bars=1)
    close = torch.tensor(market.close)
    g = decision_growth(torch.tensor(market.open), close, "close", include_cash=False)  # [T - 1, A]
    bars = torch.arange(g.shape[0])[None]  # one window: every decision bar
    growth = g[bars]
    rate = cost_bps * 1e-4
    ppy = 252.0  # unused by the comparison; metrics need a value

    frame = pd.DataFrame(np.array(market.close), index=pd.DatetimeIndex(market.timestamps),
                         columns=list(market.symbols))
    olmar_ref = algos.OLMAR(window=baselines.OLMAR_WINDOW, eps=baselines.OLMAR_EPS)
    olmar_ref.min_history = baselines.OLMAR_WINDOW
    cases = (
        ("UCRP", baselines.equal_weight(tuple(bars.shape), market.n_assets, False), algos.CRP()),
        ("OLMAR", baselines.olmar(close, bars, False), olmar_ref),
    )
    out: dict[str, Any] = {
        "data": f"bundled sample {list(market.symbols)}, {market.n_bars} daily closes "
                f"{str(market.timestamps[0])[:10]}..{str(market.timestamps[-1])[:10]}",
        "cost_bps_one_way": cost_bps,
        "execution": "close",
        "results": [],
    }
    for name, w, algo in cases:
        ours = evaluate_weights(name, name, "baseline", w, growth, rate, False, ppy)
        univ = algo.run(frame, log_progress=False)
        out["results"].append(_compare(name, ours, w[0].numpy(), univ, rate))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cost-bps", type=float, default=10.0, help="one-way fee in basis points")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    figures = {str(bps): run(bps) for bps in sorted({0.0, args.cost_bps})}
    for bps, res in figures.items():
        print(f"cost {bps} bps one-way, {res['data']}, execution {res['execution']}")
        for r in res["results"]:
            print(f"  {r['strategy']:5s}  max|diff| weights {r['weights_max_abs_diff']:.1e}, gross return "
                  f"{r['gross_return_max_abs_diff']:.1e}, turnover {r['turnover_max_abs_diff_after_entry']:.1e}; "
                  f"final wealth ours {r['final_wealth_ours']:.6f} vs universal {r['final_wealth_universal']:.6f} "
                  f"({r['relative_diff']:+.3e} relative; {r['relative_diff_same_convention']:+.1e} in its fee "
                  "convention)")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
