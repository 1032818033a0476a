"""The Dirichlet head shared by both policies: concentrations from a state projection and the held weights.

alpha = clamp(softplus(W_out silu(state_proj + W_held held) + b_out) + floor, max=cap), computed in float32.
The flat policy feeds all held weights to one head ([..., K] -> A_out outputs); the cross-sectional policy feeds
each asset its own held weight ([..., A_out, K] with one input and one output per asset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _held_term(held: torch.Tensor, w_held: torch.Tensor) -> torch.Tensor:
    """W_held held; with one input (the cross-sectional head) a broadcast product, the same numbers as the matmul
    without its [rows, 1] x [1, K] call overhead."""
    return held * w_held[:, 0] if w_held.shape[1] == 1 else F.linear(held, w_held)


def _head(state_proj: torch.Tensor, held: torch.Tensor, w_held: torch.Tensor, w_out: torch.Tensor,
          b_out: torch.Tensor, floor: float, cap: float) -> torch.Tensor:
    z = F.silu(state_proj + _held_term(held, w_held))
    raw = F.linear(z, w_out, b_out)
    if raw.dtype not in (torch.float32, torch.float64):
        raw = raw.float()
    return (F.softplus(raw) + floor).clamp(max=cap)


HEAD_CHUNK_ELEMENTS = 1 << 18  # hidden activations per chunk of the fused head: 1 MiB of float32, cache-sized


class _ChunkedHead(torch.autograd.Function):
    """``_head`` over chunks of the leading dim, keeping no [..., K] activations: backward recomputes them.

    Teacher-forced scoring evaluates the head for every window x rollout x bar at once; its hidden activations
    ([B, R, T, K], 31 MB at the README configuration) would otherwise be written, read and saved for backward
    several times over, and the thin matmuls around them (K x A_out with A_out small) run at memory speed.
    Chunks that fit in cache cut the head's forward+backward by about half on CPU.
    """

    @staticmethod
    def forward(ctx, state_proj, held, w_held, w_out, b_out, floor, cap):  # type: ignore[override]
        rows = max(1, HEAD_CHUNK_ELEMENTS // max(1, held[0].numel() // held.shape[-1] * w_held.shape[0]))
        ctx.save_for_backward(state_proj, held, w_held, w_out, b_out)
        ctx.rows, ctx.floor, ctx.cap = rows, floor, cap
        with torch.no_grad():
            return torch.cat([_head(state_proj[i:i + rows], held[i:i + rows], w_held, w_out, b_out, floor, cap)
                              for i in range(0, held.shape[0], rows)])

    @staticmethod
    def backward(ctx, grad_alpha):  # type: ignore[override]
        state_proj, held, w_held, w_out, b_out = ctx.saved_tensors
        rows = ctx.rows
        g_state = torch.empty_like(state_proj) if ctx.needs_input_grad[0] else None
        g_w_held, g_w_out, g_b_out = torch.zeros_like(w_held), torch.zeros_like(w_out), torch.zeros_like(b_out)
        for i in range(0, held.shape[0], rows):
            sp, h, g = state_proj[i:i + rows], held[i:i + rows], grad_alpha[i:i + rows]
            u = sp + _held_term(h, w_held)
            sig_u = torch.sigmoid(u)
            z = u * sig_u
            raw = F.linear(z, w_out, b_out)
            # d alpha / d raw = sigmoid(raw) where the cap does not bind (softplus' = sigmoid)
            g_raw = g * torch.sigmoid(raw) * (F.softplus(raw) + ctx.floor < ctx.cap)
            g_u = (g_raw @ w_out) * sig_u * (1 + u * (1 - sig_u))  # silu'(u)
            g_w_out += g_raw.flatten(0, -2).t() @ z.flatten(0, -2)
            g_b_out += g_raw.flatten(0, -2).sum(0)
            g_w_held += g_u.flatten(0, -2).t() @ h.expand(*g_u.shape[:-1], h.shape[-1]).flatten(0, -2)
            if g_state is not None:
                g_state[i:i + rows] = g_u.sum_to_size(sp.shape)
        return g_state, None, g_w_held, g_w_out, g_b_out, None, None
