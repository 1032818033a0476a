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

from ..atomic import atomic_write_json
from ..checkpoint import load_checkpoint
from ..config import ExperimentConfig, config_from_dict, config_to_dict
from ..data import MarketData
from ..env import execution_horizon
from ..errors import ConfigError, DifferentiableMarketError
from ..marketsimulator.run import BASELINES_HELP
from ..runlog import new_timestamped_dir
from ..train import build_parser, config_from_args, given_flags, load_data
from .jobs import Executor, Job, make_jobs, process_executor, ray_executor, run_local
from .plan import Fold, plan_folds
from .report import StudySettings, study_results, write_study_report

FORMAT = "differentiable_market.study"
FORMAT_VERSION = 1
DEFAULT_SAVE_DIR = "differentiable_market/studies"


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
              executor: Executor | None = None, log=print) -> Path:
    """Run (or, given an existing ``study_dir`` with a study.json, continue) a study; returns its folder."""
    resuming = study_dir is not None and (study_dir / "study.json").exists()
    horizon = execution_horizon(cfg.env.execution)
    if cfg.embargo_bars < cfg.train.lookback:
        raise ConfigError(f"--embargo-bars {cfg.embargo_bars} is shorter than --lookback {cfg.train.lookback}: a "
                          "study needs gaps of at least the lookback between train, validation and test, so that "
                          "no evaluation window reaches back into the bars before it.")

    def plan(n_bars: int) -> list[Fold]:
        return plan_folds(n_bars, horizon, settings.folds, settings.oos_fraction,
                          round(n_bars * cfg.data.val_fraction), cfg.embargo_bars, cfg.train.lookback,
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
    jobs = make_jobs(cfg, folds, settings.seeds)
    if study_dir is None:
        study_dir = new_timestamped_dir(cfg.train.save_dir)
    state: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(cfg),
        "settings": dataclasses.asdict(settings),
        "data": fingerprint,
        "plan": plan_dict(market, folds),
        "jobs": [{"fold": j.fold, "seed": j.seed, "run_dir": j.name, "status": "pending"} for j in jobs],
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
    log(f"{len(folds)} folds x {settings.seeds} seeds = {len(jobs)} jobs; out-of-sample decisions "
        f"{dates[0]['decisions_dates'][0][:10]} .. {dates[-1]['decisions_dates'][1][:10]}")
    index = {(j.fold, j.seed): i for i, j in enumerate(jobs)}
    started = time.perf_counter()

    def done(job: Job, summary: dict[str, Any]) -> None:
        state["jobs"][index[(job.fold, job.seed)]] = {"fold": job.fold, "seed": job.seed, **summary, "status": "done"}
        atomic_write_json(study_dir / "study.json", state)
        n_done = sum(j["status"] == "done" for j in state["jobs"])
        log(f"  job {job.name} done ({n_done}/{len(jobs)}, best step {summary['best_step']}, "
            f"{time.perf_counter() - started:.0f} s)")

    (executor or run_local)(jobs, study_dir, done)
    members = {f.index: [(j.seed, load_checkpoint(study_dir / j.name / "checkpoints" / "best.pt"))
                         for j in jobs if j.fold == f.index] for f in folds}
    state["results"] = study_results(market, folds, members, cfg, settings)
    atomic_write_json(study_dir / "study.json", state)
    write_study_report(study_dir, state)
    log(state["results"]["verdict"])
    log(f"Wrote {study_dir / 'study.json'} and {study_dir / 'report.html'}")
    return study_dir


def load_study(study_dir: Path) -> dict[str, Any]:
    import json

    path = study_dir / "study.json"
    if not path.exists():
        raise ConfigError(f"{study_dir} has no study.json; pass the folder a study printed when it started.")
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not a study of this version of differentiable_market.")
    return state


def build_study_parser() -> argparse.ArgumentParser:
    ap = build_parser(run_folder_flags=False)
    ap.prog = "python -m differentiable_market.study"
    ap.description = ("Walk-forward study: retrain through time over several seeds, stitch one out-of-sample path "
                      "per strategy and test whether the policy beats the baselines. Takes every training flag.")
    s = StudySettings()
    g = ap.add_argument_group("study")
    g.add_argument("--folds", type=int, default=s.folds, help=f"test blocks tiling the out-of-sample range "
                   f"(default: {s.folds})")
    g.add_argument("--seeds", type=int, default=s.seeds, help=f"seeds per fold: --seed .. --seed + N - 1 "
                   f"(default: {s.seeds})")
    g.add_argument("--oos-fraction", type=float, default=s.oos_fraction, help="share of the scorable bars, at the "
                   f"end of the data, that the folds' test blocks tile (default: {s.oos_fraction})")
    g.add_argument("--window", choices=["expanding", "rolling"], default=s.window, help="training window of each "
                   "fold: from the first bar, or the last --train-bars bars (default: expanding)")
    g.add_argument("--train-bars", type=int, help="training bars per fold with --window rolling")
    g.add_argument("--workers", type=int, default=1, help="jobs run at once in worker processes on this machine "
                   "(default: 1, in this process)")
    g.add_argument("--ray-address", metavar="ADDRESS", help="run the jobs as tasks on a Ray cluster: 'auto' for "
                   "the one this machine joined with 'ray start', host:port for another, 'local' for a private one "
                   "on this machine; workers need the package, not this file system (needs: uv sync --extra ray)")
    g.add_argument("--ray-cpus-per-job", type=int, default=1, metavar="N", help="CPUs (and torch threads) of each "
                   "Ray job (default: 1)")
    g.add_argument("--baselines", default=None, metavar="SET|NAMES", help=BASELINES_HELP + "; the study's best "
                   f"causal baseline is chosen among all those run (default: {s.baselines}; recorded in study.json, "
                   "so --resume runs the same ones)")
    g.add_argument("--bootstrap-reps", type=int, default=s.bootstrap_reps, help="bootstrap resamples of the "
                   f"confidence intervals and the SPA test (default: {s.bootstrap_reps})")
    g.add_argument("--ci-level", type=float, default=s.ci_level, help=f"confidence level (default: {s.ci_level})")
    g = ap.add_argument_group("study folder")
    g.add_argument("--save-dir", help=f"parent of study folders (default: {DEFAULT_SAVE_DIR})")
    g.add_argument("--resume", metavar="STUDY", help="continue a study folder: finished jobs are kept, a "
                   "half-trained one continues from its latest.pt; no other flag may be given but --workers, "
                   "--ray-address and --ray-cpus-per-job")
    return ap


def _executor(args: argparse.Namespace) -> Executor | None:
    if args.ray_address is not None:
        if args.workers > 1:
            raise ConfigError("--ray-address and --workers > 1 exclude each other: Ray decides how many jobs run at "
                              "once (the cluster's CPUs / --ray-cpus-per-job).")
        return ray_executor(args.ray_address, args.ray_cpus_per_job)
    return process_executor(args.workers) if args.workers > 1 else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_study_parser().parse_args(argv)
    try:
        executor = _executor(args)
        if args.resume:
            extra = given_flags(args)
            if extra:
                flags = ", ".join("--" + f.replace("_", "-") for f in sorted(extra))
                raise ConfigError(f"A resumed study uses the config in its study.json; drop {flags}.")
            if args.baselines is not None:
                raise ConfigError("A resumed study runs the baselines recorded in its study.json settings; drop "
                                  f"--baselines {args.baselines}.")
            folder = Path(args.resume)
            state = load_study(folder)
            cfg = config_from_dict(ExperimentConfig, state["config"], "study.json config")
            settings = config_from_dict(StudySettings, state["settings"], "study.json settings")
            run_study(cfg, settings, folder, executor)
        else:
            if args.save_dir is None:
                args.save_dir = DEFAULT_SAVE_DIR
            cfg = config_from_args(args)
            settings = StudySettings(folds=args.folds, seeds=args.seeds, oos_fraction=args.oos_fraction,
                                     window=args.window, train_bars=args.train_bars,
                                     bootstrap_reps=args.bootstrap_reps, ci_level=args.ci_level,
                                     baselines=args.baselines or StudySettings.baselines)
            run_study(cfg, settings, None, executor)
    except DifferentiableMarketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Continue with --resume <study folder>.", file=sys.stderr)
        return 130
    return 0
