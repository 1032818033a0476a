"""Train CLI: ``python -m differentiable_market.train``.

Builds the config tree from flags, loads and validates the data (the bundled sample when no data root exists),
trains with GRPO, and leaves a run folder: config.json, metrics.jsonl, training.png (the curves, redrawn at each
evaluation), checkpoints/latest.pt and best.pt; with --tensorboard also TensorBoard event files in tensorboard/.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_json
from .checkpoint import (Checkpoint, check_market_matches, load_checkpoint, save_checkpoint, transferable,
                         universe_difference)
from .config import (
    DataConfig,
    EnvConfig,
    ExperimentConfig,
    PolicyConfig,
    TrainConfig,
    config_to_dict,
)
from .data import (MarketData, UniverseCutoff, execution_note, load_market, refuse_union_calendar, resolve_data_root,
                   symbols_without_open)
from .env import execution_horizon
from .errors import CheckpointError, ConfigError, DifferentiableMarketError, TrainingError
from .hardware import machine_info
from .runlog import MetricsLog, check_writable, create_run_dir, environment_record
from .splits import train_end_cutoff
from .training_curves import INSTALL_HINT, TensorBoardLog, check_tensorboard, write_training_png
from .trainer import TRAIN_STATS, Trainer, env_steps_per_step, peak_memory_gb, prepare_market, resolve_device

# flag -> (config section, field); every flag defaults to None so that "given on the command line" is visible.
FLAG_FIELDS: dict[str, tuple[str, str]] = {
    "data_root": ("data", "root"),
    "data_glob": ("data", "glob"),
    "include": ("data", "include"),
    "exclude": ("data", "exclude"),
    "max_assets": ("data", "max_assets"),
    "max_fill_bars": ("data", "max_fill_bars"),
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
    "architecture": ("policy", "architecture"),
    "encoder": ("policy", "encoder"),
    "hidden_size": ("policy", "hidden_size"),
    "num_layers": ("policy", "num_layers"),
    "asset_hidden": ("policy", "asset_hidden"),
    "asset_head_hidden": ("policy", "asset_head_hidden"),
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
    "clip_eps": ("train", "clip_eps"),
    "updates_per_batch": ("train", "updates_per_batch"),
    "device": ("train", "device"),
    "dtype": ("train", "dtype"),
    "compile": ("train", "compile"),
    "seed": ("train", "seed"),
    "eval_interval": ("train", "eval_interval"),
    "log_interval": ("train", "log_interval"),
    "save_dir": ("train", "save_dir"),
    "tensorboard": ("train", "tensorboard"),
}
# Flags that may change when resuming: they do not alter what the run computes, or extend it.
RESUME_OVERRIDABLE = {"epochs", "data_root", "data_glob", "device", "tensorboard"}


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
                   f"universe is decided on training bars only) (default: {d.max_fill_bars})")
    g.add_argument("--val-fraction", type=float, help=f"fraction of bars for validation (default: {d.val_fraction})")
    g.add_argument("--test-fraction", type=float, help=f"fraction of bars for test (default: {d.test_fraction})")
    g.add_argument("--embargo-bars", type=int, help="bars left unused between splits (default: the lookback)")
    g = ap.add_argument_group("market and objective")
    g.add_argument("--cost-bps", type=float, help=f"one-way fee on traded wealth, basis points (default: {e.cost_bps})")
    g.add_argument("--include-cash", action="store_const", const=True, help="add a cash asset (price 1, no fee)")
    g.add_argument("--execution", choices=["open", "close"], help="'open': decide after bar t closes, fill at the "
                   "open of t+1; 'close': fill at the close of t (24/7 markets, close-only data). Default: 'open', "
                   "or 'close' when a selected file has no open column (printed; with open taken as the close, "
                   "'open' would fill one bar after the decision)")
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
    g.add_argument("--mixing", choices=["pool", "attention"], help="cross: how the assets interact at each bar: "
                   "'pool', each asset also sees the mean over assets (linear in the asset count); 'attention', "
                   f"self-attention over assets (quadratic) (default: {p.mixing})")
    g.add_argument("--attention-heads", type=int, help=f"cross with --mixing attention: heads, dividing "
                   f"--asset-hidden (default: {p.attention_heads})")
    g.add_argument("--action", choices=["target", "partial", "band"], help="how a target becomes a trade: "
                   "'target' trades to it in full every bar; 'partial' moves a learned fraction of the way from the "
                   "holdings to it; 'band' moves the holdings only as far as a learned no-trade band around it "
                   f"(default: {p.action})")
    g.add_argument("--gradient-checkpointing", action="store_const", const=True,
                   help="recompute encoder activations in the backward pass to save memory")
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
    g.add_argument("--clip-eps", type=float, help=f"GRPO ratio clip (default: {t.clip_eps})")
    g.add_argument("--updates-per-batch", type=int, help=f"optimizer steps on each batch of rollouts; the ratio clip "
                   f"binds from the second (default: {t.updates_per_batch})")
    g.add_argument("--seed", type=int, help=f"seed of initialisation, window sampling and rollouts (default: {t.seed})")
    g.add_argument("--eval-interval", type=int, help=f"steps between validation and checkpoints "
                   f"(default: {t.eval_interval})")
    g.add_argument("--log-interval", type=int, help=f"steps between metrics rows (default: {t.log_interval})")
    g = ap.add_argument_group("hardware")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device (default: auto, CUDA if present)")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="autocast dtype of the encoder; auto is "
                   "bfloat16 where the hardware computes it natively (a CPU with avx512_bf16 or AMX that oneDNN may "
                   "use, a CUDA card of Ampere or later) and float32 elsewhere, where bf16 would be emulated and slow; "
                   "the choice and its reason are printed and logged (default: auto)")
    g.add_argument("--no-compile", dest="compile", action="store_const", const="off",
                   help="never torch.compile (default: compile on CUDA only; on CPU it costs more than it saves)")
    g.add_argument("--compile", dest="compile", action="store_const", const="on", help="torch.compile also on CPU")
    if not run_folder_flags:
        return ap
    g = ap.add_argument_group("run folder")
    g.add_argument("--save-dir", help=f"parent folder of run folders (default: {t.save_dir})")
    g.add_argument("--resume", metavar="RUN_OR_CKPT", help="continue a run from its checkpoints/latest.pt (a run "
                   "folder or a .pt path); only --epochs, --data-root, --data-glob, --device and --tensorboard may "
                   "change")
    g.add_argument("--init-checkpoint", metavar="CKPT", help="start from this checkpoint's policy weights and "
                   "feature normaliser (new optimiser, new run folder); a cross-sectional checkpoint may start a run "
                   "on other symbols")
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
            sections[section][name] = value
    return ExperimentConfig(
        **{name: dataclasses.replace(getattr(base, name), **changes) for name, changes in sections.items()}
    )


def given_flags(args: argparse.Namespace) -> set[str]:
    return {flag for flag in FLAG_FIELDS if getattr(args, flag, None) is not None}


def choose_execution(cfg: ExperimentConfig, given: bool) -> tuple[ExperimentConfig, str | None]:
    """The config with the execution a run uses when ``--execution`` was not ``given``, and why, if it changed.

    Default "open" fills a decision at the next bar's open. A file without an open column has its open taken as the
    close, so there "open" would fill at the next bar's close: one bar after the decision, later than a user of
    close-only data expects. When any selected file lacks open (read from the headers, before loading), the default
    is "close" instead: fill at the decision bar's close, the convention of close-only data sets. An explicit
    ``--execution`` is always kept.
    """
    if given or cfg.env.execution == "close":
        return cfg, None
    lacking = symbols_without_open(cfg.data)
    if not lacking:
        return cfg, None
    names = ", ".join(lacking[:10]) + (f" and {len(lacking) - 10} more" if len(lacking) > 10 else "")
    why = (f"execution: close (chosen because {len(lacking)} file(s) have no open column: {names}; with the open "
           "taken as the close, the default 'open' would fill one bar after the decision). Pass --execution open to "
           "fill at the next bar's open instead.")
    return dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, execution="close")), why


def resolve_resume_path(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "latest.pt"
    if not p.is_file():
        raise CheckpointError(f"Cannot resume: {p} does not exist. Pass a run folder that has checkpoints/latest.pt.")
    return p


def load_data(cfg: ExperimentConfig, universe_cutoff: UniverseCutoff | None = None) -> MarketData:
    """The run's market. Which assets are kept is decided on the bars up to the end of the run's training split
    (``universe_cutoff`` replaces that); longer gaps later are forward-filled and listed in the notes."""
    refuse_union_calendar(cfg.data, "Training (and the study)")
    root, bundled = resolve_data_root(cfg.data.root)
    if bundled:
        print(f"No folder '{cfg.data.root}' here: training on the bundled daily sample ({root}).", flush=True)
    min_bars = cfg.train.lookback + execution_horizon(cfg.env.execution) + 1
    cutoff = universe_cutoff or train_end_cutoff(cfg.data, cfg.train.lookback)
    market = load_market(dataclasses.replace(cfg.data, root=str(root)), min_bars=min_bars, universe_cutoff=cutoff)
    for note in market.notes:
        print(f"data: {note}", flush=True)
    return market


def check_init_split(init: Checkpoint, trained_through: str) -> None:
    """Refuse a starting checkpoint whose weights or normaliser saw bars after this run's training split: they
    would leak this run's validation (and maybe test) prices into training and into the choice of best.pt."""
    if init.trained_through is None:
        raise CheckpointError(f"{init.path} does not record which bars it was trained on; it cannot start a new run.")
    if init.trained_through > trained_through:
        raise CheckpointError(
            f"{init.path} was trained on bars up to {init.trained_through}, after this run's training split ends "
            f"({trained_through}); its weights and feature normaliser have seen this run's validation data. Use the "
            "same or smaller --val-fraction/--test-fraction/--embargo-bars/--lookback as that run, or start fresh."
        )


def _fingerprint_difference(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted((set(a) | set(b)) - {"source"})
    return [f"{k}: checkpoint {b.get(k)!r} vs data {a.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def run_training(
    cfg: ExperimentConfig,
    *,
    resume: Checkpoint | None = None,
    init: Checkpoint | None = None,
    progress: bool = True,
    argv: list[str] | None = None,
    run_dir: Path | None = None,
    data_root: str | None = None,
    execution_choice: str | None = None,
) -> Path:
    """Train and return the run folder. ``resume`` continues its run folder in place; ``run_dir`` names a new,
    new one (a walk-forward study names each job's) instead of a timestamped folder under the save dir.
    ``data_root`` reads the data from another folder holding the same files (a Ray worker's copy) without changing
    the config that the run records. ``execution_choice`` (from ``choose_execution``) is recorded in the header."""
    from tqdm.auto import tqdm

    device = resolve_device(cfg.train.device)
    if cfg.train.tensorboard:  # before the data is loaded or a run folder made
        check_tensorboard()
    if resume is None:  # before the data is loaded, so the user hears at once
        check_writable(run_dir.parent if run_dir is not None else Path(cfg.train.save_dir))
    market = load_data(cfg if data_root is None else dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, root=data_root)))
    fingerprint = market.fingerprint()  # hashes every price; computed once, stored with each checkpoint
    fills = execution_note(market, cfg.env.execution)  # what the execution means where an asset has no open
    if fills is not None:
        print(fills, flush=True)
    source = resume or init
    if init is not None and transferable(init) and cfg.policy.architecture == "cross":
        check_market_matches(init, None)  # a cross-sectional policy may start on other symbols
        if market.symbols != init.symbols:
            u = universe_difference(init.symbols, market.symbols)
            print(f"Starting from {init.path}, trained on {len(init.symbols)} symbols, on {market.n_assets} "
                  f"({len(u['shared'])} shared, {len(u['new'])} new).", flush=True)
    elif source is not None:
        hint = ", or use --include to select its symbols."
        if init is not None and transferable(init):
            ip = init.config.policy
            hint = (f"; or start this cross-sectional policy on these symbols with --architecture cross "
                    f"--asset-hidden {ip.asset_hidden} --asset-head-hidden {ip.asset_head_hidden} --mixing {ip.mixing} "
                    f"--num-layers {ip.num_layers} --encoder {ip.encoder} --action {ip.action}.")
        check_market_matches(source, market.symbols, hint=hint)
    if resume is not None:
        diff = _fingerprint_difference(fingerprint, resume.data_fingerprint)
        if diff:
            raise CheckpointError(
                f"The data differs from the data run {resume.path} was trained on ({'; '.join(diff)}); a resumed run "
                "must see the same prices. Point --data-root at the original data."
            )
    tensors, spec = prepare_market(cfg, market, device, source.feature_spec if source else None)
    train_end = tensors.splits.train[1]
    trained_through = str(market.timestamps[train_end - 1])[:19]
    validated_through = str(market.timestamps[tensors.splits.validation[1] - 1])[:19]  # the bars that pick best.pt
    if init is not None:
        check_init_split(init, trained_through)
    trainer = Trainer(cfg, tensors, device)
    if resume is not None:
        run_dir = Path(resume.path).parent.parent
        assert resume.training_state is not None
        trainer.load_training_state(resume.policy_state, resume.training_state, resume.step, resume.best_score)
        dropped = MetricsLog.truncate_after(run_dir / "metrics.jsonl", resume.step)
        print(f"Resuming {run_dir} at step {resume.step} (dropped {dropped} log rows written after it).", flush=True)
    else:
        if init is not None:
            try:
                trainer.policy.load_state_dict(init.policy_state)
            except RuntimeError:
                ip = init.config.policy
                raise CheckpointError(
                    f"{init.path} holds a policy of another shape ({ip.architecture} architecture, encoder "
                    f"{ip.encoder}, hidden size {ip.hidden_size}, {ip.num_layers} layer(s), head {ip.head_hidden}, "
                    f"asset hidden {ip.asset_hidden}, asset head {ip.asset_head_hidden}, mixing {ip.mixing}, action "
                    f"{ip.action}); pass the same --architecture/--encoder/--hidden-size/--num-layers/--asset-hidden/"
                    "--asset-head-hidden/--mixing/--action or start without --init-checkpoint."
                ) from None
            trainer.reference.load_state_dict(init.policy_state)
        if run_dir is None:
            run_dir = create_run_dir(cfg.train.save_dir)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            if (run_dir / "config.json").exists() or (run_dir / "checkpoints").exists():
                raise ConfigError(f"{run_dir} already holds a run; continue it with --resume or pick a new folder.")
            (run_dir / "checkpoints").mkdir()
    header = {
        "type": "header",
        "config": config_to_dict(cfg),
        "data": fingerprint,
        "splits": tensors.splits.to_dict(),
        "feature_spec": spec.to_dict(),
        "environment": environment_record(device),
        "autocast": str(trainer.autocast),
        "autocast_reason": trainer.autocast_reason,
        "compiled": trainer.compiled,
        "compile_reason": trainer.compile_reason,
        "command": argv,
        "execution": {"used": cfg.env.execution, "choice": execution_choice, "note": fills},
        "resumed_from_step": resume.step if resume else None,
        "init_checkpoint": init.path if init else None,
    }
    if resume is None:
        atomic_write_json(run_dir / "config.json", header)
    board = None
    if cfg.train.tensorboard:  # a resumed run hides the events its killed predecessor wrote after latest.pt
        board = TensorBoardLog(run_dir, header["config"], purge_step=resume.step + 1 if resume else None)
    log = MetricsLog(run_dir / "metrics.jsonl")
    log.write(header)

    def record(row: dict[str, Any]) -> None:
        log.write(row)
        if board is not None:
            board.write(row)

    print(f"Run folder: {run_dir}", flush=True)
    print(f"Machine: {machine_info(device).describe()}", flush=True)
    dtype_name = "float32" if trainer.autocast is None else str(trainer.autocast).removeprefix("torch.")
    print(f"dtype: {dtype_name} ({trainer.autocast_reason}); compile: {'on' if trainer.compiled else 'off'} "
          f"({trainer.compile_reason})", flush=True)

    tc = cfg.train

    def save(name: str, with_state: bool) -> None:
        path = run_dir / "checkpoints" / name
        try:
            save_checkpoint(
                path, config=cfg, symbols=market.symbols, feature_spec=spec,
                policy=trainer.policy, step=trainer.step_count, data_fingerprint=fingerprint,
                splits=tensors.splits.to_dict(), best_score=trainer.best_score, trained_through=trained_through,
                validated_through=validated_through,
                training_state=trainer.training_state() if with_state else None,
            )
        except OSError as exc:
            raise TrainingError(
                f"Could not write {path} at step {trainer.step_count}: {exc.strerror or exc}. The previous "
                f"checkpoint there is intact (writes are atomic); free some space and continue with --resume {run_dir}."
            ) from None

    pending: list[torch.Tensor] = []
    bar = tqdm(total=tc.epochs, initial=trainer.step_count, disable=not progress, unit="step", dynamic_ncols=True)
    t_mark, steps_mark = time.perf_counter(), trainer.step_count
    try:
        while trainer.step_count < tc.epochs or trainer.step_count == 0 == tc.epochs:
            if tc.epochs > 0:
                stats = trainer.step()
                if stats is not None:
                    pending.append(stats)
                if trainer.nonfinite_run >= tc.max_nonfinite_steps:
                    raise TrainingError(
                        f"{trainer.nonfinite_run} optimizer steps in a row had a non-finite loss or gradient (step "
                        f"{trainer.step_count}); the run stops with the last good checkpoint in {run_dir}. Likely "
                        "causes: a learning rate too high (--lr, --muon-lr) or bad prices in the data."
                    )
                bar.update(1)
            step = trainer.step_count
            is_eval = step % tc.eval_interval == 0 or step >= tc.epochs
            if pending and (step % tc.log_interval == 0 or is_eval):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                elapsed = time.perf_counter() - t_mark
                means = torch.stack(pending).mean(0).tolist()  # the one read of metrics per interval
                row = dict(zip(TRAIN_STATS, means))
                row.update(
                    type="train", step=step, windows=tc.batch_windows, microbatch=tc.microbatch,
                    env_steps_per_s=env_steps_per_step(cfg) * (step - steps_mark) / max(elapsed, 1e-9),
                    peak_mem_gb=peak_memory_gb(device), nonfinite_steps=trainer.nonfinite_total,
                )
                record(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", reward=f"{row['reward_mean']:.4f}",
                                steps_s=f"{row['env_steps_per_s']:.3g}")
                pending.clear()
            if is_eval:
                val = trainer.evaluate("validation")
                score = val["policy"]["objective"]
                improved = math.isfinite(score) and (trainer.best_score is None or score > trainer.best_score)
                if improved:
                    trainer.best_score = score
                record({"type": "validation", "step": step, "score": score, "best": improved, **val})
                save("latest.pt", with_state=True)
                if improved:
                    save("best.pt", with_state=False)
                try:
                    write_training_png(run_dir)
                except OSError as exc:  # the picture is redrawn at the next evaluation; the checkpoints are safe
                    bar.write(f"warning: could not write {run_dir / 'training.png'}: {exc.strerror or exc}")
                p, ew = val["policy"], val["equal_weight"]
                bar.write(
                    f"step {step:>6}  val log growth {p['log_growth']:+.4f} (equal weight {ew['log_growth']:+.4f})  "
                    f"sharpe {p['sharpe']:.2f} ({ew['sharpe']:.2f})  excess t {val['excess_vs_equal_weight']['t_stat']:+.2f}  "
                    f"turnover {p['turnover']:.4f}"
                    + ("  * best" if improved else "")
                )
                t_mark, steps_mark = time.perf_counter(), step
            if tc.epochs == 0:
                break
    finally:
        bar.close()
        log.close()
        if board is not None:
            board.close()
    best = "none" if trainer.best_score is None else f"{trainer.best_score:.4f}"
    print(f"Done: {run_dir} (best validation objective {best}; {trainer.nonfinite_total} non-finite steps skipped).",
          flush=True)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            if args.init_checkpoint:
                raise ConfigError("--resume and --init-checkpoint cannot be combined.")
            extra = given_flags(args) - RESUME_OVERRIDABLE
            if extra:
                flags = ", ".join("--" + f.replace("_", "-") for f in sorted(extra))
                raise ConfigError(f"When resuming, the run's own config is used; drop {flags} (only --epochs, "
                                  "--data-root, --data-glob, --device and --tensorboard may change).")
            ckpt = load_checkpoint(resolve_resume_path(args.resume))
            if ckpt.training_state is None:
                raise CheckpointError(f"{ckpt.path} holds no training state (best.pt does not); resume from the run "
                                      "folder or its checkpoints/latest.pt.")
            cfg = config_from_args(args, ckpt.config)
            run_training(cfg, resume=ckpt, progress=not args.no_progress, argv=argv)
        else:
            cfg, why = choose_execution(config_from_args(args), "execution" in given_flags(args))
            if why is not None:
                print(why, flush=True)
            init = load_checkpoint(args.init_checkpoint) if args.init_checkpoint else None
            if init is not None and init.config.env.include_cash != cfg.env.include_cash:
                raise CheckpointError(f"{init.path} was trained with include_cash={init.config.env.include_cash}; "
                                      "pass the same --include-cash setting to start from it.")
            run_training(cfg, init=init, progress=not args.no_progress, argv=argv, execution_choice=why)
    except DifferentiableMarketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Continue with --resume <run folder> (checkpoints/latest.pt holds the last eval step).",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
