import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from differentiable_market.checkpoint import load_checkpoint
from differentiable_market.config import DataConfig, ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.data import bundled_sample_dir
from differentiable_market.errors import CheckpointError, ConfigError
from differentiable_market.marketsimulator import run as cli
from differentiable_market.marketsimulator.backtester import (
    BacktestOptions,
    baseline_weights,
    plan_windows,
    run_backtest,
)
from differentiable_market.marketsimulator.charts import external_references
from differentiable_market.marketsimulator.report import new_report_dir, summary_table, write_report
from differentiable_market.metrics import METRICS
from differentiable_market.tearsheet import TEARSHEET_METRICS

BASELINES = {"equal_weight", "buy_and_hold", "olmar", "inverse_vol", "best_single_hindsight",
             "hold:AAPL", "hold:GOOG", "hold:IBM", "hold:MSFT"}


def test_plan_windows_scores_only_bars_whose_prices_lie_in_the_split():
    plan = plan_windows("test", (1000, 1320), horizon=2, window_length=100, stride=50)
    assert plan.scorable == (1000, 1318)  # decision t earns O[t+2]/O[t+1]: t + 2 <= 1319
    starts = plan.decision_bars[:, 0].tolist()
    assert starts == [1000, 1050, 1100, 1150, 1200, 1218]  # the last one is aligned to the split's end
    assert plan.decision_bars[-1, -1] == 1317
    assert (np.diff(plan.decision_bars, axis=1) == 1).all()
    assert plan.chain() == [0, 2, 4]
    assert plan.overlapping and plan.stride == 50
    assert any("final window" in n for n in plan.notes)
    assert any("overlap" in n and "[0, 2, 4]" in n for n in plan.notes)
    exact = plan_windows("test", (0, 201), horizon=1, window_length=100, stride=100)
    assert exact.decision_bars[:, 0].tolist() == [0, 100] and not exact.notes and not exact.overlapping


def test_plan_windows_default_is_the_whole_split_and_a_window_length_alone_does_not_overlap():
    whole = plan_windows("test", (1000, 1320), horizon=2)
    assert whole.decision_bars.shape == (1, 318) and whole.decision_bars[0, 0] == 1000
    assert whole.decision_bars[0, -1] == 1317 and not whole.overlapping and whole.stride is None
    assert not whole.notes and whole.chain() == [0]
    tiled = plan_windows("test", (1000, 1402), horizon=2, window_length=100)
    assert tiled.decision_bars[:, 0].tolist() == [1000, 1100, 1200, 1300] and not tiled.overlapping
    assert tiled.chain() == [0, 1, 2, 3]
    # 318 bars in windows of 100: the end-aligned window scoring the last 18 bars overlaps, and says so.
    tail = plan_windows("test", (1000, 1320), horizon=2, window_length=100)
    assert tail.decision_bars[:, 0].tolist() == [1000, 1100, 1200, 1218]
    assert tail.overlapping and tail.chain() == [0, 1, 2] and tail.stride == 100
    with pytest.raises(ConfigError, match="--stride"):
        BacktestOptions(checkpoint="x", stride=10)
    assert BacktestOptions(checkpoint="x").window_length is None


def test_plan_windows_short_split_is_one_window():
    plan = plan_windows("validation", (10, 60), horizon=2, window_length=256, stride=64)
    assert plan.decision_bars.shape == (1, 48)
    assert plan.decision_bars[0, 0] == 10 and plan.decision_bars[0, -1] == 57
    assert "only 48" in plan.notes[0]


def test_new_report_dir_never_reuses_a_folder(tmp_path):
    made = {new_report_dir(tmp_path) for _ in range(3)}
    assert len(made) == 3 and all(p.is_dir() and p.parent == tmp_path for p in made)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint from a short training run on the bundled sample."""
    from differentiable_market.train import run_training

    save = tmp_path_factory.mktemp("runs")
    cfg = ExperimentConfig(
        data=DataConfig(root=str(bundled_sample_dir())),
        policy=PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8),
        # float32: bf16 autocast on CPU costs seconds of one-time kernel set-up, more than this whole run.
        train=TrainConfig(lookback=32, batch_windows=2, rollout_groups=2, epochs=1, eval_interval=1, log_interval=1,
                          select_min_t=None,
                          device="cpu", dtype="float32", compile="off", save_dir=str(save)),
    )
    run_dir = run_training(cfg, progress=False, argv=[])
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def backtest(checkpoint, tmp_path_factory):
    result = run_backtest(BacktestOptions(checkpoint=str(checkpoint)), log=lambda *_: None)
    out = write_report(result, tmp_path_factory.mktemp("evals"))
    return result, out


def _independent_equal_weight(market, bars, cost_rate):
    """Loop over bars: start in cash, rebalance to 1/A at the next open, hold to the open after."""
    n = market.n_assets
    out = []
    for window in bars:
        wealth, held = 1.0, np.zeros(n)
        for t in window:
            g = market.open[t + 2] / market.open[t + 1]
            target = np.full(n, 1.0 / n)
            wealth *= 1 - cost_rate * np.abs(target - held).sum()
            wealth *= target @ g
            held = target * g / (target @ g)
        out.append(wealth - 1)
    return np.array(out)


def test_report_files_are_complete_and_consistent(backtest, checkpoint, sample_market):
    result, out = backtest
    names = sorted(p.name for p in out.iterdir())
    assert names == ["equity.png", "report.html", "report.json", "returns.csv", "trades.jsonl", "weights.png",
                     "windows.json"]

    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert report["split"]["name"] == "test"
    assert report["data"]["fingerprint"]["ohlc_sha256"] == sample_market.fingerprint()["ohlc_sha256"]
    assert report["data"]["matches_checkpoint"] is True
    assert report["settings"]["cost_bps"] == 10.0 and report["overrides"] == {}
    assert set(report["strategies"]) == BASELINES | {"policy"}
    assert set(report["policy_beats"]) == BASELINES
    for s in report["strategies"].values():
        assert set(s["mean"]) == set(METRICS) and set(s["median"]) == set(METRICS)
    assert report["strategies"]["best_single_hindsight"]["kind"] == "hindsight"
    assert 240 < report["data"]["bars_per_year"] < 260  # US trading days

    windows = json.loads((out / "windows.json").read_text())["windows"]
    n_windows = report["split"]["n_windows"]
    # By default the whole split is one path: every scorable decision bar, in one window.
    assert len(windows) == n_windows == 1 and report["split"]["overlapping"] is False
    start, stop = report["split"]["scorable_decision_bars"]
    assert report["split"]["window_length"] == stop - start == result.plan.length
    for name, s in report["strategies"].items():
        per_window = [w["metrics"][name]["total_return"] for w in windows]
        assert s["mean"]["total_return"] == pytest.approx(np.mean(per_window), rel=1e-12)
    beats = sum(w["metrics"]["policy"]["total_return"] > w["metrics"]["equal_weight"]["total_return"]
                for w in windows)
    assert report["policy_beats"]["equal_weight"] == {"windows": beats, "of": n_windows}

    # Equal weight against an independent loop over the raw open prices of the same windows.
    expected = _independent_equal_weight(sample_market, result.plan.decision_bars, 1e-3)
    got = [w["metrics"]["equal_weight"]["total_return"] for w in windows]
    np.testing.assert_allclose(got, expected, rtol=1e-10)

    rows = [json.loads(line) for line in (out / "trades.jsonl").read_text().splitlines()]
    assert len(rows) == n_windows * report["split"]["window_length"]
    for k in range(n_windows):
        mine = [r for r in rows if r["window"] == k]
        assert [r["step"] for r in mine] == list(range(len(mine)))
        lg = np.array([r["log_growth"] for r in mine])
        np.testing.assert_allclose([r["wealth"] for r in mine], np.exp(np.cumsum(lg)), rtol=1e-12)
        assert mine[-1]["wealth"] - 1 == pytest.approx(windows[k]["metrics"]["policy"]["total_return"], rel=1e-9)
        assert mine[0]["timestamp"] == windows[k]["first_decision"]
    for r in rows:
        assert set(r["weights"]) == {"AAPL", "GOOG", "IBM", "MSFT"}
        assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-12)
        assert min(r["weights"].values()) >= 0
        assert r["fee"] == pytest.approx(1e-3 * r["turnover"], rel=1e-12, abs=1e-18)
    assert rows[0]["turnover"] == pytest.approx(1.0)  # the first trade buys in from cash

    for png in ("equity.png", "weights.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert external_references(page) == [] and page.count("* plotly.js v") == 1  # plotly.js once, inline
    for key in ("equity", "weights", "rolling_sharpe", "period_returns", "excess_returns"):
        assert page.count(f'id="chart-{key}"') == 1 and re.search(rf'Plotly\.newPlot\(\s*"chart-{key}"', page)
    assert 'href="equity.png"' in page and 'href="weights.png"' in page

    table = summary_table(result)
    assert "policy" in table and "best_single_hindsight (hindsight)" in table and "*" in table


def _check_returns_csv(result, out):
    """returns.csv against the result: the chain's decisions indexed by the bar at which each return is realised
    (the decision bar + the execution's horizon), the decision bar next, one column per tradeable strategy,
    exp(lg) - 1. Returns the strategy columns."""
    import pandas as pd

    frame = pd.read_csv(out / "returns.csv", index_col=0, parse_dates=True)
    tradeable = [n for n, s in result.strategies.items() if s.kind != "hindsight"]
    assert list(frame.columns) == ["decided", *tradeable] and frame.columns[1] == "policy"
    assert "best_single_hindsight" not in frame.columns and frame.index.name == "realised"
    chain = result.plan.chain()
    bars = result.plan.decision_bars[chain].reshape(-1)
    horizon = 2 if result.effective["execution"] == "open" else 1
    assert len(frame) == len(chain) * result.plan.length == len(bars)
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    np.testing.assert_array_equal(frame.index.values, result.timestamps[bars + horizon])
    np.testing.assert_array_equal(pd.to_datetime(frame["decided"]).values, result.timestamps[bars])
    text = (out / "returns.csv").read_text().splitlines()
    assert text[0].startswith("realised,decided,policy,")
    first, last = text[1].split(","), text[-1].split(",")
    assert first[:2] == [str(result.timestamps[bars[0] + horizon])[:10], str(result.timestamps[bars[0]])[:10]]
    assert last[:2] == [str(result.timestamps[bars[-1] + horizon])[:10], str(result.timestamps[bars[-1]])[:10]]
    for name in tradeable:
        expected = np.exp(result.strategies[name].log_growth[chain].reshape(-1)) - 1
        np.testing.assert_allclose(frame[name].to_numpy(), expected, rtol=1e-12, atol=1e-15, err_msg=name)
    return frame[tradeable]


def test_returns_csv_holds_the_net_returns_of_the_scored_path(backtest, sample_market):
    result, out = backtest
    frame = _check_returns_csv(result, out)
    start, stop = result.plan.scorable
    assert len(frame) == stop - start  # by default: every scorable bar of the split, one path
    assert frame.index[0] == pd_timestamp(sample_market.timestamps[start + 2])  # open execution: realised at t + 2
    assert frame.index[-1] == pd_timestamp(sample_market.timestamps[stop - 1 + 2])
    # Compounding the file's returns gives each strategy's total return in report.json.
    report = json.loads((out / "report.json").read_text())
    for name in frame.columns:
        assert np.prod(1 + frame[name].to_numpy()) - 1 == pytest.approx(
            report["strategies"][name]["mean"]["total_return"], rel=1e-9, abs=1e-12)


def _longest_drawdown_by_loop(r, dates):
    """The longest spell below the running peak, bar by bar, over wealth W_0 = 1, W_j after row j - 1 (the date of
    wealth index j is that of row max(j - 1, 0)), as report.json writes it."""
    wealth = np.concatenate([[1.0], np.cumprod(1 + r)])
    n, peak, spell, spells = len(wealth) - 1, 0, None, []  # spell: [peak index, trough, recovery]
    for j in range(1, n + 1):
        if wealth[j] >= wealth[peak] * (1 - 1e-12):
            if spell is not None:
                spell[2] = j
                spells.append(spell)
            peak, spell = j, None
        elif spell is None:
            spell = [peak, j, None]
        elif wealth[j] < wealth[spell[1]]:
            spell[1] = j
    if spell is not None:
        spells.append(spell)
    if not spells:
        return {"bars": 0, "start": None, "trough": None, "end": None, "recovered": None, "bars_to_recover": None,
                "depth": 0.0}
    lengths = [(end if end is not None else n) - start for start, _, end in spells]
    start, trough, end = spells[int(np.argmax(lengths))]
    date = lambda j: None if j is None else dates[max(j - 1, 0)]  # noqa: E731
    return {"bars": max(lengths), "start": date(start), "trough": date(trough), "end": date(end),
            "recovered": end is not None, "bars_to_recover": None if end is None else end - trough,
            "depth": pytest.approx(1 - wealth[trough] / wealth[start], rel=1e-9)}


def test_tearsheet_in_report_json_and_html_matches_returns_csv(backtest):
    """The tear sheet of every strategy, recomputed by hand from returns.csv and against equal weight."""
    import pandas as pd

    result, out = backtest
    report = json.loads((out / "report.json").read_text())
    frame = pd.read_csv(out / "returns.csv", index_col=0).drop(columns="decided")
    ppy = report["data"]["bars_per_year"]
    assert "tracking_error" in report["metric_conventions"] and "fee_share" in report["metric_conventions"]
    b = frame["equal_weight"].to_numpy()
    for name in frame.columns:
        t = report["strategies"][name]["tearsheet"]
        assert set(t) == set(TEARSHEET_METRICS) | {"longest_drawdown"}
        r = frame[name].to_numpy()
        beta = np.cov(r, b, ddof=0)[0, 1] / np.var(b)
        assert t["beta"] == pytest.approx(beta, rel=1e-9)
        assert t["alpha"] == pytest.approx((r.mean() - beta * b.mean()) * ppy, rel=1e-7, abs=1e-12)
        assert t["var_95"] == pytest.approx(-np.percentile(r, 5), rel=1e-9)
        if name == "equal_weight":
            assert t["tracking_error"] == 0.0 and t["information_ratio"] is None
        else:
            te = np.std(r - b, ddof=1) * np.sqrt(ppy)
            assert t["tracking_error"] == pytest.approx(te, rel=1e-9)
            assert t["information_ratio"] == pytest.approx(np.mean(r - b) * ppy / te, rel=1e-9)
        assert t["longest_drawdown"] == _longest_drawdown_by_loop(r, list(frame.index))
    fees = -np.log1p(-result.policy.cost[0]).sum()
    policy = report["strategies"]["policy"]["tearsheet"]
    gross = result.policy.log_growth[0].sum() + fees
    assert policy["fee_share"] == (pytest.approx(fees / gross, rel=1e-12) if gross > 0 else None)
    # The policy's attribution adds up to its net log growth and fees paid, and holds every traded asset.
    parts = report["strategies"]["policy"]["attribution"]
    assert list(parts) == list(result.symbols)  # no cash column in this checkpoint
    assert sum(p["net_log_growth"] for p in parts.values()) == pytest.approx(
        np.log1p(report["strategies"]["policy"]["mean"]["total_return"]), rel=1e-9)
    assert sum(p["fees_paid"] for p in parts.values()) == pytest.approx(
        report["strategies"]["policy"]["mean"]["fees_paid"], rel=1e-9)
    page = (out / "report.html").read_text()
    assert "Tear sheet" in page and "info.ratio" in page and "CVaR95" in page and "attribution" in page


def test_returns_csv_of_overlapping_windows_holds_only_their_non_overlapping_chain(checkpoint, tmp_path):
    result = run_backtest(BacktestOptions(checkpoint=str(checkpoint), trades=False, split="validation",
                                          window_length=64, stride=32), log=lambda *_: None)
    out = write_report(result, tmp_path)
    assert result.plan.overlapping and len(result.plan.chain()) < result.plan.n_windows
    frame = _check_returns_csv(result, out)
    assert len(frame) == 64 * len(result.plan.chain())
    # The tear sheet and the attribution are of that chained path: fees compound across windows like wealth.
    report = json.loads((out / "report.json").read_text())
    r = frame["policy"].to_numpy()
    assert report["strategies"]["policy"]["tearsheet"]["var_95"] == pytest.approx(-np.percentile(r, 5), rel=1e-9)
    parts = report["strategies"]["policy"]["attribution"].values()
    assert sum(p["net_log_growth"] for p in parts) == pytest.approx(np.log1p(r).sum(), rel=1e-9)
    chain = result.plan.chain()
    wealth_before = np.exp(np.cumsum(np.log1p(r)) - np.log1p(r))
    fees = (result.policy.cost[chain].reshape(-1) * wealth_before).sum()
    assert sum(p["fees_paid"] for p in parts) == pytest.approx(fees, rel=1e-9)


def pd_timestamp(t):
    import pandas as pd

    return pd.Timestamp(t)


def test_overrides_are_applied_and_recorded(checkpoint, tmp_path):
    result = run_backtest(BacktestOptions(checkpoint=str(checkpoint), cost_bps=0.0, trades=False, split="validation",
                                          window_length=64, stride=32), log=lambda *_: None)
    out = write_report(result, tmp_path)
    report = json.loads((out / "report.json").read_text())
    assert report["overrides"] == {"cost_bps": {"checkpoint": 10.0, "used": 0.0}}
    assert report["split"]["name"] == "validation" and report["split"]["window_length"] == 64

    # Overlapping windows (stride 32 < 64) are kept, said to overlap, and only the non-overlapping chain is counted.
    windows = json.loads((out / "windows.json").read_text())["windows"]
    chain = result.plan.chain()
    assert report["split"]["overlapping"] is True and report["split"]["non_overlapping_windows"] == chain
    assert len(chain) < len(windows) and [w["window"] for w in windows if w["counted_in_policy_beats"]] == chain
    for name, beats in report["policy_beats"].items():
        wins = sum(windows[k]["metrics"]["policy"]["total_return"] > windows[k]["metrics"][name]["total_return"]
                   for k in chain)
        assert beats == {"windows": wins, "of": len(chain)}
    table = summary_table(result)
    assert "OVERLAP" in table and f"only the {len(chain)} non-overlapping window(s)" in table
    assert f"/{len(chain)}" in table and f"/{len(windows)}" not in table
    page = (out / "report.html").read_text()
    assert "OVERLAP" in page and "policy beats (non-overlapping windows)" in page
    assert any("not independent evidence" in n for n in report["notes"])
    assert all(s["mean"]["fees_paid"] == 0.0 for s in report["strategies"].values())
    assert not (out / "trades.jsonl").exists()
    # Same checkpoint, same data: deterministic to the last bit.
    again = run_backtest(BacktestOptions(checkpoint=str(checkpoint), cost_bps=0.0, trades=False, split="validation",
                                         window_length=64, stride=32), log=lambda *_: None)
    np.testing.assert_array_equal(again.policy.log_growth, result.policy.log_growth)


def test_mismatched_data_and_cash_override_are_clear_errors(checkpoint, tmp_path, capsys):
    data = tmp_path / "three"
    data.mkdir()
    for sym in ("AAPL", "GOOG", "IBM"):
        shutil.copy(bundled_sample_dir() / f"{sym}.csv", data / f"{sym}.csv")
    with pytest.raises(CheckpointError, match="MSFT"):
        run_backtest(BacktestOptions(checkpoint=str(checkpoint), data_root=str(data)), log=lambda *_: None)
    with pytest.raises(CheckpointError, match="include_cash"):
        run_backtest(BacktestOptions(checkpoint=str(checkpoint), include_cash=True), log=lambda *_: None)
    code = cli.main(["--checkpoint", str(checkpoint), "--data-root", str(data), "--report-dir", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "MSFT" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_split_that_overlaps_the_training_or_validation_bars_is_flagged(tmp_path, synthetic_ohlc,
                                                                          write_ohlc_csvs):
    from differentiable_market.marketsimulator.run import main as backtest_main
    from differentiable_market.train import main as train_main

    data = write_ohlc_csvs(synthetic_ohlc(900, 3, seed=12), tmp_path / "data")
    assert train_main(["--lookback", "32", "--batch-windows", "4", "--rollout-groups", "2", "--hidden-size", "8",
                       "--epochs", "1", "--data-root", str(data), "--save-dir", str(tmp_path / "runs"),
                       "--no-progress"]) == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    # 900 bars, lookback 32: train [0, 586), validation [618, 743), test [775, 900)
    ts = synthetic_ohlc(900, 3, seed=12).timestamps
    assert ckpt.trained_through == str(ts[585])[:19] and ckpt.validated_through == str(ts[742])[:19]

    import pandas as pd

    def backtest(n_bars: int, name: str, split: str = "test") -> list[str]:
        """The same data cut to n_bars; the splits are recomputed on it."""
        for f in data.glob("*.csv"):
            pd.read_csv(f).iloc[:n_bars].to_csv(f, index=False)
        assert backtest_main(["--checkpoint", str(run_dir), "--data-root", str(data), "--split", split,
                              "--no-trades", "--report-dir", str(tmp_path / name)]) == 0
        (report_dir,) = list((tmp_path / name).iterdir())
        return json.loads((report_dir / "report.json").read_text())["notes"]

    # 900 bars: its own test split, after validation: no warning.
    notes = backtest(900, "own")
    assert not any("WARNING" in n for n in notes)
    # Its own validation split: the bars that chose best.pt.
    notes = backtest(900, "validation", split="validation")
    assert [n for n in notes if "WARNING" in n] == [
        f"WARNING: this checkpoint was chosen (best.pt) on validation bars up to {ckpt.validated_through}, but this "
        f"validation split starts at {str(ts[618])[:19]}: the scores below overlap the bars that selected it, so "
        "they are not out-of-sample."]
    # 800 bars: test split [690, 800) starts after training but inside validation: only the validation warning.
    notes = backtest(800, "eight")
    assert any("chosen (best.pt) on validation bars" in n and str(ts[690])[:19] in n for n in notes)
    assert not any("in-sample" in n for n in notes)
    # 600 bars: test split [520, 600) starts inside the training period.
    notes = backtest(600, "six")
    assert any("partly in-sample" in n for n in notes)


def test_a_gap_after_the_training_split_keeps_the_asset_and_is_reported(checkpoint, tmp_path):
    """The audit's reproduction: 5 MSFT rows removed in December 2012 (test split) used to drop MSFT from the whole
    data set, so the checkpoint could not even be backtested; now the universe is decided on its training bars."""
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    for f in bundled_sample_dir().glob("*.csv"):
        shutil.copy(f, data / f.name)
    frame = pd.read_csv(data / "MSFT.csv", dtype=str)
    frame.drop(index=frame.index[frame["timestamp"].str.startswith("2012-12")][:5]).to_csv(data / "MSFT.csv",
                                                                                          index=False)
    result = run_backtest(BacktestOptions(checkpoint=str(checkpoint), data_root=str(data), trades=False),
                          log=lambda *_: None)
    assert result.symbols == ("AAPL", "GOOG", "IBM", "MSFT")
    assert any(n.startswith("late gap in MSFT: 5 consecutive bars missing from 2012-12-03 to 2012-12-07")
               for n in result.notes)
    out = write_report(result, tmp_path / "evals")
    assert any("late gap in MSFT" in n for n in json.loads((out / "report.json").read_text())["notes"])


def test_with_cash_two_baselines_that_hold_cash_are_reported(tmp_path, sample_market):
    from differentiable_market.config import EnvConfig
    from differentiable_market.train import run_training

    cfg = ExperimentConfig(
        data=DataConfig(root=str(bundled_sample_dir())), env=EnvConfig(include_cash=True),
        policy=PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8),
        train=TrainConfig(lookback=32, batch_windows=2, rollout_groups=2, epochs=1, eval_interval=1, log_interval=1,
                          select_min_t=None,
                          device="cpu", dtype="float32", compile="off", save_dir=str(tmp_path / "runs")),
    )
    run_dir = run_training(cfg, progress=False, argv=[])
    result = run_backtest(BacktestOptions(checkpoint=str(run_dir), trades=False), log=lambda *_: None)
    for name in ("equal_weight_cash", "vol_target"):
        assert result.strategies[name].kind == "baseline"
    # 1/5 in each of 4 stocks and in cash: a loop over the raw open prices.
    bars = result.plan.decision_bars[0]
    wealth, held = 1.0, np.zeros(4)
    for t in bars:
        g = sample_market.open[t + 2] / sample_market.open[t + 1]
        target = np.full(4, 0.2)
        wealth *= 1 - 1e-3 * np.abs(target - held).sum()
        wealth *= target @ g + 0.2
        held = target * g / (target @ g + 0.2)
    assert result.strategies["equal_weight_cash"].metrics["total_return"][0] == pytest.approx(wealth - 1, rel=1e-10)
    out = write_report(result, tmp_path / "evals")
    report = json.loads((out / "report.json").read_text())
    assert {"equal_weight_cash", "vol_target"} <= set(report["strategies"]) & set(report["policy_beats"])
    assert "equal_weight_cash" in summary_table(result) and "vol_target" in summary_table(result)
    parts = report["strategies"]["policy"]["attribution"]
    assert list(parts) == [*sample_market.symbols, "CASH"]
    assert parts["CASH"]["log_growth"] == 0.0 and parts["CASH"]["fees_paid"] == 0.0  # cash earns and pays nothing
    assert sum(p["net_log_growth"] for p in parts.values()) == pytest.approx(
        result.policy.log_growth.sum(), rel=1e-9, abs=1e-12)
    # Without cash, neither exists: a fully invested policy is compared with fully invested baselines.
    no_cash, _ = baseline_weights(torch.tensor(sample_market.close), torch.as_tensor(result.plan.decision_bars),
                                  torch.ones(1, result.plan.length, 4, dtype=torch.float64), False,
                                  sample_market.symbols, BacktestOptions(checkpoint="x"))
    assert not {"equal_weight_cash", "vol_target"} & {name for name, *_ in no_cash}


def test_baselines_flag_picks_the_set_and_the_reports_group_them_by_family(checkpoint, tmp_path, capsys):
    result = run_backtest(BacktestOptions(checkpoint=str(checkpoint), trades=False, baselines="eg,erc,bcrp_hindsight"),
                          log=lambda *_: None)
    # equal weight always runs: the reports measure everything against it
    assert list(result.strategies) == ["policy", "equal_weight", "eg", "erc", "bcrp_hindsight"]
    out = write_report(result, tmp_path / "evals")
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["baselines"] == "eg,erc,bcrp_hindsight"
    assert {n: s["family"] for n, s in report["strategies"].items()} == {
        "policy": "policy", "equal_weight": "core", "eg": "olps", "erc": "risk", "bcrp_hindsight": "hindsight"}
    assert report["strategies"]["bcrp_hindsight"]["kind"] == "hindsight"
    page = (out / "report.html").read_text()
    heads = [page.index(t) for t in ("Core baselines", "Online portfolio selection", "Risk-based portfolios",
                                     "Hindsight (not tradeable)")]
    assert heads == sorted(heads)
    assert "-- Online portfolio selection" in summary_table(result)
    # the default is today's core set
    assert BacktestOptions(checkpoint="x").baselines == "core"
    with pytest.raises(ConfigError, match="--baselines: unknown name 'olmr'"):
        BacktestOptions(checkpoint="x", baselines="core,olmr")
    code = cli.main(["--checkpoint", str(checkpoint), "--baselines", "nope", "--report-dir", str(tmp_path / "r")])
    assert code == 2 and "--baselines: unknown name 'nope'" in capsys.readouterr().err


def test_a_union_calendar_trains_and_backtests_the_churn_universe_end_to_end(tmp_path, capsys):
    """Train and backtest on a universe with listings, delistings and halts (--calendar union): every strategy
    holds exactly 0 in assets that are not tradeable at a bar, equal weight is equal over the tradeable assets with
    a gone asset sold at its last close (checked by share counting), and the trades log shows the forced sales."""
    from differentiable_market.data import load_market
    from differentiable_market.synthetic import churn_universe
    from differentiable_market.train import main as train_main

    plan = churn_universe(tmp_path / "churn", n_assets=12, years=3, seed=3, listing_share=0.5, bankrupt_share=0.4)
    assert any(p["fate"] != "survives" for p in plan)
    args = ["--data-root", str(tmp_path / "churn"), "--calendar", "union", "--include-cash", "--lookback", "32",
            "--batch-windows", "4", "--rollout-groups", "2", "--hidden-size", "8", "--no-progress", "--epochs", "3",
            "--eval-interval", "3", "--test-fraction", "0.4", "--save-dir", str(tmp_path / "runs")]
    assert train_main(args) == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    report_dir = tmp_path / "reports"
    assert cli.main(["--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--report-dir", str(report_dir)]) == 0
    out = capsys.readouterr().out
    assert "Union calendar over the scored bars" in out
    (rep,) = list(report_dir.iterdir())
    report = json.loads((rep / "report.json").read_text())
    market = load_market(DataConfig(root=str(tmp_path / "churn"), calendar="union"), min_bars=1)
    mask = market.tradeable
    rows = [json.loads(line) for line in (rep / "trades.jsonl").read_text().splitlines()]
    ts = [str(t)[:10] for t in market.timestamps]
    bars = [ts.index(r["timestamp"]) for r in rows]
    assert not mask[bars].all()  # the test split really has untradeable assets
    for r, t in zip(rows, bars):
        for i, s in enumerate(market.symbols):
            if not mask[t, i]:
                assert r["weights"][s] == 0.0
    sold = [(r, t) for r, t in zip(rows, bars) if "forced_sales" in r.get("events", {})]
    assert sold  # the policy held assets that then stopped being tradeable
    for r, t in sold:
        prev = rows[rows.index(r) - 1]
        for s, w in r["events"]["forced_sales"].items():
            assert prev["weights"][s] > 0 and not mask[t, market.symbols.index(s)] and w > 0
    assert any("untradeable" in r.get("events", {}) for r in rows)
    # Equal weight by share counting: equal over the tradeable assets at each decision, open fills, 10 bps.
    cost = report["settings"]["cost_bps"] * 1e-4
    shares, log_growth = None, []
    for t in bars:
        fill, mark = market.open[t + 1], market.open[t + 2]
        target = mask[t] / mask[t].sum()
        value = 1.0 if shares is None else float((shares * fill).sum())
        held = np.zeros_like(target) if shares is None else shares * fill / value
        after_fee = value * (1 - cost * np.abs(target - held).sum())
        shares = target * after_fee / fill
        log_growth.append(np.log((shares * mark).sum() / value))
    total = float(np.expm1(np.sum(log_growth)))
    assert report["strategies"]["equal_weight"]["mean"]["total_return"] == pytest.approx(total, rel=1e-9)


def test_signal_closes_hold_each_asset_flat_outside_its_tradeable_life():
    """The baselines' closes on a union calendar: the last tradeable close through a halt and after a delisting, the
    first tradeable close before a listing, 1 for an asset never tradeable; tradeable bars keep their close."""
    from differentiable_market.marketsimulator.backtester import signal_closes

    close = torch.tensor([[10.0, 99.0, 5.0, 7.0],
                          [11.0, 98.0, 6.0, 7.0],
                          [12.0, 20.0, 77.0, 7.0],
                          [13.0, 21.0, 78.0, 7.0],
                          [14.0, 22.0, 8.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0],
                         [1, 0, 1, 0],
                         [1, 1, 0, 0],
                         [0, 1, 0, 0],
                         [0, 1, 1, 0]], dtype=torch.bool)
    expect = torch.tensor([[10.0, 20.0, 5.0, 1.0],
                           [11.0, 20.0, 6.0, 1.0],
                           [12.0, 20.0, 6.0, 1.0],
                           [12.0, 21.0, 6.0, 1.0],
                           [12.0, 22.0, 8.0, 1.0]], dtype=torch.float64)
    assert torch.equal(signal_closes(close, mask), expect)


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory) -> Path:
    """A run whose best.pt is the untrained policy: one training step cannot pass the selection gate."""
    from differentiable_market.train import run_training

    cfg = ExperimentConfig(
        data=DataConfig(root=str(bundled_sample_dir())),
        policy=PolicyConfig(architecture="flat", action="band", hidden_size=8, head_hidden=8),
        train=TrainConfig(lookback=32, batch_windows=2, rollout_groups=2, epochs=1, eval_interval=1, log_interval=1,
                          device="cpu", dtype="float32", compile="off",
                          save_dir=str(tmp_path_factory.mktemp("runs"))),
    )
    return run_training(cfg, progress=False, argv=[])


def test_an_untrained_checkpoint_gets_a_banner_a_named_row_and_an_answer_first(untrained_run, tmp_path, capsys):
    from differentiable_market import cli

    assert load_checkpoint(untrained_run).is_untrained
    assert cli.main(["backtest", "--checkpoint", str(untrained_run), "--out-dir", str(tmp_path / "bt"),
                     "--no-trades"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    (folder,) = list((tmp_path / "bt").iterdir())
    assert lines[-1] == f"Report: {folder / 'report.html'}"
    assert lines[-2].startswith("Untrained policy: this checkpoint is equal weight through the band (untrained "
                                "policy), not a trained policy.")
    assert any(line.startswith("policy (untrained) ") for line in lines)  # the console table's row
    report = json.loads((folder / "report.json").read_text())
    assert report["answer"]["untrained"] and report["checkpoint"]["untrained"]
    assert report["answer"]["text"] == lines[-2]
    assert report["strategies"]["policy"]["label"] == "equal weight through the band (untrained policy)"
    page = (folder / "report.html").read_text()
    banner, facts = page.index("<div class='banner'><strong>Untrained policy.</strong>"), page.index('class="facts"')
    assert page.index("<h1>") < banner < page.index('<p class="answer">') < facts  # at the top, before any table
    assert "equal weight through the band (untrained policy)" in page[facts:]  # the row's label
    assert "cash asset: False" not in page and "matches checkpoint: True" not in page


def test_a_backtest_replays_from_its_report_folder(untrained_run, tmp_path):
    from differentiable_market import cli

    assert cli.main(["backtest", "--checkpoint", str(untrained_run), "--out-dir", str(tmp_path / "bt"), "--split",
                     "validation", "--window-length", "40", "--cost-bps", "5", "--baselines", "core,eg",
                     "--no-trades", "-q"]) == 0
    (first,) = list((tmp_path / "bt").iterdir())
    assert cli.main(["backtest", "--config", str(first), "-q"]) == 0
    second = next(p for p in (tmp_path / "bt").iterdir() if p != first)
    a, b = (json.loads((p / "report.json").read_text()) for p in (first, second))
    assert a["options"] == b["options"] and a["options"]["window_length"] == 40 and a["options"]["cost_bps"] == 5.0
    assert a["strategies"]["policy"]["mean"] == b["strategies"]["policy"]["mean"]
    assert set(a["strategies"]) == set(b["strategies"]) and "eg" in a["strategies"]
