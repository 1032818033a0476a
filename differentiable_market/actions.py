"""Actions: how a decision becomes a trade.

The policy's Dirichlet sample (or mean) ``u_t`` is its *target*. The action design (``PolicyConfig.action``) turns
the target into the weights held after the fill, ``w_t``, which ``env.account`` then accounts like any other weights
(one fee model, one drift):

- ``target``: trade to the target in full at every decision, ``w_t = u_t`` (the first design; old checkpoints).
- ``partial``: move a learned fraction ``r`` of the way from the holdings to the target, ``h_t + r (u_t - h_t)``.
  Partial rebalancing toward an aim portfolio is the classic answer to trading costs: it damps the target's jitter
  (turnover scales with ``r``) while a persistent view is still reached in ``1 / r`` bars.
- ``band``: a no-trade band around the target: the holdings move to the nearest point (Euclidean) of the band
  ``{w on the simplex : |w - u| <= b}`` with half-width ``b = beta / A_out`` (``beta`` learned, in (0, 1), so the
  band is a fraction of equal weight in any universe). Holdings already inside the band are not traded at all (the
  shape of the optimal policy under proportional costs).

``r`` and ``beta`` are one learned scalar per policy, ``sigmoid(ACTION_SCALE * action_param)``; ``ACTION_SCALE``
lets AdamW's per-step moves of about ``lr`` shift the logit usefully within a short run.

Timing. ``h_t`` are the holdings known when the decision is made (drifted to the close of bar t, what the policy is
shown); ``p_t`` are the holdings at the fill (``Accounting.pre_trade``). In ``close`` execution they are the same.
In ``open`` execution the cost-aware actions fix the *trade* at the decision, ``a_t - h_t`` with ``a_t`` the action's
desired weights, and apply it at the fill: ``w_t = normalise(max(p_t + a_t - h_t, 0))``, so a decision not to trade
costs exactly nothing and nothing about the next open is used. ``target`` keeps its first meaning (hold exactly
``u_t`` after the fill).

``rebalance_every`` N (``EnvConfig``): only bars 0, N, 2N, ... of a path (counted from its first decision) trade;
on the others ``w_t = p_t``, the holdings drift. Everything is differentiable in ``u``, ``r``/``beta`` and the
holdings, so the pathwise gradient sees the cost of every trade; GRPO's log-probabilities are those of the sampled
target ``u``, which stay exact Dirichlet densities.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from .config import Action
from .env import drift, restrict_to_tradeable

ACTION_SCALE = 10.0
INITIAL_STRENGTH = {"partial": 0.5, "band": 0.25}  # r and beta of an untrained policy


def initial_param(action: Action) -> float:
    """The ``action_param`` whose strength is ``INITIAL_STRENGTH[action]``."""
    s = INITIAL_STRENGTH[action]
    return float(torch.logit(torch.tensor(s, dtype=torch.float64))) / ACTION_SCALE


def strength(param: Tensor) -> Tensor:
    """r (partial) or beta (band) in (0, 1) from the learned parameter."""
    return torch.sigmoid(ACTION_SCALE * param)


def desired(action: Action, u: Tensor, h: Tensor, s: Tensor | None, cash_excess: bool = False) -> Tensor:
    """The weights the action aims to hold after the trade, [..., A], from target ``u`` and holdings ``h``. With
    ``cash_excess`` (the last column is cash, targets from ``excess_cash``) the band keeps no more cash than the
    target's: holding cash above it is never inside the no-trade zone, so a window that starts all cash is invested
    at its first decision."""
    if action == "partial":
        return h + s * (u - h)
    if action == "band":
        b = s / u.shape[-1]
        hi = u + b
        if cash_excess:
            hi = torch.cat([hi[..., :-1], u[..., -1:]], dim=-1)
        return band_projection(h, (u - b).clamp_min(0.0), hi)
    return u


def excess_cash(u: Tensor) -> Tensor:
    """Targets [..., A + 1] (cash last) from Dirichlet weights ``u`` on the simplex: cash gets its weight in excess
    of the uniform share ``c0 = 1 / n`` of the ``n`` columns it may hold (the positive ones: a Dirichlet's weights
    are positive where tradeable, zero elsewhere), rescaled to [0, 1], ``(c - c0)^+ / (1 - c0)``; the assets keep
    their relative weights and share the rest.

    So a policy at its flat start holds no cash, exactly equal weight over the assets (the benchmark), and can still
    move wholly to cash (c = 1). Piecewise linear in ``u``: the pathwise gradient reaches the cash weight wherever
    it is above its uniform share. Only the fill uses it; the sampled ``u`` keep their exact Dirichlet densities."""
    n = (u > 0).sum(-1, keepdim=True).to(u.dtype)
    c0 = 1.0 / n
    cash = u[..., -1:]
    held_cash = torch.where(n > 1, ((cash - c0) / (1.0 - c0).clamp_min(1e-12)).clamp_min(0.0), torch.ones_like(cash))
    assets = u[..., :-1]
    scale = (1.0 - held_cash) / assets.sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.cat([assets * scale, held_cash], dim=-1)


NEWTON_ITERATIONS = 16  # safeguarded Newton steps of the band's shift before a row falls back to sorting
NEWTON_MIN_COLUMNS = 8  # up to this many columns the sort is as cheap as the compiled Newton loop (Intel Xeon,
# 640 rows x 5 columns: 0.13-0.14 ms sorted, 0.05-0.15 ms Newton; x 9: 0.22-0.25 against 0.07-0.18; x 33: 0.63-0.70
# against 0.15-0.20), and Newton can need many steps where few coordinates are free (holdings far from a narrow band)


def band_projection(h: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """The point of the band {w : lo <= w <= hi, sum w = 1} nearest to ``h`` (Euclidean), [..., A].

    It is ``clamp(h + lam, lo, hi)`` for the shift ``lam`` that makes it sum to 1, so holdings already in the band
    (and on the simplex) are returned unchanged: no trade at all. f(lam) = sum clamp(h + lam, lo, hi) is piecewise
    linear and nondecreasing, so Newton's step from any lam is exact once lam lies on the root's linear piece.
    ``lam`` is found without gradient by safeguarded Newton steps from lam = 0 (``_newton_shift``, a compiled loop
    per row; holdings inside the band are solved at once) where sorting the 2A knots had cost half of every bar of
    the rollout loop on CPU at 257 columns. Rows of up to ``NEWTON_MIN_COLUMNS`` columns, a row still unsolved after
    ``NEWTON_ITERATIONS`` steps, a GPU and ``torch.compile`` take the exact crossing from the sorted knots
    (``_sorted_shift``, O(A log A)): the Newton loop runs on the host, and a GPU sorts 640 x 2,050 knots in 0.5 ms.
    With gradient, ``lam`` is recomputed from the coordinates it leaves free, so the result sums to 1 to rounding.
    Needs sum lo <= 1 <= sum hi.
    """
    with torch.no_grad():
        if h.shape[-1] > NEWTON_MIN_COLUMNS and h.device.type == "cpu" and not torch.compiler.is_compiling():
            lam = _newton_shift(h, lo, hi)
        else:  # narrow rows sort cheaply; no host syncs on a GPU (sort 2-4x faster there) or in a compiled graph
            lam = _sorted_shift(h, lo, hi)
    if not (torch.is_grad_enabled() and any(x.requires_grad for x in (h, lo, hi))):
        return torch.clamp(h + lam, lo, hi)  # the rollout loop: lam is exact, nothing to differentiate
    with torch.no_grad():
        shifted = h + lam
        below, above = shifted <= lo, shifted >= hi
        free = ~(below | above)
    fixed = torch.where(below, lo, hi)
    n_free = free.sum(-1, keepdim=True)
    lam_grad = (1.0 - torch.where(free, 0.0, fixed).sum(-1, keepdim=True)
                - torch.where(free, h, 0.0).sum(-1, keepdim=True)) / n_free.clamp_min(1)
    lam_grad = torch.where(n_free > 0, lam_grad, lam)
    return torch.where(free, h + lam_grad, fixed)


def _newton_shift(h: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """The shift ``lam`` [..., 1] of ``band_projection`` (no gradient), on the CPU.

    Newton steps on f(lam) = 1 with the slope f has at lam (the number of free coordinates): a step from lam solves
    f = 1 on lam's linear piece (the coordinates lam holds at lo, frees and holds at hi), so a row is solved, exactly,
    once its step leaves the same coordinates below, free and above as the lam it came from (the projection's
    optimality conditions). Steps are kept inside the bracket of the values seen so far (a bisection step when Newton
    would leave it or f is flat); a row unsolved after ``NEWTON_ITERATIONS`` takes the crossing from its sorted knots.

    Each row's steps are one compiled loop (``_newton_rows``): the rollout loop calls this once per bar, and as torch
    operations each step had been a dozen passes over [rows, A] and a host sync (at 256 assets 0.52 s of a 2.9 s
    training step, half of it in the rollout loop, the rest in the pathwise objective's path). The rows run in
    float64 whatever the dtype: a row's sum then runs in order without losing the digits a Newton step needs (in
    float32, a sequential sum over 257 columns left the projection 4e-6 off the simplex).
    """
    h, lo, hi = torch.broadcast_tensors(h.detach(), lo.detach(), hi.detach())
    shape, dtype = h.shape, h.dtype
    read = dtype if dtype in (torch.float32, torch.float64) else torch.float64  # what NumPy can hand the loop
    rows = [x.reshape(-1, shape[-1]).to(read).contiguous() for x in (h, lo, hi)]
    lam = torch.empty(rows[0].shape[0], 1, dtype=torch.float64)
    solved = np.empty(lam.shape[0], dtype=np.bool_)
    _newton_rows(*(x.numpy() for x in rows), NEWTON_ITERATIONS, lam.numpy()[:, 0], solved)
    if not solved.all():
        left = torch.from_numpy(~solved)
        lam[left] = _sorted_shift(*(x[left].double() for x in rows))
    return lam.to(dtype).reshape(*shape[:-1], 1)


@njit(cache=True, nogil=True, error_model="numpy")
def _newton_rows(h: np.ndarray, lo: np.ndarray, hi: np.ndarray, iterations: int, lam_out: np.ndarray,
                 solved_out: np.ndarray) -> None:
    """``_newton_shift``'s steps for each row of h, lo, hi [N, A] (float32 or float64, each value read as float64):
    the shift into ``lam_out`` [N], and whether the row was solved within ``iterations`` steps into ``solved_out``
    (an unsolved row's shift is left to the caller). The loop over a row's columns has no branch (the sides are
    compared with bitwise operations), so the compiler vectorises it."""
    n, a = h.shape
    free_before = np.empty(a, dtype=np.bool_)
    below_before = np.empty(a, dtype=np.bool_)
    for i in range(n):
        h_i, lo_i, hi_i = h[i], lo[i], hi[i]
        left = np.float64(lo_i[0]) - np.float64(h_i[0])  # f(left) <= 1 <= f(right)
        right = np.float64(hi_i[0]) - np.float64(h_i[0])
        for j in range(1, a):
            left = min(left, np.float64(lo_i[j]) - np.float64(h_i[j]))
            right = max(right, np.float64(hi_i[j]) - np.float64(h_i[j]))
        lam = 0.0
        newton = False
        solved = False
        for k in range(iterations):
            f = 0.0
            n_free = 0
            changed = 0
            for j in range(a):
                shifted = np.float64(h_i[j]) + lam
                lower = np.float64(lo_i[j])
                clamped = min(max(shifted, lower), np.float64(hi_i[j]))
                free, below = clamped == shifted, shifted < lower
                changed += (free != free_before[j]) | (below != below_before[j])
                free_before[j] = free
                below_before[j] = below
                f += clamped
                n_free += free
            if k > 0 and newton and changed == 0:  # the last step kept every coordinate's side: it was exact
                solved = True
                break
            if f < 1.0:
                left = max(left, lam)
            if f > 1.0:
                right = min(right, lam)
            step = lam + (1.0 - f) / max(n_free, 1)
            newton = n_free > 0 and left <= step <= right
            lam = step if newton else 0.5 * (left + right)
        lam_out[i] = lam
        solved_out[i] = solved


def _sorted_shift(h: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """The exact crossing of f(lam) = 1 from the sorted knots lo - h and hi - h of the piecewise linear f, [..., 1]."""
    n = h.shape[-1]
    knots, order = torch.sort(torch.cat([lo - h, hi - h], -1), dim=-1)
    steps = torch.cat([torch.ones_like(h), -torch.ones_like(h)], -1).gather(-1, order)
    slope = torch.cumsum(steps, -1)  # free coordinates just right of each knot
    f_knots = lo.sum(-1, keepdim=True) + torch.cat(
        [torch.zeros_like(knots[..., :1]), torch.cumsum(slope[..., :-1] * knots.diff(dim=-1), -1)], -1)
    k = ((f_knots <= 1.0).sum(-1, keepdim=True) - 1).clamp(0, 2 * n - 1)
    return knots.gather(-1, k) + (1.0 - f_knots.gather(-1, k)) / slope.gather(-1, k).clamp_min(1.0)


def fill(action: Action, u: Tensor, h: Tensor, p: Tensor, s: Tensor | None, cash_excess: bool = False) -> Tensor:
    """Weights held after the fill [..., A]: the target for ``target``; otherwise the decided trade applied to the
    holdings at the fill ``p`` (equal to ``desired`` when ``p`` is ``h``). The target is ``u``, or
    ``excess_cash(u)`` with ``cash_excess`` (a policy whose cash target is its excess share)."""
    if cash_excess:
        u = excess_cash(u)
    if action == "target":
        return u
    a = desired(action, u, h, s, cash_excess)
    # Normalised also when p is h: a start from nothing (no cash column, zero holdings) is off the simplex.
    w = a if p is h else (p + (a - h)).clamp_min(0.0)
    return w / w.sum(-1, keepdim=True)


def needs_loop(action: Action, rebalance_every: int) -> bool:
    """Whether the held weights depend on the path (anything but full targets at every bar)."""
    return action != "target" or rebalance_every > 1


def execute_path(action: Action, u: Tensor, growth: Tensor, observed: Tensor, initial: Tensor, s: Tensor | None,
                 rebalance_every: int = 1, tradeable: Tensor | None = None, include_cash: bool = True,
                 cash_excess: bool = False) -> Tensor:
    """Weights held after each fill [..., T, A] for targets ``u`` [..., T, A], differentiable in every input.

    growth: each decision's accounting growth (``env.decision_growth``), which drifts the holdings to the next fill;
    observed: its growth to the next decision (``env.observed_growth``), which drifts what the next decision knows;
    both broadcastable against ``u``. initial: [..., A] holdings before the first decision. tradeable: bool
    [..., T, A] (``env.tradeable_columns``) or None: each fill is restricted to it as ``env.account`` restricts it,
    so the holdings carried to the next bar are the accounted ones (``include_cash`` says whether the last column
    is cash, where a fill with nothing tradeable left goes). ``cash_excess``: as in ``fill``.
    """
    if not needs_loop(action, rebalance_every):
        return excess_cash(u) if cash_excess else u
    p = h = torch.broadcast_to(initial, u.shape[:-2] + u.shape[-1:]).to(u.dtype)
    same = growth is observed
    # Bars by unbind, not by indexing: indexing's backward writes each bar's gradient into a zeroed tensor the size of
    # the whole path and adds it up (T such tensors: 1.4-4 s of a 256-asset training step on 2 cores); unbind's is
    # one stack.
    targets, grown, seen = u.unbind(-2), growth.unbind(-2), observed.unbind(-2)
    masks = None if tradeable is None else tradeable.unbind(-2)
    out = []
    for t in range(u.shape[-2]):
        w = fill(action, targets[t], h, p, s, cash_excess) if t % rebalance_every == 0 else p
        if masks is not None:
            w = restrict_to_tradeable(w, masks[t], include_cash)
        out.append(w)
        p = drift(w, grown[t])
        h = p if same else drift(w, seen[t])
    return torch.stack(out, dim=-2)


def decision_mask(n_bars: int, rebalance_every: int, device: torch.device | None = None) -> Tensor:
    """[T] float: 1 on the bars of a path that trade (0, N, 2N, ...), 0 on the others."""
    return (torch.arange(n_bars, device=device) % rebalance_every == 0).float()
