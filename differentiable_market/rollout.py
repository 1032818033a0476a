"""Running the policy through a window: sampled rollouts, the mean-action path, and teacher-forced re-scoring.

The held weights make the policy recurrent through the env, so producing a path is a loop over bars; each step is a
few small ops on [R, B, A] tensors (the encoder has already run once per window, shared by all rollouts).
Once a path exists, the held weights it implies are known, so log-probs, entropies, KL terms and the pathwise
objective are recomputed for all bars at once ("teacher forcing"), with gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from . import actions
from .env import drift, initial_holdings, restrict_to_tradeable, tradeable_columns
from .policy import Policy

SAMPLE_FLOOR = 1e-12  # fp32 Dirichlet samples are kept off exact zero so their log-prob stays finite


class Paths(NamedTuple):
    """Weights held after each fill, holdings shown before each decision, and the policy's targets, each
    [B, R, T, A_out]. ``targets`` are what was sampled (the Dirichlet draws or means); with full targets
    (``action="target"``, every bar) they are the weights themselves."""

    weights: torch.Tensor
    held: torch.Tensor
    targets: torch.Tensor


@torch.no_grad()
def generate_paths(
    policy: Policy,
    state_proj: torch.Tensor,
    observed: torch.Tensor,
    n_samples: int,
    with_mean: bool,
    generator: torch.Generator | None,
    initial: torch.Tensor | None = None,
    growth: torch.Tensor | None = None,
    rebalance_every: int = 1,
    tradeable: torch.Tensor | None = None,
) -> Paths:
    """Roll the policy through the window.

    state_proj: head projection of the encoder states ([B, T, K] flat, [B, T, A_out, K] cross); observed:
    [B, T, A_out] growth of each decision's position up to the next decision (``env.observed_growth``), which drifts
    the holdings the policy is shown; growth: [B, T, A_out] its accounting growth to the next fill
    (``env.decision_growth``), needed when the policy's action or ``rebalance_every`` makes the fill depend on the
    holdings (``actions.needs_loop``; None then means ``observed``, exact in "close" execution).
    Returns ``n_samples`` Dirichlet-sampled paths, followed by the mean-action path when ``with_mean``. ``initial``
    ([A_out] or [B, A_out]) is what is held before the first bar; by default all cash (``initial_holdings``).
    ``tradeable`` (bool [B, T, A_out], ``env.tradeable_columns``; None: every column) restricts each bar's Dirichlet
    to the columns tradeable at it: the Gamma draws and the mean are zeroed off the mask before normalising, which
    samples exactly the Dirichlet of the tradeable subset; the fills are restricted as ``env.account`` restricts them.

    This loop is the one inherently sequential part of training, so each bar is kept to a dozen ops writing into
    preallocated buffers: rows are laid out [T, R, B, A] so that one bar's sampled rows are a contiguous block, the
    policy's ``bar_head`` prepares its per-bar head once, and normalised weights and drifted holdings are written in
    place. The arithmetic is ``policy.concentrations`` and ``actions.fill``, which re-score these paths.
    """
    b, t_len = state_proj.shape[:2]
    n_out = observed.shape[-1]  # a cross-sectional policy may be run on any number of assets
    n_rows = n_samples + int(with_mean)
    device = state_proj.device
    action = policy.cfg.action
    looped = actions.needs_loop(action, rebalance_every)
    cash_excess = policy.cash_excess
    own_weights = looped or cash_excess  # the weights held differ from the targets: a buffer of their own
    obs_tba = observed.transpose(0, 1).contiguous()
    growth_tba = obs_tba if growth is None else growth.transpose(0, 1).to(obs_tba.dtype).contiguous()
    targets = torch.empty(t_len, n_rows, b, n_out, device=device)
    weights = torch.empty_like(targets) if own_weights else targets
    held = torch.empty(t_len + 1, n_rows, b, n_out, device=device)  # held[t]: holdings shown at decision t
    held[0] = initial_holdings(n_out, policy.include_cash, device) if initial is None else initial
    pre = held[0]  # holdings at the fill (differs from held only in "open" execution)
    strength = policy.action_strength()
    alpha_at = policy.bar_head(state_proj, n_rows)
    sample_dirichlet = dirichlet_sampler(generator, device) if n_samples else None
    mask_tba = None if tradeable is None else tradeable.transpose(0, 1).to(device=device, dtype=obs_tba.dtype)
    for t in range(t_len):
        alpha = alpha_at(t, held[t])
        if sample_dirichlet is not None:
            sample = sample_dirichlet(alpha[:n_samples]).clamp_min_(SAMPLE_FLOOR)
            if mask_tba is not None:
                sample = sample * mask_tba[t]
            torch.div(sample, sample.sum(-1, keepdim=True), out=targets[t, :n_samples])
        if with_mean:
            mean = alpha[n_samples:] if mask_tba is None else alpha[n_samples:] * mask_tba[t]
            torch.div(mean, mean.sum(-1, keepdim=True), out=targets[t, n_samples:])
        if looped:
            h_t = held[t]
            if growth is None:
                pre = h_t
            weights[t] = (actions.fill(action, targets[t], h_t, pre, strength, cash_excess) if t % rebalance_every == 0
                          else pre)
            if mask_tba is not None:
                weights[t] = restrict_to_tradeable(weights[t], mask_tba[t] > 0, policy.include_cash)
            if growth is not None:
                pre = drift(weights[t], growth_tba[t])
        elif cash_excess:
            weights[t] = actions.excess_cash(targets[t])
        wg = weights[t] * obs_tba[t]
        torch.div(wg, wg.sum(-1, keepdim=True), out=held[t + 1])

    def out(x: torch.Tensor) -> torch.Tensor:
        return x.permute(2, 1, 0, 3).contiguous()

    w_out = out(weights)
    return Paths(w_out, out(held[:-1]), out(targets) if own_weights else w_out)


def dirichlet_sampler(generator: torch.Generator | None, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function drawing one Dirichlet sample per row of concentrations [..., A], up to normalisation: it returns
    Gamma(alpha) draws, which the caller normalises (and floors) once.

    On CPU the draws come from NumPy's vectorised float32 gamma sampler, seeded by one draw from ``generator`` per
    call of this function (so ``generator``'s state is still all a resumed run needs, and seeded runs stay
    bit-reproducible); it costs about half of torch's per-element CPU sampler in the rollout loop (54 vs 102 us for
    2,048 concentrations on the dev EPYC). On other devices torch samples on the device.
    """
    if device.type != "cpu":
        return lambda alpha: torch._standard_gamma(alpha, generator=generator)
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    rng = np.random.default_rng(seed)
    return lambda alpha: torch.from_numpy(rng.standard_gamma(alpha.numpy(), dtype=np.float32))


def teacher_forced_concentrations(
    policy: Policy, state_proj: torch.Tensor, held: torch.Tensor
) -> torch.Tensor:
    """Concentrations [B, R, T, A_out] for every bar at once, given the held weights of existing paths."""
    return policy.concentrations(state_proj[:, None], held)


def mean_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Dirichlet mean, the deterministic action."""
    return alpha / alpha.sum(-1, keepdim=True)


@torch.no_grad()
def deterministic_weights(
    policy: Policy,
    features: torch.Tensor,
    observed: torch.Tensor,
    include_cash: bool,
    autocast_dtype: torch.dtype | None = None,
    initial: torch.Tensor | None = None,
    growth: torch.Tensor | None = None,
    rebalance_every: int = 1,
    bars: torch.Tensor | None = None,
    tradeable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-action weights held after each fill [B, T, A_out] for windows of features [B, T, A, F] and observed
    growth [B, T, A_out]; ``growth`` and ``rebalance_every`` as in ``generate_paths``.

    With ``bars`` [B, T], ``features`` is the history [T_all, A, F] and the windows are those bars of it, encoded
    as the policy's context says (``window_projection``); without, each window is all the history there is. Each
    window starts holding ``initial`` (default all cash). ``tradeable``: the market's causal mask laid out as
    ``features`` without its last dim ([T_all, A] with ``bars``, else [B, T, A]); None: every asset everywhere.
    """
    if include_cash != policy.include_cash:
        raise ValueError("include_cash must match the policy's output layout")
    state_proj = _projection(policy, features, bars, autocast_dtype, tradeable)
    return generate_paths(policy, state_proj, observed, 0, True, None, initial, growth, rebalance_every,
                          _decision_mask(tradeable, bars, include_cash)).weights[:, 0]


def _decision_mask(tradeable: torch.Tensor | None, bars: torch.Tensor | None,
                   include_cash: bool) -> torch.Tensor | None:
    """The columns [B, T, A_out] each decision may hold, from the asset mask laid out as the features."""
    if tradeable is None:
        return None
    return tradeable_columns(tradeable if bars is None else tradeable[bars], include_cash)


@torch.no_grad()
def ensemble_weights(
    policies: list[Policy],
    features: list[torch.Tensor],
    observed: torch.Tensor,
    initial: torch.Tensor | None = None,
    growth: torch.Tensor | None = None,
    rebalance_every: int = 1,
    bars: torch.Tensor | None = None,
    tradeable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weights [B, T, A_out] of the seed ensemble: one agent whose weights after every fill are the mean of what
    its members' deterministic decisions would fill (their targets, for full targets), each member shown the
    ensemble's own drifted holdings (not the holdings it would have had alone). ``features[m]`` [B, T, A, F] are
    member m's (its own normaliser); ``observed``, ``growth`` and ``rebalance_every`` as in ``generate_paths``;
    ``initial`` what is held before the first bar (default all cash); ``bars`` and ``tradeable`` as in
    ``deterministic_weights`` (the members' means are restricted to the tradeable columns before averaging).
    """
    first = policies[0]
    if any(p.n_out != first.n_out or p.include_cash != first.include_cash for p in policies):
        raise ValueError("ensemble members must trade the same assets with the same cash layout")
    projs = [_projection(p, f, bars, None, tradeable) for p, f in zip(policies, features)]  # [B, T, K_m]
    mask = _decision_mask(tradeable, bars, first.include_cash)
    strengths = [p.action_strength() for p in policies]
    b, t_len, _ = observed.shape
    held = initial_holdings(first.n_out, first.include_cash, observed.device) if initial is None else initial
    held = held.expand(b, first.n_out)
    pre = held
    out = torch.empty(b, t_len, first.n_out, device=observed.device)
    for t in range(t_len):
        if t % rebalance_every:
            out[:, t] = pre
        else:
            alphas = [p.concentrations(sp[:, t], held) for p, sp in zip(policies, projs)]
            if mask is not None:
                alphas = [a * mask[:, t] for a in alphas]
            fills = [actions.fill(p.cfg.action, mean_weights(a), held, pre, s, p.cash_excess)
                     for p, a, s in zip(policies, alphas, strengths)]
            out[:, t] = torch.stack(fills).mean(0)
        if mask is not None:  # on every bar, as ``generate_paths``: a holding left untradeable is sold, not carried
            out[:, t] = restrict_to_tradeable(out[:, t], mask[:, t], first.include_cash)
        held = drift(out[:, t], observed[:, t])
        pre = held if growth is None else drift(out[:, t], growth[:, t].to(out.dtype))
    return out


def _projection(policy: Policy, features: torch.Tensor, bars: torch.Tensor | None,
                autocast_dtype: torch.dtype | None, tradeable: torch.Tensor | None = None) -> torch.Tensor:
    """State projection of windows: of features [B, T, A, F] when ``bars`` is None (each window its own history),
    else of the bars [B, T] of the history [T_all, A, F] (``policy.window_projection``); ``tradeable`` laid out
    as ``features`` without its last dim, or None."""
    if bars is None:
        return policy.projection(features, autocast_dtype, tradeable)
    return policy.window_projection(features, bars, autocast_dtype, tradeable)
