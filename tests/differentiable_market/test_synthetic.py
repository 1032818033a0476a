import numpy as np
import pytest
import torch

from differentiable_market import baselines
from differentiable_market.env import account, decision_growth, initial_holdings
from differentiable_market.metrics import bars_per_year
from differentiable_market.synthetic import planted_signal_market, reversal_market


def _lag1(r: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(r[1:, j], r[:-1, j])[0, 1] for j in range(r.shape[1])])


def test_the_signal_assets_are_ar1_with_the_planted_coefficient_and_the_rest_are_not():
    m = planted_signal_market(20_000, 6, seed=3, autocorrelation=0.3, signal_assets=2)
    rho = _lag1(np.diff(np.log(m.close), axis=0))
    np.testing.assert_allclose(rho[:2], 0.3, atol=0.03)  # standard error ~ 1/sqrt(20000) = 0.007
    np.testing.assert_allclose(rho[2:], 0.0, atol=0.03)


def test_one_signal_asset_is_the_default_and_bad_counts_are_refused():
    a, b = planted_signal_market(200, 3, seed=0), planted_signal_market(200, 3, seed=0, signal_assets=1)
    np.testing.assert_array_equal(a.close, b.close)
    with pytest.raises(ValueError, match="signal_assets"):
        planted_signal_market(200, 3, seed=0, signal_assets=4)


def _lag(r: np.ndarray, k: int) -> np.ndarray:
    return np.array([np.corrcoef(r[k:, j], r[:-k, j])[0, 1] for j in range(r.shape[1])])


@pytest.mark.parametrize("rho", [0.8, 0.5])
def test_reversal_deviation_increments_have_the_ar1_autocorrelations(rho):
    # Without the market and the walk, log returns are the AR(1) deviation's increments, whose lag-k autocorrelation
    # is -(1 - rho) rho^(k - 1) / 2: negative over several bars.
    m = reversal_market(20_000, 4, seed=5, market_vol=0.0, walk_vol=0.0, rho=rho)
    r = np.diff(np.log(m.close), axis=0)
    for k in (1, 2, 3):  # standard error of the mean over 4 assets ~ 1 / sqrt(80000) = 0.0035
        np.testing.assert_allclose(_lag(r, k).mean(), -(1 - rho) * rho ** (k - 1) / 2, atol=0.015)
    np.testing.assert_allclose(r.std(axis=0), 0.01 * np.sqrt(2 / (1 + rho)), rtol=0.03)  # var = 2 s^2 / (1 + rho)


def test_reversal_market_is_deterministic_by_seed_on_daily_trading_bars():
    a, b, c = reversal_market(300, 5, seed=7), reversal_market(300, 5, seed=7), reversal_market(300, 5, seed=8)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert not np.allclose(a.close, c.close)
    np.testing.assert_array_equal(a.open[1:], a.close[:-1])
    assert 250 <= bars_per_year(a.timestamps) <= 256
    with pytest.raises(ValueError, match="rho"):
        reversal_market(10, 2, seed=0, rho=1.0)


def test_olmar_beats_equal_weight_at_10_bps_on_the_default_reversal_market():
    m = reversal_market()  # 2,520 bars (10 years), 32 assets, seed 0
    r = np.diff(np.log(m.close), axis=0)
    assert 0.01 < r.std(axis=0).mean() < 0.02  # a realistic daily volatility
    close = torch.tensor(m.close)
    growth = decision_growth(torch.tensor(m.open), close, "open", include_cash=False)
    bars = torch.arange(growth.shape[0])[None, :]
    start = initial_holdings(m.n_assets, False, dtype=torch.float64)
    per_year = {}
    for name, w in (("equal", baselines.equal_weight((1, bars.shape[1]), m.n_assets, False)),
                    ("olmar", baselines.olmar(close, bars, False))):
        acc = account(w, growth[bars], start, 10e-4, False, smooth_eps=None)
        per_year[name] = acc.log_growth.mean().item() * 252
    # Calibrated at +39.9%/yr (see reversal_market's docstring); the issue asks for at least +30%/yr.
    assert per_year["olmar"] - per_year["equal"] > 0.30
