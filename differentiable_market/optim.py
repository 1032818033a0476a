"""Optimisers: Muon for the policy's 2-D hidden weight matrices, AdamW for everything else."""

from __future__ import annotations

import torch

from .config import TrainConfig
from .policy import Policy


def build_optimizers(policy: Policy, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW over biases, norms, input projection and output head; Muon over hidden matrices unless disabled.

    Muon's update is scaled to match AdamW's RMS (``match_rms_adamw``), so the two learning rates are comparable.
    """
    hidden = policy.hidden_matrix_names() if cfg.use_muon else set()
    muon_params = [p for n, p in policy.named_parameters() if n in hidden]
    other = [p for n, p in policy.named_parameters() if n not in hidden]
    decay = [p for p in other if p.ndim >= 2]
    no_decay = [p for p in other if p.ndim < 2]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.99),
        )
    ]
    if muon_params:
        optimizers.append(
            torch.optim.Muon(
                muon_params, lr=cfg.muon_lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw"
            )
        )
    return optimizers
