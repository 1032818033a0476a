"""Differentiable market accounting: pure tensor functions over [..., time, assets].

Every function takes tensors with any leading batch dims (windows, rollouts, ...) followed by time T and assets A
(A counts the cash column, which is always the LAST column when cash is included). Nothing loops in Python over
time, batch or assets, and nothing calls ``.item()``: the same code serves training (float32, smoothed |x|),
evaluation and the backtester (exact |x|).

Timing (see DESIGN.md, "Market timing and accounting"). Row t of every per-decision tensor belongs to the target
weights w_t chosen after bar t closes:

- ``execution="open"``: w_t is filled at O[t+1] and held to O[t+2], earning g_t = O[t+2] / O[t+1].
- ``execution="close"``: w_t is filled at C[t] and held to C[t+1], earning g_t = C[t+1] / C[t].

Because every decision is a full target, the holdings just before the trade at t are the previous target drifted
by its own growth, pre_t = drift(w_{t-1}, g_{t-1}), so a whole weight path is accounted for in one vectorised pass.

Units: log growth is natural-log growth of wealth per bar; ``cost`` is a fraction of wealth; ``turnover`` is the
traded fraction of wealth summed over non-cash assets (one-way fee base, in [0, 2]); ``cost_rate`` is the one-way
fee as a fraction (``EnvConfig.cost_rate``, i.e. basis points * 1e-4).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .config import EnvConfig, Execution
from .errors import ConfigError

_HORIZONS: dict[str, int] = {"open": 2, "close": 1}


def execution_horizon(execution: Execution) -> int:
    """Bars after the decision bar that the return of a decision reaches: 2 for "open", 1 for "close".

    A window of T bars therefore yields T - horizon scorable decisions.
    """
    try:
        return _HORIZONS[execution]
    except KeyError:
        raise ConfigError(f"execution must be one of {sorted(_HORIZONS)}, got {execution!r}.") from None


def _append_cash(g: Tensor) -> Tensor:
    ones = torch.ones(g.shape[:-1] + (1,), device=g.device, dtype=g.dtype)
    return torch.cat([g, ones], dim=-1)


def _check_prices(open_ta: Tensor, close_ta: Tensor, horizon: int) -> None:
    if open_ta.shape != close_ta.shape:
        raise ValueError(f"open and close prices must have the same shape, got {tuple(open_ta.shape)} and "
                         f"{tuple(close_ta.shape)}.")
    if open_ta.dim() < 2 or open_ta.shape[-2] <= horizon:
        raise ValueError(f"prices must be [..., T, A] with T > {horizon} bars, got shape {tuple(open_ta.shape)}.")


def decision_growth(open_ta: Tensor, close_ta: Tensor, execution: Execution, include_cash: bool) -> Tensor:
    """Gross growth earned by each decision: [..., T, A] prices -> [..., T - horizon, A (+1 cash)].

    Row t belongs to the decision made after bar t: O[t+2] / O[t+1] in "open" mode, C[t+1] / C[t] in "close" mode.
    Row t never uses a price from bar t or earlier in "open" mode. A cash column of ones is appended when
    ``include_cash``.
    """
    horizon = execution_horizon(execution)
    _check_prices(open_ta, close_ta, horizon)
    if execution == "open":
        g = open_ta[..., 2:, :] / open_ta[..., 1:-1, :]
    else:
        g = close_ta[..., 1:, :] / close_ta[..., :-1, :]
    return _append_cash(g) if include_cash else g


def observed_growth(open_ta: Tensor, close_ta: Tensor, execution: Execution, include_cash: bool) -> Tensor:
    """Growth of decision t's position from its fill to the close of bar t+1, when decision t+1 is made.

    Shape and rows as ``decision_growth``. ``drift(w_t, observed_growth[t])`` is the holdings the policy may be shown
    at decision t+1. In "open" mode this is C[t+1] / O[t+1], NOT the full period growth: ``Accounting.post_drift``
    has drifted to O[t+2], the next open, which is not known after the close of bar t+1 (feeding it to the policy
    would leak the overnight gap). In "close" mode it equals ``decision_growth``.
    """
    horizon = execution_horizon(execution)
    _check_prices(open_ta, close_ta, horizon)
    if execution == "open":
        g = close_ta[..., 1:-1, :] / open_ta[..., 1:-1, :]
    else:
        g = close_ta[..., 1:, :] / close_ta[..., :-1, :]
    return _append_cash(g) if include_cash else g


def growth_where_tradeable(g: Tensor, tradeable: Tensor) -> Tensor:
    """Decision growth [..., A] with 1 on the columns not tradeable at the decision (bool [..., A], broadcastable).

    Weight there is 0, so the value never changes an account; setting it keeps the placeholder prices of a union
    calendar (before a listing, after a known delisting) out of everything computed from growth (baselines, drift).
    """
    return torch.where(tradeable, g, torch.ones((), dtype=g.dtype, device=g.device))


def drift(w: Tensor, g: Tensor) -> Tensor:
    """Weights after holding ``w`` through gross growth ``g``: w * g / (w . g), over the last dim."""
    wg = w * g
    return wg / wg.sum(dim=-1, keepdim=True)


def smooth_abs(x: Tensor, eps: float | Tensor) -> Tensor:
    """Differentiable |x|: sqrt(x^2 + eps^2) - eps, elementwise, in the dtype of x.

    Computed as hypot(x, eps) - eps: one fused pass (the costliest op of the training cost), exactly 0 at x = 0
    because hypot(0, eps) == eps in IEEE arithmetic (so a zero trade costs nothing), never below 0, and
    |x| - eps <= smooth_abs(x) <= |x| up to one rounding of |x|. The gradient x / hypot(x, eps) is 0 at x = 0.
    """
    if isinstance(eps, Tensor):
        eps_t = eps.to(dtype=x.dtype, device=x.device)
    else:  # a fill on the device, not a host-to-device copy that would synchronise
        eps_t = torch.full((), eps, dtype=x.dtype, device=x.device)
    return torch.hypot(x, eps_t) - eps_t


def fee_mask(n_assets_total: int, include_cash: bool, device: torch.device | str | None = None,
             dtype: torch.dtype | None = None) -> Tensor:
    """[A] mask of assets that pay the fee: 1 for every asset, 0 for the cash column (the last) when present."""
    mask = torch.ones(n_assets_total, device=device, dtype=dtype)
    if include_cash:
        mask[-1] = 0
    return mask


def initial_holdings(n_assets_total: int, include_cash: bool, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> Tensor:
    """[A] holdings of a portfolio that starts in cash: all zeros, with 1 in the cash column when cash exists.

    Passed as ``initial`` to ``account`` it makes the first decision pay the full entry fee.
    """
    held = torch.zeros(n_assets_total, device=device, dtype=dtype)
    if include_cash:
        held[-1] = 1
    return held


def tradeable_columns(tradeable_ta: Tensor, include_cash: bool) -> Tensor:
    """Bool [..., A (+1)] mask of the columns a decision may hold, from the market's causal mask [..., A]: cash, the
    last column when present, is always tradeable."""
    if not include_cash:
        return tradeable_ta
    return torch.cat([tradeable_ta, torch.ones_like(tradeable_ta[..., :1])], dim=-1)


def restrict_to_tradeable(w: Tensor, tradeable: Tensor, include_cash: bool) -> Tensor:
    """Targets [..., A] with the untradeable columns zeroed and the rest renormalised; tradeable: bool [..., A]
    (``tradeable_columns``), broadcastable against w.

    A target with no weight left on a tradeable column goes all to cash when cash is traded, otherwise to equal weight
    over the tradeable assets. Exactly zero on every untradeable column, and the identity on a target that holds
    only tradeable columns (up to one rounding of the renormalisation).
    """
    m = tradeable.to(w.dtype)
    wm = w * m
    total = wm.sum(dim=-1, keepdim=True)
    if include_cash:
        fallback = torch.zeros_like(m)
        fallback[..., -1] = 1
    else:
        fallback = m / m.sum(dim=-1, keepdim=True).clamp_min(1)
    # clamp_min keeps the unused branch finite, so the gradient through torch.where stays finite too
    return torch.where(total > 0, wm / total.clamp_min(torch.finfo(w.dtype).tiny), fallback)


class Accounting(NamedTuple):
    """Per-period results of ``account``; leading dims as the broadcast of w and g."""

    log_growth: Tensor  # [..., T] net log growth of wealth per period: log(1 - cost) + log(w . g)
    turnover: Tensor  # [..., T] sum over non-cash assets of |w_t - pre_trade_t| (smoothed when smooth_eps is set)
    cost: Tensor  # [..., T] fee paid at the trade at t, fraction of wealth: cost_rate * turnover
    pre_trade: Tensor  # [..., T, A] holdings just before the trade at t; pre_trade[..., 0, :] = initial
    post_drift: Tensor  # [..., T, A] holdings at the end of period t (drift(w_t, g_t)); the fill-time holdings of t+1


def account(w: Tensor, g: Tensor, initial: Tensor, cost_rate: float | Tensor, include_cash: bool,
            smooth_eps: float | Tensor | None = None, tradeable: Tensor | None = None) -> Accounting:
    """Exact accounting of a path of target weights.

    w: [..., T, A] target weights (on the simplex) for each decision; g: [..., T, A] gross growth of each decision
    (``decision_growth``), broadcastable against w; initial: [..., A] holdings before the first trade, used as
    given (not drifted): ``initial_holdings`` means "start from cash". cost_rate: one-way fee fraction.
    smooth_eps: None for exact |x| (evaluation, backtests); a positive value for the smoothed training cost, which
    then undercharges by at most ``smooth_eps`` per non-cash asset per period and charges exactly 0 for no trade.

    Period t: cost_t = cost_rate * sum_{i non-cash} |w_t,i - pre_t,i| and log growth log(1 - cost_t) + log(w_t . g_t).
    Outputs at period t depend on w and g only up to t. Valid while cost_t < 1 (always when cost_rate < 0.5).

    tradeable: bool [..., T, A] (``tradeable_columns`` of the market's causal mask at each decision bar), or None for
    every column everywhere. Targets are first restricted to it (``restrict_to_tradeable``), so a holding in an
    asset that stops being tradeable is sold at the fill, paying the fee like any trade. On a union calendar an
    asset's prices are held at its last close after its last print, so it is sold at that last price; its growth on
    untradeable rows is never used (its weight there is exactly 0).
    """
    if tradeable is not None:
        w = restrict_to_tradeable(w, tradeable, include_cash)
    wg = w * g
    gross = wg.sum(dim=-1)
    post_drift = wg / gross.unsqueeze(-1)
    first = torch.broadcast_to(initial, post_drift.shape[:-2] + post_drift.shape[-1:]).unsqueeze(-2)
    pre_trade = torch.cat([first, post_drift[..., :-1, :]], dim=-2)
    # Cash is the last column, so slicing it off is the fee mask without a multiply over the whole tensor.
    n_risky = w.shape[-1] - 1 if include_cash else w.shape[-1]
    trade = torch.broadcast_to(w, pre_trade.shape)[..., :n_risky] - pre_trade[..., :n_risky]
    traded = trade.abs() if smooth_eps is None else smooth_abs(trade, smooth_eps)
    turnover = traded.sum(dim=-1)
    cost = cost_rate * turnover
    log_growth = torch.log1p(-cost) + torch.log(gross)
    return Accounting(log_growth, turnover, cost, pre_trade, post_drift)


def log_wealth(log_growth: Tensor) -> Tensor:
    """[..., T] per-period log growth -> [..., T + 1] log wealth, starting at W_{-1} = 0 (wealth 1)."""
    zero = torch.zeros(log_growth.shape[:-1] + (1,), device=log_growth.device, dtype=log_growth.dtype)
    return torch.cat([zero, torch.cumsum(log_growth, dim=-1)], dim=-1)


def smooth_running_max(x: Tensor, temperature: float | Tensor) -> Tensor:
    """Smooth running maximum over the last dim: temperature * logcumsumexp(x / temperature).

    For n = index + 1 values seen so far: running_max <= result <= running_max + temperature * log(n).
    """
    return temperature * torch.logcumsumexp(x / temperature, dim=-1)


def smooth_max_drawdown(log_growth: Tensor, temperature: float | Tensor) -> Tensor:
    """Differentiable maximum drawdown of log wealth, [..., T] -> [...], in log units.

    With W the log wealth path including W_{-1} = 0, the running maximum and the max over time are both replaced by
    temperature * log-sum-exp. The result is an upper bound: 0 <= smooth - max_drawdown <= 2 * temperature *
    log(T + 1), so it tends to the exact value as the temperature goes to 0.
    """
    w_path = log_wealth(log_growth)
    under = smooth_running_max(w_path, temperature) - w_path
    return temperature * torch.logsumexp(under / temperature, dim=-1)


def max_drawdown(log_growth: Tensor) -> Tensor:
    """Exact maximum drawdown in log units, [..., T] -> [...]: max_t (max_{s<=t} W_s - W_t), with W_{-1} = 0."""
    w_path = log_wealth(log_growth)
    return (torch.cummax(w_path, dim=-1).values - w_path).amax(dim=-1)


def max_drawdown_fraction(log_growth: Tensor) -> Tensor:
    """Exact maximum drawdown as a fraction of wealth, [..., T] -> [...]: 1 - min_t(wealth_t / running max wealth).

    Equals 1 - exp(-max_drawdown(log_growth)); initial wealth 1 counts as a peak.
    """
    return -torch.expm1(-max_drawdown(log_growth))


def objective(log_growth: Tensor, risk_aversion: float | Tensor, drawdown_lambda: float | Tensor,
              drawdown_temperature: float | Tensor) -> Tensor:
    """Per-path training objective to maximise, [..., T] -> [...], in log growth per window.

    sum_t r_t - risk_aversion * T * var_t(r) - drawdown_lambda * smooth_max_drawdown(r), with r the per-bar net log
    growth and var the population variance over the window (so T * var = sum_t (r_t - mean r)^2, the window's log
    growth variance if bars were independent). Terms whose weight is a Python 0 are skipped.
    """
    total = log_growth.sum(dim=-1)
    if not (isinstance(risk_aversion, (int, float)) and risk_aversion == 0):
        centred = log_growth - log_growth.mean(dim=-1, keepdim=True)
        total = total - risk_aversion * (centred * centred).sum(dim=-1)
    if not (isinstance(drawdown_lambda, (int, float)) and drawdown_lambda == 0):
        total = total - drawdown_lambda * smooth_max_drawdown(log_growth, drawdown_temperature)
    return total


def env_objective(w: Tensor, g: Tensor, initial: Tensor, cfg: EnvConfig, smooth: bool,
                  training: bool = False, tradeable: Tensor | None = None) -> tuple[Tensor, Accounting]:
    """``account`` then ``objective`` with the costs and risk terms of ``cfg``.

    smooth=True uses ``cfg.smooth_abs_eps`` for the turnover cost (the pathwise term); False is exact. training=True
    charges the training fee ``cfg.train_cost_rate`` (rewards and pathwise term), False the real one (validation,
    backtests). ``tradeable`` as in ``account``. Returns the per-path objective [...] and the Accounting.
    """
    rate = cfg.train_cost_rate if training else cfg.cost_rate
    acc = account(w, g, initial, rate, cfg.include_cash, cfg.smooth_abs_eps if smooth else None, tradeable)
    value = objective(acc.log_growth, cfg.risk_aversion, cfg.drawdown_lambda, cfg.drawdown_temperature)
    return value, acc
