"""Dirichlet policies over the simplex of assets (and cash): ``flat`` (one encoder over all assets' features, tied to
one symbol list) and ``cross`` (a shared per-asset encoder, cross-asset mixing, one head per asset, any universe).

Both expose the same interface, used by the rollout loop, the trainer, the backtester and the study:
``encode(features [B, T, A, F]) -> states``, ``state_projection(states) -> state_proj`` (once per window),
``concentrations(state_proj, held [..., T, A_out]) -> alpha [..., T, A_out]`` (teacher-forced scoring) and
``bar_head(state_proj, n_rows) -> f(t, held_t)`` (the per-bar head of the rollout loop), with attributes ``n_assets``,
``n_out``, ``include_cash`` and ``cfg``.
"""

from __future__ import annotations

from typing import Union

from ..config import PolicyConfig
from .cross import CrossSectionalPolicy
from .flat import DirichletGRUPolicy

Policy = Union[DirichletGRUPolicy, CrossSectionalPolicy]

ARCHITECTURES = {"flat": DirichletGRUPolicy, "cross": CrossSectionalPolicy}


def make_policy(cfg: PolicyConfig, n_assets: int, n_features: int, include_cash: bool) -> Policy:
    """The policy ``cfg.architecture`` names, for ``n_assets`` assets of ``n_features`` features each."""
    return ARCHITECTURES[cfg.architecture](cfg, n_assets, n_features, include_cash)


__all__ = ["ARCHITECTURES", "CrossSectionalPolicy", "DirichletGRUPolicy", "Policy", "make_policy"]
