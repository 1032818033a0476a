"""The online-portfolio-selection zoo as causal target weights [W, L, A (+1 cash)] on the backtester's windows.

Conventions shared by every function here (as ``core.olmar``):

- Price relatives are close to close, x_t = C[t] / C[t-1] (x_0 = 1 by convention at the data's first bar, which no
  algorithm treats as information: a bar is *ready* once the relatives an update needs exist).
- The decision at bar t (after bar t closes) may use x_s for s <= t only. ``decision_bars`` [W, L] gives t per
  window and step; trailing data may reach before the window's first bar (that is the past).
- Every window restarts the algorithm's state from equal weight (and its initial statistics) at its first bar, and
  the decision at bar t is the state after the update with x_t: the portfolio chosen for the period that follows.
  In universal-portfolios' indexing (row k earns S[k] / S[k-1] with weights decided on rows < k) our decision at
  bar t is its row t + 1, and a window that starts at bar 0 matches it with ``min_history = 1`` (the update with the
  placeholder x_0 = 1 is skipped).
- The cash column, when the backtest trades cash, is 0: these algorithms are fully invested.
- The sequential loops over windows and steps are compiled (``kernels``, numba, float64 throughout): every step is a
  dozen operations on vectors of A numbers, where numpy's or torch's per-call cost would dominate (measured in
  ``benchmarks/baselines_speed.py``). The universal portfolio and CORN's log-optimal solves are matrix products.
  Inputs and outputs are tensors.

Sources and default parameters are in each docstring; ``registry`` lists them all for the README and the reports.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .core import _with_cash
from . import kernels
from .simplex import log_optimal_np

EG_ETA = 0.05
ONS_DELTA, ONS_BETA, ONS_ETA = 0.125, 1.0, 0.0
ANTICOR_WINDOW = 30
ANTICOR_BAH_WINDOWS = (2, 30)  # BAH_30(Anticor): every window from 2 to 30, as in the paper's headline
PAMR_EPS, PAMR_C = 0.5, 500.0
PAMR_MAX_STEP = 1e5  # universal-portfolios' cap on the step size, against a near-flat relative vector
CWMR_EPS, CWMR_CONFIDENCE = -0.5, 0.95
RMR_WINDOW, RMR_EPS, RMR_TAU, RMR_MAX_ITER = 5, 10.0, 1e-3, 200
CORN_WINDOW, CORN_RHO = 5, 0.1
UP_SAMPLES, UP_SEED = 10_000, 0
UP_CHUNK_BARS, UP_CHUNK_ELEMENTS = 128, 2_000_000  # bars per wealth product; elements of [W, K, S] per chunk


def relatives(close_ta: Tensor) -> Tensor:
    """x_t = C[t] / C[t-1] as float64 [T, A], with x_0 = 1."""
    return torch.from_numpy(_relatives(close_ta))


def _relatives(close_ta: Tensor) -> np.ndarray:
    close = close_ta.double().cpu().numpy()
    x = np.ones_like(close)
    x[1:] = close[1:] / close[:-1]
    return x


def _out(w_wla: np.ndarray, include_cash: bool, like: Tensor) -> Tensor:
    return _with_cash(torch.from_numpy(w_wla).to(like.device), include_cash)


def _bars(decision_bars_wl: Tensor) -> np.ndarray:
    return decision_bars_wl.cpu().numpy().astype(np.int64)


def eg(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, eta: float = EG_ETA) -> Tensor:
    """Exponentiated gradient (Helmbold, Schapire, Singer & Warmuth, "On-line portfolio selection using
    multiplicative updates", Mathematical Finance 8(4), 1998), eta = 0.05 (the paper's choice on the NYSE set; also
    universal-portfolios' default).

    b_{t,i} proportional to b_{t-1,i} exp(eta x_{t,i} / (b_{t-1} . x_t)). eta = 0 is the uniform CRP.
    """
    if not eta >= 0:
        raise ValueError(f"EG eta must be >= 0, got {eta}.")
    x, bars = _relatives(close_ta), _bars(decision_bars_wl)
    out = np.empty((*bars.shape, x.shape[1]))
    kernels.eg(x, bars, float(eta), out)
    return _out(out, include_cash, close_ta)


def ons(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, delta: float = ONS_DELTA,
        beta: float = ONS_BETA, eta: float = ONS_ETA) -> Tensor:
    """Online Newton step (Agarwal, Hazan, Kale & Schapire, "Algorithms for portfolio management based on the Newton
    method", ICML 2006), delta = 1/8, beta = 1, eta = 0 (the paper's experiments; universal-portfolios' defaults).

    With g_t = x_t / (p_{t-1} . x_t): A_t = I + sum g g', c_t = (1 + 1/beta) sum g, and p_t = (1 - eta) q + eta / A
    with q the projection of delta A_t^-1 c_t onto the simplex in the norm of A_t, i.e. argmin 0.5 q'A_t q -
    delta c_t' q, solved exactly (``simplex.qp_np``; universal-portfolios solves it with cvxopt, to that solver's
    tolerance).
    """
    if not (delta > 0 and beta > 0 and 0 <= eta <= 1):
        raise ValueError(f"ONS needs delta > 0, beta > 0 and 0 <= eta <= 1; got {delta}, {beta}, {eta}.")
    x, bars = _relatives(close_ta), _bars(decision_bars_wl)
    out = np.empty((*bars.shape, x.shape[1]))
    kernels.ons(x, bars, float(delta), float(beta), float(eta), out)
    return _out(out, include_cash, close_ta)


def pamr(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, eps: float = PAMR_EPS,
         c: float = PAMR_C, variant: int = 0) -> Tensor:
    """Passive-aggressive mean reversion (Li, Zhao, Hoi & Gopalkrishnan, "PAMR: passive aggressive mean reversion
    strategy for portfolio selection", Machine Learning 87(2), 2012), eps = 0.5 and C = 500 (the paper's settings).

    Loss l = max(0, b . x_t - eps); step tau = l / ||x_t - mean(x_t)||^2 (PAMR, variant 0), min(C, that) (PAMR-1) or
    l / (||x_t - mean(x_t)||^2 + 1 / (2C)) (PAMR-2); b <- simplex projection of b - tau (x_t - mean(x_t)). As in
    universal-portfolios, tau is capped at 1e5 (numerical safety when the relatives are nearly equal) and is 0 when
    they are exactly equal.
    """
    if variant not in (0, 1, 2):
        raise ValueError(f"PAMR variant must be 0, 1 or 2, got {variant}.")
    if not (eps >= 0 and c > 0):
        raise ValueError(f"PAMR needs eps >= 0 and C > 0, got {eps} and {c}.")
    x, bars = _relatives(close_ta), _bars(decision_bars_wl)
    out = np.empty((*bars.shape, x.shape[1]))
    kernels.pamr(x, bars, float(eps), float(c), int(variant), PAMR_MAX_STEP, out)
    return _out(out, include_cash, close_ta)


def cwmr(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, eps: float = CWMR_EPS,
         confidence: float = CWMR_CONFIDENCE, paper: bool = True) -> Tensor:
    """Confidence-weighted mean reversion, the standard-deviation variant CWMR-Stdev (Li, Hoi, Zhao &
    Gopalkrishnan, "Confidence weighted mean reversion strategy for online portfolio selection", ACM TKDD 7(1),
    2013), eps = -0.5 and confidence 0.95 (phi = Phi^-1(0.95) = 1.645), universal-portfolios' defaults, which it
    gives as the recommended values.

    The portfolio is the mean mu of a Gaussian N(mu, Sigma) (mu_0 uniform, Sigma_0 = I / A^2). Each bar, with
    M = mu . x, V = x' Sigma x and x_bar = sum_i Sigma_ii x_i / tr(Sigma), lambda is the largest root of the
    quadratic of the paper's eq. 7 (0 when none is positive; capped at 1e7), then
    mu <- mu - lambda Sigma (x - x_bar) / M, Sigma^-1 <- Sigma^-1 + phi lambda / sqrt(U) diag(x)^2 with
    sqrt(U) = (-lambda phi V + sqrt(lambda^2 phi^2 V^2 + 4V)) / 2, then mu is projected onto the simplex and Sigma
    rescaled to trace 1 / A^2 (as universal-portfolios does). universal-portfolios 0.4.17 adds phi lambda / sqrt(U)
    x_1^2 to every entry of Sigma^-1 instead of diag(x)^2 (``np.diag`` of a column matrix returns its first
    element); ``paper=False`` reproduces that, for the cross-check only.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"CWMR confidence must lie in (0.5, 1), got {confidence}.")
    theta = math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * confidence - 1.0, dtype=torch.float64)).item()
    x, bars = _relatives(close_ta), _bars(decision_bars_wl)
    out = np.empty((*bars.shape, x.shape[1]))
    kernels.cwmr(x, bars, float(eps), theta, bool(paper), out)
    return _out(out, include_cash, close_ta)


def rmr(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, window: int = RMR_WINDOW,
        eps: float = RMR_EPS, tau: float = RMR_TAU, scale_ta: Tensor | None = None) -> Tensor:
    """Robust median reversion (Huang, Zhou, Li, Hoi & Zhou, "Robust median reversion strategy for on-line
    portfolio selection", IJCAI 2013), window 5, eps 10 and median tolerance tau = 0.001 (universal-portfolios'
    defaults). The authors' own code (RMR in the OLPS toolbox of Li, Sahoo & Hoi, JMLR 2016: rmr_day_weight.m and
    l1median_VaZh_z.m) takes the window and eps as arguments without defaults, and differs from ours as follows:
    its L1 median starts from the coordinate-wise median (ours: the mean), takes Vardi & Zhang's modified step (the
    same as Weiszfeld's unless the iterate lands on a data point) and stops at ||y - y_last||_1 <= 1e-9 ||y||_1
    (ours: tau = 1e-3 in the Euclidean norm, as universal-portfolios); it scales prices by the first close (below);
    and before w + 1 closes exist it predicts with the last relative (ours holds equal weight, as OLMAR's warm-up).

    OLMAR's update with the predicted relative x_t = L1median(p_{t-w+1} .. p_t) / p_t, the median of the last
    ``window`` closes found by Weiszfeld's iteration (``kernels._l1_median``, tau as stopping tolerance, at most 200
    steps). The L1 median is not invariant to rescaling each asset, so prices are first divided by a per-asset
    scale: by default today's close (p_s / p_t, so every asset is measured in units of its own current price and the
    answer does not depend on price levels); universal-portfolios and the authors' code divide by the data's first
    close instead, which ``scale_ta`` [A] reproduces (the cross-check passes close[0]). Ready once ``window + 1``
    closes exist, like OLMAR.
    """
    if window < 2 or not tau > 0:
        raise ValueError(f"RMR needs window >= 2 and tau > 0, got {window} and {tau}.")
    close = close_ta.double().cpu().numpy()
    bars = _bars(decision_bars_wl)
    fixed = scale_ta is not None
    scale = scale_ta.double().cpu().numpy() if fixed else np.ones(close.shape[1])
    out = np.empty((*bars.shape, close.shape[1]))
    kernels.rmr(np.ascontiguousarray(close), bars, int(window), float(eps), float(tau), RMR_MAX_ITER,
                np.ascontiguousarray(scale), fixed, out)
    return _out(out, include_cash, close_ta)


def anticor(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, window: int = ANTICOR_WINDOW,
            paper: bool = True) -> Tensor:
    """Anticor (Borodin, El-Yaniv & Gogan, "Can we learn to beat the best stock", JAIR 21, 2004), one window
    w = 30 (universal-portfolios' default; the paper's headline strategy, buy and hold over the windows 2 .. 30, is
    ``anticor_bah``).

    At bar t (ready once 2w relatives exist), LX1 = log x over bars t-2w+1 .. t-w and LX2 = log x over t-w+1 .. t;
    Mcor(i, j) = corr(LX1_i, LX2_j) (0 where either is flat) and mu2 = mean(LX2). Asset i claims to move wealth to j
    when mu2_i > mu2_j and Mcor(i, j) > 0: claim = Mcor(i, j) + max(0, -Mcor(i, i)) + max(0, -Mcor(j, j)); i hands
    b_i claim_ij / sum_j claim_ij to j, with b the previous target.

    ``paper=False`` uses universal-portfolios 0.4.17's conventions instead, for the cross-check only: raw relatives
    x rather than log x, the correlation transposed (its M[i, j] is corr(recent_i, older_j)), and the first update
    one bar earlier (its older window then includes the placeholder x_0 = 1).
    """
    if window < 2:
        raise ValueError(f"Anticor window must be >= 2, got {window}.")
    x_ta = _relatives(close_ta)
    signal = np.log(x_ta) if paper else x_ta
    return _out(_anticor_np(signal, _bars(decision_bars_wl), window, paper), include_cash, close_ta)


def _anticor_np(signal: np.ndarray, bars: np.ndarray, window: int, paper: bool = True) -> np.ndarray:
    """``anticor``'s targets [W, L, A] (no cash column) from its signal [T, A]: log relatives (the paper) or raw
    relatives (``paper=False``)."""
    out = np.empty((*bars.shape, signal.shape[1]))
    kernels.anticor(signal, bars, int(window), 2 * window if paper else 2 * window - 1, not paper, out)
    return out


def anticor_bah(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool,
                windows: tuple[int, int] = ANTICOR_BAH_WINDOWS) -> Tensor:
    """BAH_W(Anticor), the headline strategy of Borodin, El-Yaniv & Gogan (JAIR 21, 2004): wealth split equally
    between the Anticor experts with windows w = 2 .. 30 (``windows``, inclusive), each left to grow (buy and hold
    over experts), so the target is sum_e S_e b_e / sum_e S_e with b_e expert e's target (``anticor``, the paper's
    conventions) and S_e the wealth it made before fees since the backtest window's first bar:
    S_e(k) = prod_{j=1..k} b_e(j - 1) . C[t_j] / C[t_{j-1}]. Ready bars and restarts as ``anticor``'s."""
    low, high = windows
    if not 2 <= low <= high:
        raise ValueError(f"BAH(Anticor) needs 2 <= the smallest window <= the largest, got {windows}.")
    bars = _bars(decision_bars_wl)
    close = close_ta.double().cpu().numpy()
    held = close[bars[:, 1:]] / close[bars[:, :-1]]  # [W, L - 1, A]: each asset's growth from one decision to the next
    signal = np.log(_relatives(close_ta))  # shared by every expert
    experts, log_wealth = [], []
    for w in range(low, high + 1):
        b = _anticor_np(signal, bars, w)
        growth = np.einsum("wla,wla->wl", b[:, :-1], held)
        log_s = np.zeros(bars.shape)
        log_s[:, 1:] = np.cumsum(np.log(growth), axis=1)
        experts.append(b)
        log_wealth.append(log_s)
    log_s = np.stack(log_wealth)  # [E, W, L]
    share = np.exp(log_s - log_s.max(axis=0))
    share /= share.sum(axis=0)
    out = np.einsum("ewl,ewla->wla", share, np.stack(experts))
    return _out(out, include_cash, close_ta)


def universal_portfolio(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool,
                        samples: int = UP_SAMPLES, seed: int = UP_SEED, points: Tensor | None = None) -> Tensor:
    """Cover's universal portfolio (Cover, "Universal portfolios", Mathematical Finance 1(1), 1991) with the uniform
    prior, approximated by ``samples`` = 10,000 constant rebalanced portfolios drawn uniformly on the simplex
    (universal-portfolios' default count), generator seed ``seed``.

    b_t = sum_j w_j S_j(t) / sum_j S_j(t), S_j(t) the wealth of CRP w_j over the window's relatives up to x_t,
    computed as products of the CRPs' growths over chunks of at most 128 bars (two matrix products per chunk, no loop
    over bars) and divided by its largest value after each chunk; a chunk ends early where the product of the bars'
    largest relatives would pass 1e260, so that no wealth overflows. ``points`` [S, A] replaces the random draw (the
    cross-check passes universal-portfolios' own sample). The error of the sampled integral shrinks like
    1 / sqrt(samples).
    """
    bars = _bars(decision_bars_wl)
    x_wla = _relatives(close_ta)[bars]
    n_windows, length, n_assets = x_wla.shape
    if points is None:
        if samples < 1:
            raise ValueError(f"universal portfolio samples must be >= 1, got {samples}.")
        gen = torch.Generator().manual_seed(seed)
        e = -torch.log(torch.rand(samples, n_assets, generator=gen, dtype=torch.float64))  # Dirichlet(1, ..., 1)
        points = e / e.sum(-1, keepdim=True)
    pts = points.double().cpu().numpy()
    pts_t = np.ascontiguousarray(pts.T)
    pts_one = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)  # numerator and denominator in one product
    ready = bars >= 1
    out = np.empty_like(x_wla)
    wealth = np.ones((n_windows, pts.shape[0]))
    step = max(1, min(UP_CHUNK_BARS, UP_CHUNK_ELEMENTS // (n_windows * pts.shape[0])))
    # No CRP grows by more than the largest relative of its bar: cut chunks before that bound's product reaches e^600.
    growth_bound = np.cumsum(np.log(np.maximum(x_wla.max(axis=(0, 2)), 1.0)))
    k0 = 0
    while k0 < length:
        base = growth_bound[k0 - 1] if k0 > 0 else 0.0
        k1 = min(k0 + step, length, max(k0 + 1, int(np.searchsorted(growth_bound, base + 600.0, side="right"))))
        grown = x_wla[:, k0:k1] @ pts_t  # [W, K, S]: each sampled CRP's growth over each bar
        if not ready[:, k0:k1].all():
            grown[~ready[:, k0:k1]] = 1.0
        grown[:, 0] *= wealth
        for k in range(1, k1 - k0):  # row by row: numpy's cumprod along this axis is several times slower
            np.multiply(grown[:, k], grown[:, k - 1], out=grown[:, k])
        both = grown @ pts_one
        out[:, k0:k1] = both[..., :-1] / both[..., -1:]
        last = grown[:, -1]
        wealth = last / last.max(-1, keepdims=True)  # only ratios matter: rescaled every chunk
        k0 = k1
    for w, k in zip(*np.nonzero(~ready)):  # bar 0 has no relative: hold the previous target (equal weight first)
        out[w, k] = out[w, k - 1] if k > 0 else 1.0 / n_assets
    return _out(out, include_cash, close_ta)


def corn(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, window: int = CORN_WINDOW,
         rho: float = CORN_RHO) -> Tensor:
    """CORN (Li, Hoi & Gopalkrishnan, "CORN: correlation-driven nonparametric learning approach for portfolio
    selection", ACM TIST 2(3), 2011), window w = 5 and correlation threshold rho = 0.1 (the paper's settings; also
    universal-portfolios' defaults).

    At bar t (ready once t >= w) the last w relatives x_{t-w+1} .. x_t, flattened, are correlated with every earlier
    such window ending at i in [w-1, t-1] (since the data's first bar: the past, not only this backtest window);
    the days i + 1 after the windows with correlation >= rho form the similarity set, and the target is their
    log-optimal portfolio (``simplex.log_optimal_np``, warm-started from the last target), equal weight when the set
    is empty. Windows at the very start of the data include the placeholder x_0 = 1, as in universal-portfolios; it
    solves the same problem with SLSQP (a looser optimum, and with fewer similar days than assets the optimum is not
    unique). The cost per bar grows with the bars before it.
    """
    if window < 1 or not -1.0 <= rho <= 1.0:
        raise ValueError(f"CORN needs window >= 1 and -1 <= rho <= 1, got {window} and {rho}.")
    x_ta = _relatives(close_ta)
    n_bars, n_assets = x_ta.shape
    bars = _bars(decision_bars_wl)
    n_windows, length = bars.shape
    # Row t: x_t, x_{t-1}, .., x_{t-w+1}, centred and scaled to unit norm, so that correlation is a dot product.
    lags = np.stack([np.roll(x_ta, k, axis=0) for k in range(window)], axis=1).reshape(n_bars, -1)
    z = lags - lags.mean(-1, keepdims=True)
    norm = np.sqrt((z * z).sum(-1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(norm > 0, z / np.where(norm > 0, norm, 1.0), np.nan)  # a flat window correlates with none
    b = np.full((n_windows, n_assets), 1.0 / n_assets)
    out = np.empty((n_windows, length, n_assets))
    idx = np.arange(n_bars)
    for k in range(length):
        t = bars[:, k]
        horizon = int(t.max()) + 1
        with np.errstate(invalid="ignore"):
            corr = z[t] @ z[:horizon].T  # [W, horizon]: windows ending at i
            cand = (idx[None, :horizon] >= window - 1) & (idx[None, :horizon] <= t[:, None] - 1) & (corr >= rho)
        days = np.zeros_like(cand)
        days[:, 1:] = cand[:, :-1]  # day i + 1 follows the window ending at i
        ready = t >= window
        if ready.any():
            upd = log_optimal_np(np.broadcast_to(x_ta[:horizon], (n_windows, horizon, n_assets)),
                                 days & ready[:, None], b)
            b = np.where(ready[:, None], upd, b)
        out[:, k] = b
    return _out(out, include_cash, close_ta)


def bcrp_hindsight(growth_wla: Tensor, include_cash: bool) -> Tensor:
    """HINDSIGHT, not a strategy one could trade: in each window, the constant rebalanced portfolio with the largest
    growth over that window's own returns (Cover 1991's benchmark), before fees. growth_wla: [W, L, A (+1)] gross
    growth of each decision, as ``core.best_single_hindsight`` takes. Returns [W, L, A (+1)], the same every step."""
    n_risky = growth_wla.shape[-1] - int(include_cash)
    b = log_optimal_np(growth_wla[..., :n_risky].double().cpu().numpy())
    w = np.ascontiguousarray(np.broadcast_to(b[:, None, :], (b.shape[0], growth_wla.shape[-2], n_risky)))
    return _out(w, include_cash, growth_wla)
