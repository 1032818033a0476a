"""Closed-form Dirichlet log-density, entropy and KL, written as plain tensor math so they compile cleanly.

All functions take concentrations ``alpha`` [..., K] in float32 or float64 and reduce over the last axis.
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
