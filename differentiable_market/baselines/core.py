"""Simple strategies to beat, as target weights on the backtester's windows.

Every function returns target weights [W, L, A (+1 cash)] for W windows of L decision bars, to be accounted by
``env.account`` exactly like the policy (same windows, same costs, same start from cash). Most baselines never hold
cash: when the cash column exists its weight is 0, so they are fully invested in the risky assets. When cash is
traded, a policy that only times its exposure would look skilful against those alone, so two baselines use cash:
``equal_weight_with_cash`` (1/(A+1) each) and ``volatility_target`` (equal weight scaled down when its trailing
volatility is above its long-run level).

Causality: a signal for the decision at bar t uses close prices up to bar t only (the decision is made after bar t
closes). ``decision_bars`` [W, L] holds, for every window and step, the bar index t of the decision in the full
price array, so trailing statistics may reach back before the window's first bar (that is the past, not
look-ahead). Only ``best_single_hindsight`` looks at the window's outcomes, and is labelled as such.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import kernels

OLMAR_WINDOW = 5  # Li & Hoi (2012) and universal-portfolios defaults
OLMAR_EPS = 10.0
VOL_LOOKBACK = 63  # trailing close-to-close returns for inverse volatility, in bars (about a quarter of days)


def _with_cash(w_wla: Tensor, include_cash: bool) -> Tensor:
    if not include_cash:
        return w_wla
    return torch.cat([w_wla, torch.zeros_like(w_wla[..., :1])], dim=-1)


def equal_weight_with_cash(shape_wl: tuple[int, int], n_assets: int, dtype: torch.dtype = torch.float64,
                           device: torch.device | str | None = None) -> Tensor:
    """1/(A+1) in every risky asset and in cash at every bar; [W, L, A + 1] (the cash column is last)."""
    return torch.full((*shape_wl, n_assets + 1), 1.0 / (n_assets + 1), dtype=dtype, device=device)


def equal_weight(shape_wl: tuple[int, int], n_assets: int, include_cash: bool, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
    """1/A in every risky asset at every bar: the uniform constant-rebalanced portfolio (UCRP)."""
    w = torch.full((*shape_wl, n_assets), 1.0 / n_assets, dtype=dtype, device=device)
    return _with_cash(w, include_cash)


def single_asset(index: int, shape_wl: tuple[int, int], n_assets: int, include_cash: bool,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """All wealth in asset ``index`` at every bar (held: after the entry trade nothing is traded)."""
    w = torch.zeros((*shape_wl, n_assets), dtype=dtype, device=device)
    w[..., index] = 1.0
    return _with_cash(w, include_cash)


def buy_and_hold(growth_wla: Tensor, include_cash: bool, tradeable_wla: Tensor | None = None) -> Tensor:
    """Equal weight at the window's first bar, never rebalanced afterwards.

    With ``tradeable_wla`` (bool [W, L, A (+1)], a union calendar's mask) the entry is equal weight over the assets
    tradeable at the window's first bar; a later listing is never bought, and an asset that stops being tradeable is
    sold by the accounting (its proceeds spread over the remaining holdings in proportion).

    growth_wla: [W, L, A (+1)] gross growth of each decision (``env.decision_growth`` gathered on the windows). The
    target at step k is the entry portfolio drifted through steps 0..k-1, w_k,i proportional to prod_{s<k} g_s,i,
    which is exactly what the account holds before trading, so only the entry trade pays a fee.
    """
    g = growth_wla[..., : growth_wla.shape[-1] - int(include_cash)]
    # Log space keeps long windows of a rising asset from overflowing.
    log_cum = torch.cumsum(torch.log(g), dim=-2) - torch.log(g)
    if tradeable_wla is not None:  # log 0 = -inf: never held; a window with none tradeable at its start holds cash
        entry = tradeable_wla[:, :1, : g.shape[-1]].to(g.dtype)
        log_cum = log_cum + torch.log(torch.where((entry > 0).any(-1, keepdim=True), entry, 1.0))
    w = torch.softmax(log_cum, dim=-1)
    return _with_cash(w, include_cash)


def best_single_hindsight(growth_wla: Tensor, include_cash: bool) -> tuple[Tensor, Tensor]:
    """HINDSIGHT, not a strategy one could trade: in each window, all wealth in the asset that grew most over it.

    Returns (weights [W, L, A (+1)], chosen asset index per window [W]). Every single-asset hold pays the same entry
    fee and nothing after, so the asset with the largest gross growth is also the best after costs.
    """
    n_risky = growth_wla.shape[-1] - int(include_cash)
    window_log_growth = torch.log(growth_wla[..., :n_risky]).sum(dim=-2)  # [W, A]
    best = window_log_growth.argmax(dim=-1)
    w = torch.nn.functional.one_hot(best, n_risky).to(growth_wla.dtype)
    w = w[:, None, :].expand(-1, growth_wla.shape[-2], -1)
    return _with_cash(w, include_cash), best


def olmar(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool, window: int = OLMAR_WINDOW,
          eps: float = OLMAR_EPS) -> Tensor:
    """OLMAR-1 (Li & Hoi, 2012): on-line moving-average reversion, restarted from equal weight in every window.

    At decision bar t the predicted price relative is x_t = mean(C[t-window+1 .. t]) / C[t] (closes up to t only).
    The new target is the simplex projection of b + lam * (x_t - mean(x_t)), with b the previous target (equal weight
    at the window's first bar) and lam = max(0, (eps - b . x_t) / ||x_t - mean(x_t)||^2), 0 when x_t is flat. Until
    ``window + 1`` closes exist (t < window) the target stays b, as in universal-portfolios' warm-up.

    close_ta: [T, A] close prices; decision_bars_wl: [W, L] int64 bar index of each decision. Returns [W, L, A (+1)].
    """
    if window < 2:
        raise ValueError(f"OLMAR window must be >= 2, got {window}.")
    close = close_ta.double().cpu().numpy()
    n_bars, n_assets = close.shape
    ready = np.arange(n_bars) >= window  # [T]
    # Direct sums over each trailing window (not differences of a running sum, whose rounding OLMAR's large step
    # amplifies); bars without a full window get 1, and are never used since they are not ready.
    x_pred = np.ones_like(close)
    if n_bars >= window:
        moving_average = np.lib.stride_tricks.sliding_window_view(close, window, axis=0).mean(axis=-1)
        x_pred[window - 1:] = moving_average / close[window - 1:]
    bars = decision_bars_wl.cpu().numpy().astype(np.int64)
    out = np.empty((*bars.shape, n_assets))
    kernels.olmar(x_pred, ready, bars, float(eps), out)  # a compiled loop over windows and steps
    return _with_cash(torch.from_numpy(out).to(close_ta.device), include_cash)


def inverse_volatility(close_ta: Tensor, decision_bars_wl: Tensor, include_cash: bool,
                       lookback: int = VOL_LOOKBACK) -> Tensor:
    """Weights proportional to 1 / sigma_i, rebalanced every bar.

    sigma_i at decision bar t is the standard deviation of the last ``lookback`` close-to-close log returns
    log(C[s] / C[s-1]) for s <= t (fewer at the start of the data; equal weight while fewer than 2 returns exist).
    A flat asset's sigma is floored at 1e-8 so the weights stay finite.
    """
    if lookback < 2:
        raise ValueError(f"inverse-volatility lookback must be >= 2, got {lookback}.")
    close = close_ta.to(torch.float64)
    n_assets = close.shape[1]
    sigma, count = _trailing_std(torch.log(close[1:] / close[:-1]), lookback)
    inv = 1.0 / sigma.clamp(min=1e-8)
    w_ta = inv / inv.sum(dim=-1, keepdim=True)
    w_ta = torch.where(count >= 2, w_ta, torch.full_like(w_ta, 1.0 / n_assets))
    return _with_cash(w_ta[decision_bars_wl], include_cash)


def _trailing_std(r: Tensor, lookback: int | None) -> tuple[Tensor, Tensor]:
    """Sample standard deviation (ddof 1) at every bar t of the last ``lookback`` returns known after bar t closes.

    r: [T - 1, ...] with r[s - 1] the return into bar s, so at bar t the returns r[0 .. t-1] are known. lookback None
    means all of them (an expanding window). Returns (sigma [T, ...], count [T, 1...]) with count the number of
    returns used; sigma is 0 where count < 2.
    """
    zero = torch.zeros_like(r[:1])
    c1 = torch.cat([zero, torch.cumsum(r, dim=0)], dim=0)  # c1[k] = sum of the first k returns
    c2 = torch.cat([zero, torch.cumsum(r * r, dim=0)], dim=0)
    idx = torch.arange(r.shape[0] + 1, device=r.device)
    lo = torch.zeros_like(idx) if lookback is None else torch.clamp(idx - lookback, min=0)
    count = (idx - lo).to(r.dtype).reshape(-1, *([1] * (r.dim() - 1)))
    s1 = c1[idx] - c1[lo]
    s2 = c2[idx] - c2[lo]
    var = (s2 - s1 * s1 / count.clamp(min=1)) / (count - 1).clamp(min=1)
    return torch.sqrt(var.clamp(min=0)), count


def volatility_target(close_ta: Tensor, decision_bars_wl: Tensor, lookback: int = VOL_LOOKBACK) -> Tensor:
    """Equal weight over the risky assets at exposure e_t, the rest (1 - e_t) in cash; [W, L, A + 1].

    Let r_s = log(mean_i C[s,i] / C[s-1,i]) be the close-to-close log return of the equal-weight portfolio into bar s.
    At decision bar t (after bar t closes, so r_1 .. r_t are known and nothing later is used):

        sigma_t  = sample std of the last ``lookback`` returns r_{t-lookback+1} .. r_t (trailing, realised);
        target_t = sample std of all returns r_1 .. r_t since the data's first bar (its own long-run volatility);
        e_t      = min(1, target_t / sigma_t),

    so the portfolio runs at most the equal-weight portfolio's usual risk, cutting exposure when recent volatility is
    above its long-run level, never levering up. The target is relative, not a fixed annual figure, so the baseline
    means the same on daily and intraday bars. While t <= lookback both windows are the same and e_t = 1; with fewer
    than 2 returns, or a flat portfolio (sigma_t = 0), e_t = 1.
    """
    if lookback < 2:
        raise ValueError(f"volatility-target lookback must be >= 2, got {lookback}.")
    close = close_ta.to(torch.float64)
    n_assets = close.shape[1]
    r = torch.log((close[1:] / close[:-1]).mean(dim=-1))  # [T - 1]
    sigma, count = _trailing_std(r, lookback)
    target, _ = _trailing_std(r, None)
    ok = (count >= 2) & (sigma > 0)
    exposure = torch.where(ok, torch.clamp(target / torch.where(ok, sigma, 1.0), max=1.0), 1.0)  # [T]
    e = exposure[decision_bars_wl].unsqueeze(-1)  # [W, L, 1]
    return torch.cat([e.expand(*e.shape[:-1], n_assets) / n_assets, 1.0 - e], dim=-1)
