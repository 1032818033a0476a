"""Speed of each online-portfolio baseline against universal-portfolios' version, on the same closes, in one run.

Ours: the baseline function on one window of every bar (as the study runs it), median of ``--repeats`` runs, after
one call on the first 64 bars that compiles its loop (numba; the compile time, or the load from numba's on-disk
cache, is printed apart as "first call").
universal-portfolios: ``algo.run(prices)``, median of ``--universal-repeats`` runs. Some of its algorithms take
minutes to hours on large sets (CORN is quadratic in the bars; Anticor's pure-Python fallback and ONS's cvxopt QP
grow with the square of the assets), so ``--universal-bars N`` times it on the first N bars only and scales the time
up (by T/N, or (T/N)^2 for CORN); such figures are marked "extrapolated" in the output.

    uv run --group crosscheck python benchmarks/baselines_speed.py [--dataset nyse|synthetic200|sample]
        [--only EG,PAMR] [--bars N] [--repeats 3] [--universal-repeats 3] [--universal-bars N] [--threads N]

Datasets: ``nyse`` (Cover's NYSE set, 36 stocks x 5,651 days, from the universal-portfolios wheel), ``synthetic200``
(200 random walks x 5,000 bars, seed 0), ``sample`` (the bundled sample, 4 x 2,148); ``--bars N`` keeps the first N
bars for both (CORN's cost grows with the square of the bars). Prints a table and one JSON line, with the machine
(CPU model from /proc/cpuinfo, torch threads).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from differentiable_market.baselines import core, olps
from differentiable_market.hardware import cpu_model

QUADRATIC_IN_BARS = {"CORN"}


def _data(name: str) -> tuple[np.ndarray, pd.DatetimeIndex, str]:
    if name == "nyse":
        from differentiable_market.datasets import nyse_o

        m = nyse_o()
        return np.array(m.close), pd.DatetimeIndex(m.timestamps), "NYSE 1962-1984 (Cover), 36 x 5,651"
    if name == "synthetic200":
        from differentiable_market.synthetic import random_walk_market

        m = random_walk_market(5000, 200, seed=0, vol=0.02)
        return np.array(m.close), pd.DatetimeIndex(m.timestamps), "synthetic random walks, 200 x 5,000"
    if name == "sample":
        from differentiable_market.config import DataConfig
        from differentiable_market.data import bundled_sample_dir, load_market

        m = load_market(DataConfig(root=str(bundled_sample_dir())), min_bars=1)
        return np.array(m.close), pd.DatetimeIndex(m.timestamps), "bundled sample, 4 x 2,148"
    raise SystemExit(f"error: unknown --dataset {name!r}; use nyse, synthetic200 or sample.")


def _cases(algos: Any) -> dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], Callable[[], Any]]]:
    def hist(algo: Any, k: int) -> Any:
        algo.min_history = k
        return algo

    return {
        "OLMAR": (lambda c, b: core.olmar(c, b, False), lambda: hist(algos.OLMAR(), core.OLMAR_WINDOW)),
        "EG": (lambda c, b: olps.eg(c, b, False), lambda: hist(algos.EG(eta=olps.EG_ETA), 1)),
        "ONS": (lambda c, b: olps.ons(c, b, False), lambda: hist(algos.ONS(), 1)),
        "Anticor": (lambda c, b: olps.anticor(c, b, False), lambda: algos.Anticor(c_version=False)),
        "BAH(Anticor)": (lambda c, b: olps.anticor_bah(c, b, False), None),  # universal-portfolios has none
        "PAMR": (lambda c, b: olps.pamr(c, b, False), lambda: hist(algos.PAMR(), 1)),
        "PAMR-1": (lambda c, b: olps.pamr(c, b, False, variant=1), lambda: hist(algos.PAMR(variant=1), 1)),
        "PAMR-2": (lambda c, b: olps.pamr(c, b, False, variant=2), lambda: hist(algos.PAMR(variant=2), 1)),
        "CWMR": (lambda c, b: olps.cwmr(c, b, False), lambda: hist(algos.CWMR(), 1)),
        "RMR": (lambda c, b: olps.rmr(c, b, False), lambda: hist(algos.RMR(), olps.RMR_WINDOW)),
        "CORN": (lambda c, b: olps.corn(c, b, False), lambda: hist(algos.CORN(), 1)),
        "UP": (lambda c, b: olps.universal_portfolio(c, b, False), lambda: hist(algos.UP(), 1)),
        "BCRP": (lambda c, b: olps.bcrp_hindsight((c[1:] / c[:-1])[None], False), lambda: algos.BCRP()),
    }


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="nyse", help="nyse, synthetic200 or sample (default: nyse)")
    p.add_argument("--only", default=None, help="comma-separated algorithm names (default: all)")
    p.add_argument("--bars", type=int, default=None, help="keep the first N bars of the dataset (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="runs of ours; the median is reported (default: 3)")
    p.add_argument("--universal-repeats", type=int, default=3, help="runs of universal-portfolios (default: 3)")
    p.add_argument("--universal-bars", type=int, default=None, help="time universal-portfolios on the first N bars "
                   "and extrapolate (default: every bar)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args(argv)
    try:
        from universal import algos
    except ImportError as exc:
        raise SystemExit(f"error: universal-portfolios is needed ({exc}); run: uv sync --group crosscheck")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    closes, index, description = _data(args.dataset)
    if args.bars is not None:
        closes, index = closes[:args.bars], index[:args.bars]
        description += f", first {len(index):,} bars"
    close = torch.tensor(closes)
    bars = torch.arange(close.shape[0] - 1)[None]  # one window over every decision bar
    frame = pd.DataFrame(closes, index=index)
    n_univ = min(args.universal_bars or len(index), len(index))
    cases = _cases(algos)
    names = list(cases) if args.only is None else args.only.split(",")
    unknown = sorted(set(names) - set(cases))
    if unknown:
        raise SystemExit(f"error: --only: unknown {unknown}; choose from {list(cases)}.")
    rows = []
    print(f"{description}; CPU {cpu_model()}, torch {torch.__version__} with {torch.get_num_threads()} thread(s)")
    print(f"{'algorithm':13s} {'first call ms':>13s} {'ours ms':>10s} {'universal ms':>13s} {'ratio':>8s}")
    for name in names:
        ours_fn, ref_fn = cases[name]
        first = _median_time(lambda: ours_fn(close[:65], bars[:, :64]), 1)  # compiles (or loads) its loop
        ours = _median_time(lambda: ours_fn(close, bars), args.repeats)
        row = {"algorithm": name, "first_call_ms": 1e3 * first, "ours_ms": 1e3 * ours, "universal_ms": None,
               "ratio": None, "universal_extrapolated_from_bars": None}
        note = "  (universal-portfolios has no such algorithm)"
        if ref_fn is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = _median_time(lambda: ref_fn().run(frame.iloc[:n_univ], log_progress=False),
                                   args.universal_repeats)
            scale = (len(index) / n_univ) ** (2 if name in QUADRATIC_IN_BARS else 1)
            row.update(universal_ms=1e3 * ref * scale, ratio=ref * scale / ours,
                       universal_extrapolated_from_bars=n_univ if scale != 1 else None)
            note = f"  (universal on {n_univ} bars, extrapolated)" if scale != 1 else ""
        rows.append(row)
        universal = "-" if row["universal_ms"] is None else f"{row['universal_ms']:.0f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}x"
        print(f"{name:13s} {row['first_call_ms']:13.0f} {row['ours_ms']:10.1f} {universal:>13s} {ratio:>8s}{note}",
              flush=True)
    print(json.dumps({"dataset": description, "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
                      "repeats": args.repeats, "universal_repeats": args.universal_repeats, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
