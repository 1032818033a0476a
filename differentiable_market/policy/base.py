"""What both policies share: the output layout, the encoder pass, and the Dirichlet head's layers."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import actions
from ..config import PolicyConfig


class DirichletPolicy(nn.Module):
    """Layout (``n_assets``, ``n_features``, ``include_cash``, ``n_out`` = assets + cash) and shared pieces; the
    subclasses create their layers in ``__init__`` (the order fixes seeded initialisation) and call ``_add_head``."""

    def __init__(self, cfg: PolicyConfig, n_assets: int, n_features: int, include_cash: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_assets = n_assets
        self.n_features = n_features
        self.include_cash = include_cash
        self.n_out = n_assets + int(include_cash)
        # the fill reads the Dirichlet's cash weight as its excess over the uniform share (actions.excess_cash)
        self.cash_excess = include_cash and cfg.cash_target == "excess"

    def _add_head(self, hidden: int, k: int, held_inputs: int, outputs: int) -> None:
        """head_state [hidden -> k], head_held [held_inputs -> k] and head_out [k -> outputs], the output layer
        zeroed with bias 1 so training starts near a flat Dirichlet of moderate concentration (rollouts explore
        around equal weight)."""
        self.head_state = nn.Linear(hidden, k)
        self.head_held = nn.Linear(held_inputs, k, bias=False)
        self.head_out = nn.Linear(k, outputs)
        nn.init.zeros_(self.head_out.weight)
        nn.init.constant_(self.head_out.bias, 1.0)
        self._add_action_param()

    def _add_action_param(self) -> None:
        # The action's learned rate or band width (actions.py); absent for full targets, so their checkpoints and
        # seeded initialisation are unchanged.
        if self.cfg.action != "target":
            self.action_param = nn.Parameter(torch.tensor([actions.initial_param(self.cfg.action)]))

    def action_strength(self) -> torch.Tensor | None:
        """[1] rate (partial) or band width fraction (band) of the action, float32; None for full targets."""
        return actions.strength(self.action_param) if self.cfg.action != "target" else None

    def _encoded(self, x: torch.Tensor) -> torch.Tensor:
        """input_proj, input_norm and the encoder over [N, T, F] (activations recomputed in backward when
        ``gradient_checkpointing``); call inside the autocast region."""
        x = self.input_norm(self.input_proj(x))
        if self.cfg.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.encoder, x, use_reentrant=False)
        return self.encoder(x)

    def window_projection(self, features: torch.Tensor, bars: torch.Tensor,
                          autocast_dtype: torch.dtype | None = None,
                          tradeable: torch.Tensor | None = None) -> torch.Tensor:
        """State projections [B, L, ...] of windows whose decision bars are ``bars`` [B, L] (rows of consecutive
        bar indices) in a history of features [T, A, F], under ``cfg.context``:

        - "window": each window is encoded from its own first bar, ``encode(features[bars])`` (B x L bars encoded);
        - "history": one causal pass over bars 0 .. max(bars), from which every window reads its bars, so bar t's
          state is the same in every window, validation split, backtest and prediction that contains it
          (max(bars) + 1 bars encoded, however many windows overlap).

        ``tradeable`` (bool [T, A], the market's causal mask, or None) goes to ``encode`` with the same bars.
        """
        if self.cfg.context == "window":
            mask = None if tradeable is None else tradeable[bars]
            return self.projection(features[bars], autocast_dtype, mask)
        return bars_of(self.history_projection(features, int(bars.max()) + 1, autocast_dtype, tradeable), bars)

    def history_projection(self, features: torch.Tensor, stop: int, autocast_dtype: torch.dtype | None = None,
                           tradeable: torch.Tensor | None = None) -> torch.Tensor:
        """State projections [stop, ...] of bars 0 .. stop - 1 of a history of features [T, A, F], in one causal
        pass (the "history" context); ``tradeable``: bool [T, A] or None."""
        mask = None if tradeable is None else tradeable[None, :stop]
        return self.projection(features[None, :stop], autocast_dtype, mask)[0]

    def projection(self, features: torch.Tensor, autocast_dtype: torch.dtype | None = None,
                   tradeable: torch.Tensor | None = None) -> torch.Tensor:
        """``state_projection(encode(features, ...))``: what the head needs of windows of features [B, T, A, F]."""
        return self.state_projection(self.encode(features, autocast_dtype, tradeable))

    def state_projection(self, h: torch.Tensor) -> torch.Tensor:
        """The held-weights-independent part of the head's first layer (flat [..., T, K], cross [..., T, A_out, K]);
        computed once per window."""
        return self.head_state(h)


def bars_of(history: torch.Tensor, bars: torch.Tensor) -> torch.Tensor:
    """Rows ``bars`` [B, L] of per-bar states ``history`` [T, ...], as [B, L, ...].

    index_select, not history[bars]: its backward adds the windows' gradients with index_add (indexing's accumulating
    index_put took 60 ms of a 256-asset step on 2 cores)."""
    return history.index_select(0, bars.reshape(-1)).reshape(*bars.shape, *history.shape[1:])
