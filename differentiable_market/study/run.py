"""Walk-forward study CLI: ``python -m differentiable_market.study``.

Retrains through time over several seeds (every fold x seed an ordinary run folder), stitches one out-of-sample path
per strategy, and says with stated statistics whether the policy beats the baselines. ``study.json`` holds the plan
from the start and every result at the end; a killed study continues with ``--resume <study folder>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from .. import console
from ..atomic import atomic_write_json
from ..checkpoint import load_checkpoint, resolve_checkpoint_name
from ..config import ExperimentConfig, config_from_dict, config_to_dict
from ..data import MarketData, execution_note
from ..env import execution_horizon
from ..errors import ConfigError, DifferentiableMarketError
from ..marketsimulator.run import BASELINES_HELP
from ..runlog import new_timestamped_dir
from ..argparsing import Parser, expert
from ..configfile import (TREE, check_sections, dataclass_section, dump, experiment_config, read_config_file,
                          section, tree_sections)
from ..flags import add_config_flags, add_output_flags, add_training_flags, config_from_args, given_flags, with_flag_names
from ..metrics import bars_per_year
from ..train import with_pretrained_policy
from ..training_run import execution_advice, load_data
from . import search
from . import space as space_mod
from .jobs import Executor, Job, make_jobs, process_executor, ray_executor, run_local
from .plan import Fold, plan_folds
from .progress import StudyProgress
from .report import StudySettings, study_results, write_study_report
from .zeroshot import zero_shot_members

FORMAT = "differentiable_market.study"
FORMAT_VERSION = 1
DEFAULT_SAVE_DIR = "studies"  # parent of study folders, relative to the current folder



SEARCH_BUDGET_DIVISOR = 6  # a trial's default steps: --epochs / 6 (100 of the default 600)
SEARCH_REPORTS = 4  # evaluations a trial reports to the pruner at least


def trial_config(cfg: ExperimentConfig, search_epochs: int | None) -> ExperimentConfig:
    """The training config of a search trial: ``search_epochs`` steps (default: ``--epochs`` / 6, so that 20 trials
    per fold cost about as much as three final runs), evaluated often enough to report ``SEARCH_REPORTS`` times to
    the pruner (a pruned trial stops at its first lagging report). The fold's chosen configuration is then trained
    over the seeds with the study's own ``--epochs``."""
    epochs = search_epochs or max(1, cfg.train.epochs // SEARCH_BUDGET_DIVISOR)
    interval = min(cfg.train.eval_interval, max(1, epochs // SEARCH_REPORTS))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs, eval_interval=interval))

def _iso(market: MarketData, bar: int) -> str:
    return str(market.timestamps[bar])[:19]


def plan_dict(market: MarketData, folds: list[Fold]) -> list[dict[str, Any]]:
    """Folds with their bar ranges and the dates they span (last bar inclusive)."""
    out = []
    for f in folds:
        d = f.to_dict()
        for key in ("train", "validation", "test", "decisions"):
            a, b = getattr(f, key)
            d[f"{key}_dates"] = [_iso(market, a), _iso(market, b - 1)]
        out.append(d)
    return out


def run_study(cfg: ExperimentConfig, settings: StudySettings, study_dir: Path | None = None,
              executor: Executor | None = None, log=print, trial_runner: search.TrialRunner | None = None,
              result_log=None, bars: bool = False) -> Path:
    """Run (or, given an existing ``study_dir`` with a study.json, continue) a study; returns its folder.

    With ``settings.search`` > 0 every fold first searches its flags (``search.py``; ``trial_runner`` runs the
    trials, by default in this process), then trains the chosen ones over the seeds. ``log`` prints what the study
    is doing, ``result_log`` (default: ``log``) its verdict and where it wrote it. The jobs' training steps are shown
    as progress (``progress.StudyProgress``): bars on a terminal when ``bars``, otherwise lines through ``log``."""
    result_log = result_log or log
    resuming = study_dir is not None and (study_dir / "study.json").exists()
    init = None
    if settings.init:
        init = load_checkpoint(resolve_checkpoint_name(settings.init, cfg.env.include_cash))
        if init.pretraining is not None:
            cfg = with_pretrained_policy(cfg, init)
        elif cfg.train.epochs == 0:
            raise ConfigError(f"--epochs 0 scores a pretrained policy as it is (zero-shot); {init.path} is a run's "
                              "checkpoint, trained on its own data. Give --epochs N to train every member from it.")
        if settings.search:
            raise ConfigError("--search and --init do not combine yet: search from scratch, or give the flags to "
                              "train from the checkpoint.")
    zero_shot_only = init is not None and cfg.train.epochs == 0
    horizon = execution_horizon(cfg.env.execution)
    space: tuple[space_mod.Param, ...] = ()
    if settings.search:
        if resuming:
            space = search.load_study_space(study_dir, cfg)
        else:
            space = space_mod.load_space(settings.space or space_mod.DEFAULT_SPACE, cfg)
    # The gaps must cover the longest lookback any trial may use ("None" embargo: that lookback).
    lookback = space_mod.max_lookback(space, cfg) if space else cfg.train.lookback
    embargo = lookback if cfg.data.embargo_bars is None else cfg.data.embargo_bars
    if embargo < lookback:
        longest = f"the longest lookback the search space allows ({lookback})" if space else f"--lookback {lookback}"
        raise ConfigError(f"--embargo-bars {embargo} is shorter than {longest}: a study needs gaps of at least "
                          "the lookback between train, validation and test, so that no evaluation window reaches "
                          "back into the bars before it. Raise --embargo-bars or narrow the space's lookback.")

    def plan(n_bars: int) -> list[Fold]:
        return plan_folds(n_bars, horizon, settings.folds, settings.oos_fraction,
                          round(n_bars * cfg.data.val_fraction), embargo, lookback,
                          settings.window, settings.train_bars)

    # One universe for every fold, decided on the bars before the FIRST fold's training end: no fold's assets are
    # chosen with data it could not have seen. Each job loads the data with the same cut-off date.
    if cfg.data.universe_through is None:
        market = load_data(cfg, lambda calendar: plan(len(calendar))[0].train[1])
        folds = plan(market.n_bars)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, universe_through=str(market.timestamps[folds[0].train[1] - 1])[:19]))
    else:
        market = load_data(cfg)
        folds = plan(market.n_bars)
    fingerprint = market.fingerprint()
    fills = execution_note(market, cfg.env.execution)
    if fills is not None:
        log(fills)
    jobs = [] if zero_shot_only else make_jobs(cfg, folds, settings.seeds, init=settings.init)
    if init is not None and not zero_shot_only and settings.scratch:
        jobs += make_jobs(cfg, folds, settings.seeds, variant="scratch")
    if study_dir is None:
        study_dir = new_timestamped_dir(cfg.train.save_dir)
    if space and not resuming:
        search.copy_space(Path(settings.space) if settings.space else space_mod.DEFAULT_SPACE, study_dir)
    state: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(cfg),
        "settings": dataclasses.asdict(settings),
        "data": fingerprint,
        "execution_note": fills,
        "plan": plan_dict(market, folds),
        "jobs": [{"fold": j.fold, "seed": j.seed, **({"variant": j.variant} if j.variant else {}), "run_dir": j.name,
                  "status": "pending"} for j in jobs],
        "zero_shot": None,
        "search": None,
        "results": None,
    }
    if resuming:
        previous = load_study(study_dir)
        if previous["data"] != fingerprint:
            raise ConfigError(f"The data differ from those {study_dir} was planned on; point --data-root at them.")
        state["jobs"] = previous["jobs"]
    atomic_write_json(study_dir / "study.json", state)
    log(f"Study folder: {study_dir}")
    dates = state["plan"]
    oos = f"out-of-sample decisions {dates[0]['decisions_dates'][0][:10]} .. {dates[-1]['decisions_dates'][1][:10]}"
    if zero_shot_only:
        log(f"{len(folds)} folds, the pretrained policy {init.path} scored as it is (zero-shot); {oos}")
    else:
        variants = " (and as many from scratch, for comparison)" if any(j.variant for j in jobs) else ""
        start = f" from {init.path}" if init is not None else ""
        log(f"{len(folds)} folds x {settings.seeds} seeds = {len(jobs)} jobs{start}{variants}; {oos}")
    zero_shot = None
    if init is not None and init.pretraining is not None:
        zero_shot, state["zero_shot"] = zero_shot_members(market, folds, cfg, init, study_dir, log)
        atomic_write_json(study_dir / "study.json", state)
    if space:
        log(f"Search: {settings.search} trials per fold over {', '.join(p.describe() for p in space)}; scored on "
            f"each fold's validation bars ({settings.search_pruner} pruning, batches of {settings.search_batch})")
        trial_cfg = trial_config(cfg, settings.search_epochs)
        log(f"  each trial trains {trial_cfg.train.epochs} steps (--search-epochs"
            + ("" if settings.search_epochs else f"; default --epochs / {SEARCH_BUDGET_DIVISOR}")
            + f"), evaluated every {trial_cfg.train.eval_interval} for the pruner")
        state["search"] = search.run_search(
            trial_cfg, folds, space, settings.search, settings.search_batch, settings.search_pruner,
            settings.search_storage, study_dir, bars_per_year(market.timestamps),
            trial_runner or search.local_trials, log)
        state["search"]["space"] = [p.to_dict() for p in space]
        atomic_write_json(study_dir / "study.json", state)
        for f in state["search"]["folds"]:
            log(f"  fold {f['fold']} chose trial {f['chosen']['number']}: "
                + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in f["chosen"]["params"].items()))
        jobs = make_jobs(cfg, folds, settings.seeds, search.fold_configs(cfg, state["search"]))
    index = {j.name: i for i, j in enumerate(jobs)}
    started = time.perf_counter()
    finished = {j["run_dir"] for j in state["jobs"] if j.get("status") == "done"}
    progress = StudyProgress(((j.name, j.config.train.epochs, j.config.train.epochs if j.name in finished
                               else 0) for j in jobs), bars, log)

    def done(job: Job, summary: dict[str, Any]) -> None:
        state["jobs"][index[job.name]] = {"fold": job.fold, "seed": job.seed,
                                          **({"variant": job.variant} if job.variant else {}), **summary,
                                          "status": "done"}
        atomic_write_json(study_dir / "study.json", state)
        progress.job_done(job.name)
        n_done = sum(j["status"] == "done" for j in state["jobs"])
        kept = (" (the untrained policy: no trained checkpoint passed the selection gate)"
                if summary.get("untrained", summary["best_step"] == 0) else "")
        log(f"  job {job.name} done ({n_done}/{len(jobs)}, best step {summary['best_step']}{kept}, "
            f"{console.format_duration(time.perf_counter() - started)}{progress.summary()})")

    if any(j.get("status") != "done" for j in state["jobs"]):
        log(f"  each job's training log: {study_dir}/<fold>-<seed>/train.log")
    try:
        if jobs:
            (executor or run_local)(jobs, study_dir, done, progress.step)
    finally:
        progress.close()

    def members_of(variant: str) -> dict[int, list[tuple[int, Any]]]:
        return {f.index: [(j.seed, load_checkpoint(study_dir / j.name / "checkpoints" / "best.pt"))
                          for j in jobs if j.fold == f.index and j.variant == variant] for f in folds}

    variants = {}
    if zero_shot_only:
        members = zero_shot
    else:
        members = members_of("")
        if zero_shot is not None:
            variants["zero_shot"] = zero_shot
        if any(j.variant == "scratch" for j in jobs):
            variants["scratch"] = members_of("scratch")
    state["results"] = study_results(market, folds, members, cfg, settings, state["search"],
                                     _trial_checkpoints(study_dir, state["search"]), variants)
    atomic_write_json(study_dir / "study.json", state)
    write_study_report(study_dir, state)
    result_log(state["results"]["verdict"])
    result_log(f"Wrote {study_dir / 'study.json'} and {study_dir / 'report.html'}")
    return study_dir


def _trial_checkpoints(study_dir: Path, found: dict[str, Any] | None) -> dict[int, dict[int, Any]]:
    """fold -> trial number -> the best.pt of every trial of its search that kept one (empty without search)."""
    out: dict[int, dict[int, Any]] = {}
    for f in (found or {}).get("folds", []):
        best = {t["number"]: search.trial_dir(study_dir, f["fold"], t["number"]) / "checkpoints" / "best.pt"
                for t in f["trials"]}
        out[f["fold"]] = {n: load_checkpoint(p) for n, p in best.items() if p.exists()}
    return out


def load_study(study_dir: Path) -> dict[str, Any]:
    import json

    path = study_dir / "study.json"
    if not path.exists():
        raise ConfigError(f"{study_dir} has no study.json; pass the folder a study printed when it started.")
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a study of this version of differentiable_market.")
    return state


PROG = "differentiable-market study"
STUDY_FLAGS = ("folds", "seeds", "oos_fraction", "window", "train_bars", "bootstrap_reps", "ci_level", "baselines",
               "search", "space", "search_batch", "search_epochs", "search_pruner", "search_storage", "init",
               "scratch")
EXECUTION_FLAGS = ("workers", "ray_address", "ray_cpus_per_job")


def build_study_parser(prog: str = PROG) -> Parser:
    ap = Parser(
        prog=prog,
        usage="%(prog)s [--data-root DIR] [--folds N] [--seeds N] [options]",
        description="Walk-forward study: retrain through time over several seeds, stitch one out-of-sample path per "
                    "strategy and test, with stated statistics, whether the policy beats the baselines. Takes every "
                    "training flag (but --test-fraction: the folds' test blocks replace the test split).",
        examples=("differentiable-market study --data-root demo-market",
                  "differentiable-market study --data-root demo-market --folds 3 --seeds 2 --epochs 200 --workers 2",
                  "differentiable-market study --config studies/20260101-120000 --seeds 5",
                  "differentiable-market study --resume studies/20260101-120000"),
        argument_default=None,
    )
    add_training_flags(ap, study=True)
    ap.refuse("--test-fraction", reason="a study's folds test on blocks that tile the last --oos-fraction of the "
              "bars; pass --oos-fraction instead.")
    s = StudySettings()
    g = ap.add_argument_group("study")
    g.add_argument("--folds", type=int, metavar="N", help=f"test blocks tiling the out-of-sample range (default: "
                   f"{s.folds})")
    g.add_argument("--init", metavar="pretrained|CKPT", help="start every member from a checkpoint: 'pretrained' "
                   "(the policy pretrained on a corpus of markets that ships with the package) or a path. With "
                   "--epochs 0 the study scores the pretrained policy as it is (zero-shot): one candidate per fold, "
                   "judged against equal weight and the untrained policy on the fold's validation bars and every "
                   "out-of-sample bar before it; otherwise each member is fine-tuned from it, and the zero-shot policy "
                   "and members trained from scratch are shown beside them (default: from scratch)")
    expert(g.add_argument("--no-scratch", dest="scratch", action="store_const", const=False, help="with --init and "
                          "training steps, do not also train the members from scratch (halves the training)"))
    g.add_argument("--seeds", type=int, metavar="N", help=f"seeds per fold: --seed .. --seed + N - 1 (default: "
                   f"{s.seeds})")
    g.add_argument("--oos-fraction", type=float, metavar="F", help="share of the scorable bars, at the end of the "
                   f"data, that the folds' test blocks tile (default: {s.oos_fraction})")
    window = g.add_argument("--train-window", dest="window", choices=["expanding", "rolling"], help="training "
                            "window of each fold: from the first bar, or the last --train-bars bars (default: "
                            f"{s.window})")
    ap.add_alias(window, "--window")
    g.add_argument("--train-bars", type=int, metavar="N", help="training bars per fold with --train-window rolling")
    g.add_argument("--baselines", metavar="SET|NAMES", help=BASELINES_HELP + "; the study's best causal baseline is "
                   f"chosen among all those run (default: {s.baselines}; recorded in study.json, so --resume runs "
                   "the same ones)")
    expert(g.add_argument("--bootstrap-reps", type=int, metavar="N", help="bootstrap resamples of the confidence "
                          f"intervals and the SPA test (default: {s.bootstrap_reps})"))
    expert(g.add_argument("--ci-level", type=float, metavar="L", help=f"confidence level (default: {s.ci_level})"))
    g = ap.add_argument_group("where the jobs run (not part of the config)")
    g.add_argument("--workers", type=int, default=1, metavar="N", help="jobs run at once in worker processes on this "
                   "machine (default: 1, in this process)")
    expert(g.add_argument("--ray-address", metavar="ADDRESS", help="run the jobs as tasks on a Ray cluster: 'auto' "
                          "for the one this machine joined with 'ray start', host:port for another, 'local' for a "
                          "private one on this machine; workers need the package, not this file system (needs: uv "
                          "sync --extra ray)"))
    expert(g.add_argument("--ray-cpus-per-job", type=int, default=1, metavar="N", help="CPUs (and torch threads) of "
                          "each Ray job (default: 1)"))
    g = ap.add_argument_group("search (Optuna inside each fold, scored on its validation bars only)")
    g.add_argument("--search", type=int, metavar="N", help="trials per fold: each trains the fold's training bars "
                   "with flags drawn from the space and is scored by its validation excess log growth over equal "
                   "weight after costs; the best one's flags are then trained over --seeds (default: 0, no search: "
                   "the flags given are trained)")
    g.add_argument("--space", metavar="TOML", help="the search space: one table per training flag with low/high "
                   "(log, step) or choices; default: the space shipped as "
                   "differentiable_market/study/default_space.toml")
    expert(g.add_argument("--search-batch", type=int, metavar="B", help="trials drawn together per fold from the "
                          "trials finished before them, and run at once; fixes the result whatever --workers is "
                          f"(default: {s.search_batch})"))
    expert(g.add_argument("--search-epochs", type=int, metavar="STEPS", help="training steps of each trial, to spend "
                          "less on trials than on the final seeds (default: --epochs / 6; the trial's validation "
                          "interval shrinks to report at least 4 times to the pruner)"))
    expert(g.add_argument("--search-pruner", choices=["median", "halving", "none"], help="stops trials that lag at "
                          "an evaluation: Optuna's median rule, successive halving, or none (default: "
                          f"{s.search_pruner})"))
    expert(g.add_argument("--search-storage", metavar="URL", help="Optuna storage as a database URL (postgresql://, "
                          "mysql://, sqlite:///) for a cluster; default: the journal file search.journal in the "
                          "study folder, no server needed"))
    g = ap.add_argument_group("study folder")
    out = g.add_argument("--out-dir", dest="save_dir", metavar="DIR", help="parent of study folders; each study gets "
                         f"a new timestamped folder inside (default: {DEFAULT_SAVE_DIR})")
    ap.add_alias(out, "--save-dir")
    g.add_argument("--resume", metavar="STUDY", help="continue a study folder: finished jobs and search trials "
                   "are kept, a half-trained job continues from its latest.pt; no other flag may be given but "
                   "--workers, --ray-address, --ray-cpus-per-job, --no-progress, --quiet and --verbose")
    add_config_flags(ap, "the training config and the study settings", "a study's study.json or a run "
                     "folder's config.json")
    add_output_flags(ap)
    return ap


def resolve_study(args: argparse.Namespace) -> tuple[ExperimentConfig, StudySettings, set[str]]:
    """The study's training config and settings: defaults, then --config (its sections and [study]), then flags.
    Also returns the keys the config file set (to know whether it chose the execution)."""
    base_cfg, base_settings, from_file = None, StudySettings(), set()
    if args.config:
        file = read_config_file(args.config)
        check_sections(file, (*TREE, "study"), "study")
        base_cfg = experiment_config(file)
        base_settings = section(file, "study", StudySettings)
        if file.kind == "study" and base_settings.space:  # the study folder keeps a copy of the space it searched
            copy = file.path.parent / search.SPACE_COPY
            if copy.is_file():
                base_settings = dataclasses.replace(base_settings, space=str(copy))
        from_file = {k for body in file.sections.values() for k in body}
    file_sets_folder = (args.config and file.kind != "run" and "save_dir" in file.sections.get("train", {}))
    if args.save_dir is None and not file_sets_folder:  # a run's config.json names where runs go, not studies
        args.save_dir = DEFAULT_SAVE_DIR
    cfg = config_from_args(args, base_cfg)
    given = {name: getattr(args, name) for name in STUDY_FLAGS if getattr(args, name) is not None}
    settings = dataclasses.replace(base_settings, **given)
    if settings.space and not settings.search:
        raise ConfigError("--space has no effect without --search N (the number of trials per fold).")
    return cfg, settings, from_file


def _trial_runner(args: argparse.Namespace) -> search.TrialRunner:
    if args.ray_address is not None:
        return search.ray_trials(args.ray_address, args.ray_cpus_per_job)
    return search.process_trials(args.workers) if args.workers > 1 else search.local_trials


def _executor(args: argparse.Namespace) -> Executor | None:
    if args.ray_address is not None:
        if args.workers > 1:
            raise ConfigError("--ray-address and --workers > 1 exclude each other: Ray decides how many jobs run at "
                              "once (the cluster's CPUs / --ray-cpus-per-job).")
        return ray_executor(args.ray_address, args.ray_cpus_per_job)
    return process_executor(args.workers) if args.workers > 1 else None


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_study_parser(prog).parse_args(argv)
    with console.verbosity(console.level_of(args.quiet, args.verbose)):
        try:
            return _study(args)
        except DifferentiableMarketError as exc:
            print(f"error: {with_flag_names(str(exc))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\nInterrupted. Continue with --resume <study folder>.", file=sys.stderr)
            return 130


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _study(args: argparse.Namespace) -> int:
    bars = not args.no_progress
    if args.resume:
        extra = sorted(given_flags(args) | {n for n in (*STUDY_FLAGS, "config", "print_config")
                                            if getattr(args, n) is not None})
        if extra:
            flags = ", ".join(f"--{f.replace('_', '-')} {_shown(getattr(args, f))}" for f in extra)
            raise ConfigError(f"A resumed study uses the config and settings in its study.json; drop {flags}.")
        folder = Path(args.resume)
        state = load_study(folder)
        cfg = config_from_dict(ExperimentConfig, state["config"], "study.json config")
        settings = config_from_dict(StudySettings, state["settings"], "study.json settings")
        executor = _executor(args)
        run_study(cfg, settings, folder, executor, log=console.say, trial_runner=_trial_runner(args),
                  result_log=console.result, bars=bars)
        return 0
    cfg, settings, from_file = resolve_study(args)
    if args.print_config:
        sections = {**tree_sections(cfg), "study": dataclass_section(settings)}
        console.result(dump(sections, args.print_config, f"{PROG} config; pass it back with --config FILE").rstrip())
        return 0
    executor = _executor(args)
    why = execution_advice(cfg, "execution" in given_flags(args) or "execution" in from_file)
    if why is not None:
        console.say(why)
    run_study(cfg, settings, None, executor, log=console.say, trial_runner=_trial_runner(args),
              result_log=console.result, bars=bars)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m differentiable_market.study"))
