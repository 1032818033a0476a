"""Dirichlet policy: a causal recurrent encoder over market features, a head that also sees the held (drifted) weights.

The encoder (``PolicyConfig.encoder``: the parallel-scan minimal GRU or ``nn.GRU``, see ``encoders.py``) reads market
features only, so one pass serves every rollout of a window; the held weights, which differ
between rollouts, enter the head. Concentrations are floored and capped so sampling and log-prob stay finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import PolicyConfig
from .encoders import GRUEncoder, MinGRUEncoder

ENCODERS = {"mingru": MinGRUEncoder, "gru": GRUEncoder}


class DirichletGRUPolicy(nn.Module):
    """Maps features [B, T, A, F] and held weights [..., T, A_out] to Dirichlet concentrations [..., T, A_out].

    ``A_out`` is the number of assets plus one when a cash asset is traded (cash is the last column).
    """

    def __init__(self, cfg: PolicyConfig, n_assets: int, n_features: int, include_cash: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_assets = n_assets
        self.n_features = n_features
        self.include_cash = include_cash
        self.n_out = n_assets + int(include_cash)
        hidden = cfg.hidden_size
        self.input_proj = nn.Linear(n_assets * n_features, hidden)
        self.input_norm = nn.LayerNorm(hidden)
        self.encoder = ENCODERS[cfg.encoder](hidden, cfg.num_layers)
        self.head_state = nn.Linear(hidden, cfg.head_hidden)
        self.head_held = nn.Linear(self.n_out, cfg.head_hidden, bias=False)
        self.head_out = nn.Linear(cfg.head_hidden, self.n_out)
        # Start near a flat Dirichlet with moderate concentration so early rollouts explore around equal weight.
        nn.init.zeros_(self.head_out.weight)
        nn.init.constant_(self.head_out.bias, 1.0)
        self.register_load_state_dict_pre_hook(_rename_legacy_gru_keys)

    def hidden_matrix_names(self) -> set[str]:
        """Names of the 2-D hidden weight matrices (trained with Muon); the rest use AdamW."""
        return self.encoder.hidden_matrix_names("encoder") | {"head_state.weight"}

    def encode(self, features: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Encoder states [B, T, H] (float32) from features [B, T, A, F]; bar t uses features of bars <= t only."""
        b, t = features.shape[:2]
        x = features.reshape(b, t, self.n_assets * self.n_features)
        enabled = autocast_dtype is not None
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=enabled):
            x = self.input_norm(self.input_proj(x))
            if self.cfg.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(self.encoder, x, use_reentrant=False)
            else:
                h = self.encoder(x)
        return h.float()

    def state_projection(self, h: torch.Tensor) -> torch.Tensor:
        """The held-weights-independent part of the head's first layer, [..., T, K]; computed once per window."""
        return self.head_state(h)

    def concentrations(self, state_proj: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """Dirichlet concentrations (float32) from the state projection and the held weights (broadcastable)."""
        # SiLU, not exact GELU: this build's exact GELU takes a multithreaded path even for 64 elements, and the
        # rollout loop calls the head once per bar.
        if state_proj.dim() == held.dim() and state_proj.shape[0] == held.shape[0] > 1:
            return _ChunkedHead.apply(state_proj, held, self.head_held.weight, self.head_out.weight,
                                      self.head_out.bias, self.cfg.alpha_floor, self.cfg.alpha_max)
        return _head(state_proj, held, self.head_held.weight, self.head_out.weight, self.head_out.bias,
                     self.cfg.alpha_floor, self.cfg.alpha_max)


def _head(state_proj: torch.Tensor, held: torch.Tensor, w_held: torch.Tensor, w_out: torch.Tensor,
          b_out: torch.Tensor, floor: float, cap: float) -> torch.Tensor:
    z = F.silu(state_proj + F.linear(held, w_held))
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
            u = sp + F.linear(h, w_held)
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


def _rename_legacy_gru_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Checkpoints written before encoders were selectable hold ``gru.*``; the GRU now lives at ``encoder.gru.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
        state_dict[prefix + "encoder." + key[len(prefix):]] = state_dict.pop(key)
