"""The flat Dirichlet policy: all assets' features in one vector, a causal recurrent encoder, a head that also sees the
held (drifted) weights. Its input and output layers are sized by the asset count, so it is tied to one symbol list.

The encoder (``PolicyConfig.encoder``: the parallel-scan minimal GRU or ``nn.GRU``, see ``encoders.py``) reads market
features only, so one pass serves every rollout of a window; the held weights, which differ
between rollouts, enter the head. Concentrations are floored and capped so sampling and log-prob stay finite.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PolicyConfig
from .base import DirichletPolicy
from .encoders import ENCODERS
from .head import _ChunkedHead, _head


class DirichletGRUPolicy(DirichletPolicy):
    """Maps features [B, T, A, F] and held weights [..., T, A_out] to Dirichlet concentrations [..., T, A_out].

    ``A_out`` is the number of assets plus one when a cash asset is traded (cash is the last column).
    """

    def __init__(self, cfg: PolicyConfig, n_assets: int, n_features: int, include_cash: bool) -> None:
        super().__init__(cfg, n_assets, n_features, include_cash)
        hidden = cfg.hidden_size
        self.input_proj = nn.Linear(n_assets * n_features, hidden)
        self.input_norm = nn.LayerNorm(hidden)
        self.encoder = ENCODERS[cfg.encoder](hidden, cfg.num_layers)
        self._add_head(hidden, cfg.head_hidden, self.n_out, self.n_out)
        self.register_load_state_dict_pre_hook(_rename_legacy_gru_keys)

    def hidden_matrix_names(self) -> set[str]:
        """Names of the 2-D hidden weight matrices (trained with Muon); the rest use AdamW."""
        return self.encoder.hidden_matrix_names("encoder") | {"head_state.weight"}

    def encode(self, features: torch.Tensor, autocast_dtype: torch.dtype | None = None,
               tradeable: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states [B, T, H] (float32, or float64 for a float64 policy) from features [B, T, A, F]; bar t uses features of bars <= t only.

        Every asset keeps its fixed input columns; where it is not tradeable (``tradeable`` [B, T, A]) its features
        are already 0 (``features.compute_features``), so the mask needs no input of its own here; the Dirichlet
        over the tradeable subset masks its output (``rollout.generate_paths``)."""
        b, t = features.shape[:2]
        x = features.reshape(b, t, self.n_assets * self.n_features)
        enabled = autocast_dtype is not None
        with torch.autocast(device_type=x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=enabled):
            h = self._encoded(x)
        return h if h.dtype == torch.float64 else h.float()

    def concentrations(self, state_proj: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """Dirichlet concentrations (float32) from the state projection and the held weights (broadcastable)."""
        # SiLU, not exact GELU: this build's exact GELU takes a multithreaded path even for 64 elements, and the
        # rollout loop calls the head once per bar.
        if state_proj.dim() == held.dim() and state_proj.shape[0] == held.shape[0] > 1:
            return _ChunkedHead.apply(state_proj, held, self.head_held.weight, self.head_out.weight,
                                      self.head_out.bias, self.cfg.alpha_floor, self.cfg.alpha_max)
        return _head(state_proj, held, self.head_held.weight, self.head_out.weight, self.head_out.bias,
                     self.cfg.alpha_floor, self.cfg.alpha_max)

    def bar_head(self, state_proj: torch.Tensor, n_rows: int) -> Callable[[int, torch.Tensor], torch.Tensor]:
        """The head for the rollout loop: ``f(t, held_t)`` maps the holdings [n_rows, B, A_out] shown at bar t to
        concentrations [n_rows, B, A_out], the arithmetic of ``concentrations`` (the result is a reused buffer).

        The state projection [B, T, K] is laid out [T, rows, K] once so each bar's held-weights matmul is fused with
        its state add (``addmm``), and the activations are written into preallocated buffers.
        """
        b, t_len, k = state_proj.shape
        rows = n_rows * b
        sp_trk = state_proj.transpose(0, 1)[:, None].expand(t_len, n_rows, b, k).reshape(t_len, rows, k).float()
        w_held, w_out, b_out = self.head_held.weight.t(), self.head_out.weight.t(), self.head_out.bias
        floor, cap = self.cfg.alpha_floor, self.cfg.alpha_max
        z = torch.empty(rows, k, device=state_proj.device)
        raw = torch.empty(rows, self.n_out, device=state_proj.device)

        def alpha_at(t: int, held_t: torch.Tensor) -> torch.Tensor:
            torch.addmm(sp_trk[t], held_t.reshape(rows, self.n_out), w_held, out=z)
            F.silu(z, inplace=True)
            torch.addmm(b_out, z, w_out, out=raw)
            return F.softplus(raw).add_(floor).clamp_(max=cap).view(n_rows, b, self.n_out)

        return alpha_at


def _rename_legacy_gru_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Checkpoints written before encoders were selectable hold ``gru.*``; the GRU now lives at ``encoder.gru.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
        state_dict[prefix + "encoder." + key[len(prefix):]] = state_dict.pop(key)
