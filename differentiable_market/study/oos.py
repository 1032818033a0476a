"""The study's one stitched out-of-sample path per strategy, with exact accounting.

Every strategy trades the same decision bars, the union of the folds' test blocks in time order, from cash at the
first one. Fold k's policies decide on fold k's block only, each starting its encoder cold at the block's first bar
(as validation did when it chose their checkpoints) but holding what the strategy held when the previous block
ended: the policy is shown those holdings drifted to the close of the previous decision's bar, as within a fold.
The whole path is then accounted at once by ``env.account`` (exact |x|, float64), so the trade at each fold switch
is charged like any other. Strategies:

- ``seed<s>``: the deterministic policy of seed s (its own holdings carried across folds);
- ``ensemble``: one agent whose target is the mean of the fold's members' deterministic targets, every member shown
  the ensemble's actual holdings (``rollout.ensemble_weights``);
- every baseline of the study's ``--baselines`` set (``baselines.registry``), on the whole out-of-sample range as
  one window (so buy-and-hold buys once and trailing signals use only earlier bars).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checkpoint import Checkpoint, build_policy
from ..data import MarketData
from ..env import decision_growth, drift, observed_growth
from ..errors import DataError
from ..features import compute_features
from ..marketsimulator.backtester import BacktestOptions, StrategyKind, baseline_weights, evaluate_weights
from ..metrics import bars_per_year
from ..rollout import deterministic_weights, ensemble_weights
from .plan import Fold


@dataclass(frozen=True)
class Path:
    """One strategy over the out-of-sample decisions: per-bar float64 arrays [T] and target weights [T, A (+1)]."""

    name: str
    label: str
    kind: StrategyKind
    log_growth: np.ndarray
    turnover: np.ndarray
    cost: np.ndarray
    weights: np.ndarray
    family: str = "policy"  # the baseline family (``baselines.registry``), "policy" for seeds and the ensemble


def stitched_paths(market: MarketData, folds: list[Fold], members: dict[int, list[tuple[int, Checkpoint]]],
                   cost_rate: float, include_cash: bool, execution: str,
                   rebalance_every: int = 1, baselines: str = "core") -> tuple[dict[str, Path], np.ndarray]:
    """Paths of every seed, the ensemble and every baseline; and the decision bars [T] they trade.

    ``members[k]`` lists (seed, best checkpoint) of fold k; each must have been trained on exactly these data.
    ``baselines`` is the ``--baselines`` selection (``baselines.registry``).
    """
    fingerprint = market.fingerprint()
    for k, fold_members in members.items():
        for seed, ckpt in fold_members:
            if ckpt.symbols != market.symbols or ckpt.data_fingerprint.get("ohlc_sha256") != fingerprint.get(
                    "ohlc_sha256"):
                raise DataError(f"{ckpt.path} (fold {k}, seed {seed}) was trained on other data or another universe "
                                f"({list(ckpt.symbols)}) than the study's ({list(market.symbols)}); rerun the study.")
    open_ta, close_ta = torch.tensor(market.open), torch.tensor(market.close)
    growth_ta = decision_growth(open_ta, close_ta, execution, include_cash)  # float64 [T - h, A (+1)]
    seen_ta = observed_growth(open_ta, close_ta, execution, include_cash).to(torch.float32)
    fill_ta = growth_ta.to(torch.float32)
    bars = np.arange(folds[0].decisions[0], folds[-1].decisions[1])
    seeds = [seed for seed, _ in members[folds[0].index]]
    weights: dict[str, list[torch.Tensor]] = {f"seed{s}": [] for s in seeds}
    weights["ensemble"] = []
    shown: dict[str, torch.Tensor | None] = {name: None for name in weights}
    for fold in folds:
        d0, d1 = fold.decisions
        policies, feats = [], []
        for seed, ckpt in members[fold.index]:
            policy = build_policy(ckpt, include_cash)
            f = torch.as_tensor(compute_features(market, ckpt.feature_spec), dtype=torch.float32)[None, d0:d1]
            policies.append(policy)
            feats.append(f)
            name = f"seed{seed}"
            w = deterministic_weights(policy, f, seen_ta[None, d0:d1], include_cash, None, initial=shown[name],
                                      growth=fill_ta[None, d0:d1], rebalance_every=rebalance_every)[0]
            weights[name].append(w)
        weights["ensemble"].append(ensemble_weights(policies, feats, seen_ta[None, d0:d1], shown["ensemble"],
                                                    fill_ta[None, d0:d1], rebalance_every)[0])
        for name, parts in weights.items():
            # what the next fold's first decision is shown: the last weights drifted to the close of its bar
            shown[name] = drift(parts[-1][-1], seen_ta[d1 - 1])
    ppy = bars_per_year(market.timestamps)
    growth = growth_ta[torch.as_tensor(bars)][None]  # [1, T, A (+1)]
    out: dict[str, Path] = {}

    def add(name: str, label: str, kind: StrategyKind, w: torch.Tensor, family: str = "policy") -> None:
        w = w.to(torch.float64)
        w = w / w.sum(-1, keepdim=True)
        r = evaluate_weights(name, label, kind, w, growth, cost_rate, include_cash, ppy)
        out[name] = Path(name, label, kind, r.log_growth[0], r.turnover[0], r.cost[0], w[0].numpy(), family)

    add("ensemble", f"Seed ensemble ({len(seeds)} seeds)", "policy", torch.cat(weights["ensemble"])[None])
    for s in seeds:
        add(f"seed{s}", f"Policy, seed {s}", "policy", torch.cat(weights[f"seed{s}"])[None])
    named, _ = baseline_weights(close_ta, torch.as_tensor(bars)[None], growth, include_cash, market.symbols,
                                BacktestOptions(checkpoint="study", baselines=baselines))
    for name, label, kind, family, w in named:
        add(name, label, kind, w, family)
    return out, bars
