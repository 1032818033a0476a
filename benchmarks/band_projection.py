"""The band action's projection: safeguarded Newton (``actions.band_projection``) against the sorted-knots crossing.

Run: uv run python benchmarks/band_projection.py [--device cpu|cuda] [--repeats 20]

For rows x assets the size of one bar of the rollout loop (README batch: 128 windows x 5 rows), with holdings drawn
near the target (as after training) and far from it (as at the start), it prints the median ms of each route and
their ratio, measured in the same run, and the largest difference between their results.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from differentiable_market import actions


def sorted_route(h: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.clamp(h + actions._sorted_shift(h, lo, hi), lo, hi)


def median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"{'rows':>5} {'assets':>6} {'holdings':>9} {'newton ms':>10} {'sort ms':>8} {'sort/newton':>11} {'max diff':>9}")
    for n_assets in (33, 257, 1025):
        for start in ("near", "far"):
            rows = 640
            u = torch.distributions.Dirichlet(torch.full((n_assets,), 1.0)).sample((rows,))
            noise = torch.distributions.Dirichlet(torch.full((n_assets,), 1.0)).sample((rows,))
            h = 0.95 * u + 0.05 * noise if start == "near" else noise
            b = 0.25 / n_assets
            u, h = u.to(device), h.to(device)
            lo, hi = (u - b).clamp_min(0.0), u + b
            newton = median_ms(lambda: actions.band_projection(h, lo, hi), device, args.repeats)
            sort = median_ms(lambda: sorted_route(h, lo, hi), device, args.repeats)
            diff = float((actions.band_projection(h, lo, hi) - sorted_route(h, lo, hi)).abs().max())
            print(f"{rows:>5} {n_assets:>6} {start:>9} {newton:>10.3f} {sort:>8.3f} {sort / newton:>11.2f} {diff:>9.1e}")


if __name__ == "__main__":
    main()
