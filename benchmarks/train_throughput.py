"""Training throughput: ms per optimizer step, env-steps/s, peak memory and achieved FLOP/s of the policy.

Run: uv run python benchmarks/train_throughput.py [--steps 5] [--repeats 1] [--device cpu|cuda] [--only readme ...]

It first prints the machine as the training defaults see it (CPU model, the ISA flags avx2/avx512/avx512_bf16/amx,
ATen's dispatch level, whether bf16 is native, torch threads; the GPU with --device cuda) and measures its matmul
rate (fp32 and bf16, square 1024 matmuls). Every configuration then runs twice, each run in its own subprocess so
that its peak memory is its own: with the default flags (``--dtype auto``, ``--compile auto``, or what was passed)
and with ``--dtype float32``. The table shows both rows, the dtype each resolved to, and the ratio of the default's
ms per step to float32's, so a slow default cannot hide. A row's ms per step is the median over ``--steps``
optimizer steps after two warm-up steps; with ``--repeats N`` each subprocess runs N times and the table gives the
median over repeats with their min and max. The policy's forward+backward FLOPs are counted with torch's
FlopCounterMode and divided by the measured time of the same forward+backward.

By default only ``readme`` and ``assets32`` run: four subprocesses, roughly a minute on an idle 2-core CPU (more when
other work shares the cores). The others are selected with ``--only`` (``--only all`` runs every configuration, and
``assets256`` alone takes minutes on 2 cores). The last line is one JSON object with the machine, the matmul rates
and every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "readme": dict(assets=None, lookback=192),
    "assets32": dict(assets=32, lookback=192),
    "assets256": dict(assets=256, lookback=192),
    "assets1024": dict(assets=1024, lookback=192),
    "lookback64": dict(assets=None, lookback=64),
    "lookback512": dict(assets=None, lookback=512),
}
COMMON = dict(batch_windows=128, rollout_groups=4)
DEFAULT_CONFIGS = ("readme", "assets32")


def matmul_rate(device, dtype, n: int = 1024, budget_s: float = 1.0) -> float:
    """Median FLOP/s of n x n x n matmuls after a warm-up: up to 7 timings, fewer once they add up to ``budget_s``
    (emulated bf16 runs at about 1 GFLOP/s, seconds per matmul)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    per_timing = 4 if device.type == "cuda" else 1  # GPU matmuls this size are short next to a sync
    times: list[float] = []
    warm = False
    while len(times) < 7 and sum(times) < budget_s:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(per_timing):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        if warm:
            times.append((time.perf_counter() - t0) / per_timing)
        warm = True
    return 2 * n**3 / statistics.median(times)


def run_one(name: str, steps: int, warmup: int, device_name: str, microbatch: int | None, checkpointing: bool,
            compile_mode: str, dtype: str, encoder: str, architecture: str, universe_sample: int | None,
            context: str, asset_head: str, cpu_heap: str = "auto") -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig
    from differentiable_market.synthetic import random_walk_market
    from differentiable_market.train import load_data
    from differentiable_market.trainer import (Trainer, env_steps_per_step, peak_memory_gb, prepare_market, time_steps,
                                              window_states)

    spec = CONFIGS[name]
    cfg = ExperimentConfig(
        policy=PolicyConfig(gradient_checkpointing=checkpointing, encoder=encoder, architecture=architecture,
                            context=context, asset_head=asset_head),
        train=TrainConfig(lookback=spec["lookback"], microbatch_windows=microbatch, device=device_name,
                          compile=compile_mode, dtype=dtype, universe_sample=universe_sample, cpu_heap=cpu_heap,
                          **COMMON),
    )
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        market = load_data(cfg) if spec["assets"] is None else random_walk_market(4000, spec["assets"], seed=0)
    device = torch.device("cuda" if device_name == "cuda" else "cpu")
    tensors, _ = prepare_market(cfg, market, device)
    trainer = Trainer(cfg, tensors, device)
    t_compile = time.perf_counter()
    if warmup:
        time_steps(trainer, warmup)  # warm-up (and compilation, when on)
    warmup_s = time.perf_counter() - t_compile
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = statistics.median(time_steps(trainer, steps))
    # the peak of training itself: read before the FLOP count below, whose dispatch mode keeps more alive (at 1,024
    # assets under --gradient-checkpointing it raised the process's peak from 7.8 to 9.0 GB)
    peak_gb = peak_memory_gb(device)

    # Policy forward+backward on one step's windows: the encoder pass and the teacher-forced head over all rollouts.
    windows = trainer.sample_windows().part(slice(0, cfg.train.microbatch))  # one forward/backward pass's windows
    policy = trainer.policy
    n_rows = cfg.train.rollout_groups + 1
    n_out = windows.growth.shape[-1]  # fewer than the policy's when windows sample a subset of the universe
    held = torch.full((*windows.bars.shape[:1], n_rows, windows.bars.shape[1], n_out), 1.0 / n_out, device=device)

    def policy_fwd_bwd() -> None:
        proj = window_states(policy, trainer.tensors.features, windows, trainer.autocast)
        policy.concentrations(proj[:, None], held).sum().backward()

    with FlopCounterMode(display=False) as counter:
        policy_fwd_bwd()
    flops = counter.get_total_flops()
    times = []
    for _ in range(max(steps, 3) if warmup else 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        policy_fwd_bwd()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    policy_s = statistics.median(times)
    return {
        "config": name,
        "assets": tensors.features.shape[1],
        "lookback": cfg.train.lookback,
        "batch_windows": cfg.train.batch_windows,
        "rollout_groups": cfg.train.rollout_groups,
        "microbatch": cfg.train.microbatch,
        "gradient_checkpointing": checkpointing,
        "encoder": encoder,
        "architecture": architecture,
        "universe_sample": universe_sample,
        "context": context,
        "asset_head": asset_head if architecture == "cross" else None,
        "cpu_heap": cpu_heap,
        "dtype_flag": dtype,
        "dtype": "float32" if trainer.autocast is None else str(trainer.autocast).removeprefix("torch."),
        "autocast": str(trainer.autocast),
        "autocast_reason": trainer.autocast_reason,
        "compiled": trainer.compiled,
        "compile_reason": trainer.compile_reason,
        "device": str(device),
        "warmup_s": warmup_s,
        "ms_per_step": step_s * 1e3,
        "env_steps_per_step": env_steps_per_step(cfg),
        "env_steps_per_s": env_steps_per_step(cfg) / step_s,
        "peak_mem_gb": peak_gb,
        "policy_fwd_bwd_ms": policy_s * 1e3,
        "policy_gflop": flops / 1e9,
        "policy_gflops": flops / policy_s / 1e9,
    }


def merge_repeats(runs: list[dict], matmul: dict[str, float]) -> dict:
    """One row from the repeats of a subprocess: medians of the timings with the min and max of ms per step, and the
    policy's FLOP/s against the parent's matmul rates."""
    row = dict(runs[0])
    ms = [r["ms_per_step"] for r in runs]
    for key in ("ms_per_step", "peak_mem_gb", "warmup_s", "policy_fwd_bwd_ms", "policy_gflops"):
        row[key] = statistics.median(r[key] for r in runs)
    row["env_steps_per_s"] = row["env_steps_per_step"] / (row["ms_per_step"] / 1e3)
    row.update(repeats=len(runs), ms_per_step_min=min(ms), ms_per_step_max=max(ms), ms_per_step_all=ms)
    row["policy_vs_fp32_matmul"] = row["policy_gflops"] / matmul["matmul_gflops_fp32"]
    row["policy_vs_bf16_matmul"] = row["policy_gflops"] / matmul["matmul_gflops_bf16"]
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'config':<12}{'arch':>17}{'encoder':>8}{'assets':>7}{'lookback':>9}{'--dtype':>9}{'dtype':>10}{'compile':>8}"
          f"{'ms/step':>9}"
          f"{'min':>8}{'max':>8}{'vs fp32':>8}{'env-steps/s':>13}{'peak GB':>9}{'policy GFLOP/s':>15}{'%fp32':>7}"
          f"{'%bf16':>7}")
    for r in rows:
        ratio = f"{r['vs_float32']:.2f}x" if r.get("vs_float32") is not None else ""
        arch = (r["architecture"] + (f"/{r['universe_sample']}" if r.get("universe_sample") else "")
                + ("/hist" if r.get("context") == "history" else "")
                + ("/aff" if r.get("asset_head") == "affine" else ""))
        print(f"{r['config']:<12}{arch:>17}{r['encoder']:>8}{r['assets']:>7}{r['lookback']:>9}{r['dtype_flag']:>9}"
              f"{r['dtype']:>10}"
              f"{'on' if r['compiled'] else 'off':>8}{r['ms_per_step']:>9.1f}{r['ms_per_step_min']:>8.1f}"
              f"{r['ms_per_step_max']:>8.1f}{ratio:>8}{r['env_steps_per_s']:>13,.0f}{r['peak_mem_gb']:>9.2f}"
              f"{r['policy_gflops']:>15.1f}{100 * r['policy_vs_fp32_matmul']:>6.1f}%"
              f"{100 * r['policy_vs_bf16_matmul']:>6.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones (default: 2); with 0 "
                    "the policy forward+backward is also timed once, cold (for configurations where a step takes "
                    "minutes)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each subprocess; the table gives the median "
                    "ms/step over them with min and max (default: 1)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--only", nargs="+", choices=[*CONFIGS, "all"],
                    help=f"configurations to run; 'all' for every one (default: {' '.join(DEFAULT_CONFIGS)})")
    ap.add_argument("--microbatch-windows", type=int, default=None)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="dtype of the default row; a float32 row always runs next to it (default: auto)")
    ap.add_argument("--encoder", nargs="+", choices=["mingru", "gru"], default=None,
                    help="policy encoder(s) to run (default: the configured default)")
    ap.add_argument("--architecture", nargs="+", choices=["flat", "cross"], default=None,
                    help="policy architecture(s) to run, each row measured in the same run (default: the configured "
                    "default)")
    ap.add_argument("--universe-sample", type=int, default=None,
                    help="cross rows: train each window on a random subset of this many assets (flat rows ignore it)")
    ap.add_argument("--context", nargs="+", choices=["window", "history"], default=None,
                    help="the encoder's context(s) to run, each row measured in the same run (rows marked /hist are "
                    "'history'; default: the configured default)")
    ap.add_argument("--asset-head", choices=["mlp", "affine"], default=None,
                    help="cross rows: the per-asset head (rows marked /aff are 'affine'; default: the configured one)")
    ap.add_argument("--cpu-heap", choices=["auto", "keep", "heap", "system"], default="auto",
                    help="the C allocator's setting of the training process (TrainConfig.cpu_heap; default: auto)")
    ap.add_argument("--interleave", action="store_true",
                    help="with --repeats: run the configurations in rounds (A B A B ...) rather than each one's repeats "
                    "in a row, so a drift in the machine's speed reaches every row alike; with two architectures the "
                    "ratio of their ms per step is also printed round by round")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.encoder is None:
        from differentiable_market.config import PolicyConfig

        args.encoder = [PolicyConfig().encoder]
    if args.architecture is None:
        from differentiable_market.config import PolicyConfig

        args.architecture = [PolicyConfig().architecture]
    if args.asset_head is None:
        from differentiable_market.config import PolicyConfig

        args.asset_head = PolicyConfig().asset_head
    if args.context is None:
        from differentiable_market.config import PolicyConfig

        args.context = [PolicyConfig().context]
    if args.repeats < 1 or args.steps < 1 or args.warmup < 0:
        ap.error("--steps and --repeats must be at least 1, --warmup at least 0")
    if args.child:
        result = run_one(args.child, args.steps, args.warmup, args.device, args.microbatch_windows, args.gradient_checkpointing,
                         args.compile, args.dtype, args.encoder[0], args.architecture[0],
                         args.universe_sample if args.architecture[0] == "cross" else None, args.context[0],
                         args.asset_head, args.cpu_heap)
        print(json.dumps(result))
        return

    import torch

    from differentiable_market.hardware import machine_info

    device = torch.device(args.device)
    machine = machine_info(device)
    print(f"machine: {machine.describe()}", flush=True)
    matmul = {
        "matmul_gflops_fp32": matmul_rate(device, torch.float32) / 1e9,
        "matmul_gflops_bf16": matmul_rate(device, torch.bfloat16) / 1e9,
    }
    print(f"matmul 1024^3: fp32 {matmul['matmul_gflops_fp32']:,.1f} GFLOP/s, bf16 "
          f"{matmul['matmul_gflops_bf16']:,.1f} GFLOP/s", flush=True)

    names = list(CONFIGS) if "all" in (args.only or ()) else list(args.only or DEFAULT_CONFIGS)
    dtype_flags = [args.dtype] if args.dtype == "float32" else [args.dtype, "float32"]
    jobs = []  # (label, command) per row, in table order
    for name, encoder, arch, context in [(n, e, a, c) for e in args.encoder for n in names for a in args.architecture
                                         for c in args.context]:
        for dtype_flag in dtype_flags:
            cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--device", args.device,
                   "--compile", args.compile, "--dtype", dtype_flag, "--encoder", encoder, "--architecture", arch,
                   "--context", context, "--asset-head", args.asset_head, "--cpu-heap", args.cpu_heap]
            if args.microbatch_windows:
                cmd += ["--microbatch-windows", str(args.microbatch_windows)]
            if args.universe_sample and context == "window":
                cmd += ["--universe-sample", str(args.universe_sample)]
            if args.gradient_checkpointing:
                cmd.append("--gradient-checkpointing")
            jobs.append((f"{name} {arch} {context} {encoder} --dtype {dtype_flag}", cmd))
    runs: list[list[dict]] = [[] for _ in jobs]
    order = ([(r, j) for r in range(args.repeats) for j in range(len(jobs))] if args.interleave
             else [(r, j) for j in range(len(jobs)) for r in range(args.repeats)])
    for repeat, j in order:
        label, cmd = jobs[j]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"configuration {label} failed:\n{out.stderr}")
        runs[j].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done {label} ({runs[j][-1]['dtype']}: {runs[j][-1]['autocast_reason']}), "
              f"repeat {repeat + 1}/{args.repeats}: {runs[j][-1]['ms_per_step']:.1f} ms/step", file=sys.stderr,
              flush=True)
    rows = [merge_repeats(r, matmul) for r in runs]
    for i in range(0, len(rows), len(dtype_flags)):
        group = rows[i:i + len(dtype_flags)]
        fp32 = next(r for r in group if r["dtype_flag"] == "float32")
        for r in group:
            r["vs_float32"] = r["ms_per_step"] / fp32["ms_per_step"] if r is not fp32 else None
    if args.interleave and len(args.architecture) == 2:
        first, second = args.architecture
        for row in rows:
            if row["architecture"] != second:
                continue
            other = next(r for r in rows if r["architecture"] == first and r["config"] == row["config"]
                         and r["dtype_flag"] == row["dtype_flag"] and r["encoder"] == row["encoder"]
                         and r["context"] == row["context"])
            ratios = [b / a for a, b in zip(other["ms_per_step_all"], row["ms_per_step_all"], strict=True)]
            row[f"vs_{first}_by_round"] = ratios
            print(f"{row['config']} --dtype {row['dtype_flag']}: {second} / {first} ms per step, round by round: "
                  + ", ".join(f"{x:.2f}" for x in ratios) + f" (median {statistics.median(ratios):.2f})")
    print_table(rows)
    print("vs fp32: ms per step of the row over the float32 row of the same configuration (above 1: slower)")
    print(json.dumps({"benchmark": "train_throughput", "machine": dataclasses.asdict(machine), **matmul,
                      "repeats": args.repeats, "steps": args.steps, "results": rows}))


if __name__ == "__main__":
    main()
