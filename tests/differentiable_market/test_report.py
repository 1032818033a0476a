"""Backtest outputs that do not need a trained checkpoint (differentiable_market.marketsimulator.report).

The end-to-end report (every file, from a real backtest) is tested in test_backtester.py.
"""

from __future__ import annotations

import inspect
import json
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from differentiable_market.atomic import atomic_write
from differentiable_market.marketsimulator.report import trades_lines


def _result(n_windows: int, length: int, n_assets: int, include_cash: bool, seed: int = 0) -> SimpleNamespace:
    """What ``trades_lines`` reads of a BacktestResult: the policy's per-bar arrays, symbols, plan and timestamps."""
    rng = np.random.default_rng(seed)
    n_out = n_assets + int(include_cash)
    weights = rng.dirichlet(np.ones(n_out), size=(n_windows, length))
    starts = np.arange(n_windows) * length
    policy = SimpleNamespace(
        weights=weights,
        turnover=rng.uniform(0, 2, (n_windows, length)),
        cost=rng.uniform(0, 1e-3, (n_windows, length)),
        log_growth=rng.normal(0, 0.01, (n_windows, length)),
    )
    return SimpleNamespace(
        policy=policy,
        symbols=tuple(f"S{i}" for i in range(n_assets)),
        effective={"include_cash": include_cash},
        plan=SimpleNamespace(n_windows=n_windows, length=length, decision_bars=starts[:, None] + np.arange(length)),
        timestamps=np.datetime64("2024-01-01T09:30", "ns") + np.arange(n_windows * length) * np.timedelta64(1, "m"),
        tradeable=None,  # a common calendar: no universe events
    )


def test_trades_rows_hold_every_policy_bar_with_exact_values() -> None:
    result = _result(n_windows=2, length=3, n_assets=2, include_cash=True)
    rows = [json.loads(line) for line in trades_lines(result)]
    p = result.policy
    assert [(r["window"], r["step"]) for r in rows] == [(k, j) for k in range(2) for j in range(3)]
    assert rows[0]["timestamp"] == "2024-01-01T09:30:00Z" and rows[4]["timestamp"] == "2024-01-01T09:34:00Z"
    for r in rows:
        k, j = r["window"], r["step"]
        assert r["weights"] == {"S0": p.weights[k, j, 0], "S1": p.weights[k, j, 1], "CASH": p.weights[k, j, 2]}
        assert (r["turnover"], r["fee"], r["log_growth"]) == (p.turnover[k, j], p.cost[k, j], p.log_growth[k, j])
        assert r["wealth"] == pytest.approx(np.exp(p.log_growth[k, : j + 1].sum()), rel=1e-12)  # from 1 per window


def test_trades_lines_are_made_one_at_a_time() -> None:
    result = _result(n_windows=1, length=4, n_assets=2, include_cash=False)
    result.policy.log_growth[0, 3] = np.nan  # a row that cannot be written (JSON has no NaN), made only when reached
    lines = trades_lines(result)
    assert inspect.isgenerator(lines)
    assert [json.loads(next(lines))["step"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError):
        next(lines)


def test_trades_jsonl_streams_to_disk_in_constant_memory(tmp_path: Path) -> None:
    # 8,000 bars x 20 assets: a file of about 4 MB, written while Python holds about one row at a time.
    result = _result(n_windows=2, length=4_000, n_assets=20, include_cash=True)
    path = tmp_path / "trades.jsonl"
    tracemalloc.start()
    try:
        atomic_write(path, lambda fh: fh.writelines(trades_lines(result)))  # as write_report does
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert size > 3e6
    assert peak < 2e5, f"writing {size / 1e6:.1f} MB of trades held {peak / 1e6:.2f} MB at once"
    with open(path, encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 8_000


def _answer_result(policy_lg: np.ndarray, bench_lg: np.ndarray, untrained: bool = False, notes: tuple = (),
                   length: int | None = None) -> SimpleNamespace:
    """What ``answer`` reads of a BacktestResult: the chain of windows, two strategies' log growth, bars per year."""
    n = policy_lg.shape[-1] if length is None else length
    lg_p, lg_b = policy_lg.reshape(-1, n), bench_lg.reshape(-1, n)
    plan = SimpleNamespace(chain=lambda: list(range(lg_p.shape[0])))
    policy = SimpleNamespace(log_growth=lg_p, label="equal weight through the band (untrained policy)")
    return SimpleNamespace(plan=plan, policy=policy, periods_per_year=252.0, notes=list(notes),
                           checkpoint={"untrained": untrained},
                           strategies={"policy": policy, "equal_weight": SimpleNamespace(log_growth=lg_b)})


def test_the_backtest_answers_its_question_with_an_interval_of_the_excess_over_equal_weight() -> None:
    from differentiable_market.marketsimulator.report import answer
    from differentiable_market.study.stats import mean_growth_ci

    rng = np.random.default_rng(0)
    bench = rng.normal(0.0003, 0.01, 600)
    edge = bench + 0.002 + rng.normal(0, 0.002, 600)  # a clear edge: +0.2% per bar
    a = answer(_answer_result(edge, bench))
    iv = mean_growth_ci(edge - bench, 252.0, level=0.9, reps=2000, seed=0)
    ex = a["excess_log_growth_per_year"]
    assert ex["estimate"] == pytest.approx((edge - bench).mean() * 252, rel=1e-12)
    assert (ex["low"], ex["high"]) == (iv.low, iv.high) and ex["low"] < ex["estimate"] < ex["high"]
    assert a["call"] == "above" and a["bars"] == 600 and not a["untrained"]
    assert a["policy_log_growth_per_year"] == pytest.approx(edge.mean() * 252)
    assert a["text"].startswith(f"The policy's excess log growth over equal weight is {100 * ex['estimate']:+.1f}%/yr "
                                f"(90% CI [{100 * ex['low']:+.1f}, {100 * ex['high']:+.1f}], 600 bars): above")
    noise = bench + rng.normal(0, 0.002, 600)  # no edge
    b = answer(_answer_result(noise, bench))
    assert b["call"] == "cannot tell" and b["excess_log_growth_per_year"]["low"] < 0 < \
        b["excess_log_growth_per_year"]["high"]
    assert "one path cannot tell it from zero. Run the study (differentiable-market study)" in b["text"]
    worse = answer(_answer_result(bench - 0.002 + rng.normal(0, 0.002, 600), bench))
    assert worse["call"] == "below" and "below equal weight on this path" in worse["text"]


def test_the_answer_names_an_untrained_checkpoint_and_in_sample_bars() -> None:
    from differentiable_market.marketsimulator.report import answer

    bench = np.random.default_rng(1).normal(0, 0.01, 200)
    a = answer(_answer_result(bench.copy(), bench, untrained=True))
    assert a["untrained"] and a["excess_log_growth_per_year"]["estimate"] == 0.0
    assert a["text"].startswith("Untrained policy: this checkpoint is equal weight through the band (untrained "
                                "policy), not a trained policy.")
    b = answer(_answer_result(bench + 0.001, bench, notes=("WARNING: the policy was trained on bars up to ...",)))
    assert b["in_sample"] and b["text"].startswith("In-sample: ")
    # a chain of two windows is one path of their bars
    c = answer(_answer_result(np.concatenate([bench, bench]) + 0.001, np.concatenate([bench, bench]), length=200))
    assert c["bars"] == 400
