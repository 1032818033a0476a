"""Closed-form Dirichlet log-density, entropy and KL, written as plain tensor math so they compile cleanly.

All functions take concentrations ``alpha`` [..., K] in float32 or float64 and reduce over the last axis.

``masked_log_prob_entropy_kl`` is the same on a subset of the K components per row (the tradeable assets of a union
calendar): the Dirichlet of the components where ``mask`` is True, exact, with the others' weights exactly 0.
"""

from __future__ import annotations

import torch


def log_prob(alpha: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log p(w | alpha) for w on the simplex."""
    return (
        torch.lgamma(alpha.sum(-1))
        - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1.0) * torch.log(w)).sum(-1)
    )


def entropy(alpha: torch.Tensor) -> torch.Tensor:
    """Differential entropy of Dirichlet(alpha)."""
    a0 = alpha.sum(-1)
    k = alpha.shape[-1]
    return (
        torch.lgamma(alpha).sum(-1)
        - torch.lgamma(a0)
        + (a0 - k) * torch.digamma(a0)
        - ((alpha - 1.0) * torch.digamma(alpha)).sum(-1)
    )


def kl_divergence(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """KL(Dirichlet(alpha) || Dirichlet(beta))."""
    a0 = alpha.sum(-1)
    return (
        torch.lgamma(a0)
        - torch.lgamma(alpha).sum(-1)
        - torch.lgamma(beta.sum(-1))
        + torch.lgamma(beta).sum(-1)
        + ((alpha - beta) * (torch.digamma(alpha) - torch.digamma(a0)[..., None])).sum(-1)
    )


def log_prob_entropy_kl(
    alpha: torch.Tensor, w: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log_prob(alpha, w)``, ``entropy(alpha)`` and ``kl_divergence(alpha, beta)`` sharing their lgamma and
    digamma terms (the trainer needs all three on the same large tensors)."""
    a0 = alpha.sum(-1)
    k = alpha.shape[-1]
    lgamma_a0 = torch.lgamma(a0)
    sum_lgamma_a = torch.lgamma(alpha).sum(-1)
    digamma_a = torch.digamma(alpha)
    digamma_a0 = torch.digamma(a0)
    lp = lgamma_a0 - sum_lgamma_a + ((alpha - 1.0) * torch.log(w)).sum(-1)
    ent = sum_lgamma_a - lgamma_a0 + (a0 - k) * digamma_a0 - ((alpha - 1.0) * digamma_a).sum(-1)
    kl = (
        lgamma_a0
        - sum_lgamma_a
        - torch.lgamma(beta.sum(-1))
        + torch.lgamma(beta).sum(-1)
        + ((alpha - beta) * (digamma_a - digamma_a0[..., None])).sum(-1)
    )
    return lp, ent, kl


def masked_log_prob_entropy_kl(
    alpha: torch.Tensor, w: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log_prob_entropy_kl`` of the Dirichlet over the components where ``mask`` (bool, broadcastable against
    alpha) is True: each sum runs over those components only, and K is their count per row. ``w`` must be 0 off the
    mask (it is never read there); alpha and beta there are ignored but must be finite. A row with one component is
    a point mass: log-prob, entropy and KL 0."""
    m = mask.to(alpha.dtype)
    a0 = (alpha * m).sum(-1)
    k = m.sum(-1)
    lgamma_a0 = torch.lgamma(a0)
    sum_lgamma_a = (torch.lgamma(alpha) * m).sum(-1)
    digamma_a = torch.digamma(alpha)
    digamma_a0 = torch.digamma(a0)
    log_w = torch.log(torch.where(mask, w, torch.ones((), dtype=w.dtype, device=w.device)))
    lp = lgamma_a0 - sum_lgamma_a + ((alpha - 1.0) * log_w * m).sum(-1)
    ent = sum_lgamma_a - lgamma_a0 + (a0 - k) * digamma_a0 - ((alpha - 1.0) * digamma_a * m).sum(-1)
    kl = (
        lgamma_a0
        - sum_lgamma_a
        - torch.lgamma((beta * m).sum(-1))
        + (torch.lgamma(beta) * m).sum(-1)
        + ((alpha - beta) * (digamma_a - digamma_a0[..., None]) * m).sum(-1)
    )
    return lp, ent, kl
