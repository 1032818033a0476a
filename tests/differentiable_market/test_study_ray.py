"""The Ray executor (study/jobs.py ``ray_executor``) on a local two-CPU Ray runtime."""

import dataclasses
import json
import os
import sys

import pytest
from conftest import tiny_study_config
import torch

from differentiable_market.checkpoint import load_checkpoint
from differentiable_market.config import config_to_dict
from differentiable_market.errors import ConfigError
from differentiable_market.study.jobs import make_jobs, ray_executor, run_job
from differentiable_market.study.plan import plan_folds
from differentiable_market.study.report import StudySettings
from differentiable_market.study.run import build_study_parser, main, run_study
from differentiable_market.synthetic import random_walk_market


# Read when ray is first imported. The runtime listens on loopback only (Ray's single-machine mode), so it needs no
# token (none is written to ~/.ray); no usage report goes out; and although pytest runs under `uv run`, the workers
# use this environment as it is instead of one that Ray would have uv build from a copy of this folder.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A private Ray runtime of 2 CPUs (so 2 one-CPU jobs at once); ray_executor uses the existing connection."""
    before = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()
    for k, v in before.items():
        if v is None:
            del os.environ[k]
        else:
            os.environ[k] = v


def test_a_study_on_ray_equals_the_local_study_and_continues_a_half_trained_job(tmp_path, write_ohlc_csvs,
                                                                                local_ray):
    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    cfg = tiny_study_config(root, tmp_path / "studies")
    settings = StudySettings(folds=2, seeds=1, bootstrap_reps=200)
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    local_dir.mkdir()
    ray_dir.mkdir()
    # fold 0 was half-trained (as if the driver was killed after its step-2 checkpoint): the task must continue it
    folds = plan_folds(500, 2, settings.folds, settings.oos_fraction, round(500 * cfg.data.val_fraction),
                       cfg.embargo_bars, cfg.train.lookback)
    job = make_jobs(cfg, folds, 1)[0]
    half = dataclasses.replace(job.config, train=dataclasses.replace(job.config.train, epochs=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the threads of a one-CPU Ray task: the same reduction order, so bit-equal results
    try:
        run_job(config_to_dict(half), str(ray_dir / job.name))
        run_study(cfg, settings, local_dir, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    run_study(cfg, settings, ray_dir, ray_executor("local"), log=lambda *_: None)

    local = json.loads((local_dir / "study.json").read_text())
    remote = json.loads((ray_dir / "study.json").read_text())
    assert [j["status"] for j in remote["jobs"]] == ["done", "done"]
    assert remote["jobs"] == local["jobs"]
    assert remote["results"] == local["results"]
    for j in local["jobs"]:
        for name in ("best.pt", "latest.pt"):
            a = load_checkpoint(local_dir / j["run_dir"] / "checkpoints" / name)
            b = load_checkpoint(ray_dir / j["run_dir"] / "checkpoints" / name)
            assert a.step == b.step and a.policy_state.keys() == b.policy_state.keys()
            assert all(torch.equal(a.policy_state[k], b.policy_state[k]) for k in a.policy_state)
    assert "Resuming" in (ray_dir / "fold0-seed0" / "train.log").read_text()  # continued, not retrained
    # fold 1 read the worker's copy of the data, but its run records the study's data root, as a local run does
    recorded = json.loads((ray_dir / "fold1-seed0" / "config.json").read_text())["config"]
    assert recorded["data"]["root"] == str(root) and recorded["train"]["save_dir"] == cfg.train.save_dir

    before = {p: p.stat().st_mtime_ns for p in ray_dir.glob("*/**/*") if p.is_file()}
    run_study(cfg, settings, ray_dir, ray_executor("local"), log=lambda *_: None)  # resume: nothing is sent
    assert {p: p.stat().st_mtime_ns for p in ray_dir.glob("*/**/*") if p.is_file()} == before
    assert json.loads((ray_dir / "study.json").read_text()) == remote


def test_a_missing_ray_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigError, match=r"uv sync --extra ray.*differentiable-market\[ray\]"):
        ray_executor("auto")


def test_study_cli_takes_a_ray_address_but_not_with_worker_processes(capsys):
    args = build_study_parser().parse_args(["--ray-address", "auto", "--ray-cpus-per-job", "2"])
    assert (args.ray_address, args.ray_cpus_per_job, args.workers) == ("auto", 2, 1)
    assert build_study_parser().parse_args([]).ray_address is None
    assert main(["--ray-address", "auto", "--workers", "2"]) == 2
    assert "--ray-address and --workers > 1 exclude each other" in capsys.readouterr().err
    assert main(["--ray-address", "auto", "--ray-cpus-per-job", "0"]) == 2
    assert "CPUs per Ray job must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_search_on_ray_equals_the_local_search(tmp_path, write_ohlc_csvs, local_ray):
    from differentiable_market.study import search

    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    space = tmp_path / "space.toml"
    space.write_text("[lr]\nlow = 1e-4\nhigh = 1e-2\nlog = true\n\n[action]\nchoices = [\"target\", \"band\"]\n")
    cfg = tiny_study_config(root, tmp_path / "studies")
    settings = StudySettings(folds=2, seeds=1, bootstrap_reps=200, search=3, search_batch=2, space=str(space))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the threads of a one-CPU Ray task
    try:
        local = run_study(cfg, settings, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    remote = run_study(cfg, settings, log=lambda *_: None, trial_runner=search.ray_trials("local"))
    a, b = (json.loads((f / "study.json").read_text()) for f in (local, remote))
    assert a["search"] == b["search"] and a["results"] == b["results"]
    # the driver wrote every trial's run folder from what the tasks returned
    assert (remote / "search" / "fold1" / "trial002" / "checkpoints" / "best.pt").exists()
