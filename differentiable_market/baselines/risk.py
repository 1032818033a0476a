"""Risk-based portfolios as causal target weights [W, L, A (+1 cash)] on the backtester's windows.

Each is long-only and fully invested, computed at rebalance steps k = 0, ``every``, 2 ``every``, ... of each window
from the simple close-to-close returns r_s = C[s] / C[s-1] - 1 of the ``lookback`` bars s = t - lookback + 1 .. t
(fewer at the start of the data; equal weight while fewer than 2 exist): only bars up to the decision bar t. Between
rebalances the target is the last one drifted with the assets' growth (``growth_wla``, as ``core.buy_and_hold``), i.e.
what the account already holds, so nothing is traded and no fee is paid. Defaults: a one-year window on daily bars
(252) and a monthly rebalance (every 21 bars); on other bar sizes they are counts of bars, not days.

The estimators and optimisers are written here, batched over every rebalance of every window at once, rather than
taken from scikit-learn, skfolio or PyPortfolioOpt: those solve one problem per call, and a backtest has thousands.
The Ledoit-Wolf estimate is checked against scikit-learn's ``LedoitWolf`` in the tests, and the four portfolios
against skfolio's (tests/differentiable_market/test_baselines_skfolio.py, with the crosscheck group)."""

from __future__ import annotations

import torch
from torch import Tensor

from .core import _with_cash
from .simplex import simplex_qp

RISK_LOOKBACK = 252
RISK_EVERY = 21


def _rebalance_steps(length: int, every: int) -> Tensor:
    return torch.arange(0, length, every)


def trailing_returns(close_ta: Tensor, bars_n: Tensor, lookback: int) -> tuple[Tensor, Tensor]:
    """Returns [N, lookback, A] known at each bar of bars_n [N] (r_s for s = t - lookback + 1 .. t) and a validity
    mask [N, lookback] (False where s < 1, before the data's second bar). Invalid rows are 0."""
    close = close_ta.to(torch.float64)
    r = torch.zeros_like(close)
    r[1:] = close[1:] / close[:-1] - 1.0
    s = bars_n[:, None] + torch.arange(-lookback + 1, 1, device=bars_n.device)[None]
    valid = s >= 1
    return torch.where(valid[:, :, None], r[s.clamp(min=0)], 0.0), valid


def ledoit_wolf(r_nsa: Tensor, valid_ns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ledoit & Wolf (2004, "A well-conditioned estimator for large-dimensional covariance matrices", J.
    Multivariate Analysis 88) shrinkage of the sample covariance towards mu I, mu = its mean variance, with the
    optimal intensity estimated from the data (the same estimator as scikit-learn's ``LedoitWolf``: demeaned data,
    covariance normalised by n, not n - 1). Batched over N problems, each with its own number of valid rows.

    Returns (shrunk covariance [N, A, A], sample mean [N, A], shrinkage intensity [N])."""
    n = valid_ns.sum(-1).to(r_nsa.dtype).clamp(min=1.0)  # [N]
    p = r_nsa.shape[-1]
    mean = r_nsa.sum(1) / n[:, None]
    x = torch.where(valid_ns[:, :, None], r_nsa - mean[:, None], 0.0)
    emp = torch.einsum("nsi,nsj->nij", x, x) / n[:, None, None]
    mu = torch.diagonal(emp, dim1=-2, dim2=-1).sum(-1) / p
    x2 = x * x
    beta_ = torch.einsum("nsi,nsj->nij", x2, x2).sum((-1, -2))
    delta_ = (emp * emp).sum((-1, -2))  # sum((X'X)^2) / n^2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * torch.diagonal(emp, dim1=-2, dim2=-1).sum(-1) + p * mu * mu) / p
    beta = torch.minimum(beta, delta)
    shrink = torch.where(beta > 0, beta / torch.where(delta > 0, delta, 1.0), 0.0)
    eye = torch.eye(p, dtype=r_nsa.dtype, device=r_nsa.device)
    cov = (1.0 - shrink)[:, None, None] * emp + (shrink * mu)[:, None, None] * eye
    return cov, mean, shrink


def _floor(cov: Tensor) -> Tensor:
    """A ridge of 1e-12 x the mean variance (plus a tiny absolute floor) so that flat assets keep the solvers
    well-posed."""
    scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1).clamp(min=1e-20)
    return cov + (1e-12 * scale)[:, None, None] * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)


def min_variance_weights(cov: Tensor) -> Tensor:
    """argmin w' Sigma w over the long-only simplex, per problem [N, A, A] -> [N, A]."""
    n, p = cov.shape[0], cov.shape[-1]
    y0 = torch.full((n, p), 1.0 / p, dtype=cov.dtype, device=cov.device)
    return simplex_qp(_floor(cov), torch.zeros_like(y0), y0)


def erc_weights(cov: Tensor, max_iter: int = 100, tol: float = 1e-13) -> Tensor:
    """Equal risk contribution (Maillard, Roncalli & Teiletche, "The properties of equally weighted risk contribution
    portfolios", J. Portfolio Management 36(4), 2010): w_i (Sigma w)_i equal for every i, long-only.

    Solved as Spinu (2013)'s convex problem min 0.5 y' Sigma y - (1/A) sum log y_i, y > 0, whose minimiser
    normalised, w = y / sum(y), is the ERC portfolio: Newton's method, each step shortened to stay inside y > 0 and
    to decrease the objective. [N, A, A] -> [N, A]."""
    cov = _floor(cov)
    n, p = cov.shape[0], cov.shape[-1]
    vol = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))
    y = (1.0 / vol) / p**0.5  # inverse volatility: exact when the assets are uncorrelated

    def f(v: Tensor) -> Tensor:
        return 0.5 * torch.einsum("ni,nij,nj->n", v, cov, v) - torch.log(v).sum(-1) / p

    fy = f(y)
    for _ in range(max_iter):
        grad = torch.einsum("nij,nj->ni", cov, y) - 1.0 / (p * y)
        hess = cov + torch.diag_embed(1.0 / (p * y * y))
        step = torch.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        shrink = step / y
        t = torch.where(shrink.amax(-1) > 0.99, 0.99 / shrink.amax(-1), torch.ones(n, dtype=y.dtype))
        for _ in range(30):
            trial = y - t[:, None] * step
            ok = (trial > 0).all(-1) & (f(trial.clamp(min=1e-300)) <= fy + 1e-15 * fy.abs())
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        y = y - t[:, None] * step
        fy = f(y)
        if float((step / y).abs().max()) < tol:
            break
    return y / y.sum(-1, keepdim=True)


def bayes_stein_mean(cov: Tensor, mean: Tensor, n_obs: Tensor) -> Tensor:
    """The Bayes-Stein mean of Jorion ("Bayes-Stein estimation for portfolio analysis", JFQA 21(3), 1986): the
    sample mean [N, A] shrunk towards the minimum-variance portfolio's mean mu0 = 1' Sigma^-1 mean / 1' Sigma^-1 1
    by phi = (A + 2) / ((A + 2) + n (mean - mu0)' Sigma^-1 (mean - mu0)), with n = n_obs [N] and Sigma = cov
    [N, A, A] as given (Jorion scales the sample covariance by (n - 1) / (n - A - 2); here it is whatever the caller
    passes, the Ledoit-Wolf estimate in ``max_sharpe_weights``). [N, A]."""
    p = mean.shape[-1]
    inv_one = torch.linalg.solve(cov, torch.ones_like(mean)[:, :, None])[:, :, 0]
    mu0 = (inv_one * mean).sum(-1) / inv_one.sum(-1)
    dev = mean - mu0[:, None]
    quad = (dev * torch.linalg.solve(cov, dev[:, :, None])[:, :, 0]).sum(-1)
    phi = (p + 2.0) / ((p + 2.0) + n_obs * quad)
    return (1.0 - phi)[:, None] * mean + (phi * mu0)[:, None]


def max_sharpe_weights(cov: Tensor, mean: Tensor, n_obs: Tensor) -> Tensor:
    """Long-only maximum Sharpe ratio (risk-free rate 0) with shrunk moments: the Ledoit-Wolf covariance and the
    Bayes-Stein mean (``bayes_stein_mean``).

    The tangency portfolio is y / sum(y) with y = argmin y' Sigma y subject to mu_shrunk' y = 1, y >= 0 (the same
    active-set solver as the others). When no asset has a positive shrunk mean there is no positive Sharpe ratio
    to maximise, and the minimum-variance portfolio is used instead."""
    cov = _floor(cov)
    n, p = mean.shape
    ones = torch.ones_like(mean)
    mu = bayes_stein_mean(cov, mean, n_obs)
    best, j = mu.max(-1)
    positive = best > 0
    y0 = torch.zeros_like(mean)
    y0[torch.arange(n), j] = 1.0 / torch.where(positive, best, 1.0)
    a = torch.where(positive[:, None], mu, ones)
    y0 = torch.where(positive[:, None], y0, torch.full_like(mean, 1.0 / p))
    y = simplex_qp(cov, torch.zeros_like(mean), y0, a_ba=a)
    return y / y.sum(-1, keepdim=True)


def hrp_weights(cov: Tensor) -> Tensor:
    """Hierarchical risk parity (Lopez de Prado, "Building diversified portfolios that outperform out of sample",
    J. Portfolio Management 42(4), 2016): single-linkage clustering of the correlation distance sqrt((1 - rho) / 2)
    (the Euclidean distance between the columns of that distance matrix, as in the paper), the dendrogram's leaf
    order, then recursive bisection splitting weight between the halves by the inverse of each half's
    inverse-variance-portfolio variance. Tree-shaped, so one problem at a time (scipy's ``linkage``; scipy is
    installed with the ``arch`` dependency). [N, A, A] -> [N, A]."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    cov_np = _floor(cov).cpu().numpy()
    out = torch.empty(cov.shape[:2], dtype=cov.dtype)
    for k, c in enumerate(cov_np):
        sd = c.diagonal() ** 0.5
        corr = (c / sd[:, None] / sd[None, :]).clip(-1.0, 1.0)
        dist = ((1.0 - corr) / 2.0).clip(min=0.0) ** 0.5
        dd = ((dist[:, None, :] - dist[None, :, :]) ** 2).sum(-1) ** 0.5
        dd = (dd + dd.T) / 2.0
        dd[range(len(dd)), range(len(dd))] = 0.0
        order = leaves_list(linkage(squareform(dd, checks=False), method="single")) if len(dd) > 1 else [0]
        w = torch.ones(len(order), dtype=torch.float64)
        clusters = [list(order)]
        while clusters:
            nxt = []
            for cl in clusters:
                if len(cl) < 2:
                    continue
                half = len(cl) // 2
                left, right = cl[:half], cl[half:]
                var = []
                for part in (left, right):
                    sub = c[part][:, part]
                    ivp = 1.0 / sub.diagonal()
                    ivp = ivp / ivp.sum()
                    var.append(float(ivp @ sub @ ivp))
                alpha = 1.0 - var[0] / (var[0] + var[1])
                w[left] *= alpha
                w[right] *= 1.0 - alpha
                nxt += [left, right]
            clusters = nxt
        out[k] = w
    return out.to(cov.device)


RISK_METHODS = ("min_variance", "erc", "hrp", "max_sharpe")


def risk_based(method: str, close_ta: Tensor, decision_bars_wl: Tensor, growth_wla: Tensor, include_cash: bool,
               lookback: int = RISK_LOOKBACK, every: int = RISK_EVERY) -> Tensor:
    """Target weights [W, L, A (+1)] of one risk-based ``method`` (``RISK_METHODS``): recomputed at steps 0, every,
    2 every, ... of each window from the trailing ``lookback`` returns, held (drifted) in between."""
    if method not in RISK_METHODS:
        raise ValueError(f"unknown risk-based method {method!r}; choose from {RISK_METHODS}.")
    if lookback < 2 or every < 1:
        raise ValueError(f"risk-based baselines need lookback >= 2 and every >= 1, got {lookback} and {every}.")
    n_windows, length = decision_bars_wl.shape
    n_assets = close_ta.shape[1]
    steps = _rebalance_steps(length, every)
    t = decision_bars_wl[:, steps].reshape(-1)  # [W * R]
    r, valid = trailing_returns(close_ta, t, lookback)
    cov, mean, _ = ledoit_wolf(r, valid)
    if method == "min_variance":
        w = min_variance_weights(cov)
    elif method == "erc":
        w = erc_weights(cov)
    elif method == "max_sharpe":
        w = max_sharpe_weights(cov, mean, valid.sum(-1).to(cov.dtype))
    else:
        n = valid.sum(-1).to(r.dtype).clamp(min=2.0)
        x = torch.where(valid[:, :, None], r - (r.sum(1) / n[:, None])[:, None], 0.0)
        w = hrp_weights(torch.einsum("nsi,nsj->nij", x, x) / (n - 1.0)[:, None, None])
    enough = valid.sum(-1) >= 2
    w = torch.where(enough[:, None], w, torch.full_like(w, 1.0 / n_assets)).reshape(n_windows, len(steps), n_assets)
    g = growth_wla[..., :n_assets].to(torch.float64)
    out = torch.empty((n_windows, length, n_assets), dtype=torch.float64, device=w.device)
    held = w[:, 0]
    j = 0
    for k in range(length):
        if j < len(steps) and k == int(steps[j]):
            held = w[:, j]
            j += 1
        out[:, k] = held
        drifted = held * g[:, k]
        held = drifted / drifted.sum(-1, keepdim=True)
    return _with_cash(out, include_cash)
