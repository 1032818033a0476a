"""The cross-sectional Dirichlet policy: every asset read by the same network, assets mixed at each bar.

Per bar t and asset a (features [B, T, A, F]):

1. a causal sequence encoder with weights shared by all assets reads that asset's own features (the batch is
   windows x assets), giving a state e_{t,a};
2. cash, when traded, is one more token with a learned embedding;
3. the tokens of bar t interact across the cross-section (``PolicyConfig.mixing``): "pool" adds to each token a
   function of itself and of the mean over tokens (a DeepSets layer, linear in the asset count); "attention" adds
   multi-head self-attention over the tokens (quadratic in the asset count);
4. a per-asset head maps that token's state and that asset's held weight (relative to equal weight, ``held x
   A_out``, so equal weight reads 1 in any universe; cash reads its raw weight) to one concentration
   (``PolicyConfig.asset_head``: "mlp", a hidden layer over both; "affine", softplus(a + b h) with a and b read off
   the state, so what is repeated for every rollout and held weight is a few operations per asset).

No weight depends on the asset count or on which asset is which: permuting the assets permutes the concentrations
(cash stays last), and a checkpoint runs on any symbol set with the same feature spec. The encoder reads market
features only, so one pass serves every rollout of a window; held weights enter the head only, as in the flat policy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..chunks import row_chunks
from ..config import PolicyConfig
from .base import DirichletPolicy
from .encoders import ENCODERS
from .head import _ChunkedHead, _head

TOKEN_CHUNK_ELEMENTS = 1 << 24  # activations per chunk of the token pipeline without gradient or when it is
# recomputed (--gradient-checkpointing): 64 MiB of float32


class PooledMixing(nn.Module):
    """h + W_o silu(W_s x + W_c mean_tokens(x)) with x = LayerNorm(h), over tokens [..., N, H]; with ``mask``
    (bool [..., N]) the mean runs over the masked-in tokens only."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.own = nn.Linear(hidden, hidden)
        self.context = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(h)
        if mask is None:
            pooled = x.mean(-2, keepdim=True)
        else:
            m = mask[..., None].to(x.dtype)
            pooled = (x * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp_min(1)
        return h + self.out(F.silu(self.own(x) + self.context(pooled)))


class AttentionMixing(nn.Module):
    """h + W_o MultiHeadSelfAttention(LayerNorm(h)) over tokens [..., N, H]: all tokens of one bar, or with ``mask``
    (bool [..., N]) the masked-in ones as keys (a row with none attends to all; its outputs are never used)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        *lead, n, hidden = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(-1, n, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        keys = None
        if mask is not None:
            keys = mask.reshape(-1, n)
            keys = (keys | ~keys.any(-1, keepdim=True))[:, None, None, :]  # [G, 1, 1, N]
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)  # [G, heads, N, d]
        return h + self.out(mixed.transpose(1, 2).reshape(*lead, n, hidden))


class CrossSectionalPolicy(DirichletPolicy):
    """Maps features [B, T, A, F] and held weights [..., T, A_out] to Dirichlet concentrations [..., T, A_out].

    ``n_assets`` is the universe it is built for (the output layout of evaluation and backtests); the weights fit
    any asset count, and every method takes the count from its inputs, so training may feed windows of a random
    subset of the universe (``TrainConfig.universe_sample``).
    """

    def __init__(self, cfg: PolicyConfig, n_assets: int, n_features: int, include_cash: bool) -> None:
        super().__init__(cfg, n_assets, n_features, include_cash)
        hidden, k = cfg.asset_hidden, cfg.asset_head_hidden
        self.input_proj = nn.Linear(n_features, hidden)
        self.input_norm = nn.LayerNorm(hidden)
        self.encoder = ENCODERS[cfg.encoder](hidden, cfg.num_layers)
        self.cash_token = nn.Parameter(0.02 * torch.randn(hidden)) if include_cash else None
        self.mixing = PooledMixing(hidden) if cfg.mixing == "pool" else AttentionMixing(hidden, cfg.attention_heads)
        if cfg.asset_head == "affine":
            # a and b of softplus(a + b h) from the state; zeroed weights with a = 1, b = 0 start the policy at the
            # mlp head's flat Dirichlet
            self.head_state = nn.Linear(hidden, k)
            self.head_out = nn.Linear(k, 2)
            nn.init.zeros_(self.head_out.weight)
            with torch.no_grad():
                self.head_out.bias.copy_(torch.tensor([1.0, 0.0]))
            self._add_action_param()
        else:
            self._add_head(hidden, k, 1, 1)  # one held weight in, one concentration out, per asset

    def hidden_matrix_names(self) -> set[str]:
        """Names of the 2-D hidden weight matrices (trained with Muon); the rest use AdamW."""
        mixing = {f"mixing.{n}" for n, p in self.mixing.named_parameters() if p.dim() == 2}
        return self.encoder.hidden_matrix_names("encoder") | mixing | {"head_state.weight"}

    def encode(self, features: torch.Tensor, autocast_dtype: torch.dtype | None = None,
               tradeable: torch.Tensor | None = None) -> torch.Tensor:
        """Token states [B, T, A_out, H] (float32) from features [B, T, A, F]; bar t uses bars <= t only. With
        ``tradeable`` (bool [B, T, A], the causal mask), the tokens of untradeable assets are left out of the mixing
        (pooled mean, attention keys); cash always takes part."""
        return self._run(features, autocast_dtype, tradeable, project=False)

    def projection(self, features: torch.Tensor, autocast_dtype: torch.dtype | None = None,
                   tradeable: torch.Tensor | None = None) -> torch.Tensor:
        """``state_projection(encode(...))``; in chunks (without gradient, or recomputed under gradient
        checkpointing) each chunk of bars is projected as it is mixed, so the mixed tokens are not kept whole."""
        return self._run(features, autocast_dtype, tradeable, project=True)

    def _run(self, features: torch.Tensor, autocast_dtype: torch.dtype | None, tradeable: torch.Tensor | None,
             project: bool) -> torch.Tensor:
        b, t, a, f = features.shape
        if f != self.n_features:
            raise ValueError(f"features have {f} columns; this policy was built for {self.n_features}")
        x = features.permute(0, 2, 1, 3).reshape(b * a, t, f)  # every asset is a sequence of its own
        mask = None
        if tradeable is not None:
            mask = tradeable.to(device=x.device, dtype=torch.bool)
            if self.cash_token is not None:
                mask = torch.cat([mask, torch.ones_like(mask[..., :1])], dim=-1)
        enabled = autocast_dtype is not None
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=enabled):
            recompute = self.cfg.gradient_checkpointing and torch.is_grad_enabled()
            if recompute or not torch.is_grad_enabled():
                return self._chunked_tokens(x, (b, a, t), mask, recompute, project)
            h = self._tokens(x, (b, a, t), mask)
        h = _float(h)
        return self.state_projection(h) if project else h

    def _tokens(self, x: torch.Tensor, shape: tuple[int, int, int], mask: torch.Tensor | None) -> torch.Tensor:
        """Mixed token states [B, T, A_out, H] from the per-asset sequences x [B x A, T, F]."""
        b, a, t = shape
        return self._mix(self._with_cash(self._encode_assets(x).reshape(b, a, t, -1).transpose(1, 2)), mask)

    def _chunked_tokens(self, x: torch.Tensor, shape: tuple[int, int, int], mask: torch.Tensor | None,
                        recompute: bool, project: bool) -> torch.Tensor:
        """``_tokens`` with the encoder run in chunks of assets (each asset's sequence is independent) and the
        mixing in chunks of bars (each bar's tokens are), so that what is live at once is a chunk's activations, not
        a dozen [B, T, A, H] tensors (at 1,024 assets over a 2,500-bar history, 0.3 GB each). Used without
        gradient (the reference policy, evaluation) and, with ``recompute``, under gradient checkpointing: every
        per-token activation is then recomputed chunk by chunk in backward, and the step keeps the encoded tokens
        and what the chunks return. With ``project`` each chunk returns its state projection (float32, outside
        autocast, as ``state_projection(encode(...))``), not its [.., H] tokens."""
        b, a, t = shape
        hidden = self.cfg.asset_hidden

        def run(fn, *args):
            return checkpoint(fn, *args, use_reentrant=False) if recompute else fn(*args)

        rows = max(1, TOKEN_CHUNK_ELEMENTS // (t * hidden))
        encoded = torch.cat([run(self._encode_assets, x[i:i + rows]) for i in range(0, x.shape[0], rows)])
        tokens = self._with_cash(encoded.reshape(b, a, t, -1).transpose(1, 2))
        bars = max(1, TOKEN_CHUNK_ELEMENTS // (b * tokens.shape[2] * hidden))
        mix = self._mix_and_project if project else self._mix_to_float
        return torch.cat([run(mix, tokens[:, i:i + bars], None if mask is None else mask[:, i:i + bars])
                          for i in range(0, t, bars)], dim=1)

    def _mix_to_float(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return _float(self._mix(tokens, mask))

    def _mix_and_project(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = _float(self._mix(tokens, mask))
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self.state_projection(h)

    def _encode_assets(self, x: torch.Tensor) -> torch.Tensor:
        """Input layer and encoder over per-asset sequences [N, T, F] -> [N, T, H]."""
        return self.encoder(self.input_norm(self.input_proj(x)))

    def _with_cash(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, A, H] asset tokens, with the cash token appended when cash is traded."""
        if self.cash_token is None:
            return tokens
        b, t, _, hidden = tokens.shape
        return torch.cat([tokens, self.cash_token.to(tokens.dtype).expand(b, t, 1, hidden)], dim=2)

    def _mix(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.mixing(tokens) if mask is None else self.mixing(tokens, mask)

    def state_projection(self, h: torch.Tensor) -> torch.Tensor:
        """What the head needs of the token states [..., A_out, H], computed once per bar and asset: the first
        layer's state part [..., A_out, K] ("mlp"), or a and b of softplus(a + b h) [..., A_out, 2] ("affine")."""
        if self.cfg.asset_head == "affine":
            return self.head_out(F.silu(self.head_state(h)))
        return self.head_state(h)

    def concentrations(self, state_proj: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """Dirichlet concentrations (float32) [..., T, A_out] from the state projection [..., T, A_out, K or 2] and
        the held weights [..., T, A_out] (broadcastable)."""
        return self._alpha(state_proj, held, self._held_scale(held))

    def bar_head(self, state_proj: torch.Tensor, n_rows: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """The head for the rollout loop: ``f(t, held_t)`` maps holdings [n_rows, B, A_out] shown at bar t to
        concentrations [n_rows, B, A_out] (``concentrations`` on bar t of the state projection [B, T, A_out, K])."""
        sp = state_proj.float()
        n_out = sp.shape[-2]
        scale = self._held_scale(torch.empty(n_out, device=sp.device))  # once per window, not once per bar
        return lambda t, held_t: self._alpha(sp[None, :, t], held_t, scale)

    def _held_scale(self, held: torch.Tensor) -> torch.Tensor:
        """Per column of ``held`` [..., A_out]: A_out for an asset, so its held weight relative to equal weight
        reads 1 at equal weight whatever the asset count; 1 for cash, which reads its raw weight (it starts every
        window at 1, and A_out would differ between universes and subsets)."""
        n = held.shape[-1]
        scale = torch.full((n,), float(n), dtype=held.dtype, device=held.device)
        if self.include_cash:
            scale[-1] = 1.0
        return scale

    def _alpha(self, state_proj: torch.Tensor, held: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The head on holdings [..., A_out] scaled by ``scale`` [A_out] (``_held_scale``): the chunked version when
        the leading dims match (teacher forcing, with gradient), the plain one otherwise (the rollout's broadcast
        layout); for the affine head, softplus(a + b h) elementwise (``_AffineHead`` with gradient)."""
        if self.cfg.asset_head == "affine":
            if torch.is_grad_enabled() and state_proj.requires_grad and not held.requires_grad:
                # the scaled holdings are formed chunk by chunk inside: a tensor that size is not kept for backward
                return _AffineHead.apply(state_proj, held, scale, self.cfg.alpha_floor, self.cfg.alpha_max)
            return _affine_alpha(state_proj, held * scale, self.cfg.alpha_floor, self.cfg.alpha_max)
        held_rel = (held * scale)[..., None]
        args = (self.head_held.weight, self.head_out.weight, self.head_out.bias, self.cfg.alpha_floor,
                self.cfg.alpha_max)
        if state_proj.dim() == held_rel.dim() and state_proj.shape[0] == held_rel.shape[0] > 1:
            return _ChunkedHead.apply(state_proj, held_rel, *args)[..., 0]
        return _head(state_proj, held_rel, *args)[..., 0]


def _float(h: torch.Tensor) -> torch.Tensor:
    """Token states as the head reads them: float64 kept, anything else float32."""
    return h if h.dtype == torch.float64 else h.float()


def _affine_alpha(state_proj: torch.Tensor, held_rel: torch.Tensor, floor: float, cap: float) -> torch.Tensor:
    """clamp(softplus(a + b h) + floor, max=cap) in float32 (or float64), a and b the last dim of ``state_proj``."""
    raw = state_proj[..., 0] + state_proj[..., 1] * held_rel
    if raw.dtype not in (torch.float32, torch.float64):
        raw = raw.float()
    return (F.softplus(raw) + floor).clamp(max=cap)


class _AffineHead(torch.autograd.Function):
    """``_affine_alpha`` keeping only its inputs for backward. Teacher-forced scoring evaluates it for every window x
    rollout x bar x asset; autograd would keep three tensors that size (the scaled holdings, the logit and the clamp's
    mask: 1.5 GB of a step at 1,024 assets). The backward recomputes the logit: d alpha / d a = sigmoid(logit) where
    the cap does not bind, and d alpha / d b = that times h."""

    @staticmethod
    def forward(ctx, state_proj, held, scale, floor, cap):  # type: ignore[override]
        ctx.save_for_backward(state_proj, held, scale)
        ctx.floor, ctx.cap = floor, cap
        parts = [_affine_alpha(sp, h * scale, floor, cap) for sp, h in _row_chunks(state_proj, held)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_alpha):  # type: ignore[override]
        state_proj, held, scale = ctx.saved_tensors
        parts = []
        for sp, h, g in _row_chunks(state_proj, held, grad_alpha):
            h = h * scale
            raw = sp[..., 0] + sp[..., 1] * h
            if raw.dtype not in (torch.float32, torch.float64):
                raw = raw.float()
            g_raw = g * torch.sigmoid(raw) * (F.softplus(raw) + ctx.floor < ctx.cap)
            shape = sp.shape[:-1]
            parts.append(torch.stack([g_raw.sum_to_size(shape), (g_raw * h).sum_to_size(shape)], -1))
        g_sp = parts[0] if len(parts) == 1 else torch.cat(parts)
        return g_sp.to(state_proj.dtype), None, None, None, None


HEAD_ROW_ELEMENTS = 1 << 22  # concentrations per chunk of the affine head's teacher-forced pass


def _row_chunks(state_proj: torch.Tensor, *rest: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """``(state_proj, *rest)`` in chunks of rows (dim 0) of about ``HEAD_ROW_ELEMENTS`` concentrations, so the
    head's temporaries are a chunk's, not a tensor per window x rollout x bar x asset each; one chunk when the
    leading dims differ (a broadcast layout)."""
    n = state_proj.shape[0]
    if state_proj.dim() != rest[0].dim() + 1 or any(x.shape[0] != n for x in rest):
        return [(state_proj, *rest)]
    return row_chunks((state_proj, *rest), n, max(1, HEAD_ROW_ELEMENTS // max(1, rest[0].numel() // n)))
