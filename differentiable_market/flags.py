"""The training flags, shared by the CLIs that take them (train, study): the parser, and how flags map onto the
config tree (``FLAG_FIELDS``: flag -> (section, field)).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

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
    "log_interval": ("train", "log_interval"),
    "save_dir": ("train", "save_dir"),
    "tensorboard": ("train", "tensorboard"),
}
# Flags that may change when resuming: they do not alter what the run computes, or extend it.
RESUME_OVERRIDABLE = {"epochs", "data_root", "data_glob", "device", "tensorboard", "cpu_heap"}


class _Off:
    """The value of a number flag given as 'off': its field becomes None."""


OFF = _Off()


def _float_or_off(text: str) -> float | _Off:
    if text.strip().lower() == "off":
        return OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def build_parser(run_folder_flags: bool = True) -> argparse.ArgumentParser:
    """The training flags; ``run_folder_flags=False`` leaves out the run-folder group (the study has its own)."""
    d, e, p, t = DataConfig(), EnvConfig(), PolicyConfig(), TrainConfig()
    ap = argparse.ArgumentParser(
        prog="python -m differentiable_market.train",
        description="Train a Dirichlet GRU portfolio policy with GRPO through the differentiable market env.",
        argument_default=None,
    )
    g = ap.add_argument_group("data")
    g.add_argument("--data-root", help=f"folder of per-symbol OHLC files; if '{d.root}' does not exist the bundled "
                   f"4-stock daily sample is used (default: {d.root})")
    g.add_argument("--data-glob", help=f"file pattern inside --data-root; .csv, .csv.gz, .parquet (default: {d.glob})")
    g.add_argument("--include", type=_csv, help="comma-separated symbols to keep (default: all)")
    g.add_argument("--exclude", type=_csv, help="comma-separated symbols to leave out")
    g.add_argument("--max-assets", type=int, help="keep at most N symbols, in sorted order (default: all)")
    g.add_argument("--max-fill-bars", type=int, help=f"longest gap in bars that is forward-filled; a longer gap in "
                   "the training split drops the asset, a longer one after it is forward-filled and listed (the "
                   f"universe is decided on training bars only) (default: {d.max_fill_bars}); with --calendar "
                   "union, a gap this long makes the asset untradeable until its prints resume")
    g.add_argument("--calendar", choices=["intersection", "union"],
                   help="'intersection': bars from the latest first bar to the earliest last bar, every asset listed "
                   "throughout; 'union': every asset over its own life (listings, delistings, halts), traded only "
                   "where a causal mask says it is tradeable (training, backtests, the study and predict) "
                   f"(default: {d.calendar})")
    g.add_argument("--min-listed", type=int, help="with --calendar union: start the calendar at the first bar where "
                   "N assets are tradeable (default: the earliest first bar)")
    g.add_argument("--val-fraction", type=float, help=f"fraction of bars for validation (default: {d.val_fraction})")
    g.add_argument("--test-fraction", type=float, help=f"fraction of bars for test (default: {d.test_fraction})")
    g.add_argument("--embargo-bars", type=int, help="bars left unused between splits (default: the lookback)")
    g = ap.add_argument_group("market and objective")
    g.add_argument("--cost-bps", type=float, help=f"one-way fee on traded wealth, basis points (default: {e.cost_bps})")
    g.add_argument("--include-cash", action="store_const", const=True, help="add a cash asset (price 1, no fee)")
    g.add_argument("--execution", choices=["open", "close"], help="'open': decide after bar t closes, fill at the "
                   "open of t+1 (default; for a file without an open column, at the close of t+1, one bar after the "
                   "decision, printed); 'close': fill at the close of t (24/7 markets, the convention of close-only "
                   "data sets)")
    g.add_argument("--risk-aversion", type=float, help=f"weight of the variance of per-bar log growth (times bars) "
                   f"in the objective (default: {e.risk_aversion})")
    g.add_argument("--drawdown-lambda", type=float, help=f"weight of the smooth max drawdown of log wealth "
                   f"(default: {e.drawdown_lambda})")
    g.add_argument("--train-cost-bps", type=float, help="one-way fee charged by the training objective only (rollout "
                   "rewards and the pathwise term), basis points; validation, backtests and studies charge --cost-bps "
                   "(default: --cost-bps)")
    g.add_argument("--rebalance-every", type=int, help="trade only every N bars of a path, counted from its first "
                   "decision; holdings drift in between. Training, validation, backtests, studies and predict use it "
                   f"(default: {e.rebalance_every})")
    g = ap.add_argument_group("policy")
    g.add_argument("--architecture", choices=["flat", "cross"], help="'flat': one encoder over all assets' features "
                   "at once, tied to the symbols it was trained on; 'cross': one encoder shared by every asset, the "
                   "assets mixed at each bar, one head per asset: runs on any symbol set with the same features "
                   f"(default: {p.architecture})")
    g.add_argument("--encoder", choices=["mingru", "gru"], help="causal sequence encoder: 'mingru', a minimal GRU "
                   "whose gates read the input only, computed with a parallel scan; 'gru', torch.nn.GRU (default: "
                   f"{p.encoder})")
    g.add_argument("--hidden-size", type=int, help=f"flat: encoder hidden units (default: {p.hidden_size})")
    g.add_argument("--num-layers", type=int, help=f"encoder layers (default: {p.num_layers})")
    g.add_argument("--asset-hidden", type=int, help=f"cross: hidden units of the shared per-asset encoder and the "
                   f"mixing layer (default: {p.asset_hidden})")
    g.add_argument("--asset-head-hidden", type=int, help=f"cross: hidden units of the per-asset head (default: "
                   f"{p.asset_head_hidden})")
    g.add_argument("--asset-head", choices=["mlp", "affine"], help="cross: how the per-asset head reads that "
                   "asset's held weight h: 'mlp', a hidden layer of --asset-head-hidden units over the state and h "
                   "(evaluated for every rollout); 'affine', softplus(a + b h) with a and b read off the state once "
                   f"per bar and asset (a few operations per rollout) (default: {p.asset_head})")
    g.add_argument("--mixing", choices=["pool", "mean", "attention"], help="cross: how the assets interact at each "
                   "bar: 'pool', a hidden layer over each asset's state and the mean state (linear in the asset "
                   "count); 'mean', a linear map of the mean state added to each asset's, so the head's hidden layer "
                   "reads both (linear, and no per-asset mixing layer); 'attention', self-attention over assets "
                   f"(quadratic) (default: {p.mixing})")
    g.add_argument("--attention-heads", type=int, help=f"cross with --mixing attention: heads, dividing "
                   f"--asset-hidden (default: {p.attention_heads})")
    g.add_argument("--action", choices=["target", "partial", "band"], help="how a target becomes a trade: "
                   "'target' trades to it in full every bar; 'partial' moves a learned fraction of the way from the "
                   "holdings to it; 'band' moves the holdings only as far as a learned no-trade band around it "
                   f"(default: {p.action})")
    g.add_argument("--context", choices=["window", "history"], help="what the encoder has read when it decides at "
                   "bar t: 'window', the current window's bars only (every window starts cold, so a bar is encoded "
                   "once per window that contains it); 'history', every bar of the data up to t (one causal pass "
                   "per step serves all windows: each bar is encoded once, and training, validation, backtests and "
                   f"predict see the same state at bar t) (default: {p.context})")
    g.add_argument("--cash-target", choices=["share", "excess"], help="with --include-cash, how the policy's "
                   "Dirichlet cash weight c becomes its target: 'share', c as it is (an untrained policy holds "
                   "1/(assets+1) in cash); 'excess', its excess over the uniform share, the assets sharing the rest "
                   "(an untrained policy holds no cash, exactly equal weight over the assets, and a band action "
                   f"never keeps more cash than the target) (default: {p.cash_target})")
    g.add_argument("--gradient-checkpointing", action="store_const", const=True,
                   help="recompute activations in the backward pass to save memory: the encoder's (flat); every "
                   "per-token layer up to the state projection, block of bars by block (cross)")
    g = ap.add_argument_group("training")
    g.add_argument("--lookback", type=int, help=f"bars per training window (default: {t.lookback})")
    g.add_argument("--batch-windows", type=int, help=f"windows per optimizer step (default: {t.batch_windows})")
    g.add_argument("--rollout-groups", type=int, help=f"rollouts per window, the GRPO group (default: "
                   f"{t.rollout_groups})")
    g.add_argument("--epochs", type=int, help=f"optimizer steps (default: {t.epochs})")
    g.add_argument("--microbatch-windows", type=int, help="windows per forward/backward; gradients accumulate so the "
                   "effective batch stays --batch-windows (default: all at once)")
    g.add_argument("--universe-sample", type=int, help="cross only: each training window trades a random subset of "
                   "this many assets, so a step costs the same whatever the universe size (validation and "
                   "backtests use every asset) (default: all)")
    g.add_argument("--lr", type=float, help=f"AdamW learning rate (default: {t.lr})")
    g.add_argument("--muon-lr", type=float, help=f"Muon learning rate, RMS-matched to AdamW (default: {t.muon_lr})")
    g.add_argument("--weight-decay", type=float, help=f"decoupled weight decay of AdamW (matrices) and Muon; the "
                   f"default was measured to stop validation decay on the sample (default: {t.weight_decay})")
    g.add_argument("--no-muon", dest="use_muon", action="store_const", const=False,
                   help="use AdamW for every parameter instead of Muon for hidden matrices")
    g.add_argument("--pg-weight", type=float, help=f"weight of the GRPO policy-gradient loss (default: {t.pg_weight})")
    g.add_argument("--pathwise-weight", type=float, help=f"weight of the pathwise objective of the mean action "
                   f"(default: {t.pathwise_weight})")
    g.add_argument("--kl-weight", type=float, help=f"weight of KL to the EMA reference (default: {t.kl_weight})")
    g.add_argument("--entropy-weight", type=float, help=f"weight of the entropy bonus (default: {t.entropy_weight})")
    g.add_argument("--ema-decay", type=float, help=f"EMA decay of the reference policy per step "
                   f"(default: {t.ema_decay})")
    g.add_argument("--reference", choices=["auto", "outputs", "weights"],
                   help="what the EMA reference averages: outputs, the policy's state projection per bar of the "
                   "history (no pass of its own; the history context only); weights, the policy's weights (a pass "
                   "of its own each step); auto: outputs in the history context, else weights "
                   f"(default: {t.reference})")
    g.add_argument("--clip-eps", type=float, help=f"GRPO ratio clip (default: {t.clip_eps})")
    g.add_argument("--updates-per-batch", type=int, help=f"optimizer steps on each batch of rollouts; the ratio clip "
                   f"binds from the second (default: {t.updates_per_batch})")
    g.add_argument("--seed", type=int, help=f"seed of initialisation, window sampling and rollouts (default: {t.seed})")
    g.add_argument("--eval-interval", type=int, help=f"steps between validation and checkpoints "
                   f"(default: {t.eval_interval})")
    g.add_argument("--select-min-t", type=_float_or_off, metavar="T|off", help="best.pt keeps a trained "
                   "checkpoint only where its validation excess log growth over equal weight has a t-statistic of "
                   "at least T; until one does, best.pt is the untrained policy (scored at step 0: equal weight seen "
                   "through the action). 'off': the best validation objective of any trained checkpoint "
                   f"(default: {t.select_min_t})")
    g.add_argument("--log-interval", type=int, help=f"steps between metrics rows (default: {t.log_interval})")
    g = ap.add_argument_group("hardware")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device (default: auto, CUDA if present)")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="autocast dtype of the encoder; auto is "
                   "bfloat16 where the hardware computes it natively (a CPU with avx512_bf16 or AMX that oneDNN may "
                   "use, a CUDA card of Ampere or later) and float32 elsewhere, where bf16 would be emulated and slow; "
                   "the choice and its reason are printed and logged (default: auto)")
    g.add_argument("--no-compile", dest="compile", action="store_const", const="off",
                   help="never torch.compile (the default, auto, does not compile either: on CPU it measured no "
                   "faster, and on a GPU compiling took minutes)")
    g.add_argument("--compile", dest="compile", action="store_const", const="on", help="torch.compile the loss")
    g.add_argument("--cpu-heap", choices=["auto", "keep", "heap", "system"], help="on the CPU, keep: the C "
                   "allocator (glibc) reuses freed blocks up to 32 MiB from step to step instead of handing them back "
                   "to the kernel and faulting them in again; heap: every block, larger ones too (faster, a higher "
                   "peak); auto: keep under --gradient-checkpointing or --microbatch-windows, heap otherwise; "
                   "system: leave it as the process has it (default: auto)")
    if not run_folder_flags:
        return ap
    g = ap.add_argument_group("run folder")
    g.add_argument("--save-dir", help=f"parent folder of run folders (default: {t.save_dir})")
    g.add_argument("--resume", metavar="RUN_OR_CKPT", help="continue a run from its checkpoints/latest.pt (a run "
                   "folder or a .pt path); only --epochs, --data-root, --data-glob, --device, --tensorboard and "
                   "--cpu-heap may change")
    g.add_argument("--init", "--init-checkpoint", dest="init_checkpoint", metavar="pretrained|CKPT",
                   help="start from a checkpoint's policy weights (new optimiser, new run folder): 'pretrained', the "
                   "policy pretrained on a corpus of markets that ships with the package (its policy settings are "
                   "used; the normaliser is fitted on this run's training split), or a run folder or .pt file (its "
                   "feature normaliser too; a cross-sectional one may start a run on other symbols). With --epochs 0 "
                   "the run only scores it: best.pt keeps it where validation evidence says it beats equal weight and "
                   "the untrained policy")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still print per eval)")
    g.add_argument("--tensorboard", action="store_const", const=True, help="also write the training curves of "
                   "training.png and the run's hyperparameters as TensorBoard event files in <run folder>/tensorboard "
                   f"(needs: {INSTALL_HINT})")
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
