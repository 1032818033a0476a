"""GRPO trainer with a pathwise term through the differentiable env.

Per optimizer step: ``batch_windows`` windows of ``lookback`` decision bars are gathered from the training split by
indexing; one GRU pass per window serves its ``rollout_groups`` Dirichlet rollouts and the mean-action path. The loss
combines a clipped-ratio policy gradient on group-normalised objectives, KL to an EMA reference policy (its weights'
EMA, or in the history context the EMA of the policy's per-bar outputs, ``OutputReference``), an entropy bonus, and
minus the smooth-cost objective of the mean-action path (its gradient flows through the env).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from . import actions, dirichlet, hardware
from .config import CompileMode, DTypeName, ExperimentConfig, SplitName
from .data import MarketData
from .env import (decision_growth, env_objective, execution_horizon, growth_where_tradeable, initial_holdings,
                  observed_growth, tradeable_columns)
from .errors import ConfigError, DataError
from .features import FeatureSpec, compute_features, fit_feature_spec
from .heap import set_cpu_heap
from .metrics import bars_per_year, path_metrics
from .optim import build_optimizers
from .policy import Policy, make_policy
from .policy.base import bars_of
from .rollout import deterministic_weights, generate_paths, mean_weights
from .splits import Splits, make_splits

TRAIN_STATS = ("loss", "reward_mean", "reward_std", "kl", "entropy", "pathwise_objective", "pg_loss", "grad_norm")


@dataclass(frozen=True)
class MarketTensors:
    """Pre-built tensors on the training device; windows are gathered from them by indexing."""

    features: torch.Tensor  # [T, A, F] float32, causal and train-normalised
    growth: torch.Tensor  # [T - horizon, A_out] gross growth of a decision made after bar t (accounting)
    observed: torch.Tensor  # [T - horizon, A_out] its growth up to the next decision (what the policy may see)
    splits: Splits
    horizon: int
    bars_per_year: float
    timestamps: np.ndarray  # [T] datetime64[ns] UTC
    tradeable: torch.Tensor | None = None  # [T, A] bool causal mask (union calendar); None: every asset everywhere

    def decision_columns(self, bars: torch.Tensor, include_cash: bool) -> torch.Tensor | None:
        """The columns [..., A_out] that the decisions at ``bars`` [...] may hold, or None without a mask."""
        return None if self.tradeable is None else tradeable_columns(self.tradeable[bars], include_cash)

    def decision_range(self, split: SplitName) -> tuple[int, int]:
        """Decision bars [start, stop) of a split whose earned prices all lie inside it."""
        start, end = self.splits.bounds(split)
        return start, end - self.horizon


def prepare_market(
    cfg: ExperimentConfig, market: MarketData, device: torch.device, feature_spec: FeatureSpec | None = None
) -> tuple[MarketTensors, FeatureSpec]:
    """Splits, features (normaliser fitted on train unless a spec is given) and decision growth as tensors.

    On a union calendar the market's causal mask comes along (``MarketTensors.tradeable``) and each decision's growth
    is 1 on the columns not tradeable at it (``env.growth_where_tradeable``), so no placeholder price reaches
    training. Without cash every decision bar needs one tradeable asset."""
    splits = make_splits(market.n_bars, cfg.data, cfg.train.lookback)
    if feature_spec is None:
        feature_spec = fit_feature_spec(market, cfg.features, splits.train[1])
    # from_numpy shares the float32 array instead of copying it (1.2-1.6 GB at 100 assets x 500k bars)
    features = torch.from_numpy(compute_features(market, feature_spec)).to(device)
    prices = (_shared(market.open), _shared(market.close), cfg.env.execution, cfg.env.include_cash)
    growth = decision_growth(*prices).to(device=device, dtype=torch.float32)
    observed = observed_growth(*prices).to(device=device, dtype=torch.float32)
    tradeable = market_mask(market, cfg.env.include_cash)
    if tradeable is not None:
        cols = tradeable_columns(tradeable[: growth.shape[0]], cfg.env.include_cash)
        growth, observed = growth_where_tradeable(growth, cols), growth_where_tradeable(observed, cols)
        tradeable = tradeable.to(device)
    tensors = MarketTensors(
        features=features,
        growth=growth,
        observed=observed,
        splits=splits,
        horizon=execution_horizon(cfg.env.execution),
        bars_per_year=bars_per_year(market.timestamps),
        timestamps=market.timestamps,
        tradeable=tradeable,
    )
    start, stop = tensors.decision_range("train")
    if stop - start < cfg.train.lookback:
        raise DataError(
            f"The training split has {stop - start} scorable decision bars, fewer than --lookback "
            f"{cfg.train.lookback}. Use a shorter --lookback or more data."
        )
    return tensors, feature_spec


def market_mask(market: MarketData, include_cash: bool) -> torch.Tensor | None:
    """The market's causal tradeable mask as a bool tensor [T, A], or None when every asset is tradeable at every
    bar (a common calendar). Without cash, a bar with no tradeable asset is an error: there is nothing to hold."""
    if market.tradeable is None or market.tradeable.all():
        return None
    if not include_cash:
        empty = ~market.tradeable.any(axis=1)
        if empty.any():
            t = int(np.argmax(empty))
            raise DataError(f"No asset is tradeable at bar {t} ({str(market.timestamps[t])[:19]}, {int(empty.sum())} "
                            "such bars) and cash is not traded, so there is nothing to hold. Train with --include-cash "
                            "(a run trained without it cannot hold cash later) or start the calendar later with "
                            "--min-listed N.")
    return torch.from_numpy(np.array(market.tradeable))


def _shared(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing the memory of a read-only market array (no copy: 0.4 GB per price block at 100 assets x
    500,000 bars). Only ever read: torch warns that it could be written, which nothing here does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def saves_memory(cfg: ExperimentConfig) -> bool:
    """Whether the run trades time for memory (``--gradient-checkpointing`` or ``--microbatch-windows``): then the
    step keeps nothing it could recompute (the Dirichlet terms' score) and the allocator maps large blocks (heap.py)."""
    return cfg.policy.gradient_checkpointing or cfg.train.microbatch < cfg.train.batch_windows


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but no CUDA device is available; use --device cpu or auto.")
    return torch.device(name)


def autocast_choice(name: DTypeName, device: torch.device) -> tuple[torch.dtype | None, str]:
    """Autocast dtype of the encoder (None means float32; Dirichlet math is always float32) and why, for the log.

    ``auto`` takes bf16 only where the hardware computes it natively: on a CPU with bf16 instructions that oneDNN may
    use (see ``hardware.cpu_bf16_support``), on a CUDA card of Ampere or later. Emulated bf16 is slower than float32:
    on the 2-core EPYC dev CPU bf16 matmul ran at about half the float32 rate under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE``
    and about 1/100 of it under ``AVX2``. Native bf16 pays at larger hidden sizes there: 222 vs 360 ms per
    forward+backward at hidden 256, about even at 64. Explicit choices are honoured as given.
    """
    if name == "float32":
        return None, "requested"
    if device.type == "cuda":
        native = hardware.cuda_bf16_supported()
        where = "this GPU supports bf16" if native else "this GPU has no native bf16"
    else:
        support = hardware.cpu_bf16_support()
        native = support.native
        where = f"native bf16 on this CPU, {support.why}" if native else f"this CPU has no native bf16, {support.why}"
    if name == "bfloat16":
        return torch.bfloat16, f"requested; {where}" + ("" if native else "; bf16 matmul is emulated and slow")
    if native:
        return torch.bfloat16, f"auto: {where}"
    return None, f"auto: {where}; bf16 matmul would be emulated"


def resolve_autocast(name: DTypeName, device: torch.device) -> torch.dtype | None:
    """The dtype of ``autocast_choice`` without the reason."""
    return autocast_choice(name, device)[0]


def compile_choice(mode: CompileMode, device: torch.device) -> tuple[bool, str]:
    """Whether to compile the teacher-forced scoring, and why. ``auto`` does not compile: on CPU compiling measured no
    faster (3% per step for ~10 s of compile), and on an H200 compiling the scoring at 256 assets outlasted 260 s
    (three leases) against an eager step of 0.47 s, so it could not pay back within a default training run."""
    if mode != "auto":
        return mode == "on", "requested"
    if device.type == "cuda":
        return False, "auto: off; on CUDA compiling took minutes and measured no faster step"
    return False, "auto: off on CPU, where compiling measured no faster"


def resolve_compile(mode: CompileMode, device: torch.device) -> bool:
    """The decision of ``compile_choice`` without the reason."""
    return compile_choice(mode, device)[0]


class Windows(NamedTuple):
    """Training windows: which bars and assets they hold, and the growth their decisions earn and show."""

    bars: torch.Tensor  # [B, T] decision bars (consecutive within a row)
    assets: torch.Tensor | None  # [B, k] the assets each window trades (--universe-sample), None: every asset
    growth: torch.Tensor  # [B, T, A_out]
    observed: torch.Tensor  # [B, T, A_out] growth up to the next decision (drifts what the policy is shown)
    tradeable: torch.Tensor | None = None  # [B, T, A_out] bool columns each decision may hold; None: all

    def part(self, rows: slice) -> Windows:
        """The windows of one microbatch."""
        return Windows(*(None if x is None else x[rows] for x in self))


def window_states(policy: Policy, features: torch.Tensor, windows: Windows,
                  autocast_dtype: torch.dtype | None, tradeable: torch.Tensor | None = None) -> torch.Tensor:
    """The policy's state projection [B, T, ...] on training windows of the features [T_all, A, F] (the policy's
    ``window_projection``). With an asset subset per window (cross only): in the "window" context each window's own
    columns are encoded and mixed on their own; in the "history" context every asset is encoded and mixed once, and
    each window takes its subset's columns (``window_columns``). ``tradeable``: the market's causal mask [T_all, A],
    or None."""
    if windows.assets is not None and policy.cfg.context == "window":
        picked = features[windows.bars[:, :, None], windows.assets[:, None, :]]  # [B, T, k, F]
        mask = None if tradeable is None else tradeable[windows.bars[:, :, None], windows.assets[:, None, :]]
        return policy.projection(picked, autocast_dtype, mask)
    return window_columns(policy.window_projection(features, windows.bars, autocast_dtype, tradeable), windows,
                          features.shape[1])


def window_columns(states: torch.Tensor, windows: Windows, n_assets: int) -> torch.Tensor:
    """Each window's columns of state projections [B, T, A_out, K] of every asset: its asset subset, cash (last)
    kept (--universe-sample); ``states`` unchanged when the windows trade every asset."""
    if windows.assets is None:
        return states
    cols = windows.assets
    if states.shape[2] > n_assets:
        cols = torch.cat([cols, torch.full_like(cols[:, :1], n_assets)], -1)
    index = cols[:, None, :, None].expand(states.shape[0], states.shape[1], cols.shape[1], states.shape[-1])
    return states.gather(2, index)


class OutputReference:
    """The EMA reference in output space (``TrainConfig.reference`` "outputs", the "history" context): per bar of
    the training history, an exponential moving average of the policy's state projection.

    A reference whose weights are an EMA of the policy's needs a pass of its own over the history every step (for the
    cross-sectional policy at 256 assets 0.23 s of a 5-6 s step on 2 CPU cores). In the history context a bar's
    projection does not depend on the window that reads it, so the policy's own pass, which the step runs anyway, can
    be averaged instead: step n reads, for every bar its pass covers, ``decay * reference + (1 - decay) *
    projection`` (and keeps it once its update proves finite), where the weights' EMA would hold the projection of
    the averaged weights. The two agree to first order while the weights move slowly; the reference's head (the part
    of the concentrations that reads the held weights) is still the weights' EMA. A bar the buffer has not yet
    covered starts at the policy's projection (the reference equals the policy there, as it does everywhere at step
    0).
    """

    def __init__(self, decay: float, capacity: int) -> None:
        self.decay = decay
        self.capacity = capacity  # bars the buffer holds: the training split's decision bars
        self.values: torch.Tensor | None = None  # [capacity, ...] per-bar state projections
        self.filled = 0  # bars 0 .. filled - 1 hold an average

    def averaged(self, history: torch.Tensor) -> torch.Tensor:
        """The reference's projections [stop, ...] of the bars of the policy's projections ``history`` [stop, ...]
        (no gradient) once averaged into the buffer; the buffer itself changes only with ``store``."""
        n = min(self.filled, history.shape[0])
        if n == 0:
            return history.clone()
        assert self.values is not None
        return torch.cat([torch.lerp(self.values[:n], history[:n], 1.0 - self.decay), history[n:]])

    def store(self, averaged: torch.Tensor) -> None:
        """Keep ``averaged`` (from ``averaged``) as bars 0 .. len - 1 of the buffer. The trainer stores it once the
        step's update has proved finite, so a skipped step leaves it as it was."""
        stop = averaged.shape[0]
        if stop > self.capacity:
            raise ValueError(f"the history pass covers {stop} bars; the reference holds {self.capacity}")
        if self.values is None:
            self.values = averaged.new_empty(self.capacity, *averaged.shape[1:])
        self.values[:stop] = averaged
        self.filled = max(self.filled, stop)

    def state_dict(self) -> dict[str, Any]:
        values = None if self.values is None else self.values[:self.filled].detach().cpu().clone()
        return {"values": values, "filled": self.filled}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.values, self.filled = None, 0
        if state["values"] is not None:
            self.store(state["values"].to(device))


@dataclass
class Rollouts:
    """What one microbatch's rollouts leave for the updates that follow them (all without gradient)."""

    windows: Windows
    held: torch.Tensor  # [B, R, T, A_out] holdings shown to the policy; R = groups (+1 for the mean path)
    sampled: torch.Tensor  # [B, G, T, A_out] sampled targets (the Dirichlet draws)
    advantages: torch.Tensor  # [B, G]
    alpha_ref: torch.Tensor  # [B, G, T, A_out] reference concentrations on the same inputs
    rewards: torch.Tensor  # [B, G] exact-cost objectives of the sampled paths
    old_logp: torch.Tensor | None = None  # [B, G, T] log-probs under the policy that drew them (set by update 0)


class GRPOLoss:
    """Rollouts and loss of one microbatch of windows; holds the (optionally compiled) scoring function."""

    def __init__(self, cfg: ExperimentConfig, policy: Policy, features: torch.Tensor, compile_scoring: bool,
                 tradeable: torch.Tensor | None = None) -> None:
        self.cfg = cfg
        self.policy = policy
        self.features = features  # [T, A, F] of the whole market: windows index into it
        self.tradeable = tradeable  # [T, A] bool causal mask of the whole market, or None
        # the Dirichlet terms' backward reads the forward's log w - digamma(alpha) instead of evaluating both again
        # (same bits), unless the run trades time for memory: one more tensor the size of the concentrations
        self.keep_score = not saves_memory(cfg)
        self.scoring: Callable[..., tuple[torch.Tensor, ...]] = self._scoring
        if compile_scoring:
            self.scoring = torch.compile(self._scoring, fullgraph=True, dynamic=False)

    def _scoring(
        self,
        state_proj: torch.Tensor,
        held: torch.Tensor,
        sampled: torch.Tensor,
        advantages: torch.Tensor,
        old_logp: torch.Tensor | None,
        alpha_ref: torch.Tensor,
        growth: torch.Tensor,
        observed: torch.Tensor,
        initial: torch.Tensor,
        tradeable: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        tc, env = self.cfg.train, self.cfg.env
        groups = sampled.shape[1]
        alpha = self.policy.concentrations(state_proj[:, None], held)  # [B, R, T, A]
        # one split, not a slice and an index: their backwards would each fill a zeroed tensor the size of alpha and
        # add the two (at 1,024 assets 0.5 GB each, at the step's peak); split's is one concatenation
        alpha_s, alpha_mean = alpha.split([groups, alpha.shape[1] - groups], dim=1)
        if tradeable is None:
            logp, entropy, kl = dirichlet.log_prob_entropy_kl(alpha_s, sampled, alpha_ref, self.keep_score)
        else:  # the Dirichlet over each bar's tradeable columns
            logp, entropy, kl = dirichlet.masked_log_prob_entropy_kl(alpha_s, sampled, alpha_ref, tradeable[:, None],
                                                                     self.keep_score)
        # Per-bar ratio to the policy that drew the rollouts; on the first update that policy is this one.
        ratio = torch.exp(logp - (logp.detach() if old_logp is None else old_logp))
        adv = advantages[..., None]
        pg_bar = -torch.minimum(ratio * adv, ratio.clamp(1 - tc.clip_eps, 1 + tc.clip_eps) * adv)
        if env.rebalance_every > 1:  # targets of bars that do not trade change nothing: no credit for them
            mask = actions.decision_mask(pg_bar.shape[-1], env.rebalance_every, pg_bar.device)
            pg = (pg_bar * mask).sum(-1).mean() / mask.sum()
        else:
            pg = pg_bar.mean()
        entropy, kl = entropy.mean(), kl.mean()
        loss = tc.pg_weight * pg + tc.kl_weight * kl - tc.entropy_weight * entropy
        if alpha.shape[1] > groups:
            mean = alpha_mean[:, 0] if tradeable is None else alpha_mean[:, 0] * tradeable
            w = actions.execute_path(self.policy.cfg.action, mean_weights(mean), growth, observed,
                                     initial, self.policy.action_strength(), env.rebalance_every, tradeable,
                                     env.include_cash, self.policy.cash_excess)
            objective, _ = env_objective(w, growth, initial, env, smooth=True, training=True, tradeable=tradeable)
            pathwise = objective.mean()
            loss = loss - tc.pathwise_weight * pathwise
        else:
            pathwise = torch.zeros((), device=loss.device)
        return loss, pg, kl, entropy, pathwise, logp.detach()

    def collect(
        self,
        reference: Policy,
        windows: Windows,
        generator: torch.Generator | None,
        autocast_dtype: torch.dtype | None,
        projections: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[Rollouts, torch.Tensor]:
        """Sample the rollouts of the windows; also returns the encoder's state projection, with gradient.

        ``projections``: the policy's (with gradient) and the reference's state projections of these windows when
        the caller has computed them (one history pass shared by every microbatch); None computes them here.

        ``windows.growth`` is each decision's accounting growth; ``windows.observed`` its growth up to the next
        decision, which drifts the holdings the policy is shown (in open execution the next open is not yet known).
        """
        cfg, policy = self.cfg, self.policy
        groups = cfg.train.rollout_groups
        growth, observed = windows.growth, windows.observed
        if projections is None:
            state_proj = window_states(policy, self.features, windows, autocast_dtype, self.tradeable)
        else:
            state_proj = projections[0]
        paths = generate_paths(policy, state_proj.detach(), observed, groups, cfg.train.pathwise_weight > 0, generator,
                               growth=growth, rebalance_every=cfg.env.rebalance_every, tradeable=windows.tradeable)
        sampled = paths.targets[:, :groups]
        with torch.no_grad():
            initial = initial_holdings(growth.shape[-1], policy.include_cash, growth.device)
            mask = None if windows.tradeable is None else windows.tradeable[:, None]
            rewards, _ = env_objective(paths.weights[:, :groups], growth[:, None], initial, cfg.env, smooth=False,
                                       training=True, tradeable=mask)  # [B, G]
            std = rewards.std(dim=1, keepdim=True)
            advantages = (rewards - rewards.mean(dim=1, keepdim=True)) / (std + 1e-8)
            ref_proj = (window_states(reference, self.features, windows, autocast_dtype, self.tradeable)
                        if projections is None else projections[1])
            alpha_ref = reference.concentrations(ref_proj[:, None], paths.held[:, :groups])
        return Rollouts(windows, paths.held, sampled, advantages, alpha_ref, rewards), state_proj

    def loss(
        self, ro: Rollouts, state_proj: torch.Tensor | None, autocast_dtype: torch.dtype | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and a stats vector (TRAIN_STATS order, grad_norm left 0); records old log-probs on first use.

        ``state_proj`` is the projection returned by ``collect`` for the first update; later updates recompute it
        with the updated weights.
        """
        policy = self.policy
        if state_proj is None:
            state_proj = window_states(policy, self.features, ro.windows, autocast_dtype, self.tradeable)
        growth, observed = ro.windows.growth, ro.windows.observed
        initial = initial_holdings(growth.shape[-1], policy.include_cash, growth.device)
        loss, pg, kl, entropy, pathwise, logp = self.scoring(
            state_proj, ro.held, ro.sampled, ro.advantages, ro.old_logp, ro.alpha_ref, growth, observed, initial,
            ro.windows.tradeable
        )
        if ro.old_logp is None:
            ro.old_logp = logp
        stats = torch.stack(
            [loss.detach(), ro.rewards.mean(), ro.rewards.std(dim=1).mean(), kl.detach(), entropy.detach(),
             pathwise.detach(), pg.detach(), torch.zeros((), device=loss.device)]
        )
        return loss, stats


@dataclass(frozen=True)
class SplitScore:
    """A deterministic policy's evaluation on one split (``score_split``): the JSON-able ``summary`` that validation
    rows and reports carry, and the per-bar net log growth [bars] of the policy and of equal weight (float64), which
    the selection gate reads."""

    summary: dict[str, Any]
    policy: np.ndarray
    equal_weight: np.ndarray


@torch.no_grad()
def evaluate_split(
    policy: Policy,
    tensors: MarketTensors,
    cfg: ExperimentConfig,
    split: SplitName,
) -> dict[str, Any]:
    """``score_split(...).summary``."""
    return score_split(policy, tensors, cfg, split).summary


@torch.no_grad()
def score_split(policy: Policy, tensors: MarketTensors, cfg: ExperimentConfig, split: SplitName) -> SplitScore:
    """Deterministic policy over a whole split (one path from its first bar, the encoder's context as configured)
    next to equal weight, exact costs.

    Runs in float32 without autocast, as the backtester does, so validation and backtest numbers agree. The summary's
    ``excess_vs_equal_weight`` holds the excess log growth over the split and its autocorrelation-robust t-statistic
    (``gate.hac_t``: Newey-West standard error).
    """
    start, stop = tensors.decision_range(split)
    if stop - start < 2:
        raise DataError(f"The {split} split has {stop - start} scorable bars; use smaller --lookback or more data.")
    return score_range(policy, tensors, cfg, start, stop, split)


@torch.no_grad()
def score_range(policy: Policy, tensors: MarketTensors, cfg: ExperimentConfig, start: int, stop: int,
                label: str) -> SplitScore:
    """``score_split`` over the decision bars [start, stop) (every price they earn lies before bar stop + horizon),
    as one path from cash at ``start``; ``label`` names the range in the summary ("split")."""
    from .gate import hac_t

    was_training = policy.training
    policy.eval()
    growth = tensors.growth[start:stop][None]
    bars = torch.arange(start, stop, device=growth.device)[None]
    weights = deterministic_weights(policy, tensors.features, tensors.observed[start:stop][None], policy.include_cash,
                                    growth=growth, rebalance_every=cfg.env.rebalance_every, bars=bars,
                                    tradeable=tensors.tradeable)
    mask = tensors.decision_columns(bars, policy.include_cash)
    policy.train(was_training)
    initial = initial_holdings(policy.n_out, policy.include_cash, growth.device)
    equal = torch.zeros(policy.n_out, device=growth.device)
    equal[: policy.n_assets] = 1.0 / policy.n_assets
    out: dict[str, Any] = {
        "split": label,
        "first_bar": str(tensors.timestamps[start])[:19],
        "last_bar": str(tensors.timestamps[stop - 1])[:19],
        "bars": stop - start,
    }
    per_bar = {}
    for name, w in (("policy", weights), ("equal_weight", equal.expand_as(weights))):
        objective, acc = env_objective(w.double(), growth.double(), initial.double(), cfg.env, smooth=False,
                                       tradeable=mask)
        per_bar[name] = acc.log_growth[0].cpu().numpy()
        m = path_metrics(per_bar[name], acc.turnover[0].cpu().numpy(), acc.cost[0].cpu().numpy(), tensors.bars_per_year)
        out[name] = {k: float(v) for k, v in m.items()}
        out[name]["log_growth"] = float(per_bar[name].sum())
        out[name]["objective"] = float(objective[0])
    excess = per_bar["policy"] - per_bar["equal_weight"]
    out["excess_vs_equal_weight"] = {"log_growth": float(excess.sum()), "t_stat": hac_t(excess)}
    return SplitScore(out, per_bar["policy"], per_bar["equal_weight"])


def ema_update(reference: Policy, policy: Policy, decay: float) -> None:
    with torch.no_grad():
        ref = list(reference.parameters())
        torch._foreach_lerp_(ref, [p.detach() for p in policy.parameters()], 1.0 - decay)


def make_reference(policy: Policy) -> Policy:
    reference = copy.deepcopy(policy)
    reference.requires_grad_(False)
    return reference


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


def sample_windows(tensors: MarketTensors, batch: int, first_start: int, last_start: int, offsets: torch.Tensor,
                   universe_sample: int | None, sampler: torch.Generator) -> Windows:
    """``batch`` random windows of ``tensors`` whose first decision bar lies in [first_start, last_start] and whose
    bars are that start plus ``offsets`` [L]: their bars [B, L], assets (``universe_sample`` of them per window, in
    their original order; None: every asset), growth and observed growth [B, L, A_out], tradeable columns. The window
    starts and asset subsets are drawn from ``sampler``."""
    device = offsets.device
    starts = torch.randint(first_start, last_start + 1, (batch,), generator=sampler).to(device)
    bars = starts[:, None] + offsets
    growth, observed = tensors.growth[bars], tensors.observed[bars]
    n_assets = tensors.features.shape[1]
    include_cash = growth.shape[-1] > n_assets
    if universe_sample is None:
        return Windows(bars, None, growth, observed, tensors.decision_columns(bars, include_cash))
    # Each window trades its own random k assets (in their original order; cash, the last column, is kept).
    pick = torch.rand(len(starts), n_assets, generator=sampler).argsort(-1)[:, :universe_sample].sort(-1).values
    pick = pick.to(device)
    cols = torch.cat([pick, torch.full_like(pick[:, :1], n_assets)], -1) if include_cash else pick
    rows = torch.arange(len(starts), device=device)[:, None, None]
    steps = torch.arange(bars.shape[1], device=device)[None, :, None]
    picked = cols[:, None]
    mask = None
    if tensors.tradeable is not None:
        mask = tradeable_columns(tensors.tradeable[bars[:, :, None], pick[:, None, :]], include_cash)
    return Windows(bars, pick, growth[rows, steps, picked], observed[rows, steps, picked], mask)


class Trainer:
    """Owns the policy, its EMA reference, optimisers and RNGs; ``step`` runs one optimizer step."""

    def __init__(self, cfg: ExperimentConfig, tensors: MarketTensors, device: torch.device) -> None:
        tc = cfg.train
        self.cfg, self.tensors, self.device = cfg, tensors, device
        torch.manual_seed(tc.seed)
        _, n_assets, n_features = tensors.features.shape
        if tc.universe_sample is not None and tc.universe_sample >= n_assets:
            raise ConfigError(f"--universe-sample {tc.universe_sample} is not below the {n_assets} assets of the data; "
                              "pass a smaller subset or drop the flag to train on every asset.")
        self.policy = make_policy(cfg.policy, n_assets, n_features, cfg.env.include_cash).to(device)
        self.reference = make_reference(self.policy)
        # the reference's state projections as an EMA of the policy's per bar (OutputReference), or None: the
        # reference's own pass with its averaged weights
        self.output_reference = (OutputReference(tc.ema_decay ** tc.updates_per_batch,
                                                 tensors.decision_range("train")[1])
                                 if cfg.reference_mode == "outputs" else None)
        self.optimizers = build_optimizers(self.policy, tc)
        self.sampler = torch.Generator().manual_seed(tc.seed)  # window starts
        self.actions = torch.Generator(device=device).manual_seed(tc.seed + 1)  # Dirichlet samples
        self.autocast, self.autocast_reason = autocast_choice(tc.dtype, device)
        self.compiled, self.compile_reason = compile_choice(tc.compile, device)
        if device.type == "cpu":
            set_cpu_heap(tc.cpu_heap, saves_memory(cfg))
        self.loss_fn = GRPOLoss(cfg, self.policy, tensors.features, self.compiled, tensors.tradeable)
        self.step_count = 0
        self.best_score: float | None = None
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        start, stop = tensors.decision_range("train")
        self._first_start, self._last_start = start, stop - tc.lookback
        self._offsets = torch.arange(tc.lookback, device=device)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.policy.parameters())

    def sample_windows(self) -> Windows:
        """Random training windows: their bars [B, L], assets (with --universe-sample), growth and observed growth
        [B, L, A_out]."""
        return sample_windows(self.tensors, self.cfg.train.batch_windows, self._first_start, self._last_start,
                              self._offsets, self.cfg.train.universe_sample, self.sampler)

    def step(self) -> torch.Tensor | None:
        """One batch of rollouts and ``updates_per_batch`` optimizer steps on it (gradients accumulated over
        microbatches). Returns the mean stats of the updates, or None if a non-finite update was skipped."""
        tc = self.cfg.train
        windows = self.sample_windows()
        mb = tc.microbatch
        parts = [slice(lo, lo + mb) for lo in range(0, tc.batch_windows, mb)]
        rollouts: list[Rollouts] = []
        total = torch.zeros(len(TRAIN_STATS), device=self.device)
        skipped = False
        # In the history context every window reads one causal pass over the history: with microbatches it runs
        # once per step, not once per microbatch. Each microbatch's backward stops at a detached copy of the
        # projections, whose gradient then goes through the pass in one backward.
        shared = self.policy.cfg.context == "history" and len(parts) > 1
        ref_all = None
        for update in range(tc.updates_per_batch):
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            stats = torch.zeros(len(TRAIN_STATS), device=self.device)
            proj_all = None
            if update == 0 and self.output_reference is not None:
                proj_all, ref_history, ref_all = self._projections_with_output_reference(windows)
            elif shared:
                proj_all = window_states(self.policy, self.tensors.features, windows, self.autocast,
                                         self.tensors.tradeable)
            if shared:
                leaf = proj_all.detach().requires_grad_()
                if ref_all is None:
                    with torch.no_grad():
                        ref_all = window_states(self.reference, self.tensors.features, windows, self.autocast,
                                                self.tensors.tradeable)
            for i, part in enumerate(parts):
                if update == 0:
                    # one microbatch reads the pass's projections directly, its backward going through the pass
                    given = (leaf[part], ref_all[part]) if shared else None if proj_all is None else (proj_all, ref_all)
                    ro, state_proj = self.loss_fn.collect(self.reference, windows.part(part), self.actions,
                                                          self.autocast, given)
                    rollouts.append(ro)
                else:
                    ro, state_proj = rollouts[i], (leaf[part] if shared else None)
                loss, mb_stats = self.loss_fn.loss(ro, state_proj, self.autocast)
                (loss * (mb / tc.batch_windows)).backward()
                stats += mb_stats * (mb / tc.batch_windows)
            if shared and leaf.grad is not None:
                proj_all.backward(leaf.grad)
            stats[-1] = torch.nn.utils.clip_grad_norm_(self.params, tc.grad_clip, foreach=True)
            # The one host sync per update: a non-finite loss or gradient must not reach the weights.
            if not bool(torch.isfinite(stats).all()):
                for opt in self.optimizers:
                    opt.zero_grad(set_to_none=True)
                skipped = True
                break
            for opt in self.optimizers:
                opt.step()
            ema_update(self.reference, self.policy, tc.ema_decay)
            if update == 0 and self.output_reference is not None:
                self.output_reference.store(ref_history)
            total += stats
        self.step_count += 1
        if skipped:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
            return None
        self.nonfinite_run = 0
        return total / tc.updates_per_batch

    def _projections_with_output_reference(self, windows: Windows) -> tuple[torch.Tensor, ...]:
        """The policy's state projections of the windows (with gradient) from one history pass; the reference's
        projections of the pass's bars once averaged with it (``OutputReference.averaged``, for the step to store
        when it proves finite); and the reference's projections of the windows."""
        assert self.output_reference is not None
        features, tradeable = self.tensors.features, self.tensors.tradeable
        history = self.policy.history_projection(features, int(windows.bars.max()) + 1, self.autocast, tradeable)
        ref_history = self.output_reference.averaged(history.detach())
        n_assets = features.shape[1]
        return (window_columns(bars_of(history, windows.bars), windows, n_assets), ref_history,
                window_columns(bars_of(ref_history, windows.bars), windows, n_assets))

    def evaluate(self, split: SplitName = "validation") -> dict[str, Any]:
        return evaluate_split(self.policy, self.tensors, self.cfg, split)

    # --- state for checkpoints and --resume -------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "sampler": self.sampler.get_state(), "actions": self.actions.get_state()}
        return {
            "reference": {k: v.detach().cpu().clone() for k, v in self.reference.state_dict().items()},
            "reference_outputs": None if self.output_reference is None else self.output_reference.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "rng": rng,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_run": self.nonfinite_run,
        }

    def load_training_state(self, policy_state: dict, state: dict[str, Any], step: int, best: float | None) -> None:
        self.policy.load_state_dict(policy_state)
        self.reference.load_state_dict(state["reference"])
        if self.output_reference is not None:
            saved = state.get("reference_outputs")
            if saved is None:
                # a checkpoint written before the output reference (or by a run that averaged weights)
                print("note: the checkpoint holds no output reference; it starts again from the policy's "
                      "projections.", flush=True)
            else:
                self.output_reference.load_state_dict(saved, self.device)
        if len(state["optimizers"]) != len(self.optimizers):
            raise ConfigError("The checkpoint's optimiser layout differs (was --no-muon changed?); resume with the same flags.")
        for opt, sd in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        torch.set_rng_state(state["rng"]["torch"])
        self.sampler.set_state(state["rng"]["sampler"])
        try:
            self.actions.set_state(state["rng"]["actions"])
        except (RuntimeError, ValueError):
            # A run resumed on another device type cannot continue the same random stream; it goes on with a
            # fresh one (so it is no longer bit-identical to an uninterrupted run).
            self.actions.manual_seed(self.cfg.train.seed + 1 + step)
            print(f"note: the rollout RNG state was saved on another device; reseeded at step {step}.", flush=True)
        self.nonfinite_total = int(state["nonfinite_total"])
        self.nonfinite_run = int(state["nonfinite_run"])
        self.step_count = step
        self.best_score = best


def env_steps_per_step(cfg: ExperimentConfig) -> int:
    """Training env-steps per optimizer step: windows x rollouts x lookback."""
    tc = cfg.train
    return tc.batch_windows * tc.rollout_groups * tc.lookback


def time_steps(trainer: Trainer, n: int) -> list[float]:
    """Wall seconds of ``n`` optimizer steps, each ended by a device sync (for benchmarks)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        trainer.step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        out.append(time.perf_counter() - t0)
    return out
