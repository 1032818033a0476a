import base64
import html
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import replace_unread_prices, tiny_study_config, write_market_csvs, write_union_csvs
import torch

from differentiable_market.checkpoint import load_checkpoint, save_checkpoint
from differentiable_market.config import DataConfig, ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.env import account, decision_growth, drift, initial_holdings, observed_growth
from differentiable_market.errors import DataError
from differentiable_market.features import compute_features, fit_feature_spec
from differentiable_market.marketsimulator.charts import external_references, figures_html
from differentiable_market.policy import make_policy
from differentiable_market.rollout import deterministic_weights
from differentiable_market.study.jobs import make_jobs, run_job
from differentiable_market.study.oos import stitched_paths
from differentiable_market.study.plan import plan_folds
from differentiable_market.study.report import StudySettings, cost_breakeven_bps, report_html
from differentiable_market.study.run import build_study_parser, run_study
from differentiable_market.synthetic import random_walk_market


def test_folds_tile_the_out_of_sample_decisions_with_embargoes():
    folds = plan_folds(1000, horizon=2, folds=4, oos_fraction=0.3, val_bars=100, embargo=40, lookback=32)
    assert [f.index for f in folds] == [0, 1, 2, 3]
    assert folds[0].decisions[0] == 998 - round(998 * 0.3) and folds[-1].decisions[1] == 998
    for a, b in zip(folds, folds[1:]):
        assert a.decisions[1] == b.decisions[0]  # contiguous, no overlap
    for f in folds:
        assert f.test == (f.decisions[0], f.decisions[1] + 2)  # every earned price inside the test split
        assert f.validation[1] + 40 == f.test[0] and f.validation[1] - f.validation[0] == 100
        assert f.train == (0, f.validation[0] - 40)
        assert f.split_bars == (*f.train, *f.validation, *f.test)
    rolling = plan_folds(1000, 2, 4, 0.3, 100, 40, 32, window="rolling", train_bars=200)
    assert all(f.train[1] - f.train[0] == 200 and f.train[1] == g.train[1] for f, g in zip(rolling, folds))
    with pytest.raises(DataError, match="Fold 0 .* training bars"):
        plan_folds(1000, 2, 4, 0.8, 100, 40, 32)


def test_jobs_carry_the_fold_split_and_consecutive_seeds():
    folds = plan_folds(1000, 2, 2, 0.3, 100, 40, 32)
    base = ExperimentConfig(train=TrainConfig(seed=7))
    jobs = make_jobs(base, folds, 3)
    assert [(j.fold, j.seed, j.name) for j in jobs][:4] == [(0, 7, "fold0-seed7"), (0, 8, "fold0-seed8"),
                                                           (0, 9, "fold0-seed9"), (1, 7, "fold1-seed7")]
    assert jobs[3].config.data.split_bars == folds[1].split_bars


def test_cost_breakeven_matches_its_closed_form():
    # Asset 0 grows by (1 + r) on even bars, asset 1 on odd bars. A switches every bar into the asset about to grow
    # (turnover 2 after the entry trade); B holds asset 1. Both pay the entry fee c, so A's excess log growth is
    # (T/2) log(1 + r) + (T - 1) log(1 - 2c), zero at c* = (1 - (1 + r)^(-T / (2 (T - 1)))) / 2.
    r, t_len = 0.01, 50
    growth = torch.tensor([[1 + r, 1.0] if t % 2 == 0 else [1.0, 1 + r] for t in range(t_len)], dtype=torch.float64)
    switch = np.array([[1.0, 0.0] if t % 2 == 0 else [0.0, 1.0] for t in range(t_len)])
    hold = np.tile([0.0, 1.0], (t_len, 1))
    expected = (1 - (1 + r) ** (-t_len / (2 * (t_len - 1)))) / 2 * 1e4
    assert 20 < expected < 30
    assert cost_breakeven_bps(switch, hold, growth, include_cash=False) == pytest.approx(expected, rel=1e-9)
    assert cost_breakeven_bps(hold, switch, growth, include_cash=False) is None  # no edge even without fees
    # holding the better asset pays only the same entry fee as the benchmark: no fee erases its edge
    up = torch.tensor([[1 + r, 1.0]] * t_len, dtype=torch.float64)
    assert cost_breakeven_bps(hold[:, ::-1].copy(), hold, up, include_cash=False) == math.inf


def _checkpoints(tmp_path, market, folds, seeds, architecture="flat"):
    """Untrained but distinct policies saved as each fold x seed's best.pt (window context: each fold's path starts
    its encoder cold, which the test below recomputes; test_context covers the history context's folds). The same
    arguments give the same weights whatever the market."""
    base = ExperimentConfig(policy=PolicyConfig(architecture=architecture, action="target", hidden_size=8,
                                                head_hidden=8, context="window"),
                            train=TrainConfig(lookback=16))
    members = {}
    for f in folds:
        cfg = ExperimentConfig(data=DataConfig(split_bars=f.split_bars, calendar=market.calendar),
                               policy=base.policy, train=base.train)
        spec = fit_feature_spec(market, cfg.features, f.train[1])
        members[f.index] = []
        for s in seeds:
            torch.manual_seed(100 * f.index + s)
            policy = make_policy(cfg.policy, market.n_assets, len(spec.names), False)
            if architecture == "flat":
                with torch.no_grad():
                    policy.head_out.weight.normal_(0, 2.0)
                    policy.head_held.weight.normal_(0, 2.0)
            path = tmp_path / f"f{f.index}s{s}.pt"
            save_checkpoint(path, config=cfg, symbols=market.symbols, feature_spec=spec, policy=policy, step=1,
                            data_fingerprint=market.fingerprint(), splits={}, best_score=0.0, trained_through="x")
            members[f.index].append((s, load_checkpoint(path)))
    return members


def test_stitched_paths_carry_holdings_across_folds_and_charge_the_switch(tmp_path):
    market = random_walk_market(600, 3, seed=3)
    folds = plan_folds(market.n_bars, 2, 3, 0.3, 60, 16, 16)
    members = _checkpoints(tmp_path, market, folds, [0, 1])
    paths, bars = stitched_paths(market, folds, members, 1e-3, False, "open")
    assert bars[0] == folds[0].decisions[0] and bars[-1] == folds[-1].decisions[1] - 1
    assert bars.size == np.unique(bars).size
    o, c = torch.tensor(market.open), torch.tensor(market.close)
    growth = decision_growth(o, c, "open", False)[torch.as_tensor(bars)]
    seen = observed_growth(o, c, "open", False).float()
    # seed 0 on fold 1 starts from what it held at the end of fold 0, drifted to the close, not from cash
    d0, d1 = folds[1].decisions
    w0 = torch.as_tensor(paths["seed0"].weights)
    ckpt = members[1][0][1]
    from differentiable_market.checkpoint import build_policy

    feats = torch.as_tensor(compute_features(market, ckpt.feature_spec), dtype=torch.float32)[None, d0:d1]
    carried = drift(w0[d0 - bars[0] - 1].float(), seen[d0 - 1])
    expect = deterministic_weights(build_policy(ckpt), feats, seen[None, d0:d1], False, None, initial=carried)[0]
    # float32 policies batched differently: equal to float32 rounding (on an AVX2-only CPU 8e-7 apart, not 0)
    torch.testing.assert_close(w0[d0 - bars[0]:d1 - bars[0]], expect.double() / expect.double().sum(-1, keepdim=True),
                               rtol=1e-5, atol=1e-6)
    cold = deterministic_weights(build_policy(ckpt), feats, seen[None, d0:d1], False, None)[0]
    assert (cold[0] - expect[0]).abs().max() > 1e-3  # a cold start would differ far beyond that rounding
    # one continuous exact account of the whole path: the fold switch pays its fee like any other bar
    acc = account(w0[None], growth[None], initial_holdings(3, False, dtype=torch.float64), 1e-3, False, None)
    np.testing.assert_allclose(paths["seed0"].log_growth, acc.log_growth[0].numpy(), rtol=0, atol=1e-15)
    assert paths["seed0"].cost[d0 - bars[0]] > 0
    # every baseline and strategy trades the same bars
    assert {p.log_growth.shape for p in paths.values()} == {(bars.size,)}


def test_a_checkpoint_of_another_fold_is_refused(tmp_path):
    market = random_walk_market(500, 3, seed=4)
    folds = plan_folds(market.n_bars, 2, 2, 0.3, 60, 16, 16)
    members = _checkpoints(tmp_path, market, folds, [5])
    members[1] = members[0]  # fold 0's checkpoint has seen fold 1's test block in training
    with pytest.raises(DataError, match=r"fold 1, seed 5\) was trained on the split .* not fold 1's planned"):
        stitched_paths(market, folds, members, 1e-3, False, "open")


def test_the_breakeven_is_the_first_fee_where_the_edge_is_gone():
    from differentiable_market.study.report import first_zero

    # positive, below zero on (3, 5), positive again up to 100: the first crossing, where bisecting [0, 2000]
    # would have found 100
    assert first_zero(lambda x: -(x - 3.0) * (x - 5.0) * (x - 100.0), 2000.0) == pytest.approx(3.0, abs=1e-9)
    assert first_zero(lambda x: 3.0 - x, 2000.0) == pytest.approx(3.0, abs=1e-9)
    assert first_zero(lambda x: 1.0, 2000.0) == math.inf


def test_the_verdict_says_p_is_below_one_over_reps_when_no_resample_reached_it():
    from differentiable_market.study.report import format_pvalue

    assert format_pvalue(0.0, 2000) == "p < 0.0005"
    assert format_pvalue(0.234, 2000) == "p = 0.23" and format_pvalue(0.004, 2000) == "p = 0.004"


def test_an_ensemble_of_one_is_that_seed(tmp_path):
    market = random_walk_market(500, 3, seed=4)
    folds = plan_folds(market.n_bars, 2, 2, 0.3, 60, 16, 16)
    members = _checkpoints(tmp_path, market, folds, [5])
    paths, _ = stitched_paths(market, folds, members, 1e-3, False, "open")
    np.testing.assert_allclose(paths["ensemble"].weights, paths["seed5"].weights, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """(config, settings, folder) of one finished 2-fold x 2-seed study on a random walk, shared by the module."""
    tmp = tmp_path_factory.mktemp("tiny_study")
    root = write_market_csvs(random_walk_market(500, 3, seed=2), tmp / "data")
    cfg = tiny_study_config(root, tmp / "studies")
    settings = StudySettings(folds=2, seeds=2, bootstrap_reps=200)
    return cfg, settings, run_study(cfg, settings, log=lambda *_: None)


def test_a_study_writes_its_plan_jobs_and_verdict_and_resume_redoes_nothing(tiny_study):
    cfg, settings, folder = tiny_study
    state = json.loads((folder / "study.json").read_text())
    assert [j["status"] for j in state["jobs"]] == ["done"] * 4
    assert {j["run_dir"] for j in state["jobs"]} == {"fold0-seed0", "fold0-seed1", "fold1-seed0", "fold1-seed1"}
    assert all((folder / j["run_dir"] / "checkpoints" / "best.pt").exists() for j in state["jobs"])
    res = state["results"]
    assert res["verdict"].startswith("Out of sample (") and "SPA p = " in res["verdict"]
    iv = res["statistics"]["vs_equal_weight"]["excess_log_growth_per_year"]
    assert iv["low"] <= iv["estimate"] <= iv["high"]
    assert set(res["strategies"]) >= {"ensemble", "seed0", "seed1", "equal_weight", "olmar"}
    assert sum(f["bars"] for f in res["folds"]) == res["out_of_sample"]["bars"]
    page = (folder / "report.html").read_text()
    olmar = res["statistics"]["vs_olmar"]["excess_log_growth_per_year"]
    ens, ol = res["strategies"]["ensemble"], res["strategies"]["olmar"]
    assert olmar["estimate"] == pytest.approx(ens["log_growth_per_year"] - ol["log_growth_per_year"], abs=1e-12)
    assert "Ensemble against OLMAR" in page
    assert "action target; rebalancing every 1 bar(s); 10 bps one-way; execution open" in page
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*/checkpoints/*.pt")}
    run_study(cfg, settings, folder, log=lambda *_: None)
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/checkpoints/*.pt")} == before  # nothing retrained
    assert json.loads((folder / "study.json").read_text()) == state


def _plotly_figure(page: str, key: str) -> tuple[list[dict], dict]:
    """The traces and layout a page hands Plotly.newPlot for the div ``chart-<key>``."""
    decoder = json.JSONDecoder()
    at = re.search(rf'Plotly\.newPlot\(\s*"chart-{key}",\s*', page).end()
    data, end = decoder.raw_decode(page, at)
    layout, _ = decoder.raw_decode(page, re.match(r",\s*", page[end:]).end() + end)
    return data, layout


def _array(values: list | dict) -> np.ndarray:
    """A plotly JSON array: a list, or (plotly 6+) a base64 typed array."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def test_the_study_report_is_interactive_offline_and_draws_wealth_on_a_log_scale(tiny_study):
    _, _, folder = tiny_study
    state = json.loads((folder / "study.json").read_text())
    page = (folder / "report.html").read_text()
    assert external_references(page) == [] and 'src="http' not in page
    assert page.count("* plotly.js v") == 1 and "<img" not in page
    data, layout = _plotly_figure(page, "equity")
    assert layout["yaxis"]["type"] == "log" and layout["yaxis2"].get("type", "linear") == "linear"  # drawdown in %
    strategies = state["results"]["strategies"]
    drawn = {v["label"] for v in strategies.values() if v["kind"] in ("policy", "baseline")}
    assert {"seed0", "seed1", "ensemble", "equal_weight", "olmar"} <= set(strategies)
    assert {t["name"] for t in data} == drawn and all(label in page for label in drawn)
    wealth = {t["name"]: t for t in data if t.get("showlegend", True) is not False}
    log_wealth = state["results"]["equity"]["log_wealth"]["ensemble"]
    np.testing.assert_allclose(_array(wealth[strategies["ensemble"]["label"]]["y"]), np.exp(log_wealth), rtol=1e-12)
    # grey lines at the fold boundaries (in both panels), each fold labelled
    folds = state["results"]["folds"]
    assert {s["x0"][:10] for s in layout["shapes"]} == {f["first_bar"][:10] for f in folds[1:]}
    assert [a["text"] for a in layout["annotations"] if a["text"].startswith("fold ")] == [
        f"fold {f['fold']}" for f in folds]
    data, layout = _plotly_figure(page, "intervals")
    stats = state["results"]["statistics"]
    assert data[0]["y"] == ["vs equal_weight", f"vs best causal baseline ({stats['best_causal_baseline']})",
                            "vs olmar"]
    assert _array(data[0]["x"])[2] == pytest.approx(100 * stats["vs_olmar"]["excess_log_growth_per_year"]["estimate"])


def test_extra_sections_are_appended_to_the_study_report_and_use_its_plotly(tiny_study):
    import plotly.graph_objects as go

    _, _, folder = tiny_study
    state = json.loads((folder / "study.json").read_text())
    extra = figures_html({"trials": go.Figure(go.Scatter(x=[0, 1], y=[2, 3]))}, embed_plotlyjs=False)["trials"]
    page = report_html(state, ["<h2>Search</h2><p>twenty trials</p>", extra])
    assert page.count("* plotly.js v") == 1 and external_references(page) == []
    # after the tables, in order, and after the plotly.js that the extra chart needs
    assert page.index("* plotly.js v") < page.index("Per fold") < page.index("twenty trials") < page.index(
        'id="chart-trials"') < page.index("</body>")
    assert report_html(state) == (folder / "report.html").read_text()  # nothing extra: the page the study wrote
    with pytest.raises(TypeError, match="wrap a single one in a list"):
        report_html(state, "<h2>Search</h2>")


def test_a_half_trained_job_continues_to_the_same_result(tmp_path, write_ohlc_csvs):
    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    cfg = tiny_study_config(root, tmp_path)
    folds = plan_folds(500, 2, 1, 0.3, round(500 * 0.15), 16, 16)
    job = make_jobs(cfg, folds, 1)[0]
    from differentiable_market.config import config_to_dict
    import dataclasses

    whole = run_job(config_to_dict(job.config), str(tmp_path / "whole"))
    half = dataclasses.replace(job.config, train=dataclasses.replace(job.config.train, epochs=2))
    run_job(config_to_dict(half), str(tmp_path / "split"))  # as if killed after the step-2 checkpoint
    resumed = run_job(config_to_dict(job.config), str(tmp_path / "split"))
    assert resumed == {**whole, "run_dir": "split"}
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "latest.pt").policy_state
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt").policy_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_study_cli_takes_every_train_flag_and_its_own():
    args = build_study_parser().parse_args(["--folds", "3", "--seeds", "2", "--lookback", "64", "--window",
                                            "rolling", "--train-bars", "500", "--encoder", "gru"])
    assert (args.folds, args.seeds, args.lookback, args.window, args.train_bars, args.encoder) == \
        (3, 2, 64, "rolling", 500, "gru")
    from differentiable_market.study.run import resolve_study

    cfg, settings, _ = resolve_study(args)
    assert (settings.folds, settings.seeds, settings.window, settings.train_bars) == (3, 2, "rolling", 500)
    assert math.isclose(settings.ci_level, 0.9) and cfg.train.lookback == 64 and cfg.train.save_dir == "studies"


def _study_cli(data_root, save_dir, *extra):
    return [sys.executable, "-m", "differentiable_market.study", "--data-root", str(data_root), "--save-dir",
            str(save_dir), "--folds", "2", "--seeds", "2", "--lookback", "16", "--batch-windows", "8",
            "--rollout-groups", "2", "--hidden-size", "8", "--epochs", "150", "--eval-interval", "5",
            "--log-interval", "5", "--dtype", "float32", "--bootstrap-reps", "200", *extra]


@pytest.mark.slow
def test_a_study_killed_mid_way_and_resumed_writes_the_same_study_json(tmp_path, write_ohlc_csvs):
    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    save = tmp_path / "studies"  # one parent for both, so their configs (which name it) are equal
    subprocess.run(_study_cli(root, save), check=True, capture_output=True)
    (whole,) = save.iterdir()
    proc = subprocess.Popen(_study_cli(root, save), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    target = None
    while time.time() < deadline and target is None:
        # kill once the third job (fold 1, seed 0) has written a checkpoint, before it can finish
        hits = [p for p in save.glob("*/fold1-seed0/checkpoints/latest.pt") if whole not in p.parents]
        target = hits[0] if hits else None
        time.sleep(0.01)
    assert target is not None, "the study never reached its third job"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = target.parent.parent.parent
    state = json.loads((folder / "study.json").read_text())
    assert state["results"] is None and [j["status"] for j in state["jobs"]] == ["done", "done", "pending", "pending"]
    assert load_checkpoint(target).step < 150  # killed mid-job
    subprocess.run([sys.executable, "-m", "differentiable_market.study", "--resume", str(folder)], check=True,
                   capture_output=True)
    assert (folder / "study.json").read_text() == (whole / "study.json").read_text()


def _acceptance_study(tmp_path, write_ohlc_csvs, market, name):
    root = write_ohlc_csvs(market, tmp_path / name)
    cfg = ExperimentConfig(
        data=DataConfig(root=str(root)),
        train=TrainConfig(lookback=32, batch_windows=32, epochs=200, eval_interval=50, device="cpu",
                          dtype="float32", save_dir=str(tmp_path / f"{name}-studies")),
    )
    folder = run_study(cfg, StudySettings(folds=3, seeds=2), log=lambda *_: None)
    stats = json.loads((folder / "study.json").read_text())["results"]["statistics"]["vs_equal_weight"]
    return stats["excess_log_growth_per_year"], stats["spa"]["pvalue"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_study_finds_a_planted_edge_and_no_edge_in_a_random_walk(tmp_path, write_ohlc_csvs, seed):
    from differentiable_market.synthetic import planted_signal_market

    iv, p = _acceptance_study(tmp_path, write_ohlc_csvs, planted_signal_market(3000, 4, seed=seed), "planted")
    print(f"planted seed {seed}: excess/yr {iv['estimate']:+.4f} CI [{iv['low']:+.4f}, {iv['high']:+.4f}] "
          f"SPA p {p:.3f}")
    assert iv["low"] > 0 and p < 0.05
    iv, p = _acceptance_study(tmp_path, write_ohlc_csvs, random_walk_market(3000, 4, seed=seed), "walk")
    print(f"random walk seed {seed}: excess/yr {iv['estimate']:+.4f} CI [{iv['low']:+.4f}, {iv['high']:+.4f}] "
          f"SPA p {p:.3f}")
    assert iv["low"] < 0 < iv["high"] and p > 0.1


def test_worker_processes_give_the_study_of_one_process(tmp_path, write_ohlc_csvs):
    from differentiable_market.study.jobs import process_executor

    root = write_ohlc_csvs(random_walk_market(500, 3, seed=2))
    cfg = tiny_study_config(root, tmp_path / "studies")
    settings = StudySettings(folds=2, seeds=1, bootstrap_reps=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of 2 workers gets on this 2-core machine: the same reduction order
    try:
        local = run_study(cfg, settings, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    said: list[str] = []
    pooled = run_study(cfg, settings, executor=process_executor(2), log=said.append)
    a, b = (json.loads((f / "study.json").read_text()) for f in (local, pooled))
    # the workers' training steps reach the study's progress lines through a queue
    for job in ("fold0-seed0", "fold1-seed0"):
        assert [line.split(";")[0] for line in said if line.startswith(f"  job {job}: step")] == \
            [f"  job {job}: step {k}/4" for k in (1, 2, 3)]
    assert any("study 100% done" in line for line in said)
    if (os.cpu_count() or 1) // 2 == 1:
        assert a["jobs"] == b["jobs"] and a["results"] == b["results"]
    else:  # workers get more threads than the local run: the last bits may differ
        assert [j["status"] for j in b["jobs"]] == ["done", "done"]


def test_a_study_refuses_an_embargo_shorter_than_the_lookback(tmp_path, write_ohlc_csvs):
    from differentiable_market.errors import ConfigError

    cfg = tiny_study_config(tmp_path, tmp_path / "studies")
    cfg = ExperimentConfig(data=DataConfig(root=str(tmp_path), embargo_bars=8), policy=cfg.policy, train=cfg.train)
    with pytest.raises(ConfigError, match="--embargo-bars 8 is shorter than --lookback 16"):
        run_study(cfg, StudySettings(folds=2, seeds=1), log=lambda *_: None)


def test_resuming_a_study_with_training_flags_is_refused(tmp_path, capsys):
    from differentiable_market.study.run import main

    assert main(["--resume", str(tmp_path), "--lookback", "32"]) == 2
    assert "drop --lookback" in capsys.readouterr().err


def test_a_study_of_close_only_files_runs_with_close_fills_on_request_and_records_them(tmp_path, capsys,
                                                                                     write_ohlc_csvs):
    from differentiable_market.study.run import main

    market = random_walk_market(500, 3, seed=2)
    root = write_ohlc_csvs(market, columns={s: ("close",) for s in market.symbols})
    assert main(["--data-root", str(root), "--save-dir", str(tmp_path / "studies"), "--lookback", "16",
                 "--batch-windows", "4", "--rollout-groups", "2", "--epochs", "2", "--eval-interval", "2",
                 "--hidden-size", "8", "--architecture", "flat", "--action", "target", "--device", "cpu",
                 "--dtype", "float32", "--no-compile", "--folds", "2", "--seeds", "1", "--bootstrap-reps", "100",
                 "--execution", "close"]) == 0
    out = capsys.readouterr().out
    assert "execution close: 3 of 3 assets have no open price" in out
    (folder,) = list((tmp_path / "studies").iterdir())
    state = json.loads((folder / "study.json").read_text())
    assert state["config"]["env"]["execution"] == "close"
    assert state["execution_note"].startswith("execution close: 3 of 3 assets have no open price")
    assert state["results"]["verdict"].startswith("Out of sample (")
    assert "execution close" in (folder / "report.html").read_text()


def test_the_best_causal_baseline_is_chosen_among_every_baseline_run(tmp_path):
    from differentiable_market.study.report import report_html, study_results

    market = random_walk_market(500, 3, seed=4)
    folds = plan_folds(market.n_bars, 2, 2, 0.3, 60, 16, 16)
    members = _checkpoints(tmp_path, market, folds, [0])
    settings = StudySettings(folds=2, seeds=1, bootstrap_reps=100,
                             baselines="core,eg,pamr,min_variance,bcrp_hindsight")
    cfg = ExperimentConfig()
    res = study_results(market, folds, members, cfg, settings)
    strategies = res["strategies"]
    causal = {n: s for n, s in strategies.items() if s["kind"] == "baseline"}
    assert {"eg", "pamr", "min_variance", "olmar", "equal_weight"} <= set(causal)
    assert "bcrp_hindsight" not in causal and "best_single_hindsight" not in causal  # hindsight is never "best"
    best = res["statistics"]["best_causal_baseline"]
    assert best == max(causal, key=lambda n: causal[n]["log_growth"])
    assert res["statistics"]["vs_best_causal_baseline"]["benchmark"] == best
    assert {strategies[n]["family"] for n in ("eg", "pamr")} == {"olps"}
    assert strategies["min_variance"]["family"] == "risk" and strategies["bcrp_hindsight"]["family"] == "hindsight"
    assert strategies["ensemble"]["family"] == "policy"
    assert "--baselines core,eg,pamr,min_variance,bcrp_hindsight" in res["statistics"]["assumptions"][
        "best_causal_baseline"]
    from differentiable_market.config import config_to_dict

    page = report_html({"config": config_to_dict(cfg), "results": res})
    heads = [page.index(t) for t in ("Core baselines", "Online portfolio selection", "Risk-based portfolios",
                                     "Hindsight (not tradeable)")]
    assert heads == sorted(heads)


def test_the_baselines_are_recorded_in_the_settings_and_resume_keeps_them(tmp_path, capsys):
    import dataclasses

    from differentiable_market.config import config_from_dict
    from differentiable_market.errors import ConfigError
    from differentiable_market.study.run import main

    s = StudySettings(baselines="olps,risk")
    assert dataclasses.asdict(s)["baselines"] == "olps,risk"  # study.json's settings, read back by --resume
    assert config_from_dict(StudySettings, dataclasses.asdict(s)) == s
    assert StudySettings().baselines == "core"
    old = dataclasses.asdict(StudySettings())
    del old["baselines"]  # a study.json written before --baselines existed resumes with the core set
    assert config_from_dict(StudySettings, old).baselines == "core"
    with pytest.raises(ConfigError, match="--baselines: unknown name"):
        StudySettings(baselines="zoo")
    args = build_study_parser().parse_args(["--baselines", "all"])
    assert args.baselines == "all"
    assert main(["--resume", str(tmp_path), "--baselines", "all"]) == 2
    assert "drop --baselines all" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ union calendar


def _union_files(folder, n_bars=500, seed=6):
    """Four random walks written as files for a union calendar (max_fill_bars 3): S000 trades throughout, S001
    lists at bar 400, S002 prints its last bar at 430 (untradeable from bar 434, once that is known), S003 halts on
    bars 450..464 (untradeable on 454..464). Two folds at --oos-fraction 0.3 decide on bars 349..497."""
    keep = {"S001": lambda i: i >= 400, "S002": lambda i: i <= 430, "S003": lambda i: not 450 <= i < 465}
    return write_union_csvs(random_walk_market(n_bars, 4, seed=seed), folder, keep)


def _union_market(folder):
    from differentiable_market.data import load_market

    return load_market(DataConfig(root=str(folder), calendar="union"), min_bars=1)


@pytest.fixture(scope="module")
def union_study(tmp_path_factory):
    """(config, folder) of one finished 2-fold x 2-seed study with cash on the union calendar of ``_union_files``."""
    import dataclasses

    tmp = tmp_path_factory.mktemp("union_study")
    cfg = tiny_study_config(_union_files(tmp / "data"), tmp / "studies")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, calendar="union"),
                              env=dataclasses.replace(cfg.env, include_cash=True))
    return cfg, run_study(cfg, StudySettings(folds=2, seeds=2, bootstrap_reps=200), log=lambda *_: None)


def _union_paths(cfg, folder):
    """The study's stitched paths recomputed from its folder: (market, folds, paths, bars)."""
    from differentiable_market.study.plan import Fold

    state = json.loads((folder / "study.json").read_text())
    folds = [Fold(d["index"], tuple(d["train"]), tuple(d["validation"]), tuple(d["test"]), tuple(d["decisions"]))
             for d in state["plan"]]
    members = {f.index: [(s, load_checkpoint(folder / f"fold{f.index}-seed{s}" / "checkpoints" / "best.pt"))
                         for s in (0, 1)] for f in folds}
    market = _union_market(cfg.data.root)
    paths, bars = stitched_paths(market, folds, members, cfg.env.cost_rate, True, "open")
    return market, folds, paths, bars


def test_a_union_calendar_study_holds_only_tradeable_assets_and_sells_a_delisted_one(union_study):
    cfg, folder = union_study
    state = json.loads((folder / "study.json").read_text())
    market, folds, paths, bars = _union_paths(cfg, folder)
    res = state["results"]
    for name, p in paths.items():  # the study's figures are these paths'
        assert res["strategies"][name]["log_growth"] == pytest.approx(float(p.log_growth.sum()), abs=1e-12), name
    cols = np.concatenate([market.tradeable[bars], np.ones((bars.size, 1), dtype=bool)], axis=1)  # + cash
    assert (~cols).any(axis=0).tolist() == [False, True, True, True, False]  # a listing, a delisting, a halt
    assert {"seed0", "seed1", "ensemble", "equal_weight", "buy_and_hold", "olmar", "hold:S002"} <= set(paths)
    for name, p in paths.items():
        assert (p.weights[~cols] == 0).all(), name
        np.testing.assert_allclose(p.weights.sum(axis=1), 1.0, rtol=0, atol=1e-12, err_msg=name)
        assert np.isfinite(p.log_growth).all(), name
    # S002's delisting is known at bar 434: the ensemble held it on the bar before and sells it then, at its last
    # close (its growth after the last print is 1), paying the fee on that sale
    gone = int(np.flatnonzero(bars == 434)[0])
    ens = paths["ensemble"]
    assert ens.weights[gone - 1, 2] > 0.05 and ens.weights[gone, 2] == 0.0
    assert ens.cost[gone] >= cfg.env.cost_rate * ens.weights[gone - 1, 2]
    assert market.close[430:, 2].min() == market.close[430:, 2].max()  # the last close, held flat
    # the late listing is bought once it is tradeable
    assert ens.weights[np.flatnonzero(bars == 400)[0], 1] > 0.05
    assert res["out_of_sample"]["universe"].startswith("Union calendar over the scored bars: 1 of 4 assets "
                                                       "tradeable throughout")
    assert "union calendar" in res["statistics"]["assumptions"]["calendar"]
    assert html.escape(res["out_of_sample"]["universe"]) in (folder / "report.html").read_text()


def test_union_equal_weight_in_the_study_is_share_counting_and_the_backtesters(union_study):
    from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest

    cfg, folder = union_study
    market, folds, paths, bars = _union_paths(cfg, folder)
    # Share counting: equal over the assets tradeable at each decision, open fills, 10 bps, from cash.
    mask, cost = market.tradeable, cfg.env.cost_rate
    shares, log_growth = None, []
    for t in bars:
        fill, mark = market.open[t + 1], market.open[t + 2]
        target = mask[t] / mask[t].sum()
        value = 1.0 if shares is None else float((shares * fill).sum())
        held = np.zeros_like(target) if shares is None else shares * fill / value
        after_fee = value * (1 - cost * np.abs(target - held).sum())
        shares = target * after_fee / fill
        log_growth.append(np.log((shares * mark).sum() / value))
    ew = paths["equal_weight"].log_growth
    np.testing.assert_allclose(ew, log_growth, rtol=0, atol=1e-12)
    # The backtester on fold 1's checkpoint scores fold 1's block from cash: the same bars, the same growth, so the
    # same per-bar log growth after the entry bar (a constant mix's trade depends only on the bar before).
    d0, d1 = folds[1].decisions
    r = run_backtest(BacktestOptions(checkpoint=str(folder / "fold1-seed0"), trades=False), log=lambda *_: None)
    np.testing.assert_array_equal(r.plan.decision_bars[0], np.arange(d0, d1))
    np.testing.assert_allclose(r.strategies["equal_weight"].log_growth[0][1:], ew[d0 - bars[0] + 1:d1 - bars[0]],
                               rtol=0, atol=1e-15)


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_placeholder_prices_outside_an_assets_life_change_no_stitched_policy_path(tmp_path, architecture):
    market = _union_market(_union_files(tmp_path / "data"))
    other = replace_unread_prices(market, max_fill=3)
    assert np.abs(other.close - market.close).max() > 1  # S001 before bar 400, S002 after bar 435
    folds = plan_folds(market.n_bars, 2, 2, 0.3, 75, 16, 16)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    paths, bars = stitched_paths(market, folds, _checkpoints(tmp_path / "a", market, folds, [0, 1], architecture),
                                 1e-3, False, "open")
    again, _ = stitched_paths(other, folds, _checkpoints(tmp_path / "b", other, folds, [0, 1], architecture),
                              1e-3, False, "open")
    assert (~market.tradeable[bars]).any(axis=0).tolist() == [False, True, True, True]
    # every strategy, the baselines with trailing signals (OLMAR, inverse volatility) included: their closes are the
    # tradeable ones, held flat outside each asset's life (``signal_closes``)
    assert set(paths) == set(again)
    assert {"seed0", "seed1", "ensemble", "equal_weight", "buy_and_hold", "olmar", "inverse_vol"} <= set(paths)
    for name in paths:
        np.testing.assert_array_equal(paths[name].log_growth, again[name].log_growth, err_msg=name)
        np.testing.assert_array_equal(paths[name].weights, again[name].weights, err_msg=name)


def test_a_union_search_trials_stitched_path_is_the_seed_path_of_the_same_checkpoints(tmp_path):
    """The SPA test's stitched trial paths (``single_policy_log_growth``) trade the union calendar as the seeds do."""
    from differentiable_market.study.oos import single_policy_log_growth

    market = _union_market(_union_files(tmp_path / "data"))
    folds = plan_folds(market.n_bars, 2, 2, 0.3, 75, 16, 16)
    members = _checkpoints(tmp_path, market, folds, [3])
    paths, bars = stitched_paths(market, folds, members, 1e-3, False, "open")
    trial = single_policy_log_growth(market, folds, [{k: m[0][1] for k, m in members.items()}], 1e-3, False, "open")
    assert trial.shape == (bars.size, 1) and (~market.tradeable[bars]).any()
    np.testing.assert_array_equal(trial[:, 0], paths["seed3"].log_growth)
