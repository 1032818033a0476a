"""The data command (data_cli.py): ``data demo`` writes seeded markets the loader reads back exactly; ``data check``
is the loader as a dry run."""

import json

import numpy as np
import pytest

from differentiable_market import cli
from differentiable_market.config import DataConfig
from differentiable_market.data import load_market
from differentiable_market.splits import make_splits
from differentiable_market.synthetic import planted_signal_market, random_walk_market, reversal_market


def _load(root, **kw):
    return load_market(DataConfig(root=str(root), **kw), min_bars=10)


@pytest.mark.parametrize("name, make", [
    ("reversal", lambda: reversal_market(300, 5, seed=3)),
    ("planted", lambda: planted_signal_market(300, 5, seed=3)),
    ("random", lambda: random_walk_market(300, 5, seed=3)),
])
def test_demo_writes_the_seeded_market_that_reads_back_exactly(tmp_path, capsys, name, make):
    out = tmp_path / name
    assert cli.main(["data", "demo", name, str(out), "--seed", "3", "--bars", "300", "--assets", "5"]) == 0
    said = capsys.readouterr().out
    assert f"Wrote the {name} demo (5 assets x 300 bars) to {out}" in said
    assert f"Next: differentiable-market train --data-root {out}" in said
    expected, got = make(), _load(out)
    assert got.symbols == expected.symbols and got.n_bars == 300
    np.testing.assert_array_equal(got.timestamps, expected.timestamps)
    for field in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    record = json.loads((out / "demo.json").read_text())
    assert (record["demo"], record["seed"], record["bars"], record["assets"]) == (name, 3, 300, 5)


def test_demo_default_sizes_and_another_seed_differs(tmp_path):
    from differentiable_market.data_cli import write_demo

    a = write_demo("reversal", tmp_path / "a")
    assert (a["bars"], a["assets"]) == (2520, 32)
    write_demo("random", tmp_path / "r0", seed=0, bars=100, assets=2)
    write_demo("random", tmp_path / "r1", seed=1, bars=100, assets=2)
    assert not np.array_equal(_load(tmp_path / "r0").close, _load(tmp_path / "r1").close)


def test_demo_refuses_a_folder_that_is_not_empty_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "mine.csv").write_text("keep me")
    assert cli.main(["data", "demo", "reversal", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.csv"] and (out / "mine.csv").read_text() == "keep me"
    assert cli.main(["data", "demo", "nyse", str(tmp_path / "n"), "--bars", "100"]) == 2
    assert "fixed data set" in capsys.readouterr().err


def test_churn_demo_is_a_union_calendar_universe(tmp_path, capsys):
    out = tmp_path / "churn"
    assert cli.main(["data", "demo", "churn", str(out), "--assets", "12", "--bars", "756", "--seed", "2"]) == 0
    assert "--calendar union" in capsys.readouterr().out
    assert len(list(out.glob("*.csv"))) == 12
    market = _load(out, calendar="union")
    assert market.n_assets == 12 and market.calendar == "union"
    assert not market.tradeable.all()  # listings, delistings or halts: some asset is not tradeable somewhere


def test_nyse_demo_is_read_from_the_crosscheck_package_or_names_the_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("universal") is not None:
        assert cli.main(["data", "demo", "nyse", str(tmp_path / "nyse")]) == 0
        market = _load(tmp_path / "nyse")
        assert market.n_assets == 36 and market.n_bars == 5652
        assert "--execution close" in capsys.readouterr().out
    import importlib.resources

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    assert cli.main(["data", "demo", "nyse", str(tmp_path / "nyse2")]) == 2
    err = capsys.readouterr().err
    assert "universal-portfolios" in err and "uv sync --group crosscheck" in err
    assert not (tmp_path / "nyse2").exists() or not any((tmp_path / "nyse2").iterdir())


def test_check_reports_calendar_universe_and_splits_as_training_sees_them(tmp_path, capsys, write_ohlc_csvs):
    from differentiable_market.splits import train_end_cutoff

    root = write_ohlc_csvs(reversal_market(400, 3, seed=1))
    assert cli.main(["data", "check", str(root), "--lookback", "32"]) == 0
    out = capsys.readouterr().out
    cfg = DataConfig(root=str(root))
    market = load_market(cfg, 35, train_end_cutoff(cfg, 32))
    splits = make_splits(market.n_bars, cfg, 32)
    assert f"3 file(s) match '*'; 3 asset(s) kept: {', '.join(market.symbols)}" in out
    assert f"Calendar (intersection): {market.n_bars} bars, {str(market.timestamps[0])[:10]}" in out
    for name in ("train", "validation", "test"):
        a, b = splits.bounds(name)
        assert f"({b - a} bars)" in out and f"bars {a:>6} .. {b - 1:<6}" in out
    assert out.strip().splitlines()[-1] == f"OK: {root} loads as training would load it."


def test_check_gives_the_loaders_error_and_exit_2_on_bad_data(tmp_path, capsys, write_ohlc_csvs):
    root = write_ohlc_csvs(random_walk_market(200, 2, seed=0))
    path = sorted(root.glob("*.csv"))[0]
    lines = path.read_text().splitlines()
    row = lines[50].split(",")
    row[4] = "-3.2"  # close
    lines[50] = ",".join(row)
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["data", "check", str(root), "--lookback", "16"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: row 50 (line 51" in err and "close is -3.2" in err and "Traceback" not in err
    assert cli.main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_check_names_left_out_assets(tmp_path, capsys, write_ohlc_csvs):
    root = write_ohlc_csvs(random_walk_market(200, 3, seed=0))
    assert cli.main(["data", "check", str(root), "--lookback", "16", "--exclude", "S001"]) == 0
    out = capsys.readouterr().out
    assert "Left out (1): S001" in out and "excluded by request: S001" in out
