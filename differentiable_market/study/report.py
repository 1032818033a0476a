"""A study's results: statistics on the stitched out-of-sample paths, the verdict sentence, study.json's results
section and a self-contained report.html.

Every figure is computed on the one stitched out-of-sample path per strategy (``oos.stitched_paths``): no bar is
counted twice. Assumptions are written next to each statistic in study.json.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_text, json_safe
from ..baselines import registry
from ..checkpoint import Checkpoint
from ..config import ExperimentConfig
from ..data import MarketData
from ..env import account, decision_growth
from ..errors import ConfigError
from ..metrics import bars_per_year, path_metrics
from . import stats
from .oos import stitched_paths
from .plan import Fold, WindowKind

BOOTSTRAP_SEED = 0  # fixed, so a resumed study writes the same numbers
BREAKEVEN_MAX_BPS = 2000.0


@dataclass(frozen=True)
class StudySettings:
    """What a study adds to a training config."""

    folds: int = 4
    seeds: int = 3
    oos_fraction: float = 0.3  # share of the scorable decision bars, at the end, tiled by the folds' test blocks
    window: WindowKind = "expanding"
    train_bars: int | None = None  # training bars per fold with window="rolling"
    bootstrap_reps: int = 2000
    ci_level: float = 0.9
    baselines: str = registry.DEFAULT  # --baselines: which baselines the stitched paths compare against

    def __post_init__(self) -> None:
        registry.resolve(self.baselines)  # refuses unknown names with the valid ones
        if self.folds < 1 or self.seeds < 1:
            raise ConfigError(f"--folds and --seeds must be >= 1, got {self.folds} and {self.seeds}.")
        if not 0.0 < self.ci_level < 1.0:
            raise ConfigError(f"--ci-level must lie in (0, 1), got {self.ci_level}.")
        if self.bootstrap_reps < 100:
            raise ConfigError(f"--bootstrap-reps must be >= 100, got {self.bootstrap_reps}.")


def _interval(iv: stats.Interval, scale: float = 1.0) -> dict[str, Any]:
    return {"estimate": iv.estimate * scale, "low": iv.low * scale, "high": iv.high * scale, "level": iv.level,
            "method": iv.method, "block_length_bars": iv.block_length, "reps": iv.reps}


def _spa(res: stats.SPAResult) -> dict[str, Any]:
    return {"pvalue": res.pvalue, "pvalue_lower": res.pvalue_lower, "pvalue_upper": res.pvalue_upper,
            "block_size_bars": res.block_size, "reps": res.reps, "models": res.n_models, "bars": res.n_bars}


def cost_breakeven_bps(w_ta: np.ndarray, w_bench_ta: np.ndarray, growth_ta: torch.Tensor,
                       include_cash: bool) -> float | None:
    """One-way fee (bps) at which the strategy's total log growth equals the benchmark's, both re-accounted with the
    same fixed weights. None when it has no edge even at zero cost; ``inf`` past ``BREAKEVEN_MAX_BPS``."""
    from ..env import initial_holdings

    w = torch.as_tensor(np.stack([w_ta, w_bench_ta]))  # [2, T, A]
    initial = initial_holdings(w.shape[-1], include_cash, dtype=torch.float64)

    def excess(bps: float) -> float:
        acc = account(w, growth_ta[None].expand(2, -1, -1), initial, bps * 1e-4, include_cash, smooth_eps=None)
        lg = acc.log_growth.sum(-1)
        return float(lg[0] - lg[1])

    if excess(0.0) <= 0:
        return None
    if excess(BREAKEVEN_MAX_BPS) > 0:
        return math.inf
    lo, hi = 0.0, BREAKEVEN_MAX_BPS
    for _ in range(40):  # bisection to ~2e-9 bps
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _verdict(first: str, last: str, bars: int, settings: StudySettings, cost_bps: float, iv: dict[str, Any],
             spa_p: float) -> str:
    pct = f"{iv['level']:.0%}"
    if iv["low"] > 0 and spa_p < 0.05:
        call = "a positive edge, distinguishable from zero"
    elif iv["high"] < 0:
        call = "worse than equal weight"
    else:
        call = "not distinguishable from zero"
    return (f"Out of sample ({first[:10]}..{last[:10]}, {bars:,} bars, {settings.folds} folds x {settings.seeds} "
            f"seeds, {cost_bps:g} bps), the seed ensemble's excess log growth over equal weight is "
            f"{100 * iv['estimate']:+.1f}%/yr, {pct} CI [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]: {call} "
            f"(SPA p = {spa_p:.2f}).")


def study_results(market: MarketData, folds: list[Fold], members: dict[int, list[tuple[int, Checkpoint]]],
                  cfg: ExperimentConfig, settings: StudySettings) -> dict[str, Any]:
    """Everything the study concludes, as JSON-able data (deterministic: fixed bootstrap seed)."""
    include_cash = cfg.env.include_cash
    paths, bars = stitched_paths(market, folds, members, cfg.env.cost_rate, include_cash, cfg.env.execution,
                                 cfg.env.rebalance_every, settings.baselines)
    ppy = bars_per_year(market.timestamps)
    level, reps = settings.ci_level, settings.bootstrap_reps
    lg = {name: p.log_growth for name, p in paths.items()}
    strategies = {}
    for name, p in paths.items():
        m = path_metrics(p.log_growth, p.turnover, p.cost, ppy)
        strategies[name] = {"label": p.label, "kind": p.kind, "family": p.family,
                            "log_growth": float(p.log_growth.sum()),
                            "log_growth_per_year": stats.annualised_mean(p.log_growth, ppy),
                            **{k: float(v) for k, v in m.items()}}
    causal = [n for n, p in paths.items() if p.kind == "baseline"]
    best = max(causal, key=lambda n: strategies[n]["log_growth"])
    seeds = [n for n in paths if n.startswith("seed")]
    trials = seeds + ["ensemble"]
    ens = lg["ensemble"]
    statistics: dict[str, Any] = {"best_causal_baseline": best, "assumptions": {
        "paths": "one stitched out-of-sample path per strategy; every bar counted once",
        "bootstrap": "stationary bootstrap (Politis-Romano) of per-bar values, expected block length chosen by "
                     "Politis-White; percentile intervals; assumes the per-bar series is stationary and weakly "
                     "dependent",
        "best_causal_baseline": f"among every causal baseline run (--baselines {settings.baselines}: "
                                f"{', '.join(causal)}), the one with the highest out-of-sample log growth: chosen "
                                "after the fact, so a harder benchmark (hindsight lines and single assets excluded)",
        "psr_dsr": "Bailey & Lopez de Prado; i.i.d. returns with the sample skewness and kurtosis; DSR counts every "
                   "trial the study made (each seed and the ensemble) as independent, which is conservative",
        "spa": "Hansen (2005) SPA on per-bar losses -log growth, studentised, stationary bootstrap; the models are "
               "every trial (each seed and the ensemble)",
    }}
    benchmarks = [("vs_equal_weight", "equal_weight"), ("vs_best_causal_baseline", best)]
    if "olmar" in paths:  # the reversal rule a learner should at least match, shown even when not the best
        benchmarks.append(("vs_olmar", "olmar"))
    for key, bench in benchmarks:
        statistics[key] = {
            "benchmark": bench,
            "excess_log_growth_per_year": _interval(
                stats.mean_growth_ci(ens - lg[bench], ppy, level, reps, BOOTSTRAP_SEED)),
            "sharpe_difference": _interval(
                stats.sharpe_difference_ci(ens, lg[bench], ppy, level, reps, BOOTSTRAP_SEED)),
            "spa": _spa(stats.spa_test(-lg[bench], -np.stack([lg[t] for t in trials], axis=1), None, reps,
                                       BOOTSTRAP_SEED)),
        }
    trial_sharpes = np.array([stats.sharpe_per_bar(np.expm1(lg[t])) for t in trials])
    ew_sr = float(stats.sharpe_per_bar(np.expm1(lg["equal_weight"])))
    statistics["ensemble_psr"] = {"vs_zero": stats.psr_of(np.expm1(ens), 0.0),
                                  "vs_equal_weight_sharpe": stats.psr_of(np.expm1(ens), ew_sr)}
    statistics["ensemble_dsr"] = {"dsr": stats.dsr_of(np.expm1(ens), trial_sharpes), "trials": len(trials)}
    seed_sharpes = sorted(strategies[s]["sharpe"] for s in seeds)
    statistics["seed_spread"] = {"sharpe_min": seed_sharpes[0], "sharpe_median": float(np.median(seed_sharpes)),
                                 "sharpe_max": seed_sharpes[-1],
                                 "log_growth_per_year": {s: strategies[s]["log_growth_per_year"] for s in seeds}}
    growth = decision_growth(torch.tensor(market.open), torch.tensor(market.close), cfg.env.execution,
                             include_cash)[torch.as_tensor(bars)]
    breakeven = cost_breakeven_bps(paths["ensemble"].weights, paths["equal_weight"].weights, growth, include_cash)
    statistics["cost_breakeven_bps"] = {
        "vs_equal_weight": breakeven,
        "meaning": "one-way fee at which the ensemble's excess log growth over equal weight is zero, both "
                   "re-accounted with their weights fixed; null: no edge even without fees",
    }
    per_fold = []
    for f in folds:
        lo, hi = f.decisions[0] - bars[0], f.decisions[1] - bars[0]
        per_fold.append({
            "fold": f.index, "first_bar": str(market.timestamps[f.decisions[0]])[:19],
            "last_bar": str(market.timestamps[f.decisions[1] - 1])[:19], "bars": hi - lo,
            **{f"{n}_log_growth": float(lg[n][lo:hi].sum()) for n in ["ensemble", "equal_weight", best, *seeds]},
        })
    first, last = str(market.timestamps[bars[0]])[:19], str(market.timestamps[bars[-1]])[:19]
    iv = statistics["vs_equal_weight"]["excess_log_growth_per_year"]
    return json_safe({
        "out_of_sample": {"first_bar": first, "last_bar": last, "bars": int(bars.size), "periods_per_year": ppy,
                          "cost_bps": cfg.env.cost_bps},
        "verdict": _verdict(first, last, int(bars.size), settings, cfg.env.cost_bps, iv,
                            statistics["vs_equal_weight"]["spa"]["pvalue"]),
        "strategies": strategies,
        "statistics": statistics,
        "folds": per_fold,
        "equity": {"timestamps": [str(t)[:10] for t in market.timestamps[bars]],
                   "log_wealth": {n: np.cumsum(v).tolist() for n, v in lg.items()}},
    })


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def equity_figure(results: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eq = results["equity"]
    x = np.array(eq["timestamps"], dtype="datetime64[D]")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    kinds = {n: s["kind"] for n, s in results["strategies"].items()}
    for name, lw in eq["log_wealth"].items():
        w = np.exp(np.asarray(lw))
        if name == "ensemble":
            ax.plot(x, w, color="black", lw=2.2, label="seed ensemble", zorder=5)
        elif name.startswith("seed"):
            ax.plot(x, w, color="tab:blue", lw=0.8, alpha=0.6, label=name)
        elif kinds[name] == "baseline":
            ax.plot(x, w, lw=1.3, ls="--", label=name)
    for f in results["folds"][1:]:
        ax.axvline(np.datetime64(f["first_bar"][:10]), color="grey", lw=0.6, ls=":")
    ax.set_ylabel("wealth (start = 1)")
    ax.set_title("Stitched out-of-sample equity (dotted lines: fold boundaries)")
    ax.legend(fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    return _png(fig)


def interval_figure(results: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["statistics"]
    level = s["vs_equal_weight"]["excess_log_growth_per_year"]["level"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.4), gridspec_kw={"wspace": 0.45})
    panels = (("excess_log_growth_per_year", 100.0, "ensemble's excess log growth, %/yr"),
              ("sharpe_difference", 1.0, "ensemble's Sharpe minus benchmark's (annualised)"))
    for ax, (stat, scale, title) in zip(axes, panels):
        labels = []
        for i, key in enumerate(("vs_equal_weight", "vs_best_causal_baseline")):
            iv = s[key][stat]
            est, lo, hi = (iv[k] * scale for k in ("estimate", "low", "high"))
            ax.errorbar([est], [i], xerr=[[est - lo], [hi - est]], fmt="o", color="black", capsize=4)
            labels.append(f"vs {s[key]['benchmark']}")
        ax.set_yticks(range(len(labels)), labels, fontsize=9)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.axvline(0, color="red", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{level:.0%} confidence intervals (stationary bootstrap)", fontsize=10, y=1.05)
    return _png(fig)


def settings_text(config: dict[str, Any]) -> str:
    """The training settings a reader needs to judge the study: policy, action, fees, schedule, execution."""
    env, policy, train = config["env"], config["policy"], config["train"]
    fee = env["cost_bps"]
    train_fee = env.get("train_cost_bps")
    return (f"policy {policy['architecture']}, encoder {policy['encoder']}; action {policy.get('action', 'target')}; "
            f"rebalancing every {env.get('rebalance_every', 1)} bar(s); {fee:g} bps one-way"
            + (f" (trained with {train_fee:g} bps)" if train_fee is not None else "")
            + f"; execution {env['execution']}; cash {env['include_cash']}; lookback {train['lookback']}, "
            f"{train['batch_windows']} windows x {train['rollout_groups']} rollouts, {train['epochs']} steps, "
            f"pathwise weight {train['pathwise_weight']:g}")


def report_html(state: dict[str, Any]) -> str:
    r = state["results"]
    s = r["statistics"]
    esc = html.escape
    strat_rows = ""
    for fam in ("policy", *registry.FAMILY_TITLES):
        rows = [v for v in r["strategies"].values() if v.get("family", "policy" if v["kind"] == "policy" else "core")
                == fam and v["kind"] != "single"]
        if rows and fam != "policy":
            strat_rows += f"<tr><th colspan='5' style='text-align:left'>{esc(registry.FAMILY_TITLES[fam])}</th></tr>"
        strat_rows += "".join(
            f"<tr><td>{esc(v['label'])}</td><td>{100 * v['log_growth_per_year']:+.2f}%</td><td>{v['sharpe']:.2f}</td>"
            f"<td>{100 * v['max_drawdown']:.1f}%</td><td>{v['turnover']:.3f}</td></tr>" for v in rows)
    fold_keys = [k for k in r["folds"][0] if k.endswith("_log_growth")]
    fold_rows = "".join(
        "<tr>" + f"<td>{f['fold']}</td><td>{f['first_bar'][:10]}..{f['last_bar'][:10]}</td><td>{f['bars']}</td>"
        + "".join(f"<td>{f[k]:+.4f}</td>" for k in fold_keys) + "</tr>" for f in r["folds"])
    fold_head = "".join(f"<th>{esc(k.removesuffix('_log_growth'))}</th>" for k in fold_keys)
    spa = s["vs_equal_weight"]["spa"]
    be = s["cost_breakeven_bps"]["vs_equal_weight"]
    be_text = "no edge even without fees" if be is None else f"{be:.1f} bps one-way"
    olmar = ""
    if "vs_olmar" in s:
        iv = s["vs_olmar"]["excess_log_growth_per_year"]
        olmar = (f"<li>Ensemble against OLMAR: {100 * iv['estimate']:+.1f}%/yr excess log growth, CI "
                 f"[{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]</li>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Walk-forward study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}p.verdict{{font-size:1.15em;font-weight:bold}}
</style></head><body>
<h1>Walk-forward study</h1>
<p class="verdict">{esc(r['verdict'])}</p>
<img alt="equity" src="data:image/png;base64,{equity_figure(r)}">
<img alt="confidence intervals" src="data:image/png;base64,{interval_figure(r)}">
<h2>Statistics</h2><ul>
<li>SPA p-value against equal weight: {spa['pvalue']:.3f} (bounds {spa['pvalue_lower']:.3f}..{spa['pvalue_upper']:.3f},
{spa['models']} models); against {esc(s['best_causal_baseline'])}:
{s['vs_best_causal_baseline']['spa']['pvalue']:.3f}</li>
<li>Probabilistic Sharpe ratio of the ensemble (vs 0): {s['ensemble_psr']['vs_zero']:.3f}; deflated Sharpe ratio
({s['ensemble_dsr']['trials']} trials): {s['ensemble_dsr']['dsr']:.3f}</li>
<li>Seed spread of out-of-sample Sharpe: min {s['seed_spread']['sharpe_min']:.2f}, median
{s['seed_spread']['sharpe_median']:.2f}, max {s['seed_spread']['sharpe_max']:.2f}</li>
<li>Cost at which the ensemble's edge over equal weight vanishes: {be_text}</li>{olmar}</ul>
<h2>Settings</h2><p>{esc(settings_text(state["config"]))}</p>
<h3>Assumptions</h3><ul>{''.join(f'<li><b>{esc(k)}</b>: {esc(v)}</li>' for k, v in s['assumptions'].items())}</ul>
<h2>Strategies (stitched path)</h2><table><tr><th>strategy</th><th>log growth / yr</th><th>Sharpe</th>
<th>max drawdown</th><th>turnover / bar</th></tr>{strat_rows}</table>
<h2>Per fold (log growth over the fold's test block)</h2><table><tr><th>fold</th><th>dates</th><th>bars</th>
{fold_head}</tr>{fold_rows}</table>
</body></html>"""


def write_study_report(study_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(study_dir / "report.html", report_html(state))
