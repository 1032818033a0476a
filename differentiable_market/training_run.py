"""A training run, as the train CLI, the study's jobs and its search trials all start one: load and check the data,
open (or continue) the run folder, train with validation and checkpoints, and hand each evaluation to an optional
callback. The CLIs parse flags and call ``run_training``; nothing here reads ``sys.argv``.

A run folder holds config.json, metrics.jsonl, training.png (the curves, redrawn at each evaluation),
checkpoints/latest.pt and best.pt; with --tensorboard also TensorBoard event files in tensorboard/.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import console
from .atomic import atomic_write_json
from .checkpoint import (Checkpoint, check_after_pretraining, check_market_matches, transferable,
                         universe_difference)
from .config import ExperimentConfig, config_to_dict
from .data import (MarketData, UniverseCutoff, execution_note, load_market, resolve_data_root,
                   symbols_without_open)
from .env import execution_horizon
from .errors import CheckpointError, ConfigError, TrainingError
from .hardware import machine_info
from .runlog import MetricsLog, check_writable, create_run_dir, environment_record
from .splits import train_end_cutoff
from .training_curves import TensorBoardLog, check_tensorboard, write_training_png
from .policy import make_policy
from .recorder import RunMeta, RunRecorder
from .trainer import TRAIN_STATS, Trainer, env_steps_per_step, peak_memory_gb, prepare_market, resolve_device


def execution_advice(cfg: ExperimentConfig, given: bool) -> str | None:
    """A line to print before a run whose default execution deserves one (None otherwise); it never changes the
    execution: the default stays "open" whatever the files hold.

    A file without an open column has its open taken as the close, so for it the default "open" fills a decision
    made after bar t closes at the close of bar t+1: one bar after the decision. That is causal but later than a
    user of close-only data may expect, so the run says so and names ``--execution close`` (fill at the close of
    bar t, the convention of close-only benchmark sets). It is not chosen for the user: trading at the close a
    decision has just seen is optimistic for markets that close, and the design never makes it the default.
    """
    if given or cfg.env.execution == "close":
        return None
    lacking = symbols_without_open(cfg.data)
    if not lacking:
        return None
    names = ", ".join(lacking[:10]) + (f" and {len(lacking) - 10} more" if len(lacking) > 10 else "")
    why = (f"execution: open, the default ({len(lacking)} file(s) have no open column: {names}; their open is the "
           "close, so they fill at the next bar's close, one bar after the decision). Pass --execution close to fill "
           "at the decision bar's close instead, the convention of close-only data sets (optimistic where markets "
           "close: it trades at the close the decision has just seen).")
    return why


def load_data(cfg: ExperimentConfig, universe_cutoff: UniverseCutoff | None = None) -> MarketData:
    """The run's market. Which assets are kept is decided on the bars up to the end of the run's training split
    (``universe_cutoff`` replaces that); longer gaps later are forward-filled and listed in the notes."""
    root, bundled = resolve_data_root(cfg.data.root)
    if bundled:
        console.say(f"No folder '{cfg.data.root}' here: training on the bundled daily sample ({root}).")
    min_bars = cfg.train.lookback + execution_horizon(cfg.env.execution) + 1
    cutoff = universe_cutoff or train_end_cutoff(cfg.data, cfg.train.lookback)
    market = load_market(dataclasses.replace(cfg.data, root=str(root)), min_bars=min_bars, universe_cutoff=cutoff)
    for note in market.notes:
        console.say(f"data: {note}")
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


def _load_market(cfg: ExperimentConfig, resume: Checkpoint | None, init: Checkpoint | None,
                 data_root: str | None) -> tuple[MarketData, dict[str, Any]]:
    """The run's market and its fingerprint, checked against the checkpoint it resumes or starts from."""
    market = load_data(cfg if data_root is None else dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, root=data_root)))
    fingerprint = market.fingerprint()  # hashes every price; computed once, stored with each checkpoint
    source = resume or init
    if init is not None and transferable(init) and cfg.policy.architecture == "cross":
        check_market_matches(init, None)  # a cross-sectional policy may start on other symbols
        if market.symbols != init.symbols:
            u = universe_difference(init.symbols, market.symbols)
            trained_on = "a pretraining corpus" if init.pretraining else f"{len(init.symbols)} symbols"
            console.say(f"Starting from {init.path}, trained on {trained_on}, on {market.n_assets} "
                        f"({len(u['shared'])} shared, {len(u['new'])} new).")
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
    return market, fingerprint


def _open_run_folder(cfg: ExperimentConfig, trainer: Trainer, resume: Checkpoint | None, init: Checkpoint | None,
                     run_dir: Path | None) -> Path:
    """Load what the run continues or starts from into ``trainer`` and return its folder (created when new)."""
    if resume is not None:
        run_dir = Path(resume.path).parent.parent
        assert resume.training_state is not None
        trainer.load_training_state(resume.policy_state, resume.training_state, resume.step, resume.best_score)
        dropped = MetricsLog.truncate_after(run_dir / "metrics.jsonl", resume.step)
        console.say(f"Resuming {run_dir} at step {resume.step} (dropped {dropped} log rows written after it).")
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
    return run_dir


def run_training(
    cfg: ExperimentConfig,
    *,
    resume: Checkpoint | None = None,
    init: Checkpoint | None = None,
    progress: bool = True,
    argv: list[str] | None = None,
    run_dir: Path | None = None,
    data_root: str | None = None,
    on_eval: Callable[[int, dict[str, Any], bool], bool] | None = None,
    execution_choice: str | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Path:
    """Train and return the run folder. ``resume`` continues its run folder in place; ``run_dir`` names a new,
    new one (a walk-forward study names each job's) instead of a timestamped folder under the save dir.
    ``data_root`` reads the data from another folder holding the same files (a Ray worker's copy) without changing
    the config that the run records. ``on_eval(step, validation, improved)`` is called after every validation
    evaluation (once its checkpoints are written); returning True stops the run there (a search's pruner).
    ``execution_choice`` (from ``execution_advice``) is recorded in the header. ``on_step(step, steps)`` is called
    after every training step (a study's progress display)."""
    from tqdm.auto import tqdm

    device = resolve_device(cfg.train.device)
    if cfg.train.tensorboard:  # before the data is loaded or a run folder made
        check_tensorboard()
    if resume is None:  # before the data is loaded, so the user hears at once
        check_writable(run_dir.parent if run_dir is not None else Path(cfg.train.save_dir))
    market, fingerprint = _load_market(cfg, resume, init, data_root)
    fills = execution_note(market, cfg.env.execution)  # what the execution means where an asset has no open
    if fills is not None:
        console.say(fills)
    source = resume or init
    # a pretrained policy learned each market with a normaliser of that market's own: this run fits its own too
    inherited = None if source is None or (resume is None and init.refits_normaliser) else source.feature_spec
    tensors, spec = prepare_market(cfg, market, device, inherited)
    train_end = tensors.splits.train[1]
    trained_through = str(market.timestamps[train_end - 1])[:19]
    validated_through = str(market.timestamps[tensors.splits.validation[1] - 1])[:19]  # the bars that pick best.pt
    if init is not None and init.refits_normaliser:
        check_after_pretraining(init, str(market.timestamps[tensors.splits.validation[0]])[:19],
                                "this run's validation split")
    elif init is not None:
        check_init_split(init, trained_through)
    trainer = Trainer(cfg, tensors, device)
    run_dir = _open_run_folder(cfg, trainer, resume, init, run_dir)
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

    console.say(f"Run folder: {run_dir}")
    console.say(f"Machine: {machine_info(device).describe()}")
    dtype_name = "float32" if trainer.autocast is None else str(trainer.autocast).removeprefix("torch.")
    console.say(f"dtype: {dtype_name} ({trainer.autocast_reason}); compile: {'on' if trainer.compiled else 'off'} "
                f"({trainer.compile_reason})")
    if device.type == "cpu":
        notice = console.compile_notice(console.package_kernels())
        if notice is not None:
            console.say(notice)

    tc = cfg.train
    meta = RunMeta(cfg, market.symbols, spec, fingerprint, tensors.splits.to_dict(), trained_through,
                   validated_through)
    pending: list[torch.Tensor] = []
    bar = tqdm(total=tc.epochs, initial=trainer.step_count, disable=not progress, unit="step", dynamic_ncols=True)
    t_mark, steps_mark = time.perf_counter(), trainer.step_count
    # A run from scratch is its own benchmark at step 0; one started from a checkpoint falls back to a fresh policy.
    untrained = None
    if init is not None:
        with torch.random.fork_rng(devices=[]):  # the run's own random streams stay as they were
            torch.manual_seed(cfg.train.seed)  # the weights a run from scratch with this seed starts from
            untrained = make_policy(cfg.policy, market.n_assets, tensors.features.shape[-1],
                                    cfg.env.include_cash).to(device)
    recorder = RunRecorder(meta, run_dir, tensors, record, console.say, untrained)
    if resume is not None:
        recorder.load_state_dict(resume.training_state.get("recorder"))

    def validate(step: int) -> bool:
        """Evaluate through the recorder (gate, rows, checkpoints, the console line); True when ``on_eval`` asks
        the run to stop."""
        with_state = step > 0 or tc.epochs == 0  # nothing to resume before the first step of a run that trains
        val, improved = recorder.evaluate(step, trainer.policy, trainer.training_state if with_state else None,
                                          is_untrained=step == 0 and init is None)
        trainer.best_score = recorder.best_score
        try:
            write_training_png(run_dir)
        except OSError as exc:  # the picture is redrawn at the next evaluation; the checkpoints are safe
            console.warn(f"warning: could not write {run_dir / 'training.png'}: {exc.strerror or exc}")
        if on_eval is not None and on_eval(step, val, improved):
            console.say(f"step {step:>6}  stopped by the search's pruner")
            return True
        return recorder.stopped_at is not None

    try:
        stopped = recorder.stopped_at is not None  # a resumed run that had stopped early stays stopped
        if stopped:
            console.say(f"The run stopped early at step {recorder.stopped_at} (--patience); nothing to resume.")
        stopped = stopped or (trainer.step_count == 0 and validate(0))  # the untrained policy: best.pt until beaten
        t_mark = time.perf_counter()
        while trainer.step_count < tc.epochs and not stopped:
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
            if on_step is not None:
                on_step(step, tc.epochs)
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
                bar.set_postfix(loss=f"{row['loss']:.4f}", reward=f"{row['reward_mean']:.4f}")
                console.detail(f"step {step:>6}  loss {row['loss']:+.4f}  reward {row['reward_mean']:+.4f}  "
                               f"env steps/s {row['env_steps_per_s']:.3g}")
                pending.clear()
            if is_eval:
                stopped = validate(step)
                t_mark, steps_mark = time.perf_counter(), step
    finally:
        bar.close()
        log.close()
        if board is not None:
            board.close()
    best = "none" if trainer.best_score is None else f"{trainer.best_score:.4f}"
    console.say(f"Done: {run_dir} (best validation objective {best}; {trainer.nonfinite_total} non-finite steps "
                "skipped).")
    return run_dir
