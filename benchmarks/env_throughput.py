"""Throughput of the differentiable env in env-steps per second (windows x rollouts x bars per second).

Times ``env.env_objective`` on one batch, as the trainer calls it: decision growth [W, 1, T, A] shared by the R
rollouts of each window, target weights [W, R, T, A], smooth cost with the risk and drawdown terms on. Three modes:
"forward" (smooth, no autograd graph), "forward+backward" (smooth, gradient w.r.t. the weights) and "exact forward"
(the backtest's exact |x|). Each figure is the median of several repeats after warm-up; the fastest repeat is shown
too, since on a shared CPU the median moves with other processes' load. ``--compile`` adds the same
modes through ``torch.compile(env_objective, fullgraph=True)`` (compile time excluded, reported separately).

    uv run python benchmarks/env_throughput.py [--windows 512 --rollouts 4 --bars 192 --assets 32 --compile]

Prints one table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from differentiable_market.config import EnvConfig
from differentiable_market.env import env_objective, initial_holdings


def _time(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_device(args: argparse.Namespace, device: torch.device, compiled: bool) -> list[dict[str, object]]:
    cfg = EnvConfig(include_cash=args.include_cash, risk_aversion=0.1, drawdown_lambda=0.1)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n_total = args.assets + int(args.include_cash)
    shape_w = (args.windows, args.rollouts, args.bars, n_total)
    growth = torch.exp(0.01 * torch.randn(args.windows, 1, args.bars, n_total, generator=gen))
    if args.include_cash:
        growth[..., -1] = 1.0
    growth = growth.to(device)
    weights = torch.softmax(torch.randn(shape_w, generator=gen), dim=-1).to(device)
    start = initial_holdings(n_total, args.include_cash, device, torch.float32)
    steps = args.windows * args.rollouts * args.bars
    env_fn = torch.compile(env_objective, fullgraph=True) if compiled else env_objective

    def forward() -> None:
        with torch.no_grad():
            env_fn(weights, growth, start, cfg, smooth=True)

    def forward_backward() -> None:
        w = weights.detach().requires_grad_(True)
        value, _ = env_fn(w, growth, start, cfg, smooth=True)
        value.sum().backward()

    def exact_forward() -> None:
        with torch.no_grad():
            env_fn(weights, growth, start, cfg, smooth=False)

    rows = []
    for mode, fn in (("forward", forward), ("forward+backward", forward_backward), ("exact forward", exact_forward)):
        compile_s = None
        if compiled:
            begin = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compile_s = time.perf_counter() - begin
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = _time(fn, device, args.warmup, args.repeats)
        median = statistics.median(seconds)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append({
            "device": str(device),
            "compiled": compiled,
            "mode": mode,
            "median_s": median,
            "best_s": min(seconds),
            "env_steps_per_s": steps / median,
            "peak_mib": peak,
            "compile_s": compile_s,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=512)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--bars", type=int, default=192)
    parser.add_argument("--assets", type=int, default=32, help="non-cash assets")
    parser.add_argument("--include-cash", action="store_true", help="add the cash column (A + 1 weights)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(env_objective)")
    parser.add_argument("--devices", default="auto", help="comma list of cpu,cuda; auto = cpu plus cuda if present")
    args = parser.parse_args()

    names = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    devices = [torch.device(n) for n in names if n != "cuda" or torch.cuda.is_available()]
    variants = (False, True) if args.compile else (False,)
    rows = [row for device in devices for compiled in variants for row in bench_device(args, device, compiled)]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"env throughput: {args.windows} windows x {args.rollouts} rollouts x {args.bars} bars x {args.assets} "
          f"assets{' + cash' if args.include_cash else ''}, float32, median of {args.repeats} after {args.warmup} "
          f"warm-up; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, 1-min load {load}")
    print(f"{'device':<8} {'variant':<9} {'mode':<18} {'median ms':>10} {'best ms':>8} {'env-steps/s':>14} "
          f"{'peak MiB':>9} {'compile s':>10}")
    for row in rows:
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        compile_s = "-" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        variant = "compiled" if row["compiled"] else "eager"
        print(f"{row['device']:<8} {variant:<9} {row['mode']:<18} {1e3 * row['median_s']:>10.1f} "
              f"{1e3 * row['best_s']:>8.1f} {row['env_steps_per_s']:>14,.0f} {peak:>9} {compile_s:>10}")
    record = {
        "benchmark": "env_throughput",
        "windows": args.windows,
        "rollouts": args.rollouts,
        "bars": args.bars,
        "assets": args.assets,
        "include_cash": args.include_cash,
        "dtype": "float32",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "load_1min": load,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "results": rows,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
