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
    close_ta, seen_ta, fill_ta, bars, growth, ppy = _oos_growth(market, folds, execution, include_cash)
    seeds = [seed for seed, _ in members[folds[0].index]]
    weights: dict[str, list[torch.Tensor]] = {f"seed{s}": [] for s in seeds}
    weights["ensemble"] = []
    shown: dict[str, torch.Tensor | None] = {name: None for name in weights}
    for fold in folds:
        d0, d1 = fold.decisions
        block = torch.arange(d0, d1)[None]  # the fold's decision bars, one window
        policies, feats = [], []
        every = rebalance_every or members[fold.index][0][1].config.env.rebalance_every
        for seed, ckpt in members[fold.index]:
            policy, f = _policy_and_features(market, ckpt, include_cash, d1)
            policies.append(policy)
            feats.append(f)
            name = f"seed{seed}"
            w = deterministic_weights(policy, f, seen_ta[None, d0:d1], include_cash, None, initial=shown[name],
                                      growth=fill_ta[None, d0:d1], rebalance_every=every, bars=block)[0]
            weights[name].append(w)
        weights["ensemble"].append(ensemble_weights(policies, feats, seen_ta[None, d0:d1], shown["ensemble"],
                                                    fill_ta[None, d0:d1], every, block)[0])
        for name, parts in weights.items():
            # what the next fold's first decision is shown: the last weights drifted to the close of its bar
            shown[name] = drift(parts[-1][-1], seen_ta[d1 - 1])
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


def _oos_growth(market: MarketData, folds: list[Fold], execution: str, include_cash: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor, float]:
    """What every stitched path needs: closes [T, A] (float64), the growth each decision is shown (float32) and
    filled with (float32) over all bars, the out-of-sample decision bars [T_oos], their accounting growth
    [1, T_oos, A (+1)] (float64) and bars per year."""
    open_ta, close_ta = torch.tensor(market.open), torch.tensor(market.close)
    growth_ta = decision_growth(open_ta, close_ta, execution, include_cash)  # float64 [T - h, A (+1)]
    seen_ta = observed_growth(open_ta, close_ta, execution, include_cash).to(torch.float32)
    bars = np.arange(folds[0].decisions[0], folds[-1].decisions[1])
    return (close_ta, seen_ta, growth_ta.to(torch.float32), bars, growth_ta[torch.as_tensor(bars)][None],
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
    _, seen_ta, fill_ta, bars, growth, ppy = _oos_growth(market, folds, execution, include_cash)
    out = []
    for m, model in enumerate(models):
        shown, parts = None, []
        for fold in folds:
            d0, d1 = fold.decisions
            ckpt = model[fold.index]
            policy, f = _policy_and_features(market, ckpt, include_cash, d1)
            w = deterministic_weights(policy, f, seen_ta[None, d0:d1], include_cash, None, initial=shown,
                                      growth=fill_ta[None, d0:d1], rebalance_every=ckpt.config.env.rebalance_every,
                                      bars=torch.arange(d0, d1)[None])[0]
            parts.append(w)
            shown = drift(w[-1], seen_ta[d1 - 1])
        w = torch.cat(parts)[None].to(torch.float64)
        w = w / w.sum(-1, keepdim=True)
        out.append(evaluate_weights(f"trial{m}", "", "policy", w, growth, cost_rate, include_cash, ppy).log_growth[0])
    return np.stack(out, axis=1) if out else np.zeros((bars.size, 0))
