"""Causal sequence encoders of the policy: a minimal GRU computed with a linear scan (default) and ``nn.GRU``.

Both map [B, T, H] inputs to [B, T, H] states; state t depends on inputs 0..t only and starts from zero at t = 0, or
(``forward_from``) continues from the state an earlier piece of the sequence left.

The minimal GRU (Feng et al. 2024, "Were RNNs all we needed?") takes its gate and candidate from the input alone:

    a_t = 1 - z_t = exp(-MAX_LOG_DECAY * sigmoid(W_z x_t)),   c_t = W_c x_t,   h_t = a_t * h_{t-1} + z_t * c_t.

The recurrence is linear in h, so the whole sequence is one scan of a_t = 1 - z_t and b_t = z_t * c_t instead of T
dependent matmuls: the matmuls run once over all bars, and what remains sequential is a handful of elementwise ops
over ``T / SCAN_CHUNK`` chunks. Within a chunk the scan is closed-form, h_t = e^{L_t} * cumsum_k(b_k e^{-L_k}) with
L = cumsum(log a); log a >= -MAX_LOG_DECAY, so e^{-L} stays below e^{SCAN_CHUNK * MAX_LOG_DECAY} and cannot
overflow float32. The state can still forget 98% of itself in one bar. The backward pass is the same scan run
backwards in time (``_LinearScan``), rather than autograd through every cumulative sum and exponential. That is the
route on a GPU; on the CPU, where the recurrence is memory-bound, a compiled loop makes one pass each way
(``_CompiledScan``, ``kernels.py``).
"""

from __future__ import annotations

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


class _CompiledScan(torch.autograd.Function):
    """The recurrence as one compiled pass each way on the CPU (``kernels``); a = exp(log a) is torch's."""

    @staticmethod
    def forward(ctx, log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None,  # type: ignore[override]
                chunk: int) -> torch.Tensor:
        a = log_a.exp()
        start = torch.zeros_like(b[:, :1]) if h0 is None else h0.to(b.dtype)
        h = torch.empty_like(b)
        kernels.recurrence_forward(a.numpy(), b.numpy(), start.numpy(), h.numpy())
        ctx.save_for_backward(a, h, start)
        ctx.has_h0 = h0 is not None
        return h

    @staticmethod
    @once_differentiable  # the loops are not differentiable themselves
    def backward(ctx, grad_h: torch.Tensor):  # type: ignore[override]
        a, h, start = ctx.saved_tensors
        grad_a, grad_b, grad_h0 = torch.empty_like(a), torch.empty_like(a), torch.empty_like(start)
        kernels.recurrence_backward(a.numpy(), h.numpy(), start.numpy(), grad_h.contiguous().numpy(),
                                    grad_a.numpy(), grad_b.numpy(), grad_h0.numpy())
        return grad_a.mul_(a), grad_b, grad_h0 if ctx.has_h0 else None, None


def linear_scan(log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None,
                chunk: int = SCAN_CHUNK, compiled: bool | None = None) -> torch.Tensor:
    """h_t = exp(log_a_t) * h_{t-1} + b_t with h_{-1} = ``h0`` [B, 1, H] (None: zero), over dim 1 of [B, T, H]
    tensors.

    ``compiled``: the compiled loops (``_CompiledScan``) or the chunked closed form (``_LinearScan``); None picks
    the loops for float32 and float64 CPU tensors and the closed form elsewhere (a GPU, where the closed form's few
    large kernels suit it). ``log_a`` must lie in [-MAX_LOG_DECAY, 0] (guaranteed by the caller's parametrisation,
    not checked here: that would cost a host sync).
    """
    if compiled is None:
        compiled = b.device.type == "cpu" and b.dtype in (torch.float32, torch.float64)
    scan = _CompiledScan if compiled else _LinearScan
    return scan.apply(log_a.contiguous(), b.contiguous(), None if h0 is None else h0.contiguous(), chunk)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class MinGRULayer(nn.Module):
    """One minimal-GRU layer: [B, T, H_in] -> [B, T, H]."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gate = nn.Linear(input_size, hidden_size)
        self.candidate = nn.Linear(input_size, hidden_size)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """States [B, T, H] from inputs [B, T, H_in], continuing from ``h0`` [B, 1, H] (None: zero)."""
        # log a = -MAX_LOG_DECAY * sigmoid(k): the decay a = 1 - z of a GRU gate, bounded so the scan is safe.
        log_a = -MAX_LOG_DECAY * torch.sigmoid(_at_least_float32(self.gate(x)))
        b = -torch.expm1(log_a) * _at_least_float32(self.candidate(x))  # z_t * c_t
        # The scan runs in float32 even under bf16 autocast: its cumulative sums and exponentials need the mantissa.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return linear_scan(log_a, b, h0)


class MinGRUEncoder(nn.Module):
    """Stacked minimal-GRU layers; layers after the first are pre-norm residual blocks."""

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
        h = self.layers[0](x, None if state is None else state[0])
        last = [h[:, -1:].clone()]
        for i, (layer, norm) in enumerate(zip(self.layers[1:], self.norms), start=1):
            y = layer(norm(h), None if state is None else state[i])
            last.append(y[:, -1:].clone())
            h = h + y
        return h, last

    def hidden_matrix_names(self, prefix: str) -> set[str]:
        return {f"{prefix}.{n}" for n, p in self.named_parameters() if p.dim() == 2}


class GRUEncoder(nn.Module):
    """``nn.GRU`` (cuDNN / oneDNN kernels), kept for comparison and for checkpoints trained with it."""

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
