"""Replay a checkpoint's policy over rolling windows of a split, next to simple baselines, with the env's accounting.

Timing and windows. A decision at bar t (made after bar t closes) earns ``g_t = decision_growth(...)[t]``, whose
prices reach bar t + horizon (2 for "open" execution, 1 for "close"). A decision bar of a split [start, end) is
scorable when start <= t and t + horizon <= end - 1, so the split has ``end - start - horizon`` scorable decision bars.
Windows are ``window_length`` consecutive scorable bars whose first bars are ``stride`` apart, starting at the split's
first scorable bar. When bars are left after the last such window, one more window ending at the split's last scorable
bar is added, so every scorable bar is scored (the report says so). A split shorter than one window is scored as a
single window covering all of it, and the report says so too.

Every strategy, the policy included, starts each window in cash (the entry trade pays the fee) and is accounted by
``env.account`` with exact |x| (``smooth_eps=None``), in float64, on the same growth tensor and the same cost rate.
The policy runs with its mean (deterministic) action from a cold start at the window's first bar, fed its own
drifted holdings as training does, drifted only to the close of the bar it decides on (``env.observed_growth``):
in "open" mode the next open is not known at that time. Trailing signals (features, OLMAR's moving average, inverse
volatility) may use bars before the window: they are in the past, not look-ahead.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from .. import baselines
from ..checkpoint import Checkpoint, build_policy, check_market_matches, load_checkpoint
from ..config import ExperimentConfig, SplitName
from ..data import load_market, resolve_data_root
from ..env import account, decision_growth, execution_horizon, initial_holdings, observed_growth
from ..errors import CheckpointError, ConfigError, DataError
from ..features import compute_features
from ..metrics import bars_per_year, path_metrics
from ..rollout import deterministic_weights
from ..splits import make_splits

StrategyKind = Literal["policy", "baseline", "single", "hindsight"]


@dataclass(frozen=True)
class BacktestOptions:
    """What the CLI asks for. None means "take it from the checkpoint"."""

    checkpoint: str
    window_length: int = 256
    stride: int = 64
    split: SplitName = "test"
    data_root: str | None = None
    data_glob: str | None = None
    cost_bps: float | None = None
    include_cash: bool | None = None
    trades: bool = True
    olmar_window: int = baselines.OLMAR_WINDOW
    olmar_eps: float = baselines.OLMAR_EPS
    vol_lookback: int = baselines.VOL_LOOKBACK

    def __post_init__(self) -> None:
        if self.window_length < 2 or self.stride < 1:
            raise ConfigError(f"--window-length must be >= 2 and --stride >= 1; got {self.window_length} and "
                              f"{self.stride}.")


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows lie. decision_bars: int64 [W, L] bar index of each decision in the full data."""

    decision_bars: np.ndarray
    split: SplitName
    split_bounds: tuple[int, int]  # bars [start, end) of the split
    scorable: tuple[int, int]  # decision bars [first, stop) whose earned prices lie inside the split
    notes: tuple[str, ...] = ()

    @property
    def n_windows(self) -> int:
        return int(self.decision_bars.shape[0])

    @property
    def length(self) -> int:
        return int(self.decision_bars.shape[1])

    def chain(self) -> list[int]:
        """Non-overlapping windows, greedily from the first: each starts at or after the previous one's end."""
        picked, next_free = [], -1
        for k, first in enumerate(self.decision_bars[:, 0].tolist()):
            if first >= next_free:
                picked.append(k)
                next_free = first + self.length
        return picked


def plan_windows(split: SplitName, bounds: tuple[int, int], horizon: int, window_length: int,
                 stride: int) -> WindowPlan:
    """Rolling windows of ``window_length`` scorable decision bars, ``stride`` apart, inside ``bounds``, plus an
    end-aligned last window when the stride leaves bars at the end (see the module docstring)."""
    start, end = bounds
    first, stop = start, end - horizon
    n = stop - first
    if n < 2:
        raise DataError(
            f"The {split} split (bars {start}..{end - 1}) has {max(n, 0)} scorable decision bars; a backtest needs at "
            "least 2. Use another --split or more data."
        )
    notes = []
    if n < window_length:
        length, starts = n, np.array([first])
        notes.append(f"The {split} split has only {n} scorable decision bars, fewer than --window-length "
                     f"{window_length}: scored as one window of {n} bars.")
    else:
        length = window_length
        starts = np.arange(first, stop - length + 1, stride)
        tail = int(stop - (starts[-1] + length))
        if tail:  # the most recent bars matter most: one more window, aligned to the split's end, scores them
            starts = np.append(starts, stop - length)
            notes.append(f"The last {tail} scorable bars lay after the last stride-aligned window; a final window "
                         f"ending at the split's last scorable bar was added to score them ({len(starts)} windows).")
    bars = starts[:, None] + np.arange(length)[None, :]
    return WindowPlan(bars.astype(np.int64), split, (start, end), (first, stop), tuple(notes))


@dataclass
class StrategyResult:
    """One strategy on every window. Arrays are float64 [W, L] unless stated; metrics are [W] per name."""

    name: str
    label: str
    kind: StrategyKind
    log_growth: np.ndarray
    turnover: np.ndarray
    cost: np.ndarray
    metrics: dict[str, np.ndarray]
    weights: np.ndarray | None = None  # [W, L, A (+1)] target weights; kept for the policy only


def evaluate_weights(name: str, label: str, kind: StrategyKind, w_wla: torch.Tensor, growth_wla: torch.Tensor,
                     cost_rate: float, include_cash: bool, periods_per_year: float,
                     keep_weights: bool = False) -> StrategyResult:
    """Account target weights [W, L, A (+1)] from cash with the env's exact accounting, and compute metrics."""
    w = w_wla.to(torch.float64)
    initial = initial_holdings(w.shape[-1], include_cash, dtype=torch.float64)
    acc = account(w, growth_wla, initial, cost_rate, include_cash, smooth_eps=None)
    lg, to, co = (x.cpu().numpy() for x in (acc.log_growth, acc.turnover, acc.cost))
    return StrategyResult(name, label, kind, lg, to, co, path_metrics(lg, to, co, periods_per_year),
                          w.cpu().numpy() if keep_weights else None)


def baseline_weights(close_ta: torch.Tensor, bars_wl: torch.Tensor, growth_wla: torch.Tensor, include_cash: bool,
                     symbols: tuple[str, ...], options: BacktestOptions
                     ) -> tuple[list[tuple[str, str, StrategyKind, torch.Tensor]], np.ndarray]:
    """(name, label, kind, weights [W, L, A (+1)]) of every baseline, and the hindsight asset index per window."""
    shape = tuple(bars_wl.shape)
    n = len(symbols)
    best_w, best = baselines.best_single_hindsight(growth_wla, include_cash)
    out: list[tuple[str, str, StrategyKind, torch.Tensor]] = [
        ("equal_weight", "Equal weight, rebalanced every bar", "baseline",
         baselines.equal_weight(shape, n, include_cash)),
        ("buy_and_hold", "Buy and hold from equal weight", "baseline",
         baselines.buy_and_hold(growth_wla, include_cash)),
        ("olmar", f"OLMAR (window {options.olmar_window}, eps {options.olmar_eps:g})", "baseline",
         baselines.olmar(close_ta, bars_wl, include_cash, options.olmar_window, options.olmar_eps)),
        ("inverse_vol", f"Inverse volatility ({options.vol_lookback}-bar trailing)", "baseline",
         baselines.inverse_volatility(close_ta, bars_wl, include_cash, options.vol_lookback)),
    ]
    out += [(f"hold:{s}", f"Hold {s}", "single", baselines.single_asset(i, shape, n, include_cash))
            for i, s in enumerate(symbols)]
    out.append(("best_single_hindsight", "Best single asset IN HINDSIGHT (not tradeable)", "hindsight", best_w))
    return out, best.cpu().numpy()


@dataclass
class BacktestResult:
    """Everything the report needs."""

    options: BacktestOptions
    config: ExperimentConfig  # the checkpoint's config, untouched
    checkpoint: dict[str, Any]  # path, sha256, step
    effective: dict[str, Any]  # settings in force: cost_bps, include_cash, execution, policy dtype
    overrides: dict[str, dict[str, Any]]  # name -> {"checkpoint": value, "used": value}
    data: dict[str, Any]  # root, bundled sample, glob, fingerprint, match with the checkpoint
    symbols: tuple[str, ...]
    plan: WindowPlan
    timestamps: np.ndarray  # [T] datetime64[ns] of the whole dataset
    periods_per_year: float
    strategies: dict[str, StrategyResult]
    hindsight_assets: np.ndarray  # [W] index of the best asset per window
    timings: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def policy(self) -> StrategyResult:
        return self.strategies["policy"]


def _resolve(options: BacktestOptions, ckpt: Checkpoint) -> tuple[ExperimentConfig, dict[str, dict[str, Any]]]:
    """The checkpoint's config with the CLI overrides applied, and a record of each override."""
    cfg = ckpt.config
    overrides: dict[str, dict[str, Any]] = {}

    def pick(name: str, given: Any, stored: Any) -> Any:
        if given is None or given == stored:
            return stored
        overrides[name] = {"checkpoint": stored, "used": given}
        return given

    data = dataclasses.replace(cfg.data, root=pick("data_root", options.data_root, cfg.data.root),
                               glob=pick("data_glob", options.data_glob, cfg.data.glob))
    env = dataclasses.replace(cfg.env, cost_bps=pick("cost_bps", options.cost_bps, cfg.env.cost_bps),
                              include_cash=pick("include_cash", options.include_cash, cfg.env.include_cash))
    return dataclasses.replace(cfg, data=data, env=env), overrides


def run_backtest(options: BacktestOptions, log: Any = print) -> BacktestResult:
    """Load the checkpoint and its data, plan the windows, run the policy and the baselines, compute metrics."""
    t0 = time.perf_counter()
    ckpt = load_checkpoint(options.checkpoint)
    cfg, overrides = _resolve(options, ckpt)
    for name, o in overrides.items():
        log(f"override: {name} = {o['used']!r} (checkpoint: {o['checkpoint']!r})")
    policy = build_policy(ckpt, cfg.env.include_cash)
    include_cash = cfg.env.include_cash

    horizon = execution_horizon(cfg.env.execution)
    market = load_market(cfg.data, min_bars=horizon + 2)
    for note in market.notes:
        log(note)
    check_market_matches(ckpt, market.symbols, ckpt.feature_spec)
    fingerprint = market.fingerprint()
    same_data = _same_data(fingerprint, ckpt.data_fingerprint)
    notes = list(market.notes)
    if not same_data:
        notes.append("The data differ from the data the checkpoint was trained on (fingerprint mismatch); the split "
                     "boundaries are recomputed on these data and may not line up with the training run's.")
        log("warning: " + notes[-1])
    splits = make_splits(market.n_bars, cfg.data, cfg.train.lookback)
    split_start = str(market.timestamps[splits.bounds(options.split)[0]])[:19]
    if options.split in ("validation", "test") and ckpt.trained_through and split_start <= ckpt.trained_through:
        notes.append(f"WARNING: the policy was trained on bars up to {ckpt.trained_through}, but this {options.split} "
                     f"split starts at {split_start}: the scores below are partly in-sample.")
        log(notes[-1])
    plan = plan_windows(options.split, splits.bounds(options.split), horizon, options.window_length, options.stride)
    notes.extend(plan.notes)
    for note in plan.notes:
        log(note)
    t_load = time.perf_counter()

    features = torch.as_tensor(compute_features(market, ckpt.feature_spec))
    if features.shape[-1] != ckpt.n_features:
        raise CheckpointError(f"The features have {features.shape[-1]} columns; {ckpt.path} expects {ckpt.n_features}.")
    open_ta = torch.tensor(market.open)  # copies: market arrays are read-only
    close_ta = torch.tensor(market.close)
    growth_ta = decision_growth(open_ta, close_ta, cfg.env.execution, include_cash)  # float64 [T - h, A (+1)]
    # The holdings shown to the policy at decision t+1 drift only to what is known then (the close of bar t+1).
    seen_ta = observed_growth(open_ta, close_ta, cfg.env.execution, include_cash)
    bars = torch.as_tensor(plan.decision_bars)
    growth = growth_ta[bars]  # [W, L, A (+1)]

    # Full float32 (no bf16 autocast): the stored weights' own precision, and cheaper on CPU for one pass.
    w_policy = deterministic_weights(policy, features[bars], seen_ta[bars].to(torch.float32), include_cash, None)
    w_policy = w_policy.to(torch.float64)
    w_policy = w_policy / w_policy.sum(dim=-1, keepdim=True)
    t_policy = time.perf_counter()

    ppy = bars_per_year(market.timestamps)
    rate = cfg.env.cost_rate
    strategies = {"policy": evaluate_weights("policy", "Policy (deterministic)", "policy", w_policy, growth, rate,
                                             include_cash, ppy, keep_weights=True)}
    named, hindsight = baseline_weights(close_ta, bars, growth, include_cash, market.symbols, options)
    for name, label, kind, w in named:
        strategies[name] = evaluate_weights(name, label, kind, w, growth, rate, include_cash, ppy)
    t_end = time.perf_counter()

    root, bundled = resolve_data_root(cfg.data.root)
    return BacktestResult(
        options=options,
        config=ckpt.config,
        checkpoint={"path": ckpt.path, "sha256": ckpt.sha256, "step": ckpt.step},
        effective={"cost_bps": cfg.env.cost_bps, "include_cash": include_cash, "execution": cfg.env.execution,
                   "policy_dtype": "float32"},
        overrides=overrides,
        data={"root": str(root), "bundled_sample": bundled, "glob": cfg.data.glob, "fingerprint": fingerprint,
              "checkpoint_fingerprint": ckpt.data_fingerprint, "matches_checkpoint": same_data},
        symbols=market.symbols,
        plan=plan,
        timestamps=np.asarray(market.timestamps),
        periods_per_year=ppy,
        strategies=strategies,
        hindsight_assets=hindsight,
        timings={"load_s": t_load - t0, "policy_s": t_policy - t_load, "baselines_and_metrics_s": t_end - t_policy,
                 "total_s": t_end - t0},
        notes=notes,
    )


def _same_data(fingerprint: dict[str, Any], stored: dict[str, Any]) -> bool:
    keys = ("symbols", "first_timestamp", "last_timestamp", "n_bars", "ohlc_sha256")
    return all(fingerprint.get(k) == stored.get(k) for k in keys)
