"""Backtest outputs: report.json, windows.json, trades.jsonl, returns.csv, equity.png, weights.png, report.html,
console table.

Every file is written atomically into a new folder ``<out-dir>/<UTC timestamp>[-n]/``; an existing folder is never
reused. Numbers that are not finite (a Sharpe ratio of a flat path, say) are written as null.

trades.jsonl holds the policy's bars of EVERY window, in window order, one JSON object per line:
``window`` (id as in windows.json), ``step`` (0-based bar in the window), ``timestamp`` (the decision bar: the
decision is made after it closes), ``weights`` (target weights keyed by symbol, plus ``CASH`` when cash is included),
``turnover`` (sum of |traded weight| over non-cash assets), ``fee`` (fraction of wealth paid at the trade,
cost rate * turnover), ``log_growth`` (net log growth of the period) and ``wealth`` (within the window, starting at 1
before its first trade: exp of the cumulated log growth). Windows overlap when stride < window length (or when an
end-aligned last window was added), so a bar can appear once per window that contains it. On a union calendar a
row may also hold ``events``: ``tradeable`` (symbols that became tradeable at this bar: a listing or a halt's end),
``untradeable`` (symbols that stopped being tradeable: a delisting known, or a halt) and ``forced_sales`` (symbol ->
weight the policy held there and had to sell at its last close, the fee included in ``fee``).

Overlapping windows are never counted as independent evidence: "policy beats" counts wins only over the
non-overlapping chain of windows, and every output (report.json ``split.overlapping``, the console table, the HTML
page) says when the windows overlap.

report.html is one page that loads nothing from the network: the tables, then interactive plotly charts (equity
and drawdown, policy weights, rolling 63-bar Sharpe of the policy and equal weight, per-period returns as a heatmap,
the histogram of per-bar excess returns over equal weight) with plotly.js embedded once; see ``charts``.

returns.csv is the hand-off to other tools (pyfolio, quantstats): one row per decision of the non-overlapping chain of
windows (below; by default the whole split, one path), in time order. Its first column, the index, is ``realised``:
the bar at whose price the row's return is realised (in "open" execution the decision made after bar t closes is
filled at the open of t+1 and held to the open of t+2, so the row is dated t+2; in "close" execution, t+1). The
second column, ``decided``, is the decision bar t (the date trades.jsonl uses). Both are ISO text as in trades.jsonl
(a plain date for daily bars). Then one column per tradeable strategy (``policy``, then every baseline in
report.json's order; the best single asset IN HINDSIGHT is left out: it is not tradeable) holding the net simple
return exp(log_growth) - 1 of the period, fees included. Every window starts in cash, so the first row of each
window pays the entry fee. Read it with ``pandas.read_csv(path, index_col="realised", parse_dates=["realised"])``.

equity.png and weights.png show the non-overlapping chain of windows (the first window, then each next window that
starts at or after the previous one's end), compounding their wealth; every window starts from cash again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..baselines.registry import FAMILY_TITLES
from ..atomic import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text
from ..config import config_to_dict
from ..env import execution_horizon
from ..metrics import METRICS, aggregate, json_number
from ..runlog import new_timestamped_dir
from ..tearsheet import CONVENTIONS as TEARSHEET_CONVENTIONS
from ..tearsheet import TEARSHEET_METRICS, attribution, longest_drawdown, tearsheet_metrics
from .backtester import BacktestResult

REPORT_FORMAT = "differentiable_market.backtest"
REPORT_VERSION = 1
PLOTTED = ("policy", "equal_weight", "buy_and_hold", "olmar", "inverse_vol", "equal_weight_cash", "vol_target",
           "best_single_hindsight")
MAX_LISTED_SINGLES = 12  # more single-asset holds than this are left out of the tables and plots (not the JSON)
PERCENT = {"total_return", "annualised_return", "annualised_volatility", "max_drawdown", "turnover", "fees_paid",
           "hit_rate", "tracking_error", "alpha", "var_95", "cvar_95", "fee_share"}
BENCHMARK = "equal_weight"  # the benchmark of the tear sheet's relative figures
SHORT = {"annualised_log_growth": "log %/yr", "total_return": "total", "annualised_return": "CAGR",
         "annualised_volatility": "ann.vol",
         "sharpe": "sharpe", "sortino": "sortino", "calmar": "calmar", "max_drawdown": "max.dd",
         "turnover": "turnover", "fees_paid": "fees", "hit_rate": "hit",
         "information_ratio": "info.ratio", "tracking_error": "track.err", "alpha": "alpha", "beta": "beta",
         "skew": "skew", "kurtosis": "ex.kurt", "var_95": "VaR95", "cvar_95": "CVaR95", "tail_ratio": "tail",
         "fee_share": "fee share"}


def iso(t: np.datetime64) -> str:
    """UTC ISO-8601 text; plain YYYY-MM-DD at midnight."""
    text = np.datetime_as_string(np.datetime64(t, "ns"), unit="s")
    return text[:10] if text.endswith("T00:00:00") else text + "Z"


def new_report_dir(parent: str | Path) -> Path:
    """Create and return a fresh ``<parent>/<YYYYmmdd-HHMMSS>[-n]`` folder; never returns an existing one."""
    return new_timestamped_dir(parent)


def _numbers(d: dict[str, Any]) -> dict[str, float | None]:
    return {k: json_number(v) for k, v in d.items()}


def policy_beats(result: BacktestResult) -> dict[str, dict[str, int]]:
    """Non-overlapping windows (the plan's chain) in which the policy's total return is strictly above each other
    strategy's; windows that overlap a counted one are left out, since they are not independent evidence."""
    chain = result.plan.chain()
    mine = result.policy.metrics["total_return"][chain]
    return {name: {"windows": int(np.sum(mine > s.metrics["total_return"][chain])), "of": len(chain)}
            for name, s in result.strategies.items() if name != "policy"}


def _beats_scope(result: BacktestResult) -> str:
    """What 'policy beats' counts, in words."""
    plan = result.plan
    if not plan.overlapping:
        return "'policy beats' = non-overlapping windows where the policy's total return is higher"
    return (f"the {plan.n_windows} windows OVERLAP (they share bars) and are not independent: means are over all of "
            f"them, but 'policy beats' counts only the {len(plan.chain())} non-overlapping window(s) {plan.chain()}")


ANSWER_LEVEL = 0.9  # two-sided coverage of the interval the backtest's answer gives
ANSWER_REPS = 2000  # stationary-bootstrap resamples of that interval
QUESTION = "Does the policy beat equal weight after costs?"


def answer(result: BacktestResult) -> dict[str, Any]:
    """The page's answer to its own question: the policy's annualised excess log growth over equal weight on the path
    of returns.csv, with a stationary-bootstrap interval (``study.stats.mean_growth_ci``, fixed seed), and what it
    says. One path of one checkpoint cannot tell a method from luck: where the interval holds 0 the answer says so and
    points to the study; an untrained checkpoint is named as such; bars that are in-sample are flagged."""
    from ..study.stats import mean_growth_ci

    chain = result.plan.chain()
    policy = result.policy.log_growth[chain].reshape(-1)
    bench = result.strategies[BENCHMARK].log_growth[chain].reshape(-1)
    ppy = result.periods_per_year
    iv = mean_growth_ci(policy - bench, ppy, level=ANSWER_LEVEL, reps=ANSWER_REPS, seed=0)
    untrained = bool(result.checkpoint.get("untrained"))
    in_sample = any(n.startswith("WARNING") for n in result.notes)
    call = "cannot tell" if iv.low <= 0 <= iv.high else "above" if iv.low > 0 else "below"
    pct = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    numbers = f"{pct(iv.estimate)}%/yr ({iv.level:.0%} CI [{pct(iv.low)}, {pct(iv.high)}], {policy.size:,} bars)"
    figure = f"excess log growth over equal weight is {numbers}"
    if untrained:
        text = (f"Untrained policy: this checkpoint is {result.policy.label}, not a trained policy. Its excess log "
                f"growth over equal weight, {numbers}, is what the action does to equal weight, not anything "
                "learned: there is nothing trained to judge. Train longer or on a market with an edge, or run the "
                "study (differentiable-market study).")
    elif call == "cannot tell":
        text = (f"The policy's {figure}: one path cannot tell it from zero. Run the study "
                "(differentiable-market study) to judge the method over folds and seeds.")
    elif call == "above":
        text = (f"The policy's {figure}: above equal weight on this path. One checkpoint on one path is not a verdict "
                "on the method; the study (differentiable-market study) gives one.")
    else:
        text = f"The policy's {figure}: below equal weight on this path."
    if in_sample:
        text = ("In-sample: these bars overlap the ones the policy was trained or selected on (see the warning), so "
                "this says nothing about unseen data. " + text)
    return {
        "question": QUESTION,
        "call": call,
        "untrained": untrained,
        "in_sample": in_sample,
        "bars": int(policy.size),
        "policy_log_growth_per_year": float(policy.mean() * ppy),
        "equal_weight_log_growth_per_year": float(bench.mean() * ppy),
        "excess_log_growth_per_year": {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "level": iv.level,
                                       "method": iv.method, "block_length_bars": iv.block_length, "reps": iv.reps},
        "text": text,
    }


def answer_text(result: BacktestResult) -> str:
    """The answer's sentence (what the console prints last, before the report's path)."""
    return answer(result)["text"]


def _split_info(result: BacktestResult) -> dict[str, Any]:
    plan, ts = result.plan, result.timestamps
    horizon = execution_horizon(result.effective["execution"])
    first, last = int(plan.decision_bars[0, 0]), int(plan.decision_bars[-1, -1])
    return {
        "name": plan.split,
        "bars": list(plan.split_bounds),
        "bar_range": [iso(ts[plan.split_bounds[0]]), iso(ts[plan.split_bounds[1] - 1])],
        "scorable_decision_bars": list(plan.scorable),
        "first_decision": iso(ts[first]),
        "last_decision": iso(ts[last]),
        "date_range": [iso(ts[first]), iso(ts[last + horizon])],  # first decision to the last price any window earns
        "n_windows": plan.n_windows,
        "window_length": plan.length,
        "stride": plan.stride,
        "overlapping": plan.overlapping,
        "non_overlapping_windows": plan.chain(),  # the windows 'policy_beats' counts
    }


def tearsheets(result: BacktestResult) -> dict[str, dict[str, Any]]:
    """Per strategy, the tear-sheet figures (``tearsheet``) on the non-overlapping chain of windows, the path of
    returns.csv, against equal weight on the same bars; the longest drawdown with returns.csv dates."""
    chain = result.plan.chain()
    times = realised_times(result)
    bench = result.strategies[BENCHMARK].log_growth[chain].reshape(-1)
    date = lambda j: None if j is None else iso(times[max(j - 1, 0)])  # noqa: E731  wealth index -> row date
    out = {}
    for name, s in result.strategies.items():
        lg = s.log_growth[chain].reshape(-1)
        figures = tearsheet_metrics(lg, bench, s.cost[chain].reshape(-1), result.periods_per_year)
        dd = longest_drawdown(lg)
        out[name] = {**_numbers(figures), "longest_drawdown": {
            "bars": dd.bars, "start": date(dd.start), "trough": date(dd.trough), "end": date(dd.recovery),
            "recovered": dd.recovery is not None if dd.bars else None, "bars_to_recover": dd.bars_to_recover,
            "depth": dd.depth}}
    return out


def policy_attribution(result: BacktestResult) -> dict[str, dict[str, float | None]]:
    """Per asset (CASH included when traded), the policy's part of the log growth and of the fees on the
    non-overlapping chain of windows (see ``tearsheet.attribution``)."""
    p, chain = result.policy, result.plan.chain()
    assert p.weights is not None and p.growth is not None and p.traded is not None
    parts = attribution(p.weights[chain], p.growth[chain], p.traded[chain], p.cost[chain])
    # Windows restart from cash, so fees in units of initial wealth compound across the chain like wealth does.
    start = np.exp(np.concatenate([[0.0], np.cumsum(p.log_growth[chain].sum(axis=-1))[:-1]]))
    parts["fees_paid"] = parts["fees_paid"] * start[:, None]
    names = list(result.symbols) + (["CASH"] if result.effective["include_cash"] else [])
    return {n: _numbers({k: v[:, i].sum() for k, v in parts.items()}) for i, n in enumerate(names)}


def report_dict(result: BacktestResult) -> dict[str, Any]:
    """Content of report.json."""
    strategies = {}
    sheets = tearsheets(result)
    for name, s in result.strategies.items():
        agg = aggregate(s.metrics)
        strategies[name] = {"label": s.label, "kind": s.kind, "family": s.family, "mean": _numbers(agg["mean"]),
                            "median": _numbers(agg["median"]), "tearsheet": sheets[name]}
    strategies["policy"]["attribution"] = policy_attribution(result)
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "package_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "checkpoint": result.checkpoint,
        "answer": answer(result),
        "split": _split_info(result),
        "settings": {**result.effective, "window_length": result.options.window_length,
                     "stride": result.options.stride, "trades": result.options.trades,
                     "olmar_window": result.options.olmar_window, "olmar_eps": result.options.olmar_eps,
                     "vol_lookback": result.options.vol_lookback, "baselines": result.options.baselines},
        "overrides": result.overrides,
        "data": {**result.data, "symbols": list(result.symbols), "bars_per_year": result.periods_per_year},
        "metric_conventions": (
            "Per window, from wealth 1 in cash before the first trade. annualised_log_growth = mean log growth per "
            "bar * bars_per_year (the headline, shown as %/yr); total_return = final wealth - 1 (simple); "
            "annualised_return = exp(mean log growth * bars_per_year) - 1; annualised_volatility and sharpe "
            "(risk-free 0) from per-bar simple returns; sortino uses the root mean square of negative returns; "
            "calmar = annualised_return / max_drawdown; max_drawdown is a fraction of the running peak; turnover is "
            "the mean per bar of sum |traded weight| over non-cash assets (entry trade included); fees_paid is in "
            "units of initial wealth; hit_rate is the share of bars with positive net log growth. Aggregates are "
            "the mean and median over all windows (overlapping ones included when split.overlapping); null where "
            "undefined. policy_beats counts only split.non_overlapping_windows. " + TEARSHEET_CONVENTIONS),
        "strategies": strategies,
        "policy_beats": policy_beats(result),
        "notes": list(result.notes),
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
        "config": config_to_dict(result.config),
    }


def windows_dict(result: BacktestResult) -> dict[str, Any]:
    """Content of windows.json: per window, its bars, dates and every strategy's metrics."""
    ts, plan = result.timestamps, result.plan
    horizon = execution_horizon(result.effective["execution"])
    chain = set(plan.chain())
    rows = []
    for k in range(plan.n_windows):
        first, last = int(plan.decision_bars[k, 0]), int(plan.decision_bars[k, -1])
        rows.append({
            "window": k,
            "first_decision_bar": first,
            "last_decision_bar": last,
            "first_decision": iso(ts[first]),
            "last_decision": iso(ts[last]),
            "last_price_bar": iso(ts[last + horizon]),
            "counted_in_policy_beats": k in chain,
            "hindsight_best_asset": result.symbols[int(result.hindsight_assets[k])],
            "metrics": {name: _numbers({m: v[k] for m, v in s.metrics.items()})
                        for name, s in result.strategies.items()},
        })
    return {"format": REPORT_FORMAT + ".windows", "format_version": REPORT_VERSION, "windows": rows}


def trades_lines(result: BacktestResult) -> Iterator[bytes]:
    """The lines of trades.jsonl (UTF-8, newline-terminated), one policy bar at a time, in window order.

    A generator, so the file streams to disk: ``write_report`` writes each line as it is made, and the memory used is
    one row's, whatever the number of bars (the per-bar arrays it reads are the result's own).
    """
    p = result.policy
    assert p.weights is not None
    names = list(result.symbols) + (["CASH"] if result.effective["include_cash"] else [])
    mask = result.tradeable
    for k in range(result.plan.n_windows):
        wealth = np.exp(np.cumsum(p.log_growth[k]))
        for j in range(result.plan.length):
            events = None if mask is None else _universe_events(result, mask, k, j)
            row = {
                "window": k,
                "step": j,
                "timestamp": iso(result.timestamps[result.plan.decision_bars[k, j]]),
                "weights": dict(zip(names, p.weights[k, j].tolist())),
                "turnover": float(p.turnover[k, j]),
                "fee": float(p.cost[k, j]),
                "log_growth": float(p.log_growth[k, j]),
                "wealth": float(wealth[j]),
            }
            if events:
                row["events"] = events
            yield (json.dumps(row, allow_nan=False) + "\n").encode("utf-8")


def _universe_events(result: BacktestResult, mask: np.ndarray, k: int, j: int) -> dict[str, Any]:
    """Listings, delistings (or halts) and forced sales at step j of window k (see the module docstring)."""
    t = int(result.plan.decision_bars[k, j])
    now, before = mask[t], (mask[t - 1] if t > 0 else mask[t])
    symbols = result.symbols
    out: dict[str, Any] = {}
    came = [s for s, a, b in zip(symbols, now, before) if a and not b]
    gone = [s for s, a, b in zip(symbols, now, before) if b and not a]
    if came:
        out["tradeable"] = came
    if gone:
        out["untradeable"] = gone
    traded = result.policy.traded
    if traded is not None:
        sold = {s: float(traded[k, j, i]) for i, s in enumerate(symbols) if not now[i] and traded[k, j, i] > 0}
        if sold:
            out["forced_sales"] = sold
    return out


FAMILY_ORDER = ("policy", *FAMILY_TITLES)


def _shown(result: BacktestResult) -> list[str]:
    """Strategies listed in the tables, grouped by family (policy, core, olps, risk, single, hindsight)."""
    singles = [n for n, s in result.strategies.items() if s.kind == "single"]
    hide = set(singles) if len(singles) > MAX_LISTED_SINGLES else set()
    names = [n for n in result.strategies if n not in hide]
    return sorted(names, key=lambda n: FAMILY_ORDER.index(result.strategies[n].family))


def _family_row(result: BacktestResult, names: list[str], k: int, columns: int) -> str:
    """A header row naming the family when strategy k starts a new one (none before the policy)."""
    fam = result.strategies[names[k]].family
    if fam == "policy" or (k > 0 and result.strategies[names[k - 1]].family == fam):
        return ""
    return f"<tr class='family'><th colspan='{columns}'>{html.escape(FAMILY_TITLES[fam])}</th></tr>"


def _table(result: BacktestResult) -> tuple[list[str], dict[str, dict[str, float]], dict[str, set[str]]]:
    """Strategies shown, their mean metrics, and the best strategies per metric (ties all marked; the hindsight
    line never counts)."""
    names = _shown(result)
    means = {n: aggregate(result.strategies[n].metrics)["mean"] for n in names}
    best: dict[str, set[str]] = {}
    for metric, higher in METRICS.items():
        values = {n: v for n in names if result.strategies[n].kind != "hindsight"
                  and np.isfinite(v := means[n][metric])}
        if values:
            top = max(values.values()) if higher else min(values.values())
            best[metric] = {n for n, v in values.items() if abs(v - top) <= 1e-9 * max(1.0, abs(top))}
    return names, means, best


def _fmt(metric: str, v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    if metric == "annualised_log_growth":
        return f"{100 * v:+.1f}"
    return f"{100 * v:.2f}%" if metric in PERCENT else f"{v:.2f}"


def summary_table(result: BacktestResult) -> str:
    """Console table of mean metrics over windows; '*' marks the best tradeable strategy in each column."""
    names, means, best = _table(result)
    beats = policy_beats(result)
    header = ["strategy"] + [SHORT[m] for m in METRICS] + ["policy beats"]
    rows = []
    for k, n in enumerate(names):
        fam = result.strategies[n].family
        if fam != "policy" and (k == 0 or result.strategies[names[k - 1]].family != fam):
            rows.append([f"-- {FAMILY_TITLES[fam]}"] + [""] * (len(header) - 1))
        cells = [n + (" (hindsight)" if result.strategies[n].kind == "hindsight" else
                      " (untrained)" if n == "policy" and result.checkpoint.get("untrained") else "")]
        cells += [_fmt(m, means[n][m]) + ("*" if n in best.get(m, ()) else " ") for m in METRICS]
        cells.append("-" if n == "policy" else f"{beats[n]['windows']}/{beats[n]['of']}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    def fmt_row(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [fmt_row(header), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in rows]
    info = _split_info(result)
    scope = (f"The whole {info['name']} split as one path ({info['window_length']} bars" if info["n_windows"] == 1
             else f"Mean over {info['n_windows']} windows of {info['window_length']} bars ({info['name']} split")
    lines.append(f"{scope}, {info['date_range'][0]}..{info['date_range'][1]}), cost {result.effective['cost_bps']:g} "
                 f"bps one-way. log %/yr: annualised log growth; total and CAGR: simple returns. * best in column "
                 f"(hindsight excluded); {_beats_scope(result)}.")
    hidden = len(result.strategies) - len(names)
    if hidden:
        lines.append(f"{hidden} single-asset holds are not listed here; they are in report.json.")
    return "\n".join(lines)


def _chain_paths(result: BacktestResult) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Decision timestamps of the window chain, each plotted strategy's log wealth on it, and window starts."""
    chain = result.plan.chain()
    times = realised_times(result)  # wealth after a decision is known when its return is realised
    names = [n for n in PLOTTED if n in result.strategies]
    singles = [n for n, s in result.strategies.items() if s.kind == "single"]
    if len(singles) <= MAX_LISTED_SINGLES:
        names += singles
    log_w = {n: np.cumsum(result.strategies[n].log_growth[chain].reshape(-1)) for n in names}
    return times, log_w, [i * result.plan.length for i in range(len(chain))]


def returns_csv(result: BacktestResult) -> str:
    """Content of returns.csv (see the module docstring): rows are the chain's decisions, indexed by the bar at whose
    price each return is realised (``realised``), then the decision bar (``decided``) and one column per tradeable
    strategy, values exp(log_growth) - 1 written with 17 significant digits (they read back exactly)."""
    frame = returns_frame(result)
    frame.insert(0, "decided", [iso(t) for t in decision_times(result)])
    frame.index = [iso(t) for t in frame.index.to_numpy()]
    frame.index.name = "realised"
    return frame.to_csv(float_format="%.17g", lineterminator="\n")


def decision_times(result: BacktestResult) -> np.ndarray:
    """Timestamps of the decision bars of the chain of windows, in time order (datetime64 [N])."""
    chain = result.plan.chain()
    return result.timestamps[result.plan.decision_bars[chain].reshape(-1)]


def realised_times(result: BacktestResult) -> np.ndarray:
    """Timestamps of the bars at whose prices the chain's returns are realised: decision bar t earns its return by
    bar t + horizon (the open of t + 2 in "open" execution, the close of t + 1 in "close"); datetime64 [N]."""
    chain = result.plan.chain()
    horizon = execution_horizon(result.effective["execution"])
    return result.timestamps[result.plan.decision_bars[chain].reshape(-1) + horizon]


def returns_frame(result: BacktestResult) -> Any:
    """returns.csv's strategy columns as a pandas DataFrame indexed by the bars at which the returns are realised
    (a DatetimeIndex named ``realised``; ``decision_times`` gives the decision bars)."""
    import pandas as pd

    chain = result.plan.chain()
    index = pd.DatetimeIndex(realised_times(result), name="realised")
    columns = {name: np.expm1(s.log_growth[chain].reshape(-1)) for name, s in result.strategies.items()
               if s.kind != "hindsight"}
    return pd.DataFrame(columns, index=index)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def equity_png(result: BacktestResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, log_w, starts = _chain_paths(result)
    fig, (ax, ax_dd) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    singles = [n for n in log_w if result.strategies[n].kind == "single"]
    for name, lw in log_w.items():
        s = result.strategies[name]
        style = {"policy": dict(color="black", lw=2.2, zorder=5),
                 "best_single_hindsight": dict(color="grey", lw=1.2, ls="--")}.get(name, {})
        if s.kind == "single":  # each its own colour from a qualitative map, so the lines can be told apart
            style = dict(lw=0.9, ls=":", color=plt.get_cmap("tab10")(singles.index(name) % 10))
        label = s.label if s.kind != "single" else name
        ax.plot(times, np.exp(lw), label=label, **{"lw": 1.3, **style})
        if s.kind in ("policy", "baseline"):
            dd = 1 - np.exp(lw - np.maximum.accumulate(np.maximum(lw, 0.0)))
            ax_dd.plot(times, -100 * dd, **{"lw": 1.1, **style})
    for k in starts[1:]:
        ax.axvline(times[k], color="0.8", lw=0.8)
        ax_dd.axvline(times[k], color="0.8", lw=0.8)
    info = _split_info(result)
    ax.set_title(f"Wealth on the {info['name']} split ({len(starts)} non-overlapping window(s) of "
                 f"{info['window_length']} bars, each from cash), cost {result.effective['cost_bps']:g} bps")
    ax.set_ylabel("wealth (start = 1)")
    ax.axhline(1.0, color="0.6", lw=0.6)
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    ax.grid(alpha=0.3)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(alpha=0.3)
    fig.autofmt_xdate()
    data = _png(fig)
    plt.close(fig)
    return data


def _chain_weights(result: BacktestResult) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decision timestamps of the window chain, the policy's target weights on it (T, shown assets) and the assets'
    names: the largest holdings by mean weight, the rest summed as 'other' when there are many."""
    p = result.policy
    assert p.weights is not None
    chain = result.plan.chain()
    times = result.timestamps[result.plan.decision_bars[chain].reshape(-1)]
    w = p.weights[chain].reshape(len(times), -1)
    names = list(result.symbols) + (["CASH"] if result.effective["include_cash"] else [])
    if len(names) > MAX_LISTED_SINGLES:
        order = np.argsort(-w.mean(axis=0))
        top = order[: MAX_LISTED_SINGLES - 1]
        rest = w[:, order[MAX_LISTED_SINGLES - 1:]].sum(axis=1, keepdims=True)
        w, names = np.concatenate([w[:, top], rest], axis=1), [names[i] for i in top] + ["other"]
    return times, w, names


def weights_png(result: BacktestResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, w, names = _chain_weights(result)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    ax.stackplot(times, w.T, labels=names, alpha=0.9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("target weight")
    ax.set_title("Policy target weights (chain of non-overlapping windows)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.autofmt_xdate()
    data = _png(fig)
    plt.close(fig)
    return data


def interactive_charts(result: BacktestResult) -> dict[str, str]:
    """HTML fragments of report.html's interactive charts, keyed equity, weights, rolling_sharpe, period_returns,
    excess_returns (div ids ``chart-<key>``); the first embeds plotly.js. All on the path of returns.csv."""
    import pandas as pd

    from . import charts

    times, log_w, starts = _chain_paths(result)
    index = pd.DatetimeIndex(times)
    labels = {n: (result.strategies[n].label if result.strategies[n].kind != "single" else n) for n in log_w}
    drawn = {n for n in log_w if result.strategies[n].kind in ("policy", "baseline")}
    info = _split_info(result)
    title = (f"Wealth and drawdown on the {info['name']} split ({len(starts)} non-overlapping window(s) of "
             f"{info['window_length']} bars, each from cash), cost {result.effective['cost_bps']:g} bps")
    w_times, w, w_names = _chain_weights(result)
    frame = returns_frame(result)
    sharpe = {n: charts.rolling_sharpe(frame[n].to_numpy(), result.periods_per_year)
              for n in ("policy", BENCHMARK)}
    period = charts.period_of(frame.index)
    table = charts.period_returns(frame.index, frame["policy"].to_numpy(), period)
    excess = frame["policy"].to_numpy() - frame[BENCHMARK].to_numpy()
    return charts.figures_html({
        "equity": charts.equity_figure(index, log_w, labels, drawn, starts, title),
        "weights": charts.weights_figure(pd.DatetimeIndex(w_times), w, w_names),
        "rolling_sharpe": charts.rolling_sharpe_figure(frame.index, sharpe, charts.ROLLING_BARS),
        "period_returns": charts.period_heatmap_figure(table, period),
        "excess_returns": charts.excess_histogram_figure(excess),
    })


def report_html(result: BacktestResult, report: dict[str, Any], charts: dict[str, str] | None = None) -> str:
    """One self-contained page that loads nothing from the network: the interactive charts (``interactive_charts``,
    computed when not given) carry plotly.js inline; the static PNGs sit next to the page and are linked."""
    charts = interactive_charts(result) if charts is None else charts
    esc = html.escape
    names, means, best = _table(result)
    beats = report["policy_beats"]
    head = "".join(f"<th>{esc(SHORT[m])}</th>" for m in METRICS)
    body = []
    for k, n in enumerate(names):
        body.append(_family_row(result, names, k, len(METRICS) + 2))
        s = result.strategies[n]
        cls = {"policy": "policy", "hindsight": "hindsight"}.get(s.kind, "")
        cells = "".join(
            f"<td class='{'best' if n in best.get(m, ()) else ''}'>{esc(_fmt(m, means[n][m]))}"
            f"{' &#9733;' if n in best.get(m, ()) else ''}</td>" for m in METRICS)
        beat = "&ndash;" if n == "policy" else f"{beats[n]['windows']}/{beats[n]['of']}"
        body.append(f"<tr class='{cls}'><td class='name'>{esc(n)}<br><small>{esc(s.label)}</small></td>{cells}"
                    f"<td>{beat}</td></tr>")
    sheet_head = "".join(f"<th>{esc(SHORT[m])}</th>" for m in TEARSHEET_METRICS)
    sheet_rows = []
    for k, n in enumerate(names):
        sheet_rows.append(_family_row(result, names, k, len(TEARSHEET_METRICS) + 2))
        t = report["strategies"][n]["tearsheet"]
        dd = t["longest_drawdown"]
        cells = "".join(f"<td>{esc(_fmt(m, np.nan if t[m] is None else t[m]))}</td>" for m in TEARSHEET_METRICS)
        spell = (f"{dd['bars']} bars, {dd['start']} .. {dd['end'] or 'not recovered'}"
                 + (f", {dd['bars_to_recover']} to recover" if dd["bars_to_recover"] is not None else "")
                 if dd["bars"] else "none")
        cls = {"policy": "policy", "hindsight": "hindsight"}.get(result.strategies[n].kind, "")
        sheet_rows.append(f"<tr class='{cls}'><td class='name'>{esc(n)}</td>{cells}<td>{esc(spell)}</td></tr>")
    parts = report["strategies"]["policy"]["attribution"]
    part_cols = ("log_growth", "fee_log", "net_log_growth", "fees_paid")
    part_rows = "".join(
        f"<tr><td class='name'>{esc(a)}</td>"
        + "".join(f"<td>{'n/a' if v[c] is None else (f'{100 * v[c]:.3f}%' if c == 'fees_paid' else f'{v[c]:+.4f}')}"
                  f"</td>" for c in part_cols) + "</tr>"
        for a, v in parts.items())
    split, ck = report["split"], report["checkpoint"]
    facts = [
        ("Checkpoint", f"{ck['path']} (step {ck['step']})"),
        ("Checkpoint sha256", ck["sha256"]),
        ("Split", f"{split['name']}: decisions {split['first_decision']} .. {split['last_decision']}, prices to "
                  f"{split['date_range'][1]}"),
        ("Windows", f"{split['n_windows']} of {split['window_length']} bars"
                    + (f", stride {split['stride']}" if split["stride"] is not None else " (the whole split)")
                    + (f"; {_beats_scope(result)}" if split["overlapping"] else "; no two windows overlap")),
        ("Costs", f"{result.effective['cost_bps']:g} bps one-way on traded non-cash weight"),
        ("Action", _action_text(result.effective)),
        ("Execution", f"{result.effective['execution']}; "
                      + ("with a cash asset" if result.effective["include_cash"] else "no cash asset")),
        ("Data", f"{report['data']['root']} ({len(result.symbols)} assets: {', '.join(result.symbols[:20])}"
                 f"{' ...' if len(result.symbols) > 20 else ''}); "
                 + ("the data the checkpoint was trained on" if report["data"]["matches_checkpoint"]
                    else "NOT the data the checkpoint was trained on")),
        ("Data sha256 (OHLC)", str(report["data"]["fingerprint"].get("ohlc_sha256"))),
        ("Bars per year", f"{result.periods_per_year:.1f}"),
        ("Overrides", ", ".join(f"{k}={v['used']!r} (checkpoint {v['checkpoint']!r})"
                                for k, v in result.overrides.items()) or "none"),
    ]
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes) or "<li>none</li>"
    ans = report["answer"]
    banner = ""
    if ans["untrained"]:
        held = result.policy.label.removesuffix(" (untrained policy)")
        banner = (f"<div class='banner'><strong>Untrained policy.</strong> This checkpoint (step {ck['step']}) is "
                  f"{esc(held)}: no trained checkpoint of its run passed the selection gate on validation (beating "
                  "both equal weight and the untrained policy), so best.pt kept the untrained policy. The 'policy' "
                  "row below is that benchmark, not a trained model.</div>")
    elif ans["in_sample"]:
        banner = ("<div class='banner'><strong>In-sample.</strong> The scored bars overlap the bars this checkpoint "
                  "was trained or selected on (see Notes): nothing here is out of sample.</div>")
    single = split["n_windows"] == 1
    table_title = ("The whole split as one path" if single
                   else f"Mean over {split['n_windows']} windows of {split['window_length']} bars")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Backtest report</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1250px; }}
table {{ border-collapse: collapse; margin: 12px 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td.name, table.facts th, table.facts td {{ text-align: left; }}
tr.policy {{ background: #eef4ff; font-weight: bold; }}
tr.hindsight {{ color: #777; font-style: italic; }}
tr.family th {{ text-align: left; background: #f0f0f0; }}
td.best {{ background: #d9f2d9; }}
small {{ font-weight: normal; color: #555; }}
.plotly-graph-div {{ border: 1px solid #ddd; margin: 8px 0; }}
div.banner {{ background: #fff3cd; border: 2px solid #d39e00; padding: 10px 14px; margin: 12px 0; font-size: 15px; }}
p.answer {{ font-size: 1.15em; font-weight: bold; }}
</style></head><body>
<h1>Backtest: does the policy beat equal weight after costs?</h1>
{banner}
<p class="answer">{esc(ans["text"])}</p>
<p>Annualised log growth in %/yr is the headline unit (as in training and the study): mean log growth per bar times
{result.periods_per_year:.1f} bars per year. Interval: {ans["excess_log_growth_per_year"]["method"]}, expected block
{ans["excess_log_growth_per_year"]["block_length_bars"]:.1f} bars, {ans["excess_log_growth_per_year"]["reps"]} resamples,
on the path of returns.csv.</p>
<table class="facts">{fact_rows}</table>
<h2>{esc(table_title)}</h2>
<table><tr><th>strategy</th>{head}<th>policy beats (non-overlapping windows)</th></tr>
{''.join(body)}</table>
<p>&#9733; best in column among tradeable strategies (the hindsight line is excluded). log %/yr: annualised log
growth; total and CAGR are simple returns (CAGR = exp(annualised log growth) - 1); Sharpe, Sortino and volatility
are annualised from per-bar simple returns with a risk-free rate of 0. Percentages are fractions of wealth; turnover
is per bar. Per-window figures are in windows.json, medians in report.json.
{esc(_beats_scope(result)[0].upper() + _beats_scope(result)[1:])}.</p>
<h2>Tear sheet (the path of returns.csv; relative figures against equal weight)</h2>
<table><tr><th>strategy</th>{sheet_head}<th>longest drawdown</th></tr>
{''.join(sheet_rows)}</table>
<p>Annualised with {result.periods_per_year:.1f} bars per year. VaR and CVaR (95%, historical) are losses per bar;
fee share is the fees' part of the gross log growth. Exact definitions are in report.json's metric_conventions.</p>
<h2>Policy attribution by asset (same path)</h2>
<table><tr><th>asset</th><th>gross log growth</th><th>log fee</th><th>net log growth</th><th>fees paid</th></tr>
{part_rows}</table>
<p>Each bar's gross log growth is split in proportion to each asset's weighted simple return, and its fee in
proportion to traded weight; the rows add up to the path's log growth and fees.</p>
<h2>Equity and drawdown</h2>
<p>Interactive: drag to zoom, double-click to reset, hover for values, click a legend entry to hide it. Static
copies: <a href="equity.png">equity.png</a>, <a href="weights.png">weights.png</a>.</p>
{charts["equity"]}
<h2>Policy weights</h2>
{charts["weights"]}
<h2>Rolling Sharpe ratio</h2>
{charts["rolling_sharpe"]}
<p>Annualised with {result.periods_per_year:.1f} bars per year over the trailing window of bars on the path of
returns.csv; a window can span two backtest windows, each started from cash.</p>
<h2>Returns by period</h2>
{charts["period_returns"]}
<h2>Excess returns per bar</h2>
{charts["excess_returns"]}
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"""


def write_report(result: BacktestResult, report_dir: str | Path) -> Path:
    """Write every output into a new folder under ``report_dir`` and return that folder. report.json records the
    options with ``report_dir`` (``options``), so ``--config <report folder>`` replays the backtest."""
    out = new_report_dir(report_dir)
    report = report_dict(result)
    report["options"] = {**dataclasses.asdict(result.options), "out_dir": str(report_dir)}
    atomic_write_json(out / "report.json", report)
    atomic_write_json(out / "windows.json", windows_dict(result))
    if result.options.trades:
        atomic_write(out / "trades.jsonl", lambda fh: fh.writelines(trades_lines(result)))  # streamed
    atomic_write_text(out / "returns.csv", returns_csv(result))
    equity, weights = equity_png(result), weights_png(result)
    atomic_write_bytes(out / "equity.png", equity)
    atomic_write_bytes(out / "weights.png", weights)
    atomic_write_text(out / "report.html", report_html(result, report))
    return out


def _action_text(effective: dict) -> str:
    """How the policy's targets became trades, for the settings table."""
    action, s = effective.get("action", "target"), effective.get("action_strength")
    text = {"target": "full target every decision",
            "partial": f"partial rebalancing, learned rate {s:.3f} per decision" if s is not None else "partial",
            "band": f"no-trade band, learned half-width {s:.3f} x equal weight" if s is not None else "band",
            }[action]
    every = effective.get("rebalance_every", 1)
    if every > 1:
        text += f"; decisions every {every} bars"
    train_bps = effective.get("train_cost_bps")
    if train_bps is not None:
        text += f"; trained with a {train_bps:g} bps fee"
    return text
