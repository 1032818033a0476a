"""The cross-sectional Dirichlet policy: every asset read by the same network, assets mixed at each bar.

Per bar t and asset a (features [B, T, A, F]):

1. a causal sequence encoder with weights shared by all assets reads that asset's own features (the batch is
   windows x assets), giving a state e_{t,a};
2. cash, when traded, is one more token with a learned embedding;
3. the tokens of bar t interact across the cross-section (``PolicyConfig.mixing``): "pool" adds to each token a
   function of itself and of the mean over tokens (a DeepSets layer, linear in the asset count); "mean" adds a
   linear map of the mean token, so the head's hidden layer is where each token meets the cross-section (no
   per-token mixing layer); "attention" adds multi-head self-attention over the tokens (quadratic in the asset
   count);
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..chunks import row_chunks
from ..config import PolicyConfig
from . import kernels
from .base import DirichletPolicy
from .encoders import ENCODERS, SCAN_CHUNK
from .head import _ChunkedHead, _head

TOKEN_BLOCK_ELEMENTS = 1 << 20  # per-token activations of one block of bars ([B, bars, A_out, H]) on the CPU: 4 MiB of
# float32, so every activation of the token pipeline is a block's (heap-sized, cache-sized), never a whole history's
GPU_TOKEN_BLOCK_ELEMENTS = 1 << 24  # on a GPU, where a block's cost is its kernel launches: 64 MiB blocks (at 256 assets
# a 2,500-bar history in 4 blocks; the GPU's caching allocator reuses memory anyway)


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
        return h + self.out(F.silu(self.own(x) + self.context(token_mean(x, mask))))


class MeanMixing(nn.Module):
    """h + W_c mean_tokens(h) over tokens [..., N, H] (with ``mask``, the mean of the masked-in tokens): every token
    sees the bar's mean state through one linear map, and the head's hidden layer, which reads the sum, is where own
    state and mean state interact. No per-token layer, so the cross-section costs one read of the tokens per bar; the
    policy folds W_c into the head's first layer (``CrossSectionalPolicy._mean_projection``), so the sum is never
    formed either."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.context = nn.Linear(hidden, hidden, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return h + self.context(token_mean(h, mask))


def token_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over the tokens of [..., N, H], [..., 1, H]; with ``mask`` (bool [..., N]) over the masked-in tokens
    only (a bar with none reads zeros)."""
    if mask is None:
        return x.mean(-2, keepdim=True)
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp_min(1)


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
        self.mixing = {"pool": lambda: PooledMixing(hidden), "mean": lambda: MeanMixing(hidden),
                       "attention": lambda: AttentionMixing(hidden, cfg.attention_heads)}[cfg.mixing]()
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
        """``state_projection(encode(...))``, each block of bars projected as it is mixed, so the mixed tokens are
        never kept whole."""
        return self._run(features, autocast_dtype, tradeable, project=True)

    def _run(self, features: torch.Tensor, autocast_dtype: torch.dtype | None, tradeable: torch.Tensor | None,
             project: bool) -> torch.Tensor:
        """The token pipeline in blocks of bars, the encoder's state carried from each block into the next.

        Every step of the pipeline but the encoder's recurrence is per bar, and the recurrence continues exactly
        from the state the block before left (for the minimal GRU, bit for bit: blocks are whole scan chunks), so a
        block of ``block_bars`` bars is all that is live at once: its activations (a few MiB each) come from the C
        allocator's reused heap, not from fresh pages (heap.py), and stay in cache longer than a whole history's
        (83 MB per activation at 256 assets over 2,500 bars). With gradient, autograd keeps each block's
        activations; under ``--gradient-checkpointing`` each block is recomputed in backward from its inputs and
        the state it started from."""
        b, t, a, f = features.shape
        if f != self.n_features:
            raise ValueError(f"features have {f} columns; this policy was built for {self.n_features}")
        mask = None
        if tradeable is not None:
            mask = tradeable.to(device=features.device, dtype=torch.bool)
            if self.cash_token is not None:
                mask = torch.cat([mask, torch.ones_like(mask[..., :1])], dim=-1)
        bars = self.block_bars(b, a, features.device)
        recompute = self.cfg.gradient_checkpointing and torch.is_grad_enabled()
        enabled = autocast_dtype is not None
        outputs, state = [], ()
        with torch.autocast(device_type=features.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=enabled):
            for t0 in range(0, t, bars):
                args = (features[:, t0:t0 + bars], None if mask is None else mask[:, t0:t0 + bars], project, *state)
                out, *state = checkpoint(self._block, *args, use_reentrant=False) if recompute else self._block(*args)
                outputs.append(out)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    def block_bars(self, windows: int, assets: int, device: torch.device | None = None) -> int:
        """Bars per block of the token pipeline: about ``TOKEN_BLOCK_ELEMENTS`` activations on the CPU (None), else
        ``GPU_TOKEN_BLOCK_ELEMENTS``; a whole number of scan chunks (at least one)."""
        per_bar = windows * (assets + int(self.include_cash)) * self.cfg.asset_hidden
        budget = TOKEN_BLOCK_ELEMENTS if device is None or device.type == "cpu" else GPU_TOKEN_BLOCK_ELEMENTS
        return max(1, budget // (per_bar * SCAN_CHUNK)) * SCAN_CHUNK

    def _block(self, features: torch.Tensor, mask: torch.Tensor | None, project: bool,
               *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One block of bars [B, L, A, F]: its mixed tokens [B, L, A_out, H] as float32 (float64 kept) or, with
        ``project``, their state projection (float32, outside autocast, as ``state_projection(encode(...))``),
        followed by the encoder state after its last bar. ``state``: the state the block before left (none: the
        first block)."""
        b, t, a, f = features.shape
        if self.encoder.per_token:  # every asset a sequence of its own, the tokens kept [B, L, A, H]: no transposes
            h, last = self.encoder.forward_from(self.input_norm(self.input_proj(features)), list(state) or None)
        else:
            x = features.permute(0, 2, 1, 3).reshape(b * a, t, f)
            h, last = self.encoder.forward_from(self.input_norm(self.input_proj(x)), list(state) or None)
            h = h.reshape(b, a, t, -1).transpose(1, 2)
        tokens = self._with_cash(h)
        if project and isinstance(self.mixing, MeanMixing):
            with torch.autocast(device_type=tokens.device.type, enabled=False):
                return (self._mean_projection(_float(tokens), mask), *last)
        mixed = _float(self._mix(tokens, mask))
        if project:
            with torch.autocast(device_type=mixed.device.type, enabled=False):
                mixed = self.state_projection(mixed)
        return (mixed, *last)

    def _mean_projection(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``state_projection(mixing(tokens, mask))`` of ``MeanMixing`` with its map folded into the head's first
        layer: W_s (h + W_c m) + b = W_s h + ((W_s W_c) m + b), the second term once per bar. The mixed tokens are
        never formed and the head's first layer is a matmul without bias; the same function, other rounding."""
        assert isinstance(self.mixing, MeanMixing)
        w = self.head_state.weight
        per_bar = F.linear(token_mean(tokens, mask), w @ self.mixing.context.weight, self.head_state.bias)
        return self._from_first_layer(F.linear(tokens, w).add_(per_bar))

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
        return self._from_first_layer(self.head_state(h))

    def _from_first_layer(self, first: torch.Tensor) -> torch.Tensor:
        """The state projection from the head's first layer's output [..., A_out, K]: that output itself ("mlp"),
        or a and b through SiLU and the output layer ("affine")."""
        if self.cfg.asset_head == "affine":
            return self.head_out(F.silu(first))
        return first

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
        if self.cfg.asset_head != "affine":
            return lambda t, held_t: self._alpha(sp[None, :, t], held_t, scale)
        # a and b as [T, B, A_out] planes, so each bar reads two contiguous blocks (not every other float of one);
        # then ``_affine_alpha``'s operations in its order, the last two in place: the same bits
        a, b = (sp[..., k].transpose(0, 1).contiguous() for k in (0, 1))
        floor, cap = self.cfg.alpha_floor, self.cfg.alpha_max
        return lambda t, held_t: F.softplus(a[t] + b[t] * (held_t * scale)).add_(floor).clamp_(max=cap)

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
            if _fused_head(state_proj, held, scale, self.cfg.alpha_floor, self.cfg.alpha_max):
                # without gradient (the reference's scoring of the rollouts): the same loops, the same bits
                return _fused_alpha(*_planes(state_proj), held, scale, self.cfg.alpha_floor, self.cfg.alpha_max)
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
    the cap does not bind, and d alpha / d b = that times h.

    On the CPU, in the teacher-forced layout (``_fused_head``), the logit and the backward's chain rule and sums over
    rollouts are compiled loops (``kernels.affine_logits`` / ``affine_backward``), the transcendentals torch's: 4
    passes over [windows x rollouts x bars x assets] forward and 3 backward instead of 6 and 12."""

    @staticmethod
    def forward(ctx, state_proj, held, scale, floor, cap):  # type: ignore[override]
        ctx.floor, ctx.cap = floor, cap
        ctx.fused = _fused_head(state_proj, held, scale, floor, cap)
        if ctx.fused:  # the logit written where the output goes, and the rest in place: no temporaries at all
            a, b = _planes(state_proj)
            ctx.save_for_backward(a, b, held, scale)  # the planes, not the projections: split once, not again
            return _fused_alpha(a, b, held, scale, floor, cap)
        ctx.save_for_backward(state_proj, held, scale)
        parts = [_affine_alpha(sp, h * scale, floor, cap) for sp, h in _row_chunks(state_proj, held)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_alpha):  # type: ignore[override]
        if ctx.fused:
            a, b, held, scale = ctx.saved_tensors
            grad_a, grad_b = torch.empty_like(a), torch.empty_like(b)
            consts = np.array([ctx.floor, ctx.cap], dtype=a.numpy().dtype)
            n = held.shape[0]
            step = max(1, HEAD_ROW_ELEMENTS // max(1, held.numel() // n))  # rows per chunk: sigmoid's temporary
            for r0 in range(0, n, step):
                r = slice(r0, r0 + step)
                h, g = held.detach()[r], grad_alpha[r].contiguous()
                sig = _affine_logits(a[r], b[r], h, scale).sigmoid_()
                kernels.affine_backward(a[r].numpy(), b[r].numpy(), h.numpy(), scale.detach().numpy(), g.numpy(),
                                        sig.numpy(), consts, grad_a[r].numpy(), grad_b[r].numpy())
            return torch.stack([grad_a, grad_b], -1)[:, None], None, None, None, None
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


SOFTPLUS_THRESHOLD = 20.0  # F.softplus returns its argument above this (its default threshold)


def _fused_head(state_proj: torch.Tensor, held: torch.Tensor, scale: torch.Tensor, floor: float, cap: float) -> bool:
    """Whether ``_AffineHead`` (and ``concentrations`` without gradient) takes the compiled loops: CPU tensors of one
    float dtype (float32 or float64), the teacher-forced layout (state projections [B, 1, T, A, 2] shared by held
    [B, R, T, A], any strides: the reference scores the sampled rows of the held weights, a slice), and a cap above
    floor + the softplus threshold, where the cap's test on the logit is exact. Never while ``torch.compile`` traces
    (``--compile on``): it cannot trace the loops, and the torch formula it compiles is the same function."""
    return (state_proj.device.type == "cpu" and not torch.compiler.is_compiling()
            and state_proj.dtype == held.dtype == scale.dtype
            and held.dtype in (torch.float32, torch.float64) and state_proj.dim() == 5 and held.dim() == 4
            and state_proj.shape[1] == 1 and state_proj.shape[-1] == 2
            and state_proj.shape[0] == held.shape[0] and state_proj.shape[2:4] == held.shape[2:]
            and scale.is_contiguous()
            and cap > floor + SOFTPLUS_THRESHOLD + 1)


def _planes(state_proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b [B, T, A] of state projections [B, 1, T, A, 2], each contiguous (so the loops read them in order)."""
    sp = state_proj.detach()[:, 0]
    return sp[..., 0].contiguous(), sp[..., 1].contiguous()


def _fused_alpha(a: torch.Tensor, b: torch.Tensor, held: torch.Tensor, scale: torch.Tensor, floor: float,
                 cap: float) -> torch.Tensor:
    """``_affine_alpha`` [N, R, T, A] from the planes a, b [N, T, A] (``_planes``): the logit written where the
    output goes (``_affine_logits``), then softplus, the floor and the cap in place, so no temporaries at all; the
    same operations in the same order, so the same bits."""
    alpha = _affine_logits(a, b, held, scale)
    return torch.ops.aten.softplus.out(alpha, 1, SOFTPLUS_THRESHOLD, out=alpha).add_(floor).clamp_(max=cap)


def _affine_logits(a: torch.Tensor, b: torch.Tensor, held: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """a + b (held * scale) [N, R, T, A] from the planes a, b [N, T, A], by ``kernels.affine_logits``."""
    out = torch.empty_like(held)
    kernels.affine_logits(a.numpy(), b.numpy(), held.detach().numpy(), scale.detach().numpy(), out.numpy())
    return out


HEAD_ROW_ELEMENTS = 1 << 22  # concentrations per chunk of the affine head's teacher-forced pass


def _row_chunks(state_proj: torch.Tensor, *rest: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """``(state_proj, *rest)`` in chunks of rows (dim 0) of about ``HEAD_ROW_ELEMENTS`` concentrations, so the
    head's temporaries are a chunk's, not a tensor per window x rollout x bar x asset each; one chunk when the
    leading dims differ (a broadcast layout)."""
    n = state_proj.shape[0]
    if state_proj.dim() != rest[0].dim() + 1 or any(x.shape[0] != n for x in rest):
        return [(state_proj, *rest)]
    return row_chunks((state_proj, *rest), n, max(1, HEAD_ROW_ELEMENTS // max(1, rest[0].numel() // n)))
