"""The online-portfolio-selection zoo: causality, the simplex, closed forms, and cross-checks against
universal-portfolios (skipped, with the reason, when it is not installed: uv sync --group crosscheck)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from differentiable_market.baselines import olps, simplex
from differentiable_market.baselines.core import equal_weight
from differentiable_market.env import decision_growth


def _close(n_bars=120, n_assets=4, seed=0, vol=0.02):
    rng = np.random.default_rng(seed)
    return torch.tensor(100 * np.exp(np.cumsum(rng.normal(0.0002, vol, size=(n_bars, n_assets)), axis=0)))


def _windows(start, length, stride, count):
    return torch.tensor([[s + k for k in range(length)] for s in range(start, start + stride * count, stride)])


ALGOS = {
    "eg": lambda c, b: olps.eg(c, b, False),
    "ons": lambda c, b: olps.ons(c, b, False),
    "anticor": lambda c, b: olps.anticor(c, b, False, window=5),
    "anticor_bah": lambda c, b: olps.anticor_bah(c, b, False, windows=(2, 6)),
    "pamr": lambda c, b: olps.pamr(c, b, False),
    "pamr1": lambda c, b: olps.pamr(c, b, False, variant=1),
    "pamr2": lambda c, b: olps.pamr(c, b, False, variant=2),
    "cwmr": lambda c, b: olps.cwmr(c, b, False),
    "rmr": lambda c, b: olps.rmr(c, b, False),
    "corn": lambda c, b: olps.corn(c, b, False),
    "up": lambda c, b: olps.universal_portfolio(c, b, False, samples=500),
}


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_causal_and_on_the_simplex(name):
    close = _close()
    bars = _windows(30, 40, 20, 3)  # the windows end at bars 69, 89 and 109
    w = ALGOS[name](close, bars)
    assert w.shape == (3, 40, 4) and w.dtype == torch.float64
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 40, dtype=torch.float64), rtol=0, atol=1e-12)
    # Changing prices after bar 70 changes nothing decided up to bar 70 (window 0 entirely, window 1 in part).
    later = close.clone()
    later[71:] *= torch.linspace(0.5, 2.0, 4, dtype=torch.float64)
    w2 = ALGOS[name](later, bars)
    torch.testing.assert_close(w2[0], w[0], rtol=0, atol=0)
    torch.testing.assert_close(w2[1, :21], w[1, :21], rtol=0, atol=0)
    assert not torch.allclose(w2[2], w[2])  # and the change is seen once it is known


def test_cash_column_is_zero():
    close = _close()
    bars = _windows(30, 10, 10, 2)
    w = olps.eg(close, bars, True)
    assert w.shape == (2, 10, 5) and (w[..., -1] == 0).all()
    torch.testing.assert_close(w[..., :-1], olps.eg(close, bars, False))


def test_eg_with_zero_learning_rate_is_the_uniform_crp():
    close = _close(seed=1)
    bars = _windows(1, 50, 50, 2)
    torch.testing.assert_close(olps.eg(close, bars, False, eta=0.0), equal_weight((2, 50), 4, False), rtol=0,
                               atol=1e-15)


def test_eg_follows_the_multiplicative_update():
    close = _close(seed=2)
    bars = _windows(10, 20, 20, 1)
    w = olps.eg(close, bars, False, eta=0.3)
    c = close.numpy()
    b = np.full(4, 0.25)
    for k, t in enumerate(bars[0].tolist()):
        x = c[t] / c[t - 1]
        b = b * np.exp(0.3 * x / (b @ x))
        b /= b.sum()
        np.testing.assert_allclose(w[0, k].numpy(), b, rtol=1e-13)


def test_pamr_is_passive_when_the_loss_is_zero():
    # With eps above every b . x the loss max(0, b . x - eps) is always 0: PAMR never moves from equal weight.
    close = _close(seed=3)
    bars = _windows(5, 30, 30, 1)
    w = olps.pamr(close, bars, False, eps=10.0)
    torch.testing.assert_close(w, equal_weight((1, 30), 4, False), rtol=0, atol=0)


def test_universal_portfolio_approaches_the_two_asset_integral():
    close = _close(n_bars=60, n_assets=2, seed=4, vol=0.05)
    bars = torch.arange(1, 60)[None]
    w = olps.universal_portfolio(close, bars, False, samples=200_000, seed=1)
    # Cover's portfolio for two assets: b = int_0^1 p S_p dp / int_0^1 S_p dp, S_p the wealth of CRP (p, 1 - p).
    x = (close[1:] / close[:-1]).numpy()
    p = (np.arange(20_000) + 0.5) / 20_000  # midpoint rule
    log_s = np.cumsum(np.log(np.outer(x[:, 0], p) + np.outer(x[:, 1], 1 - p)), axis=0)  # [T - 1, grid]
    s = np.exp(log_s - log_s.max(axis=1, keepdims=True))
    exact = (s * p).sum(1) / s.sum(1)
    np.testing.assert_allclose(w[0, :, 0].numpy(), exact, atol=5e-3)  # sampling error ~ 1 / sqrt(200k) x spread


def test_universal_portfolio_equals_the_log_domain_mixture_even_when_wealth_would_overflow():
    # One asset grows e^6 a bar: over a 128-bar chunk its wealth (and a CRP's near it) passes 1e308 unless the
    # chunks are cut short.
    rng = np.random.default_rng(11)
    log_r = rng.normal(0.0, 1.0, size=(200, 4)) + np.array([6.0, 0.0, 0.0, 0.0])
    close = torch.tensor(np.exp(np.cumsum(log_r, axis=0) - 600.0))  # every close stays a finite positive number
    gen = torch.Generator().manual_seed(3)
    e = -torch.log(torch.rand(500, 4, generator=gen, dtype=torch.float64))
    points = e / e.sum(-1, keepdim=True)
    w = olps.universal_portfolio(close, torch.arange(1, 200)[None], False, points=points)
    x = (close[1:] / close[:-1]).numpy()
    log_s = np.cumsum(np.log(x @ points.numpy().T), axis=0)  # [T - 1, S]
    share = np.exp(log_s - log_s.max(axis=1, keepdims=True))
    expected = share @ points.numpy() / share.sum(axis=1, keepdims=True)
    assert torch.isfinite(w).all()
    np.testing.assert_allclose(w[0].numpy(), expected, rtol=0, atol=1e-9)


def test_bcrp_hindsight_matches_a_grid_search_on_two_assets():
    rng = np.random.default_rng(5)
    g = torch.tensor(np.exp(rng.normal(0.0, 0.03, size=(3, 80, 2)) + np.array([0.001, 0.0])))
    w = olps.bcrp_hindsight(g, False)
    grid = np.linspace(0, 1, 200_001)
    for k in range(3):
        f = np.log(np.outer(g[k, :, 0].numpy(), grid) + np.outer(g[k, :, 1].numpy(), 1 - grid)).sum(0)
        assert abs(w[k, 0, 0].item() - grid[f.argmax()]) < 2e-5
        assert (w[k] == w[k, :1]).all()  # constant over the window
    w_cash = olps.bcrp_hindsight(torch.cat([g, torch.ones(3, 80, 1, dtype=torch.float64)], -1), True)
    torch.testing.assert_close(w_cash[..., :2], w)
    assert (w_cash[..., 2] == 0).all()


def test_log_optimal_satisfies_the_optimality_conditions():
    rng = np.random.default_rng(6)
    x = torch.tensor(np.exp(rng.normal(0.0, 0.05, size=(5, 60, 6))))
    b = simplex.log_optimal(x)
    grad = (x / torch.einsum("bna,ba->bn", x, b)[:, :, None]).sum(1)  # d/db sum log(b.x)
    # KKT: grad_i = n on the support (the multiplier of sum(b) = 1 is n), grad_i <= n off it.
    n = x.shape[1]
    on = b > 1e-9
    assert ((grad - n).abs()[on] < 1e-8).all()
    assert (grad[~on] <= n + 1e-8).all()


def test_simplex_qp_is_the_projection_for_the_identity_and_optimal_otherwise():
    rng = np.random.default_rng(7)
    z = torch.tensor(rng.normal(0, 1, size=(200, 7)))
    y0 = torch.full((200, 7), 1 / 7, dtype=torch.float64)
    eye = torch.eye(7, dtype=torch.float64).expand(200, 7, 7)
    torch.testing.assert_close(simplex.simplex_qp(eye, z, y0), simplex.simplex_projection(z), rtol=0, atol=1e-14)
    m = torch.tensor(rng.normal(0, 1, size=(200, 7, 7)))
    q = m @ m.transpose(1, 2) + 0.1 * torch.eye(7, dtype=torch.float64)
    y = simplex.simplex_qp(q, z, y0)
    grad = torch.einsum("bij,bj->bi", q, y) - z
    # A solution is a fixed point of a projected gradient step.
    torch.testing.assert_close(simplex.simplex_projection(y - 0.01 * grad), y, rtol=0, atol=1e-12)


def test_anticor_moves_wealth_only_along_positive_lagged_correlation():
    # Two assets: B repeats A's log return of w bars before; A rises more recently. Mcor(A, B) > 0 and mu2(A) > mu2(B):
    # A hands wealth to B, so B ends above equal weight.
    rng = np.random.default_rng(8)
    w = 5
    ra = rng.normal(0, 0.02, 200)
    rb = np.concatenate([np.zeros(w), ra[:-w]])
    close = torch.tensor(np.exp(np.cumsum(np.stack([ra + 0.01, rb], 1), 0)))
    bars = torch.arange(2 * w + 5, 2 * w + 6)[None]
    out = olps.anticor(close, bars, False, window=w)
    assert out[0, 0, 1] > 0.5


def test_anticor_bah_is_the_wealth_weighted_mix_of_its_experts():
    # Buy and hold over experts, computed here from the single-window Anticors by explicit wealth products.
    close = _close(n_bars=150, n_assets=5, seed=9)
    bars = _windows(20, 60, 30, 3)
    mix = olps.anticor_bah(close, bars, False, windows=(2, 7)).numpy()
    c = close.numpy()
    for w_idx, row in enumerate(bars.tolist()):
        wealth = {w: 1.0 for w in range(2, 8)}
        experts = {w: olps.anticor(close, bars, False, window=w)[w_idx].numpy() for w in range(2, 8)}
        for k, t in enumerate(row):
            if k > 0:
                for w in wealth:
                    wealth[w] *= experts[w][k - 1] @ (c[t] / c[row[k - 1]])
            total = sum(wealth.values())
            expected = sum(wealth[w] * experts[w][k] for w in wealth) / total
            np.testing.assert_allclose(mix[w_idx, k], expected, rtol=0, atol=1e-13)
    one = olps.anticor_bah(close, bars, False, windows=(4, 4))  # a single expert is that expert
    torch.testing.assert_close(one, olps.anticor(close, bars, False, window=4), rtol=0, atol=1e-15)


def _cwmr_reference(close, bars, eps=olps.CWMR_EPS, confidence=olps.CWMR_CONFIDENCE):
    """CWMR-Stdev written out with full matrices, one window at a time (the paper's update, eq. 7 for lambda)."""
    theta = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(confidence, dtype=torch.float64)))
    c = close.numpy()
    n = c.shape[1]
    out = np.empty((*bars.shape, n))
    for w_idx, row in enumerate(bars.tolist()):
        mu, sigma = np.full(n, 1.0 / n), np.eye(n) / n**2
        for k, t in enumerate(row):
            if t >= 1:
                x = c[t] / c[t - 1]
                m, v = mu @ x, x @ sigma @ x
                x_bar = np.diag(sigma) @ x / np.trace(sigma)
                foo = (v - x_bar * x @ sigma.sum(1)) / m**2 + v * theta**2 / 2
                gap = eps - np.log(m)
                qa, qb, qc = foo**2 - v**2 * theta**4 / 4, 2 * gap * foo, gap**2 - v * theta**2
                disc = qb**2 - 4 * qa * qc
                lam = 0.0 if disc < 0 else min(max((-qb + np.sqrt(disc)) / (2 * qa),
                                                   (-qb - np.sqrt(disc)) / (2 * qa), 0.0), 1e7)
                u_sqrt = 0.5 * (-lam * theta * v + np.sqrt(lam**2 * theta**2 * v**2 + 4 * v))
                mu = simplex.simplex_projection(torch.tensor(mu - lam / m * sigma @ (x - x_bar))).numpy()
                sigma = np.linalg.inv(np.linalg.inv(sigma) + theta * lam / u_sqrt * np.diag(x**2))
                sigma /= n**2 * np.trace(sigma)
            out[w_idx, k] = mu
    return out


def test_cwmr_matches_a_full_matrix_reference():
    close = _close(n_bars=200, n_assets=6, seed=10)
    bars = _windows(1, 80, 60, 2)
    np.testing.assert_allclose(olps.cwmr(close, bars, False).numpy(), _cwmr_reference(close, bars), rtol=0,
                               atol=1e-10)


def _crosscheck_module():
    pytest.importorskip("universal.algos", reason="universal-portfolios is not installed: uv sync --group crosscheck")
    path = Path(__file__).resolve().parents[2] / "scripts" / "crosscheck_universal_portfolios.py"
    spec = importlib.util.spec_from_file_location("crosscheck_universal_portfolios", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_agrees(result):
    """The tolerance each class of comparison is held to (see the script's NOTES for why)."""
    for r in result["results"]:
        name, tol = r["strategy"], r["tolerance_class"]
        if tol == "exact":  # deterministic and the same algorithm: rounding only
            assert r["weights_max_abs_diff"] < 1e-9, name
            assert r["turnover_max_abs_diff_after_entry"] < 1e-9, name
            assert abs(r["relative_diff_same_convention"]) < 1e-9, name
        elif tol == "prefix":  # CWMR: universal-portfolios' Sigma update amplifies rounding geometrically
            assert r["decisions_agreeing_1e-9"] >= 3, name
        elif tol == "solver":  # ONS (cvxopt) and CORN (SLSQP): the reference solves to a tolerance
            assert r["median_weights_abs_diff"] < 1e-3, name
        elif tol == "optimum":  # BCRP: ours is the exact optimum, so it grows at least as much before fees
            if result["cost_bps_one_way"] == 0:
                assert r["final_wealth_ours"] >= r["final_wealth_universal"] * (1 - 1e-12), name
            assert r["weights_max_abs_diff"] < 1e-4, name


DETERMINISTIC = ("UCRP", "OLMAR", "EG", "PAMR", "PAMR-1", "PAMR-2", "RMR", "Anticor", "UP", "CWMR", "BCRP")


@pytest.mark.parametrize("bps", [0.0, 10.0])
def test_crosscheck_with_universal_portfolios_on_the_sample_start(bps):
    """The deterministic algorithms on the bundled sample's first 150 bars, at 0 and 10 bps (fast)."""
    module = _crosscheck_module()
    _assert_agrees(module.run(bps, "sample", DETERMINISTIC, max_bars=150))


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["sample", "synthetic50"])
@pytest.mark.parametrize("bps", [0.0, 10.0])
def test_crosscheck_with_universal_portfolios(dataset, bps):
    """Every algorithm on the bundled sample's first 600 bars and on 50 synthetic assets (minutes: universal-
    portfolios' CORN is quadratic in the bars, about 10 minutes on the whole sample, hence the 600 bars)."""
    module = _crosscheck_module()
    _assert_agrees(module.run(bps, dataset, max_bars=None if dataset == "synthetic50" else 600))
