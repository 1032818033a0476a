"""The one tree of frozen dataclasses that configures data, features, env, policy, training and backtests.

The CLI builds it, the run folder's ``config.json`` stores it, the checkpoint embeds it, and the backtester rebuilds
the policy and the env from it. ``config_from_dict`` refuses unknown keys and wrong choices.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .heap import CpuHeap

Execution = Literal["open", "close"]
SplitName = Literal["train", "validation", "test", "all"]
DeviceName = Literal["auto", "cpu", "cuda"]
DTypeName = Literal["auto", "float32", "bfloat16"]
CompileMode = Literal["auto", "on", "off"]
EncoderName = Literal["mingru", "gru"]
Architecture = Literal["flat", "cross"]
Mixing = Literal["pool", "mean", "attention"]
Action = Literal["target", "partial", "band"]
ReferenceMode = Literal["auto", "outputs", "weights"]
Context = Literal["window", "history"]
AssetHead = Literal["mlp", "affine"]
CashTarget = Literal["share", "excess"]
Calendar = Literal["intersection", "union"]


def _check_finite(obj: Any, section: str) -> None:
    """Every float field must be a finite number: range checks such as ``x < 0`` are False for NaN."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{f.name} must be a finite number, got {value}.")


def _check_choices(obj: Any, section: str, fields: tuple[tuple[str, Any], ...]) -> None:
    """Each named field must be one of its Literal's values (the CLI and config files check this too; a config built
    in Python is checked here)."""
    for name, choices in fields:
        if getattr(obj, name) not in get_args(choices):
            raise ConfigError(f"{section}.{name} must be one of {get_args(choices)}, got {getattr(obj, name)!r}.")


@dataclass(frozen=True)
class DataConfig:
    """Where the OHLC files are and which symbols to use."""

    root: str = "trainingdata"  # folder of per-symbol files; falls back to the bundled sample if absent
    glob: str = "*"  # file pattern inside root; only .csv, .csv.gz and .parquet files are read
    include: tuple[str, ...] = ()  # symbols to keep (empty: all)
    exclude: tuple[str, ...] = ()  # symbols to leave out
    max_assets: int | None = None  # keep the first N symbols in sorted order after include/exclude
    max_fill_bars: int = 3  # longest run of missing bars that may be forward-filled
    val_fraction: float = 0.15  # share of the scorable bars given to validation
    test_fraction: float = 0.15  # share of the scorable bars given to test
    embargo_bars: int | None = None  # gap between splits in bars; None means the lookback
    # Explicit bar ranges instead of the fractions: (train start, train end, validation start, validation end, test
    # start, test end), half-open. Walk-forward studies give every fold's run its own; bars after test end are unused.
    split_bars: tuple[int, ...] = ()
    # Last bar (ISO timestamp, inclusive) whose gaps decide which assets are kept; None: the training split's end.
    # A study sets it to its first fold's training end, so every fold trades one universe chosen from the past only.
    universe_through: str | None = None
    # "intersection": the span in which every kept asset is listed (long gaps in the training part drop an asset);
    # "union": every asset over its own life, from the earliest first bar to the latest last bar, with a causal
    # tradeable mask (data layer only for now: training, backtests, studies and predict refuse it)
    calendar: Calendar = "intersection"
    min_listed: int | None = None  # union only: start the calendar at the first bar where this many assets have listed

    def __post_init__(self) -> None:
        _check_finite(self, "data")
        if self.calendar not in get_args(Calendar):
            raise ConfigError(f"data.calendar must be one of {get_args(Calendar)}, got {self.calendar!r}.")
        if self.min_listed is not None and (self.calendar != "union" or self.min_listed < 1):
            raise ConfigError(f"data.min_listed ({self.min_listed}) must be >= 1 and needs data.calendar 'union'.")
        if self.split_bars and len(self.split_bars) != 6:
            raise ConfigError(f"data.split_bars must hold 6 bar indices (train start/end, validation start/end, test "
                              f"start/end), got {list(self.split_bars)}.")
        if self.max_fill_bars < 0:
            raise ConfigError(f"data.max_fill_bars must be >= 0, got {self.max_fill_bars}.")
        if not (0.0 < self.val_fraction < 0.5 and 0.0 < self.test_fraction < 0.5):
            raise ConfigError(
                f"data.val_fraction and data.test_fraction must lie in (0, 0.5); got {self.val_fraction} and "
                f"{self.test_fraction}."
            )
        if self.max_assets is not None and self.max_assets < 1:
            raise ConfigError(f"data.max_assets must be >= 1, got {self.max_assets}.")
        if self.embargo_bars is not None and self.embargo_bars < 0:
            raise ConfigError(f"data.embargo_bars must be >= 0, got {self.embargo_bars}.")


@dataclass(frozen=True)
class FeatureConfig:
    """Causal per-bar features computed from OHLC(V). Normalisers are fitted on the training split only."""

    return_windows: tuple[int, ...] = (1, 5, 20)  # trailing close-to-close log-return horizons, in bars
    volatility_window: int = 20  # trailing window of the realised-volatility feature, in bars
    normalise: bool = True  # z-score each feature with mean/std fitted on the training split
    # trailing windows (bars) of the close-to-moving-average features log(C_t / mean of the last w closes)
    ma_windows: tuple[int, ...] = (5, 10, 20)
    # add each return and moving-average feature minus its mean over the data's assets at the same bar
    cross_sectional: bool = True
    # trailing windows (bars) of each asset's lag-1 return autocorrelation and the AR(1) forecast it implies
    autocorr_windows: tuple[int, ...] = (20,)

    def __post_init__(self) -> None:
        if not self.return_windows or min(self.return_windows) < 1:
            raise ConfigError(f"features.return_windows must be positive integers, got {self.return_windows}.")
        if self.volatility_window < 2:
            raise ConfigError(f"features.volatility_window must be >= 2, got {self.volatility_window}.")
        for name in ("ma_windows", "autocorr_windows"):
            ws = getattr(self, name)
            if any(isinstance(w, bool) or not isinstance(w, int) or w < 2 for w in ws) or len(set(ws)) != len(ws):
                raise ConfigError(f"features.{name} must be distinct integers >= 2 (or empty), got {list(ws)}.")


@dataclass(frozen=True)
class EnvConfig:
    """Market accounting, costs and the risk terms of the training objective."""

    cost_bps: float = 10.0  # one-way proportional fee on traded wealth of non-cash assets, basis points
    include_cash: bool = False  # add a cash asset with price 1, no return and no fee
    execution: Execution = "open"  # "open": fill at the open of t+1; "close": fill at the close of t (24/7 markets)
    risk_aversion: float = 0.0  # weight of the variance penalty (per-bar log growth variance times bars)
    drawdown_lambda: float = 0.0  # weight of the smooth maximum drawdown of log wealth
    smooth_abs_eps: float = 1e-6  # smoothing of |x| in the training cost, fraction of wealth
    drawdown_temperature: float = 0.01  # temperature of the smooth running maximum, log-wealth units
    # One-way fee of the training objective (rewards and pathwise term), basis points; None: cost_bps. Validation,
    # backtests and studies always charge cost_bps. A higher training fee teaches the policy to trade less.
    train_cost_bps: float | None = None
    rebalance_every: int = 1  # decide every N bars of a path (from its first); holdings drift in between

    def __post_init__(self) -> None:
        _check_finite(self, "env")
        if not (0.0 <= self.cost_bps < 10_000.0):
            raise ConfigError(f"env.cost_bps must lie in [0, 10000), got {self.cost_bps}.")
        if self.risk_aversion < 0 or self.drawdown_lambda < 0:
            raise ConfigError("env.risk_aversion and env.drawdown_lambda must be >= 0.")
        if self.smooth_abs_eps <= 0 or self.drawdown_temperature <= 0:
            raise ConfigError("env.smooth_abs_eps and env.drawdown_temperature must be > 0.")
        if self.execution not in get_args(Execution):
            raise ConfigError(f"env.execution must be one of {get_args(Execution)}, got {self.execution!r}.")
        if self.train_cost_bps is not None and not (0.0 <= self.train_cost_bps < 10_000.0):
            raise ConfigError(f"env.train_cost_bps must lie in [0, 10000), got {self.train_cost_bps}.")
        if self.rebalance_every < 1:
            raise ConfigError(f"env.rebalance_every must be >= 1 bar, got {self.rebalance_every}.")

    @property
    def cost_rate(self) -> float:
        """One-way fee as a fraction of traded wealth."""
        return self.cost_bps * 1e-4

    @property
    def train_cost_rate(self) -> float:
        """One-way fee of the training objective as a fraction (``train_cost_bps``, else ``cost_bps``)."""
        return (self.cost_bps if self.train_cost_bps is None else self.train_cost_bps) * 1e-4


@dataclass(frozen=True)
class PolicyConfig:
    """Dirichlet policy over a causal recurrent encoder."""

    # "flat": one encoder over all assets' features at once (tied to the symbols it was trained on); "cross": one
    # encoder shared by every asset, assets mixed at each bar, one head per asset (any universe, same features)
    architecture: Architecture = "cross"
    encoder: EncoderName = "mingru"  # "mingru": minimal GRU computed with a parallel scan; "gru": torch.nn.GRU
    hidden_size: int = 64  # flat: encoder hidden units
    num_layers: int = 1  # stacked encoder layers
    head_hidden: int = 64  # flat: hidden units of the head that mixes encoder state and held weights
    # cross only: every asset is a sequence of its own, so its widths multiply by the asset count
    asset_hidden: int = 32  # cross: hidden units of the shared per-asset encoder and of the mixing layer
    asset_head_hidden: int = 32  # cross: hidden units of the per-asset head (with "mean" mixing, where own and mean
    # state meet)
    # cross: how the per-asset head reads that asset's held weight h: "mlp", alpha = softplus(w . silu(s + v h) + c),
    # K hidden units per (window, rollout, bar, asset); "affine", alpha = softplus(a(s) + b(s) h) with a and b read
    # off the state once per (bar, asset), so the work repeated per rollout is a few operations per asset
    asset_head: AssetHead = "affine"
    # cross: how assets interact at each bar: "pool", a DeepSets layer over the tokens (a per-token hidden layer of
    # each token and the mean token); "mean", the mean token through one linear map added to every token (no
    # per-token layer: the head's hidden layer does the mixing; the default since, with a 32-wide head, it learned
    # as well as "pool" did with a 16-wide one, its pass over the history costing 0.35 s instead of 0.48 s at 256
    # assets: README Policies); "attention", self-attention over the tokens
    mixing: Mixing = "mean"
    # How a target becomes a trade (actions.py): "target" trades to it in full; "partial" moves a learned fraction of
    # the way; "band" leaves holdings inside a learned no-trade band around it
    action: Action = "band"
    # What the encoder has read when it decides at bar t: "window", the bars of the current window only (each window
    # starts cold, so a bar is encoded once per window containing it); "history", every bar of the data up to t (one
    # causal pass per step serves every window, so each bar is encoded once)
    context: Context = "history"
    # With a cash asset, how the Dirichlet's cash weight c becomes the target's: "share", c as it is (an untrained
    # policy holds 1 / (A + 1) in cash); "excess", its excess over the uniform share, (c - c0)^+ / (1 - c0), the
    # assets sharing the rest (an untrained policy holds no cash: equal weight over the assets, the benchmark)
    cash_target: CashTarget = "excess"
    attention_heads: int = 4  # cross with attention mixing: heads (must divide asset_hidden)
    alpha_floor: float = 0.5  # lower bound added to every concentration (keeps fp32 samples off exact 0)
    alpha_max: float = 200.0  # upper bound of a concentration (keeps log-prob finite in fp32)
    # recompute activations in backward to save memory: the encoder (flat); every per-token layer up to the mixing
    # (cross)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _check_finite(self, "policy")
        for name in ("hidden_size", "num_layers", "head_hidden", "asset_hidden", "asset_head_hidden",
                     "attention_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"policy.{name} must be >= 1, got {getattr(self, name)}.")
        _check_choices(self, "policy", (("architecture", Architecture), ("encoder", EncoderName), ("mixing", Mixing),
                                        ("action", Action), ("context", Context), ("asset_head", AssetHead),
                                        ("cash_target", CashTarget)))
        if self.architecture == "cross" and self.mixing == "attention" and self.asset_hidden % self.attention_heads:
            raise ConfigError(f"policy.attention_heads ({self.attention_heads}) must divide policy.asset_hidden "
                              f"({self.asset_hidden}) for attention mixing.")
        if not (0.0 < self.alpha_floor < self.alpha_max):
            raise ConfigError("policy.alpha_floor must be > 0 and below policy.alpha_max.")


@dataclass(frozen=True)
class TrainConfig:
    """GRPO training loop."""

    lookback: int = 192  # bars per training window
    batch_windows: int = 128  # windows per optimizer step
    rollout_groups: int = 4  # Dirichlet rollouts per window (the GRPO group)
    epochs: int = 600  # optimizer steps
    microbatch_windows: int | None = None  # windows per forward/backward; gradients accumulate to batch_windows
    # cross only: each training window trades a random subset of this many assets (augmentation; the per-step cost
    # no longer grows with the universe). None: every asset. Validation and backtests always use the whole universe.
    universe_sample: int | None = None
    lr: float = 2e-3  # AdamW learning rate
    muon_lr: float = 2e-3  # Muon learning rate (hidden matrices; RMS-matched to AdamW)
    weight_decay: float = 0.1  # decoupled weight decay of AdamW (matrices only) and Muon
    use_muon: bool = True
    grad_clip: float = 1.0  # global gradient-norm clip
    pg_weight: float = 1.0  # weight of the clipped-ratio GRPO policy-gradient loss
    pathwise_weight: float = 10.0  # weight of the pathwise (differentiable-env) objective of the mean action
    kl_weight: float = 0.01  # weight of KL(policy || EMA reference)
    entropy_weight: float = 1e-3  # weight of the Dirichlet entropy bonus
    clip_eps: float = 0.2  # PPO/GRPO ratio clip
    updates_per_batch: int = 1  # optimizer steps on each batch of rollouts (the ratio clip binds from the second)
    ema_decay: float = 0.99  # reference policy = EMA of the policy with this decay per optimizer step
    # what the reference averages: "weights" (a pass of its own over the windows each step), "outputs" (per bar, the
    # policy's own state projections; the "history" context only, trainer.OutputReference); "auto": outputs in the
    # history context, weights in the window context
    reference: ReferenceMode = "auto"
    device: DeviceName = "auto"
    dtype: DTypeName = "auto"  # autocast dtype for the GRU; Dirichlet math stays in float32
    compile: CompileMode = "auto"
    # on the CPU (heap.py): "keep" lets the C allocator reuse freed blocks up to 32 MiB from step to step, "heap"
    # every block (nothing mapped afresh; a higher peak), "auto" "keep" under gradient checkpointing or microbatches
    # and "heap" otherwise, "system" leaves it as the process has it
    cpu_heap: CpuHeap = "auto"
    seed: int = 0
    eval_interval: int = 50  # optimizer steps between validation evaluations and checkpoints
    # best.pt: a trained checkpoint is kept only where its validation excess log growth over equal weight has at
    # least this t-statistic; until one does, best.pt is the untrained policy (scored at step 0), equal weight seen
    # through the action. None: the best validation objective of any trained checkpoint (runs before the gate)
    select_min_t: float | None = 2.0
    # early stopping: end the run once this many evaluations in a row brought no better validation objective than
    # the best so far (the untrained policy's included); None: train every step of --epochs
    patience: int | None = None
    log_interval: int = 10  # optimizer steps between metric reads (one host sync each)
    save_dir: str = "runs"  # parent of run folders, relative to the current folder
    max_nonfinite_steps: int = 10  # consecutive non-finite steps that stop the run
    tensorboard: bool = False  # also write the training curves and hyperparameters as TensorBoard event files

    def __post_init__(self) -> None:
        _check_finite(self, "train")
        for name in ("lr", "muon_lr", "grad_clip", "clip_eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}.")
        for name in ("weight_decay", "pg_weight", "pathwise_weight", "kl_weight", "entropy_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"train.ema_decay must lie in [0, 1], got {self.ema_decay}.")
        if self.lookback < 8:
            raise ConfigError(f"train.lookback must be >= 8 bars, got {self.lookback}.")
        if self.batch_windows < 1 or self.rollout_groups < 2:
            raise ConfigError("train.batch_windows must be >= 1 and train.rollout_groups >= 2 (GRPO needs a group).")
        if self.epochs < 0:
            raise ConfigError(f"train.epochs must be >= 0, got {self.epochs}.")
        mb = self.microbatch_windows
        if mb is not None and (mb < 1 or self.batch_windows % mb != 0):
            raise ConfigError(
                f"train.microbatch_windows ({mb}) must divide train.batch_windows ({self.batch_windows})."
            )
        if self.universe_sample is not None and self.universe_sample < 2:
            raise ConfigError(f"train.universe_sample must be >= 2 assets, got {self.universe_sample}.")
        if self.updates_per_batch < 1:
            raise ConfigError(f"train.updates_per_batch must be >= 1, got {self.updates_per_batch}.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"train.patience must be >= 1 evaluations (or None), got {self.patience}.")
        if self.eval_interval < 1 or self.log_interval < 1:
            raise ConfigError("train.eval_interval and train.log_interval must be >= 1.")
        _check_choices(self, "train", (("reference", ReferenceMode), ("device", DeviceName), ("dtype", DTypeName),
                                       ("compile", CompileMode), ("cpu_heap", CpuHeap)))

    @property
    def microbatch(self) -> int:
        """Windows per forward/backward pass."""
        return self.microbatch_windows or self.batch_windows


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything a training run needs; stored in config.json and in every checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.universe_sample is not None and self.policy.architecture != "cross":
            raise ConfigError(f"train.universe_sample ({self.train.universe_sample}) needs policy.architecture "
                              f"'cross': the {self.policy.architecture} policy is sized by the whole universe. Drop "
                              "--universe-sample or pass --architecture cross.")
        if self.train.reference == "outputs" and self.policy.context != "history":
            raise ConfigError("train.reference 'outputs' averages the policy's per-bar projections, which only the "
                              "'history' context has; pass --reference weights (or auto) with --context window.")

    @property
    def reference_mode(self) -> Literal["outputs", "weights"]:
        """What the EMA reference averages, ``train.reference`` with "auto" resolved by the context."""
        if self.train.reference == "auto":
            return "outputs" if self.policy.context == "history" else "weights"
        return self.train.reference

    @property
    def embargo_bars(self) -> int:
        return self.train.lookback if self.data.embargo_bars is None else self.data.embargo_bars


T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-able dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}.")
        return config_from_dict(hint, value, where)
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(hint))}.")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: null is not allowed.")
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}.")
        (elem,) = get_args(hint)[:1]
        return tuple(_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}.")
        return value
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build a config dataclass from a dict, refusing unknown keys and values of the wrong type or choice."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}.")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)
