import numpy as np
import pytest
import torch

from differentiable_market import baselines
from differentiable_market.env import account, decision_growth, initial_holdings


def _prices(n_bars=120, n_assets=4, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, size=(n_bars, n_assets)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, size=close.shape))
    return torch.tensor(open_), torch.tensor(close)


def _windows(start, length, stride, count):
    return torch.tensor([[s + k for k in range(length)] for s in range(start, start + stride * count, stride)])


def _reference_wealth(w_la, g_la, cost_rate, include_cash):
    """Independent loop: start in cash, pay cost_rate on the traded non-cash fraction, multiply by w . g."""
    n_risky = w_la.shape[1] - int(include_cash)
    held = np.zeros(w_la.shape[1])
    if include_cash:
        held[-1] = 1.0
    wealth, path, fees = 1.0, [], []
    for w, g in zip(w_la, g_la):
        traded = np.abs(w[:n_risky] - held[:n_risky]).sum()
        fee = cost_rate * traded * wealth
        wealth = (wealth - fee) * float(w @ g)
        held = w * g / float(w @ g)
        path.append(wealth)
        fees.append(fee)
    return np.array(path), np.array(fees)


def _accounted(w, g, cost_rate, include_cash):
    init = initial_holdings(w.shape[-1], include_cash, dtype=w.dtype)
    return account(w, g, init, cost_rate, include_cash, smooth_eps=None)


@pytest.mark.parametrize("include_cash", [False, True])
def test_equal_weight_and_olmar_accounting_match_independent_loop(include_cash):
    open_, close = _prices()
    g_ta = decision_growth(open_, close, "open", include_cash)
    bars = _windows(10, 60, 20, 3)
    g = g_ta[bars]
    cost = 1e-3
    for w in (baselines.equal_weight(tuple(bars.shape), 4, include_cash),
              baselines.olmar(close, bars, include_cash),
              baselines.inverse_volatility(close, bars, include_cash)):
        acc = _accounted(w, g, cost, include_cash)
        for k in range(bars.shape[0]):
            ref_wealth, _ = _reference_wealth(w[k].numpy(), g[k].numpy(), cost, include_cash)
            np.testing.assert_allclose(torch.exp(torch.cumsum(acc.log_growth[k], 0)).numpy(), ref_wealth, rtol=1e-12)


@pytest.mark.parametrize("include_cash", [False, True])
def test_buy_and_hold_closed_form_pays_only_entry_fee(include_cash):
    open_, close = _prices(seed=1)
    g_ta = decision_growth(open_, close, "open", include_cash)
    bars = _windows(5, 50, 25, 3)
    g = g_ta[bars]
    cost = 2e-3
    w = baselines.buy_and_hold(g, include_cash)
    acc = _accounted(w, g, cost, include_cash)
    n = 4
    gross = g[..., :n].prod(dim=1).mean(dim=-1)  # [W] average asset growth over the window
    wealth = torch.exp(acc.log_growth.sum(-1))
    torch.testing.assert_close(wealth, (1 - cost) * gross, rtol=1e-12, atol=0)
    assert acc.turnover[:, 0].allclose(torch.ones(3, dtype=torch.float64))
    assert acc.turnover[:, 1:].abs().max() < 1e-12
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=torch.float64))


def test_single_assets_and_hindsight_best():
    open_, close = _prices(seed=2)
    g = decision_growth(open_, close, "open", False)[_windows(0, 40, 40, 2)]
    cost = 1e-3
    wealth = []
    for i in range(4):
        w = baselines.single_asset(i, (2, 40), 4, False)
        acc = _accounted(w, g, cost, False)
        wealth.append(torch.exp(acc.log_growth.sum(-1)))
        torch.testing.assert_close(wealth[-1], (1 - cost) * g[..., i].prod(dim=1), rtol=1e-12, atol=0)
    wealth = torch.stack(wealth, dim=-1)  # [W, A]
    w_best, best = baselines.best_single_hindsight(g, False)
    assert torch.equal(best, wealth.argmax(-1))
    acc = _accounted(w_best, g, cost, False)
    torch.testing.assert_close(torch.exp(acc.log_growth.sum(-1)), wealth.max(-1).values, rtol=1e-12, atol=0)


def test_simplex_projection_matches_bisection():
    rng = np.random.default_rng(3)
    y = torch.tensor(rng.normal(0, 2, size=(200, 6)))
    p = baselines.simplex_projection(y)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(200, dtype=torch.float64))
    # The projection is max(y - theta, 0) with theta solving sum = 1; find theta by bisection independently.
    lo, hi = y.min(-1).values - 1, y.max(-1).values
    for _ in range(200):
        mid = (lo + hi) / 2
        too_big = torch.clamp(y - mid[:, None], min=0).sum(-1) > 1
        lo, hi = torch.where(too_big, mid, lo), torch.where(too_big, hi, mid)
    torch.testing.assert_close(p, torch.clamp(y - lo[:, None], min=0), atol=1e-9, rtol=0)


def test_olmar_is_causal_and_follows_the_update_rule():
    _, close = _prices(n_bars=80, seed=4)
    bars = _windows(20, 30, 30, 1)
    w = baselines.olmar(close, bars, False)
    # Changing prices after the last decision bar of a window cannot change any of its weights.
    later = close.clone()
    later[50:] *= 3.0
    torch.testing.assert_close(baselines.olmar(later, bars, False), w)
    # Step by step against the textbook rule in numpy.
    c = close.numpy()
    b = np.full(4, 0.25)
    for k, t in enumerate(bars[0].tolist()):
        x = c[t - 4: t + 1].mean(0) / c[t]
        e = x - x.mean()
        lam = max(0.0, (10.0 - b @ x) / (e @ e))
        b = baselines.simplex_projection(torch.tensor(b + lam * e)).numpy()
        np.testing.assert_allclose(w[0, k].numpy(), b, atol=1e-12)


def test_inverse_volatility_uses_trailing_returns_only():
    _, close = _prices(n_bars=150, seed=5)
    bars = _windows(100, 20, 20, 1)
    w = baselines.inverse_volatility(close, bars, False, lookback=30)
    c = close.numpy()
    for k, t in enumerate(bars[0].tolist()):
        r = np.log(c[t - 29: t + 1] / c[t - 30: t])
        inv = 1 / r.std(axis=0, ddof=1)
        np.testing.assert_allclose(w[0, k].numpy(), inv / inv.sum(), rtol=1e-9)
    later = close.clone()
    later[120:] *= torch.linspace(0.5, 2.0, 4, dtype=torch.float64)
    torch.testing.assert_close(baselines.inverse_volatility(later, bars, False, lookback=30), w)


@pytest.mark.slow
def test_crosscheck_with_universal_portfolios():
    """UCRP and OLMAR agree with universal-portfolios once its fee convention is applied to our weights."""
    pytest.importorskip("universal.algos")  # optional: uv run --group crosscheck --with six pytest -m slow
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "crosscheck_universal_portfolios.py"
    spec = importlib.util.spec_from_file_location("crosscheck_universal_portfolios", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.run(10.0, names=("UCRP", "OLMAR"))["results"]  # the others: test_baselines_olps.py, by class
    assert [r["strategy"] for r in results] == ["UCRP", "OLMAR"]
    for r in results:
        assert r["weights_max_abs_diff"] < 1e-9 and r["turnover_max_abs_diff_after_entry"] < 1e-9
        assert abs(r["relative_diff_same_convention"]) < 1e-9
        assert -0.01 < r["relative_diff"] < 0  # we also pay the entry fee and a multiplicative fee


# ------------------------------------------------------------------------------------------- baselines with cash


def test_equal_weight_with_cash_holds_one_share_each_and_pays_only_the_risky_entry_fee():
    n, cost = 4, 2e-3
    w = baselines.equal_weight_with_cash((2, 30), n)
    assert w.shape == (2, 30, n + 1)
    torch.testing.assert_close(w, torch.full_like(w, 1 / (n + 1)), rtol=0, atol=0)
    # Constant prices: every bar after entry is already on target, so wealth = 1 - fee on the risky fifths.
    flat = torch.full((40, n), 50.0, dtype=torch.float64)
    g = decision_growth(flat, flat, "open", True)[_windows(3, 30, 5, 2)]
    acc = _accounted(w, g, cost, True)
    torch.testing.assert_close(torch.exp(acc.log_growth.sum(-1)),
                               torch.full((2,), 1 - cost * n / (n + 1), dtype=torch.float64), rtol=1e-14, atol=0)
    # On moving prices, the env's accounting of it matches the independent loop (cash earns nothing, pays no fee).
    open_, close = _prices(seed=6)
    g = decision_growth(open_, close, "open", True)[_windows(10, 60, 20, 3)]
    acc = _accounted(baselines.equal_weight_with_cash((3, 60), n), g, cost, True)
    for k in range(3):
        ref, _ = _reference_wealth(np.full((60, n + 1), 1 / (n + 1)), g[k].numpy(), cost, True)
        np.testing.assert_allclose(torch.exp(torch.cumsum(acc.log_growth[k], 0)).numpy(), ref, rtol=1e-12)


def _two_regime_close(a: float, b: float, n1: int, n2: int, n_assets: int = 3) -> torch.Tensor:
    """Every asset has the same log returns: +a, -a, ... for n1 bars, then +b, -b, ... for n2 bars (n1 even)."""
    r = np.concatenate([a * (-1.0) ** np.arange(n1), b * (-1.0) ** np.arange(n2)])
    log_c = np.log(100.0) + np.concatenate([[0.0], np.cumsum(r)])
    return torch.tensor(np.repeat(np.exp(log_c)[:, None], n_assets, axis=1) * np.linspace(1, 3, n_assets))


def test_volatility_target_closed_form_on_two_volatility_regimes():
    # Returns r_1..r_t are known at bar t. Windows of an even number of alternating +-x returns have mean 0, so their
    # sample std is x * sqrt(n / (n - 1)) in closed form.
    a, b, n1, n2, lookback, n_assets = 0.01, 0.03, 40, 40, 10, 3
    close = _two_regime_close(a, b, n1, n2, n_assets)
    bars = torch.arange(close.shape[0])[None]
    w = baselines.volatility_target(close, bars, lookback)
    assert w.shape == (1, close.shape[0], n_assets + 1)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, close.shape[0], dtype=torch.float64), rtol=0, atol=1e-15)
    exposure = w[0, :, :n_assets].sum(-1)
    torch.testing.assert_close(w[0, :, :n_assets], exposure[:, None].expand(-1, n_assets) / n_assets, rtol=0,
                               atol=1e-15)
    torch.testing.assert_close(w[0, :, -1], 1 - exposure, rtol=0, atol=1e-15)

    def sd(x: float, n: int) -> float:
        return x * np.sqrt(n / (n - 1))

    # Until the trailing window is shorter than the history, both are the same returns: fully invested.
    torch.testing.assert_close(exposure[: lookback + 1], torch.ones(lookback + 1, dtype=torch.float64), rtol=0,
                               atol=1e-12)
    for t in range(lookback + 2, n1 + 1, 2):  # calm regime, even t: long-run std below the trailing std
        assert exposure[t].item() == pytest.approx(sd(a, t) / sd(a, lookback), rel=1e-9)
    for t in range(n1 + lookback, n1 + n2 + 1, 2):  # volatile regime, trailing window entirely inside it
        long_run = np.sqrt((n1 * a * a + (t - n1) * b * b) / (t - 1))
        assert exposure[t].item() == pytest.approx(long_run / sd(b, lookback), rel=1e-9)
    assert exposure[n1 + n2].item() < 0.8  # risk cut when volatility triples


def test_volatility_target_never_looks_ahead_and_never_levers():
    _, close = _prices(n_bars=200, seed=7)
    bars = torch.arange(200)[None]
    w = baselines.volatility_target(close, bars, lookback=20)
    assert (w >= 0).all() and (w[..., :-1].sum(-1) <= 1 + 1e-12).all()
    assert (w[0, 21:, -1] > 1e-6).any()  # random volatility: exposure is cut sometimes
    for t in (30, 99, 150):
        later = close.clone()
        later[t + 1:] *= torch.linspace(0.3, 3.0, 4, dtype=torch.float64)  # bar t+1 onwards only
        w2 = baselines.volatility_target(later, bars, lookback=20)
        torch.testing.assert_close(w2[0, : t + 1], w[0, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(w2[0, t + 1], w[0, t + 1])  # the perturbation is seen once it is known
