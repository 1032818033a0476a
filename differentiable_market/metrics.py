"""Performance metrics of accounted paths: from per-bar net log growth, turnover and fees to per-window figures.

Everything is vectorised over leading dims: inputs are [..., T] arrays (one path of T decision bars per leading
index), outputs are [...] arrays, one value per path. Conventions, stated once:

- Wealth starts at 1 before the first decision; W_t = exp(sum_{s<=t} log_growth_s).
- Per-bar simple return r_t = exp(log_growth_t) - 1, net of fees.
- ``annualised_log_growth`` = mean log growth per bar * bars per year (the headline unit of every command, printed
  as %/yr); ``total_return`` and ``annualised_return`` (CAGR, exp of it minus 1) are simple returns.
- Annualisation uses ``bars_per_year`` (see ``bars_per_year``): the risk-free rate is 0.
- ``turnover`` is the mean over bars of sum_i |w_t,i - w~_t,i| over non-cash assets, including the entry trade from
  cash at the first bar (so a strategy that only buys and holds shows 1 / T).
- ``fees_paid`` is the total fee in units of initial wealth: sum_t cost_t * W_{t-1}, with cost_t the fee as a
  fraction of the wealth at the trade.
- A ratio whose denominator is zero (Sharpe of a flat path, Sortino with no losing bar, Calmar with no drawdown) is
  NaN, written as null in JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SECONDS_PER_YEAR = 365.25 * 24 * 3600.0

# name -> True when larger is better; the order is the column order of tables.
METRICS: dict[str, bool] = {
    "annualised_log_growth": True,
    "total_return": True,
    "annualised_return": True,
    "annualised_volatility": False,
    "sharpe": True,
    "sortino": True,
    "calmar": True,
    "max_drawdown": False,
    "turnover": False,
    "fees_paid": False,
    "hit_rate": True,
}


def bars_per_year(timestamps: np.ndarray) -> float:
    """Bars per calendar year of a dataset: (n_bars - 1) intervals over the years its timestamps span.

    Takes the whole dataset's calendar (datetime64 [T]), so it reflects the market's real bar density: US daily stocks
    give about 252, a 24/7 daily market 365, hourly stock bars about 252 * 7. Raises ValueError for fewer than two
    bars or a zero time span.
    """
    ts = np.asarray(timestamps).astype("datetime64[ns]")
    if ts.size < 2:
        raise ValueError("bars_per_year needs at least two timestamps.")
    span_s = (ts[-1] - ts[0]) / np.timedelta64(1, "s")
    if not span_s > 0:
        raise ValueError("bars_per_year needs increasing timestamps.")
    return float((ts.size - 1) / (span_s / SECONDS_PER_YEAR))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.full(num.shape, np.nan)
    ok = den > 1e-15
    np.divide(num, den, out=out, where=ok)
    return out


def path_metrics(
    log_growth: np.ndarray, turnover: np.ndarray, cost: np.ndarray, periods_per_year: float
) -> dict[str, np.ndarray]:
    """Metrics of ``METRICS`` for paths of per-bar log growth, turnover and cost, each [..., T] -> [...].

    See the module docstring for units and conventions.
    """
    lg = np.asarray(log_growth, dtype=np.float64)
    turnover = np.asarray(turnover, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if lg.shape[-1] < 1:
        raise ValueError("path_metrics needs at least one bar.")
    n = lg.shape[-1]
    log_w = np.cumsum(lg, axis=-1)
    total_log = log_w[..., -1]
    r = np.expm1(lg)
    mean_r = r.mean(axis=-1)
    std_r = r.std(axis=-1, ddof=1) if n > 1 else np.zeros(lg.shape[:-1])
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=-1))
    root = np.sqrt(periods_per_year)

    # Drawdown over the wealth path including the initial wealth 1, which counts as a peak.
    log_path = np.concatenate([np.zeros(lg.shape[:-1] + (1,)), log_w], axis=-1)
    drawdown_log = (np.maximum.accumulate(log_path, axis=-1) - log_path).max(axis=-1)
    max_dd = -np.expm1(-drawdown_log)

    ann_return = np.expm1(total_log / n * periods_per_year)
    wealth_before = np.exp(log_path[..., :-1])
    return {
        "annualised_log_growth": total_log / n * periods_per_year,
        "total_return": np.expm1(total_log),
        "annualised_return": ann_return,
        "annualised_volatility": std_r * root,
        "sharpe": _safe_div(mean_r * root, std_r),
        "sortino": _safe_div(mean_r * root, downside),
        "calmar": _safe_div(ann_return, max_dd),
        "max_drawdown": max_dd,
        "turnover": turnover.mean(axis=-1),
        "fees_paid": (cost * wealth_before).sum(axis=-1),
        "hit_rate": (lg > 0).mean(axis=-1),
    }


def aggregate(per_window: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and median across windows of each metric ([W] arrays), ignoring NaN windows; NaN if all are NaN."""
    out: dict[str, dict[str, float]] = {"mean": {}, "median": {}}
    for name, values in per_window.items():
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        out["mean"][name] = float(finite.mean()) if finite.size else float("nan")
        out["median"][name] = float(np.median(finite)) if finite.size else float("nan")
    return out


def json_number(x: Any) -> float | None:
    """A float for JSON: NaN and infinities become None (null), since JSON has no such numbers."""
    x = float(x)
    return x if np.isfinite(x) else None
