"""Running the policy through a window: sampled rollouts, the mean-action path, and teacher-forced re-scoring.

The held weights make the policy recurrent through the env, so producing a path is a loop over bars; each step is a
few small elementwise ops on [B, R, A] tensors (the GRU has already run once per window, shared by all rollouts).
Once a path exists, the held weights it implies are known, so log-probs, entropies, KL terms and the pathwise
objective are recomputed for all bars at once ("teacher forcing"), with gradients.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .env import drift, initial_holdings
from .policy import DirichletGRUPolicy

SAMPLE_FLOOR = 1e-12  # fp32 Dirichlet samples are kept off exact zero so their log-prob stays finite


class Paths(NamedTuple):
    """Weights chosen and weights held before each decision, both [B, R, T, A_out]."""

    weights: torch.Tensor
    held: torch.Tensor


@torch.no_grad()
def generate_paths(
    policy: DirichletGRUPolicy,
    state_proj: torch.Tensor,
    observed: torch.Tensor,
    n_samples: int,
    with_mean: bool,
    generator: torch.Generator | None,
) -> Paths:
    """Roll the policy through the window.

    state_proj: [B, T, K] head projection of the GRU states; observed: [B, T, A_out] growth of each decision's
    position up to the next decision (``env.observed_growth``), which drifts the holdings the policy is shown.
    Returns ``n_samples`` Dirichlet-sampled paths, followed by the mean-action path when ``with_mean``.
    """
    b, t_len, _ = state_proj.shape
    n_rows = n_samples + int(with_mean)
    held = initial_holdings(policy.n_out, policy.include_cash, state_proj.device).expand(b, n_rows, policy.n_out)
    weights_out = torch.empty(b, n_rows, t_len, policy.n_out, device=state_proj.device)
    held_out = torch.empty_like(weights_out)
    for t in range(t_len):
        alpha = policy.concentrations(state_proj[:, None, t], held)
        parts = []
        if n_samples:
            sample = torch._sample_dirichlet(alpha[:, :n_samples].contiguous(), generator=generator)
            sample = sample.clamp_min(SAMPLE_FLOOR)
            parts.append(sample / sample.sum(-1, keepdim=True))
        if with_mean:
            mean = alpha[:, n_samples:]
            parts.append(mean / mean.sum(-1, keepdim=True))
        w = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        weights_out[:, :, t] = w
        held_out[:, :, t] = held
        held = drift(w, observed[:, None, t])
    return Paths(weights_out, held_out)


def teacher_forced_concentrations(
    policy: DirichletGRUPolicy, state_proj: torch.Tensor, held: torch.Tensor
) -> torch.Tensor:
    """Concentrations [B, R, T, A_out] for every bar at once, given the held weights of existing paths."""
    return policy.concentrations(state_proj[:, None], held)


def mean_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Dirichlet mean, the deterministic action."""
    return alpha / alpha.sum(-1, keepdim=True)


@torch.no_grad()
def deterministic_weights(
    policy: DirichletGRUPolicy,
    features: torch.Tensor,
    observed: torch.Tensor,
    include_cash: bool,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean-action weights [B, T, A_out] for windows of features [B, T, A, F] and observed growth [B, T, A_out].

    Each window starts cold (zero GRU state, all cash), exactly as training windows do.
    """
    if include_cash != policy.include_cash:
        raise ValueError("include_cash must match the policy's output layout")
    state_proj = policy.state_projection(policy.encode(features, autocast_dtype))
    return generate_paths(policy, state_proj, observed, 0, True, None).weights[:, 0]
