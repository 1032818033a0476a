"""The study's search: the space file, trials scored on validation only, pruning, honest trial counts, resume."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import tiny_study_config, write_market_csvs

from differentiable_market.config import ExperimentConfig, config_to_dict
from differentiable_market.errors import ConfigError
from differentiable_market.study import search
from differentiable_market.study.report import StudySettings
from differentiable_market.study.run import build_study_parser, main, run_study
from differentiable_market.study.space import DEFAULT_SPACE, apply, load_space, max_lookback
from differentiable_market.study.stats import dsr_of
from differentiable_market.synthetic import random_walk_market

TINY_SPACE = """
# a tiny space for tests
[lr]
low = 1e-4
high = 1e-2
log = true

[action]
choices = ["target", "band"]
"""


def _space(tmp_path, text, name="space.toml"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_default_space_loads_and_covers_the_designs():
    space = load_space(DEFAULT_SPACE, ExperimentConfig())
    flags = {p.flag for p in space}
    assert {"lr", "weight_decay", "train_cost_bps", "action", "architecture", "lookback"} <= flags
    assert max_lookback(space, ExperimentConfig()) == 192
    lookback = next(p for p in space if p.flag == "lookback")
    assert (lookback.kind, lookback.low, lookback.high, lookback.step) == ("int", 32, 192, 32)


@pytest.mark.parametrize("text, message", [
    ("[lr]\nlow = 1e-2\nhigh = 1e-4\n", r"line 1, \[lr\]: low \(0.01\) must be below high"),
    ("\n\n[cost-bps]\nlow = 0.0\nhigh = 5.0\n", r"line 3, \[cost-bps\]: --cost-bps cannot be searched: it is the "
                                                r"evaluation fee"),
    ("[seed]\nchoices = [1, 2]\n", "seeds are the study's --seeds"),
    ("[learning-rate]\nlow = 0.1\nhigh = 0.2\n", r"no training flag --learning-rate; searchable flags: .*lr"),
    ("[lr]\nlow = 0.0\nhigh = 0.1\nlog = true\n", "a log scale needs low > 0"),
    ("[action]\nchoices = [\"target\", \"sideways\"]\n", r"line 1, \[action\]: policy.action: 'sideways' is not one "
                                                          "of"),
    ("[lookback]\nlow = 32.0\nhigh = 64.0\n", r"line 1, \[lookback\]: train.lookback: expected an integer, got 32.0"),
    ("[lookback]\nlow = 4\nhigh = 64\n", r"value 4: train.lookback must be >= 8"),
    ("[lr]\nlow = 1e-4\n", "a range needs both low and high"),
    ("[lr]\nlow = 1e-4\nhigh = 1e-2\nscale = \"log\"\n", r"unknown key\(s\) \['scale'\]"),
    ("lr = 0.1\n", "expected a table with low/high"),
    ("[lr\nlow = 1\n", "not valid TOML"),
    ("# nothing\n", "names no flag to search"),
])
def test_a_bad_space_is_refused_with_its_file_and_line(tmp_path, text, message):
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_space(path, ExperimentConfig())
    assert str(path) in str(info.value) or "names no flag" in message


def test_suggested_values_make_valid_configs():
    import optuna

    space = load_space(DEFAULT_SPACE, ExperimentConfig())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        values = search.space_mod.suggest(study.ask(), space)
        cfg = apply(ExperimentConfig(), values)
        assert cfg.train.lr == values["lr"] and cfg.policy.action == values["action"]
        assert cfg.train.lookback % 32 == 0 and 32 <= cfg.train.lookback <= 192
        assert cfg.env.cost_bps == ExperimentConfig().env.cost_bps  # the evaluation fee never moves


def test_the_dsr_falls_as_the_trial_count_grows():
    rng = np.random.default_rng(0)
    returns = rng.normal(0.001, 0.01, 750)  # one fixed out-of-sample path with a real edge
    sharpes = rng.normal(0.05, 0.02, 5)
    dsrs = [dsr_of(returns, sharpes, n) for n in (5, 20, 100, 1000)]
    assert all(a > b for a, b in zip(dsrs, dsrs[1:])), dsrs
    assert dsr_of(returns, sharpes, None) == dsr_of(returns, sharpes, 5)  # counting only the given ones


def _pruning_task(tmp_path, root, previous):
    cfg = tiny_study_config(root, tmp_path / "studies", epochs=6)
    return search.TrialTask(0, len(previous), {"lr": 1e-3}, config_to_dict(cfg), str(tmp_path / "trial"), previous,
                            "median", 252.0)


def test_a_trial_below_the_median_of_earlier_trials_is_pruned_at_an_evaluation(tmp_path, write_ohlc_csvs):
    import optuna

    root = write_ohlc_csvs(random_walk_market(400, 3, seed=1))
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    # four earlier trials that reported an impossible +1000%/yr at every evaluation
    previous = [optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=10.0,
                                          intermediate_values={2: 10.0, 4: 10.0, 6: 10.0}) for _ in range(4)]
    result = search.run_trial(_pruning_task(tmp_path, root, previous))
    assert result["state"] == "pruned"
    # step 0 (the untrained policy) is never reported and the first trained evaluation (step 2) is warm-up; the
    # second is below the median, and the run stops there
    assert [e["step"] for e in result["evaluations"]] == [0, 2, 4]
    from differentiable_market.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "trial" / "checkpoints" / "latest.pt").step == 4
    # with no earlier trials nothing is pruned, and the trial's value is its kept checkpoint's validation score
    done = search.run_trial(_pruning_task(tmp_path / "b", root, []))
    assert done["state"] == "complete" and [e["step"] for e in done["evaluations"]] == [0, 2, 4, 6]
    kept = [e for e in done["evaluations"] if e["best"]][-1]
    assert done["value"] == kept["excess_per_year"] and done["best_step"] == kept["step"]
    # a finished trial is read back, not trained again
    assert search.run_trial(_pruning_task(tmp_path / "b", root, [])) == done


def _search_study(tmp_path, root, runner=None, log=lambda *_: None, **kw):
    cfg = tiny_study_config(root, tmp_path / "studies")
    settings = StudySettings(folds=2, seeds=1, bootstrap_reps=200, search=3, search_batch=2,
                             space=str(_space(tmp_path, TINY_SPACE)), **kw)
    return run_study(cfg, settings, log=log, trial_runner=runner)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny study with a search (2 folds x 3 trials, batches of 2, 1 seed): its data folder and study folder."""
    base = tmp_path_factory.mktemp("search")
    root = write_market_csvs(random_walk_market(500, 3, seed=2), base / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of 2 workers gets on a 2-core machine: the same reduction order
    try:
        return root, _search_study(base / "whole", root)
    finally:
        torch.set_num_threads(threads)


def test_a_search_study_trains_each_folds_choice_and_counts_every_trial(searched):
    _, folder = searched
    state = json.loads((folder / "study.json").read_text())
    found = state["search"]
    assert [len(f["trials"]) for f in found["folds"]] == [3, 3]
    assert (folder / "space.toml").read_text() == TINY_SPACE and (folder / search.JOURNAL).exists()
    for f in found["folds"]:
        complete = [t for t in f["trials"] if t["state"] == "complete"]
        best = max(complete, key=lambda t: t["value"])
        assert f["chosen"]["number"] == best["number"] and f["chosen"]["params"] == best["params"]
        # the fold's seed job trains the chosen flags on the fold's split
        job = json.loads((folder / f"fold{f['fold']}-seed0" / "config.json").read_text())["config"]
        assert job["train"]["lr"] == best["params"]["lr"] and job["policy"]["action"] == best["params"]["action"]
        plan = state["plan"][f["fold"]]
        assert job["data"]["split_bars"] == [*plan["train"], *plan["validation"], *plan["test"]]
        # trials train and validate on the fold's split, so they never score on its test block
        trial = json.loads((folder / "search" / f"fold{f['fold']}" / "trial000" / "config.json").read_text())
        assert trial["config"]["data"]["split_bars"] == job["data"]["split_bars"]
        assert trial["splits"]["validation"] == plan["validation"]
    stats = state["results"]["statistics"]
    # DSR: 1 seed + the ensemble + 6 search trials; SPA: those two plus 3 stitched trial ranks
    assert stats["ensemble_dsr"]["trials"] == 8 and stats["ensemble_dsr"]["search_trials"] == 6
    assert stats["vs_equal_weight"]["spa"]["models"] == 5
    html = (folder / "report.html").read_text()
    assert "<h2>Search</h2>" in html and "6 trials in all" in html and "chart-search-history-fold1" in html
    assert html.count("6 of them search trials") == 1


def test_a_search_killed_mid_batch_resumes_to_the_same_study(tmp_path, searched):
    root, whole = searched
    calls = []

    def dies_in_second_batch(tasks):
        calls.append(len(tasks))
        if len(calls) == 2:
            search.run_trial(tasks[0])  # one trial of the batch finishes, then the driver dies
            raise KeyboardInterrupt
        return search.local_trials(tasks)

    with pytest.raises(KeyboardInterrupt):
        _search_study(tmp_path / "b", root, runner=dies_in_second_batch)
    (folder,) = (tmp_path / "b" / "studies").iterdir()
    state = json.loads((folder / "study.json").read_text())
    assert state["search"] is None and state["results"] is None
    assert main(["--resume", str(folder)]) == 0
    a, b = (json.loads((f / "study.json").read_text()) for f in (whole, folder))
    assert a["search"] == b["search"] and a["results"] == b["results"]


def test_a_trial_that_repeats_earlier_flags_is_not_trained_again_but_counts(tmp_path, write_ohlc_csvs):
    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    cfg = tiny_study_config(root, tmp_path / "studies")
    space = _space(tmp_path, "[action]\nchoices = [\"target\"]\n")  # every draw is the same
    folder = run_study(cfg, StudySettings(folds=2, seeds=1, bootstrap_reps=200, search=3, search_batch=2,
                                          space=str(space)), log=lambda *_: None)
    state = json.loads((folder / "study.json").read_text())
    for f in state["search"]["folds"]:
        assert [t["duplicate_of"] for t in f["trials"]] == [None, 0, 0]
        assert len({t["value"] for t in f["trials"]}) == 1 and f["chosen"]["number"] == 0
        assert sorted(p.name for p in (folder / "search" / f"fold{f['fold']}").iterdir()) == ["trial000"]
    assert state["results"]["statistics"]["ensemble_dsr"]["search_trials"] == 6
    assert "(2 repeated)" in (folder / "report.html").read_text()


@pytest.mark.slow
def test_trials_in_worker_processes_give_the_search_of_one_process(tmp_path, searched):
    root, local = searched  # the fixture's study ran in this process, on one thread
    pooled = _search_study(tmp_path / "b", root, runner=search.process_trials(2))
    a, b = (json.loads((f / "study.json").read_text()) for f in (local, pooled))
    if (os.cpu_count() or 1) // 2 == 1:
        assert a["search"] == b["search"] and a["results"] == b["results"]
    else:  # workers get more threads than the local run: the last bits may differ
        assert [len(f["trials"]) for f in b["search"]["folds"]] == [3, 3]


def test_the_study_cli_takes_the_search_flags():
    args = build_study_parser().parse_args(["--search", "8", "--space", "s.toml", "--search-batch", "2",
                                            "--search-pruner", "halving", "--search-storage", "sqlite:///x.db"])
    assert (args.search, args.space, args.search_batch, args.search_pruner, args.search_storage) == (
        8, "s.toml", 2, "halving", "sqlite:///x.db")


def test_a_search_space_reaching_past_the_embargo_is_refused(tmp_path, write_ohlc_csvs):
    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    cfg = tiny_study_config(root, tmp_path / "studies")
    cfg = ExperimentConfig(data=type(cfg.data)(root=str(root), embargo_bars=16), policy=cfg.policy, train=cfg.train)
    space = _space(tmp_path, "[lookback]\nchoices = [16, 64]\n")
    with pytest.raises(ConfigError, match=r"--embargo-bars 16 is shorter than the longest lookback the search "
                                          r"space allows \(64\)"):
        run_study(cfg, StudySettings(folds=2, seeds=1, search=2, space=str(space)), log=lambda *_: None)


@pytest.mark.slow
def test_the_search_finds_the_one_flag_that_decides_a_planted_market(tmp_path, write_ohlc_csvs):
    """AR(1) returns on one asset: a one-bar momentum edge, earned only by trading every bar.
    Rebalancing every 20 bars cannot earn it, so --rebalance-every decides everything, and 4 trials must find 1."""
    from differentiable_market.config import DataConfig, PolicyConfig, TrainConfig
    from differentiable_market.synthetic import planted_signal_market

    root = write_ohlc_csvs(planted_signal_market(1200, 2, seed=0))
    cfg = ExperimentConfig(
        data=DataConfig(root=str(root)),
        policy=PolicyConfig(architecture="flat", action="target", hidden_size=16, head_hidden=16),
        train=TrainConfig(lookback=32, batch_windows=16, rollout_groups=4, epochs=60, eval_interval=20, device="cpu",
                          dtype="float32", save_dir=str(tmp_path / "studies")))
    space = _space(tmp_path, "[rebalance-every]\nchoices = [1, 20]\n")
    # search_epochs=60: each trial trains as long as a job (the default, --epochs / 6 = 10 steps, learns nothing here,
    # and rebalancing every 20 bars then wins on costs alone: +0.8% against +0.6% a year)
    folder = run_study(cfg, StudySettings(folds=1, seeds=1, bootstrap_reps=200, search=4, search_batch=2,
                                          space=str(space), search_pruner="none", search_epochs=60), log=print)
    found = json.loads((folder / "study.json").read_text())["search"]
    for f in found["folds"]:
        tried = {t["params"]["rebalance_every"] for t in f["trials"]}
        assert tried == {1, 20}, f"fold {f['fold']} tried only {tried}"
        assert f["chosen"]["params"]["rebalance_every"] == 1
        firsts = {}
        for t in f["trials"]:  # a repeated draw is not trained again
            first = firsts.setdefault(t["params"]["rebalance_every"], t["number"])
            assert t["duplicate_of"] == (None if first == t["number"] else first)
        slow = [t["value"] for t in f["trials"] if t["params"]["rebalance_every"] == 20]
        assert f["chosen"]["value"] > max(slow)


@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_to_a_byte_identical_study_json(tmp_path, write_ohlc_csvs):
    import signal
    import subprocess
    import sys
    import time

    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    space = _space(tmp_path, TINY_SPACE)
    save = tmp_path / "studies"  # one parent for both, so their configs (which name it) are equal
    cli = [sys.executable, "-m", "differentiable_market.study", "--data-root", str(root), "--save-dir", str(save),
           "--folds", "2", "--seeds", "1", "--lookback", "16", "--batch-windows", "4", "--rollout-groups", "2",
           "--hidden-size", "8", "--architecture", "flat", "--action", "target", "--epochs", "40",
           "--eval-interval", "4", "--log-interval", "4", "--dtype", "float32", "--bootstrap-reps", "200",
           "--search", "4", "--search-batch", "2", "--space", str(space)]
    subprocess.run(cli, check=True, capture_output=True)
    (whole,) = save.iterdir()
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, target = time.time() + 600, None
    while time.time() < deadline and target is None:
        # kill once a trial of the second batch has written a checkpoint, before it can finish
        hits = [p for p in save.glob("*/search/fold0/trial002/checkpoints/latest.pt") if whole not in p.parents]
        target = hits[0] if hits else None
        time.sleep(0.01)
    assert target is not None, "the search never reached its second batch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = target.parents[4]
    assert json.loads((folder / "study.json").read_text())["search"] is None
    subprocess.run([sys.executable, "-m", "differentiable_market.study", "--resume", str(folder)], check=True,
                   capture_output=True)
    assert (folder / "study.json").read_text() == (whole / "study.json").read_text()


def test_pruned_and_failed_trials_are_counted_but_never_chosen():
    import optuna

    from differentiable_market.study.report import n_search_trials

    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for value, state in ((0.02, "COMPLETE"), (None, "PRUNED"), (0.05, "COMPLETE"), (None, "FAIL")):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 1e-3}, distributions=dist, value=value, state=getattr(optuna.trial.TrialState, state),
            user_attrs={"validation_excess_per_year": value if value is not None else 0.9},  # a pruned high score
            intermediate_values={2: 0.9} if state == "PRUNED" else {}))
    summary = search.search_summary(study, 0)
    assert [t["state"] for t in summary["trials"]] == ["complete", "pruned", "complete", "fail"]
    assert summary["chosen"]["number"] == 2  # the best COMPLETED trial, not the pruned one's early score
    assert n_search_trials({"folds": [summary, summary]}) == 8


def test_a_trial_trains_a_sixth_of_the_final_steps_by_default_and_reports_four_times():
    from differentiable_market.config import ExperimentConfig, TrainConfig
    from differentiable_market.study.run import trial_config

    cfg = ExperimentConfig(train=TrainConfig(epochs=600, eval_interval=50))
    assert (trial_config(cfg, None).train.epochs, trial_config(cfg, None).train.eval_interval) == (100, 25)
    assert (trial_config(cfg, 400).train.epochs, trial_config(cfg, 400).train.eval_interval) == (400, 50)
    assert trial_config(cfg, None).train.lr == cfg.train.lr  # nothing else changes
    tiny = ExperimentConfig(train=TrainConfig(epochs=4, eval_interval=2))
    assert (trial_config(tiny, None).train.epochs, trial_config(tiny, None).train.eval_interval) == (1, 1)
