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

A union calendar (``--calendar union``) is traded as the backtester trades it, from the same inputs
(``backtester.replay_inputs``): every strategy holds only the assets tradeable at each decision bar (the market's
causal mask; the policies' Dirichlet means and the ensemble's mean are taken over that subset, the baselines'
weights are restricted to it by ``evaluate_weights``, and buy and hold buys the assets tradeable at the first
out-of-sample bar), each decision's growth is 1 off the mask, and ``env.account`` sells a holding in an asset that
stops being tradeable at the next fill, at its last close, with the fee. The stored weights are the restricted
ones, exactly 0 off the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..checkpoint import Checkpoint, build_policy
from ..config import Execution
from ..data import MarketData
from ..env import drift, restrict_to_tradeable
from ..errors import DataError
from ..features import compute_features
from ..marketsimulator.backtester import (BacktestOptions, Replay, StrategyKind, baseline_weights, evaluate_weights,
                                          replay_inputs)
from ..metrics import bars_per_year
from ..rollout import deterministic_weights, ensemble_weights
from .plan import Fold


@dataclass(frozen=True)
class Path:
    """One strategy over the out-of-sample decisions: per-bar float64 arrays [T] and its target weights [T, A (+1)]
    as accounted (restricted to the tradeable columns on a union calendar)."""

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
                   rebalance_every: int | None = None, baselines: str = "core") -> tuple[dict[str, Path], np.ndarray]:
    """Paths of every seed, the ensemble and every baseline; and the decision bars [T] they trade.

    ``members[k]`` lists (seed, best checkpoint) of fold k; each must have been trained on exactly these data.
    ``rebalance_every`` None: each fold's members' own (a search may choose it per fold). ``baselines`` is the
    ``--baselines`` selection (``baselines.registry``).
    """
    fingerprint = market.fingerprint()
    planned = {f.index: tuple(f.split_bars) for f in folds}
    for k, fold_members in members.items():
        for seed, ckpt in fold_members:
            split = ckpt.config.data.split_bars
            if split is None or tuple(split) != planned[k]:
                raise DataError(f"{ckpt.path} (fold {k}, seed {seed}) was trained on the split {split}, not fold "
                                f"{k}'s planned {list(planned[k])}: its validation or test bars are not the fold's, "
                                "so its out-of-sample path would not be out of sample. Rerun the study.")
            if ckpt.symbols != market.symbols or ckpt.data_fingerprint.get("ohlc_sha256") != fingerprint.get(
                    "ohlc_sha256"):
                raise DataError(f"{ckpt.path} (fold {k}, seed {seed}) was trained on other data or another universe "
                                f"({list(ckpt.symbols)}) than the study's ({list(market.symbols)}); rerun the study.")
    oos = oos_inputs(market, folds, execution, include_cash)
    seen, fill, mask = oos.replay.seen.to(torch.float32), oos.replay.growth.to(torch.float32), oos.replay.mask
    seeds = [seed for seed, _ in members[folds[0].index]]
    weights: dict[str, list[torch.Tensor]] = {f"seed{s}": [] for s in seeds}
    weights["ensemble"] = []
    shown: dict[str, torch.Tensor | None] = {name: None for name in weights}
    for fold in folds:
        d0, d1 = fold.decisions
        block = torch.arange(d0, d1)[None]  # the fold's decision bars, one window
        tradeable = None if mask is None else mask[:d1]  # laid out as the features
        policies, feats = [], []
        every = rebalance_every or members[fold.index][0][1].config.env.rebalance_every
        for seed, ckpt in members[fold.index]:
            policy, f = _policy_and_features(market, ckpt, include_cash, d1)
            policies.append(policy)
            feats.append(f)
            name = f"seed{seed}"
            w = deterministic_weights(policy, f, seen[None, d0:d1], include_cash, None, initial=shown[name],
                                      growth=fill[None, d0:d1], rebalance_every=every, bars=block,
                                      tradeable=tradeable)[0]
            weights[name].append(w)
        weights["ensemble"].append(ensemble_weights(policies, feats, seen[None, d0:d1], shown["ensemble"],
                                                    fill[None, d0:d1], every, block, tradeable)[0])
        for name, parts in weights.items():
            # what the next fold's first decision is shown: the last weights drifted to the close of its bar
            shown[name] = drift(parts[-1][-1], seen[d1 - 1])
    out: dict[str, Path] = {}

    def add(name: str, label: str, kind: StrategyKind, w: torch.Tensor, family: str = "policy") -> None:
        w = w.to(torch.float64)
        w = w / w.sum(-1, keepdim=True)
        r = evaluate_weights(name, label, kind, w, oos.growth, cost_rate, include_cash, oos.periods_per_year,
                             tradeable=oos.columns)
        out[name] = Path(name, label, kind, r.log_growth[0], r.turnover[0], r.cost[0], oos.held(w)[0].numpy(),
                         family)

    add("ensemble", f"Seed ensemble ({len(seeds)} seeds)", "policy", torch.cat(weights["ensemble"])[None])
    for s in seeds:
        add(f"seed{s}", f"Policy, seed {s}", "policy", torch.cat(weights[f"seed{s}"])[None])
    named, _ = baseline_weights(oos.replay.close, torch.as_tensor(oos.bars)[None], oos.growth, include_cash,
                                market.symbols, BacktestOptions(checkpoint="study", baselines=baselines), oos.columns)
    for name, label, kind, family, w in named:
        add(name, label, kind, w, family)
    return out, oos.bars


@dataclass(frozen=True)
class OOSInputs:
    """What every stitched path needs. replay: the whole data's prices, growth and mask (``backtester.Replay``,
    the backtester's own); bars: int [T_oos] the out-of-sample decision bars; growth: float64 [1, T_oos, A (+1)]
    their accounting growth (1 off the mask); columns: bool [1, T_oos, A (+1)] the columns each may hold, or None
    when every asset is tradeable everywhere."""

    replay: Replay
    bars: np.ndarray
    growth: torch.Tensor
    columns: torch.Tensor | None
    include_cash: bool
    periods_per_year: float

    def held(self, w: torch.Tensor) -> torch.Tensor:
        """Targets [1, T_oos, A (+1)] as they are accounted: restricted to the tradeable columns exactly as
        ``evaluate_weights`` restricts them (0 on every other column)."""
        return w if self.columns is None else restrict_to_tradeable(w, self.columns, self.include_cash)


def oos_inputs(market: MarketData, folds: list[Fold], execution: Execution, include_cash: bool) -> OOSInputs:
    """The out-of-sample decision bars of ``folds`` and what the stitched paths trade there."""
    replay = replay_inputs(market, execution, include_cash)
    bars = np.arange(folds[0].decisions[0], folds[-1].decisions[1])
    at = torch.as_tensor(bars)
    return OOSInputs(replay, bars, replay.growth[at][None],
                     None if replay.columns is None else replay.columns[at][None], include_cash,
                     bars_per_year(market.timestamps))


def _policy_and_features(market: MarketData, ckpt: Checkpoint, include_cash: bool, stop: int
                         ) -> tuple[torch.nn.Module, torch.Tensor]:
    """The checkpoint's policy and its features [stop, A, F] of bars before ``stop`` (its own normaliser)."""
    policy = build_policy(ckpt, include_cash)
    return policy, torch.as_tensor(compute_features(market, ckpt.feature_spec)[:stop], dtype=torch.float32)


def single_policy_log_growth(market: MarketData, folds: list[Fold], models: list[dict[int, Checkpoint]],
                             cost_rate: float, include_cash: bool, execution: str) -> np.ndarray:
    """Net log growth [T, M] on the study's decision bars of M stitched single-policy models, ``models[m][k]``
    deciding on fold k's block (holdings carried across folds, accounted like ``stitched_paths``' seeds).

    The search's trials become models this way for the data-snooping test: model m stitches each fold's m-th best
    trial, so the SPA test sees every configuration the search tried, not only the chosen one."""
    oos = oos_inputs(market, folds, execution, include_cash)
    seen, fill, mask = oos.replay.seen.to(torch.float32), oos.replay.growth.to(torch.float32), oos.replay.mask
    out = []
    for m, model in enumerate(models):
        shown, parts = None, []
        for fold in folds:
            d0, d1 = fold.decisions
            ckpt = model[fold.index]
            policy, f = _policy_and_features(market, ckpt, include_cash, d1)
            w = deterministic_weights(policy, f, seen[None, d0:d1], include_cash, None, initial=shown,
                                      growth=fill[None, d0:d1], rebalance_every=ckpt.config.env.rebalance_every,
                                      bars=torch.arange(d0, d1)[None], tradeable=None if mask is None else mask[:d1])[0]
            parts.append(w)
            shown = drift(w[-1], seen[d1 - 1])
        w = torch.cat(parts)[None].to(torch.float64)
        w = w / w.sum(-1, keepdim=True)
        out.append(evaluate_weights(f"trial{m}", "", "policy", w, oos.growth, cost_rate, include_cash,
                                    oos.periods_per_year, tradeable=oos.columns).log_growth[0])
    return np.stack(out, axis=1) if out else np.zeros((oos.bars.size, 0))
