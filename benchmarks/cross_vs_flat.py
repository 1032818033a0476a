"""The cross-sectional policy's training step against the flat one's, paired in one process.

Run: uv run python benchmarks/cross_vs_flat.py [--assets 256] [--dtype float32] [--rounds 6]
     [--gradient-checkpointing] [--cpu-heap auto|keep|heap|system] [--mixing pool|mean|attention]
     [--asset-head-hidden K]

Both Trainers are built on the same synthetic random walk (4,000 bars; README configuration otherwise: 128 windows x
4 rollouts, lookback 192, the default policies) and take one untimed step each; then each round times one step of
each, the order alternating from round to round. On a shared 2-core machine whole-process timings of the same
configuration drift by 10-30% between processes; steps of two trainers taken in turn in one process see the same
drift, so the ratio of a round's two steps holds still where the step times do not. Prints the machine, each step's
seconds, the medians, the cross / flat ratio round by round and its median, and one JSON line. ``train_throughput.py``
gives each configuration's own process, peak memory and FLOP rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=256, help="assets of the synthetic random walk (default: 256)")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    ap.add_argument("--rounds", type=int, default=6, help="timed steps of each policy (default: 6)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="both policies recompute activations")
    ap.add_argument("--cpu-heap", choices=["auto", "keep", "heap", "system"], default="auto")
    ap.add_argument("--mixing", choices=["pool", "mean", "attention"], help="the cross policy's mixing (default: "
                    "the configured default)")
    ap.add_argument("--asset-head-hidden", type=int, help="the cross policy's head width (default: the configured "
                    "default)")
    args = ap.parse_args()
    if args.rounds < 1 or args.assets < 2:
        ap.error("--rounds must be at least 1 and --assets at least 2")

    import torch

    from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig
    from differentiable_market.hardware import machine_info
    from differentiable_market.heap import resolve_cpu_heap
    from differentiable_market.synthetic import random_walk_market
    from differentiable_market.trainer import Trainer, prepare_market

    device = torch.device("cpu")
    machine = machine_info(device)
    print(f"machine: {machine.describe()}", flush=True)
    market = random_walk_market(4000, args.assets, seed=0)
    trainers = {}
    for arch in ("flat", "cross"):
        cfg = ExperimentConfig(
            policy=PolicyConfig(architecture=arch, gradient_checkpointing=args.gradient_checkpointing,
                                mixing=args.mixing or PolicyConfig().mixing,
                                asset_head_hidden=args.asset_head_hidden or PolicyConfig().asset_head_hidden),
            train=TrainConfig(lookback=192, batch_windows=128, rollout_groups=4, device="cpu", dtype=args.dtype,
                              cpu_heap=args.cpu_heap))
        tensors, _ = prepare_market(cfg, market, device)
        trainers[arch] = Trainer(cfg, tensors, device)
        trainers[arch].step()
    seconds: dict[str, list[float]] = {"flat": [], "cross": []}
    for r in range(args.rounds):
        for arch in ("flat", "cross") if r % 2 == 0 else ("cross", "flat"):
            t0 = time.perf_counter()
            trainers[arch].step()
            seconds[arch].append(time.perf_counter() - t0)
        print(f"round {r + 1}: flat {seconds['flat'][-1]:.2f} s, cross {seconds['cross'][-1]:.2f} s", flush=True)
    ratios = [c / f for c, f in zip(seconds["cross"], seconds["flat"], strict=True)]
    medians = {arch: statistics.median(s) for arch, s in seconds.items()}
    heap = resolve_cpu_heap(args.cpu_heap, args.gradient_checkpointing)
    print(f"{args.assets} assets, --dtype {args.dtype} ({trainers['cross'].autocast_reason}), cpu heap {heap}, "
          f"mixing {trainers['cross'].cfg.policy.mixing}, head {trainers['cross'].cfg.policy.asset_head_hidden}: "
          f"flat median {medians['flat']:.2f} s/step, cross median {medians['cross']:.2f} s/step; "
          f"cross / flat by round " + ", ".join(f"{x:.2f}" for x in ratios)
          + f" (median {statistics.median(ratios):.2f})")
    print(json.dumps({"benchmark": "cross_vs_flat", "machine": dataclasses.asdict(machine), "assets": args.assets,
                      "dtype": args.dtype, "gradient_checkpointing": args.gradient_checkpointing,
                      "cpu_heap": args.cpu_heap,
                      "mixing": trainers["cross"].cfg.policy.mixing,
                      "asset_head_hidden": trainers["cross"].cfg.policy.asset_head_hidden, "seconds": seconds, "median_s": medians,
                      "cross_over_flat": ratios, "median_cross_over_flat": statistics.median(ratios)}))


if __name__ == "__main__":
    main()
