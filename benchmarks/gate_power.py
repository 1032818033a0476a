"""What the best.pt selection gate can detect: the smallest edge it passes with 80% power, by validation length.

Simulates the gate (``gate.SelectionGate``) on synthetic validation paths whose per-bar excess log growth over
equal weight has a known annualised information ratio IR (mean / sd, times sqrt(252)), daily bars. Two settings:

- ``one look``: one candidate (a pretrained policy scored as it is, or one final checkpoint);
- ``K looks``: a run's K evaluations, their excess paths correlated 0.9 with each other (consecutive checkpoints
  trade alike), the edge present in every look.

The untrained policy is taken to be equal weight itself (the differentials against both benchmarks coincide), the
excess i.i.d. normal. For each validation length it finds, by bisection on IR over ``--sims`` simulated paths per
point, the IR at which the gate passes in 80% of them, and prints the annualised excess log growth that IR means at a
given tracking error (``--tracking-error``, per year).

Run: uv run python benchmarks/gate_power.py [--bars 150 300 450 900 1800] [--looks 12] [--sims 200] [--min-t 2]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from differentiable_market.gate import Look, SelectionGate

BARS_PER_YEAR = 252


def pass_rate(ir: float, bars: int, looks: int, sims: int, min_t: float, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    sd = 0.01
    mean = ir / math.sqrt(BARS_PER_YEAR) * sd
    passes = 0
    for s in range(sims):
        common = rng.normal(0.0, sd, size=bars)
        gate = SelectionGate(min_t, seed=s, reps=reps)
        for k in range(looks):
            own = rng.normal(0.0, sd, size=bars)
            x = mean + math.sqrt(0.9) * common + math.sqrt(0.1) * own if looks > 1 else mean + common
            gate.looks.append(Look(50 * (k + 1), float(x.sum()), x, x))
        passes += gate.decide().step is not None
    return passes / sims


def ir_at_power(bars: int, looks: int, sims: int, min_t: float, reps: int, power: float = 0.8) -> float:
    lo, hi = 0.0, 12.0
    for i in range(9):
        mid = 0.5 * (lo + hi)
        if pass_rate(mid, bars, looks, sims, min_t, reps, seed=i) >= power:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, nargs="+", default=[150, 300, 450, 900, 1800])
    ap.add_argument("--looks", type=int, default=12)
    ap.add_argument("--sims", type=int, default=200)
    ap.add_argument("--reps", type=int, default=300, help="bootstrap resamples per gate decision")
    ap.add_argument("--min-t", type=float, default=2.0)
    ap.add_argument("--tracking-error", type=float, default=0.05, help="annualised sd of the excess, for the "
                    "%%/yr column (default: 0.05)")
    args = ap.parse_args()
    rows = []
    print(f"{'bars':>6}{'looks':>7}{'IR at 80% power':>17}{'excess %/yr at TE':>20}")
    for bars in args.bars:
        for looks in (1, args.looks):
            ir = ir_at_power(bars, looks, args.sims, args.min_t, args.reps)
            rows.append({"bars": bars, "looks": looks, "ir": ir, "excess_pct_yr": 100 * ir * args.tracking_error})
            print(f"{bars:>6}{looks:>7}{ir:>17.2f}{100 * ir * args.tracking_error:>19.1f}%", flush=True)
    print(json.dumps({"settings": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
