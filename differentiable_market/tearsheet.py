"""Tear-sheet metrics of one accounted path against a benchmark path: relative, distribution, tail, drawdown-length
and fee-share figures, as pyfolio and quantstats show them.

Inputs are per-bar net log growth [..., T] (as in ``metrics``); per-bar simple returns are r_t = exp(g_t) - 1, net
of fees. ``tearsheet_metrics`` is vectorised over leading dims ([..., T] -> [...]); ``longest_drawdown`` takes one
path [T] (its answer is a set of bar indices). A figure whose denominator is zero is NaN (null in JSON).

Definitions (``CONVENTIONS`` says the same in the report):

- excess e_t = r_t - b_t against the benchmark's simple return b_t. tracking_error = std(e, ddof=1) *
  sqrt(bars_per_year); information_ratio = mean(e) * bars_per_year / tracking_error (= mean/std * sqrt(bars/yr)).
- beta = cov(r, b) / var(b); alpha = (mean(r) - beta * mean(b)) * bars_per_year: the intercept of the OLS fit of r
  on b, annualised arithmetically.
- skew = m3 / m2^1.5 and kurtosis = m4 / m2^2 - 3 (excess), with m_k the central moments (population, biased
  estimators; scipy.stats' defaults).
- var_95 = -q05 and cvar_95 = -mean(r_t | r_t <= q05), q05 the 5th percentile of r with linear interpolation:
  positive loss fractions per bar (historical, no distribution assumed).
- tail_ratio = q95 / |q05|.
- attribution (per asset i, summed over bars): log_growth_i = sum_t k_t * w_t,i * (g_t,i - 1), with
  k_t = log(w_t . g_t) / (w_t . g_t - 1) (1 when the bar's gross return is 0), so the assets' parts of a bar add up to
  its gross log growth log(w_t . g_t); fee_log_i = sum_t log(1 - cost_t) * |traded_t,i| / turnover_t (<= 0), the
  bar's log fee split by traded weight; net_log_growth_i = log_growth_i + fee_log_i, which adds up over assets to the
  path's net log growth; fees_paid_i = sum_t cost_t * W_{t-1} * |traded_t,i| / turnover_t (units of initial wealth,
  adding up to ``metrics``' fees_paid).
- fee_share = F / (N + F): F = sum_t -log(1 - cost_t) is the log growth the fees took, N = sum_t g_t the net log
  growth, so N + F is the gross (fee-free) log growth. NaN when N + F <= 0 (no gross growth to share).

Why numpy and no library: empyrical and quantstats are not dependencies (nor in the lock file), pull in pandas-era
APIs and plotting stacks, and each figure here is a few lines of array code that is easier to vectorise over
windows and to check against a hand computation than a wrapper over pandas Series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import _safe_div

TAIL = 0.05  # VaR / CVaR level (95%) and the tails of the tail ratio
RECOVERY_TOL = 1e-12  # log wealth within this of its peak counts as back at the peak (cumsum rounding)

# name -> True when larger is better; the column order of tables. alpha/beta/IR/TE are against equal weight.
TEARSHEET_METRICS: dict[str, bool] = {
    "information_ratio": True,
    "tracking_error": False,
    "alpha": True,
    "beta": False,
    "skew": True,
    "kurtosis": False,
    "var_95": False,
    "cvar_95": False,
    "tail_ratio": True,
    "fee_share": False,
}

CONVENTIONS = (
    "Tear sheet ('tearsheet' per strategy): on the non-overlapping chain of windows (the path of returns.csv, "
    "wealth compounded across windows), from per-bar net simple returns r = exp(log growth) - 1, against "
    "equal_weight's b on the same bars. tracking_error = std(r - b, ddof=1) * sqrt(bars_per_year); "
    "information_ratio = mean(r - b) * bars_per_year / tracking_error; beta = cov(r, b) / var(b) and alpha = "
    "(mean(r) - beta * mean(b)) * bars_per_year (OLS of r on b, intercept annualised arithmetically); skew and "
    "kurtosis (excess, minus 3) are population moment ratios of r; var_95 = -q05 and cvar_95 = -mean(r | r <= q05) "
    "are positive loss fractions per bar, q05 the 5th percentile (linear interpolation); tail_ratio = q95 / |q05|; "
    "fee_share = F / (N + F), F = sum -log(1 - fee) the log growth taken by fees, N the net log growth (null when "
    "N + F <= 0). longest_drawdown: the longest spell below a running peak of wealth (the initial wealth 1 counts "
    "as a peak): bars from the peak to the recovery (first bar back at the peak) or to the last bar if not "
    "recovered; start is the bar that set the peak (the first bar's date when the peak is the initial wealth), "
    "trough the lowest bar, end the recovery bar (null if not recovered); bars_to_recover = recovery - trough, "
    "null if not recovered. Dates are returns.csv timestamps. Null where undefined. The policy's attribution, on the "
    "same path, per asset: log_growth = sum over bars of k * w_i * (g_i - 1), k = log(w . g) / (w . g - 1), so the "
    "assets' parts add up to each bar's gross log growth; fee_log = the bar's log(1 - fee) split by |traded weight|; "
    "net_log_growth = log_growth + fee_log (adds up to the path's net log growth); fees_paid = the fee in units of "
    "initial wealth split the same way (adds up to fees_paid)."
)


def _percentile(r: np.ndarray, q: float) -> np.ndarray:
    return np.percentile(r, 100.0 * q, axis=-1)


def tearsheet_metrics(log_growth: np.ndarray, bench_log_growth: np.ndarray, cost: np.ndarray,
                      periods_per_year: float) -> dict[str, np.ndarray]:
    """Figures of ``TEARSHEET_METRICS`` (see the module docstring), each [..., T] -> [...].

    log_growth, bench_log_growth: net log growth per bar of the path and of the benchmark on the same bars;
    cost: the fee per bar as a fraction of the wealth at the trade.
    """
    lg = np.asarray(log_growth, dtype=np.float64)
    r = np.expm1(lg)
    b = np.expm1(np.asarray(bench_log_growth, dtype=np.float64))
    cost = np.asarray(cost, dtype=np.float64)
    if r.shape[-1] < 2:
        raise ValueError("tearsheet_metrics needs at least two bars.")
    e = r - b
    tracking = e.std(axis=-1, ddof=1) * np.sqrt(periods_per_year)

    rc = r - r.mean(axis=-1, keepdims=True)
    bc = b - b.mean(axis=-1, keepdims=True)
    beta = _safe_div((rc * bc).mean(axis=-1), (bc * bc).mean(axis=-1))
    alpha = (r.mean(axis=-1) - beta * b.mean(axis=-1)) * periods_per_year

    m2 = (rc**2).mean(axis=-1)
    skew = _safe_div((rc**3).mean(axis=-1), m2**1.5)
    kurtosis = _safe_div((rc**4).mean(axis=-1), m2**2) - 3.0

    q05, q95 = _percentile(r, TAIL), _percentile(r, 1.0 - TAIL)
    # r <= q05 always holds for the smallest return, so the tail is never empty.
    cvar = -np.where(r <= q05[..., None], r, 0.0).sum(axis=-1) / (r <= q05[..., None]).sum(axis=-1)

    fee_log = -np.log1p(-cost).sum(axis=-1)
    gross_log = lg.sum(axis=-1) + fee_log
    return {
        "information_ratio": _safe_div(e.mean(axis=-1) * periods_per_year, tracking),
        "tracking_error": tracking,
        "alpha": alpha,
        "beta": beta,
        "skew": skew,
        "kurtosis": kurtosis,
        "var_95": -q05,
        "cvar_95": cvar,
        "tail_ratio": _safe_div(q95, np.abs(q05)),
        "fee_share": _safe_div(fee_log, gross_log),
    }


@dataclass(frozen=True)
class Drawdown:
    """The longest spell below a running peak, as indices into the wealth path W_0..W_T (W_0 = 1 before the first
    bar, W_t the wealth after bar t - 1's return, so W_t is row t - 1 of returns.csv).

    ``bars`` = end - start, with end the recovery index or T when not recovered; ``recovery`` and
    ``bars_to_recover`` (= recovery - trough) are None when the path ends below the peak. All zero / None when the
    path never falls below its peak."""

    bars: int
    start: int | None
    trough: int | None
    recovery: int | None
    bars_to_recover: int | None
    depth: float  # the spell's deepest drawdown, a fraction of the peak


NO_DRAWDOWN = Drawdown(0, None, None, None, None, 0.0)


def longest_drawdown(log_growth: np.ndarray) -> Drawdown:
    """Longest drawdown of one path of net log growth [T] (the first of equal length when tied)."""
    lg = np.asarray(log_growth, dtype=np.float64)
    if lg.ndim != 1:
        raise ValueError(f"longest_drawdown takes one path [T]; got shape {lg.shape}.")
    path = np.concatenate([[0.0], np.cumsum(lg)])
    peak = np.maximum.accumulate(path)
    under = path < peak - RECOVERY_TOL
    if not under.any():
        return NO_DRAWDOWN
    edges = np.diff(under.astype(np.int8), prepend=0, append=0)
    firsts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # spell = path[first:stop]
    n = path.size - 1
    ends = np.minimum(stops, n)  # stop == n + 1: still under at the last bar
    lengths = ends - (firsts - 1)
    k = int(np.argmax(lengths))
    first, stop = int(firsts[k]), int(stops[k])
    start = first - 1
    trough = first + int(np.argmin(path[first:stop]))
    recovered = stop <= n
    return Drawdown(
        bars=int(lengths[k]),
        start=start,
        trough=trough,
        recovery=stop if recovered else None,
        bars_to_recover=stop - trough if recovered else None,
        depth=float(-np.expm1(path[trough] - peak[trough])),
    )


def attribution(w: np.ndarray, g: np.ndarray, traded: np.ndarray, cost: np.ndarray) -> dict[str, np.ndarray]:
    """Per-asset parts of a path's log growth and fees (see the module docstring), [..., T, A] -> [..., A].

    w: target weights; g: gross growth of each asset over the decision's period; traded: |w - pre-trade holdings|
    with 0 in a cash column; cost [..., T]: the fee per bar as a fraction of the wealth at the trade.
    """
    w, g, traded, cost = (np.asarray(x, dtype=np.float64) for x in (w, g, traded, cost))
    part = w * (g - 1.0)
    excess = part.sum(axis=-1)  # w . g - 1, as sum w = 1; summed this way it stays exact near 0
    safe = np.where(excess == 0.0, 1.0, excess)
    k = np.where(excess == 0.0, 1.0, np.log1p(safe) / safe)
    gross_i = (k[..., None] * part).sum(axis=-2)
    turnover = traded.sum(axis=-1, keepdims=True)
    share = np.divide(traded, turnover, out=np.zeros_like(traded), where=turnover > 0)
    fee_log_i = (np.log1p(-cost)[..., None] * share).sum(axis=-2)
    net = np.log1p(excess) + np.log1p(-cost)
    wealth_before = np.exp(np.cumsum(net, axis=-1) - net)
    return {
        "log_growth": gross_i,
        "fee_log": fee_log_i,
        "net_log_growth": gross_i + fee_log_i,
        "fees_paid": ((cost * wealth_before)[..., None] * share).sum(axis=-2),
    }
