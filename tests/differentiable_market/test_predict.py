import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from differentiable_market.checkpoint import load_checkpoint
from differentiable_market.config import DataConfig, ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.data import bundled_sample_dir
from differentiable_market.env import drift, observed_growth
from differentiable_market.errors import DataError
from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest
from differentiable_market.predict import held_growth, main, predict, read_holdings, summary

LOOKBACK = 32
NAMES = ("AAPL", "GOOG", "IBM", "MSFT")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder from a short training run on the bundled sample."""
    from differentiable_market.train import run_training

    cfg = ExperimentConfig(
        data=DataConfig(root=str(bundled_sample_dir())),
        policy=PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8),
        train=TrainConfig(lookback=LOOKBACK, batch_windows=2, rollout_groups=2, epochs=1, eval_interval=1,
                          select_min_t=None, log_interval=1, device="cpu", dtype="float32", compile="off",
                          save_dir=str(tmp_path_factory.mktemp("runs"))),
    )
    return run_training(cfg, progress=False, argv=[])


@pytest.fixture(scope="module")
def backtest(run_dir):
    """The backtester on the full sample in windows of the lookback: its last window ends at the test split's last
    scorable decision bar t."""
    return run_backtest(BacktestOptions(checkpoint=str(run_dir), window_length=LOOKBACK, trades=False),
                        log=lambda *_: None)


def _sample_through(folder: Path, last: np.datetime64, symbols=NAMES) -> Path:
    """The bundled sample's files cut after bar ``last`` (the rows are copied as text, so prices are unchanged)."""
    folder.mkdir(parents=True)
    day = str(last)[:10]
    for sym in symbols:
        frame = pd.read_csv(bundled_sample_dir() / f"{sym}.csv", dtype=str)
        frame[frame["timestamp"] <= day].to_csv(folder / f"{sym}.csv", index=False)
    return folder


def _write_holdings(path: Path, weights: dict[str, float]) -> Path:
    path.write_text("symbol,weight\n" + "".join(f"{s},{w!r}\n" for s, w in weights.items()))
    return path


@pytest.fixture(scope="module")
def cut(backtest, tmp_path_factory):
    """(decision bar t, data folder ending at t)."""
    t = int(backtest.plan.decision_bars[-1, -1])
    return t, _sample_through(tmp_path_factory.mktemp("cut") / "data", backtest.timestamps[t])


def test_held_growth_is_observed_growth_without_the_bars_after_the_last(sample_market):
    o, c = torch.tensor(sample_market.open[:60]), torch.tensor(sample_market.close[:60])
    for execution in ("open", "close"):
        for cash in (False, True):
            full = observed_growth(o, c, execution, cash)  # needs bars up to 59
            got = held_growth(o[:50], c[:50], execution, cash)  # bars 0..49 only
            assert got.shape == (49, 4 + cash)
            torch.testing.assert_close(got, full[:49], rtol=0, atol=0)


def test_predict_equals_the_backtesters_weights_for_the_same_decision_bar(backtest, cut, run_dir):
    t, data = cut
    bars = backtest.plan.decision_bars[-1]
    assert bars[-1] == t and len(bars) == LOOKBACK
    w_bt = backtest.policy.weights[-1]  # [L, A] float64, the backtester's last window
    p = predict(str(run_dir), data_root=str(data), log=lambda *_: None)
    assert p.market.n_bars == t + 1 and p.decision_bar == str(backtest.timestamps[t])[:10]
    assert p.window_bars == (int(bars[0]), t)
    np.testing.assert_allclose(p.window_weights, w_bt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p.target, w_bt[-1], rtol=0, atol=1e-9)
    assert p.target.sum() == pytest.approx(1.0, abs=1e-12)
    # Without --holdings it is shown the previous target drifted to the close of bar t, as in the backtest.
    full = backtest.timestamps.size
    assert full > t + 2  # the full data reach past t; the cut data do not
    seen = observed_growth(torch.tensor(p.market.open), torch.tensor(p.market.close), "open", False)
    assert seen.shape[0] == t - 1  # observed_growth stops 2 bars early: held_growth had to supply row t - 1
    from differentiable_market.data import load_market

    market = load_market(DataConfig(root=str(bundled_sample_dir())), min_bars=1)
    seen_full = observed_growth(torch.tensor(market.open), torch.tensor(market.close), "open", False)
    own = drift(torch.tensor(w_bt[-2]), seen_full[t - 1])
    assert p.holdings.source == "policy"
    np.testing.assert_allclose(p.holdings.weights, own.numpy(), rtol=0, atol=1e-6)
    assert p.turnover == pytest.approx(np.abs(p.target - p.holdings.weights).sum(), rel=1e-12)
    assert p.fee == pytest.approx(1e-3 * p.turnover, rel=1e-12)


def test_explicit_holdings_are_what_the_last_decision_is_shown(cut, run_dir, tmp_path):
    t, data = cut
    default = predict(str(run_dir), data_root=str(data), log=lambda *_: None)
    same = _write_holdings(tmp_path / "same.csv", dict(zip(NAMES, default.holdings.weights.tolist())))
    p = predict(str(run_dir), holdings_file=str(same), data_root=str(data), log=lambda *_: None)
    assert p.holdings.source == "file" and p.holdings.detail == str(same.resolve())
    np.testing.assert_allclose(p.target, default.target, rtol=0, atol=1e-6)
    assert p.turnover == pytest.approx(default.turnover, abs=1e-6)
    np.testing.assert_array_equal(p.window_weights, default.window_weights)  # the path before it is unchanged

    other = _write_holdings(tmp_path / "aapl.csv", {"AAPL": 1.0})
    q = predict(str(run_dir), holdings_file=str(other), data_root=str(data), log=lambda *_: None)
    assert np.abs(q.target - default.target).max() > 1e-5  # the policy reads its holdings
    np.testing.assert_array_equal(q.holdings.weights, [1.0, 0.0, 0.0, 0.0])
    assert q.turnover == pytest.approx(np.abs(q.target - q.holdings.weights).sum(), rel=1e-12)
    assert q.turnover == pytest.approx(2 * (1 - q.target[0]), rel=1e-9)  # sell AAPL down, buy the other three


def test_cli_writes_json_into_the_current_folder_and_never_replaces_a_file(cut, run_dir, backtest, capsys, tmp_path,
                                                                           monkeypatch):
    t, data = cut
    monkeypatch.chdir(tmp_path)  # the default output folder is ./predictions, not the run folder
    assert main(["--checkpoint", str(run_dir), "--data-root", str(data)]) == 0
    out = capsys.readouterr().out
    day = str(backtest.timestamps[t])[:10]  # daily bars: the file is named by the plain date
    first = Path("predictions") / f"{day}.json"
    assert not (run_dir / "predictions").exists()
    assert f"Wrote {first}" in out and "Expected turnover" in out and "AAPL" in out
    doc = json.loads(first.read_text())
    assert doc["format"] == "differentiable_market.prediction" and doc["decision_bar"] == day
    assert set(doc["target_weights"]) == set(NAMES) and sum(doc["target_weights"].values()) == pytest.approx(1.0)
    ckpt = load_checkpoint(run_dir)
    assert doc["checkpoint"]["sha256"] == ckpt.sha256 and doc["checkpoint"]["step"] == ckpt.step
    assert doc["checkpoint"]["path"] == str((run_dir / "checkpoints" / "best.pt").resolve())
    assert doc["holdings_source"] == "policy" and doc["cost_bps"] == 10.0
    assert doc["expected_fee"] == pytest.approx(1e-3 * doc["expected_turnover"])
    assert doc["window"]["decision_bars"] == LOOKBACK and doc["window"]["last_decision"] == day
    assert doc["data"]["last_bar"] == day and doc["execution"] == "open"
    p = predict(str(run_dir), data_root=str(data), log=lambda *_: None)
    assert list(doc["target_weights"].values()) == p.target.tolist()
    # Again: a numbered file, the first one untouched.
    before = first.read_bytes()
    assert main(["--checkpoint", str(run_dir), "--data-root", str(data)]) == 0
    assert first.read_bytes() == before and (tmp_path / "predictions" / f"{day}-1.json").exists()
    assert not list((tmp_path / "predictions").glob(".*"))  # no temp files left
    # --out-dir names the folder; the old --out names the file
    assert main(["--checkpoint", str(run_dir), "--data-root", str(data), "--out-dir", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere" / f"{day}.json").is_file()
    assert main(["--checkpoint", str(run_dir), "--data-root", str(data), "--out", "exact.json"]) == 0
    assert json.loads((tmp_path / "exact.json").read_text())["decision_bar"] == day


def test_stale_data_and_missing_symbols_are_refused_with_exit_2(run_dir, backtest, tmp_path, capsys):
    ckpt = load_checkpoint(run_dir)
    ts = backtest.timestamps
    trained_end = int(np.searchsorted(ts, np.datetime64(ckpt.trained_through, "ns")))
    old = _sample_through(tmp_path / "old", ts[trained_end - 5])
    assert main(["--checkpoint", str(run_dir), "--data-root", str(old)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ckpt.trained_through in err and str(ts[trained_end - 5])[:10] in err
    assert "older than the policy" in err and "Traceback" not in err
    assert not list(run_dir.glob(f"predictions/{str(ts[trained_end - 5])[:10]}*"))

    three = _sample_through(tmp_path / "three", ts[-1], symbols=NAMES[:3])
    assert main(["--checkpoint", str(run_dir), "--data-root", str(three), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "MSFT" in err and "missing from the data" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("text, cash, match", [
    ("symbol,weight\nAAPL,0.5\nTSLA,0.5\n", False, r"row 3: unknown symbol 'TSLA'"),
    ("symbol,weight\nAAPL,0.5\nGOOG,-0.1\nIBM,0.6\n", False, r"row 3: weight -0.1 of GOOG must be a non-negative"),
    ("symbol,weight\nAAPL,0.5\nGOOG,0.4\n", False, r"sum to 0.9, not 1"),
    ("symbol,weight\nAAPL,0.5\nCASH,0.5\n", False, r"row 3: this policy was trained without a cash asset"),
    ("symbol,weight\nAAPL,half\n", False, r"row 2: weight 'half' of AAPL is not a number"),
    ("AAPL,1\n", False, r"header 'symbol,weight'"),
    ("symbol,weight\nAAPL,0.5\nAAPL,0.5\n", False, r"row 3: AAPL is listed again \(first at row 2\)"),
    ("symbol,weight\nAAPL,0.5,x\n", False, r"row 2: expected 2 fields"),
    ("symbol,weight\nAAPL,0.5\n", True, r"put what is held in cash on a CASH row"),
    ("", False, r"header 'symbol,weight'"),
])
def test_bad_holdings_files_name_the_file_the_row_and_the_problem(tmp_path, text, cash, match):
    path = tmp_path / "holdings.csv"
    path.write_text(text)
    names = NAMES + (("CASH",) if cash else ())
    with pytest.raises(DataError, match=match) as info:
        read_holdings(path, names, cash)
    assert str(path) in str(info.value)


def test_good_holdings_files_are_read_as_weights(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("Symbol, Weight\n\nIBM, 0.25\nCASH,0.75\n")  # blank lines and spaces are fine
    np.testing.assert_array_equal(read_holdings(path, NAMES + ("CASH",), True), [0, 0, 0.25, 0, 0.75])
    path.write_text("symbol,weight\nAAPL,0.3333333\nGOOG,0.3333333\nMSFT,0.3333334\n")
    w = read_holdings(path, NAMES, False)
    assert w.sum() == pytest.approx(1.0, abs=1e-15) and w[2] == 0.0


def test_a_bad_holdings_file_on_the_command_line_exits_2(run_dir, cut, tmp_path, capsys):
    t, data = cut
    bad = _write_holdings(tmp_path / "bad.csv", {"AAPL": 0.7})
    assert main(["--checkpoint", str(run_dir), "--data-root", str(data), "--holdings", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "sum to 0.7" in err and "Traceback" not in err


@pytest.mark.parametrize("execution,context", [("close", "window"), ("open", "window"), ("close", "history")])
def test_a_band_policy_predicts_what_the_backtester_fills(tmp_path, execution, context):
    """The default design (cross-sectional, no-trade band): predict's path is the backtester's. In close execution
    the last decision's target is the backtester's fill; in open execution that fill depends on the next open, which
    predict cannot know, so the rows before it are compared. With the history context both read every bar before
    the window (predict's data file starts where the backtester's does)."""
    from differentiable_market.config import EnvConfig
    from differentiable_market.train import run_training

    cfg = ExperimentConfig(
        data=DataConfig(root=str(bundled_sample_dir())), env=EnvConfig(execution=execution),
        policy=PolicyConfig(asset_hidden=8, asset_head_hidden=4, context=context),
        train=TrainConfig(lookback=LOOKBACK, batch_windows=2, rollout_groups=2, epochs=1, eval_interval=1,
                          select_min_t=None, log_interval=1, device="cpu", dtype="float32", compile="off",
                          save_dir=str(tmp_path / "r")),
    )
    assert cfg.policy.architecture == "cross" and cfg.policy.action == "band"
    run = run_training(cfg, progress=False, argv=[])
    bt = run_backtest(BacktestOptions(checkpoint=str(run), window_length=LOOKBACK, trades=False), log=lambda *_: None)
    bars = bt.plan.decision_bars[-1]
    data = _sample_through(tmp_path / "cut", bt.timestamps[bars[-1]])
    p = predict(str(run), data_root=str(data), log=lambda *_: None)
    w_bt = bt.policy.weights[-1]
    assert p.window_bars == (int(bars[0]), int(bars[-1]))
    if execution == "close":
        np.testing.assert_allclose(p.window_weights, w_bt, rtol=0, atol=1e-6)
        np.testing.assert_allclose(p.target, w_bt[-1], rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(p.window_weights[:-1], w_bt[:-1], rtol=0, atol=1e-6)
    assert p.target.sum() == pytest.approx(1.0, abs=1e-12)
    assert any("Action 'band'" in note for note in p.notes)


def test_a_close_only_file_says_when_its_fill_happens_and_that_its_features_differ(run_dir, cut, tmp_path):
    """The checkpoint was trained on full OHLC with open fills; one of the four files now holds closes only."""
    t, data = cut
    folder = tmp_path / "data"
    folder.mkdir()
    for f in data.glob("*.csv"):
        frame = pd.read_csv(f, dtype=str)
        (frame[["timestamp", "close"]] if f.stem == "IBM" else frame).to_csv(folder / f.name, index=False)
    p = predict(str(run_dir), data_root=str(folder), log=lambda *_: None)
    assert any(n.startswith("execution open: 1 of 4 assets have no open price (['IBM']), so their open is the close: "
                            "a decision made after bar t closes fills them at the close of bar t+1") for n in p.notes)
    assert any(n.startswith("Warning: 1 asset(s) lack other price columns than in the checkpoint's training data "
                            "(IBM: lacked nothing in training, lacks ['open', 'high', 'low'] here)") for n in p.notes)
    assert p.to_dict()["fill"].startswith("at the open of the bar after")


# ------------------------------------------------------------------------------------------------ union calendar

UNION_BARS = 300


def _union_data(folder: Path) -> Path:
    """Four random walks for a union calendar (max_fill_bars 3) over 300 days: S000 trades throughout, S001 lists at
    bar 290, S002 prints its last bar at 270, S003 its last at 280 (a halt or a delisting: the same until prints
    resume)."""
    from conftest import write_union_csvs

    from differentiable_market.synthetic import random_walk_market

    keep = {"S001": lambda i: i >= 290, "S002": lambda i: i <= 270, "S003": lambda i: i <= 280}
    return write_union_csvs(random_walk_market(UNION_BARS, 4, seed=8), folder, keep)


@pytest.fixture(scope="module", params=[("flat", "target", "open"), ("cross", "band", "close")],
            ids=["flat-target-open", "cross-band-close"])
def union_run(request, tmp_path_factory):
    """(run folder, backtest in windows of 16, folder of the data cut after the backtest's last decision bar) of a
    one-step run with cash on the union calendar of ``_union_data``."""
    from differentiable_market.config import EnvConfig
    from differentiable_market.train import run_training

    architecture, action, execution = request.param
    tmp = tmp_path_factory.mktemp("union")
    data = _union_data(tmp / "data")
    cfg = ExperimentConfig(
        data=DataConfig(root=str(data), calendar="union"), env=EnvConfig(include_cash=True, execution=execution),
        policy=PolicyConfig(architecture=architecture, action=action, hidden_size=8, head_hidden=8, asset_hidden=8,
                            asset_head_hidden=4),
        train=TrainConfig(lookback=16, batch_windows=2, rollout_groups=2, epochs=1, eval_interval=1, log_interval=1,
                          select_min_t=None,
                          device="cpu", dtype="float32", compile="off", save_dir=str(tmp / "runs")),
    )
    run = run_training(cfg, progress=False, argv=[])
    bt = run_backtest(BacktestOptions(checkpoint=str(run), window_length=16, trades=False), log=lambda *_: None)
    t = int(bt.plan.decision_bars[-1, -1])
    cut = _union_data(tmp / "cut")
    for f in cut.glob("*.csv"):
        frame = pd.read_csv(f, dtype=str)
        frame[frame["timestamp"] <= str(bt.timestamps[t])[:10]].to_csv(f, index=False)
    return run, bt, cut


def test_predict_on_a_union_calendar_holds_nothing_untradeable_and_says_why(union_run):
    run, bt, cut = union_run
    p = predict(str(run), data_root=str(cut), log=lambda *_: None)
    bars = bt.plan.decision_bars[-1]
    assert p.market.calendar == "union" and p.window_bars == (int(bars[0]), int(bars[-1]))
    assert p.names == ("S000", "S001", "S002", "S003", "CASH")
    # S002 and S003 have had no print for more than 3 bars at the last bar: exactly 0, and said so
    assert p.target[2] == 0.0 and p.target[3] == 0.0 and p.target[[0, 1]].min() > 0 and p.target[4] >= 0
    assert p.target.sum() == pytest.approx(1.0, abs=1e-12)
    assert list(p.excluded) == ["S002", "S003"]
    assert p.excluded["S002"].startswith("delisted or halted: last print 2000-09-27")  # bar 270
    assert "more than --max-fill-bars 3" in p.excluded["S003"]
    assert p.to_dict()["excluded"] == p.excluded
    text = summary(p)
    assert f"Not tradeable after {p.decision_bar} (target 0):" in text and "  S002: delisted or halted" in text
    assert any(n.startswith("2 of 4 assets are not tradeable at the last bar") for n in p.notes)
    # S001 lists at bar 290, inside the window: 0 before, held from its listing on
    window = np.arange(bars[0], bars[-1] + 1)
    assert (p.window_weights[window < 290, 1] == 0).all() and (p.window_weights[window >= 290, 1] > 0).all()
    assert (p.window_weights[window > 274, 2] == 0).all()  # S002 untradeable from bar 274
    # the same weights as the backtester's last window (open execution: all but the last, which needs the next open)
    w_bt = bt.policy.weights[-1]
    rows = slice(None) if p.execution == "close" else slice(None, -1)
    np.testing.assert_allclose(p.window_weights[rows], w_bt[rows], rtol=0, atol=1e-6)
    if p.execution == "close" or p.checkpoint.config.policy.action == "target":
        np.testing.assert_allclose(p.target, w_bt[-1], rtol=0, atol=1e-6)


def test_union_holdings_in_a_gone_asset_are_sold_and_placeholders_change_nothing(union_run, tmp_path, monkeypatch):
    from conftest import replace_unread_prices

    import differentiable_market.predict as predict_module

    run, _, cut = union_run
    held = _write_holdings(tmp_path / "h.csv", {"S000": 0.5, "S002": 0.5})
    p = predict(str(run), holdings_file=str(held), data_root=str(cut), log=lambda *_: None)
    assert p.target[2] == 0.0
    assert p.turnover == pytest.approx(np.abs(p.target[:4] - p.holdings.weights[:4]).sum(), rel=1e-12)
    assert p.turnover >= 0.5  # selling all of S002
    assert any("The holdings include S002, not tradeable now" in n for n in p.notes)
    # Prices no tradeable decision reads (before a listing, after a known delisting) reach nothing predict says.
    loaded = predict_module.load_market
    monkeypatch.setattr(predict_module, "load_market",
                        lambda *a, **k: replace_unread_prices(loaded(*a, **k), max_fill=3))
    q = predict(str(run), holdings_file=str(held), data_root=str(cut), log=lambda *_: None)
    assert not np.array_equal(q.market.close, p.market.close)
    np.testing.assert_array_equal(q.target, p.target)
    np.testing.assert_array_equal(q.window_weights, p.window_weights)
    assert (q.turnover, q.excluded) == (p.turnover, p.excluded)


def test_the_reason_an_asset_is_excluded_is_what_is_known_at_the_last_bar():
    import dataclasses

    from differentiable_market.data import MarketData
    from differentiable_market.predict import untradeable_at_last_bar

    n = 10
    ts = np.datetime64("2021-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    price = np.full((n, 3), 5.0)
    filled = np.zeros((n, 3), dtype=bool)
    filled[:, 1] = True  # no print yet at any bar
    filled[5:, 2] = True  # last print at bar 4
    tradeable = ~filled
    tradeable[5:7, 2] = True  # max_fill_bars 2: tradeable until bar 6
    m = MarketData.from_arrays(("A", "B", "C"), ts, price, price, price, price, np.ones((n, 3)), filled=filled,
                               calendar="union", listed=~filled, tradeable=tradeable)
    why = untradeable_at_last_bar(m, max_fill_bars=2)
    assert list(why) == ["B", "C"]
    assert why["B"] == "not yet listed: no print on the calendar up to 2021-01-10"
    assert why["C"] == ("delisted or halted: last print 2021-01-05, 5 bars before the last bar, more than "
                        "--max-fill-bars 2")
    assert untradeable_at_last_bar(dataclasses.replace(m, tradeable=np.ones_like(m.tradeable)), 2) == {}
    assert untradeable_at_last_bar(m, 2, min_listed=2)["B"] == (
        "not yet listed: no print on the calendar up to 2021-01-10 (or gone before the calendar's first bar, "
        "2021-01-01, where --min-listed 2 starts it)")
