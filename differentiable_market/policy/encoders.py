"""Causal sequence encoders of the policy: a minimal GRU computed with a linear scan (default) and ``nn.GRU``.

Both map [B, T, H] inputs to [B, T, H] states; state t depends on inputs 0..t only and starts from zero at t = 0, or
(``forward_from``) continues from the state an earlier piece of the sequence left. The minimal GRU also takes
[B, T, ..., H], every index between dim 1 and the last a sequence of its own.

The minimal GRU (Feng et al. 2024, "Were RNNs all we needed?") takes its gate and candidate from the input alone:

    a_t = 1 - z_t = exp(-MAX_LOG_DECAY * sigmoid(W_z x_t)),   c_t = W_c x_t,   h_t = a_t * h_{t-1} + z_t * c_t.

The recurrence is linear in h, so the matmuls run once over all bars and what remains sequential is elementwise.
On a GPU the whole sequence is one scan of a_t and b_t = z_t * c_t over ``T / SCAN_CHUNK`` chunks: within a chunk
the scan is closed-form, h_t = e^{L_t} * cumsum_k(b_k e^{-L_k}) with L = cumsum(log a); log a >= -MAX_LOG_DECAY, so
e^{-L} stays below e^{SCAN_CHUNK * MAX_LOG_DECAY} and cannot overflow float32. The state can still forget 98% of
itself in one bar. The backward pass is the same scan run backwards in time (``_LinearScan``), rather than autograd
through every cumulative sum and exponential. On the CPU, where all of it is memory-bound, the gates' algebra and
the recurrence are one compiled pass each way (``_GatedRecurrence``, ``kernels.py``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import kernels

SCAN_CHUNK = 16  # bars per closed-form chunk of the scan
MAX_LOG_DECAY = 4.0  # log a_t >= -4: keeps e^{-L} <= e^64 within a chunk (float32 tops out near e^88)


def _scan(log_a: torch.Tensor, b: torch.Tensor, chunk: int, h0: torch.Tensor | None = None) -> torch.Tensor:
    """The forward recurrence over dim 1, in chunks (see the module docstring), from ``h0`` [B, 1, H] (None: zero);
    no autograd bookkeeping needed. ``h0`` enters the first chunk as every later chunk's carry does, so a sequence
    cut into pieces at multiples of ``chunk``, each continued from the last state of the one before, gives the same
    bits as one scan over the whole."""
    bsz, t_len, hidden = b.shape
    n_chunks = -(-t_len // chunk)
    pad = n_chunks * chunk - t_len
    if pad:  # padded bars decay by 1 and add 0; they lie after every real bar and are cut off below
        log_a = F.pad(log_a, (0, 0, 0, pad))
        b = F.pad(b, (0, 0, 0, pad))
    decay = log_a.reshape(bsz, n_chunks, chunk, hidden).cumsum(2).exp_()  # [B, N, C, H] decay since chunk start
    h_bnch = (b.reshape(bsz, n_chunks, chunk, hidden) / decay).cumsum(2).mul_(decay)  # each chunk scanned from 0
    if h0 is not None:
        h_bnch[:, 0].addcmul_(decay[:, 0], h0)
    # Carry each chunk's last state into the next: N sequential multiply-adds on [B, C, H], in place.
    for c in range(1, n_chunks):
        h_bnch[:, c].addcmul_(decay[:, c], h_bnch[:, c - 1, -1:])
    return h_bnch.reshape(bsz, n_chunks * chunk, hidden)[:, :t_len]


class _LinearScan(torch.autograd.Function):
    """Forward and backward are each one chunked scan (the backward runs backwards in time)."""

    @staticmethod
    def forward(ctx, log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None,  # type: ignore[override]
                chunk: int) -> torch.Tensor:
        h = _scan(log_a, b, chunk, h0)
        ctx.save_for_backward(log_a, h, h0)
        ctx.chunk = chunk
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):  # type: ignore[override]
        log_a, h, h0 = ctx.saved_tensors
        # dL/dh_t accumulates through every later state: g_t = grad_h_t + a_{t+1} * g_{t+1}.
        log_a_next = F.pad(log_a[:, 1:], (0, 0, 0, 1))
        g = _scan(log_a_next.flip(1), grad_h.flip(1), ctx.chunk).flip(1)
        h_prev = F.pad(h[:, :-1], (0, 0, 1, 0))
        if h0 is not None:
            h_prev[:, :1] = h0
        a = log_a.exp()
        grad_h0 = g[:, :1] * a[:, :1] if h0 is not None and ctx.needs_input_grad[2] else None
        return g * h_prev * a, g, grad_h0, None


def linear_scan(log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None,
                chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """h_t = exp(log_a_t) * h_{t-1} + b_t with h_{-1} = ``h0`` [B, 1, H] (None: zero), over dim 1 of [B, T, H]
    tensors, by the chunked closed form (``_LinearScan``). ``log_a`` must lie in [-MAX_LOG_DECAY, 0] (guaranteed by
    the caller's parametrisation, not checked here: that would cost a host sync)."""
    return _LinearScan.apply(log_a.contiguous(), b.contiguous(), None if h0 is None else h0.contiguous(), chunk)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class _GatedRecurrence(torch.autograd.Function):
    """The minimal GRU's gates and recurrence on the CPU, from kc = [k, c] (the gate logits and the candidates, one
    linear map's output [N, T, P, 2H]): s = sigmoid(k) and m = expm1(-MAX_LOG_DECAY s) = a - 1 are torch's
    (vectorised transcendentals), the rest one compiled pass each way (``kernels.gated_forward`` / ``_backward``):
    the forward forms a = 1 + m and b = -m c inside the recurrence, and the backward returns the gradient of kc
    directly, so neither a, b, log a nor their gradients are ever whole tensors. Returns the states and a copy of the
    last one (the state a later piece continues from; as a second output its gradient joins the reverse pass instead
    of a slice's zero-filled whole-size gradient)."""

    @staticmethod
    def forward(ctx, kc: torch.Tensor, h0: torch.Tensor | None,  # type: ignore[override]
                hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
        kc = kc.contiguous()  # the loops' layout (a no-op for a matmul's output)
        s = torch.sigmoid(kc[..., :hidden])
        m = torch.mul(s, -MAX_LOG_DECAY).expm1_()
        start = torch.zeros_like(s[:, :1]) if h0 is None else h0.to(s.dtype).contiguous()
        h = torch.empty_like(s)
        kernels.gated_forward(m.numpy(), kc.numpy(), start.numpy(), np.ones(1, dtype=m.numpy().dtype), h.numpy())
        ctx.save_for_backward(kc, s, m, h, start)
        ctx.has_h0 = h0 is not None
        return h, h[:, -1:].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: torch.Tensor, grad_last: torch.Tensor):  # type: ignore[override]
        kc, s, m, h, start = ctx.saved_tensors
        grad_kc, grad_h0 = torch.empty_like(kc), torch.empty_like(start)
        consts = np.array([1.0, MAX_LOG_DECAY], dtype=m.numpy().dtype)
        kernels.gated_backward(s.numpy(), m.numpy(), kc.numpy(), h.numpy(), start.numpy(),
                               grad_h.contiguous().numpy(), grad_last.contiguous().numpy(), consts, grad_kc.numpy(),
                               grad_h0.numpy())
        return grad_kc, grad_h0 if ctx.has_h0 else None, None


def gated_recurrence(kc: torch.Tensor, h0: torch.Tensor | None, hidden: int,
                     fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimal GRU's states [B, T, ..., H] from kc = [k, c] [B, T, ..., 2H] (gate logits, candidates; float32
    or float64), continuing from ``h0`` [B, 1, ..., H] (None: zero): log a = -MAX_LOG_DECAY sigmoid(k), the decay
    a = 1 - z of a GRU gate bounded so the scan is safe, and h_t = a_t h_{t-1} + (1 - a_t) c_t over dim 1. Also
    returns a copy of the last state [B, 1, ..., H]: a view would keep the whole output alive for as long as the state
    is (under gradient checkpointing, until backward).

    ``fused``: the compiled CPU pass (``_GatedRecurrence``) or the gates in torch and the closed-form scan; None picks
    the first on the CPU and the second elsewhere (a GPU, where the closed form's few large kernels suit it)."""
    lead = kc.shape[:-1]
    if fused is None:
        fused = kc.device.type == "cpu"
    if fused:
        start = None if h0 is None else h0.reshape(lead[0], 1, -1, hidden)
        h, last = _GatedRecurrence.apply(kc.reshape(*lead[:2], -1, 2 * hidden), start, hidden)
        return h.reshape(*lead, hidden), last.reshape(lead[0], 1, *lead[2:], hidden)
    log_a = -MAX_LOG_DECAY * torch.sigmoid(kc[..., :hidden])
    b = -torch.expm1(log_a) * kc[..., hidden:]  # z_t * c_t
    flat = (*lead[:2], -1)
    h = linear_scan(log_a.reshape(flat), b.reshape(flat), None if h0 is None else h0.reshape(lead[0], 1, -1))
    h = h.reshape(*lead, hidden)
    return h, h[:, -1:].clone()


class MinGRULayer(nn.Module):
    """One minimal-GRU layer: [B, T, ..., H_in] -> [B, T, ..., H], the recurrence over dim 1 and every index between
    dim 1 and the last a sequence of its own (the cross-sectional policy's [windows, bars, assets, H] tokens)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gate = nn.Linear(input_size, hidden_size)
        self.candidate = nn.Linear(input_size, hidden_size)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """States [B, T, ..., H] from inputs [B, T, ..., H_in], continuing from ``h0`` [B, 1, ..., H] (None: zero)."""
        return self.forward_from(x, h0)[0]

    def forward_from(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` and a copy of the last state [B, 1, ..., H]."""
        # gate and candidate as one linear map: one matmul each way, one read of x
        kc = F.linear(x, torch.cat([self.gate.weight, self.candidate.weight]),
                      torch.cat([self.gate.bias, self.candidate.bias]))
        # The gates and the scan run in float32 even under bf16 autocast: cumulative sums and exponentials need the
        # mantissa.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return gated_recurrence(_at_least_float32(kc), h0, self.hidden_size)


class MinGRUEncoder(nn.Module):
    """Stacked minimal-GRU layers; layers after the first are pre-norm residual blocks. Inputs [B, T, ..., H]: every
    index between dim 1 and the last is a sequence of its own (``per_token``)."""

    per_token = True

    def __init__(self, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MinGRULayer(hidden_size, hidden_size) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(num_layers - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x)[0]

    def forward_from(self, x: torch.Tensor, state: list[torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """States [B, T, H] of inputs [B, T, H] that continue a sequence whose encoding so far left ``state`` (None:
        the sequence starts here), and the state after the last bar (each layer's last scan value [B, 1, H])."""
        # the last states are copies: a view would keep each layer's whole [B, T, H] output alive for as long as the
        # state is (under gradient checkpointing, until backward: about 1 GB of the peak at 1,024 assets)
        h, first = self.layers[0].forward_from(x, None if state is None else state[0])
        last = [first]
        for i, (layer, norm) in enumerate(zip(self.layers[1:], self.norms), start=1):
            y, y_last = layer.forward_from(norm(h), None if state is None else state[i])
            last.append(y_last)
            h = h + y
        return h, last

    def hidden_matrix_names(self, prefix: str) -> set[str]:
        return {f"{prefix}.{n}" for n, p in self.named_parameters() if p.dim() == 2}


class GRUEncoder(nn.Module):
    """``nn.GRU`` (cuDNN / oneDNN kernels), kept for comparison and for checkpoints trained with it. Inputs [B, T, H]
    only."""

    per_token = False

    def __init__(self, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]

    def forward_from(self, x: torch.Tensor, state: list[torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """As ``MinGRUEncoder.forward_from``; the state is the GRU's [layers, B, H] hidden state."""
        out, h_n = self.gru(x, None if state is None else state[0])
        return out, [h_n]

    def hidden_matrix_names(self, prefix: str) -> set[str]:
        return {f"{prefix}.{n}" for n, p in self.named_parameters() if p.dim() == 2}


ENCODERS = {"mingru": MinGRUEncoder, "gru": GRUEncoder}
