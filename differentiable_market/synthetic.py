"""Synthetic OHLC markets for tests, benchmarks and pretraining: pure random walks, a market with a planted,
learnable edge, many-asset markets with a cross-sectional reversal or momentum edge, a market whose regime switches
between them, and a universe whose members list, delist and halt (written as a folder, for the union calendar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import MarketData
from .datasets import trading_days


def _calendar_days(start: str, n_bars: int) -> np.ndarray:
    return np.datetime64(start, "D") + np.arange(n_bars).astype("timedelta64[D]")


def _ohlc_from_log_returns(log_ret: np.ndarray, rng: np.random.Generator, timestamps: np.ndarray) -> MarketData:
    """Daily bars whose open equals the previous close, so the open-to-open return of bar t+1 is bar t+1's return."""
    n_bars, n_assets = log_ret.shape
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    open_ = np.vstack([np.full((1, n_assets), 100.0), close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.004, size=(n_bars, n_assets)))
    high = np.maximum(open_, close) * (1.0 + spread)
    low = np.minimum(open_, close) * (1.0 - spread)
    volume = rng.uniform(1e5, 2e5, size=(n_bars, n_assets))
    symbols = tuple(f"S{i:03d}" for i in range(n_assets))
    return MarketData.from_arrays(symbols, timestamps.astype("datetime64[ns]"), open_, high, low, close, volume)


def random_walk_market(n_bars: int, n_assets: int, seed: int, vol: float = 0.01) -> MarketData:
    """Independent driftless log-normal random walks: no strategy has an edge beyond luck."""
    rng = np.random.default_rng(seed)
    return _ohlc_from_log_returns(rng.normal(0.0, vol, size=(n_bars, n_assets)), rng,
                                  _calendar_days("2000-01-01", n_bars))


def planted_signal_market(
    n_bars: int, n_assets: int, seed: int, vol: float = 0.01, autocorrelation: float = 0.5, signal_assets: int = 1
) -> MarketData:
    """Random walks except the first ``signal_assets`` assets, whose log returns are AR(1): r_t = phi * r_{t-1} +
    noise (stationary variance vol^2, like the others).

    Their next-bar return is predictable from their last bar, so a causal policy can earn about
    phi * E|r| per bar on each by holding it after its up bars and the others after its down bars, while equal weight
    earns nothing on average. ``signal_assets`` of 8 in 64 with phi 0.15 is a weak signal carried by a minority.
    """
    if not 1 <= signal_assets <= n_assets:
        raise ValueError(f"signal_assets must lie in [1, {n_assets}], got {signal_assets}")
    rng = np.random.default_rng(seed)
    log_ret = rng.normal(0.0, vol, size=(n_bars, n_assets))
    noise = log_ret[:, :signal_assets].copy() * np.sqrt(1.0 - autocorrelation**2)
    ar = np.empty((n_bars, signal_assets))
    ar[0] = noise[0]
    for t in range(1, n_bars):  # a recurrence over bars, vectorised over the signal assets
        ar[t] = autocorrelation * ar[t - 1] + noise[t]
    log_ret[:, :signal_assets] = ar
    return _ohlc_from_log_returns(log_ret, rng, _calendar_days("2000-01-01", n_bars))


def reversal_market(
    n_bars: int = 2520,
    n_assets: int = 32,
    seed: int = 0,
    *,
    market_vol: float = 0.01,
    market_drift: float = 2e-4,
    loading_range: tuple[float, float] = (0.5, 1.5),
    idio_vol: float = 0.01,
    rho: float = 0.8,
    walk_vol: float = 0.005,
) -> MarketData:
    """Many assets on one market factor whose idiosyncratic prices revert: a cross-sectional reversal edge.

    Log close of asset i at bar t (all parameters per bar, in log units):

        log C[t, i] = log 100 + beta_i * M_t + W_t,i + x_t,i,
        M_t   = market random walk, steps N(market_drift, market_vol^2), beta_i ~ U(loading_range);
        W_t,i = idiosyncratic random walk, steps N(0, walk_vol^2), so the assets drift apart over the years;
        x_t,i = rho * x_{t-1},i + N(0, idio_vol^2), a stationary AR(1) deviation (x_0 from its stationary law).

    The deviation's increments have lag-1 autocorrelation -(1 - rho) / 2 (-0.1 at rho 0.8; the deviation halves in
    log(0.5) / log(rho) = 3.1 bars), so an asset that fell relative to the others tends to give part of it back over
    the next bars. Anything that buys the recent losers and sells the winners, such as OLMAR's moving-average
    reversion, earns that; equal weight and every single asset do not. Timestamps are NYSE-like trading days from
    2000-01-03 (``datasets.trading_days``, about 252 bars a year), so annualised figures mean daily bars. Open =
    previous close, as in the other synthetic markets.

    The defaults give a per-bar volatility of about 1.5% per asset (market 1% times beta, deviation increments
    1.05%, walk 0.5%; 1.58% measured at seed 0). Measured by the calibration of issue 18, item 5, with these defaults
    and seed 0 (2,520 bars, 32 assets, 10 years), over the whole series as one path from cash, every strategy accounted
    by ``env.account`` with exact costs, "open" execution, annualised at 252 bars a year:

        equal weight (rebalanced every bar)   -1.4%/yr log growth at 10 bps one way   (-1.1%/yr at 0 bps)
        OLMAR (window 5, eps 10)             +38.5%/yr at 10 bps                     (+76.7%/yr at 0 bps)

    OLMAR over equal weight at 10 bps: +39.9%/yr at seed 0 (seeds 1, 2, 3: +43.3, +27.0, +51.3%/yr). OLMAR trades
    1.5 of its wealth per bar, so half of its gross edge goes to fees: a moderate edge that a 10-line rule finds, and
    a learner should too.
    """
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"rho must lie in [0, 1) for a stationary deviation, got {rho}")
    if min(market_vol, idio_vol, walk_vol) < 0.0:
        raise ValueError(f"volatilities must be >= 0, got market {market_vol}, idio {idio_vol}, walk {walk_vol}")
    rng = np.random.default_rng(seed)
    beta = rng.uniform(*loading_range, size=n_assets)
    market = rng.normal(market_drift, market_vol, size=(n_bars, 1))
    walk = rng.normal(0.0, walk_vol, size=(n_bars, n_assets))
    noise = rng.normal(0.0, idio_vol, size=(n_bars, n_assets))
    x = np.empty((n_bars, n_assets))
    x[0] = noise[0] / np.sqrt(1.0 - rho**2)
    for t in range(1, n_bars):  # a recurrence over bars, vectorised over the assets
        x[t] = rho * x[t - 1] + noise[t]
    log_ret = beta * market + walk + np.diff(x, axis=0, prepend=0.0)  # bar 0's "return" sets its level
    return _ohlc_from_log_returns(log_ret, rng, trading_days("2000-01-03", n_bars))


def momentum_market(
    n_bars: int = 2520,
    n_assets: int = 32,
    seed: int = 0,
    *,
    market_vol: float = 0.01,
    market_drift: float = 2e-4,
    loading_range: tuple[float, float] = (0.5, 1.5),
    idio_vol: float = 0.012,
    trend_std: float = 1e-3,
    trend_rho: float = 0.98,
) -> MarketData:
    """Many assets on one market factor whose idiosyncratic drifts persist: a cross-sectional momentum edge.

    Log return of asset i at bar t (per bar, log units):

        r[t, i] = beta_i * m_t + mu[t, i] + e[t, i],   m_t ~ N(market_drift, market_vol^2), beta_i ~ U(loading_range),
        mu[t, i] = trend_rho * mu[t-1, i] + sqrt(1 - trend_rho^2) * trend_std * z,   e ~ N(0, idio_vol^2).

    The drift mu is a stationary AR(1) with standard deviation ``trend_std`` (10 bps a bar by default, about 25%/yr)
    and half-life log(0.5) / log(trend_rho) bars (34 at 0.98): an asset that has risen relative to the others tends
    to keep rising for weeks, so buying the recent winners earns the drift spread, while equal weight and every
    single asset do not. A trailing mean of n returns estimates mu with noise idio_vol / sqrt(n), so the edge is weak
    bar by bar and shows over many assets. NYSE-like trading days from 2000-01-03; open = previous close.
    """
    if not 0.0 <= trend_rho < 1.0:
        raise ValueError(f"trend_rho must lie in [0, 1), got {trend_rho}")
    rng = np.random.default_rng(seed)
    beta = rng.uniform(*loading_range, size=n_assets)
    market = rng.normal(market_drift, market_vol, size=(n_bars, 1))
    shocks = rng.normal(0.0, trend_std * np.sqrt(1.0 - trend_rho**2), size=(n_bars, n_assets))
    mu = np.empty((n_bars, n_assets))
    mu[0] = rng.normal(0.0, trend_std, size=n_assets)
    for t in range(1, n_bars):  # a recurrence over bars, vectorised over the assets
        mu[t] = trend_rho * mu[t - 1] + shocks[t]
    log_ret = beta * market + mu + rng.normal(0.0, idio_vol, size=(n_bars, n_assets))
    return _ohlc_from_log_returns(log_ret, rng, trading_days("2000-01-03", n_bars))


def regime_market(
    n_bars: int = 2520,
    n_assets: int = 24,
    seed: int = 0,
    *,
    regime_bars: tuple[int, int] = (250, 750),
    rho: float = 0.8,
    idio_vol: float = 0.01,
    trend_std: float = 1e-3,
    trend_rho: float = 0.98,
    vol_range: tuple[float, float] = (0.6, 1.6),
) -> MarketData:
    """A market whose idiosyncratic dynamics switch between regimes: reversal, momentum and none.

    The bars are cut into consecutive regimes of ``regime_bars`` (uniform) bars; each regime is, with equal chance,
    "reversal" (the AR(1) price deviation of ``reversal_market`` with ``rho``), "momentum" (the persistent drift of
    ``momentum_market``) or "none" (a pure idiosyncratic walk), and scales the idiosyncratic returns by a volatility
    multiple drawn from ``vol_range``. On top, one market factor (beta ~ U(0.5, 1.5), steps N(2e-4, 0.01^2)). What
    pays in one regime costs in the next, so a policy must read the regime from recent bars (autocorrelation,
    trailing returns) rather than assume one. NYSE-like trading days from 2000-01-03; open = previous close. The
    regimes are not returned: they are what a learner has to infer.
    """
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.5, 1.5, size=n_assets)
    market = rng.normal(2e-4, 0.01, size=(n_bars, 1))
    kind = np.empty(n_bars, dtype=np.int64)
    scale = np.empty(n_bars)
    t = 0
    while t < n_bars:
        length = int(rng.integers(regime_bars[0], regime_bars[1] + 1))
        kind[t : t + length] = rng.integers(0, 3)
        scale[t : t + length] = rng.uniform(*vol_range)
        t += length
    # each component over the whole span, then kept where its regime holds
    noise = rng.normal(0.0, idio_vol, size=(n_bars, n_assets))
    x = np.empty((n_bars, n_assets))
    x[0] = noise[0] / np.sqrt(1.0 - rho**2)
    for i in range(1, n_bars):
        x[i] = rho * x[i - 1] + noise[i]
    reversal = np.diff(x, axis=0, prepend=x[:1])
    shocks = rng.normal(0.0, trend_std * np.sqrt(1.0 - trend_rho**2), size=(n_bars, n_assets))
    mu = np.empty((n_bars, n_assets))
    mu[0] = rng.normal(0.0, trend_std, size=n_assets)
    for i in range(1, n_bars):
        mu[i] = trend_rho * mu[i - 1] + shocks[i]
    momentum = mu + rng.normal(0.0, idio_vol, size=(n_bars, n_assets))
    walk = rng.normal(0.0, idio_vol, size=(n_bars, n_assets))
    idio = np.where(kind[:, None] == 0, reversal, np.where(kind[:, None] == 1, momentum, walk))
    log_ret = beta * market + scale[:, None] * idio
    return _ohlc_from_log_returns(log_ret, rng, trading_days("2000-01-03", n_bars))


def churn_universe(folder: str | Path, n_assets: int = 200, years: int = 15, seed: int = 0, *,
                   listing_share: float = 0.4, bankrupt_share: float = 0.2, acquired_share: float = 0.1,
                   halt_share: float = 0.05, premium: float = 0.3) -> list[dict]:
    """A universe whose members list, delist and halt, written as one ``SYMBOL.csv`` per asset (timestamp, OHLC,
    volume) into ``folder`` (created; it must be new or empty). Returns each asset's plan: symbol, first and last bar
    on the full calendar, fate ("survives", "bankrupt", "acquired") and halt (first bar, bars) or None.

    Generator, all per bar in log units, on NYSE-like trading days from 2005-01-03 (``years`` x 252 bars):

    - prices: log C[t, i] = log 100 + beta_i * M_t + W_t,i, a market random walk M (steps N(2e-4, 0.01^2)),
      beta ~ U(0.5, 1.5), and an idiosyncratic walk W (steps N(1e-4, 0.012^2)); open = previous close;
    - listings: a share ``listing_share`` of the assets list at a bar drawn uniformly in the first 80% of the
      calendar (the others trade from bar 0);
    - delistings, at a bar drawn uniformly between listing + 252 and the end: a share ``bankrupt_share`` go bankrupt,
      their log price falling linearly by log(0.03) (-97%) over the last 126 bars before their last print, on top
      of the walk; a share ``acquired_share`` are acquired, their last print ``premium`` (+30%) above the previous
      close; the rest survive to the last bar;
    - halts: a share ``halt_share`` of the assets have one run of 20-60 bars without prints inside their life.

    Whether an asset survives is decided by the generator alone, so a universe picked from the survivors at the
    end is picked with hindsight: the survivorship bias a union calendar avoids (see the tests of this function).
    """
    import pandas as pd

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty; write the churn universe into a new or empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_bars = years * 252
    days = trading_days("2005-01-03", n_bars)
    market = np.cumsum(rng.normal(2e-4, 0.01, n_bars))
    fates = rng.permutation(n_assets)
    n_bankrupt, n_acquired = round(bankrupt_share * n_assets), round(acquired_share * n_assets)
    plan = []
    for i in range(n_assets):
        first = int(rng.integers(1, int(0.8 * n_bars))) if rng.random() < listing_share else 0
        fate = ("bankrupt" if fates[i] < n_bankrupt else "acquired" if fates[i] < n_bankrupt + n_acquired
                else "survives")
        last = n_bars - 1 if fate == "survives" else int(rng.integers(min(first + 252, n_bars - 2), n_bars - 1))
        log_c = (np.log(100.0) + rng.uniform(0.5, 1.5) * (market[first : last + 1] - market[first])
                 + np.cumsum(rng.normal(1e-4, 0.012, last + 1 - first)))
        if fate == "bankrupt":
            fall = min(126, last - first)
            log_c[-fall:] += np.linspace(0.0, np.log(0.03), fall)
        elif fate == "acquired":
            log_c[-1] = log_c[-2] + np.log1p(premium)
        close = np.exp(log_c)
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0.0, 0.004, close.shape))
        keep = np.ones(close.shape, dtype=bool)
        halt = None
        if rng.random() < halt_share and last - first > 200:
            start, length = int(rng.integers(first + 50, last - 100)), int(rng.integers(20, 61))
            keep[start - first : start - first + length] = False
            halt = (start, length)
        pd.DataFrame({"timestamp": np.datetime_as_string(days[first : last + 1], unit="D"), "open": open_,
                      "high": np.maximum(open_, close) * (1 + spread), "low": np.minimum(open_, close) * (1 - spread),
                      "close": close, "volume": rng.uniform(1e5, 2e5, close.shape)})[keep].to_csv(
            folder / f"C{i:03d}.csv", index=False, float_format="%.17g")
        plan.append({"symbol": f"C{i:03d}", "first": first, "last": last, "fate": fate, "halt": halt})
    return plan
