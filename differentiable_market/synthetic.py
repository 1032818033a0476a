"""Synthetic OHLC markets for tests and benchmarks: pure random walks and a market with a planted, learnable edge."""

from __future__ import annotations

import numpy as np

from .data import MarketData


def _ohlc_from_log_returns(log_ret: np.ndarray, rng: np.random.Generator, start: str) -> MarketData:
    """Daily bars whose open equals the previous close, so the open-to-open return of bar t+1 is bar t+1's return."""
    n_bars, n_assets = log_ret.shape
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    open_ = np.vstack([np.full((1, n_assets), 100.0), close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.004, size=(n_bars, n_assets)))
    high = np.maximum(open_, close) * (1.0 + spread)
    low = np.minimum(open_, close) * (1.0 - spread)
    volume = rng.uniform(1e5, 2e5, size=(n_bars, n_assets))
    timestamps = np.datetime64(start, "D") + np.arange(n_bars).astype("timedelta64[D]")
    symbols = tuple(f"S{i:03d}" for i in range(n_assets))
    return MarketData.from_arrays(symbols, timestamps.astype("datetime64[ns]"), open_, high, low, close, volume)


def random_walk_market(n_bars: int, n_assets: int, seed: int, vol: float = 0.01) -> MarketData:
    """Independent driftless log-normal random walks: no strategy has an edge beyond luck."""
    rng = np.random.default_rng(seed)
    return _ohlc_from_log_returns(rng.normal(0.0, vol, size=(n_bars, n_assets)), rng, "2000-01-01")


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
    return _ohlc_from_log_returns(log_ret, rng, "2000-01-01")
