"""A pretrained policy in a walk-forward study without training ("zero-shot"): one candidate per fold, judged on
evidence pooled over the fold and the folds before it.

A policy trained on a fold's own training bars can only be judged on bars it has not trained on: its fold's
validation split. A pretrained policy learned from other markets (before ``pretraining_cutoff``), so every bar of
this market from the first fold's validation split on is out of its sample, and fold k may judge it on all of them
up to its own validation split's end: the first fold's validation bars, then each earlier fold's test block and
validation split. Nothing after fold k's validation split is used, so fold k's test block stays out of sample.

Fold k's member is the pretrained policy where the selection gate (``gate.SelectionGate``, one look, against equal
weight and the untrained policy, Newey-West t, level ``norm.sf(--select-min-t)``) passes on that evidence, and the
untrained policy otherwise. Its features are normalised on fold k's own training split, as a trained member's are.
Each fold's member is written as an ordinary run folder ``fold<k>-zeroshot`` (config.json with the evidence,
checkpoints/best.pt), so the study's stitched paths, backtests and predict read it like any other member.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_json
from ..checkpoint import Checkpoint, build_policy, check_after_pretraining, load_checkpoint, save_checkpoint
from ..config import ExperimentConfig
from ..data import MarketData
from ..gate import Look, SelectionGate
from ..policy import make_policy
from ..recorder import GATE_SEED_OFFSET
from ..trainer import prepare_market, score_range
from .plan import Fold


def zero_shot_name(fold: int) -> str:
    return f"fold{fold}-zeroshot"


def evidence_range(folds: list[Fold], k: int, horizon: int) -> tuple[int, int]:
    """Decision bars [start, stop) fold k judges a pretrained policy on: from the first fold's validation start to
    the end of fold k's validation split (every price they earn lies inside)."""
    return folds[0].validation[0], folds[k].validation[1] - horizon


def zero_shot_members(market: MarketData, folds: list[Fold], cfg: ExperimentConfig, init: Checkpoint,
                      study_dir: Path, log=print) -> tuple[dict[int, list[tuple[int, Checkpoint]]], list[dict]]:
    """Each fold's zero-shot member (see the module docstring) as {fold: [(seed, best.pt)]}, and a record per fold of
    the evidence (bars, dates, t-statistics, the gate's critical value, whether it passed). A fold whose folder
    already holds its best.pt (a resumed study) is read back, not decided again."""
    device = torch.device("cpu")
    first = str(market.timestamps[folds[0].validation[0]])[:19]
    check_after_pretraining(init, first, "the study's first validation split")
    members, records = {}, []
    for fold in folds:
        folder = study_dir / zero_shot_name(fold.index)
        best = folder / "checkpoints" / "best.pt"
        if best.exists():
            import json

            record = json.loads((folder / "config.json").read_text(encoding="utf-8"))["zero_shot"]
        else:
            record = _decide(market, folds, fold, cfg, init, folder, device)
        members[fold.index] = [(cfg.train.seed, load_checkpoint(best))]
        records.append(record)
        log(f"  fold {fold.index} zero-shot: {record['verdict']} (evidence {record['bars']} bars "
            f"{record['first_bar'][:10]}..{record['last_bar'][:10]}; t vs equal weight {record['t_equal']:+.2f}, vs "
            f"untrained {record['t_untrained']:+.2f}; gate "
            + ("none: no difference" if record["critical_t"] is None else f"{record['critical_t']:.2f}") + ")")
    return members, records


def _decide(market: MarketData, folds: list[Fold], fold: Fold, cfg: ExperimentConfig, init: Checkpoint,
            folder: Path, device: torch.device) -> dict[str, Any]:
    cfg_k = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split_bars=fold.split_bars))
    tensors, spec = prepare_market(cfg_k, market, device)  # the normaliser fitted on the fold's training split
    pretrained = build_policy(init, cfg.env.include_cash, market.n_assets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)  # the untrained policy a trained member of this seed starts from
        untrained = make_policy(cfg.policy, market.n_assets, tensors.features.shape[-1], cfg.env.include_cash)
    start, stop = evidence_range(folds, fold.index, tensors.horizon)
    label = f"evidence of fold {fold.index}"
    p = score_range(pretrained, tensors, cfg_k, start, stop, label)
    u = score_range(untrained, tensors, cfg_k, start, stop, label)
    gate = SelectionGate(cfg.train.select_min_t, cfg.train.seed + GATE_SEED_OFFSET)
    decision = gate.add(Look(0, p.summary["policy"]["objective"], p.policy - p.equal_weight, p.policy - u.policy))
    passed = decision.step == 0
    ppy = tensors.bars_per_year
    record = {
        "fold": fold.index, "checkpoint": init.path, "checkpoint_sha256": init.sha256, "passed": passed,
        "verdict": "the pretrained policy passed the gate" if passed else "kept the untrained policy",
        "bars": stop - start, "first_bar": p.summary["first_bar"], "last_bar": p.summary["last_bar"],
        "t_equal": decision.t_equal[0], "t_untrained": decision.t_untrained[0],
        "critical_t": decision.critical_t if decision.evidence.get(0) is not None else None,  # None: no evidence
        "alpha": decision.alpha,
        "excess_per_year": float((p.policy - p.equal_weight).mean() * ppy),
        "excess_vs_untrained_per_year": float((p.policy - u.policy).mean() * ppy),
    }
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    splits = tensors.splits
    atomic_write_json(folder / "config.json", {"type": "header", "config": dataclasses.asdict(cfg_k),
                                               "zero_shot": record, "splits": splits.to_dict()})
    state = pretrained.state_dict() if passed else untrained.state_dict()
    save_checkpoint(folder / "checkpoints" / "best.pt", config=cfg_k, symbols=market.symbols, feature_spec=spec,
                    policy=state, step=0, data_fingerprint=market.fingerprint(), splits=splits.to_dict(),
                    best_score=p.summary["policy"]["objective"] if passed else u.summary["policy"]["objective"],
                    trained_through=str(market.timestamps[splits.train[1] - 1])[:19],
                    validated_through=str(market.timestamps[splits.validation[1] - 1])[:19], untrained=not passed)
    return record
