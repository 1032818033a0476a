import math

import numpy as np
import pytest

from differentiable_market.tearsheet import (
    NO_DRAWDOWN,
    TEARSHEET_METRICS,
    attribution,
    longest_drawdown,
    tearsheet_metrics,
)


def _lg(r):
    return np.log1p(np.asarray(r, dtype=np.float64))


def test_returns_a_multiple_of_the_benchmark_have_that_beta_and_no_alpha():
    b = np.array([0.01, -0.02, 0.03, 0.005, -0.01])
    m = tearsheet_metrics(_lg(2.0 * b), _lg(b), np.zeros(5), periods_per_year=252)
    assert set(m) == set(TEARSHEET_METRICS)
    assert m["beta"] == pytest.approx(2.0, rel=1e-12)
    assert m["alpha"] == pytest.approx(0.0, abs=1e-14)
    # A constant shift c per bar: beta 1, alpha c * bars per year, tracking error 0 (IR undefined).
    m = tearsheet_metrics(_lg(b + 0.001), _lg(b), np.zeros(5), periods_per_year=252)
    assert m["beta"] == pytest.approx(1.0, rel=1e-12)
    assert m["alpha"] == pytest.approx(0.252, rel=1e-9)
    assert m["tracking_error"] == pytest.approx(0.0, abs=1e-12)


def test_tracking_error_and_information_ratio_by_hand():
    b = np.array([0.01, 0.0, -0.01, 0.02])
    r = b + np.array([0.01, -0.01, 0.01, 0.03])  # excess: mean 0.01, sample std sqrt(0.0008 / 3)
    m = tearsheet_metrics(_lg(r), _lg(b), np.zeros(4), periods_per_year=100)
    te = math.sqrt(0.0008 / 3) * 10
    assert m["tracking_error"] == pytest.approx(te, rel=1e-9)
    assert m["information_ratio"] == pytest.approx(0.01 * 100 / te, rel=1e-9)
    same = tearsheet_metrics(_lg(b), _lg(b), np.zeros(4), 100)
    assert same["tracking_error"] == 0.0 and np.isnan(same["information_ratio"])
    assert same["beta"] == pytest.approx(1.0) and same["alpha"] == pytest.approx(0.0, abs=1e-15)


def test_skew_and_excess_kurtosis_by_hand():
    # Deviations -1, -1, -1, 3 (times 0.01) around the mean: m2 = 3, m3 = 6, m4 = 21 (units of 0.01^k).
    r = 0.02 + 0.01 * np.array([-1.0, -1.0, -1.0, 3.0])
    m = tearsheet_metrics(_lg(r), np.zeros(4), np.zeros(4), 252)
    assert m["skew"] == pytest.approx(6 / 3**1.5, rel=1e-9)
    assert m["kurtosis"] == pytest.approx(21 / 9 - 3, rel=1e-9)
    # A symmetric two-point distribution: skew 0, kurtosis 1 - 3.
    m = tearsheet_metrics(_lg([0.01, -0.01] * 3), np.zeros(6), np.zeros(6), 252)
    assert m["skew"] == pytest.approx(0.0, abs=1e-9) and m["kurtosis"] == pytest.approx(-2.0, rel=1e-9)


def test_var_cvar_and_tail_ratio_of_a_known_set():
    # 21 returns -0.10, -0.09, ..., 0.10: the 5th percentile is the 2nd smallest (index 20 * 0.05 = 1) exactly.
    r = np.round(np.arange(-10, 11) / 100, 10)
    m = tearsheet_metrics(_lg(r), np.zeros(21), np.zeros(21), 252)
    assert m["var_95"] == pytest.approx(0.09, rel=1e-9)
    assert m["cvar_95"] == pytest.approx(0.095, rel=1e-9)  # mean of -0.10 and -0.09
    assert m["tail_ratio"] == pytest.approx(1.0, rel=1e-9)
    m = tearsheet_metrics(_lg(2 * r.clip(0) + r.clip(None, 0)), np.zeros(21), np.zeros(21), 252)
    assert m["tail_ratio"] == pytest.approx(2.0, rel=1e-9)


def test_fee_share_is_the_fees_part_of_gross_log_growth():
    cost = np.array([0.01, 0.0, 0.02])
    gross = np.log(np.array([1.05, 1.02, 1.03]))
    net = gross + np.log1p(-cost)
    m = tearsheet_metrics(net, np.zeros(3), cost, 252)
    fees = -np.log(0.99) - np.log(0.98)
    assert m["fee_share"] == pytest.approx(fees / gross.sum(), rel=1e-12)
    losing = tearsheet_metrics(np.log([0.9, 0.95, 1.0]) + np.log1p(-cost), np.zeros(3), cost, 252)
    assert np.isnan(losing["fee_share"])  # no gross growth to share


def test_metrics_are_vectorised_over_leading_dims():
    rng = np.random.default_rng(0)
    lg, bench = rng.normal(0, 0.01, (3, 2, 50)), rng.normal(0, 0.01, (3, 2, 50))
    cost = rng.uniform(0, 1e-3, (3, 2, 50))
    m = tearsheet_metrics(lg, bench, cost, 252)
    for name, v in m.items():
        assert v.shape == (3, 2)
        assert v[1, 0] == pytest.approx(tearsheet_metrics(lg[1, 0], bench[1, 0], cost[1, 0], 252)[name], rel=1e-12)


def test_longest_drawdown_of_a_constructed_path():
    # Wealth 1 | 1.1 0.99 1.1 1.2 | 1.08 1.14 1.14 (ends below the peak 1.2)
    wealth = np.array([1.0, 1.1, 0.99, 1.1, 1.2, 1.08, 1.14, 1.14])
    lg = np.diff(np.log(wealth))
    dd = longest_drawdown(lg)
    # Spells: peak at index 1, trough 2, back at index 3 (2 bars); peak at 4, under through 7, not recovered (3 bars).
    assert (dd.bars, dd.start, dd.trough, dd.recovery, dd.bars_to_recover) == (3, 4, 5, None, None)
    assert dd.depth == pytest.approx(0.1)
    recovered = longest_drawdown(np.diff(np.log([1.0, 0.9, 0.8, 0.95, 1.0, 1.01, 0.99, 1.02])))
    # From the initial wealth (index 0): trough at 2, back at 1.0 at index 4; the later dip lasts 2 bars.
    assert (recovered.bars, recovered.start, recovered.trough, recovered.recovery) == (4, 0, 2, 4)
    assert recovered.bars_to_recover == 2 and recovered.depth == pytest.approx(0.2)
    assert longest_drawdown(np.full(5, 0.01)) == NO_DRAWDOWN


def test_attribution_of_one_bar_by_hand_and_parts_add_up():
    # Two assets and cash: weights 0.5, 0.3, 0.2; growth 1.1, 0.95, 1; the bar's gross return 0.05 - 0.015 = 0.035.
    w = np.array([[0.5, 0.3, 0.2]])
    g = np.array([[1.1, 0.95, 1.0]])
    traded = np.array([[0.5, 0.3, 0.0]])  # from cash
    cost = np.array([0.0008])
    a = attribution(w, g, traded, cost)
    k = math.log(1.035) / 0.035
    np.testing.assert_allclose(a["log_growth"], [0.05 * k, -0.015 * k, 0.0], rtol=1e-12)
    np.testing.assert_allclose(a["fee_log"], math.log(1 - 0.0008) * np.array([0.625, 0.375, 0.0]), rtol=1e-12)
    np.testing.assert_allclose(a["fees_paid"], [0.0005, 0.0003, 0.0], rtol=1e-12)
    # On a random path the parts add up to the path's net log growth and fees in units of initial wealth.
    rng = np.random.default_rng(1)
    w = rng.dirichlet(np.ones(4), size=(2, 30))
    g = np.exp(rng.normal(0, 0.02, (2, 30, 4)))
    traded = np.abs(rng.normal(0, 0.1, (2, 30, 4)))
    cost = 1e-3 * traded.sum(axis=-1)
    a = attribution(w, g, traded, cost)
    net = np.log((w * g).sum(axis=-1)) + np.log1p(-cost)
    np.testing.assert_allclose(a["net_log_growth"].sum(axis=-1), net.sum(axis=-1), rtol=1e-12)
    wealth_before = np.exp(np.cumsum(net, axis=-1) - net)
    np.testing.assert_allclose(a["fees_paid"].sum(axis=-1), (cost * wealth_before).sum(axis=-1), rtol=1e-12)
    flat = attribution(np.array([[0.5, 0.5]]), np.array([[1.0, 1.0]]), np.zeros((1, 2)), np.zeros(1))
    assert (flat["log_growth"] == 0).all() and (flat["fees_paid"] == 0).all()
