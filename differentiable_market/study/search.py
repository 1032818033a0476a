"""Hyperparameter search inside each fold of a study (``--search N``): Optuna TPE, scored on validation only.

In every fold, N trials each train one run (seed ``--seed``) on the fold's training bars with flags drawn from the
search space (``space.py``) and are scored on the fold's validation bars only:

- **Score**: the validation excess log growth over equal weight after costs, per year, of the checkpoint the run
  would keep (best.pt, chosen by the validation objective as in any run). Test bars are never read.
- **Pruning**: every evaluation reports the excess at that step; the pruner (``median``: Optuna's median rule,
  ``halving``: successive halving, ``none``) may stop a trial that lags. Pruned trials count as trials.
- The fold's best completed trial's flags are then trained over the study's seeds, as a study without search does.

Determinism. Trials run in batches of ``--search-batch`` per fold (all folds' batches at once): a batch's flags are
drawn, in trial order, from the trials finished in earlier batches; its pruning decisions compare against those same
earlier trials (each worker gets a frozen copy of them and runs the pruner on it); its results are written in trial
order when the whole batch is done. So the same seeds give the same trials, values and choices on one process, on
``--workers`` processes or on Ray, and a study killed mid-batch reruns that batch to the same result (a trial whose
run had finished reads its ``trial.json`` instead of training again). The sampler is reseeded for each trial from
the study's ``--seed``, the fold and the trial number.

Storage. Trials live in Optuna storage: by default a journal file ``search.journal`` in the study folder (no server);
``--search-storage`` takes a database URL (``postgresql://...``, ``mysql://...``, ``sqlite:///...``) for a cluster.
Only the driver writes to it: workers get plain data and return plain data, so they need neither the file nor the
database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_write_json
from ..config import ExperimentConfig, config_from_dict, config_to_dict
from ..errors import ConfigError
from . import space as space_mod
from .plan import Fold

Pruner = Literal["median", "halving", "none"]
JOURNAL = "search.journal"
SPACE_COPY = "space.toml"


@dataclass(frozen=True)
class TrialTask:
    """One trial as plain data: what a worker needs to train and score it."""

    fold: int
    number: int
    params: dict[str, Any]
    config: dict[str, Any]  # the base config with the fold's split and the trial's flags
    run_dir: str
    previous: list[Any]  # optuna FrozenTrials finished before this trial's batch (its pruner's reference)
    pruner: Pruner
    periods_per_year: float


def trial_dir(study_dir: Path, fold: int, number: int) -> Path:
    return study_dir / "search" / f"fold{fold}" / f"trial{number:03d}"


def make_pruner(kind: Pruner, eval_interval: int = 1) -> Any:
    import optuna

    if kind == "median":
        # no pruning before 4 trials have finished, nor at a trial's first evaluation (too early to tell)
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=eval_interval + 1)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"Unknown pruner {kind!r}; use median, halving or none.")


def excess_per_year(validation: dict[str, Any], periods_per_year: float) -> float:
    """Validation excess log growth over equal weight after costs, per year (the trial score)."""
    return validation["excess_vs_equal_weight"]["log_growth"] / validation["bars"] * periods_per_year


def run_trial(task: TrialTask, threads: int | None = None, data_root: str | None = None) -> dict[str, Any]:
    """Train and score one trial in ``task.run_dir``; returns its result (also written to ``trial.json`` there).

    A folder holding a ``trial.json`` is a finished trial: its result is returned without training. Any other
    folder (a trial killed mid-run) is cleared and the trial starts again, so its reports match a clean run.
    """
    import optuna
    import torch

    from ..training_run import run_training

    folder = Path(task.run_dir)
    done_file = folder / "trial.json"
    if done_file.exists():
        return json.loads(done_file.read_text(encoding="utf-8"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The pruner runs on a private in-memory copy of the trials finished before this batch, so its decisions do
    # not depend on which other trials of the batch happen to have reported yet.
    cfg = config_from_dict(ExperimentConfig, task.config)
    frozen = optuna.create_study(direction="maximize", pruner=make_pruner(task.pruner, cfg.train.eval_interval),
                                 sampler=optuna.samplers.RandomSampler(seed=0))
    frozen.add_trials(task.previous)
    trial = frozen.ask()
    evals: list[dict[str, Any]] = []

    def on_eval(step: int, val: dict[str, Any], improved: bool) -> bool:
        value = excess_per_year(val, task.periods_per_year)
        evals.append({"step": step, "excess_per_year": value if math.isfinite(value) else None,
                      "objective": val["policy"]["objective"], "turnover": val["policy"]["turnover"],
                      "best": improved})
        if step == 0 or not math.isfinite(value):  # step 0 is the untrained policy: the same for every trial
            return False
        trial.report(value, step)
        return trial.should_prune()

    with open(folder.parent / f"{folder.name}.log", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run_training(cfg, progress=False, argv=["search trial", folder.name], run_dir=folder, data_root=data_root,
                     on_eval=on_eval)
    shutil.move(folder.parent / f"{folder.name}.log", folder / "train.log")
    kept = [e for e in evals if e["best"]]
    best = kept[-1] if kept else None
    pruned = bool(evals) and evals[-1]["step"] < cfg.train.epochs
    result = {
        "fold": task.fold, "number": task.number, "params": task.params,
        "state": "pruned" if pruned else ("complete" if best and best["excess_per_year"] is not None else "fail"),
        "value": best["excess_per_year"] if best else None,  # of the checkpoint the run keeps (best.pt)
        "best_step": best["step"] if best else None,
        "evaluations": evals,
        "system_attrs": dict(frozen.trials[-1].system_attrs),  # what the pruner wrote (successive halving's rungs)
    }
    atomic_write_json(done_file, result)
    return result


TrialRunner = Callable[[list[TrialTask]], list[dict[str, Any]]]


def local_trials(tasks: list[TrialTask]) -> list[dict[str, Any]]:
    return [run_trial(t) for t in tasks]


def process_trials(workers: int) -> TrialRunner:
    """Trials in ``workers`` processes of this machine, each with an equal share of its cores."""

    def run(tasks: list[TrialTask]) -> list[dict[str, Any]]:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(run_trial, tasks, [threads] * len(tasks)))

    return run


def ray_trials(address: str, cpus_per_job: int = 1) -> TrialRunner:
    """Trials as Ray tasks: each gets the data files and returns its run folder's files, written by the driver."""
    from .jobs import _data_files, _read_files, _write_files, ray_executor

    ray_executor(address, cpus_per_job)  # checks the install and the CPUs with the jobs' messages

    def remote_trial(task: TrialTask, data_files: dict[str, bytes], threads: int
                     ) -> tuple[dict[str, Any], dict[str, bytes]]:
        with tempfile.TemporaryDirectory(prefix="differentiable_market-trial-") as tmp:
            data_root, run_dir = Path(tmp) / "data", Path(tmp) / "trial"
            _write_files(data_root, data_files)
            result = run_trial(dataclasses.replace(task, run_dir=str(run_dir)), threads, str(data_root))
            return result, _read_files(run_dir)

    def run(tasks: list[TrialTask]) -> list[dict[str, Any]]:
        import ray

        pending = [t for t in tasks if not (Path(t.run_dir) / "trial.json").exists()]
        results = {t.run_dir: run_trial(t) for t in tasks if t not in pending}  # finished: read back
        if pending:
            started = not ray.is_initialized()
            if started:
                ray.init(address=address, **({"include_dashboard": False} if address == "local" else {}))
            try:
                fn = ray.remote(remote_trial)
                cfg = config_from_dict(ExperimentConfig, pending[0].config)
                data = ray.put(_data_files(cfg))
                refs = [fn.options(num_cpus=cpus_per_job).remote(t, data, cpus_per_job) for t in pending]
                for t, ref in zip(pending, refs):
                    result, files = ray.get(ref)
                    _write_files(Path(t.run_dir), files)
                    results[t.run_dir] = result
            finally:
                if started:
                    ray.shutdown()
        return [results[t.run_dir] for t in tasks]

    return run


# --- the driver ----------------------------------------------------------------------------------------------


def storage_for(study_dir: Path, url: str | None) -> Any:
    """Optuna storage: the journal file in the study folder, or the database at ``url``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # sqlalchemy's errors vary by driver; the user needs the URL and the reason
            raise ConfigError(f"Cannot open the search storage {url!r}: {exc}. Pass a database URL such as "
                              "postgresql://user:pass@host/db (its driver installed), or leave --search-storage "
                              f"out to keep trials in {study_dir / JOURNAL}.") from None
    return JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))


def _sampler(seed: int, fold: int, number: int, n_trials: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed * 1_000_003 + fold * 10_007 + number,
                                      n_startup_trials=min(10, max(3, n_trials // 3)))


_STATES = {"complete": "COMPLETE", "pruned": "PRUNED", "fail": "FAIL"}


def run_search(base: ExperimentConfig, folds: list[Fold], space: tuple[space_mod.Param, ...], n_trials: int,
               batch: int, pruner: Pruner, storage_url: str | None, study_dir: Path, periods_per_year: float,
               runner: TrialRunner = local_trials, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the search of every fold; returns ``{"folds": [...]}`` with every trial and each fold's
    chosen flags (JSON-able, for study.json)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_for(study_dir, storage_url)
    studies = {f.index: optuna.create_study(storage=storage, study_name=f"{study_dir.name}/fold{f.index}",
                                            direction="maximize", load_if_exists=True) for f in folds}
    fold_cfg = {f.index: dataclasses.replace(base, data=dataclasses.replace(base.data, split_bars=f.split_bars))
                for f in folds}
    while True:
        tasks: list[TrialTask] = []
        handles: dict[tuple[int, int], Any] = {}
        for f in folds:
            study = studies[f.index]
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state.is_finished()]
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]  # a killed batch
            batch_trials = [optuna.trial.Trial(study, t._trial_id) for t in running]
            while len(batch_trials) < batch and len(finished) + len(batch_trials) < n_trials:
                study.sampler = _sampler(base.train.seed, f.index, len(finished) + len(batch_trials), n_trials)
                batch_trials.append(study.ask())
            for t in batch_trials:
                # drawn here (a rerun trial returns its stored values; one killed before its draw gets them now)
                study.sampler = _sampler(base.train.seed, f.index, t.number, n_trials)
                space_mod.suggest(t, space)
                params = dict(study._storage.get_trial(t._trial_id).params)
                cfg = space_mod.apply(fold_cfg[f.index], params)
                handles[(f.index, t.number)] = t
                tasks.append(TrialTask(f.index, t.number, params, config_to_dict(cfg),
                                       str(trial_dir(study_dir, f.index, t.number)), finished, pruner,
                                       periods_per_year))
        if not tasks:
            break
        log(f"  search: {len(tasks)} trial(s) ({', '.join(f'fold {t.fold} #{t.number}' for t in tasks)})")
        for task, result in zip(tasks, _run_unique(tasks, study_dir, runner)):
            trial = handles[(task.fold, task.number)]
            for e in result["evaluations"]:
                if e["excess_per_year"] is not None:
                    trial.report(e["excess_per_year"], e["step"])
            for key, value in result["system_attrs"].items():
                studies[task.fold]._storage.set_trial_system_attr(trial._trial_id, key, value)
            trial.set_user_attr("best_step", result["best_step"])
            trial.set_user_attr("validation_excess_per_year", result["value"])
            state = getattr(optuna.trial.TrialState, _STATES[result["state"]])
            if "duplicate_of" in result:
                trial.set_user_attr("duplicate_of", result["duplicate_of"])
            studies[task.fold].tell(trial, result["value"] if state == optuna.trial.TrialState.COMPLETE else None,
                                    state=state)
            shown = "n/a" if result["value"] is None else f"{100 * result['value']:+.1f}%/yr"
            again = (f" (the flags of trial {result['duplicate_of']}: not trained again)"
                     if "duplicate_of" in result else "")
            log(f"    fold {task.fold} trial {task.number}: {result['state']}, validation excess {shown}{again}")
    return {"folds": [search_summary(studies[f.index], f.index) for f in folds]}


def _run_unique(tasks: list[TrialTask], study_dir: Path, runner: TrialRunner) -> list[dict[str, Any]]:
    """Results of ``tasks`` in order, training each distinct flag set of a fold once: a trial that repeats the
    flags of an earlier trial of its fold (a sampler may draw a category again) gets that trial's result (the same
    seed and flags train bit-identical runs), marked ``duplicate_of``. It still counts as a trial."""
    def key(t: TrialTask) -> tuple[int, str]:
        return t.fold, json.dumps(t.params, sort_keys=True)

    earlier: dict[tuple[int, str], int] = {}
    for fold in {t.fold for t in tasks}:
        for folder in sorted((study_dir / "search" / f"fold{fold}").glob("trial*/trial.json")):
            done = json.loads(folder.read_text(encoding="utf-8"))
            if "duplicate_of" not in done:
                earlier.setdefault((fold, json.dumps(done["params"], sort_keys=True)), done["number"])
    def repeats_finished(t: TrialTask) -> bool:
        return earlier.get(key(t), t.number) < t.number

    fresh: list[TrialTask] = []
    for t in tasks:
        if not repeats_finished(t) and all(key(t) != key(u) for u in fresh):
            fresh.append(t)
    ran = dict(zip([(t.fold, t.number) for t in fresh], runner(fresh) if fresh else []))
    out = []
    for t in tasks:
        if (t.fold, t.number) in ran:
            out.append(ran[(t.fold, t.number)])
            continue
        if repeats_finished(t):
            first = earlier[key(t)]
            original = json.loads((trial_dir(study_dir, t.fold, first) / "trial.json").read_text(encoding="utf-8"))
        else:
            first = next(u.number for u in fresh if key(u) == key(t))
            original = ran[(t.fold, first)]
        out.append({**original, "number": t.number, "duplicate_of": first})
    return out


def search_summary(study: Any, fold: int) -> dict[str, Any]:
    """Every trial of a fold (number, state, flags, value, best step, reported values) and the chosen one."""
    import optuna

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    rows = [{"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
             "value": t.user_attrs.get("validation_excess_per_year"), "best_step": t.user_attrs.get("best_step"),
             "duplicate_of": t.user_attrs.get("duplicate_of"),
             "reported": {str(k): v for k, v in sorted(t.intermediate_values.items())}} for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"No trial of fold {fold} completed (all pruned or failed); widen the space, use "
                          "--search-pruner none, or train longer.")
    chosen = max(complete, key=lambda t: (t.value, -t.number))
    return {"fold": fold, "trials": rows, "chosen": {"number": chosen.number, "params": dict(chosen.params),
                                                     "value": chosen.value}}


def load_study_space(study_dir: Path, base: ExperimentConfig) -> tuple[space_mod.Param, ...]:
    """The space a study was started with (its copy in the study folder)."""
    return space_mod.load_space(study_dir / SPACE_COPY, base)


def copy_space(source: Path, study_dir: Path) -> None:
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(study_dir / SPACE_COPY, Path(source).read_bytes())


def fold_configs(base: ExperimentConfig, search: dict[str, Any] | None) -> dict[int, ExperimentConfig]:
    """Each fold's config for its seed jobs: the base, with the chosen flags where the fold searched."""
    if not search:
        return {}
    return {f["fold"]: space_mod.apply(base, f["chosen"]["params"]) for f in search["folds"]}


# --- the report's search section ---------------------------------------------------------------------------------


def _as_optuna_study(fold: dict[str, Any], space: list[dict[str, Any]]) -> Any:
    """An in-memory Optuna study holding a fold's trials as study.json records them (so the report can be drawn
    again without the storage)."""
    import optuna

    dists: dict[str, Any] = {}
    for p in space:
        if p["kind"] == "choice":
            dists[p["flag"]] = optuna.distributions.CategoricalDistribution(p["choices"])
        elif p["kind"] == "int":
            dists[p["flag"]] = optuna.distributions.IntDistribution(p["low"], p["high"], log=p["log"],
                                                                    step=p["step"] or 1)
        else:
            dists[p["flag"]] = optuna.distributions.FloatDistribution(p["low"], p["high"], log=p["log"],
                                                                      step=p["step"])
    study = optuna.create_study(direction="maximize")
    states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
    for t in fold["trials"]:
        state = states.get(t["state"], optuna.trial.TrialState.FAIL)
        study.add_trial(optuna.trial.create_trial(
            params=t["params"], distributions={k: dists[k] for k in t["params"]}, state=state,
            value=t["value"] if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values={int(k): v for k, v in t["reported"].items()}))
    return study


def search_html(found: dict[str, Any]) -> str:
    """The study report's search section: trial counts, the spread of validation scores, each fold's choice,
    and Optuna's optimisation history and parameter importances per fold (plotly divs; the page embeds plotly.js)."""
    import html as h

    import numpy as np
    import optuna

    from ..marketsimulator import charts

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folds = found["folds"]
    total = sum(len(f["trials"]) for f in folds)
    rows, figures = [], []
    for f in folds:
        values = [t["value"] for t in f["trials"] if t["state"] == "complete" and t["value"] is not None]
        count = {s: sum(t["state"] == s for t in f["trials"]) for s in ("complete", "pruned", "fail")}
        repeats = sum(t.get("duplicate_of") is not None for t in f["trials"])
        spread = (f"{100 * min(values):+.1f} / {100 * float(np.median(values)):+.1f} / {100 * max(values):+.1f}"
                  if values else "n/a")
        chosen = f["chosen"]
        flags = ", ".join(f"--{k.replace('_', '-')} {v:.4g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                          for k, v in chosen["params"].items())
        rows.append(f"<tr><td>{f['fold']}</td><td>{len(f['trials'])} ({repeats} repeated)</td>"
                    f"<td>{count['complete']}</td><td>{count['pruned']}</td><td>{count['fail']}</td><td>{spread}</td>"
                    f"<td>#{chosen['number']}: {100 * chosen['value']:+.1f}%/yr</td><td>{h.escape(flags)}</td></tr>")
        study = _as_optuna_study(f, found.get("space", []))
        for key, name, draw in (("history", "optimisation history", optuna.visualization.plot_optimization_history),
                                ("importance", "parameter importances", optuna.visualization.plot_param_importances)):
            try:
                with warnings.catch_warnings():  # "importances will be equal" with few trials: the chart shows it
                    warnings.simplefilter("ignore")
                    fig = draw(study)
            except (ValueError, RuntimeError) as exc:  # too few completed trials, or a parameter without spread
                figures.append(f"<p>Fold {f['fold']}, {name}: not drawn ({h.escape(str(exc))}).</p>")
                continue
            fig.update_layout(title=f"Fold {f['fold']}: {name}", height=320, margin=dict(l=50, r=20, t=40, b=40))
            figures.extend(charts.figures_html({f"search-{key}-fold{f['fold']}": fig}, embed_plotlyjs=False).values())
    return f"""<h2>Search</h2>
<p>{total} trials in all ({len(folds)} folds), each trained on its fold's training bars and scored on its validation
bars only: the validation excess log growth over equal weight after costs, per year, of the checkpoint the run keeps.
Every trial counts in the deflated Sharpe ratio above, pruned ones included; the SPA test's models are the
trials' stitched paths. A trial that drew the flags of an earlier trial of its fold is not trained again (the same
seed and flags give the same run): it takes that trial's result and still counts (shown as repeated).</p>
<table><tr><th>fold</th><th>trials</th><th>complete</th><th>pruned</th><th>failed</th>
<th>validation excess, %/yr: min / median / max</th><th>chosen</th><th>chosen flags</th></tr>{''.join(rows)}</table>
{''.join(figures)}"""
