"""Replay a checkpoint's policy over a split (as one path, or in windows), next to simple baselines, with the env's
accounting.

Timing and windows. A decision at bar t (made after bar t closes) earns ``g_t = decision_growth(...)[t]``, whose
prices reach bar t + horizon (2 for "open" execution, 1 for "close"). A decision bar of a split [start, end) is
scorable when start <= t and t + horizon <= end - 1, so the split has ``end - start - horizon`` scorable decision bars.
By default the whole split is scored as one path (one window of every scorable bar). With ``window_length``, windows
are ``window_length`` consecutive scorable bars whose first bars are ``stride`` apart (default: ``window_length``, so
they do not overlap), starting at the split's first scorable bar. When bars are left after the last such window, one
more window ending at the split's last scorable bar is added, so every scorable bar is scored (the report says so;
that window overlaps the one before it). A split shorter than one window is scored as a single window covering all
of it, and the report says so too.

Overlap. Windows that share bars are not independent evidence. When any two windows overlap (a stride shorter than
the window, or the end-aligned last window), the report says so, and "policy beats" counts only the non-overlapping
chain of windows (``WindowPlan.chain``); means over windows still include every window.

In-sample checks. The checkpoint records the last training bar and the last validation bar (the bars that chose
best.pt) as dates; a scored split that starts on or before either gets a warning in the log and the report.

Every strategy, the policy included, starts each window in cash (the entry trade pays the fee) and is accounted by
``env.account`` with exact |x| (``smooth_eps=None``), in float64, on the same growth tensor and the same cost rate.
The policy runs with its mean (deterministic) action from a cold start at the window's first bar, fed its own
drifted holdings as training does, drifted only to the close of the bar it decides on (``env.observed_growth``):
in "open" mode the next open is not known at that time. Trailing signals (features, OLMAR's moving average, inverse
volatility) may use bars before the window: they are in the past, not look-ahead.

A union calendar (``--calendar union``). Every strategy trades only the assets tradeable at each decision bar
(``MarketData.tradeable``, causal): ``env.account`` zeroes the targets on the others and renormalises over the
tradeable assets (+ cash), so a holding in an asset that stops being tradeable is sold at its last close (its price
is held flat after its last print) with the fee, and no placeholder price is ever traded. The policy's Dirichlet runs
over the tradeable subset. Buy and hold starts from equal weight over the assets tradeable at the window's first bar
and never buys a later listing; the other baselines are computed as before (their trailing statistics see the flat
placeholder prices before a listing) and restricted to the tradeable assets the same way. trades.jsonl marks the
bars where an asset becomes tradeable, stops being tradeable, and where the policy was forced to sell.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from .. import baselines
from ..baselines import registry
from ..checkpoint import (Checkpoint, build_policy, check_after_pretraining, check_market_matches, checkpoint_notes,
                          feature_spec_for, load_checkpoint, resolve_checkpoint_name, transferable,
                          universe_difference)
from ..config import DataConfig, Execution, ExperimentConfig, SplitName
from ..data import MarketData, execution_note, load_market, resolve_data_root
from ..env import (account, decision_growth, execution_horizon, growth_where_tradeable, initial_holdings,
                   observed_growth, restrict_to_tradeable, tradeable_columns)
from ..errors import CheckpointError, ConfigError, DataError
from ..features import compute_features
from ..metrics import bars_per_year, path_metrics
from ..console import compile_notice, package_kernels
from ..outcome import untrained_label
from ..rollout import deterministic_weights
from ..splits import make_splits, through_cutoff, train_end_cutoff
from ..trainer import market_mask

StrategyKind = Literal["policy", "baseline", "single", "hindsight"]


@dataclass(frozen=True)
class BacktestOptions:
    """What the CLI asks for. None means "take it from the checkpoint"."""

    checkpoint: str
    window_length: int | None = None  # None: the whole split as one path
    stride: int | None = None  # None: window_length (windows do not overlap)
    split: SplitName = "test"
    data_root: str | None = None
    data_glob: str | None = None
    cost_bps: float | None = None
    include_cash: bool | None = None
    trades: bool = True
    transfer_universe: bool = False  # run a cross-sectional policy on whatever symbols the data hold
    olmar_window: int = baselines.OLMAR_WINDOW
    olmar_eps: float = baselines.OLMAR_EPS
    vol_lookback: int = baselines.VOL_LOOKBACK
    baselines: str = registry.DEFAULT  # --baselines: a set (core, olps, risk, all) or comma-separated names

    def __post_init__(self) -> None:
        registry.resolve(self.baselines)  # refuses unknown names with the valid ones
        if self.cost_bps is not None and not (0.0 <= self.cost_bps < 10_000.0):  # also refuses NaN
            raise ConfigError(f"--cost-bps must lie in [0, 10000) basis points, got {self.cost_bps}.")
        if self.window_length is not None and self.window_length < 2:
            raise ConfigError(f"--window-length must be >= 2, got {self.window_length}.")
        if self.stride is not None and (self.window_length is None or self.stride < 1):
            raise ConfigError(f"--stride must be >= 1 and needs --window-length (without it the whole split is one "
                              f"path); got --stride {self.stride} with --window-length {self.window_length}.")


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows lie. decision_bars: int64 [W, L] bar index of each decision in the full data."""

    decision_bars: np.ndarray
    split: SplitName
    split_bounds: tuple[int, int]  # bars [start, end) of the split
    scorable: tuple[int, int]  # decision bars [first, stop) whose earned prices lie inside the split
    notes: tuple[str, ...] = ()
    stride: int | None = None  # bars between stride-aligned window starts; None when the split is one window

    @property
    def n_windows(self) -> int:
        return int(self.decision_bars.shape[0])

    @property
    def length(self) -> int:
        return int(self.decision_bars.shape[1])

    @property
    def overlapping(self) -> bool:
        """Whether any two windows share a decision bar (windows are in time order)."""
        return bool((np.diff(self.decision_bars[:, 0]) < self.length).any())

    def chain(self) -> list[int]:
        """Non-overlapping windows, greedily from the first: each starts at or after the previous one's end."""
        picked, next_free = [], -1
        for k, first in enumerate(self.decision_bars[:, 0].tolist()):
            if first >= next_free:
                picked.append(k)
                next_free = first + self.length
        return picked


def plan_windows(split: SplitName, bounds: tuple[int, int], horizon: int, window_length: int | None = None,
                 stride: int | None = None) -> WindowPlan:
    """Windows of ``window_length`` scorable decision bars, ``stride`` apart (default: ``window_length``), inside
    ``bounds``, plus an end-aligned last window when the stride leaves bars at the end; ``window_length`` None scores
    the whole split as one window (see the module docstring)."""
    start, end = bounds
    first, stop = start, end - horizon
    n = stop - first
    if n < 2:
        raise DataError(
            f"The {split} split (bars {start}..{end - 1}) has {max(n, 0)} scorable decision bars; a backtest needs at "
            "least 2. Use another --split or more data."
        )
    notes, step = [], None
    if window_length is None:
        length, starts = n, np.array([first])
    elif n < window_length:
        length, starts = n, np.array([first])
        notes.append(f"The {split} split has only {n} scorable decision bars, fewer than --window-length "
                     f"{window_length}: scored as one window of {n} bars.")
    else:
        length, step = window_length, stride or window_length
        starts = np.arange(first, stop - length + 1, step)
        tail = int(stop - (starts[-1] + length))
        if tail:  # the most recent bars matter most: one more window, aligned to the split's end, scores them
            starts = np.append(starts, stop - length)
            notes.append(f"The last {tail} scorable bars lay after the last stride-aligned window; a final window "
                         f"ending at the split's last scorable bar was added to score them ({len(starts)} windows; "
                         "it overlaps the window before it).")
    bars = starts[:, None] + np.arange(length)[None, :]
    plan = WindowPlan(bars.astype(np.int64), split, (start, end), (first, stop), tuple(notes), step)
    if plan.overlapping:
        chain = plan.chain()
        notes.append(f"The {plan.n_windows} windows overlap (they share bars), so they are not independent evidence: "
                     f"means over windows include every window, but 'policy beats' counts only the {len(chain)} "
                     f"non-overlapping window(s) {chain}.")
        plan = dataclasses.replace(plan, notes=tuple(notes))
    return plan


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
    growth: np.ndarray | None = None  # [W, L, A (+1)] gross growth per asset of each decision; policy only
    traded: np.ndarray | None = None  # [W, L, A (+1)] |target - pre-trade holdings| (cash column 0); policy only
    family: str = "policy"  # the baseline family (``baselines.registry``), "policy" for the policy


def evaluate_weights(name: str, label: str, kind: StrategyKind, w_wla: torch.Tensor, growth_wla: torch.Tensor,
                     cost_rate: float, include_cash: bool, periods_per_year: float,
                     keep_weights: bool = False, family: str = "policy",
                     tradeable: torch.Tensor | None = None) -> StrategyResult:
    """Account target weights [W, L, A (+1)] from cash with the env's exact accounting, and compute metrics.

    keep_weights also keeps what the per-asset attribution needs: the weights, the growth and the traded weights.
    tradeable: bool [W, L, A (+1)] columns each decision may hold (``env.tradeable_columns``), or None; the targets
    are restricted to it first (``env.restrict_to_tradeable``, as ``account`` does), so the kept weights are held."""
    w = w_wla.to(torch.float64)
    if tradeable is not None:
        w = restrict_to_tradeable(w, tradeable, include_cash)
    initial = initial_holdings(w.shape[-1], include_cash, dtype=torch.float64)
    acc = account(w, growth_wla, initial, cost_rate, include_cash, smooth_eps=None)
    lg, to, co = (x.cpu().numpy() for x in (acc.log_growth, acc.turnover, acc.cost))
    out = StrategyResult(name, label, kind, lg, to, co, path_metrics(lg, to, co, periods_per_year), family=family)
    if keep_weights:
        traded = (w - acc.pre_trade).abs()
        if include_cash:  # cash pays no fee, as in ``account``
            traded[..., -1] = 0
        growth = torch.broadcast_to(growth_wla.to(torch.float64), w.shape)
        out.weights, out.growth, out.traded = (x.cpu().numpy() for x in (w, growth, traded))
    return out


class Replay(NamedTuple):
    """What replaying strategies over a market needs, per bar of the whole data (prices and growth float64).

    close: [T, A] the closes (the baselines' trailing signals; with a mask, ``signal_closes``); growth: [T - h, A (+1)] the growth decision t earns
    (``env.decision_growth``); seen: [T - h, A (+1)] its drift to the close of bar t + 1, what decision t + 1 is
    shown (``env.observed_growth``); mask: bool [T, A] the market's causal tradeable mask laid out as the features
    (``trainer.market_mask``), None when every asset is tradeable everywhere; columns: bool [T - h, A (+1)] the
    columns decision t may hold (``env.tradeable_columns``), or None. With a mask, growth and seen are 1 on the
    columns not tradeable at the decision (``env.growth_where_tradeable``), so no placeholder price of a union
    calendar reaches a strategy, a drift or a baseline's accounting."""

    close: torch.Tensor
    growth: torch.Tensor
    seen: torch.Tensor
    mask: torch.Tensor | None
    columns: torch.Tensor | None


def replay_inputs(market: MarketData, execution: Execution, include_cash: bool) -> Replay:
    """The prices, growth and tradeable mask of ``market`` (see ``Replay``): the backtester's and the study's, so
    both trade the same assets at every bar."""
    open_ta, close_ta = torch.tensor(market.open), torch.tensor(market.close)  # copies: market arrays are read-only
    growth = decision_growth(open_ta, close_ta, execution, include_cash)
    # The holdings shown to the policy at decision t+1 drift only to what is known then (the close of bar t+1).
    seen = observed_growth(open_ta, close_ta, execution, include_cash)
    mask = market_mask(market, include_cash)
    if mask is None:
        return Replay(close_ta, growth, seen, None, None)
    cols = tradeable_columns(mask[: growth.shape[0]], include_cash)
    return Replay(signal_closes(close_ta, mask), growth_where_tradeable(growth, cols),
                  growth_where_tradeable(seen, cols), mask, cols)


def signal_closes(close_ta: torch.Tensor, mask_ta: torch.Tensor) -> torch.Tensor:
    """Closes [T, A] for the baselines' trailing signals on a union calendar: where an asset is not tradeable at
    bar t (``mask_ta``, causal) its close is the last close it had while tradeable, and before its first tradeable
    bar the first one (so the series is flat there, with price relatives of exactly 1). No placeholder price outside
    an asset's life reaches a signal, and no jump from a placeholder to the listing price looks like a move; an
    asset never tradeable reads 1."""
    close = close_ta.numpy()
    valid = mask_ta.cpu().numpy().astype(bool)
    t_len = close.shape[0]
    last = np.where(valid, np.arange(t_len)[:, None], -1)
    np.maximum.accumulate(last, axis=0, out=last)
    first = np.where(valid.any(0), valid.argmax(0), 0)
    source = np.where(last >= 0, last, first[None, :])
    out = np.take_along_axis(close, source, axis=0)
    out[:, ~valid.any(0)] = 1.0
    return torch.from_numpy(np.ascontiguousarray(out))


def baseline_weights(close_ta: torch.Tensor, bars_wl: torch.Tensor, growth_wla: torch.Tensor, include_cash: bool,
                     symbols: tuple[str, ...], options: BacktestOptions, tradeable: torch.Tensor | None = None,
                     ) -> tuple[Iterator[tuple[str, str, StrategyKind, str, torch.Tensor]], np.ndarray]:
    """(name, label, kind, family, weights [W, L, A (+1)]) of every baseline of ``options.baselines``, and the
    hindsight best asset index per window.

    The baselines come from an iterator that builds each weight tensor only when it is reached, so a caller that
    accounts each one and lets it go holds one at a time (A single-asset holds at once took 4.5 GB at 100 assets
    on minute bars). The baselines that hold cash (``equal_weight_cash``, ``vol_target``) run only with
    ``include_cash``. ``tradeable`` (bool [W, L, A (+1)], or None) is what buy and hold starts from; the caller
    restricts every baseline's weights to it when accounting them."""
    _, best = baselines.best_single_hindsight(growth_wla, include_cash)
    inputs = registry.Inputs(close_ta, bars_wl, growth_wla, include_cash, tuple(symbols), options.olmar_window,
                             options.olmar_eps, options.vol_lookback, tradeable)
    return registry.generate(options.baselines, inputs), best.cpu().numpy()


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
    tradeable: np.ndarray | None = None  # [T, A] bool causal mask of a union calendar; None: every asset tradeable

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
    if options.transfer_universe:
        if not transferable(ckpt):
            raise CheckpointError(
                f"--transfer-universe needs a cross-sectional policy; {ckpt.path} holds a "
                f"{ckpt.config.policy.architecture} policy, whose layers are sized by the {len(ckpt.symbols)} symbols "
                "it was trained on. Drop the flag and backtest it on those symbols."
            )
        # The checkpoint's symbol filters and bar-index splits describe its own data set, not this one: every symbol
        # of the data folder is used, and the splits are the fractions' on these bars.
        default = type(cfg.data)()
        for name in ("include", "exclude", "max_assets", "split_bars", "universe_through"):
            stored = getattr(cfg.data, name)
            if stored != getattr(default, name):
                overrides[f"data_{name}"] = {"checkpoint": stored, "used": getattr(default, name)}
                data = dataclasses.replace(data, **{name: getattr(default, name)})
    env = dataclasses.replace(cfg.env, cost_bps=pick("cost_bps", options.cost_bps, cfg.env.cost_bps),
                              include_cash=pick("include_cash", options.include_cash, cfg.env.include_cash))
    return dataclasses.replace(cfg, data=data, env=env), overrides


def run_backtest(options: BacktestOptions, log: Any = print) -> BacktestResult:
    """Load the checkpoint and its data, plan the windows, run the policy and the baselines, compute metrics."""
    t0 = time.perf_counter()
    ckpt = load_checkpoint(resolve_checkpoint_name(options.checkpoint, bool(options.include_cash)))
    if ckpt.pretraining is not None and not options.transfer_universe:
        # a pretrained policy learned from a corpus, not from these symbols: it always runs on the data's universe
        options = dataclasses.replace(options, transfer_universe=True,
                                      data_root=options.data_root or DataConfig().root)
    cfg, overrides = _resolve(options, ckpt)
    for name, o in overrides.items():
        log(f"override: {name} = {o['used']!r} (checkpoint: {o['checkpoint']!r})")
    include_cash = cfg.env.include_cash

    horizon = execution_horizon(cfg.env.execution)
    # The universe is decided on the checkpoint's training bars only, as it was when it was trained; a transferred
    # policy's universe on the training split of these data (the checkpoint's dates belong to other data).
    cutoff = (through_cutoff(ckpt.trained_through)
              if ckpt.trained_through and cfg.data.universe_through is None and not options.transfer_universe
              else train_end_cutoff(cfg.data, cfg.train.lookback))
    market = load_market(cfg.data, min_bars=horizon + 2, universe_cutoff=cutoff)
    fills = execution_note(market, cfg.env.execution)
    notes = list(market.notes) + ([fills] if fills else []) + checkpoint_notes(ckpt, market)
    if not options.transfer_universe:  # refuse other symbols before printing notes about data that will not be used
        check_market_matches(ckpt, market.symbols, ckpt.feature_spec, hint=(
            ", or pass --transfer-universe to run this cross-sectional policy on these symbols."
            if transferable(ckpt) else "."))
    for note in notes:
        log(note)
    notice = compile_notice(package_kernels(baselines=True))
    if notice is not None:
        log(notice)
    if options.transfer_universe:  # the features are the checkpoint's spec computed on these data
        if market.symbols != ckpt.symbols:
            overrides["universe"] = universe_difference(ckpt.symbols, market.symbols)
            u = overrides["universe"]
            trained_on = "a pretraining corpus" if ckpt.pretraining else f"{len(ckpt.symbols)} symbols"
            notes.append(f"Universe transfer: the policy was trained on {trained_on} and runs here on "
                         f"{market.n_assets} ({len(u['shared'])} shared, {len(u['new'])} new: {u['new'][:10]}"
                         f"{' ...' if len(u['new']) > 10 else ''}).")
            log(notes[-1])
    policy = build_policy(ckpt, include_cash, market.n_assets)
    fingerprint = market.fingerprint()
    same_data = _same_data(fingerprint, ckpt.data_fingerprint)
    if not same_data and ckpt.pretraining is None:
        notes.append("The data differ from the data the checkpoint was trained on (fingerprint mismatch); the split "
                     "boundaries are recomputed on these data and may not line up with the training run's.")
        log("warning: " + notes[-1])
    splits = make_splits(market.n_bars, cfg.data, cfg.train.lookback)
    validated_through = ckpt.validation_end(market.timestamps, same_data)
    bounds = splits.bounds(options.split)
    split_dates = (str(market.timestamps[bounds[0]])[:19], str(market.timestamps[bounds[1] - 1])[:19])
    # a pretrained policy was chosen on corpus markets, not on these data: check_after_pretraining dates it below
    for note in ([] if ckpt.pretraining else
                 in_sample_notes(options.split, split_dates, ckpt.trained_through, validated_through)):
        notes.append(note)
        log(note)
    plan = plan_windows(options.split, splits.bounds(options.split), horizon, options.window_length, options.stride)
    notes.extend(plan.notes)
    for note in plan.notes:
        log(note)
    t_load = time.perf_counter()

    if ckpt.refits_normaliser:
        notes.append(f"Pretrained policy: its feature normaliser is fitted on the training split of these data (bars "
                     f"up to {str(market.timestamps[splits.train[1] - 1])[:10]}), as it was on every market it "
                     "learned from.")
        log(notes[-1])
        try:
            check_after_pretraining(ckpt, split_dates[0], f"the {options.split} split")
        except CheckpointError as exc:
            notes.append(f"WARNING: {exc}")
            log(notes[-1])
    features = torch.as_tensor(compute_features(market, feature_spec_for(ckpt, market, splits.train[1])))
    if features.shape[-1] != ckpt.n_features:
        raise CheckpointError(f"The features have {features.shape[-1]} columns; {ckpt.path} expects {ckpt.n_features}.")
    close_ta, growth_ta, seen_ta, mask_ta, cols_ta = replay_inputs(market, cfg.env.execution, include_cash)
    bars = torch.as_tensor(plan.decision_bars)
    cols = None if cols_ta is None else cols_ta[bars]
    growth = growth_ta[bars]  # [W, L, A (+1)]

    # Full float32 (no bf16 autocast): the stored weights' own precision, and cheaper on CPU for one pass.
    w_policy = deterministic_weights(policy, features, seen_ta[bars].to(torch.float32), include_cash, None,
                                     growth=growth.to(torch.float32), rebalance_every=cfg.env.rebalance_every,
                                     bars=bars, tradeable=mask_ta)
    w_policy = w_policy.to(torch.float64)
    w_policy = w_policy / w_policy.sum(dim=-1, keepdim=True)
    t_policy = time.perf_counter()

    ppy = bars_per_year(market.timestamps)
    rate = cfg.env.cost_rate
    untrained = ckpt.is_untrained
    label = untrained_label(cfg) if untrained else "Policy (deterministic: the mean action)"
    strategies = {"policy": evaluate_weights("policy", label, "policy", w_policy, growth, rate,
                                             include_cash, ppy, keep_weights=True, tradeable=cols)}
    named, hindsight = baseline_weights(close_ta, bars, growth, include_cash, market.symbols, options, cols)
    for name, label, kind, family, w in named:
        strategies[name] = evaluate_weights(name, label, kind, w, growth, rate, include_cash, ppy, family=family,
                                            tradeable=cols)
    if mask_ta is not None:
        notes.append(universe_note(mask_ta.numpy(), plan.decision_bars, market.symbols))
        log(notes[-1])
    t_end = time.perf_counter()

    root, bundled = resolve_data_root(cfg.data.root)
    return BacktestResult(
        options=options,
        config=ckpt.config,
        checkpoint={"path": ckpt.path, "sha256": ckpt.sha256, "step": ckpt.step, "untrained": untrained,
                    "trained_through": ckpt.trained_through, "validated_through": validated_through},
        effective={"cost_bps": cfg.env.cost_bps, "include_cash": include_cash, "execution": cfg.env.execution,
                   "policy_dtype": "float32", "action": cfg.policy.action,
                   "action_strength": _strength(policy), "rebalance_every": cfg.env.rebalance_every,
                   "train_cost_bps": cfg.env.train_cost_bps},
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
        tradeable=None if mask_ta is None else mask_ta.numpy(),
    )


def universe_note(tradeable_ta: np.ndarray, decision_bars: np.ndarray, symbols: tuple[str, ...]) -> str:
    """What the union calendar's mask [T, A] did over the scored decision bars (int, any shape): assets that became
    tradeable (listings, halts' ends) and stopped being tradeable (delistings known, halts), by name."""
    first, last = int(decision_bars.min()), int(decision_bars.max())
    m = tradeable_ta[max(first - 1, 0) : last + 1]
    start, stop = np.diff(m.astype(np.int8), axis=0) == 1, np.diff(m.astype(np.int8), axis=0) == -1
    never = [s for s, any_ in zip(symbols, m[1:].any(axis=0)) if not any_]

    def names(flags: np.ndarray) -> str:
        picked = [s for s, f in zip(symbols, flags.any(axis=0)) if f]
        return f"{len(picked)}" + (f" ({', '.join(picked[:8])}{' ...' if len(picked) > 8 else ''})" if picked else "")

    return (f"Union calendar over the scored bars: {m[1:].all(axis=0).sum()} of {len(symbols)} assets tradeable "
            f"throughout; {names(start)} became tradeable (a listing or a halt's end), {names(stop)} stopped being "
            f"tradeable (a delisting, known max_fill_bars after the last print, or a halt; holdings sold at the "
            "last close, with the fee), "
            f"{len(never)} never tradeable here (weight 0). Every strategy trades only tradeable assets.")


def _strength(policy) -> float | None:
    """The learned rate (partial) or band width as a fraction of equal weight (band) of the policy's action."""
    s = policy.action_strength()
    return None if s is None else float(s.detach())


def in_sample_notes(split: SplitName, split_dates: tuple[str, str], trained_through: str | None,
                    validated_through: str | None) -> list[str]:
    """Warnings for a scored split (first and last bar) that starts on or before the checkpoint's last training bar,
    or on or before its last validation bar while reaching past its training bars. Dates are ISO timestamps
    (``YYYY-MM-DDTHH:MM:SS``, UTC) compared as text. An unknown validation end is said too."""
    first, last = split_dates
    out = []
    if trained_through and first <= trained_through:
        how = "in-sample (every bar of it)" if last <= trained_through else "partly in-sample"
        out.append(f"WARNING: the policy was trained on bars up to {trained_through}, but this {split} split starts "
                   f"at {first}: the scores below are {how}.")
    if validated_through is None:
        out.append("The checkpoint does not record its validation dates and these are not the data it was trained "
                   "on, so overlap with the bars that chose it cannot be checked.")
    elif first <= validated_through and (trained_through is None or last > trained_through):
        out.append(f"WARNING: this checkpoint was chosen (best.pt) on validation bars up to {validated_through}, but "
                   f"this {split} split starts at {first}: the scores below overlap the bars that selected it, "
                   "so they are not out-of-sample.")
    return out


def _same_data(fingerprint: dict[str, Any], stored: dict[str, Any]) -> bool:
    keys = ("symbols", "first_timestamp", "last_timestamp", "n_bars", "ohlc_sha256")
    return all(fingerprint.get(k) == stored.get(k) for k in keys)
