"""Which mix of GRPO policy gradient and pathwise env gradient learns best?

Trains the same policy with each loss mix on (a) planted-signal markets, where an edge exists, and (b) the bundled
daily sample, and reports the excess log growth over equal weight on the validation split only (deterministic
policy, exact costs). The mix is a choice, and choices are made on validation; the test split is never evaluated
here, so it stays unseen for the final check (a backtest, or a walk-forward study). Run:
uv run python benchmarks/compare_objectives.py [--steps N] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from differentiable_market.config import ExperimentConfig, TrainConfig
from differentiable_market.train import load_data
from differentiable_market.synthetic import planted_signal_market
from differentiable_market.trainer import Trainer, prepare_market

MIXES = {
    "pg only": dict(pg_weight=1.0, pathwise_weight=0.0),
    "pathwise only": dict(pg_weight=0.0, pathwise_weight=1.0),
    "pg + pathwise": dict(pg_weight=1.0, pathwise_weight=1.0),
    "pg + 10x pathwise": dict(pg_weight=1.0, pathwise_weight=10.0),
}


def run(market, train_cfg: TrainConfig, steps: int) -> float:
    """Excess log growth per bar of the trained policy over equal weight, on the validation split."""
    cfg = ExperimentConfig(train=dataclasses.replace(train_cfg, epochs=steps))
    tensors, _ = prepare_market(cfg, market, torch.device("cpu"))
    trainer = Trainer(cfg, tensors, torch.device("cpu"))
    for _ in range(steps):
        trainer.step()
    ev = trainer.evaluate("validation")
    return ev["policy"]["log_growth"] - ev["equal_weight"]["log_growth"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    sample = load_data(ExperimentConfig())
    results = []
    for mix_name, mix in MIXES.items():
        for market_name in ("planted", "sample"):
            for seed in args.seeds:
                t0 = time.perf_counter()
                if market_name == "planted":
                    market = planted_signal_market(1500, 4, seed=seed)
                    tc = TrainConfig(lookback=32, batch_windows=32, seed=seed, **mix)
                else:
                    market = sample
                    tc = TrainConfig(seed=seed, **mix)
                val = run(market, tc, args.steps)
                results.append(dict(mix=mix_name, market=market_name, seed=seed, val_excess=val,
                                    seconds=time.perf_counter() - t0))
                print(json.dumps(results[-1]), flush=True)
    print(f"\n{'mix':<20}{'market':<9}{'val excess (mean)':>19}{'min':>10}{'max':>10}")
    summary = {}
    for mix_name in MIXES:
        for market_name in ("planted", "sample"):
            vals = [r["val_excess"] for r in results if r["mix"] == mix_name and r["market"] == market_name]
            v = statistics.mean(vals)
            summary[f"{mix_name}|{market_name}"] = {"val_excess": v, "val_excess_min": min(vals),
                                                    "val_excess_max": max(vals)}
            print(f"{mix_name:<20}{market_name:<9}{v:>+19.4f}{min(vals):>+10.4f}{max(vals):>+10.4f}")
    print(json.dumps({"steps": args.steps, "seeds": args.seeds, "summary": summary}))


if __name__ == "__main__":
    main()
