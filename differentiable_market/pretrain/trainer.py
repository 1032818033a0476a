"""Training one cross-sectional policy on many markets at once.

Every optimizer step draws ``markets_per_step`` training markets of the corpus (without replacement, uniformly), and
from each ``windows_per_market`` windows, so one step sees several universes (asset counts, volatilities, fees,
calendars). Each market's loss is the ordinary GRPO + pathwise loss of ``trainer.GRPOLoss`` with that market's own
fee and execution; the gradients of the markets are averaged. The KL term's reference is an EMA of the policy's
weights (a second pass per market; the per-bar output reference of a single run is tied to one market's bars).

Each market's features are normalised with a normaliser fitted on that market's own training bars, as a run fits
one on its own training split: the policy learns on features of the same scale whatever the market, and a market
it meets later is normalised the same way (``Checkpoint.refits_normaliser``).

Validation scores the deterministic policy on the held-out half of every validation market and averages the
annualised excess log growth over equal weight; the checkpoint with the best average is best.pt.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import DataConfig, EnvConfig, ExperimentConfig, FeatureConfig, PolicyConfig, TrainConfig
from ..data import MarketData
from ..gate import hac_t
from ..optim import build_optimizers
from ..policy import Policy, make_policy
from ..trainer import (TRAIN_STATS, GRPOLoss, MarketTensors, autocast_choice, ema_update, make_reference,
                       prepare_market, sample_windows, score_split)
from .corpus import MarketSpec

VALIDATION_SHARE = 0.5  # a validation market's normaliser is fitted on its first half, the policy scored on the rest
_TAIL = 3  # the fewest bars a split may have (splits.MIN_EVAL_BARS)


@dataclass
class PreparedMarket:
    """A corpus market ready to train on or to score: its config (fee, execution, splits), tensors and loss."""

    spec: MarketSpec
    market: MarketData
    cfg: ExperimentConfig
    tensors: MarketTensors
    loss: GRPOLoss | None
    first_start: int
    last_start: int


def corpus_split_bars(n_bars: int, role: str, embargo: int) -> tuple[int, ...]:
    """``DataConfig.split_bars`` of a corpus market: a training market trains on all but two short tails; a
    validation market fits its normaliser on its first half and is scored on the second (after an embargo)."""
    if role == "train":
        tr_end = n_bars - 2 * (embargo + _TAIL)
        return (0, tr_end, tr_end + embargo, tr_end + embargo + _TAIL, n_bars - _TAIL, n_bars)
    half = int(n_bars * VALIDATION_SHARE)
    return (0, half, half + embargo, n_bars - embargo - _TAIL, n_bars - _TAIL, n_bars)


def prepare(spec: MarketSpec, market: MarketData, policy_cfg: PolicyConfig, features: FeatureConfig,
            train: TrainConfig, include_cash: bool, policy: Policy | None, device: torch.device) -> PreparedMarket:
    """The market's config and tensors (its own normaliser), and, for a training market, its loss on ``policy``."""
    embargo = train.lookback
    cfg = ExperimentConfig(
        data=DataConfig(root=spec.folder or f"corpus:{spec.name}",
                        split_bars=corpus_split_bars(market.n_bars, spec.role, embargo), embargo_bars=embargo),
        features=features,
        env=EnvConfig(cost_bps=spec.cost_bps, execution=spec.execution, include_cash=include_cash),
        policy=policy_cfg,
        train=dataclasses.replace(train, reference="weights"),
    )
    tensors, _ = prepare_market(cfg, market, device)
    start, stop = tensors.decision_range("train")
    loss = None if spec.role != "train" or policy is None else GRPOLoss(cfg, policy, tensors.features, False,
                                                                         tensors.tradeable)
    return PreparedMarket(spec, market, cfg, tensors, loss, start, stop - train.lookback)


class CorpusTrainer:
    """The policy, its EMA reference, optimizers and random streams; ``step`` runs one optimizer step over several
    markets, ``validate`` scores the validation markets."""

    def __init__(self, policy_cfg: PolicyConfig, features: FeatureConfig, train: TrainConfig, include_cash: bool,
                 n_features: int, device: torch.device, markets_per_step: int, windows_per_market: int) -> None:
        self.policy_cfg, self.features, self.train_cfg = policy_cfg, features, train
        self.include_cash, self.n_features, self.device = include_cash, n_features, device
        self.markets_per_step, self.windows_per_market = markets_per_step, windows_per_market
        torch.manual_seed(train.seed)
        # the cross-sectional policy's weights fit any universe; the layout built here (2 assets) is never used
        self.policy = make_policy(policy_cfg, 2, n_features, include_cash).to(device)
        self.reference = make_reference(self.policy)
        self.optimizers = build_optimizers(self.policy, train)
        self.sampler = torch.Generator().manual_seed(train.seed)  # window starts
        self.actions = torch.Generator(device=device).manual_seed(train.seed + 1)  # Dirichlet samples
        self.picker = torch.Generator().manual_seed(train.seed + 2)  # which markets each step
        self.autocast, self.autocast_reason = autocast_choice(train.dtype, device)
        self.offsets = torch.arange(train.lookback, device=device)
        self.step_count = 0
        self.nonfinite_total = 0
        self.best_score: float | None = None

    def step(self, markets: list[PreparedMarket]) -> torch.Tensor | None:
        """One optimizer step: the mean loss of ``markets_per_step`` training markets drawn from ``markets``.
        Returns the mean stats (``trainer.TRAIN_STATS``), or None when a non-finite update was skipped."""
        k = min(self.markets_per_step, len(markets))
        picks = torch.randperm(len(markets), generator=self.picker)[:k].tolist()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        stats = torch.zeros(len(TRAIN_STATS), device=self.device)
        for i in picks:
            pm = markets[i]
            assert pm.loss is not None
            windows = sample_windows(pm.tensors, self.windows_per_market, pm.first_start, pm.last_start, self.offsets,
                                     None, self.sampler)
            ro, proj = pm.loss.collect(self.reference, windows, self.actions, self.autocast)
            loss, mb = pm.loss.loss(ro, proj, self.autocast)
            (loss / k).backward()
            stats += mb / k
        stats[-1] = torch.nn.utils.clip_grad_norm_(list(self.policy.parameters()), self.train_cfg.grad_clip,
                                                   foreach=True)
        self.step_count += 1
        if not bool(torch.isfinite(stats).all()):
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            return None
        for opt in self.optimizers:
            opt.step()
        ema_update(self.reference, self.policy, self.train_cfg.ema_decay)
        return stats

    def view(self, n_assets: int, state: dict[str, torch.Tensor] | None = None) -> Policy:
        """The policy laid out for a universe of ``n_assets`` (a copy of its weights, or of ``state``)."""
        view = make_policy(self.policy_cfg, n_assets, self.n_features, self.include_cash).to(self.device)
        view.load_state_dict(self.policy.state_dict() if state is None else state)
        return view.eval()

    def validate(self, markets: list[PreparedMarket], untrained: dict[str, np.ndarray]) -> dict[str, Any]:
        """Score the policy on every validation market; ``untrained``: market name -> the untrained policy's
        per-bar validation log growth. Returns the mean annualised excess over equal weight (the selection score)
        and a row per market."""
        rows = []
        for pm in markets:
            s = score_split(self.view(pm.market.n_assets), pm.tensors, pm.cfg, "validation")
            ppy = pm.tensors.bars_per_year
            excess, versus = s.policy - s.equal_weight, s.policy - untrained[pm.spec.name]
            rows.append({"market": pm.spec.name, "family": pm.spec.family, "bars": int(excess.size),
                         "excess_per_year": float(excess.mean() * ppy), "t_equal": hac_t(excess),
                         "excess_vs_untrained_per_year": float(versus.mean() * ppy), "t_untrained": hac_t(versus),
                         "turnover": s.summary["policy"]["turnover"],
                         "equal_weight_turnover": s.summary["equal_weight"]["turnover"]})
        score = float(np.mean([r["excess_per_year"] for r in rows])) if rows else float("nan")
        by_family: dict[str, list[float]] = {}
        for r in rows:
            by_family.setdefault(r["family"], []).append(r["excess_per_year"])
        return {"score": score, "by_family": {f: float(np.mean(v)) for f, v in by_family.items()}, "markets": rows}

    def untrained_paths(self, markets: list[PreparedMarket]) -> dict[str, np.ndarray]:
        """The untrained policy's per-bar validation log growth on every validation market (equal weight through the
        action): the benchmark a pretrained policy has to beat besides equal weight."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.train_cfg.seed)
            fresh = make_policy(self.policy_cfg, 2, self.n_features, self.include_cash).state_dict()
        return {pm.spec.name: score_split(self.view(pm.market.n_assets, fresh), pm.tensors, pm.cfg,
                                          "validation").policy for pm in markets}

    # --- resume ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "reference": {k: v.detach().cpu().clone() for k, v in self.reference.state_dict().items()},
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "rng": {"torch": torch.get_rng_state(), "sampler": self.sampler.get_state(),
                    "actions": self.actions.get_state(), "picker": self.picker.get_state()},
            "nonfinite_total": self.nonfinite_total,
        }

    def load_state_dict(self, policy_state: dict[str, torch.Tensor], state: dict[str, Any], step: int,
                        best: float | None) -> None:
        self.policy.load_state_dict(policy_state)
        self.reference.load_state_dict(state["reference"])
        for opt, sd in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        torch.set_rng_state(state["rng"]["torch"])
        self.sampler.set_state(state["rng"]["sampler"])
        self.picker.set_state(state["rng"]["picker"])
        try:
            self.actions.set_state(state["rng"]["actions"])
        except (RuntimeError, ValueError):  # saved on another device type: a fresh stream, no longer bit-identical
            self.actions.manual_seed(self.train_cfg.seed + 1 + step)
        self.nonfinite_total = int(state["nonfinite_total"])
        self.step_count, self.best_score = step, best

