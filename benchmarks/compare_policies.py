"""Flat against cross-sectional policy (pooled or attention mixing), on validation data only.

For each policy variant and seed it trains on three markets and reports the deterministic policy's excess over equal
weight on the VALIDATION split (log growth and the t-statistic of the per-bar excess), the generalisation gap
(training rollouts' log growth per bar minus validation's, in basis points) and the median ms per optimizer step:

- ``planted``: 3000 bars x 4 assets, asset 0 AR(1) with phi 0.5, the rest random walks (200 steps, lookback 32,
  32 windows), as in ``compare_encoders.py``;
- ``sample``: the bundled 4-stock daily sample with the default training configuration (600 steps);
- ``m64``: 3000 bars x 64 assets, 8 of them AR(1) with phi 0.15 (a weak signal carried by a minority), the other 56
  random walks (300 steps, lookback 64, 32 windows).

Variants: ``flat``, ``cross-pool``, ``cross-attention``, and ``cross-pool-subset``, which trains each window on a
random quarter of the assets (``--universe-sample``; run it with ``--variants``).

Float32 throughout, so the comparison does not depend on the CPU's bf16 support. Every row is printed as JSON as it
finishes (a long run can be read while it goes); the summary table and one JSON object close the output.

Run: uv run python benchmarks/compare_policies.py [--seeds 0 1 2] [--variants flat cross-pool cross-attention]
     [--markets planted sample m64] [--sample-steps 600] [--planted-steps 200] [--m64-steps 300]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json

from compare_encoders import CPU, summary, timed_row

from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.hardware import machine_info
from differentiable_market.synthetic import planted_signal_market
from differentiable_market.train import load_data

# name: (policy, training overrides)
VARIANTS = {
    "flat": (PolicyConfig(architecture="flat"), {}),
    "cross-pool": (PolicyConfig(architecture="cross", mixing="pool"), {}),
    "cross-attention": (PolicyConfig(architecture="cross", mixing="attention"), {}),
    # each training window trades a random quarter of the universe (at least 2 assets)
    "cross-pool-subset": (PolicyConfig(architecture="cross", mixing="pool"), {"universe_sample": "quarter"}),
}


def market_and_train(name: str, seed: int, args: argparse.Namespace, sample) -> tuple[object, TrainConfig, int]:
    """The market, the training config and the evaluation interval of one market setting."""
    if name == "planted":
        train = TrainConfig(lookback=32, batch_windows=32, epochs=args.planted_steps, seed=seed, dtype="float32",
                            device="cpu")
        return planted_signal_market(3000, 4, seed=seed), train, 50
    if name == "m64":
        train = TrainConfig(lookback=64, batch_windows=32, epochs=args.m64_steps, seed=seed, dtype="float32",
                            device="cpu")
        return planted_signal_market(3000, 64, seed=seed, autocorrelation=0.15, signal_assets=8), train, 50
    train = TrainConfig(epochs=args.sample_steps, seed=seed, dtype="float32", device="cpu")
    return sample, train, train.eval_interval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["flat", "cross-pool", "cross-attention"], choices=list(VARIANTS))
    ap.add_argument("--markets", nargs="+", default=["planted", "m64", "sample"], choices=["planted", "m64", "sample"])
    ap.add_argument("--sample-steps", type=int, default=600)
    ap.add_argument("--planted-steps", type=int, default=200)
    ap.add_argument("--m64-steps", type=int, default=300)
    args = ap.parse_args()
    print(f"# {machine_info(CPU).describe()}", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        sample = load_data(ExperimentConfig())
    results = []
    for market_name in args.markets:
        for variant in args.variants:
            for seed in args.seeds:
                market, train, eval_every = market_and_train(market_name, seed, args, sample)
                policy, overrides = VARIANTS[variant]
                if overrides.get("universe_sample") == "quarter":
                    train = dataclasses.replace(train, universe_sample=max(2, market.n_assets // 4))
                cfg = ExperimentConfig(policy=policy, train=train)
                results.append(timed_row({"market": market_name, "policy": variant, "seed": seed}, market, cfg,
                                         eval_every))
    summary(results, args.markets, args.variants, key="policy")
    print(json.dumps({"benchmark": "compare_policies", "machine": machine_info(CPU).describe(), "results": results}))


if __name__ == "__main__":
    main()
