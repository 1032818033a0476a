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


def _churn(tmp_path, **kw):
    from differentiable_market.config import DataConfig
    from differentiable_market.data import load_market
    from differentiable_market.synthetic import churn_universe

    plan = churn_universe(tmp_path / "churn", **kw)
    return plan, load_market(DataConfig(root=str(tmp_path / "churn"), calendar="union", max_fill_bars=5), min_bars=1)


def _equal_weight_growth_per_year(market, universe: np.ndarray) -> float:
    """Log growth per year (252 bars) of equal weight over the tradeable assets of ``universe`` (bool [A]), close
    fills, 10 bps, accounted by ``env.account``: a position whose asset stops being tradeable is sold at its last
    close (its price is held flat after its last print), with the fee."""
    import torch

    from differentiable_market.env import account

    close = torch.tensor(market.close)
    mask = torch.tensor(market.tradeable[:-1] & universe[None, :], dtype=torch.float64)
    w = mask / mask.sum(-1, keepdim=True)
    return float(account(w, close[1:] / close[:-1], w[0], 1e-3, False).log_growth.sum()) / (market.n_bars / 252)


def test_the_churn_universe_keeps_every_asset_over_its_own_life_on_a_union_calendar(tmp_path):
    plan, m = _churn(tmp_path, n_assets=40, years=6, seed=0)
    assert m.n_assets == 40 and m.n_bars == 6 * 252 and not m.dropped
    fates = [p["fate"] for p in plan]
    assert (fates.count("bankrupt"), fates.count("acquired")) == (8, 4)
    assert sum(p["first"] > 0 for p in plan) > 5 and any(p["halt"] for p in plan)
    bars = np.arange(m.n_bars)
    for i, p in enumerate(plan):
        assert m.listed[:, i].tolist() == ((bars >= p["first"]) & (bars <= p["last"])).tolist()
        known_gone = bars > p["last"] + 5  # max_fill_bars 5
        assert not m.tradeable[known_gone, i].any() and m.tradeable[p["first"], i]
        if p["halt"]:
            start, length = p["halt"]
            assert not m.tradeable[start + 5 : start + length, i].any() and m.tradeable[start + length, i]
        if p["fate"] == "bankrupt":
            assert m.close[p["last"], i] < 0.1 * m.close[p["last"] - 126, i]
    # The common calendar cannot hold them: no day on which all 40 trade.
    from differentiable_market.config import DataConfig
    from differentiable_market.data import load_market
    from differentiable_market.errors import DataError

    with pytest.raises(DataError, match="share no common dates"):
        load_market(DataConfig(root=str(tmp_path / "churn"), max_fill_bars=5), min_bars=1)


def test_excluding_the_delisted_assets_flatters_equal_weight(tmp_path):
    plan, m = _churn(tmp_path, n_assets=40, years=6, seed=0)
    survivors = np.array([p["fate"] == "survives" for p in plan])
    every = _equal_weight_growth_per_year(m, np.ones(m.n_assets, dtype=bool))
    chosen_knowing_the_future = _equal_weight_growth_per_year(m, survivors)
    assert chosen_knowing_the_future > every + 0.05  # more than 5%/yr of survivorship bias
    assert np.isfinite(every)


@pytest.mark.slow
def test_the_200_asset_15_year_churn_universe(tmp_path):
    """The issue's universe (issue 20): every asset kept; equal weight over the survivors flatters by several %/yr
    (seed 0: -2.8%/yr over every asset against +3.1%/yr over the survivors)."""
    plan, m = _churn(tmp_path)
    assert m.n_assets == 200 and m.n_bars == 15 * 252
    survivors = np.array([p["fate"] == "survives" for p in plan])
    every = _equal_weight_growth_per_year(m, np.ones(200, dtype=bool))
    assert _equal_weight_growth_per_year(m, survivors) > every + 0.03
