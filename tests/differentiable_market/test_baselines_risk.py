"""Risk-based baselines: estimators and optimisers against closed forms and scikit-learn, the rebalance schedule,
causality."""

import numpy as np
import pytest
import torch

from differentiable_market.baselines import risk
from differentiable_market.env import account, decision_growth, initial_holdings


def _close(n_bars=400, n_assets=5, seed=0):
    rng = np.random.default_rng(seed)
    vols = np.linspace(0.01, 0.03, n_assets)
    common = rng.normal(0, 0.01, size=(n_bars, 1))
    r = common + rng.normal(0.0003, 1.0, size=(n_bars, n_assets)) * vols
    return torch.tensor(100 * np.exp(np.cumsum(r, axis=0)))


def _random_cov(rng, n, batch=20):
    m = rng.normal(0, 1, size=(batch, n, n))
    return torch.tensor(m @ m.transpose(0, 2, 1) / n + 0.05 * np.eye(n))


def test_ledoit_wolf_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.covariance", reason="scikit-learn is not installed: uv sync --group "
                                  "crosscheck")
    rng = np.random.default_rng(1)
    r = torch.tensor(rng.normal(0, 0.02, size=(3, 60, 8)) + rng.normal(0, 0.01, size=(3, 60, 1)))
    valid = torch.ones(3, 60, dtype=torch.bool)
    valid[1, :25] = False  # fewer rows: the estimate uses only the valid ones
    cov, mean, shrink = risk.ledoit_wolf(torch.where(valid[:, :, None], r, 0.0), valid)
    for k in range(3):
        x = r[k][valid[k]].numpy()
        lw = sklearn.LedoitWolf().fit(x)
        np.testing.assert_allclose(cov[k].numpy(), lw.covariance_, rtol=0, atol=1e-15)
        assert shrink[k].item() == pytest.approx(lw.shrinkage_, abs=1e-12)
        np.testing.assert_allclose(mean[k].numpy(), x.mean(0), rtol=0, atol=1e-16)


def test_min_variance_two_assets_closed_form_and_long_only():
    # w_1 = (s2^2 - s12) / (s1^2 + s2^2 - 2 s12), clipped to [0, 1] by the long-only constraint
    cases = [(0.04, 0.01, 0.005), (0.04, 0.09, 0.03), (0.01, 0.09, 0.02)]  # the last one is a corner: all in asset 1
    cov = torch.tensor([[[a, c], [c, b]] for a, b, c in cases], dtype=torch.float64)
    w = risk.min_variance_weights(cov)
    for (a, b, c), wk in zip(cases, w):
        w1 = min(max((b - c) / (a + b - 2 * c), 0.0), 1.0)
        assert wk[0].item() == pytest.approx(w1, abs=1e-9)


def test_erc_equalises_risk_contributions():
    cov = _random_cov(np.random.default_rng(2), 6)
    w = risk.erc_weights(cov)
    assert (w > 0).all()
    rc = w * torch.einsum("nij,nj->ni", cov, w)
    torch.testing.assert_close(rc / rc.sum(-1, keepdim=True), torch.full_like(rc, 1 / 6), rtol=0, atol=1e-10)


def test_max_sharpe_is_the_tangency_portfolio_when_that_is_long_only():
    rng = np.random.default_rng(3)
    cov = _random_cov(rng, 5)
    target = torch.tensor(rng.uniform(0.05, 1.0, size=(20, 5)))
    target = target / target.sum(-1, keepdim=True)
    mean = torch.einsum("nij,nj->ni", cov, target) * 1e-3  # Sigma^-1 mu is proportional to target, all positive
    w = risk.max_sharpe_weights(cov, mean, torch.full((20,), 1e30, dtype=torch.float64))  # no mean shrinkage
    torch.testing.assert_close(w, target, rtol=0, atol=1e-8)
    # No positive mean: the minimum-variance portfolio.
    w = risk.max_sharpe_weights(cov, -mean.abs(), torch.full((20,), 1e15, dtype=torch.float64))
    torch.testing.assert_close(w, risk.min_variance_weights(cov), rtol=0, atol=1e-12)


def test_hrp_of_uncorrelated_assets_is_inverse_variance():
    var = torch.tensor([[0.01, 0.04, 0.02, 0.09, 0.03]], dtype=torch.float64)
    w = risk.hrp_weights(torch.diag_embed(var))
    torch.testing.assert_close(w, (1 / var) / (1 / var).sum(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", risk.RISK_METHODS)
def test_rebalanced_on_schedule_held_in_between_and_causal(method):
    close = _close()
    bars = torch.tensor([list(range(200, 260)), list(range(300, 360))])
    g = decision_growth(close, close, "open", False)[bars]
    w = risk.risk_based(method, close, bars, g, False, lookback=100, every=20)
    assert w.shape == (2, 60, 5) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 60, dtype=torch.float64), rtol=0, atol=1e-12)
    acc = account(w, g, initial_holdings(5, False, dtype=torch.float64), 1e-3, False, smooth_eps=None)
    trades = acc.turnover > 1e-12
    assert trades[:, [0]].all()  # the entry trade
    off_schedule = torch.ones(60, dtype=torch.bool)
    off_schedule[::20] = False
    assert not trades[:, off_schedule].any()  # held between rebalances: no fee
    # Changing prices after bar 240 leaves every weight decided up to bar 240 unchanged.
    later = close.clone()
    later[241:] *= torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    g2 = decision_growth(later, later, "open", False)[bars]
    w2 = risk.risk_based(method, later, bars, g2, False, lookback=100, every=20)
    torch.testing.assert_close(w2[0, :40], w[0, :40], rtol=0, atol=0)
    assert not torch.allclose(w2[1], w[1])
