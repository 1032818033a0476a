import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from differentiable_market.checkpoint import build_policy, load_checkpoint
from differentiable_market.config import PolicyConfig
from differentiable_market.runlog import create_run_dir
from differentiable_market.train import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--lookback", "32", "--batch-windows", "4", "--rollout-groups", "2", "--hidden-size", "8",
        "--no-progress", "--architecture", "flat", "--action", "target"]


def _run_dirs(save_dir: Path) -> list[Path]:
    return sorted(p for p in save_dir.iterdir() if p.is_dir())


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_on_the_bundled_sample_leaves_a_complete_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no trainingdata/ here: falls back to the bundled sample
    assert main(TINY + ["--epochs", "4", "--eval-interval", "2", "--log-interval", "1", "--save-dir", "runs"]) == 0
    out = capsys.readouterr().out
    assert "bundled daily sample" in out
    (run_dir,) = _run_dirs(tmp_path / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["symbols"] == ["AAPL", "GOOG", "IBM", "MSFT"]
    assert config["data"]["n_bars"] == 2148 and len(config["data"]["ohlc_sha256"]) == 64
    assert config["config"]["train"]["lookback"] == 32 and config["config"]["env"]["cost_bps"] == 10.0
    assert config["environment"]["torch_version"] == str(torch.__version__)
    rows = _rows(run_dir)
    assert rows[0]["type"] == "header"
    train = [r for r in rows if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for key in ("loss", "reward_mean", "reward_std", "kl", "entropy", "peak_mem_gb", "microbatch", "windows",
                "env_steps_per_s"):
        assert all(isinstance(r[key], (int, float)) for r in train), key
    assert all(r["env_steps_per_s"] > 0 and r["windows"] == 4 for r in train)
    val = [r for r in rows if r["type"] == "validation"]
    assert [r["step"] for r in val] == [0, 2, 4]  # step 0: the untrained policy, best.pt until a trained one earns it
    for side in ("policy", "equal_weight"):
        assert {"annualised_return", "sharpe", "max_drawdown", "turnover"} <= set(val[0][side])
    assert val[0]["bars"] == val[0]["bars"] and val[0]["bars"] > 100
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert latest.step == 4 and latest.training_state is not None and best.training_state is None
    # the gate's last decision is what best.pt holds; each trained look is scored against equal weight and the
    # untrained policy (step 0), and counted
    last = val[-1]["gate"]
    assert last["looks"] == 2 and [r["gate"]["looks"] for r in val] == [0, 1, 2]
    assert best.step == last["chosen_step"] and best.is_untrained == last["chosen_is_untrained"]
    assert val[0]["excess_vs_untrained"] is None and val[1]["excess_vs_untrained"]["t_stat"] is not None
    for r in val[1:]:
        evidence = min(r["excess_vs_equal_weight"]["t_stat"], r["excess_vs_untrained"]["t_stat"])
        assert r["gate"]["evidence"] in (None, pytest.approx(evidence))
        assert r["eligible"] == (r["gate"]["evidence"] is not None and evidence >= r["gate"]["critical_t"])
    assert build_policy(best).n_out == 4


def test_run_folders_are_unique_within_one_second(tmp_path):
    dirs = {create_run_dir(tmp_path) for _ in range(3)}
    assert len(dirs) == 3


def test_unwritable_save_dir_is_reported_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(TINY + ["--epochs", "1", "--save-dir", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert "Cannot write to save directory" in err and "Traceback" not in err


def _make_read_only(folder: Path) -> bool:
    """Read-only for this process: chmod for a normal user; root ignores modes, so use the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def test_read_only_save_dir_is_reported_before_training(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _make_read_only(ro):
        pytest.skip("cannot make a read-only folder here")
    try:
        assert main(TINY + ["--epochs", "1", "--save-dir", str(ro)]) == 2
        err = capsys.readouterr().err
        assert f"Cannot write to save directory {ro}" in err and "Traceback" not in err
        assert "Run folder" not in capsys.readouterr().out
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(ro)], check=False)
        ro.chmod(0o700)


def test_repeated_non_finite_steps_stop_the_run_with_a_clear_message(tmp_path, capsys, monkeypatch):
    import differentiable_market.training_run as training_run

    real_prepare = training_run.prepare_market

    def poisoned(*args, **kwargs):
        tensors, spec = real_prepare(*args, **kwargs)
        tensors.features.fill_(float("nan"))
        return tensors, spec

    monkeypatch.setattr(training_run, "prepare_market", poisoned)
    assert main(TINY + ["--epochs", "50", "--eval-interval", "25", "--save-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "10 optimizer steps in a row had a non-finite loss or gradient (step 10)" in err
    assert "--lr" in err and "Traceback" not in err
    (run_dir,) = _run_dirs(tmp_path)
    assert not (run_dir / "checkpoints" / "latest.pt").exists()  # nothing non-finite was saved


def test_user_errors_exit_2_with_a_message_not_a_traceback(tmp_path, capsys):
    assert main(TINY + ["--data-root", str(tmp_path / "nope"), "--save-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
    assert main(TINY + ["--microbatch-windows", "3", "--save-dir", str(tmp_path)]) == 2
    assert "microbatch_windows" in capsys.readouterr().err


def test_help_explains_every_flag_with_units():
    text = build_parser().format_help_all()
    for flag in ("--data-root", "--data-glob", "--lookback", "--batch-windows", "--rollout-groups", "--epochs",
                 "--device", "--dtype", "--no-muon", "--compile", "--out-dir", "--microbatch-windows",
                 "--gradient-checkpointing", "--risk-aversion", "--drawdown-lambda", "--include-cash", "--cost-bps",
                 "--seed", "--eval-interval", "--resume", "--init-checkpoint"):
        assert flag in text, flag
    assert "basis points" in text and "bars per training window" in text


def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys):
    assert main(TINY + ["--epochs", "2", "--eval-interval", "2", "--save-dir", str(tmp_path)]) == 0
    (run_dir,) = _run_dirs(tmp_path)
    assert main(["--resume", str(run_dir), "--cost-bps", "5"]) == 2
    assert "drop --cost-bps" in capsys.readouterr().err
    assert main(["--resume", str(run_dir / "checkpoints" / "best.pt")]) == 2
    assert "no training state" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_final_state(tmp_path):
    args = TINY + ["--epochs", "60", "--eval-interval", "3", "--log-interval", "1", "--seed", "7"]
    # Reference: one uninterrupted run.
    assert main(args + ["--save-dir", str(tmp_path / "ref")]) == 0
    (ref_dir,) = _run_dirs(tmp_path / "ref")
    # Interrupted run: SIGKILL once the first checkpoint exists, then resume.
    save = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "differentiable_market.train", *args, "--save-dir", str(save)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 120
    while time.time() < deadline and not list(save.glob("*/checkpoints/latest.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = _run_dirs(save)
    killed_at = load_checkpoint(run_dir / "checkpoints" / "latest.pt").step
    assert 3 <= killed_at < 60, "the kill should land part-way"
    assert main(["--resume", str(run_dir), "--no-progress"]) == 0
    a = load_checkpoint(ref_dir / "checkpoints" / "latest.pt")
    b = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert a.step == b.step == 60
    for key, value in a.policy_state.items():
        assert torch.equal(value, b.policy_state[key]), key
    assert a.best_score == b.best_score
    # metrics.jsonl: every step logged exactly once, with the same values as the uninterrupted run
    ref_train = [r for r in _rows(ref_dir) if r["type"] == "train"]
    got_train = [r for r in _rows(run_dir) if r["type"] == "train"]
    assert [r["step"] for r in got_train] == list(range(1, 61))
    assert [r["loss"] for r in got_train] == [r["loss"] for r in ref_train]


def test_a_cross_run_with_universe_sample_resumes_to_the_same_state(tmp_path):
    args = TINY + ["--architecture", "cross", "--asset-hidden", "8", "--asset-head-hidden", "4", "--universe-sample",
                   "2", "--eval-interval", "3", "--log-interval", "1", "--seed", "3"]
    assert main(args + ["--epochs", "6", "--save-dir", str(tmp_path / "ref")]) == 0
    assert main(args + ["--epochs", "3", "--save-dir", str(tmp_path / "cut")]) == 0
    (cut,) = _run_dirs(tmp_path / "cut")
    assert main(["--resume", str(cut), "--epochs", "6", "--no-progress"]) == 0
    (ref,) = _run_dirs(tmp_path / "ref")
    a, b = load_checkpoint(ref / "checkpoints" / "latest.pt"), load_checkpoint(cut / "checkpoints" / "latest.pt")
    assert a.step == b.step == 6
    for key, value in a.policy_state.items():
        assert torch.equal(value, b.policy_state[key]), key


def test_init_from_a_cross_checkpoint_on_other_symbols_names_the_flags_to_pass(tmp_path, capsys, synthetic_ohlc,
                                                                                write_ohlc_csvs):
    cross = ["--architecture", "cross", "--asset-hidden", "8", "--asset-head-hidden", "4"]
    assert main(TINY + cross + ["--epochs", "2", "--eval-interval", "2", "--save-dir", str(tmp_path / "a")]) == 0
    (first,) = _run_dirs(tmp_path / "a")
    other = write_ohlc_csvs(synthetic_ohlc(700, 3, seed=5), tmp_path / "other")
    assert main(TINY + ["--data-root", str(other), "--init-checkpoint", str(first), "--epochs", "0",
                        "--save-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"--architecture cross --asset-hidden 8 --asset-head-hidden 4 --mixing {PolicyConfig().mixing}" in err


def test_resume_or_init_with_different_data_names_the_difference(tmp_path, capsys, synthetic_ohlc, write_ohlc_csvs):
    data = write_ohlc_csvs(synthetic_ohlc(700, 3, seed=5), tmp_path / "data")
    assert main(TINY + ["--epochs", "2", "--eval-interval", "2", "--data-root", str(data),
                        "--save-dir", str(tmp_path / "runs")]) == 0
    (run_dir,) = _run_dirs(tmp_path / "runs")
    (data / "S02.csv").unlink()
    assert main(["--resume", str(run_dir), "--data-root", str(data)]) == 2
    err = capsys.readouterr().err
    assert "missing from the data: ['S02']" in err and "Traceback" not in err
    # same symbols, different prices: the fingerprint differs
    write_ohlc_csvs(synthetic_ohlc(700, 3, seed=6), data)
    assert main(["--resume", str(run_dir), "--data-root", str(data)]) == 2
    assert "ohlc_sha256" in capsys.readouterr().err
    # a policy for 3 assets cannot start a run on 2
    (data / "S02.csv").unlink()
    assert main(TINY + ["--init-checkpoint", str(run_dir), "--data-root", str(data),
                        "--save-dir", str(tmp_path / "runs")]) == 2
    assert "2 vs 3 assets" in capsys.readouterr().err


def test_full_disk_is_reported_before_training(tmp_path, capsys):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(tiny)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small filesystem here")
    try:
        assert main(TINY + ["--epochs", "1", "--save-dir", str(tiny / "runs")]) == 2
        err = capsys.readouterr().err
        assert "Cannot write to save directory" in err and "No space left on device" in err
        assert list((tiny / "runs").iterdir()) == []  # the probe file is removed again
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    import differentiable_market.recorder as recorder

    real_save, calls = recorder.save_checkpoint, []

    def failing_save(path, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # step 0 writes best.pt, step 2 latest.pt; the next write finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, **kwargs)

    monkeypatch.setattr(recorder, "save_checkpoint", failing_save)
    assert main(TINY + ["--epochs", "6", "--eval-interval", "2", "--save-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Could not write" in err and "No space left on device" in err and "--resume" in err
    assert "Traceback" not in err
    (run_dir,) = _run_dirs(tmp_path)
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt").step == 2


def test_init_checkpoint_that_saw_this_runs_validation_bars_is_refused(tmp_path, capsys):
    assert main(TINY + ["--epochs", "2", "--eval-interval", "2", "--save-dir", str(tmp_path / "a")]) == 0
    (first,) = _run_dirs(tmp_path / "a")
    trained_through = load_checkpoint(first).trained_through
    assert trained_through is not None and trained_through.startswith("20")
    # larger validation/test splits move this run's training end before the bars the checkpoint was trained on
    assert main(TINY + ["--init-checkpoint", str(first), "--val-fraction", "0.3", "--test-fraction", "0.3",
                        "--epochs", "0", "--save-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"trained on bars up to {trained_through}" in err and "validation data" in err
    # the same splits are fine, and the new run starts from those weights
    assert main(TINY + ["--init-checkpoint", str(first), "--epochs", "0", "--save-dir", str(tmp_path / "c")]) == 0
    (second,) = _run_dirs(tmp_path / "c")
    a = load_checkpoint(first)  # a run folder starts from its best.pt
    b = load_checkpoint(second / "checkpoints" / "latest.pt")
    assert all(torch.equal(a.policy_state[k], b.policy_state[k]) for k in a.policy_state)
    # the started-from policy is a candidate, not the benchmark: without evidence best.pt is a fresh untrained
    # policy, the one a run from scratch with this seed starts from (the first run's step 0)
    best, untrained = load_checkpoint(second), load_checkpoint(first)
    rows = [r for r in _rows(second) if r["type"] == "validation"]
    assert rows[0]["gate"]["looks"] == 1 and rows[0]["excess_vs_untrained"] is not None
    if best.is_untrained:
        assert all(torch.equal(untrained.policy_state[k], best.policy_state[k]) for k in best.policy_state)


def test_init_checkpoint_of_another_policy_size_is_a_clear_error(tmp_path, capsys):
    assert main(TINY + ["--epochs", "2", "--eval-interval", "2", "--save-dir", str(tmp_path)]) == 0
    (first,) = _run_dirs(tmp_path)
    args = TINY + ["--hidden-size", "16"]  # the last value given wins
    assert main(args + ["--init-checkpoint", str(first), "--epochs", "0", "--save-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "policy of another shape (flat architecture, encoder mingru, hidden size 8" in err and "Traceback" not in err


def test_the_training_universe_is_decided_on_the_training_split_only(tmp_path, capsys):
    """5 MSFT rows missing in December 2012 (the test split) used to remove MSFT from training too."""
    import pandas as pd

    from differentiable_market.config import DataConfig, ExperimentConfig, TrainConfig
    from differentiable_market.data import bundled_sample_dir
    from differentiable_market.splits import make_splits
    from differentiable_market.train import load_data

    for f in bundled_sample_dir().glob("*.csv"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    frame = pd.read_csv(tmp_path / "MSFT.csv", dtype=str)
    frame.drop(index=frame.index[frame["timestamp"].str.startswith("2012-12")][:5]).to_csv(tmp_path / "MSFT.csv",
                                                                                          index=False)
    cfg = ExperimentConfig(data=DataConfig(root=str(tmp_path)), train=TrainConfig(lookback=32))
    market = load_data(cfg)
    assert market.symbols == ("AAPL", "GOOG", "IBM", "MSFT")
    assert market.universe_cutoff == make_splits(market.n_bars, cfg.data, 32).train[1]
    assert "late gap in MSFT: 5 consecutive bars missing from 2012-12-03 to 2012-12-07" in capsys.readouterr().out
    # A run whose training split reaches past the gap decides without it: MSFT is dropped, by name.
    late = ExperimentConfig(data=DataConfig(root=str(tmp_path), split_bars=(0, 2100, 2110, 2120, 2130, 2143)),
                            train=TrainConfig(lookback=8))
    assert load_data(late).symbols == ("AAPL", "GOOG", "IBM")


def test_a_close_only_folder_trains_with_open_fills_explained_and_close_fills_on_request_and_backtests(
        tmp_path, capsys, synthetic_ohlc, write_ohlc_csvs):
    from differentiable_market.marketsimulator.run import main as backtest_main

    market = synthetic_ohlc(700, 3, seed=21)
    data = write_ohlc_csvs(market, tmp_path / "data", columns={s: ("close",) for s in market.symbols})
    # Without --execution the default stays open, and the run says what that means for files without an open.
    assert main(TINY + ["--epochs", "0", "--data-root", str(data), "--save-dir", str(tmp_path / "runs0")]) == 0
    out = capsys.readouterr().out
    advice = ("execution: open, the default (3 file(s) have no open column: S00, S01, S02; their open is the close, "
              "so they fill at the next bar's close, one bar after the decision). Pass --execution close")
    assert advice in out
    assert "execution open: 3 of 3 assets have no open price" in out
    (run_dir,) = _run_dirs(tmp_path / "runs0")
    header = json.loads((run_dir / "config.json").read_text())
    assert header["config"]["env"]["execution"] == "open" and header["execution"]["choice"].startswith(advice)
    # The close-only convention on request.
    assert main(TINY + ["--epochs", "2", "--eval-interval", "2", "--data-root", str(data), "--execution", "close",
                        "--save-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "execution: open, the default" not in out
    assert "execution close: 3 of 3 assets have no open price (['S00', 'S01', 'S02'])" in out
    assert "data: S00.csv: close only (no open, high, low)" in out
    (run_dir,) = _run_dirs(tmp_path / "runs")
    header = json.loads((run_dir / "config.json").read_text())
    assert header["config"]["env"]["execution"] == "close"
    assert header["execution"]["used"] == "close" and header["execution"]["choice"] is None
    assert header["execution"]["note"].startswith("execution close: 3 of 3 assets")
    assert header["feature_spec"]["missing_prices"] == {s: ["open", "high", "low"] for s in market.symbols}
    assert header["data"]["missing_prices"] == {s: ["open", "high", "low"] for s in market.symbols}
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert ckpt.config.env.execution == "close"
    assert dict(ckpt.feature_spec.missing_prices) == {s: ("open", "high", "low") for s in market.symbols}
    reports = tmp_path / "reports"
    assert backtest_main(["--checkpoint", str(run_dir), "--data-root", str(data), "--no-trades",
                          "--report-dir", str(reports)]) == 0
    (report_dir,) = list(reports.iterdir())
    report = json.loads((report_dir / "report.json").read_text())
    assert report["settings"]["execution"] == "close"
    assert any(n.startswith("execution close: 3 of 3 assets have no open price") for n in report["notes"])
    assert not any("lack other price columns" in n for n in report["notes"])
    # The same checkpoint on full OHLC files: its range, body and gap features are no longer 0, and it says so.
    write_ohlc_csvs(market, tmp_path / "ohlc")
    assert backtest_main(["--checkpoint", str(run_dir), "--data-root", str(tmp_path / "ohlc"), "--no-trades",
                          "--report-dir", str(tmp_path / "reports2")]) == 0
    (report_dir,) = list((tmp_path / "reports2").iterdir())
    notes = json.loads((report_dir / "report.json").read_text())["notes"]
    assert any(n.startswith("Warning: 3 asset(s) lack other price columns than in the checkpoint's training data "
                            "(S00: lacked ['open', 'high', 'low'] in training, lacks nothing here") for n in notes)


def test_an_explicit_execution_open_is_kept_on_a_mixed_folder_and_says_when_fills_happen(
        tmp_path, capsys, synthetic_ohlc, write_ohlc_csvs):
    market = synthetic_ohlc(700, 3, seed=22)
    data = write_ohlc_csvs(market, tmp_path / "data", columns={"S01": ("close", "volume")})
    assert main(TINY + ["--epochs", "0", "--data-root", str(data), "--execution", "open",
                        "--save-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "execution: open, the default" not in out  # given explicitly: no advice, only what it means
    assert ("execution open: 1 of 3 assets have no open price (['S01']), so their open is the close: a decision made "
            "after bar t closes fills them at the close of bar t+1, one bar after the decision (the other assets "
            "fill at the open of bar t+1)") in out
    (run_dir,) = _run_dirs(tmp_path / "runs")
    header = json.loads((run_dir / "config.json").read_text())
    assert header["config"]["env"]["execution"] == "open" and header["execution"]["choice"] is None
    assert header["feature_spec"]["missing_prices"] == {"S01": ["open", "high", "low"]}
    # Without --execution the mixed folder keeps open fills and is told what they mean; full OHLC folders silently.
    assert main(TINY + ["--epochs", "0", "--data-root", str(data), "--save-dir", str(tmp_path / "runs2")]) == 0
    assert "execution: open, the default (1 file(s) have no open column: S01;" in capsys.readouterr().out
    full = write_ohlc_csvs(market, tmp_path / "full")
    assert main(TINY + ["--epochs", "0", "--data-root", str(full), "--save-dir", str(tmp_path / "runs3")]) == 0
    out = capsys.readouterr().out
    assert "execution: close" not in out and "no open price" not in out
    (run_dir,) = _run_dirs(tmp_path / "runs3")
    header = json.loads((run_dir / "config.json").read_text())
    assert header["config"]["env"]["execution"] == "open" and header["execution"]["note"] is None


def test_the_calendar_flags_reach_the_data_config():
    from differentiable_market.flags import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--calendar", "union", "--min-listed", "2"]))
    assert cfg.data.calendar == "union" and cfg.data.min_listed == 2


def test_select_min_t_takes_a_number_or_off():
    from differentiable_market.flags import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args([])).train.select_min_t == 2.0
    assert config_from_args(parser.parse_args(["--select-min-t", "1.5"])).train.select_min_t == 1.5
    assert config_from_args(parser.parse_args(["--select-min-t", "off"])).train.select_min_t is None
    assert config_from_args(parser.parse_args(["--no-compile"])).train.compile == "off"  # 'off' of another flag
    with pytest.raises(SystemExit):
        parser.parse_args(["--select-min-t", "high"])


@pytest.mark.parametrize("gate", [["--select-min-t", "2"], ["--select-min-t", "off"]])
def test_a_run_that_trains_nothing_keeps_the_untrained_policy_and_says_so_where_it_is_used(tmp_path, gate):
    from differentiable_market.checkpoint import untrained_notes

    assert main(TINY + ["--epochs", "0", "--save-dir", str(tmp_path), "--no-progress"] + gate) == 0
    (run_dir,) = _run_dirs(tmp_path)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best.step == 0 and (run_dir / "checkpoints" / "latest.pt").exists()
    notes = untrained_notes(best)
    if gate[1] == "off":  # no gate: nothing to explain
        assert notes == []
    else:
        assert len(notes) == 1 and "is the untrained policy" in notes[0] and "--select-min-t" in notes[0]


def test_patience_stops_a_run_without_progress_and_a_resumed_run_stays_stopped(tmp_path, capsys, synthetic_ohlc,
                                                                                 write_ohlc_csvs):
    data = write_ohlc_csvs(synthetic_ohlc(700, 3, seed=5), tmp_path / "data")  # a random walk: nothing to learn
    args = TINY + ["--epochs", "40", "--eval-interval", "2", "--patience", "2", "--lr", "0.02", "--data-root",
                   str(data), "--save-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    (run_dir,) = _run_dirs(tmp_path / "runs")
    rows = _rows(run_dir)
    val = [r for r in rows if r["type"] == "validation"]
    stopped = [r for r in rows if r["type"] == "stopped"]
    # the stopping rule, replayed on the recorded objectives: the first step with 2 evaluations in a row below the best
    best, stale, expected = None, 0, None
    for r in val:
        if best is None or r["score"] > best:
            best, stale = r["score"], 0
        else:
            stale += 1
        if stale >= 2:
            expected = r["step"]
            break
    assert expected is not None, "a tiny run on the sample should stall within 40 steps"
    assert [r["step"] for r in stopped] == [expected] and val[-1]["step"] == expected
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt").step == expected
    assert main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert "stopped early at step" in capsys.readouterr().out
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt").step == expected
