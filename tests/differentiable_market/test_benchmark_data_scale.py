"""benchmarks/data_scale.py at a tiny size: the data set it writes is what it claims, and its chain measures the
package's own loader, features and tensors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from differentiable_market.config import FeatureConfig
from differentiable_market.features import feature_names

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_scale.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("data_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_written_data_and_what_the_loader_keeps(script, tmp_path: Path) -> None:
    spec = script.DataSpec(assets=10, bars=4_000, seed=3, missing_rate=0.01, late_share=0.3, late_window=0.2,
                           delist_share=0.1, delist_window=0.05)
    manifest = script.write_dataset(spec, tmp_path)
    plan = {p["symbol"]: p for p in manifest["plan"]}
    early = next(s for s, p in plan.items() if p["outage"] == 1_200)
    late = next(s for s, p in plan.items() if p["outage"] == 3_720)
    rows = 0
    for sym, p in plan.items():
        frame = pd.read_parquet(tmp_path / f"{sym}.parquet")
        rows += len(frame)
        bars = (frame["timestamp"].astype("int64").to_numpy() - script.START.astype(np.int64)) // script.MINUTE_NS
        assert (bars[0], bars[-1]) == (p["first"], p["last"])  # listed and delisted where the plan says
        gaps = np.diff(bars) - 1
        assert gaps.max() == (script.OUTAGE_BARS if sym in (early, late) else 3)  # no missing run over 3 bars
        assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
        assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert rows == manifest["rows"]
    assert sum(p["first"] > 0 for p in plan.values()) == 3 and sum(p["last"] < 3_999 for p in plan.values()) == 1

    meter, info = script.run_chain(tmp_path, lookback=16)
    expected = script.expected_survivors(spec, manifest["plan"])
    # Every asset but the one with an outage in the training split is kept, on the span all of them are listed.
    assert info["assets_kept"] == 9 and info["dropped"] == [early] and info["late_gaps"] == [late]
    assert info["bars_kept"] == expected["calendar_bars"] == expected["calendar_last_bar"] - expected[
        "calendar_first_bar"] + 1
    assert info["features_shape"] == [expected["calendar_bars"], 9, len(feature_names(FeatureConfig()))]
    assert meter.records["read"].calls == 10 and meter.records["align"].calls == 1
    for name in ("read", "align", "fingerprint", "prepare_market", "fit normaliser", "features", "chain"):
        r = meter.records[name]
        assert r.wall_s > 0 and r.peak_rss >= max(r.start_rss, r.end_rss) > 0
    assert meter.records["chain"].peak_rss == max(r.peak_rss for r in meter.records.values())


def test_the_union_calendar_keeps_every_bar_and_asset(script, tmp_path: Path) -> None:
    spec = script.DataSpec(assets=10, bars=4_000, seed=3, missing_rate=0.01, late_share=0.3, late_window=0.2,
                           delist_share=0.1, delist_window=0.05)
    manifest = script.write_dataset(spec, tmp_path)
    meter, info = script.run_chain(tmp_path, lookback=16, calendar="union")
    assert info["calendar"] == "union" and info["assets_kept"] == 10 and info["dropped"] == []
    assert info["bars_kept"] == 4_000  # from the earliest first bar to the latest last bar
    listed = sum(p["last"] - p["first"] + 1 for p in manifest["plan"])
    assert 0.9 * listed / 40_000 < info["tradeable_share"] <= listed / 40_000 + 0.001
    assert meter.records["align"].calls == 1 and meter.records["read"].calls == 10


def test_the_chain_leaves_the_package_functions_unwrapped(script, tmp_path: Path) -> None:
    from differentiable_market import data, trainer

    before = (data._read_series, data._align, trainer.fit_feature_spec, trainer.compute_features)
    script.write_dataset(script.DataSpec(3, 2_000, 0, 0.0, 0.0, 0.2, 0.0, 0.05), tmp_path)
    script.run_chain(tmp_path, lookback=16)
    assert (data._read_series, data._align, trainer.fit_feature_spec, trainer.compute_features) == before


def test_the_training_command_runs_on_the_calendar_of_the_chain(script, tmp_path: Path) -> None:
    cmd = script.training_command(tmp_path, 20, ["--lookback", "32"], tmp_path / "runs", "union")
    assert cmd[cmd.index("--calendar") + 1] == "union" and cmd[cmd.index("--epochs") + 1] == "20"
    assert cmd[-2:] == ["--lookback", "32"]  # --train-args come last, so they override the defaults
    default = script.training_command(tmp_path, 20, [], tmp_path / "runs")
    assert default[default.index("--calendar") + 1] == "intersection"


@pytest.mark.slow
def test_training_runs_on_the_union_calendar_it_was_asked_for(script, tmp_path: Path) -> None:
    """--calendar union --train-steps N trains on the union calendar (a late listing and an early delisting kept);
    about 25 s on a loaded 2-core machine, most of it the child's start-up and its end-of-run outputs."""
    import json

    spec = script.DataSpec(assets=3, bars=2_000, seed=1, missing_rate=0.0, late_share=0.4, late_window=0.2,
                           delist_share=0.4, delist_window=0.05)
    manifest = script.write_dataset(spec, tmp_path / "data")
    assert any(p["first"] > 0 for p in manifest["plan"]) and any(p["last"] < 1_999 for p in manifest["plan"])
    train = script.run_training(tmp_path / "data", 2, ["--lookback", "16", "--batch-windows", "2",
                                                       "--rollout-groups", "2", "--hidden-size", "8", "--no-compile"],
                                tmp_path, calendar="union")
    assert train["steps"] == 2 and train["s_per_step_after_first"] > 0
    (config,) = (tmp_path / "runs").glob("*/config.json")
    assert json.loads(config.read_text())["config"]["data"]["calendar"] == "union"
