"""How often the best.pt selection gate keeps a trained checkpoint: false passes where there is no edge, power where
there is one.

A run is trained on one realisation of a market (its training split), its checkpoint is kept at every evaluation
(the gate's "looks", every ``--eval-interval`` steps, as a run does), and then the whole selection is replayed on the
validation split of ``--segments`` independent realisations of the same process: each replay is one simulated run's
decision ("does best.pt become a trained checkpoint?"). On a random walk every pass is a false pass; on the planted
and reversal markets a pass is the gate seeing a real edge. Replays of one trained run share its checkpoints, so the
interval of a rate is a cluster bootstrap over the trained runs (replays resampled with their run).

For each replay the script records, for every rule:

- ``gate``: the gate as training runs it (``gate.SelectionGate`` at ``--select-min-t`` values given by ``--min-t``),
- ``old``: the gate before it (an i.i.d. t-statistic of the excess over equal weight of at least 2 at any look).

Features of a replay use the trained run's normaliser (fitted on its own training split), as a validation split would.

Run: uv run python benchmarks/gate_calibration.py [--markets random planted reversal] [--runs 20] [--segments 16]
     [--epochs 600] [--eval-interval 50] [--lookback 64] [--batch-windows 32] [--min-t 2.0 1.645]
Prints one JSON line per trained run and a table of pass rates with 90% cluster-bootstrap intervals.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import torch

from differentiable_market.config import DataConfig, EnvConfig, ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.gate import Look, SelectionGate
from differentiable_market.hardware import machine_info
from differentiable_market.policy import make_policy
from differentiable_market.synthetic import planted_signal_market, random_walk_market, reversal_market
from differentiable_market.trainer import Trainer, prepare_market, score_split

MARKETS = {
    "random": lambda seed: random_walk_market(3000, 8, seed=seed),
    "planted": lambda seed: planted_signal_market(3000, 4, seed=seed),
    "reversal": lambda seed: reversal_market(2520, 32, seed=seed),
}


def old_rule(looks: list[Look], min_t: float = 2.0) -> bool:
    """The gate before this one: any look whose i.i.d. t of the excess over equal weight reaches ``min_t``."""
    for lk in looks:
        x = lk.excess_equal
        sd = x.std(ddof=1)
        if sd > 0 and math.sqrt(x.size) * x.mean() / sd >= min_t:
            return True
    return False


def train_run(cfg: ExperimentConfig, market, device) -> tuple[list[tuple[int, dict]], object, dict]:
    """Train one run, keeping the policy's weights at every evaluation step; returns (step, state) pairs, the
    feature spec and the untrained policy's state."""
    tensors, spec = prepare_market(cfg, market, device)
    trainer = Trainer(cfg, tensors, device)
    untrained = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    looks = []
    for step in range(1, cfg.train.epochs + 1):
        trainer.step()
        if step % cfg.train.eval_interval == 0:
            looks.append((step, {k: v.clone() for k, v in trainer.policy.state_dict().items()}))
    return looks, spec, untrained


def replay(cfg: ExperimentConfig, market, spec, states, untrained_state, device) -> list[Look]:
    """The run's looks scored on ``market``'s validation split with the run's normaliser."""
    tensors, _ = prepare_market(cfg, market, device, spec)
    policy = make_policy(cfg.policy, market.n_assets, tensors.features.shape[-1], cfg.env.include_cash).to(device)
    policy.load_state_dict(untrained_state)
    base = score_split(policy, tensors, cfg, "validation")
    looks = []
    for step, state in states:
        policy.load_state_dict(state)
        s = score_split(policy, tensors, cfg, "validation")
        looks.append(Look(step, s.summary["policy"]["objective"], s.policy - s.equal_weight, s.policy - base.policy))
    return looks


def cluster_interval(passes: list[list[bool]], level: float = 0.9, reps: int = 4000, seed: int = 0) -> tuple:
    """Pass rate over all replays and its percentile interval, runs resampled with their replays."""
    rng = np.random.default_rng(seed)
    counts = np.array([sum(p) for p in passes], dtype=float)
    sizes = np.array([len(p) for p in passes], dtype=float)
    idx = rng.integers(0, len(passes), size=(reps, len(passes)))
    rates = counts[idx].sum(1) / sizes[idx].sum(1)
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    return float(counts.sum() / sizes.sum()), float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", nargs="+", default=["random", "planted", "reversal"], choices=list(MARKETS))
    ap.add_argument("--runs", type=int, default=20, help="trained runs per market")
    ap.add_argument("--segments", type=int, default=16, help="independent validation replays per trained run")
    ap.add_argument("--epochs", type=int, default=600)
    ap.add_argument("--eval-interval", type=int, default=50)
    ap.add_argument("--lookback", type=int, default=64)
    ap.add_argument("--batch-windows", type=int, default=32)
    ap.add_argument("--cost-bps", type=float, default=10.0)
    ap.add_argument("--min-t", type=float, nargs="+", default=[2.0, 1.645], help="--select-min-t values to replay")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap resamples of the gate's critical value")
    args = ap.parse_args()
    device = torch.device("cpu")
    print(f"# {machine_info(device).describe()}", flush=True)
    rules = [f"gate t={t:g}" for t in args.min_t] + ["old (iid t >= 2, any look)"]
    table = []
    for name in args.markets:
        build = MARKETS[name]
        passes: dict[str, list[list[bool]]] = {r: [] for r in rules}
        t0 = time.perf_counter()
        for r in range(args.runs):
            cfg = ExperimentConfig(
                data=DataConfig(root="unused"),
                env=EnvConfig(cost_bps=args.cost_bps),
                policy=PolicyConfig(),
                train=TrainConfig(lookback=args.lookback, batch_windows=args.batch_windows, epochs=args.epochs,
                                  eval_interval=args.eval_interval, device="cpu", dtype="float32", seed=r),
            )
            states, spec, untrained = train_run(cfg, build(1000 + r), device)
            run_passes = {rule: [] for rule in rules}
            for j in range(args.segments):
                looks = replay(cfg, build(100_000 + args.segments * r + j), spec, states, untrained, device)
                for t, rule in zip(args.min_t, rules):
                    gate = SelectionGate(t, seed=j, reps=args.reps)
                    gate.looks = looks
                    run_passes[rule].append(gate.decide().step is not None)
                run_passes[rules[-1]].append(old_rule(looks))
            for rule in rules:
                passes[rule].append(run_passes[rule])
            print(json.dumps({"market": name, "run": r, "looks": len(states),
                              **{rule: sum(p) / len(p) for rule, p in run_passes.items()},
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        for rule in rules:
            rate, lo, hi = cluster_interval(passes[rule])
            table.append({"market": name, "rule": rule, "rate": rate, "low": lo, "high": hi,
                          "replays": sum(len(p) for p in passes[rule]), "runs": args.runs})
    print(f"\n{'market':<10}{'rule':<28}{'pass rate':>10}  90% interval (cluster bootstrap)   replays")
    for row in table:
        print(f"{row['market']:<10}{row['rule']:<28}{100 * row['rate']:9.1f}%  [{100 * row['low']:5.1f}, "
              f"{100 * row['high']:5.1f}]{row['replays']:>20}")
    print(json.dumps({"settings": {k: v for k, v in vars(args).items()}, "rows": table}))


if __name__ == "__main__":
    main()
