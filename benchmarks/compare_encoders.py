"""Which encoder learns as well, and how fast: the parallel-scan minimal GRU against nn.GRU, on validation data only.

For each encoder and seed it trains (a) on a planted-signal market (asset 0 is AR(1), the rest random walks; 200
steps, lookback 32, 32 windows) and (b) on the bundled daily sample with the default configuration, and reports the
deterministic policy's excess over equal weight on the VALIDATION split (log growth and the t-statistic of the per-bar
excess), the generalisation gap (training rollouts' log growth per bar minus validation's, in basis points), and the
median ms per optimizer step. Float32 throughout, so the comparison does not depend on the CPU's bf16 support.

Run: uv run python benchmarks/compare_encoders.py [--seeds 0 1 2] [--sample-steps 600] [--planted-steps 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import torch

from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.hardware import machine_info
from differentiable_market.synthetic import planted_signal_market
from differentiable_market.train import load_data
from differentiable_market.trainer import Trainer, prepare_market

CPU = torch.device("cpu")


def train_and_validate(market, cfg: ExperimentConfig, eval_every: int) -> dict:
    """Train ``cfg.train.epochs`` steps; validate every ``eval_every`` steps (as the CLI does) and at the end."""
    tensors, _ = prepare_market(cfg, market, CPU)
    trainer = Trainer(cfg, tensors, CPU)
    step_s, evals, rewards = [], [], []
    for step in range(1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        stats = trainer.step()
        step_s.append(time.perf_counter() - t0)
        if stats is not None:
            rewards.append(float(stats[1]))
        if step % eval_every == 0 or step == cfg.train.epochs:
            ev = trainer.evaluate("validation")
            evals.append({"step": step, "excess": ev["excess_vs_equal_weight"]["log_growth"],
                          "t_stat": ev["excess_vs_equal_weight"]["t_stat"], "objective": ev["policy"]["objective"],
                          "val_bps_per_bar": 1e4 * ev["policy"]["log_growth"] / ev["bars"],
                          "turnover": ev["policy"]["turnover"]})
    best = max(evals, key=lambda e: e["objective"])  # what the CLI keeps as best.pt
    final = evals[-1]
    # rollout objective per bar over the last 20 steps (log growth when the risk terms are off, as by default)
    train_bps = 1e4 * statistics.mean(rewards[-20:]) / cfg.train.lookback
    return {
        "final_excess": final["excess"], "final_t": final["t_stat"], "best_excess": best["excess"],
        "best_t": best["t_stat"], "best_step": best["step"], "final_turnover": final["turnover"],
        "train_bps_per_bar": train_bps, "val_bps_per_bar": final["val_bps_per_bar"],
        "ms_per_step": 1e3 * statistics.median(step_s[2:]),
    }


def timed_row(labels: dict, market, cfg: ExperimentConfig, eval_every: int) -> dict:
    """``labels`` plus ``train_and_validate``'s figures and the wall seconds; printed as one JSON line."""
    t0 = time.perf_counter()
    row = {**labels, **train_and_validate(market, cfg, eval_every), "seconds": time.perf_counter() - t0}
    print(json.dumps(row), flush=True)
    return row


def summary(results: list[dict], markets: list[str], names: list[str], key: str) -> None:
    """Per market and ``key`` value (encoder, policy...): mean and range over seeds of the validation figures."""
    print(f"\n{'market':<9}{key:<17}{'final val excess':>20}{'final t':>16}{'best-ckpt t':>16}"
          f"{'gap bps/bar':>20}{'ms/step':>9}")
    for market_name in markets:
        for name in names:
            rows = [r for r in results if r["market"] == market_name and r[key] == name]
            if not rows:
                continue
            ex = [r["final_excess"] for r in rows]
            ts = [r["final_t"] for r in rows]
            bt = [r["best_t"] for r in rows]
            gap = [r["train_bps_per_bar"] - r["val_bps_per_bar"] for r in rows]
            ms = statistics.median(r["ms_per_step"] for r in rows)
            print(f"{market_name:<9}{name:<17}{statistics.mean(ex):>+8.3f} ({min(ex):+.2f}..{max(ex):+.2f})"
                  f"{statistics.mean(ts):>+6.2f} ({min(ts):+.1f}..{max(ts):+.1f})"
                  f"{statistics.mean(bt):>+6.2f} ({min(bt):+.1f}..{max(bt):+.1f})"
                  f"{statistics.mean(gap):>+8.2f} ({min(gap):+.1f}..{max(gap):+.1f}){ms:>9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--encoders", nargs="+", default=["mingru", "gru"], choices=["mingru", "gru"])
    ap.add_argument("--sample-steps", type=int, default=600)
    ap.add_argument("--planted-steps", type=int, default=200)
    ap.add_argument("--markets", nargs="+", default=["planted", "sample"], choices=["planted", "sample"])
    args = ap.parse_args()
    print(f"# {machine_info(CPU).describe()}", flush=True)
    with contextlib.redirect_stdout(io.StringIO()):
        sample = load_data(ExperimentConfig())
    results = []
    for market_name in args.markets:
        for encoder in args.encoders:
            for seed in args.seeds:
                if market_name == "planted":
                    market = planted_signal_market(3000, 4, seed=seed)
                    train = TrainConfig(lookback=32, batch_windows=32, epochs=args.planted_steps, seed=seed,
                                        dtype="float32", device="cpu")
                    eval_every = 50
                else:
                    market = sample
                    train = TrainConfig(epochs=args.sample_steps, seed=seed, dtype="float32", device="cpu")
                    eval_every = train.eval_interval
                cfg = ExperimentConfig(policy=PolicyConfig(encoder=encoder), train=train)
                results.append(timed_row({"market": market_name, "encoder": encoder, "seed": seed}, market, cfg,
                                         eval_every))
    summary(results, args.markets, args.encoders, key="encoder")
    print(json.dumps({"benchmark": "compare_encoders", "machine": machine_info(CPU).describe(), "results": results}))


if __name__ == "__main__":
    main()
