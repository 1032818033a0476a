"""Closed-form Dirichlet log-density, entropy and KL, written as plain tensor math so they compile cleanly.

All functions take concentrations ``alpha`` [..., K] in float32 or float64 and reduce over the last axis.

``masked_log_prob_entropy_kl`` is the same on a subset of the K components per row (the tradeable assets of a union
calendar): the Dirichlet of the components where ``mask`` is True, exact, with the others' weights exactly 0.
"""

from __future__ import annotations

import torch

from . import special
from .chunks import row_chunks


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
    alpha: torch.Tensor, w: torch.Tensor, beta: torch.Tensor, keep_score: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log_prob(alpha, w)``, ``entropy(alpha)`` and ``kl_divergence(alpha, beta)`` sharing their lgamma and
    digamma terms (the trainer needs all three on the same large tensors).

    Differentiable in ``alpha`` only (the sampled ``w`` and the reference ``beta`` are data), by a closed-form
    backward (``_ScoreTerms``) that keeps nothing but its inputs: autograd through the formulas would save five
    tensors the size of ``alpha`` (2 GB of a step at 1,024 assets) and walk each of them again. With ``keep_score``
    it also keeps the forward's log w - digamma(alpha), one tensor the size of alpha, so the backward evaluates only
    trigamma per component, not digamma and log again (the same bits). Digamma and trigamma of float32 CPU tensors are
    ``special.py``'s compiled loops (4x and 1.7x faster than torch's, as accurate); float64 keeps torch's."""
    if w.requires_grad or beta.requires_grad:
        return _terms(alpha, w, beta, None)
    return _ScoreTerms.apply(alpha, w, beta, None, keep_score)


def masked_log_prob_entropy_kl(
    alpha: torch.Tensor, w: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor, keep_score: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log_prob_entropy_kl`` of the Dirichlet over the components where ``mask`` (bool, broadcastable against
    alpha) is True: each sum runs over those components only, and K is their count per row. ``w`` must be 0 off the
    mask (it is never read there); alpha and beta there are ignored but must be positive and finite (a policy's
    concentrations always are). A row with one component is a point mass: log-prob, entropy and KL 0."""
    if w.requires_grad or beta.requires_grad:
        return _terms(alpha, w, beta, mask)
    return _ScoreTerms.apply(alpha, w, beta, mask, keep_score)


def _terms(alpha: torch.Tensor, w: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor | None,
           score: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three terms as plain tensor math, over the components where ``mask`` is True (all when None); with
    ``score``, log w - digamma(alpha) is written into it (alpha and w broadcast; what ``_terms_grad`` needs)."""
    m = None if mask is None else mask.to(alpha.dtype)

    def total(x: torch.Tensor) -> torch.Tensor:
        return (x if m is None else x * m).sum(-1)

    a0 = total(alpha)
    k = torch.full_like(a0, alpha.shape[-1]) if m is None else m.sum(-1).expand_as(a0)
    lgamma_a0 = torch.lgamma(a0)
    sum_lgamma_a = total(torch.lgamma(alpha))
    digamma_a = special.digamma(alpha)
    digamma_a0 = special.digamma(a0)
    log_w = torch.log(w if mask is None else torch.where(mask, w, torch.ones((), dtype=w.dtype, device=w.device)))
    lp = lgamma_a0 - sum_lgamma_a + total((alpha - 1.0) * log_w)
    if score is not None:
        torch.sub(log_w, digamma_a, out=score)
    ent = sum_lgamma_a - lgamma_a0 + (a0 - k) * digamma_a0 - total((alpha - 1.0) * digamma_a)
    kl = (
        lgamma_a0
        - sum_lgamma_a
        - torch.lgamma(total(beta))
        + total(torch.lgamma(beta))
        + total((alpha - beta) * (digamma_a - digamma_a0[..., None]))
    )
    return lp, ent, kl


class _ScoreTerms(torch.autograd.Function):
    """log-prob, entropy and KL of ``_terms`` with their gradient in alpha in closed form. With psi the digamma,
    psi1 the trigamma, a0 = sum alpha, b0 = sum beta and K the component count (sums over the mask):

        d lp / d alpha_i  = psi(a0) - psi(alpha_i) + log w_i
        d ent / d alpha_i = (a0 - K) psi1(a0) - (alpha_i - 1) psi1(alpha_i)
        d kl / d alpha_i  = (alpha_i - beta_i) psi1(alpha_i) - (a0 - b0) psi1(a0)

    (0 off the mask). The backward recomputes psi1 of alpha from the inputs it keeps, and psi of alpha and log w
    too unless the forward kept log w - psi(alpha) (``keep_score``): the forward's values, computed by the same
    operations on the same chunks, so the same bits either way."""

    @staticmethod
    def forward(ctx, alpha, w, beta, mask, keep_score):  # type: ignore[override]
        score = None
        if keep_score:
            score = torch.empty(torch.broadcast_shapes(alpha.shape, w.shape), dtype=alpha.dtype, device=alpha.device)
        ctx.save_for_backward(alpha, w, beta, mask, score)
        parts = [_terms(*chunk) for chunk in _row_chunks(alpha, (alpha, w, beta, mask, score))]
        return parts[0] if len(parts) == 1 else tuple(torch.cat(x) for x in zip(*parts))

    @staticmethod
    def backward(ctx, g_lp, g_ent, g_kl):  # type: ignore[override]
        alpha, w, beta, mask, score = ctx.saved_tensors
        chunks = _row_chunks(alpha, (alpha, w, beta, mask, g_lp, g_ent, g_kl, score))
        grads = [_terms_grad(*chunk) for chunk in chunks]
        g_alpha = grads[0] if len(grads) == 1 else torch.cat(grads)
        return g_alpha.sum_to_size(alpha.shape), None, None, None, None


ROW_CHUNK_ELEMENTS = 1 << 22  # elements of alpha per chunk of the fused terms: their temporaries stay cache-sized


def _row_chunks(alpha: torch.Tensor, tensors: tuple) -> list[tuple]:
    """``tensors`` cut into chunks of rows (dim 0) of about ``ROW_CHUNK_ELEMENTS`` of ``alpha``; a tensor that is None
    or broadcast along dim 0 is passed whole to every chunk. The elementwise work of the terms then holds one chunk's
    temporaries at a time (each would be the size of alpha: 0.4 GB at 1,024 assets)."""
    n = alpha.shape[0] if alpha.dim() > 1 else 1
    return row_chunks(tensors, n, max(1, ROW_CHUNK_ELEMENTS // max(1, alpha.numel() // n)))


def _terms_grad(alpha, w, beta, mask, g_lp, g_ent, g_kl, score=None) -> torch.Tensor:
    """The gradient of the three terms in alpha (``_ScoreTerms``), in the shape alpha broadcasts to; ``score``: the
    forward's log w - digamma(alpha) (None: computed here)."""
    m = None if mask is None else mask.to(alpha.dtype)

    def total(x: torch.Tensor) -> torch.Tensor:
        return (x if m is None else x * m).sum(-1)

    a0, b0 = total(alpha), total(beta)
    k = alpha.shape[-1] if m is None else m.sum(-1)
    trigamma_a0 = special.trigamma(a0)
    per_row = g_lp * special.digamma(a0) + (g_ent * (a0 - k) - g_kl * (a0 - b0)) * trigamma_a0
    if score is None:
        log_w = torch.log(w if mask is None else torch.where(mask, w, torch.ones((), dtype=w.dtype, device=w.device)))
        score = log_w - special.digamma(alpha)
    g_alpha = (per_row[..., None] + g_lp[..., None] * score
               + special.trigamma(alpha) * (g_kl[..., None] * (alpha - beta) - g_ent[..., None] * (alpha - 1.0)))
    return g_alpha if m is None else g_alpha * m
