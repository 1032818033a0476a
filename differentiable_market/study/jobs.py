"""A study's jobs: one ordinary training run per fold x seed, and the executors that run them.

A job is a plain run folder ``<study>/fold<k>-seed<s>/`` (config.json, metrics.jsonl, checkpoints/) whose config is
the study's with the fold's ``data.split_bars`` and the seed's ``train.seed``. Running a job is idempotent: a job whose
``latest.pt`` reached the configured steps is done and is not rerun; one with a ``latest.pt`` short of it continues
from there (``--resume`` semantics, bit-identical on CPU); one killed before its first checkpoint starts again.
The training log of a job goes to ``train.log`` in its folder.

Executors: ``run_local`` (this process), ``process_executor`` (worker processes of this machine) and ``ray_executor``
(tasks on a Ray cluster; the driver writes every result, so workers need no shared file system).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..checkpoint import PRETRAINED, load_checkpoint, resolve_checkpoint_name
from ..config import ExperimentConfig, config_from_dict, config_to_dict
from ..data import DATA_SUFFIXES, resolve_data_root
from ..errors import ConfigError
from .plan import Fold


@dataclass(frozen=True)
class Job:
    """One member of a study: fold x seed, trained from scratch or from ``init`` (a checkpoint path, or
    "pretrained"); ``variant`` names a group of members besides the study's own (its run folders get the suffix)."""

    fold: int
    seed: int
    config: ExperimentConfig
    init: str | None = None
    variant: str = ""

    @property
    def name(self) -> str:
        return f"fold{self.fold}-seed{self.seed}" + (f"-{self.variant}" if self.variant else "")


def make_jobs(base: ExperimentConfig, folds: list[Fold], seeds: int,
              per_fold: dict[int, ExperimentConfig] | None = None, init: str | None = None,
              variant: str = "") -> list[Job]:
    """Every fold x seed, folds outermost; seeds are ``base.train.seed`` .. ``base.train.seed + seeds - 1``.
    ``per_fold`` replaces the base config of the folds it names (the flags a fold's search chose); ``init`` and
    ``variant`` go to every job."""
    jobs = []
    for fold in folds:
        cfg_fold = (per_fold or {}).get(fold.index, base)
        for s in range(seeds):
            seed = base.train.seed + s
            cfg = dataclasses.replace(
                cfg_fold,
                data=dataclasses.replace(cfg_fold.data, split_bars=fold.split_bars),
                train=dataclasses.replace(cfg_fold.train, seed=seed),
            )
            jobs.append(Job(fold.index, seed, cfg, init, variant))
    return jobs


def run_job(config: dict[str, Any], run_dir: str, threads: int | None = None,
            data_root: str | None = None, on_step: Callable[[int, int], None] | None = None,
            init: str | None = None) -> dict[str, Any]:
    """Train (or finish) one job in ``run_dir`` and return its summary. Takes and returns plain data so that it can
    run in another process or on another machine; ``data_root`` is where that machine holds the config's data,
    ``init`` the checkpoint a new run starts from ("pretrained" or a path; None: from scratch).
    ``on_step(step, steps)`` hears of every training step (the study's progress). The job's own log, train.log,
    gets every line whatever the study's console verbosity."""
    import torch

    from .. import console
    from ..training_run import run_training

    if threads:
        torch.set_num_threads(threads)
    cfg = config_from_dict(ExperimentConfig, config)
    folder = Path(run_dir)
    latest = folder / "checkpoints" / "latest.pt"
    if not latest.exists() and folder.exists():
        shutil.rmtree(folder)  # killed before its first checkpoint: nothing worth keeping, start again
    folder.mkdir(parents=True, exist_ok=True)
    with (open(folder / "train.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log),
          console.verbosity(console.NORMAL)):
        if latest.exists():
            ckpt = load_checkpoint(latest)
            if not _done_training(ckpt, cfg.train.epochs):
                run_training(cfg, resume=ckpt, progress=False, argv=["study job", folder.name], data_root=data_root,
                             on_step=on_step)
        else:
            start = None if init is None else load_checkpoint(resolve_checkpoint_name(init, cfg.env.include_cash))
            run_training(cfg, init=start, progress=False, argv=["study job", folder.name], run_dir=folder,
                         data_root=data_root, on_step=on_step)
    return _summary(folder)


def _summary(folder: Path) -> dict[str, Any]:
    best = load_checkpoint(folder / "checkpoints" / "best.pt")
    latest = load_checkpoint(folder / "checkpoints" / "latest.pt")
    stopped = ((latest.training_state or {}).get("recorder") or {}).get("stopped_at")
    return {"run_dir": folder.name, "best_step": best.step, "untrained": best.is_untrained,
            "best_validation_objective": best.best_score, "steps_trained": latest.step, "stopped_early": stopped}


def _finished(folder: Path, epochs: int) -> bool:
    latest = folder / "checkpoints" / "latest.pt"
    return latest.exists() and _done_training(load_checkpoint(latest), epochs)


def _done_training(latest: Any, epochs: int) -> bool:
    """Whether a run whose latest.pt is ``latest`` has nothing left to train: every step, or stopped early."""
    recorder = (latest.training_state or {}).get("recorder") or {}
    return latest.step >= epochs or recorder.get("stopped_at") is not None


# (jobs, study folder, done(job, summary), on_step(job name, step, steps) or None) -> None
StepReport = Callable[[str, int, int], None]
Executor = Callable[..., None]


def run_local(jobs: list[Job], study_dir: Path, done: Callable[[Job, dict[str, Any]], None],
              on_step: StepReport | None = None) -> None:
    """One job after another in this process."""
    for job in jobs:
        report = None if on_step is None else functools.partial(on_step, job.name)
        done(job, run_job(config_to_dict(job.config), str(study_dir / job.name), on_step=report, init=job.init))


def process_executor(workers: int) -> Executor:
    """Jobs in ``workers`` processes of this machine, each with an equal share of its cores. Their training steps
    reach ``on_step`` through a queue that this process drains while it waits."""

    def run(jobs: list[Job], study_dir: Path, done: Callable[[Job, dict[str, Any]], None],
            on_step: StepReport | None = None) -> None:
        import multiprocessing
        import queue as queue_mod
        from concurrent.futures import FIRST_COMPLETED, wait

        from .progress import QueueReporter

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = multiprocessing.get_context("spawn")  # no forked torch state
        with contextlib.ExitStack() as stack:
            steps = stack.enter_context(ctx.Manager()).Queue() if on_step is not None else None
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers, mp_context=ctx))
            futures = {pool.submit(run_job, config_to_dict(j.config), str(study_dir / j.name), threads, None,
                                   None if steps is None else QueueReporter(steps, j.name), j.init): j for j in jobs}
            pending = set(futures)

            def drain() -> None:
                while steps is not None:
                    try:
                        on_step(*steps.get_nowait())
                    except queue_mod.Empty:
                        return

            for future, job in _in_submission_order(futures):
                while not future.done():
                    _, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    drain()
                drain()
                done(job, future.result())

    return run


def _in_submission_order(futures: dict) -> Iterable:
    # Results are recorded in plan order, so study.json does not depend on which worker finished first.
    return list(futures.items())


def ray_executor(address: str, cpus_per_job: int = 1) -> Executor:
    """Jobs as tasks on a Ray cluster. Workers need this package installed, not the driver's file system.

    address: where the cluster is: ``auto`` for the one this machine joined with ``ray start``, ``host:port`` (or
    ``ray://host:port``) for another, or ``local`` to start a private Ray runtime on this machine for the study
    (tests, trying it out). A process already connected to Ray (``ray.init`` was called) keeps that connection and
    ``address`` is not used.

    Each job is one task of ``cpus_per_job`` CPUs (torch runs as many threads), plus one GPU when its config says
    ``--device cuda``, or ``auto`` on a cluster that has GPUs. The task is sent the data files and what the job's
    run folder already holds (so a half-trained job continues from its latest.pt), trains in a temporary folder of
    the worker, and returns the summary and every file of the run folder; the driver writes them into
    ``<study>/<job name>/``, latest.pt last, as each task ends. Finished jobs are not sent. Results are recorded in
    plan order. The run folders record the driver's data root, as a local run would.
    """
    if cpus_per_job < 1:
        raise ConfigError(f"CPUs per Ray job must be >= 1, got {cpus_per_job}.")
    try:
        import ray
    except ImportError:
        raise ConfigError("Running a study on Ray needs the ray package: uv sync --extra ray, or "
                          "pip install 'differentiable-market[ray]'.") from None

    def run(jobs: list[Job], study_dir: Path, done: Callable[[Job, dict[str, Any]], None],
            on_step: StepReport | None = None) -> None:
        # Tasks run on other machines: their steps are not reported one by one; the study counts each job's steps
        # when it finishes.
        if not jobs:
            return
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(address=address, **({"include_dashboard": False} if address == "local" else {}))
            except ConnectionError as exc:
                raise ConfigError(f"No Ray cluster at {address!r} ({exc}). Start one with 'ray start --head', or "
                                  "pass its address with --ray-address host:port.") from None
        try:
            _run_on_ray(ray, jobs, study_dir, done, cpus_per_job)
        finally:
            if started:
                ray.shutdown()  # disconnects; stops the runtime only if it was started here ("local")

    return run


def _run_on_ray(ray: Any, jobs: list[Job], study_dir: Path, done: Callable[[Job, dict[str, Any]], None],
                cpus_per_job: int) -> None:
    task = ray.remote(_run_job_in_temp_folder)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    data = ray.put(_data_files(jobs[0].config))  # all jobs read the same files; sent once per node
    summaries: dict[str, dict[str, Any]] = {}
    pending: dict[Any, Job] = {}
    try:
        for job in jobs:
            folder = study_dir / job.name
            if _finished(folder, job.config.train.epochs):
                summaries[job.name] = _summary(folder)
                continue
            run_files = _read_files(folder) if (folder / "checkpoints" / "latest.pt").exists() else {}
            if not run_files and folder.exists():
                shutil.rmtree(folder)  # killed before its first checkpoint: start again, as run_job would
            device = job.config.train.device
            gpus = 1 if device == "cuda" or (device == "auto" and has_gpus) else 0
            ref = task.options(num_cpus=cpus_per_job, num_gpus=gpus).remote(
                config_to_dict(job.config), job.name, data, run_files, cpus_per_job, _init_file(job.init),
                job.init)
            pending[ref] = job
        recorded = 0
        while recorded < len(jobs):
            while recorded < len(jobs) and jobs[recorded].name in summaries:
                done(jobs[recorded], summaries.pop(jobs[recorded].name))
                recorded += 1
            if pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                summary, files = ray.get(ref)
                _write_files(study_dir / job.name, files)  # at once, so a killed driver keeps the finished work
                summaries[job.name] = summary
    finally:
        for ref in pending:
            ray.cancel(ref)


def _run_job_in_temp_folder(config: dict[str, Any], name: str, data_files: dict[str, bytes],
                            run_files: dict[str, bytes], threads: int, init_file: bytes | None = None,
                            init: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A Ray task: ``run_job`` in a temporary folder of the worker holding the data, the run folder so far and the
    checkpoint the job starts from (sent as bytes; "pretrained" is the worker's own installed one)."""
    with tempfile.TemporaryDirectory(prefix="differentiable_market-job-") as tmp:
        data_root, run_dir = Path(tmp) / "data", Path(tmp) / "runs" / name
        _write_files(data_root, data_files)
        _write_files(run_dir, run_files)
        if init_file is not None:
            init = str(Path(tmp) / "init.pt")
            Path(init).write_bytes(init_file)
        summary = run_job(config, str(run_dir), threads, str(data_root), init=init)
        return summary, _read_files(run_dir)


def _init_file(init: str | None) -> bytes | None:
    """The bytes of the checkpoint a job starts from, for a worker without this file system (None for "pretrained",
    which every installation has, or a job from scratch)."""
    if init is None or init == PRETRAINED:
        return None
    path = Path(init)
    return (path / "checkpoints" / "best.pt" if path.is_dir() else path).read_bytes()


def _data_files(cfg: ExperimentConfig) -> dict[str, bytes]:
    """Every data file the loader could read under the configured root (the bundled sample when it is absent)."""
    root, _ = resolve_data_root(cfg.data.root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob(cfg.data.glob))
            if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES)}


def _read_files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    # latest.pt last: until it is replaced, the folder resumes from the previous one
    for rel in sorted(files, key=lambda r: r == "checkpoints/latest.pt"):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, files[rel])
