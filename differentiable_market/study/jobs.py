"""A study's jobs: one ordinary training run per fold x seed, and the executors that run them.

A job is a plain run folder ``<study>/fold<k>-seed<s>/`` (config.json, metrics.jsonl, checkpoints/) whose config is
the study's with the fold's ``data.split_bars`` and the seed's ``train.seed``. Running a job is idempotent: a job whose
``latest.pt`` reached the configured steps is done and is not rerun; one with a ``latest.pt`` short of it continues
from there (``--resume`` semantics, bit-identical on CPU); one killed before its first checkpoint starts again.
The training log of a job goes to ``train.log`` in its folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import load_checkpoint
from ..config import ExperimentConfig, config_from_dict, config_to_dict
from .plan import Fold


@dataclass(frozen=True)
class Job:
    fold: int
    seed: int
    config: ExperimentConfig

    @property
    def name(self) -> str:
        return f"fold{self.fold}-seed{self.seed}"


def make_jobs(base: ExperimentConfig, folds: list[Fold], seeds: int) -> list[Job]:
    """Every fold x seed, folds outermost; seeds are ``base.train.seed`` .. ``base.train.seed + seeds - 1``."""
    jobs = []
    for fold in folds:
        for s in range(seeds):
            seed = base.train.seed + s
            cfg = dataclasses.replace(
                base,
                data=dataclasses.replace(base.data, split_bars=fold.split_bars),
                train=dataclasses.replace(base.train, seed=seed),
            )
            jobs.append(Job(fold.index, seed, cfg))
    return jobs


def run_job(config: dict[str, Any], run_dir: str, threads: int | None = None) -> dict[str, Any]:
    """Train (or finish) one job in ``run_dir`` and return its summary. Takes and returns plain data so that it can
    run in another process or on another machine."""
    import torch

    from ..train import run_training

    if threads:
        torch.set_num_threads(threads)
    cfg = config_from_dict(ExperimentConfig, config)
    folder = Path(run_dir)
    latest = folder / "checkpoints" / "latest.pt"
    if not latest.exists() and folder.exists():
        shutil.rmtree(folder)  # killed before its first checkpoint: nothing worth keeping, start again
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        if latest.exists():
            ckpt = load_checkpoint(latest)
            if ckpt.step < cfg.train.epochs:
                run_training(cfg, resume=ckpt, progress=False, argv=["study job", folder.name])
        else:
            run_training(cfg, progress=False, argv=["study job", folder.name], run_dir=folder)
    best = load_checkpoint(folder / "checkpoints" / "best.pt")
    return {"run_dir": folder.name, "best_step": best.step, "best_validation_objective": best.best_score}


Executor = Callable[[list[Job], Path, Callable[[Job, dict[str, Any]], None]], None]


def run_local(jobs: list[Job], study_dir: Path, done: Callable[[Job, dict[str, Any]], None]) -> None:
    """One job after another in this process."""
    for job in jobs:
        done(job, run_job(config_to_dict(job.config), str(study_dir / job.name)))


def process_executor(workers: int) -> Executor:
    """Jobs in ``workers`` processes of this machine, each with an equal share of its cores."""

    def run(jobs: list[Job], study_dir: Path, done: Callable[[Job, dict[str, Any]], None]) -> None:
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")  # no forked torch state
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_job, config_to_dict(j.config), str(study_dir / j.name), threads): j
                       for j in jobs}
            for future, job in _in_submission_order(futures):
                done(job, future.result())

    return run


def _in_submission_order(futures: dict) -> Iterable:
    # Results are recorded in plan order, so study.json does not depend on which worker finished first.
    return list(futures.items())
