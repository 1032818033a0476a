"""Statistics of a walk-forward study: is an out-of-sample edge skill or luck?

Pure functions over numpy arrays of one stitched out-of-sample path per strategy, bars along the first axis. Units
and conventions, stated once:

- ``lg`` is net log growth per bar, lg_t = log(W_t / W_{t-1}); "excess" log growth is a strategy's minus a
  benchmark's on the same bar. The per-bar simple return is r_t = exp(lg_t) - 1.
- Sharpe ratios are those of ``metrics``: mean(r) / std(r, ddof=1), risk-free rate 0, annualised by
  sqrt(periods_per_year) where a name says so; ``periods_per_year`` is bars per year (``metrics.bars_per_year``).
  NaN when the standard deviation is zero.
- The probabilistic and deflated Sharpe ratios take per-bar (not annualised) Sharpe ratios, and the non-excess
  kurtosis (3 for a normal law).

Assumptions, by method:

- Bootstrap intervals (``bootstrap_ci``): the series is stationary and weakly dependent. The stationary bootstrap
  (Politis & Romano 1994) resamples blocks of random, geometrically distributed length, so serial dependence
  shorter than the blocks survives resampling; intervals are percentile intervals (first-order accurate). BCa is
  not offered: its jackknife acceleration assumes independent bars.
- PSR and DSR: the Sharpe estimator is asymptotically normal with the variance of Mertens (2002) for i.i.d.
  returns. Serial correlation makes them overconfident; the bootstrap intervals are the autocorrelation-robust
  view of the same question.
- SPA (``spa_test``): Hansen (2005), stationary loss differentials, stationary bootstrap.

``arch`` (Kevin Sheppard's) and scipy are imported inside the functions that use them: arch pulls in pandas, scipy
and statsmodels, seconds of import time that ``import differentiable_market`` should not pay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EULER_GAMMA = 0.5772156649015329
# optimal_block_length looks at ceil(sqrt(T)) + 5 autocorrelation lags and fails when that exceeds T (T < 8).
_MIN_BARS_FOR_BLOCK_LENGTH = 8

# A statistic of a resampled path: [T] or [T, k] array -> scalar.
Statistic = Callable[[np.ndarray], float]


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _as_path(x: np.ndarray, name: str, min_bars: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must be a [T] or [T, k] array, got shape {a.shape}.")
    if a.shape[0] < min_bars:
        raise ValueError(f"{name} needs at least {min_bars} bars, got {a.shape[0]}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values.")
    return a


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


# --- block length and bootstrap intervals ----------------------------------------------------------------------


def block_length(x: np.ndarray) -> float:
    """Expected block length (bars) for a stationary bootstrap of ``x`` ([T], or [T, k] resampled jointly).

    The automatic choice of Politis & White (2004) with the correction of Patton, Politis & White (2009), via
    ``arch.bootstrap.optimal_block_length`` (its "stationary" column): it estimates the autocorrelation up to a
    data-chosen lag with a flat-top kernel and returns the block length that minimises the bootstrap variance
    estimator's mean squared error. For [T, k] it takes the longest of the columns' lengths, which keeps the
    strongest dependence of any column. Floored at 1 (a constant column, whose length is undefined, counts as 1)
    and capped at T / 4, so that a path holds several blocks; fewer than 8 bars give 1, too few to estimate any
    dependence. Returns a float: the stationary bootstrap's block length is the mean of a geometric law and need
    not be an integer.
    """
    from arch.bootstrap import optimal_block_length

    a = _as_path(x, "x")
    if a.shape[0] < _MIN_BARS_FOR_BLOCK_LENGTH:
        return 1.0
    cap = a.shape[0] / 4.0
    with np.errstate(all="ignore"):  # a constant column divides zero by zero; it comes back as NaN
        b = optimal_block_length(a)["stationary"].to_numpy(dtype=np.float64)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return 1.0
    return float(min(max(float(b.max()), 1.0), cap))


@dataclass(frozen=True)
class Interval:
    """A bootstrap confidence interval: the statistic on the data, and the [low, high] interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float  # two-sided coverage, e.g. 0.9
    method: str
    block_length: float  # expected block length of the stationary bootstrap, in bars
    reps: int


def bootstrap_ci(
    excess: np.ndarray,
    stat: Statistic,
    level: float = 0.9,
    reps: int = 2000,
    seed: int | np.random.Generator = 0,
    block: float | None = None,
) -> Interval:
    """Stationary-bootstrap percentile interval of ``stat`` over a per-bar path.

    ``excess`` is [T] or [T, k] (per-bar excess log growth, or aligned columns such as two strategies' log
    growth); rows are resampled jointly, so the pairing of columns on a bar is kept. ``stat`` maps such an array
    to a scalar (see ``annualised_mean`` and ``sharpe_difference``). ``block`` is the expected block length in
    bars; ``None`` picks it with ``block_length``; 1 is the i.i.d. bootstrap. The same ``seed`` gives the same
    interval. A resample on which ``stat`` is NaN makes the bounds NaN.
    """
    from arch.bootstrap import StationaryBootstrap

    x = _as_path(excess, "excess")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if reps < 1:
        raise ValueError(f"reps must be positive, got {reps}.")
    b = block_length(x) if block is None else float(block)
    if not b >= 1.0:
        raise ValueError(f"block must be at least 1 bar, got {block}.")
    bs = StationaryBootstrap(b, x, seed=_rng(seed))
    ci = bs.conf_int(lambda a: np.atleast_1d(stat(a)), reps=reps, method="percentile", size=level)
    return Interval(
        estimate=float(stat(x)),
        low=float(ci[0, 0]),
        high=float(ci[1, 0]),
        level=level,
        method="stationary bootstrap, percentile",
        block_length=b,
        reps=reps,
    )


def annualised_mean(lg: np.ndarray, periods_per_year: float) -> float:
    """Annualised mean log growth of a [T] path: mean(lg) * periods_per_year (log growth per year)."""
    return float(np.mean(lg) * periods_per_year)


def sharpe_per_bar(returns: np.ndarray) -> float | np.ndarray:
    """Per-bar Sharpe ratio mean(r) / std(r, ddof=1) of simple returns: [T] -> scalar, [T, k] -> [k]; NaN if flat."""
    r = np.asarray(returns, dtype=np.float64)
    std = r.std(axis=0, ddof=1)
    with np.errstate(all="ignore"):
        return _out(np.where(std > 1e-15, r.mean(axis=0) / std, np.nan))


def sharpe_difference(lg_ab: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe of column 0 minus that of column 1 of a [T, 2] array of per-bar log growth.

    Each Sharpe is that of the simple returns exp(lg) - 1, as ``metrics.path_metrics`` computes it.
    """
    sr_a, sr_b = sharpe_per_bar(np.expm1(lg_ab[:, 0])), sharpe_per_bar(np.expm1(lg_ab[:, 1]))
    return float((sr_a - sr_b) * math.sqrt(periods_per_year))


def mean_growth_ci(
    excess: np.ndarray,
    periods_per_year: float,
    level: float = 0.9,
    reps: int = 2000,
    seed: int | np.random.Generator = 0,
    block: float | None = None,
) -> Interval:
    """Interval of the annualised mean excess log growth (per year) of a [T] path of per-bar excess log growth."""
    x = _as_path(excess, "excess")
    if x.ndim != 1:
        raise ValueError(f"excess must be a [T] array, got shape {x.shape}.")
    return bootstrap_ci(x, lambda a: annualised_mean(a, periods_per_year), level, reps, seed, block)


def sharpe_difference_ci(
    lg_a: np.ndarray,
    lg_b: np.ndarray,
    periods_per_year: float,
    level: float = 0.9,
    reps: int = 2000,
    seed: int | np.random.Generator = 0,
    block: float | None = None,
) -> Interval:
    """Interval of annualised Sharpe(A) - Sharpe(B) for two aligned [T] paths of per-bar log growth.

    Bars are resampled jointly, so each bootstrap path keeps A and B on the same bars: their correlation, which
    narrows the interval when both hold similar assets, is kept.
    """
    a, b = np.asarray(lg_a, dtype=np.float64), np.asarray(lg_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"lg_a and lg_b must be aligned [T] arrays, got shapes {a.shape} and {b.shape}.")
    return bootstrap_ci(np.stack([a, b], axis=1), lambda ab: sharpe_difference(ab, periods_per_year), level, reps,
                        seed, block)


# --- probabilistic and deflated Sharpe ratios ------------------------------------------------------------------


def probabilistic_sharpe_ratio(
    sr: float | np.ndarray,
    sr_benchmark: float | np.ndarray,
    n: int | np.ndarray,
    skew: float | np.ndarray,
    kurtosis: float | np.ndarray,
) -> float | np.ndarray:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (Bailey & López de Prado 2012).

    PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2)), from "The Sharpe Ratio
    Efficient Frontier", Journal of Risk 15(2). ``sr`` and ``sr_benchmark`` are per-bar (not annualised) Sharpe
    ratios, ``n`` the number of bars, ``skew`` and ``kurtosis`` (non-excess: 3 for a normal law) the returns'
    moments. Assumes i.i.d. returns. Broadcasts over arrays; NaN where n < 2 or the variance term is not positive.
    """
    from scipy.special import ndtr

    sr, srb, n, skew, kurt = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                   for v in (sr, sr_benchmark, n, skew, kurtosis)))
    var_term = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2
    ok = (n >= 2) & (var_term > 0)
    with np.errstate(all="ignore"):
        z = (sr - srb) * np.sqrt(n - 1.0) / np.sqrt(var_term)
    return _out(np.where(ok, ndtr(z), np.nan))


def sample_moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    """(per-bar Sharpe, skewness, non-excess kurtosis, n) of a [T] series of per-bar simple returns.

    The Sharpe ratio uses std with ddof=1 (as ``metrics``); skewness and kurtosis are the plain sample moments
    m3 / m2^1.5 and m4 / m2^2 (scipy's default, biased estimators). A flat series gives NaN throughout.
    """
    r = _as_path(returns, "returns")
    if r.ndim != 1:
        raise ValueError(f"returns must be a [T] array, got shape {r.shape}.")
    d = r - r.mean()
    m2 = float(np.mean(d**2))
    if m2 <= 1e-30:
        return float("nan"), float("nan"), float("nan"), r.size
    skew = float(np.mean(d**3) / m2**1.5)
    kurt = float(np.mean(d**4) / m2**2)
    return float(sharpe_per_bar(r)), skew, kurt, r.size


def psr_of(returns: np.ndarray, sr_benchmark: float = 0.0) -> float:
    """PSR of a [T] series of per-bar simple returns (exp(lg) - 1) against a per-bar benchmark Sharpe ratio."""
    sr, skew, kurt, n = sample_moments(returns)
    return float(probabilistic_sharpe_ratio(sr, sr_benchmark, n, skew, kurt))


def expected_max_sharpe(n_trials: float, var_trials: float) -> float:
    """SR0, the expected largest per-bar Sharpe ratio of ``n_trials`` skill-less trials (Bailey & López de Prado 2014).

    SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))), gamma the Euler-Mascheroni constant,
    V the variance of the trials' per-bar Sharpe ratios and N the number of independent trials; an extreme-value
    approximation for large N. One trial involves no selection: SR0 = 0.
    """
    from scipy.special import ndtri

    if not n_trials >= 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}.")
    if not var_trials >= 0:
        raise ValueError(f"var_trials must be non-negative, got {var_trials}.")
    if n_trials == 1:
        return 0.0
    z_n = ndtri(1.0 - 1.0 / n_trials)
    z_ne = ndtri(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(var_trials) * ((1.0 - EULER_GAMMA) * z_n + EULER_GAMMA * z_ne))


def deflated_sharpe_ratio(
    sr: float,
    n: int,
    skew: float,
    kurtosis: float,
    *,
    trial_sharpes: np.ndarray | None = None,
    n_trials: float | None = None,
    var_trials: float | None = None,
) -> float:
    """Probability that the selected strategy's true Sharpe ratio is positive, given the search that chose it.

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting
    and Non-Normality", Journal of Portfolio Management 40(5): DSR = PSR(SR0) with SR0 = ``expected_max_sharpe``.
    ``sr``, ``n``, ``skew``, ``kurtosis`` are those of the selected strategy, as in ``probabilistic_sharpe_ratio``
    (per bar, non-excess kurtosis). Give either ``trial_sharpes`` (the per-bar Sharpe ratios of every trial run,
    the selected one included: N is their count, V their variance with ddof=1) or both ``n_trials`` and
    ``var_trials``. The paper's N counts independent trials; seeds and folds of one method are correlated, so
    passing the raw count overstates N and makes the DSR conservative.
    """
    if trial_sharpes is not None:
        if n_trials is not None or var_trials is not None:
            raise ValueError("give either trial_sharpes or (n_trials, var_trials), not both.")
        t = np.asarray(trial_sharpes, dtype=np.float64).ravel()
        t = t[np.isfinite(t)]
        if t.size == 0:
            raise ValueError("trial_sharpes has no finite value.")
        n_trials, var_trials = t.size, float(t.var(ddof=1)) if t.size > 1 else 0.0
    elif n_trials is None or var_trials is None:
        raise ValueError("give trial_sharpes, or both n_trials and var_trials.")
    sr0 = expected_max_sharpe(n_trials, var_trials)
    return float(probabilistic_sharpe_ratio(sr, sr0, n, skew, kurtosis))


def dsr_of(returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: int | None = None) -> float:
    """DSR of a [T] series of per-bar simple returns selected among trials with the given per-bar Sharpe ratios.

    N is ``n_trials`` when given (trials whose Sharpe ratio on these bars is unknown count too: a search's trials,
    scored on validation only), else the number of Sharpe ratios; never fewer than the Sharpe ratios given. V is
    the variance of the given Sharpe ratios, floored at 1 / T: the sampling variance of a per-bar Sharpe estimate of
    a skill-less strategy over T i.i.d. bars (Lo 2002). Seeds of one method are so alike that their variance can
    be near 0, which would make the DSR almost the PSR however many trials were made; the floor is what
    independent skill-less trials of this length would spread by, so with N counted as independent the DSR stays
    conservative."""
    sr, skew, kurt, n = sample_moments(returns)
    t = np.asarray(trial_sharpes, dtype=np.float64).ravel()
    t = t[np.isfinite(t)]
    if t.size == 0:
        raise ValueError("trial_sharpes has no finite value.")
    var = max(float(t.var(ddof=1)) if t.size > 1 else 0.0, 1.0 / n)
    n_trials = t.size if n_trials is None else max(n_trials, t.size)
    return deflated_sharpe_ratio(sr, n, skew, kurt, n_trials=n_trials, var_trials=var)


# --- data snooping: Hansen's test of superior predictive ability -----------------------------------------------


@dataclass(frozen=True)
class SPAResult:
    """p-values of Hansen's SPA test; ``pvalue`` is the consistent one, bracketed by ``pvalue_lower/upper``."""

    pvalue: float
    pvalue_lower: float
    pvalue_upper: float  # White's Reality Check: every model recentred at the null's boundary
    block_size: int  # expected block length of the stationary bootstrap, in bars
    reps: int
    n_models: int
    n_bars: int
    statistic: float = math.nan  # T_SPA, the studentised statistic


def spa_test(
    benchmark_losses: np.ndarray,
    model_losses: np.ndarray,
    block_size: int | None = None,
    reps: int = 1000,
    seed: int | np.random.Generator = 0,
) -> SPAResult:
    """Hansen's (2005) test of superior predictive ability, studentised as in the paper.

    Losses are per bar: loss = -(per-bar log growth). ``benchmark_losses`` is [T] (equal weight, or the best
    causal baseline); ``model_losses`` is [T] or [T, k], one column per trial (every seed, every configuration,
    not only the best). Null hypothesis: no model has a lower expected loss than the benchmark,
    max_k E[L_bench - L_k] <= 0. A small p-value says that at least one model beats the benchmark, accounting for
    having searched over all k.

    With d_tk = L_bench,t - L_k,t, d̄_k their means and ω_k^2 = T Var*(d̄*_k) (the bootstrap variance of the mean,
    the estimator Hansen recommends), the statistic is T_SPA = max(0, max_k sqrt(T) d̄_k / ω_k) and its null
    distribution is that of max(0, max_k sqrt(T) (d̄*_k - g(d̄_k)) / ω_k) over stationary-bootstrap resamples
    (expected block ``block_size`` bars; ``None``: ``block_length`` of the differentials, rounded). The consistent
    p-value recentres with g(x) = x 1{x >= -sqrt(ω^2 / T * 2 log log T)} (models clearly worse than the benchmark
    are not recentred), the lower one with g(x) = max(x, 0) (liberal), the upper one with g(x) = x (White's Reality
    Check, conservative). Models identical to the benchmark (ω = 0) carry no evidence and are left out of the max.

    Written here rather than taken from ``arch.bootstrap.SPA``: arch 8's SPA computes its p-values from the raw
    mean differentials whatever ``studentize`` says (it uses the variances only to pick the recentred models), so a
    model with large but noisy differentials dominates the maximum. The resampling itself is arch's
    ``StationaryBootstrap``.
    """
    from arch.bootstrap import StationaryBootstrap

    bench = _as_path(benchmark_losses, "benchmark_losses")
    models = _as_path(model_losses, "model_losses")
    if bench.ndim != 1:
        raise ValueError(f"benchmark_losses must be a [T] array, got shape {bench.shape}.")
    if models.ndim == 1:
        models = models[:, None]
    if models.shape[0] != bench.shape[0]:
        raise ValueError(f"model_losses has {models.shape[0]} bars, benchmark_losses {bench.shape[0]}.")
    d = bench[:, None] - models  # [T, k], positive where the model did better
    if block_size is None:
        block_size = max(1, round(block_length(-d)))
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1 bar, got {block_size}.")
    t = d.shape[0]
    d_bar = d.mean(0)
    bs = StationaryBootstrap(block_size, d, seed=_rng(seed))
    means = np.stack([data[0][0].mean(0) for data in bs.bootstrap(reps)])  # [reps, k]
    omega = np.sqrt(t * means.var(axis=0))
    live = omega > 1e-12 * max(1.0, float(np.abs(d).max()))
    stat = spa_statistic(d_bar, omega, t, live)
    threshold = -np.sqrt(omega**2 / t * 2.0 * np.log(np.log(max(t, 3))))
    centres = {"lower": np.maximum(d_bar, 0.0), "consistent": np.where(d_bar >= threshold, d_bar, 0.0),
               "upper": d_bar}
    p = {}
    for name, g in centres.items():
        z = np.sqrt(t) * (means - g) / np.where(live, omega, 1.0)
        simulated = np.maximum(np.where(live, z, -np.inf).max(1), 0.0)
        p[name] = float((simulated > stat).mean()) if live.any() else 1.0
    return SPAResult(
        pvalue=p["consistent"],
        pvalue_lower=p["lower"],
        pvalue_upper=p["upper"],
        block_size=int(block_size),
        reps=reps,
        n_models=models.shape[1],
        n_bars=t,
        statistic=stat,
    )


def spa_statistic(d_bar: np.ndarray, omega: np.ndarray, n_bars: int, live: np.ndarray | None = None) -> float:
    """Hansen's T_SPA = max(0, max_k sqrt(T) d̄_k / ω_k) over the models with ω_k > 0 (``live``)."""
    live = omega > 0 if live is None else live
    if not live.any():
        return 0.0
    return float(max(0.0, (np.sqrt(n_bars) * d_bar[live] / omega[live]).max()))
