import math

import numpy as np
import pytest

from differentiable_market.metrics import METRICS, aggregate, bars_per_year, json_number, path_metrics


def test_bars_per_year_daily_business_days_is_about_252():
    days = np.arange(np.datetime64("2010-01-01"), np.datetime64("2014-01-01"), np.timedelta64(1, "D"))
    business = days[np.is_busday(days.astype("datetime64[D]"))].astype("datetime64[ns]")
    assert bars_per_year(business) == pytest.approx(261, abs=1.0)  # weekdays; holidays would bring it to ~252
    calendar = days.astype("datetime64[ns]")
    assert bars_per_year(calendar) == pytest.approx(365.25, rel=1e-3)
    with pytest.raises(ValueError):
        bars_per_year(calendar[:1])


def test_constant_growth_path_closed_forms():
    per_bar = 0.001
    lg = np.full((2, 100), per_bar)
    zeros = np.zeros_like(lg)
    m = path_metrics(lg, zeros, zeros, periods_per_year=252)
    assert set(m) == set(METRICS)
    assert m["total_return"] == pytest.approx(math.expm1(0.1))
    assert m["annualised_return"] == pytest.approx(math.expm1(0.252))
    assert m["annualised_volatility"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(m["sharpe"]).all() and np.isnan(m["sortino"]).all() and np.isnan(m["calmar"]).all()
    assert m["max_drawdown"] == pytest.approx(0.0)
    assert m["hit_rate"] == pytest.approx(1.0)
    assert json_number(m["sharpe"][0]) is None and json_number(1.5) == 1.5


def test_metrics_match_direct_computation():
    rng = np.random.default_rng(0)
    lg = rng.normal(0.0005, 0.01, size=(3, 250))
    turnover = rng.uniform(0, 0.5, size=lg.shape)
    cost = 1e-3 * turnover
    m = path_metrics(lg, turnover, cost, periods_per_year=252)
    for k in range(3):
        wealth = np.exp(np.concatenate([[0.0], np.cumsum(lg[k])]))
        r = wealth[1:] / wealth[:-1] - 1
        peak = np.maximum.accumulate(wealth)
        mdd = np.max(1 - wealth / peak)
        ann = wealth[-1] ** (252 / 250) - 1
        assert m["total_return"][k] == pytest.approx(wealth[-1] - 1)
        assert m["annualised_return"][k] == pytest.approx(ann)
        assert m["annualised_volatility"][k] == pytest.approx(np.std(r, ddof=1) * np.sqrt(252))
        assert m["sharpe"][k] == pytest.approx(np.mean(r) / np.std(r, ddof=1) * np.sqrt(252))
        assert m["sortino"][k] == pytest.approx(np.mean(r) / np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(252))
        assert m["max_drawdown"][k] == pytest.approx(mdd)
        assert m["calmar"][k] == pytest.approx(ann / mdd)
        assert m["turnover"][k] == pytest.approx(turnover[k].mean())
        assert m["fees_paid"][k] == pytest.approx(np.sum(cost[k] * wealth[:-1]))
        assert m["hit_rate"][k] == pytest.approx(np.mean(lg[k] > 0))


def test_drawdown_counts_initial_wealth_as_peak():
    lg = np.log(np.array([[0.5, 1.2, 1.0]]))
    m = path_metrics(lg, np.zeros_like(lg), np.zeros_like(lg), 252)
    assert m["max_drawdown"][0] == pytest.approx(0.5)


def test_aggregate_ignores_nan_windows():
    agg = aggregate({"sharpe": np.array([1.0, np.nan, 3.0]), "hit_rate": np.array([np.nan, np.nan])})
    assert agg["mean"]["sharpe"] == 2.0 and agg["median"]["sharpe"] == 2.0
    assert math.isnan(agg["mean"]["hit_rate"])
