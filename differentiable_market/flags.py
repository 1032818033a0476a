"""The training flags, shared by the CLIs that take them (train, study): the parser, and how flags map onto the
config tree (``FLAG_FIELDS``: flag -> (section, field)).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .argparsing import Parser, expert
from .config import DataConfig, EnvConfig, ExperimentConfig, PolicyConfig, TrainConfig
from .training_curves import INSTALL_HINT

FLAG_FIELDS: dict[str, tuple[str, str]] = {
    "data_root": ("data", "root"),
    "data_glob": ("data", "glob"),
    "include": ("data", "include"),
    "exclude": ("data", "exclude"),
    "max_assets": ("data", "max_assets"),
    "max_fill_bars": ("data", "max_fill_bars"),
    "calendar": ("data", "calendar"),
    "min_listed": ("data", "min_listed"),
    "val_fraction": ("data", "val_fraction"),
    "test_fraction": ("data", "test_fraction"),
    "embargo_bars": ("data", "embargo_bars"),
    "cost_bps": ("env", "cost_bps"),
    "include_cash": ("env", "include_cash"),
    "execution": ("env", "execution"),
    "risk_aversion": ("env", "risk_aversion"),
    "drawdown_lambda": ("env", "drawdown_lambda"),
    "train_cost_bps": ("env", "train_cost_bps"),
    "rebalance_every": ("env", "rebalance_every"),
    "action": ("policy", "action"),
    "context": ("policy", "context"),
    "cash_target": ("policy", "cash_target"),
    "architecture": ("policy", "architecture"),
    "encoder": ("policy", "encoder"),
    "hidden_size": ("policy", "hidden_size"),
    "num_layers": ("policy", "num_layers"),
    "asset_hidden": ("policy", "asset_hidden"),
    "asset_head_hidden": ("policy", "asset_head_hidden"),
    "asset_head": ("policy", "asset_head"),
    "mixing": ("policy", "mixing"),
    "attention_heads": ("policy", "attention_heads"),
    "gradient_checkpointing": ("policy", "gradient_checkpointing"),
    "lookback": ("train", "lookback"),
    "batch_windows": ("train", "batch_windows"),
    "rollout_groups": ("train", "rollout_groups"),
    "epochs": ("train", "epochs"),
    "microbatch_windows": ("train", "microbatch_windows"),
    "universe_sample": ("train", "universe_sample"),
    "lr": ("train", "lr"),
    "muon_lr": ("train", "muon_lr"),
    "weight_decay": ("train", "weight_decay"),
    "use_muon": ("train", "use_muon"),
    "pg_weight": ("train", "pg_weight"),
    "pathwise_weight": ("train", "pathwise_weight"),
    "kl_weight": ("train", "kl_weight"),
    "entropy_weight": ("train", "entropy_weight"),
    "ema_decay": ("train", "ema_decay"),
    "reference": ("train", "reference"),
    "clip_eps": ("train", "clip_eps"),
    "updates_per_batch": ("train", "updates_per_batch"),
    "device": ("train", "device"),
    "dtype": ("train", "dtype"),
    "compile": ("train", "compile"),
    "cpu_heap": ("train", "cpu_heap"),
    "seed": ("train", "seed"),
    "eval_interval": ("train", "eval_interval"),
    "select_min_t": ("train", "select_min_t"),
    "patience": ("train", "patience"),
    "log_interval": ("train", "log_interval"),
    "save_dir": ("train", "save_dir"),
    "tensorboard": ("train", "tensorboard"),
}
# Flags that may change when resuming: they do not alter what the run computes, or extend it.
RESUME_OVERRIDABLE = {"epochs", "data_root", "data_glob", "device", "tensorboard", "cpu_heap"}


class _Off:
    """The value of a number flag given as 'off': its field becomes None."""


OFF = _Off()


def _int_or_off(text: str) -> int | _Off:
    if text.strip().lower() == "off":
        return OFF
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'off', got {text!r}") from None


def _float_or_off(text: str) -> float | _Off:
    if text.strip().lower() == "off":
        return OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


TRAIN_EXAMPLES = (
    "differentiable-market data demo reversal demo-market",
    "differentiable-market train --data-root demo-market --epochs 300",
    "differentiable-market train --config runs/20260101-120000/config.json --seed 1",
    "differentiable-market train --resume runs/20260101-120000 --epochs 900",
)


def add_training_flags(ap: Parser, study: bool = False) -> None:
    """The data, market, policy, training and hardware flags (train and study; a study has no --test-fraction). Flags
    most users touch are shown by ``--help``; the rest only by ``--help-all``."""
    d, e, p, t = DataConfig(), EnvConfig(), PolicyConfig(), TrainConfig()
    g = ap.add_argument_group("data")
    g.add_argument("--data-root", metavar="DIR", help=f"folder of per-symbol OHLC files (CSV or Parquet, one file per "
                   f"symbol); if '{d.root}' does not exist the bundled 4-stock daily sample is used (default: {d.root})")
    g.add_argument("--data-glob", metavar="PATTERN", help="file pattern inside --data-root; .csv, .csv.gz and .parquet "
                   f"files are read (default: {d.glob})")
    g.add_argument("--include", type=_csv, metavar="SYMBOLS", help="comma-separated symbols to keep (default: all)")
    g.add_argument("--exclude", type=_csv, metavar="SYMBOLS", help="comma-separated symbols to leave out")
    expert(g.add_argument("--max-assets", type=int, metavar="N", help="keep at most N symbols, in sorted order "
                          "(default: all)"))
    expert(g.add_argument("--max-fill-bars", type=int, metavar="N", help="longest gap in bars that is forward-filled; "
                          "a longer gap in the training split drops the asset, a longer one after it is forward-filled "
                          "and listed (the universe is decided on training bars only) (default: "
                          f"{d.max_fill_bars}); with --calendar union, a gap this long makes the asset untradeable "
                          "until its prints resume"))
    g.add_argument("--calendar", choices=["intersection", "union"],
                   help="'intersection': bars from the latest first bar to the earliest last bar, every asset listed "
                   "throughout; 'union': every asset over its own life (listings, delistings, halts), traded only "
                   f"where a causal mask says it is tradeable (default: {d.calendar})")
    expert(g.add_argument("--min-listed", type=int, metavar="N", help="with --calendar union: start the calendar at "
                          "the first bar where N assets are tradeable (default: the earliest first bar)"))
    g.add_argument("--val-fraction", type=float, metavar="F", help="fraction of bars for validation, which picks "
                   f"best.pt (default: {d.val_fraction})")
    if not study:
        g.add_argument("--test-fraction", type=float, metavar="F", help="fraction of bars for test, left for the "
                       f"backtest (default: {d.test_fraction})")
    expert(g.add_argument("--embargo-bars", type=int, metavar="N", help="bars left unused between splits (default: "
                          "the lookback)"))
    g = ap.add_argument_group("market and objective")
    g.add_argument("--cost-bps", type=float, metavar="BPS", help="one-way fee on traded wealth, basis points "
                   f"(default: {e.cost_bps:g})")
    g.add_argument("--include-cash", action=argparse.BooleanOptionalAction, help="add a cash asset (price 1, no fee) "
                   "the policy may hold (default: no cash asset)")
    g.add_argument("--execution", choices=["open", "close"], help="'open': decide after bar t closes, fill at the "
                   "open of t+1 (for a file without an open column, at the close of t+1, one bar after the "
                   "decision; printed); 'close': fill at the close of t (24/7 markets, the convention of close-only "
                   f"data sets) (default: {e.execution})")
    g.add_argument("--rebalance-every", type=int, metavar="N", help="trade only every N bars, counted from a path's "
                   "first decision; holdings drift in between (training, validation, backtests, studies and predict) "
                   f"(default: {e.rebalance_every})")
    expert(g.add_argument("--risk-aversion", type=float, metavar="W", help="weight of the variance of per-bar log "
                          f"growth (times bars) in the objective (default: {e.risk_aversion:g})"))
    expert(g.add_argument("--drawdown-lambda", type=float, metavar="W", help="weight of the smooth max drawdown of log "
                          f"wealth in the objective (default: {e.drawdown_lambda:g})"))
    expert(g.add_argument("--train-cost-bps", type=float, metavar="BPS", help="one-way fee charged by the training "
                          "objective only (rollout rewards and the pathwise term), basis points; validation, backtests "
                          "and studies charge --cost-bps (default: --cost-bps)"))
    g = ap.add_argument_group("policy")
    g.add_argument("--architecture", choices=["flat", "cross"], help="'cross': one encoder shared by every asset, "
                   "assets mixed at each bar, one head per asset, so a checkpoint runs on any symbol set with the same "
                   "features; 'flat': one encoder over all assets' features at once, tied to the symbols it was "
                   f"trained on (default: {p.architecture})")
    g.add_argument("--action", choices=["target", "partial", "band"], help="how a target becomes a trade: 'band' "
                   "moves the holdings only as far as a learned no-trade band around it; 'partial' moves a learned "
                   "fraction of the way; 'target' trades to it in full every bar (default: "
                   f"{p.action})")
    expert(g.add_argument("--encoder", choices=["mingru", "gru"], help="causal sequence encoder: 'mingru', a minimal "
                          "GRU whose gates read the input only, computed with a parallel scan; 'gru', torch.nn.GRU "
                          f"(default: {p.encoder})"))
    expert(g.add_argument("--hidden-size", type=int, metavar="N", help="flat: encoder hidden units (default: "
                          f"{p.hidden_size})"))
    expert(g.add_argument("--num-layers", type=int, metavar="N", help=f"encoder layers (default: {p.num_layers})"))
    expert(g.add_argument("--asset-hidden", type=int, metavar="N", help="cross: hidden units of the shared per-asset "
                          f"encoder and the mixing layer (default: {p.asset_hidden})"))
    expert(g.add_argument("--asset-head-hidden", type=int, metavar="N", help="cross: hidden units of the per-asset "
                          f"head (default: {p.asset_head_hidden})"))
    expert(g.add_argument("--asset-head", choices=["mlp", "affine"], help="cross: how the per-asset head reads that "
                          "asset's held weight h: 'mlp', a hidden layer of --asset-head-hidden units over the state "
                          "and h (evaluated for every rollout); 'affine', softplus(a + b h) with a and b read off the "
                          f"state once per bar and asset (default: {p.asset_head})"))
    expert(g.add_argument("--mixing", choices=["pool", "mean", "attention"], help="cross: how the assets interact at "
                          "each bar: 'pool', a hidden layer over each asset's state and the mean state (linear in the "
                          "asset count); 'mean', a linear map of the mean state added to each asset's, so the head's "
                          "hidden layer reads both (linear, no per-asset mixing layer); 'attention', self-attention "
                          f"over assets (quadratic) (default: {p.mixing})"))
    expert(g.add_argument("--attention-heads", type=int, metavar="N", help="cross with --mixing attention: heads, "
                          f"dividing --asset-hidden (default: {p.attention_heads})"))
    expert(g.add_argument("--context", choices=["window", "history"], help="what the encoder has read when it decides "
                          "at bar t: 'window', the current window's bars only (every window starts cold); 'history', "
                          "every bar of the data up to t (one causal pass serves all windows, and training, "
                          "validation, backtests and predict see the same state at bar t) (default: "
                          f"{p.context})"))
    expert(g.add_argument("--cash-target", choices=["share", "excess"], help="with --include-cash, how the policy's "
                          "Dirichlet cash weight c becomes its target: 'share', c as it is (an untrained policy holds "
                          "1/(assets+1) in cash); 'excess', its excess over the uniform share, the assets sharing the "
                          "rest (an untrained policy holds no cash: exactly equal weight over the assets) (default: "
                          f"{p.cash_target})"))
    expert(g.add_argument("--gradient-checkpointing", action="store_const", const=True,
                          help="recompute activations in the backward pass to save memory: the encoder's (flat); "
                          "every per-token layer up to the state projection, block of bars by block (cross)"))
    g = ap.add_argument_group("training")
    g.add_argument("--epochs", type=int, metavar="STEPS", help="training steps, not passes over the data: each step "
                   "samples --batch-windows windows, rolls the policy out on them and makes --updates-per-batch "
                   f"optimizer updates (default: {t.epochs})")
    g.add_argument("--lookback", type=int, metavar="BARS", help=f"bars per training window (default: {t.lookback})")
    g.add_argument("--batch-windows", type=int, metavar="N", help=f"windows per training step (default: "
                   f"{t.batch_windows})")
    g.add_argument("--seed", type=int, help="seed of initialisation, window sampling and rollouts (default: "
                   f"{t.seed})")
    g.add_argument("--eval-interval", type=int, metavar="STEPS", help="steps between validation evaluations and "
                   f"checkpoints (default: {t.eval_interval})")
    g.add_argument("--select-min-t", type=_float_or_off, metavar="T|off", help="best.pt keeps a trained checkpoint "
                   "only where its validation excess log growth over equal weight has a t-statistic of at least T; "
                   "until one does, best.pt is the untrained policy (step 0: equal weight seen through the action). "
                   f"'off': the best validation objective of any trained checkpoint (default: {t.select_min_t:g})")
    g.add_argument("--patience", type=_int_or_off, metavar="N|off", help="stop early once N evaluations in a row "
                   "bring no better validation objective than the best so far; the run records where it stopped "
                   "(default: off, train every step)")
    expert(g.add_argument("--rollout-groups", type=int, metavar="G", help="rollouts per window, the GRPO group "
                          f"(default: {t.rollout_groups})"))
    expert(g.add_argument("--microbatch-windows", type=int, metavar="N", help="windows per forward/backward; "
                          "gradients accumulate so the effective batch stays --batch-windows (default: all at once)"))
    expert(g.add_argument("--universe-sample", type=int, metavar="N", help="cross only: each training window trades "
                          "a random subset of N assets, so a step costs the same whatever the universe size "
                          "(validation and backtests use every asset) (default: all)"))
    expert(g.add_argument("--lr", type=float, help=f"AdamW learning rate (default: {t.lr:g})"))
    expert(g.add_argument("--muon-lr", type=float, help=f"Muon learning rate, RMS-matched to AdamW (default: "
                          f"{t.muon_lr:g})"))
    expert(g.add_argument("--weight-decay", type=float, help="decoupled weight decay of AdamW (matrices) and Muon "
                          f"(default: {t.weight_decay:g})"))
    expert(g.add_argument("--no-muon", dest="use_muon", action="store_const", const=False,
                          help="use AdamW for every parameter instead of Muon for hidden matrices"))
    expert(g.add_argument("--pg-weight", type=float, help="weight of the GRPO policy-gradient loss (default: "
                          f"{t.pg_weight:g})"))
    expert(g.add_argument("--pathwise-weight", type=float, help="weight of the pathwise objective of the mean action "
                          f"(default: {t.pathwise_weight:g})"))
    expert(g.add_argument("--kl-weight", type=float, help=f"weight of KL to the EMA reference (default: "
                          f"{t.kl_weight:g})"))
    expert(g.add_argument("--entropy-weight", type=float, help=f"weight of the entropy bonus (default: "
                          f"{t.entropy_weight:g})"))
    expert(g.add_argument("--ema-decay", type=float, help="EMA decay of the reference policy per step (default: "
                          f"{t.ema_decay:g})"))
    expert(g.add_argument("--reference", choices=["auto", "outputs", "weights"],
                          help="what the EMA reference averages: outputs, the policy's state projection per bar of the "
                          "history (no pass of its own; the history context only); weights, the policy's weights (a "
                          "pass of its own each step); auto: outputs in the history context, else weights (default: "
                          f"{t.reference})"))
    expert(g.add_argument("--clip-eps", type=float, help=f"GRPO ratio clip (default: {t.clip_eps:g})"))
    expert(g.add_argument("--updates-per-batch", type=int, metavar="N", help="optimizer updates on each batch of "
                          f"rollouts; the ratio clip binds from the second (default: {t.updates_per_batch})"))
    expert(g.add_argument("--log-interval", type=int, metavar="STEPS", help="steps between metrics rows (default: "
                          f"{t.log_interval})"))
    g = ap.add_argument_group("hardware")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device (default: auto, CUDA if present)")
    expert(g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="autocast dtype of the encoder; "
                          "auto is bfloat16 where the hardware computes it natively (a CPU with avx512_bf16 or AMX "
                          "that oneDNN may use, a CUDA card of Ampere or later) and float32 elsewhere; the choice and "
                          "its reason are printed and logged (default: auto)"))
    expert(g.add_argument("--compile", nargs="?", const="on", choices=["auto", "on", "off"],
                          help="torch.compile the loss: on, off, or auto (off on the CPU) (default: auto; "
                          "--compile alone: on)"))
    g.add_argument("--no-compile", dest="compile", action="store_const", const="off", help=argparse.SUPPRESS)
    expert(g.add_argument("--cpu-heap", choices=["auto", "keep", "heap", "system"], help="on the CPU, keep: the C "
                          "allocator (glibc) reuses freed blocks up to 32 MiB from step to step instead of handing "
                          "them back to the kernel and faulting them in again; heap: every block, larger ones too "
                          "(faster, a higher peak); auto: keep under --gradient-checkpointing or "
                          "--microbatch-windows, heap otherwise; system: leave it as the process has it "
                          "(default: auto)"))


def add_output_flags(ap: Parser, progress: bool = True) -> None:
    """--quiet, --verbose (and --no-progress) of every command."""
    g = ap.add_argument_group("console")
    g.add_argument("-q", "--quiet", action="store_true", help="print only warnings and the result")
    g.add_argument("-v", "--verbose", action="store_true", help="print more detail")
    if progress:
        g.add_argument("--no-progress", action="store_true", help="no progress bar (bars are drawn only on a "
                       "terminal anyway)")


def add_config_flags(ap: Parser, what: str, sources: str = "") -> None:
    """--config FILE and --print-config of a command; ``what`` names what a config file sets there, ``sources``
    the files of earlier runs it reads besides TOML."""
    g = ap.add_argument_group("config file")
    g.add_argument("--config", metavar="FILE", help=f"read {what} from FILE: a TOML file (as --print-config writes)"
                   + (f", {sources}, or the folder holding it" if sources else "")
                   + "; flags given on the command line override it")
    g.add_argument("--print-config", nargs="?", const="toml", choices=["toml", "json"], metavar="toml|json",
                   help="print the resolved config (defaults, --config and flags) as TOML or JSON and exit; save it "
                   "and pass it back with --config")


def build_parser(run_folder_flags: bool = True, prog: str = "differentiable-market train") -> Parser:
    """The train command's parser; ``run_folder_flags=False`` leaves out the run-folder, config and console groups
    (the flags a study shares with training)."""
    ap = Parser(
        prog=prog,
        usage="%(prog)s [--data-root DIR] [--epochs STEPS] [options]",
        description="Train a portfolio-allocation policy on a folder of OHLC files, through a differentiable market "
                    "simulator with costs. The run folder gets checkpoints/best.pt: the checkpoint that beat equal "
                    "weight on the validation split, or the untrained policy (equal weight) when none did.",
        examples=TRAIN_EXAMPLES,
        argument_default=None,
    )
    add_training_flags(ap)
    if not run_folder_flags:
        return ap
    t = TrainConfig()
    g = ap.add_argument_group("run folder")
    out = g.add_argument("--out-dir", dest="save_dir", metavar="DIR", help="parent folder of run folders; each run "
                         f"gets a new timestamped folder inside (default: {t.save_dir})")
    ap.add_alias(out, "--save-dir")
    g.add_argument("--resume", metavar="RUN", help="continue a run from its checkpoints/latest.pt (a run folder or a "
                   "latest.pt); only --epochs, --data-root, --data-glob, --device, --tensorboard and --cpu-heap may "
                   "change")
    g.add_argument("--init", "--init-checkpoint", dest="init_checkpoint", metavar="pretrained|CKPT",
                   help="start from a checkpoint's policy weights (new optimiser, new run folder): 'pretrained', the "
                   "policy pretrained on a corpus of markets that ships with the package (its policy settings are "
                   "used; the normaliser is fitted on this run's training split), or a run folder or .pt file (its "
                   "feature normaliser too; a cross-sectional one may start a run on other symbols). With --epochs 0 "
                   "the run only scores it: best.pt keeps it where validation evidence says it beats equal weight and "
                   "the untrained policy")
    g.add_argument("--tensorboard", action="store_const", const=True, help="also write the training curves and the "
                   "run's hyperparameters as TensorBoard event files in <run folder>/tensorboard "
                   f"(needs: {INSTALL_HINT})")
    add_config_flags(ap, "the training config", "a run folder's config.json or a study's study.json")
    add_output_flags(ap)
    return ap


def config_from_args(args: argparse.Namespace, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Apply every flag given on the command line to ``base`` (defaults when None)."""
    base = base or ExperimentConfig()
    sections: dict[str, dict[str, Any]] = {name: {} for name in ("data", "features", "env", "policy", "train")}
    for flag, (section, name) in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            sections[section][name] = None if value is OFF else value
    return ExperimentConfig(
        **{name: dataclasses.replace(getattr(base, name), **changes) for name, changes in sections.items()}
    )


def given_flags(args: argparse.Namespace) -> set[str]:
    return {flag for flag in FLAG_FIELDS if getattr(args, flag, None) is not None}


_FIELD_FLAGS = {f"{section}.{name}": "--" + flag.replace("_", "-") for flag, (section, name) in FLAG_FIELDS.items()}
_FIELD_FLAGS.update({"train.save_dir": "--out-dir", "train.use_muon": "--no-muon"})


def with_flag_names(message: str) -> str:
    """``message`` with the flag of each config field it names added, e.g. "train.lookback (--lookback)"."""
    import re

    def name(m: re.Match) -> str:
        flag = _FIELD_FLAGS.get(m.group(0))
        return m.group(0) if flag is None or flag in message else f"{m.group(0)} ({flag})"

    return re.sub(r"\b(?:data|env|policy|train)\.[a-z_]+\b", name, message)
