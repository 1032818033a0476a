"""Analytic and reference checks of the market accounting in differentiable_market.env."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from differentiable_market.config import EnvConfig
from differentiable_market.env import (
    Accounting,
    account,
    decision_growth,
    drift,
    env_objective,
    execution_horizon,
    fee_mask,
    initial_holdings,
    log_wealth,
    max_drawdown,
    max_drawdown_fraction,
    objective,
    observed_growth,
    smooth_abs,
    smooth_max_drawdown,
    smooth_running_max,
)
from differentiable_market.errors import ConfigError

F64 = torch.float64


def make_ohlc(seed: int, n_bars: int, n_assets: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic open/close prices [T, A]: a close-to-close random walk with an overnight gap before each open."""
    rng = np.random.default_rng(seed)
    log_close = np.cumsum(rng.normal(0.0, 0.02, size=(n_bars, n_assets)), axis=0) + np.log(
        rng.uniform(5.0, 200.0, size=n_assets)
    )
    close = np.exp(log_close)
    prev_close = np.vstack([close[:1] * np.exp(rng.normal(0.0, 0.01, size=(1, n_assets))), close[:-1]])
    open_ = prev_close * np.exp(rng.normal(0.0, 0.01, size=(n_bars, n_assets)))
    return open_, close


def random_simplex(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


def reference_wealth(open_: np.ndarray, close: np.ndarray, w: np.ndarray, execution: str, include_cash: bool,
                     cost_rate: float, initial: np.ndarray) -> np.ndarray:
    """Independent share-based simulation: wealth after each decision's holding period, starting from wealth 1.

    Holdings are kept as share counts valued at market prices; each decision sells/buys to its target at the fill
    price, pays cost_rate on the traded value of non-cash assets, and is marked at the next fill price.
    """
    n_dec = w.shape[0]
    if execution == "open":
        fill = open_[1 : 1 + n_dec]
        mark = open_[2 : 2 + n_dec]
    else:
        fill = close[:n_dec]
        mark = close[1 : 1 + n_dec]
    if include_cash:
        fill = np.hstack([fill, np.ones((n_dec, 1))])
        mark = np.hstack([mark, np.ones((n_dec, 1))])
    n_risky = w.shape[1] - 1 if include_cash else w.shape[1]
    wealth = np.empty(n_dec)
    shares = None
    for t in range(n_dec):
        if shares is None:
            value, pre = 1.0, initial
        else:
            held = shares * fill[t]
            value = held.sum()
            pre = held / value
        traded = sum(abs(w[t, i] - pre[i]) for i in range(n_risky))
        value_after_fee = value * (1.0 - cost_rate * traded)
        shares = w[t] * value_after_fee / fill[t]
        wealth[t] = float((shares * mark[t]).sum())
    return wealth


# ---------------------------------------------------------------------------------------------------------------
# Timing


def test_execution_horizon_values_and_bad_choice() -> None:
    assert execution_horizon("open") == 2
    assert execution_horizon("close") == 1
    with pytest.raises(ConfigError):
        execution_horizon("midday")  # type: ignore[arg-type]


@pytest.mark.parametrize("execution", ["open", "close"])
def test_decision_growth_shape_values_and_cash_column(execution: str) -> None:
    open_, close = make_ohlc(0, 9, 3)
    g = decision_growth(t64(open_), t64(close), execution, include_cash=True)
    h = execution_horizon(execution)
    assert g.shape == (9 - h, 4)
    assert torch.equal(g[:, -1], torch.ones(9 - h, dtype=F64))
    expected = open_[2:] / open_[1:-1] if execution == "open" else close[1:] / close[:-1]
    np.testing.assert_array_equal(g[:, :3].numpy(), expected)
    batched = decision_growth(t64(np.stack([open_, 2 * open_])), t64(np.stack([close, 2 * close])), execution, False)
    assert batched.shape == (2, 9 - h, 3)
    torch.testing.assert_close(batched[1], batched[0], rtol=1e-15, atol=0)
    with pytest.raises(ValueError):
        decision_growth(t64(open_[:h]), t64(close[:h]), execution, False)


def test_decision_growth_open_row_uses_only_bars_t_plus_1_and_2() -> None:
    n_bars, n_assets = 10, 3
    open_, close = make_ohlc(1, n_bars, n_assets)
    base = decision_growth(t64(open_), t64(close), "open", include_cash=False)
    for t in range(n_bars - 2):
        # The credited return starts at the open of t+1: O[t+1] is the denominator, O[t+2] the numerator.
        assert torch.equal(base[t], t64(open_[t + 2] / open_[t + 1]))
    for s in range(n_bars):
        o2, c2 = open_.copy(), close.copy()
        o2[s] *= 1.37
        c2[s] *= 0.71
        g2 = decision_growth(t64(o2), t64(c2), "open", include_cash=False)
        changed = {t for t in range(n_bars - 2) if not torch.equal(g2[t], base[t])}
        # Bar s reaches only the rows of decisions t with s in {t+1, t+2}.
        assert changed == {t for t in (s - 2, s - 1) if 0 <= t < n_bars - 2}


def test_decision_growth_close_row_uses_only_bars_t_and_t_plus_1() -> None:
    n_bars = 8
    open_, close = make_ohlc(2, n_bars, 2)
    base = decision_growth(t64(open_), t64(close), "close", include_cash=False)
    for s in range(n_bars):
        o2, c2 = open_.copy(), close.copy()
        o2[s] *= 1.5
        c2[s] *= 1.25
        g2 = decision_growth(t64(o2), t64(c2), "close", include_cash=False)
        changed = {t for t in range(n_bars - 1) if not torch.equal(g2[t], base[t])}
        assert changed == {t for t in (s - 1, s) if 0 <= t < n_bars - 1}


@pytest.mark.parametrize("execution", ["open", "close"])
def test_observed_growth_is_known_when_the_next_decision_is_made(execution: str) -> None:
    """Holdings shown to the policy at decision t+1 (after the close of bar t+1) use no price after bar t+1."""
    n_bars = 9
    open_, close = make_ohlc(3, n_bars, 2)
    base = observed_growth(t64(open_), t64(close), execution, include_cash=True)
    expected = close[1:-1] / open_[1:-1] if execution == "open" else close[1:] / close[:-1]
    np.testing.assert_array_equal(base[:, :2].numpy(), expected)
    n_rows = n_bars - execution_horizon(execution)
    for s in range(n_bars):
        o2, c2 = open_.copy(), close.copy()
        o2[s] *= 1.3
        c2[s] *= 0.8
        g2 = observed_growth(t64(o2), t64(c2), execution, include_cash=True)
        for t in range(n_rows):
            if s >= t + 2:
                assert torch.equal(g2[t], base[t])


# ---------------------------------------------------------------------------------------------------------------
# Accounting identities


def test_fee_mask_and_initial_holdings() -> None:
    assert fee_mask(4, True).tolist() == [1.0, 1.0, 1.0, 0.0]
    assert fee_mask(3, False, dtype=F64).tolist() == [1.0, 1.0, 1.0]
    assert initial_holdings(3, True, dtype=F64).tolist() == [0.0, 0.0, 1.0]
    assert initial_holdings(2, False).tolist() == [0.0, 0.0]


def test_drift_matches_price_moves() -> None:
    w = t64(np.array([0.5, 0.3, 0.2]))
    g = t64(np.array([1.1, 0.9, 1.0]))
    value = np.array([0.55, 0.27, 0.2])
    np.testing.assert_allclose(drift(w, g).numpy(), value / value.sum(), rtol=1e-15)


def test_constant_prices_lose_exactly_the_fees() -> None:
    n_dec, n_assets, c = 12, 4, 0.002
    w = random_simplex(4, (n_dec, n_assets))
    start = np.zeros(n_assets)
    acc = account(t64(w), torch.ones(n_dec, n_assets, dtype=F64), t64(start), c, include_cash=False)
    prev = np.vstack([start, w[:-1]])
    turnover = np.abs(w - prev).sum(axis=1)
    assert turnover[0] == pytest.approx(1.0)
    np.testing.assert_allclose(acc.turnover.numpy(), turnover, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(acc.cost.numpy(), c * turnover, rtol=1e-12, atol=1e-15)
    expected_log_wealth = np.cumsum(np.log(1.0 - c * turnover))
    np.testing.assert_allclose(log_wealth(acc.log_growth)[1:].numpy(), expected_log_wealth, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("smooth_eps", [None, 1e-6])
def test_constant_prices_without_trades_keep_wealth_exactly(smooth_eps: float | None) -> None:
    w0 = t64(np.array([0.5, 0.25, 0.125, 0.125]))  # dyadic: the sum is exactly 1, so drift at g = 1 is exact
    w = w0.expand(10, 4)
    acc = account(w, torch.ones(10, 4, dtype=F64), w0, 0.01, include_cash=False, smooth_eps=smooth_eps)
    assert torch.equal(acc.turnover, torch.zeros(10, dtype=F64))
    assert torch.equal(acc.cost, torch.zeros(10, dtype=F64))
    assert torch.equal(acc.log_growth, torch.zeros(10, dtype=F64))
    assert torch.equal(acc.post_drift, w)
    assert torch.equal(torch.exp(log_wealth(acc.log_growth)), torch.ones(11, dtype=F64))


@pytest.mark.parametrize("smooth_eps", [None, 1e-6])
def test_all_cash_wealth_stays_one(smooth_eps: float | None) -> None:
    open_, close = make_ohlc(5, 20, 3)
    g = decision_growth(t64(open_), t64(close), "open", include_cash=True)
    cash = initial_holdings(4, True, dtype=F64)
    acc = account(cash.expand_as(g), g, cash, 0.001, include_cash=True, smooth_eps=smooth_eps)
    assert torch.equal(acc.cost, torch.zeros(18, dtype=F64))
    assert torch.equal(acc.log_growth, torch.zeros(18, dtype=F64))
    assert torch.equal(torch.exp(log_wealth(acc.log_growth)), torch.ones(19, dtype=F64))


@pytest.mark.parametrize("execution", ["open", "close"])
@pytest.mark.parametrize("include_cash", [False, True])
def test_never_rebalanced_equals_buy_and_hold_closed_form(execution: str, include_cash: bool) -> None:
    n_bars, n_risky, c = 30, 4, 0.0015
    open_, close = make_ohlc(6, n_bars, n_risky)
    g = decision_growth(t64(open_), t64(close), execution, include_cash)
    n_dec, n_assets = g.shape
    w0 = t64(random_simplex(7, (n_assets,)))
    rows = [w0]
    for t in range(1, n_dec):
        rows.append(drift(rows[-1], g[t - 1]))
    w = torch.stack(rows)
    start = initial_holdings(n_assets, include_cash, dtype=F64)
    acc = account(w, g, start, c, include_cash)

    first, last = (open_[1], open_[n_dec + 1]) if execution == "open" else (close[0], close[n_dec])
    ratio = last / first
    if include_cash:
        ratio = np.append(ratio, 1.0)
    entry_turnover = float(w0[:n_risky].sum())
    closed_form = (1.0 - c * entry_turnover) * float((w0.numpy() * ratio).sum())
    assert float(acc.turnover[0]) == pytest.approx(entry_turnover, rel=1e-14)
    assert float(acc.turnover[1:].abs().max()) < 1e-14
    assert math.exp(float(acc.log_growth.sum())) == pytest.approx(closed_form, rel=1e-12)


@pytest.mark.parametrize("execution", ["open", "close"])
@pytest.mark.parametrize("include_cash", [False, True])
@pytest.mark.parametrize("cost_rate", [0.0, 0.0025])
def test_equal_weight_rebalanced_matches_numpy_loop(execution: str, include_cash: bool, cost_rate: float) -> None:
    open_, close = make_ohlc(8, 40, 5)
    g = decision_growth(t64(open_), t64(close), execution, include_cash)
    n_dec, n_assets = g.shape
    w = np.full((n_dec, n_assets), 1.0 / n_assets)
    start = initial_holdings(n_assets, include_cash, dtype=F64)
    acc = account(t64(w), g, start, cost_rate, include_cash)
    reference = reference_wealth(open_, close, w, execution, include_cash, cost_rate, start.numpy())
    np.testing.assert_allclose(np.exp(np.cumsum(acc.log_growth.numpy())), reference, rtol=1e-12)
    # The same path in float32, the training dtype: rounding of ~1e-7 per bar accumulates over the 40 bars.
    acc32 = account(torch.as_tensor(w, dtype=torch.float32), g.float(), start.float(), cost_rate, include_cash)
    assert acc32.log_growth.dtype == torch.float32
    np.testing.assert_allclose(np.exp(np.cumsum(acc32.log_growth.double().numpy())), reference, rtol=1e-5)


@pytest.mark.parametrize("execution", ["open", "close"])
def test_random_weight_path_matches_numpy_loop(execution: str) -> None:
    open_, close = make_ohlc(9, 25, 3)
    g = decision_growth(t64(open_), t64(close), execution, include_cash=True)
    w = random_simplex(10, tuple(g.shape))
    start = random_simplex(11, (4,))  # start from an arbitrary portfolio, not cash
    acc = account(t64(w), g, t64(start), 0.003, include_cash=True)
    reference = reference_wealth(open_, close, w, execution, True, 0.003, start)
    np.testing.assert_allclose(np.exp(np.cumsum(acc.log_growth.numpy())), reference, rtol=1e-12)
    assert torch.equal(acc.pre_trade[0], t64(start))
    torch.testing.assert_close(acc.pre_trade[1:], acc.post_drift[:-1], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Smooth cost


@pytest.mark.parametrize("eps", [1e-6, 1e-3, 0.1])
def test_smooth_abs_bounds_and_exact_zero(eps: float) -> None:
    x = torch.linspace(-1.0, 1.0, 2001, dtype=F64)
    s = smooth_abs(x, eps)
    assert torch.all(s <= x.abs())
    assert torch.all(s >= x.abs() - eps)
    assert torch.all(s >= 0)
    zero = torch.zeros(3, requires_grad=True)
    out = smooth_abs(zero, eps)
    assert torch.equal(out, torch.zeros(3))
    out.sum().backward()
    assert torch.equal(zero.grad, torch.zeros(3))


@pytest.mark.parametrize("eps", [1e-6, 1e-3])
def test_smooth_and_exact_cost_agree_within_eps_per_asset(eps: float) -> None:
    n_risky, c = 6, 0.005
    open_, close = make_ohlc(12, 30, n_risky)
    g = decision_growth(t64(open_), t64(close), "open", include_cash=True)
    w = t64(random_simplex(13, (5,) + tuple(g.shape)))
    start = initial_holdings(n_risky + 1, True, dtype=F64)
    exact = account(w, g, start, c, True)
    smooth = account(w, g, start, c, True, smooth_eps=eps)
    gap = exact.turnover - smooth.turnover
    assert torch.all(gap >= 0) and torch.all(gap <= eps * n_risky)
    # log(1 - c*x) has slope at most c / (1 - 2c) for turnover x in [0, 2].
    lg_gap = smooth.log_growth - exact.log_growth
    assert torch.all(lg_gap >= 0) and torch.all(lg_gap <= c * eps * n_risky / (1 - 2 * c))


# ---------------------------------------------------------------------------------------------------------------
# Causality and batching


def test_accounting_up_to_t_ignores_later_weights_and_growth() -> None:
    open_, close = make_ohlc(14, 14, 3)
    g = decision_growth(t64(open_), t64(close), "open", include_cash=True)
    n_dec = g.shape[0]
    w = t64(random_simplex(15, tuple(g.shape)))
    start = initial_holdings(4, True, dtype=F64)
    base = account(w, g, start, 0.002, True, smooth_eps=1e-6)
    other_w = t64(random_simplex(16, tuple(g.shape)))
    for t in range(n_dec - 1):
        w2 = torch.cat([w[: t + 1], other_w[t + 1 :]])
        g2 = torch.cat([g[: t + 1], g[t + 1 :] * 1.1])
        changed = account(w2, g2, start, 0.002, True, smooth_eps=1e-6)
        for name in ("log_growth", "turnover", "cost", "post_drift"):
            assert torch.equal(getattr(changed, name)[: t + 1], getattr(base, name)[: t + 1]), (name, t)
        assert torch.equal(changed.pre_trade[: t + 2], base.pre_trade[: t + 2])  # pre-trade at t+1 is drift of w_t


def test_log_growth_jacobian_is_lower_triangular_in_time() -> None:
    g = decision_growth(*(t64(x) for x in make_ohlc(17, 9, 2)), "open", True)
    w = t64(random_simplex(18, tuple(g.shape)))
    start = initial_holdings(3, True, dtype=F64)

    def log_growth_of(weights: torch.Tensor) -> torch.Tensor:
        return account(weights, g, start, 0.002, True, smooth_eps=1e-4).log_growth

    jac = torch.autograd.functional.jacobian(log_growth_of, w)  # [T_out, T_in, A]
    n_dec = g.shape[0]
    for s in range(n_dec):
        assert torch.all(jac[s, s + 1 :] == 0)
        assert torch.any(jac[s, s] != 0)


@pytest.mark.parametrize("smooth_eps", [None, 1e-6])
def test_batched_call_equals_per_path_calls(smooth_eps: float | None) -> None:
    n_windows, n_rollouts = 3, 2
    prices = [make_ohlc(20 + b, 12, 3) for b in range(n_windows)]
    g = torch.stack([decision_growth(t64(o), t64(c), "open", True) for o, c in prices]).unsqueeze(1)  # [B, 1, T, A]
    w = t64(random_simplex(30, (n_windows, n_rollouts) + tuple(g.shape[-2:])))
    start = initial_holdings(4, True, dtype=F64)
    batched = account(w, g, start, 0.002, True, smooth_eps)
    batched_obj = objective(batched.log_growth, 0.3, 0.2, 0.02)
    assert batched.log_growth.shape == (n_windows, n_rollouts, g.shape[-2])
    assert batched.pre_trade.shape == w.shape
    for b in range(n_windows):
        for r in range(n_rollouts):
            single = account(w[b, r], g[b, 0], start, 0.002, True, smooth_eps)
            for name in Accounting._fields:
                torch.testing.assert_close(getattr(batched, name)[b, r], getattr(single, name), rtol=1e-14, atol=1e-16)
            single_obj = objective(single.log_growth, 0.3, 0.2, 0.02)
            torch.testing.assert_close(batched_obj[b, r], single_obj, rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------------------------------------------------
# Drawdown and objective


def log_growth_of_wealth(wealth: list[float]) -> torch.Tensor:
    return t64(np.diff(np.log(np.array([1.0] + wealth))))


@pytest.mark.parametrize(
    ("wealth", "fraction"),
    [
        ([1.2, 0.9, 1.0, 0.6, 1.5, 1.2], 0.5),  # 1.2 -> 0.6 beats 1.5 -> 1.2
        ([0.8, 0.9, 0.7, 1.1], 0.3),  # the starting wealth of 1 is a peak
        ([1.01, 1.02, 1.05], 0.0),
    ],
)
def test_exact_max_drawdown_on_hand_made_paths(wealth: list[float], fraction: float) -> None:
    lg = log_growth_of_wealth(wealth)
    assert float(max_drawdown_fraction(lg)) == pytest.approx(fraction, abs=1e-12)
    assert float(max_drawdown(lg)) == pytest.approx(-math.log(1.0 - fraction), abs=1e-12)


def test_max_drawdown_fraction_matches_wealth_over_running_peak() -> None:
    lg = t64(np.random.default_rng(31).normal(0.0, 0.03, size=(4, 50)))
    wealth = np.exp(np.cumsum(np.hstack([np.zeros((4, 1)), lg.numpy()]), axis=1))
    expected = 1.0 - (wealth / np.maximum.accumulate(wealth, axis=1)).min(axis=1)
    np.testing.assert_allclose(max_drawdown_fraction(lg).numpy(), expected, rtol=1e-12, atol=1e-15)


def test_smooth_drawdown_tends_to_exact_as_temperature_falls() -> None:
    lg = t64(np.random.default_rng(32).normal(0.0, 0.02, size=(6, 60)))
    exact = max_drawdown(lg)
    n = lg.shape[-1] + 1
    gaps = []
    for tau in (0.1, 0.03, 0.01, 0.003, 0.001, 1e-4):
        gap = smooth_max_drawdown(lg, tau) - exact
        assert torch.all(gap >= -1e-12) and torch.all(gap <= 2 * tau * math.log(n) + 1e-12)
        run = smooth_running_max(log_wealth(lg), tau)
        true_run = torch.cummax(log_wealth(lg), dim=-1).values
        assert torch.all(run >= true_run - 1e-12) and torch.all(run <= true_run + tau * math.log(n) + 1e-12)
        gaps.append(float(gap.max()))
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 2e-3


def test_objective_terms() -> None:
    lg = t64(np.random.default_rng(33).normal(0.001, 0.02, size=(3, 40)))
    r = lg.numpy()
    expected = r.sum(axis=1) - 0.7 * r.shape[1] * r.var(axis=1) - 0.4 * smooth_max_drawdown(lg, 0.02).numpy()
    np.testing.assert_allclose(objective(lg, 0.7, 0.4, 0.02).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(objective(lg, 0.0, 0.0, 0.02).numpy(), r.sum(axis=1), rtol=1e-14)
    weights = (torch.tensor(v, dtype=F64) for v in (0.7, 0.4, 0.02))
    as_tensors = objective(lg, *weights)
    np.testing.assert_allclose(as_tensors.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("smooth", [False, True])
def test_env_objective_uses_the_config(smooth: bool) -> None:
    cfg = EnvConfig(cost_bps=25.0, include_cash=True, risk_aversion=0.5, drawdown_lambda=0.3,
                    smooth_abs_eps=1e-3, drawdown_temperature=0.05)
    g = decision_growth(*(t64(x) for x in make_ohlc(34, 20, 3)), cfg.execution, cfg.include_cash)
    w = t64(random_simplex(35, (2,) + tuple(g.shape)))
    start = initial_holdings(4, True, dtype=F64)
    value, acc = env_objective(w, g, start, cfg, smooth=smooth)
    manual = account(w, g, start, 25e-4, True, 1e-3 if smooth else None)
    torch.testing.assert_close(acc.log_growth, manual.log_growth, rtol=0, atol=0)
    torch.testing.assert_close(value, objective(manual.log_growth, 0.5, 0.3, 0.05), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Gradients


def test_gradcheck_account_and_objective_float64() -> None:
    g = decision_growth(*(t64(x) for x in make_ohlc(36, 8, 2)), "open", True)
    w = t64(random_simplex(37, (2,) + tuple(g.shape))).requires_grad_(True)
    g = g.clone().requires_grad_(True)
    start = t64(random_simplex(38, (3,))).requires_grad_(True)

    def f(weights: torch.Tensor, growth: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        acc = account(weights, growth, held, 0.004, True, smooth_eps=1e-3)
        return objective(acc.log_growth, 0.8, 0.5, 0.05)

    assert torch.autograd.gradcheck(f, (w, g, start), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradients_finite_in_float32_with_defaults_including_zero_trades() -> None:
    cfg = EnvConfig(include_cash=True, risk_aversion=0.1, drawdown_lambda=0.1)
    g = decision_growth(*(torch.as_tensor(x, dtype=torch.float32) for x in make_ohlc(39, 30, 3)), "open", True)
    w = torch.as_tensor(random_simplex(40, (4,) + tuple(g.shape)), dtype=torch.float32)
    cash = initial_holdings(4, True, dtype=torch.float32)
    w[0] = cash  # the first path never trades: every |x| in its cost is at 0
    w.requires_grad_(True)
    value, acc = env_objective(w, g, cash, cfg, smooth=True)
    assert torch.equal(acc.cost[0], torch.zeros_like(acc.cost[0]))
    value.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


# ---------------------------------------------------------------------------------------------------------------
# Compilation and devices


@pytest.mark.slow
def test_env_objective_compiles_fullgraph_and_matches_eager() -> None:
    cfg = EnvConfig(include_cash=True, risk_aversion=0.2, drawdown_lambda=0.2)
    g = decision_growth(*(torch.as_tensor(x, dtype=torch.float32) for x in make_ohlc(41, 40, 5)), "open", True)
    w = torch.as_tensor(random_simplex(42, (3, 2) + tuple(g.shape)), dtype=torch.float32)
    cash = initial_holdings(6, True, dtype=torch.float32)
    compiled = torch.compile(env_objective, fullgraph=True)
    for smooth in (True, False):
        value, acc = compiled(w, g, cash, cfg, smooth)
        ref_value, ref_acc = env_objective(w, g, cash, cfg, smooth)
        torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(acc.log_growth, ref_acc.log_growth, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_matches_cpu_and_zero_trade_is_free() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = torch.device("cuda")
    assert torch.equal(smooth_abs(torch.zeros(5, device=cuda), 1e-6).cpu(), torch.zeros(5))
    cfg = EnvConfig(include_cash=True, risk_aversion=0.2, drawdown_lambda=0.2)
    g = decision_growth(*(t64(x) for x in make_ohlc(43, 40, 5)), "open", True)
    w = t64(random_simplex(44, (3, 2) + tuple(g.shape)))
    cash = initial_holdings(6, True, dtype=F64)
    w[0, 0] = cash
    for smooth in (True, False):
        value, acc = env_objective(w.to(cuda), g.to(cuda), cash.to(cuda), cfg, smooth)
        ref_value, ref_acc = env_objective(w, g, cash, cfg, smooth)
        torch.testing.assert_close(value.cpu(), ref_value, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(acc.log_growth.cpu(), ref_acc.log_growth, rtol=1e-12, atol=1e-14)
        assert torch.equal(acc.cost[0, 0].cpu(), torch.zeros(g.shape[0], dtype=F64))


# ---------------------------------------------------------------------------------------------------------------
# A tradeable mask: listings, delistings, halts (union calendar)


def churn_prices(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open/close [30, 4] and the causal mask of a union calendar with max_fill_bars 2: asset 1 lists at bar 6
    (placeholder 1.0 before), asset 2 prints last at bar 12 (flat at its last close after, known gone at bar 15),
    asset 3 never trades (placeholders throughout)."""
    open_, close = make_ohlc(seed, 30, 4)
    open_[:6, 1] = close[:6, 1] = 1.0
    open_[13:, 2] = close[13:, 2] = close[12, 2]
    open_[:, 3] = close[:, 3] = 1.0
    mask = np.ones((30, 4), dtype=bool)
    mask[:6, 1] = False
    mask[15:, 2] = False
    mask[:, 3] = False
    return open_, close, mask


def masked_reference_wealth(open_: np.ndarray, close: np.ndarray, w: np.ndarray, mask: np.ndarray, execution: str,
                            cost_rate: float) -> np.ndarray:
    """Share counting with cash (last column): each target keeps only the assets tradeable at its decision bar,
    renormalised, and every share of an asset no longer tradeable is sold at the fill price."""
    n_dec = w.shape[0]
    fill = (open_[1 : 1 + n_dec] if execution == "open" else close[:n_dec])
    mark = (open_[2 : 2 + n_dec] if execution == "open" else close[1 : 1 + n_dec])
    fill, mark = (np.hstack([x, np.ones((n_dec, 1))]) for x in (fill, mark))
    shares = np.zeros(w.shape[1])
    shares[-1] = 1.0
    wealth = np.empty(n_dec)
    for t in range(n_dec):
        held = shares * fill[t]
        value = held.sum()
        allowed = np.append(mask[t], True)
        target = np.where(allowed, w[t], 0.0)
        target = target / target.sum()
        value_after_fee = value * (1.0 - cost_rate * np.abs(target - held / value)[:-1].sum())
        shares = target * value_after_fee / fill[t]
        wealth[t] = float((shares * mark[t]).sum())
    return wealth


@pytest.mark.parametrize("execution", ["open", "close"])
def test_masked_accounting_matches_share_counting_with_listings_and_delistings(execution: str) -> None:
    from differentiable_market.env import tradeable_columns

    open_, close, mask = churn_prices(21)
    g = decision_growth(t64(open_), t64(close), execution, include_cash=True)
    w = random_simplex(22, tuple(g.shape))
    m = tradeable_columns(torch.as_tensor(mask[: g.shape[0]]), include_cash=True)
    acc = account(t64(w), g, initial_holdings(5, True, dtype=F64), 0.003, include_cash=True, tradeable=m)
    reference = masked_reference_wealth(open_, close, w, mask, execution, 0.003)
    np.testing.assert_allclose(np.exp(np.cumsum(acc.log_growth.numpy())), reference, rtol=1e-12)
    held_after = acc.post_drift.numpy()
    assert (held_after[:, 3] == 0).all()  # never tradeable: exactly 0 throughout
    assert (held_after[:6, 1] == 0).all() and (held_after[15:, 2] == 0).all() and (held_after[6:15, 1:3] > 0).all()


def test_a_delisting_is_liquidated_at_its_last_close_with_the_fee() -> None:
    """All wealth in asset 2 (close fills): bought at C[3], it earns C[12] / C[3] to its last print, is held flat
    while its delisting is not yet known, and is sold at its last close C[12] at bar 15, paying the fee once more;
    the proceeds sit in cash at 1 for the rest of the path."""
    from differentiable_market.env import tradeable_columns

    open_, close, mask = churn_prices(23)
    c = 0.002
    g = decision_growth(t64(open_), t64(close), "close", include_cash=True)
    w = torch.zeros(g.shape, dtype=F64)
    w[:3, -1] = 1.0
    w[3:, 2] = 1.0  # the target keeps asking for asset 2: the mask overrides it
    m = tradeable_columns(torch.as_tensor(mask[: g.shape[0]]), include_cash=True)
    acc = account(w, g, initial_holdings(5, True, dtype=F64), c, include_cash=True, tradeable=m)
    wealth = np.exp(np.cumsum(acc.log_growth.numpy()))
    expected = (1 - c) * close[12, 2] / close[3, 2] * (1 - c)
    assert wealth[-1] == pytest.approx(expected, rel=1e-13)
    assert float(acc.turnover[15]) == pytest.approx(1.0, rel=1e-13)  # the forced sale, charged like any trade
    assert float(acc.turnover[16:].abs().max()) == 0.0
    assert torch.equal(acc.post_drift[15:, -1], torch.ones(g.shape[0] - 15, dtype=F64))


@pytest.mark.parametrize("execution", ["open", "close"])
def test_placeholder_prices_and_later_bars_change_nothing_in_masked_accounting(execution: str) -> None:
    """Prices outside an asset's tradeable life are placeholders: changing them changes no number; and bars after
    t + horizon change nothing at decisions up to t, mask included (the mask at t is built from bars <= t)."""
    from differentiable_market.env import growth_where_tradeable, tradeable_columns

    open_, close, mask = churn_prices(24)
    w = t64(random_simplex(25, (30 - execution_horizon(execution), 5)))

    def run(o: np.ndarray, c: np.ndarray, mk: np.ndarray) -> Accounting:
        g = decision_growth(t64(o), t64(c), execution, include_cash=True)
        m = tradeable_columns(torch.as_tensor(mk[: g.shape[0]]), include_cash=True)
        return account(w, growth_where_tradeable(g, m), initial_holdings(5, True, dtype=F64), 0.003, True,
                       tradeable=m)

    base = run(open_, close, mask)
    rng = np.random.default_rng(0)
    o2, c2 = open_.copy(), close.copy()
    for col, rows in ((1, slice(0, 6)), (3, slice(None)), (2, slice(15, None))):  # never read while tradeable
        o2[rows, col] = c2[rows, col] = rng.uniform(0.01, 1e4, size=c2[rows, col].shape)
    if execution == "open":  # the open of the first tradeable bar's successor is a real price; keep it
        o2[6, 1], o2[15:17, 2] = open_[6, 1], open_[15:17, 2]
    else:
        c2[15, 2] = close[15, 2]
    changed = run(o2, c2, mask)
    for a, b in zip(base, changed):
        assert torch.equal(a, b)
    t = 10
    h = execution_horizon(execution)
    o3, c3, m3 = open_.copy(), close.copy(), mask.copy()
    o3[t + h + 1 :] *= 1.7
    c3[t + h + 1 :] *= 0.6
    m3[t + 1 :] = ~m3[t + 1 :]
    later = run(o3, c3, m3)
    assert torch.equal(base.log_growth[: t + 1], later.log_growth[: t + 1])
    assert torch.equal(base.post_drift[: t + 1], later.post_drift[: t + 1])


def test_restrict_to_tradeable_falls_back_to_cash_or_equal_weight_and_keeps_gradients_finite() -> None:
    from differentiable_market.env import restrict_to_tradeable

    w = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=F64, requires_grad=True)
    m = torch.tensor([[False, False, True], [True, False, True]])
    out = restrict_to_tradeable(w, m, include_cash=True)
    assert out.tolist() == [[0.0, 0.0, 1.0], [0.2 / 0.7, 0.0, 0.5 / 0.7]]
    out.sum().backward()
    assert torch.isfinite(w.grad).all()
    no_cash = restrict_to_tradeable(torch.tensor([[1.0, 0.0, 0.0]], dtype=F64),
                                    torch.tensor([[False, True, True]]), include_cash=False)
    assert no_cash.tolist() == [[0.0, 0.5, 0.5]]
