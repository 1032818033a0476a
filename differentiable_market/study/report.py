"""A study's results: statistics on the stitched out-of-sample paths, the verdict sentence, study.json's results
section and a self-contained report.html (interactive plotly charts with plotly.js embedded once, nothing loaded from
the network; see ``report_html``).

Every figure is computed on the one stitched out-of-sample path per strategy (``oos.stitched_paths``): no bar is
counted twice. Assumptions are written next to each statistic in study.json.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..atomic import atomic_write_text, json_safe
from ..baselines import registry
from ..checkpoint import Checkpoint
from ..config import ExperimentConfig
from ..data import MarketData
from ..env import account
from ..marketsimulator.backtester import universe_note
from ..errors import ConfigError
from ..metrics import bars_per_year, path_metrics
from . import stats
from .oos import oos_inputs, single_policy_log_growth, stitched_paths
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
    search: int = 0  # Optuna trials per fold (0: no search; the study trains the given flags)
    space: str | None = None  # the search space file given (None: the default space); the study keeps a copy
    search_batch: int = 4  # trials drawn together per fold (and run at once), whatever the worker count
    search_epochs: int | None = None  # optimizer steps of each trial (None: --epochs / 6, study.run.trial_config)
    search_pruner: Literal["median", "halving", "none"] = "median"
    search_storage: str | None = None  # Optuna database URL; None: a journal file in the study folder
    # a checkpoint every member starts from: "pretrained" (the shipped pretrained policy) or a path; None: from
    # scratch. With --epochs 0 the study scores it per fold without training (zero-shot, evidence pooled over the
    # folds before; study/zeroshot.py)
    init: str | None = None
    scratch: bool = True  # with init and training steps: also train the members from scratch, for comparison

    def __post_init__(self) -> None:
        registry.resolve(self.baselines)  # refuses unknown names with the valid ones
        if self.folds < 1 or self.seeds < 1:
            raise ConfigError(f"--folds and --seeds must be >= 1, got {self.folds} and {self.seeds}.")
        if self.search < 0 or self.search_batch < 1:
            raise ConfigError(f"--search must be >= 0 and --search-batch >= 1, got {self.search} and "
                              f"{self.search_batch}.")
        if self.search_epochs is not None and self.search_epochs < 1:
            raise ConfigError(f"--search-epochs must be >= 1, got {self.search_epochs}.")
        if self.search_pruner not in ("median", "halving", "none"):
            raise ConfigError(f"--search-pruner must be median, halving or none, got {self.search_pruner!r}.")
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
    return first_zero(excess, BREAKEVEN_MAX_BPS)


def first_zero(f: Any, cap: float) -> float:
    """The smallest x in (0, cap] where f, positive at 0, reaches 0 (``inf`` if it stays positive up to ``cap``).

    f need not be monotone (a strategy's excess over a benchmark that also pays fees can dip below zero and come
    back), so the first crossing is bracketed on a grid (0.25 doubling up to the cap), then bisected to below 1e-9."""
    grid = [0.0] + [0.25 * 2.0**i for i in range(40) if 0.25 * 2.0**i < cap] + [cap]
    for lo, hi in zip(grid, grid[1:]):
        if f(hi) <= 0:
            break
    else:
        return math.inf
    for _ in range(60):
        if hi - lo < 1e-10:
            break
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
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
            f"(SPA {format_pvalue(spa_p, settings.bootstrap_reps)}).")


def format_pvalue(p: float, reps: int) -> str:
    """"p = 0.23", or "p < 0.0005" when no resample reached the statistic (a bootstrap p-value of 0 only says p is
    below 1 / reps)."""
    return f"p < {1 / reps:.2g}" if p <= 0 else f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


VARIANT_LABELS = {"zero_shot": "Pretrained, zero-shot", "scratch": "Trained from scratch"}


def study_results(market: MarketData, folds: list[Fold], members: dict[int, list[tuple[int, Checkpoint]]],
                  cfg: ExperimentConfig, settings: StudySettings, search: dict[str, Any] | None = None,
                  trial_checkpoints: dict[int, dict[int, Checkpoint]] | None = None,
                  variants: dict[str, dict[int, list[tuple[int, Checkpoint]]]] | None = None) -> dict[str, Any]:
    """Everything the study concludes, as JSON-able data (deterministic: fixed bootstrap seed).

    ``search``: the study's search record (``search.run_search``), whose every trial the DSR counts;
    ``trial_checkpoints``: fold -> trial number -> its best.pt, stitched by validation rank into the SPA test's models;
    ``variants``: other groups of members (name -> members, e.g. "zero_shot" and "scratch" beside a fine-tuned
    study): each group's seed ensemble becomes a strategy, compared with equal weight and the best causal baseline,
    and counted as a trial by the SPA and the DSR."""
    include_cash = cfg.env.include_cash
    paths, bars = stitched_paths(market, folds, members, cfg.env.cost_rate, include_cash, cfg.env.execution,
                                 baselines=settings.baselines)
    for name, group in (variants or {}).items():
        extra, _ = stitched_paths(market, folds, group, cfg.env.cost_rate, include_cash, cfg.env.execution,
                                  baselines="equal_weight")
        n_seeds = len(next(iter(group.values())))
        count = "" if name == "zero_shot" else f" ({n_seeds} seed{'s' if n_seeds > 1 else ''})"
        paths[name] = dataclasses.replace(extra["ensemble"], name=name, label=VARIANT_LABELS.get(name, name) + count)
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
    trials = seeds + ["ensemble"] + list(variants or {})
    ens = lg["ensemble"]
    searched = n_search_trials(search)
    trial_lg = _trial_models(market, folds, search, trial_checkpoints, cfg)  # [T, M], M = 0 without search
    spa_models = np.concatenate([np.stack([lg[t] for t in trials], axis=1), trial_lg], axis=1)
    statistics: dict[str, Any] = {"best_causal_baseline": best, "assumptions": {
        "paths": "one stitched out-of-sample path per strategy; every bar counted once",
        "bootstrap": "stationary bootstrap (Politis-Romano) of per-bar values, expected block length chosen by "
                     "Politis-White; percentile intervals; assumes the per-bar series is stationary and weakly "
                     "dependent",
        "best_causal_baseline": f"among every causal baseline run (--baselines {settings.baselines}: "
                                f"{', '.join(causal)}), the one with the highest out-of-sample log growth: chosen "
                                "after the fact, so a harder benchmark (hindsight lines and single assets excluded)",
        "psr_dsr": "Bailey & Lopez de Prado; i.i.d. returns with the sample skewness and kurtosis; DSR counts every "
                   "trial the study made (each seed, the ensemble and every search trial of every fold, pruned "
                   "ones included) as independent, which is conservative; V is the variance of the per-bar Sharpe "
                   "ratios of the out-of-sample paths of the seeds, the ensemble (and the stitched search trials), "
                   "floored at 1/T, the sampling variance of a skill-less Sharpe estimate over T bars; the PSR "
                   "against equal weight's Sharpe treats that Sharpe as a known constant (its estimation error and "
                   "its correlation with the ensemble are ignored, so it overstates the evidence)",
        **({"calendar": "union calendar: every strategy holds only the assets tradeable at each decision bar (the "
                        "causal mask: listed, and a print at most --max-fill-bars bars old), equal weight is equal "
                        "over them, and a holding in an asset that stops being tradeable (a delisting once known, or a "
                        "halt) is sold at its last close with the fee"} if market.calendar == "union" else {}),
        "spa": "Hansen (2005) SPA on per-bar losses -log growth, studentised by the bootstrap standard error of each "
               "model's mean differential, stationary bootstrap; the models are "
               "every trial (each seed and the ensemble"
               + (", and each search trial rank: the m-th best trial of every fold stitched into one path)"
                  if searched else ")"),
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
            "spa": _spa(stats.spa_test(-lg[bench], -spa_models, None, reps, BOOTSTRAP_SEED)),
        }
    if variants:  # the other groups of members against the same two benchmarks, and against the study's ensemble
        statistics["variants"] = {
            name: {"label": paths[name].label, **{
                key: _interval(stats.mean_growth_ci(lg[name] - lg[bench], ppy, level, reps, BOOTSTRAP_SEED))
                for key, bench in (("excess_vs_equal_weight", "equal_weight"),
                                   ("excess_vs_best_causal_baseline", best), ("excess_vs_ensemble", "ensemble"))}}
            for name in variants}
    trial_sharpes = np.array([stats.sharpe_per_bar(np.expm1(lg[t])) for t in trials]
                             + [stats.sharpe_per_bar(np.expm1(trial_lg[:, m])) for m in range(trial_lg.shape[1])])
    ew_sr = float(stats.sharpe_per_bar(np.expm1(lg["equal_weight"])))
    statistics["ensemble_psr"] = {"vs_zero": stats.psr_of(np.expm1(ens), 0.0),
                                  "vs_equal_weight_sharpe": stats.psr_of(np.expm1(ens), ew_sr)}
    n_trials = len(trials) + searched
    statistics["ensemble_dsr"] = {"dsr": stats.dsr_of(np.expm1(ens), trial_sharpes, n_trials),
                                  "trials": n_trials, "search_trials": searched}
    seed_sharpes = sorted(strategies[s]["sharpe"] for s in seeds)
    statistics["seed_spread"] = {"sharpe_min": seed_sharpes[0], "sharpe_median": float(np.median(seed_sharpes)),
                                 "sharpe_max": seed_sharpes[-1],
                                 "log_growth_per_year": {s: strategies[s]["log_growth_per_year"] for s in seeds}}
    # the growth the paths were accounted with (1 off a union calendar's mask, where their weights are 0)
    growth = oos_inputs(market, folds, cfg.env.execution, include_cash).growth[0]
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
    universe = None if market.calendar != "union" else universe_note(np.asarray(market.tradeable), bars,
                                                                      market.symbols)
    return json_safe({
        "out_of_sample": {"first_bar": first, "last_bar": last, "bars": int(bars.size), "periods_per_year": ppy,
                          "cost_bps": cfg.env.cost_bps, "universe": universe},
        "verdict": _verdict(first, last, int(bars.size), settings, cfg.env.cost_bps, iv,
                            statistics["vs_equal_weight"]["spa"]["pvalue"]),
        "strategies": strategies,
        "statistics": statistics,
        "folds": per_fold,
        "equity": {"timestamps": [str(t)[:10] for t in market.timestamps[bars]],
                   "log_wealth": {n: np.cumsum(v).tolist() for n, v in lg.items()}},
    })


def n_search_trials(search: dict[str, Any] | None) -> int:
    """Every trial of every fold's search, pruned and failed ones included (0 without search)."""
    return 0 if not search else sum(len(f["trials"]) for f in search["folds"])


def _trial_models(market: MarketData, folds: list[Fold], search: dict[str, Any] | None,
                  checkpoints: dict[int, dict[int, Checkpoint]] | None, cfg: ExperimentConfig) -> np.ndarray:
    """[T, M] log growth of the search's trials as stitched models: model m holds each fold's m-th best trial
    (by validation score; pruned trials after completed ones), M the fewest trials with a checkpoint in any fold."""
    if not search or not checkpoints:
        return np.zeros((folds[-1].decisions[1] - folds[0].decisions[0], 0))
    ranked = {}
    for f in search["folds"]:
        by_number = checkpoints.get(f["fold"], {})
        order = sorted(f["trials"], key=lambda t: (t["state"] != "complete", -(t["value"] if t["value"] is not None
                                                                               else -math.inf), t["number"]))
        ranked[f["fold"]] = [by_number[t["number"]] for t in order if t["number"] in by_number]
    n_models = min(len(r) for r in ranked.values())
    models = [{k: ranked[k][m] for k in ranked} for m in range(n_models)]
    return single_policy_log_growth(market, folds, models, cfg.env.cost_rate, cfg.env.include_cash,
                                    cfg.env.execution)


SEED_LINE = dict(color="rgba(31, 119, 180, 0.55)", width=0.9)  # the seeds: thin, so the ensemble stands out
INTERVAL_BENCHMARKS = ("vs_equal_weight", "vs_best_causal_baseline", "vs_olmar")


def equity_chart(results: dict[str, Any]) -> Any:
    """Plotly figure of the stitched out-of-sample wealth of the ensemble, each seed and every baseline on a log axis,
    the drawdown of the ensemble and the baselines below, and the fold boundaries marked."""
    import pandas as pd

    from ..marketsimulator import charts

    eq, strategies = results["equity"], results["strategies"]
    names = [n for n, v in strategies.items() if v["kind"] in ("policy", "baseline")]
    styles = {n: dict(color="black", width=2.5) if n == "ensemble" else SEED_LINE if n.startswith("seed")
              else dict(width=1.4, dash="dash") for n in names}
    starts = np.cumsum([0] + [f["bars"] for f in results["folds"]])[:-1].tolist()
    times = pd.DatetimeIndex(eq["timestamps"])
    intraday = not times.is_unique  # study.json keeps dates only: number the bars instead
    x = pd.RangeIndex(len(times), name="bar") if intraday else times
    fig = charts.equity_figure(
        x, {n: np.asarray(eq["log_wealth"][n]) for n in names}, {n: strategies[n]["label"] for n in names},
        {n for n in names if not n.startswith("seed")}, starts,
        "Stitched out-of-sample wealth (log scale) and drawdown; grey lines: fold boundaries", styles, log_y=True)
    for f, k in zip(results["folds"], starts):
        fig.add_annotation(x=x[k], y=1.0, xref="x", yref="paper", text=f"fold {f['fold']}", showarrow=False,
                           xanchor="left", yanchor="top", font=dict(size=10, color="#888"))
    if intraday:
        fig.update_xaxes(title_text="out-of-sample bar", row=2, col=1)
    return fig


def interval_chart(results: dict[str, Any]) -> Any:
    """Plotly figure of the ensemble's confidence intervals against each benchmark of the statistics."""
    from ..marketsimulator import charts

    s = results["statistics"]
    level = s["vs_equal_weight"]["excess_log_growth_per_year"]["level"]
    labels = {k: f"vs best causal baseline ({s[k]['benchmark']})" if k == "vs_best_causal_baseline"
              else f"vs {s[k]['benchmark']}" for k in INTERVAL_BENCHMARKS if k in s}
    panels = {}
    for stat, scale, title in (("excess_log_growth_per_year", 100.0, "ensemble's excess log growth, %/yr"),
                               ("sharpe_difference", 1.0, "ensemble's Sharpe minus benchmark's (annualised)")):
        panels[title] = {text: tuple(s[k][stat][q] * scale for q in ("estimate", "low", "high"))
                         for k, text in labels.items()}
    return charts.interval_figure(panels, f"{level:.0%} confidence intervals (stationary bootstrap)")


def study_charts(results: dict[str, Any]) -> dict[str, str]:
    """HTML fragments of report.html's charts, keyed equity and intervals (div ids ``chart-<key>``); the first
    embeds plotly.js."""
    from ..marketsimulator import charts

    return charts.figures_html({"equity": equity_chart(results), "intervals": interval_chart(results)})


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


def _search_count(dsr: dict[str, Any]) -> str:
    n = dsr.get("search_trials", 0)
    return f", {n} of them search trials" if n else ""


def report_html(state: dict[str, Any], extra_sections: Sequence[str] = ()) -> str:
    """report.html of a study whose ``state`` (study.json's content) has results: one page that loads nothing from
    the network. The verdict, the interactive charts (``study_charts``: wealth on a log scale, drawdown, fold
    boundaries, confidence intervals; plotly.js embedded once, in the first chart), the statistics, settings,
    assumptions and the tables.

    ``extra_sections``: HTML fragments appended in order after the tables, each typically an ``<h2>`` and its
    content. A fragment may hold plotly charts that use the plotly.js the page already carries: make them with
    ``marketsimulator.charts.figures_html(figures, embed_plotlyjs=False)`` and keys unique on the page (the div ids
    are ``chart-<key>``; ``equity`` and ``intervals`` are taken). Fragments are inserted as given, not escaped, and
    must not load anything from the network themselves."""
    if isinstance(extra_sections, str):  # a lone fragment would otherwise be joined character by character
        raise TypeError("extra_sections is a sequence of HTML fragments; wrap a single one in a list.")
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
    search_section = ""
    if state.get("search"):
        from .search import search_html

        search_section = search_html(state["search"])
    be = s["cost_breakeven_bps"]["vs_equal_weight"]
    be_text = "no edge even without fees" if be is None else f"{be:.1f} bps one-way"
    olmar = ""
    if "vs_olmar" in s:
        iv = s["vs_olmar"]["excess_log_growth_per_year"]
        olmar = (f"<li>Ensemble against OLMAR: {100 * iv['estimate']:+.1f}%/yr excess log growth, CI "
                 f"[{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]</li>")
    charts = study_charts(r)
    extra = "\n".join(extra_sections)
    note = r["out_of_sample"].get("universe")
    universe = f"<p>{esc(note)}</p>" if note else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Walk-forward study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:right}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}p.verdict{{font-size:1.15em;font-weight:bold}}
.plotly-graph-div{{border:1px solid #ddd;margin:8px 0}}
</style></head><body>
<h1>Walk-forward study</h1>
<p class="verdict">{esc(r['verdict'])}</p>
{charts["equity"]}
<p>Interactive: drag to zoom, double-click to reset, hover for values, click a legend entry to hide it. Wealth is on
a log scale: equal growth rates look equally steep whatever the wealth.</p>
{charts["intervals"]}
<h2>Statistics</h2><ul>
<li>SPA p-value against equal weight: {spa['pvalue']:.3f} (bounds {spa['pvalue_lower']:.3f}..{spa['pvalue_upper']:.3f},
{spa['models']} models); against {esc(s['best_causal_baseline'])}:
{s['vs_best_causal_baseline']['spa']['pvalue']:.3f}</li>
<li>Probabilistic Sharpe ratio of the ensemble (vs 0): {s['ensemble_psr']['vs_zero']:.3f}; deflated Sharpe ratio
({s['ensemble_dsr']['trials']} trials{_search_count(s['ensemble_dsr'])}): {s['ensemble_dsr']['dsr']:.3f}</li>
<li>Seed spread of out-of-sample Sharpe: min {s['seed_spread']['sharpe_min']:.2f}, median
{s['seed_spread']['sharpe_median']:.2f}, max {s['seed_spread']['sharpe_max']:.2f}</li>
<li>Cost at which the ensemble's edge over equal weight vanishes: {be_text}</li>{olmar}</ul>
<h2>Settings</h2><p>{esc(settings_text(state["config"]))}</p>{universe}
<h3>Assumptions</h3><ul>{''.join(f'<li><b>{esc(k)}</b>: {esc(v)}</li>' for k, v in s['assumptions'].items())}</ul>
<h2>Strategies (stitched path)</h2><table><tr><th>strategy</th><th>log growth / yr</th><th>Sharpe</th>
<th>max drawdown</th><th>turnover / bar</th></tr>{strat_rows}</table>
<h2>Per fold (log growth over the fold's test block)</h2><table><tr><th>fold</th><th>dates</th><th>bars</th>
{fold_head}</tr>{fold_rows}</table>
{search_section}
{extra}
</body></html>"""


def write_study_report(study_dir: Path, state: dict[str, Any], extra_sections: Sequence[str] = ()) -> None:
    """Write ``report_html(state, extra_sections)`` to ``<study_dir>/report.html``."""
    atomic_write_text(study_dir / "report.html", report_html(state, extra_sections))
