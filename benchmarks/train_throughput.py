"""Training throughput: ms per optimizer step, env-steps/s, peak memory and achieved FLOP/s of the policy.

Run: uv run python benchmarks/train_throughput.py [--steps 5] [--device cpu|cuda] [--only readme]

Each configuration runs in its own subprocess so that its peak memory is its own. For every configuration it prints
the median over ``--steps`` optimizer steps after two warm-up steps. The policy's forward+backward FLOPs are counted
with torch's FlopCounterMode and divided by the measured time of the same forward+backward, next to the machine's
matmul rate measured in the same process (fp32 and bf16, square matmuls).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "readme": dict(assets=None, lookback=192),
    "assets32": dict(assets=32, lookback=192),
    "assets256": dict(assets=256, lookback=192),
    "lookback64": dict(assets=None, lookback=64),
    "lookback512": dict(assets=None, lookback=512),
}
COMMON = dict(batch_windows=128, rollout_groups=4)


def matmul_rate(device, dtype, n: int = 1024, repeats: int = 7) -> float:
    """Median FLOP/s of an n x n x n matmul."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / 4)
    return 2 * n**3 / statistics.median(times[2:])


def run_one(name: str, steps: int, device_name: str, microbatch: int | None, checkpointing: bool, compile_mode: str,
            dtype: str) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig
    from differentiable_market.synthetic import random_walk_market
    from differentiable_market.train import load_data
    from differentiable_market.trainer import Trainer, env_steps_per_step, peak_memory_gb, prepare_market, time_steps

    spec = CONFIGS[name]
    cfg = ExperimentConfig(
        policy=PolicyConfig(gradient_checkpointing=checkpointing),
        train=TrainConfig(lookback=spec["lookback"], microbatch_windows=microbatch, device=device_name,
                          compile=compile_mode, dtype=dtype, **COMMON),
    )
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        market = load_data(cfg) if spec["assets"] is None else random_walk_market(4000, spec["assets"], seed=0)
    device = torch.device("cuda" if device_name == "cuda" else "cpu")
    tensors, _ = prepare_market(cfg, market, device)
    trainer = Trainer(cfg, tensors, device)
    t_compile = time.perf_counter()
    time_steps(trainer, 2)  # warm-up (and compilation, when on)
    warmup_s = time.perf_counter() - t_compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = statistics.median(time_steps(trainer, steps))

    # Policy forward+backward on one step's windows: the GRU pass and the teacher-forced head over all rollouts.
    features, _, _ = trainer.sample_windows()
    policy = trainer.policy
    n_rows = cfg.train.rollout_groups + 1
    held = torch.full((features.shape[0], n_rows, features.shape[1], policy.n_out), 1.0 / policy.n_out, device=device)

    def policy_fwd_bwd() -> None:
        proj = policy.state_projection(policy.encode(features, trainer.autocast))
        policy.concentrations(proj[:, None], held).sum().backward()

    with FlopCounterMode(display=False) as counter:
        policy_fwd_bwd()
    flops = counter.get_total_flops()
    times = []
    for _ in range(max(steps, 3)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        policy_fwd_bwd()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    policy_s = statistics.median(times)
    rate32 = matmul_rate(device, torch.float32)
    rate16 = matmul_rate(device, torch.bfloat16)
    achieved = flops / policy_s
    return {
        "config": name,
        "assets": tensors.features.shape[1],
        "lookback": cfg.train.lookback,
        "batch_windows": cfg.train.batch_windows,
        "rollout_groups": cfg.train.rollout_groups,
        "microbatch": cfg.train.microbatch,
        "gradient_checkpointing": checkpointing,
        "compiled": trainer.compiled,
        "autocast": str(trainer.autocast),
        "device": str(device),
        "warmup_s": warmup_s,
        "ms_per_step": step_s * 1e3,
        "env_steps_per_s": env_steps_per_step(cfg) / step_s,
        "peak_mem_gb": peak_memory_gb(device),
        "policy_fwd_bwd_ms": policy_s * 1e3,
        "policy_gflop": flops / 1e9,
        "policy_gflops": achieved / 1e9,
        "matmul_gflops_fp32": rate32 / 1e9,
        "matmul_gflops_bf16": rate16 / 1e9,
        "policy_vs_fp32_matmul": achieved / rate32,
        "policy_vs_bf16_matmul": achieved / rate16,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps per configuration (median reported)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), help="configurations to run (default: all)")
    ap.add_argument("--microbatch-windows", type=int, default=None)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = run_one(args.child, args.steps, args.device, args.microbatch_windows, args.gradient_checkpointing,
                         args.compile, args.dtype)
        print(json.dumps(result))
        return
    results = []
    for name in args.only or list(CONFIGS):
        cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--device", args.device,
               "--compile", args.compile, "--dtype", args.dtype]
        if args.microbatch_windows:
            cmd += ["--microbatch-windows", str(args.microbatch_windows)]
        if args.gradient_checkpointing:
            cmd.append("--gradient-checkpointing")
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"configuration {name} failed:\n{out.stderr}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done {name}", file=sys.stderr, flush=True)
    header = (f"{'config':<12}{'assets':>7}{'lookback':>9}{'ms/step':>9}{'env-steps/s':>13}{'peak GB':>9}"
              f"{'policy GFLOP/s':>15}{'fp32 mm':>9}{'bf16 mm':>9}{'%fp32':>7}{'%bf16':>7}")
    print(header)
    for r in results:
        print(f"{r['config']:<12}{r['assets']:>7}{r['lookback']:>9}{r['ms_per_step']:>9.1f}{r['env_steps_per_s']:>13,.0f}"
              f"{r['peak_mem_gb']:>9.2f}{r['policy_gflops']:>15.1f}{r['matmul_gflops_fp32']:>9.1f}"
              f"{r['matmul_gflops_bf16']:>9.1f}{100 * r['policy_vs_fp32_matmul']:>6.1f}%"
              f"{100 * r['policy_vs_bf16_matmul']:>6.1f}%")
    print(json.dumps({"benchmark": "train_throughput", "results": results}))


if __name__ == "__main__":
    main()
