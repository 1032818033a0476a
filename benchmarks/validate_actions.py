"""The development runs behind the default action, policy and pathwise weight: validation splits only.

For each market, variant and seed it trains one run (lookback 64, 32 windows, 200 steps, float32) and prints the
deterministic policy's total excess log growth over equal weight on the VALIDATION split at the end of training,
its t-statistic and its turnover per bar, one JSON line per run. The reference rule's excess on the same bars is
printed once per market (OLMAR, 10 bps), for scale. ``benchmarks/compare_actions.py`` then checks the chosen design
out of sample with walk-forward studies.

A variant is ``<architecture>-<action>-pw<pathwise weight>[@<training fee bps>]``, e.g. ``cross-band-pw10`` or
``cross-target-pw10@20``.

Run: uv run --group crosscheck python benchmarks/validate_actions.py [--markets reversal nyse random sample]
     [--variants flat-target-pw1 cross-target-pw1 cross-target-pw10 cross-band-pw10] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import torch
from compare_actions import build_market
from compare_encoders import CPU, timed_row

from differentiable_market import baselines
from differentiable_market.config import EnvConfig, ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.env import account, initial_holdings
from differentiable_market.hardware import machine_info
from differentiable_market.train import load_data
from differentiable_market.trainer import prepare_market


def market(name: str):
    """The bundled sample, or ``compare_actions``' market of that name."""
    if name == "sample":
        with contextlib.redirect_stdout(io.StringIO()):
            return load_data(ExperimentConfig())
    return build_market(name)


def variant_config(variant: str, execution: str, seed: int, epochs: int) -> ExperimentConfig:
    name, _, fee = variant.partition("@")
    architecture, action, pw = name.split("-")
    return ExperimentConfig(
        env=EnvConfig(execution=execution, train_cost_bps=float(fee) if fee else None),
        policy=PolicyConfig(architecture=architecture, action=action),
        train=TrainConfig(lookback=64, batch_windows=32, epochs=epochs, seed=seed, pathwise_weight=float(pw[2:]),
                          dtype="float32", device="cpu"),
    )


def olmar_validation_excess(data, cfg: ExperimentConfig) -> float:
    """OLMAR's total log growth minus equal weight's over the validation split, one path from nothing held."""
    tensors, _ = prepare_market(cfg, data, CPU)
    a, b = tensors.decision_range("validation")
    g = tensors.growth[a:b][None].double()
    initial = initial_holdings(g.shape[-1], False, dtype=torch.float64)
    w = baselines.olmar(torch.tensor(data.close), torch.arange(a, b)[None], False).double()
    ew = torch.full_like(g, 1.0 / g.shape[-1])
    rate = cfg.env.cost_rate
    return float(account(w, g, initial, rate, False).log_growth.sum() - account(ew, g, initial, rate, False).log_growth.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", nargs="+", default=["reversal", "nyse", "random", "sample"])
    ap.add_argument("--variants", nargs="+",
                    default=["flat-target-pw1", "cross-target-pw1", "cross-target-pw10", "cross-band-pw10"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=200)
    args = ap.parse_args()
    print(f"# {machine_info(CPU).describe()}", flush=True)
    for name in args.markets:
        data = market(name)
        execution = "close" if name == "nyse" else "open"
        base = variant_config(args.variants[0], execution, 0, args.epochs)
        print(json.dumps({"market": name, "olmar_validation_excess": olmar_validation_excess(data, base)}), flush=True)
        for variant in args.variants:
            for seed in args.seeds:
                timed_row({"market": name, "variant": variant, "seed": seed}, data,
                          variant_config(variant, execution, seed, args.epochs), 50)


if __name__ == "__main__":
    main()
