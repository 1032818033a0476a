"""Causal features and the train-only normaliser (differentiable_market.features)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from differentiable_market import features as features_module
from differentiable_market.config import FeatureConfig
from differentiable_market.data import MarketData
from differentiable_market.errors import ConfigError, DataError
from differentiable_market.features import (
    FeatureSpec,
    compute_features,
    feature_names,
    first_valid_bars,
    fit_feature_spec,
    raw_features,
    warmup_bars,
)

CFG = FeatureConfig(return_windows=(1, 5, 20), volatility_window=10)


def _perturb_after(m: MarketData, t: int, seed: int = 99) -> MarketData:
    """Same market up to bar t; every price and volume after t replaced by a different (valid) path."""
    rng = np.random.default_rng(seed)
    scale = np.ones((m.n_bars, m.n_assets))
    scale[t + 1 :] = np.exp(rng.normal(0.0, 0.3, (m.n_bars - t - 1, m.n_assets)))
    vol = m.volume.copy()
    vol[t + 1 :] = rng.uniform(0.0, 1e9, vol[t + 1 :].shape)
    return MarketData.from_arrays(
        m.symbols, m.timestamps, m.open * scale, m.high * scale, m.low * scale, m.close * scale, vol
    )


def test_names_shape_and_dtype(synthetic_ohlc) -> None:
    m = synthetic_ohlc(120, 3, seed=0)
    spec = fit_feature_spec(m, CFG, train_end=80)
    feats = compute_features(m, spec)
    assert spec.names == feature_names(CFG) == (
        "log_return_1", "log_return_5", "log_return_20", "volatility_10", "log_high_low", "log_close_open",
        "overnight_gap", "log_volume_rel_10", "log_close_ma_5", "log_close_ma_10", "log_close_ma_20",
        "autocorr_20", "ar_forecast_20", "xs_log_return_1", "xs_log_return_5", "xs_log_return_20",
        "xs_log_close_ma_5", "xs_log_close_ma_10", "xs_log_close_ma_20",
    )
    assert first_valid_bars(CFG) == (1, 5, 20, 10, 0, 0, 1, 9, 4, 9, 19, 21, 21, 1, 5, 20, 4, 9, 19)
    assert feats.shape == (120, 3, spec.n_features) and feats.dtype == np.float32
    assert warmup_bars(CFG) == 21
    plain = FeatureConfig(return_windows=(1, 5, 20), volatility_window=10, ma_windows=(), cross_sectional=False,
                          autocorr_windows=())
    assert feature_names(plain) == feature_names(CFG)[:8]  # the features before moving averages, in their order


def test_raw_values_match_definitions(synthetic_ohlc) -> None:
    m = synthetic_ohlc(60, 2, seed=1)
    raw = raw_features(m, CFG)
    names = feature_names(CFG)
    col = {n: raw[..., i] for i, n in enumerate(names)}
    c, t = m.close, 37
    np.testing.assert_allclose(col["log_return_1"][t], np.log(c[t] / c[t - 1]), rtol=1e-12)
    np.testing.assert_allclose(col["log_return_20"][t], np.log(c[t] / c[t - 20]), rtol=1e-12)
    r1 = np.diff(np.log(c), axis=0)[t - 10 : t]  # the 10 one-bar returns ending at bar t
    np.testing.assert_allclose(col["volatility_10"][t], np.sqrt((r1**2).mean(axis=0)), rtol=1e-9)
    np.testing.assert_allclose(col["log_high_low"][t], np.log(m.high[t] / m.low[t]), rtol=1e-12)
    np.testing.assert_allclose(col["log_close_open"][t], np.log(c[t] / m.open[t]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(col["overnight_gap"][t], np.log(m.open[t] / c[t - 1]), rtol=1e-12, atol=1e-15)
    lv = np.log1p(m.volume)
    np.testing.assert_allclose(col["log_volume_rel_10"][t], lv[t] - lv[t - 9 : t + 1].mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(col["log_close_ma_10"][t], np.log(c[t] / c[t - 9 : t + 1].mean(axis=0)), rtol=1e-9)
    r20 = np.log(c[t] / c[t - 20])
    np.testing.assert_allclose(col["xs_log_return_20"][t], r20 - r20.mean(), rtol=1e-9)
    # too little history: exactly 0, never backfilled
    assert (col["log_return_20"][:20] == 0).all() and (col["log_return_20"][20] != 0).all()
    assert (col["volatility_10"][:10] == 0).all() and (col["volatility_10"][10] > 0).all()
    assert (col["overnight_gap"][0] == 0).all() and (col["log_volume_rel_10"][:9] == 0).all()
    assert (col["log_close_ma_20"][:19] == 0).all() and (col["log_close_ma_20"][19] != 0).all()
    assert (col["xs_log_close_ma_5"][:4] == 0).all() and (col["xs_log_close_ma_5"][4] != 0).all()
    r1 = np.diff(np.log(c), axis=0)  # r1[s - 1] is the return into bar s
    rho = (r1[t - 20 : t] * r1[t - 21 : t - 1]).sum(axis=0) / (r1[t - 20 : t] ** 2).sum(axis=0)
    np.testing.assert_allclose(col["autocorr_20"][t], rho, rtol=1e-9)
    np.testing.assert_allclose(col["ar_forecast_20"][t], rho * r1[t - 1], rtol=1e-9)
    assert (col["autocorr_20"][:21] == 0).all() and (col["autocorr_20"][21] != 0).all()
    assert (col["ar_forecast_20"][:21] == 0).all() and (col["ar_forecast_20"][21] != 0).all()


def test_close_to_moving_average_by_hand() -> None:
    close = np.array([[1.0, 10.0], [2.0, 10.0], [4.0, 10.0], [8.0, 5.0], [2.0, 20.0]])
    m = MarketData.from_arrays(("A", "B"), None, close, close, close, close)
    cfg = FeatureConfig(return_windows=(1,), volatility_window=2, ma_windows=(2, 3))
    col = dict(zip(feature_names(cfg), np.moveaxis(raw_features(m, cfg), -1, 0)))
    ma2 = np.log([[1, 1], [2 / 1.5, 1], [4 / 3, 1], [8 / 6, 5 / 7.5], [2 / 5, 20 / 12.5]])
    ma3 = np.log([[1, 1], [1, 1], [4 / (7 / 3), 1], [8 / (14 / 3), 5 / (25 / 3)], [2 / (14 / 3), 20 / (35 / 3)]])
    ma3[:2] = 0.0  # the first full 3-bar window ends at bar 2
    np.testing.assert_allclose(col["log_close_ma_2"], ma2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(col["log_close_ma_3"], ma3, rtol=1e-12, atol=1e-15)
    # minus the two assets' mean: half their difference, with opposite signs
    np.testing.assert_allclose(col["xs_log_close_ma_3"][:, 0], (ma3[:, 0] - ma3[:, 1]) / 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(col["xs_log_close_ma_3"][:, 1], -col["xs_log_close_ma_3"][:, 0], rtol=0, atol=1e-15)
    r1 = np.vstack([np.zeros((1, 2)), np.diff(np.log(close), axis=0)])
    np.testing.assert_allclose(col["xs_log_return_1"], r1 - r1.mean(axis=1, keepdims=True), rtol=1e-12, atol=1e-15)


def test_autocorrelation_by_hand() -> None:
    # log returns: asset A alternates +-0.1 (autocorrelation -1), asset B repeats 0.1 (+1), asset C is flat (0)
    r = np.array([[0.0, 0.0, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.1, 0.0], [0.1, 0.1, 0.0], [-0.1, 0.1, 0.0],
                  [0.2, 0.1, 0.0]])
    close = np.exp(np.cumsum(r, axis=0))
    m = MarketData.from_arrays(("A", "B", "C"), None, close, close, close, close)
    cfg = FeatureConfig(return_windows=(1,), volatility_window=2, ma_windows=(), cross_sectional=False,
                        autocorr_windows=(2, 3))
    col = dict(zip(feature_names(cfg), np.moveaxis(raw_features(m, cfg), -1, 0)))
    # window 2 at bar 3: returns into bars 2, 3 against those into bars 1, 2
    np.testing.assert_allclose(col["autocorr_2"][3], [-1.0, 1.0, 0.0], rtol=1e-12)
    np.testing.assert_allclose(col["ar_forecast_2"][3], [-0.1, 0.1, 0.0], rtol=1e-12)
    # window 2 at bar 5: (0.2 x -0.1 + -0.1 x 0.1) / (0.2^2 + 0.1^2) for A
    np.testing.assert_allclose(col["autocorr_2"][5, 0], -0.03 / 0.05, rtol=1e-12)
    np.testing.assert_allclose(col["ar_forecast_2"][5, 0], -0.03 / 0.05 * 0.2, rtol=1e-12)
    # window 3 at bar 5: (0.2 x -0.1 - 0.1 x 0.1 - 0.1 x 0.1) / (0.04 + 0.01 + 0.01)
    np.testing.assert_allclose(col["autocorr_3"][5, 0], -0.04 / 0.06, rtol=1e-12)
    assert (col["autocorr_2"][:3] == 0).all() and (col["autocorr_3"][:4] == 0).all()
    assert (col["autocorr_2"][:, 2] == 0).all()  # no returns: 0, not a division by zero


def test_cross_sectional_features_sum_to_zero_over_assets(synthetic_ohlc) -> None:
    m = synthetic_ohlc(90, 5, seed=11)
    raw = raw_features(m, CFG)
    names = feature_names(CFG)
    relative = [i for i, name in enumerate(names) if name.startswith("xs_")]
    assert [names[i] for i in relative] == [f"xs_{names[i]}" for i in (0, 1, 2, 8, 9, 10)]
    for i in relative:
        np.testing.assert_allclose(raw[..., i].sum(axis=1), 0.0, atol=1e-13)
        assert np.abs(raw[30:, :, i]).min() > 0  # not trivially 0
    one = synthetic_ohlc(90, 1, seed=11)
    raw_one = raw_features(one, CFG)
    assert (raw_one[..., relative] == 0).all()  # a single asset is its own mean
    spec = fit_feature_spec(one, CFG, 60)
    assert all(spec.std[i] == 1.0 for i in relative) and np.isfinite(compute_features(one, spec)).all()


@pytest.mark.parametrize("t", [0, 5, 19, 20, 63, 118])
def test_features_are_causal(synthetic_ohlc, t: int) -> None:
    m = synthetic_ohlc(120, 3, seed=2)
    spec = fit_feature_spec(m, CFG, train_end=60)
    base = compute_features(m, spec)
    assert {"log_close_ma_20", "xs_log_return_20", "xs_log_close_ma_20"} <= set(spec.names)  # every feature is checked
    moved = compute_features(_perturb_after(m, t), spec)
    np.testing.assert_array_equal(base[: t + 1], moved[: t + 1])
    if t < 118:
        assert not np.array_equal(base[t + 1 :], moved[t + 1 :])


def test_normaliser_is_fitted_on_train_only(synthetic_ohlc) -> None:
    m = synthetic_ohlc(200, 4, seed=3)
    train_end = 120
    spec = fit_feature_spec(m, CFG, train_end)
    other = fit_feature_spec(_perturb_after(m, train_end - 1), CFG, train_end)
    assert spec.mean == other.mean and spec.std == other.std
    changed = fit_feature_spec(_perturb_after(m, train_end - 2), CFG, train_end)
    assert changed.mean != spec.mean
    # z-scored over the complete-window training bars, pooled across assets
    feats = compute_features(m, spec)
    for f, start in enumerate(first_valid_bars(CFG)):
        x = feats[start:train_end, :, f]
        assert x.mean() == pytest.approx(0.0, abs=1e-5) and x.std() == pytest.approx(1.0, abs=1e-5)


def test_normalise_off_gives_raw_features(synthetic_ohlc) -> None:
    m = synthetic_ohlc(80, 2, seed=4)
    cfg = FeatureConfig(return_windows=(1, 3), volatility_window=5, normalise=False)
    spec = fit_feature_spec(m, cfg, 40)
    assert set(spec.mean) == {0.0} and set(spec.std) == {1.0}
    np.testing.assert_allclose(compute_features(m, spec), raw_features(m, cfg).astype(np.float32))


def test_extreme_but_valid_data_gives_finite_bounded_features() -> None:
    n = 60
    close = np.full((n, 3), 100.0)
    close[30:, 0] = 50.0  # a 50% one-day crash
    close[:, 1] = 1e-4
    close[20:, 1] = 1e6  # a jump of ten orders of magnitude
    close[:, 2] = np.geomspace(1e-4, 1e6, n)
    vol = np.zeros((n, 3))
    vol[:, 0] = 1e15
    vol[::7, 0] = 0.0
    m = MarketData.from_arrays(("A", "B", "C"), None, close, close, close, close, vol)
    spec = fit_feature_spec(m, CFG, 40)
    feats = compute_features(m, spec)
    assert np.isfinite(feats).all()
    assert np.abs(feats).max() <= spec.clip
    assert np.isfinite(spec.mean).all() and np.isfinite(spec.std).all()


def test_flat_market_and_missing_volume() -> None:
    flat = np.full((50, 2), 3.0)
    m = MarketData.from_arrays(("A", "B"), None, flat, flat, flat, flat)  # no volume: zeros
    spec = fit_feature_spec(m, CFG, 30)
    assert spec.std == (1.0,) * spec.n_features  # nothing varies: left unscaled, not divided by 0
    assert (compute_features(m, spec) == 0).all()


def test_spec_round_trips_through_json_and_is_strict(synthetic_ohlc) -> None:
    spec = fit_feature_spec(synthetic_ohlc(100, 2, seed=5), CFG, 70)
    again = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    with pytest.raises(ConfigError, match="exactly the keys"):
        FeatureSpec.from_dict({**spec.to_dict(), "extra": 1})
    with pytest.raises(ConfigError, match="unknown key"):
        FeatureSpec.from_dict({**spec.to_dict(), "config": {**spec.to_dict()["config"], "bogus": 1}})
    with pytest.raises(ConfigError, match="do not match the feature config"):
        FeatureSpec.from_dict({**spec.to_dict(), "names": list(reversed(spec.names))})
    with pytest.raises(ConfigError, match="stds finite and > 0"):
        FeatureSpec.from_dict({**spec.to_dict(), "std": [0.0] * spec.n_features})


def test_spec_written_before_moving_averages_loads_with_its_own_features(synthetic_ohlc) -> None:
    m = synthetic_ohlc(100, 2, seed=5)
    cfg = FeatureConfig(return_windows=(1, 5, 20), volatility_window=10, ma_windows=(), cross_sectional=False,
                        autocorr_windows=())
    spec = fit_feature_spec(m, cfg, 70)
    legacy = spec.to_dict()
    legacy["config"] = {k: v for k, v in legacy["config"].items()
                        if k not in ("ma_windows", "cross_sectional", "autocorr_windows")}
    again = FeatureSpec.from_dict(json.loads(json.dumps(legacy)))
    assert again == spec and again.n_features == 8
    assert again.names[-1] == "log_volume_rel_10"
    np.testing.assert_array_equal(compute_features(m, again), compute_features(m, spec))
    # a spec that stores the keys keeps them
    full = fit_feature_spec(m, CFG, 70)
    assert FeatureSpec.from_dict(json.loads(json.dumps(full.to_dict()))) == full


def _without(m: MarketData, missing: dict[int, tuple[str, ...]]) -> MarketData:
    """``m`` with the given assets' open/high/low replaced as the loader derives them for files lacking them."""
    o, h, lo = m.open.copy(), m.high.copy(), m.low.copy()
    for i, cols in missing.items():
        if "open" in cols:
            o[:, i] = m.close[:, i]
        if "high" in cols:
            h[:, i] = np.maximum(o[:, i], m.close[:, i])
        if "low" in cols:
            lo[:, i] = np.minimum(o[:, i], m.close[:, i])
    return MarketData.from_arrays(m.symbols, m.timestamps, o, h, lo, m.close, m.volume,
                                  missing_columns=tuple(missing.get(i, ()) for i in range(m.n_assets)))


def test_features_that_need_missing_prices_are_zero_and_left_out_of_the_fit(synthetic_ohlc) -> None:
    m = synthetic_ohlc(150, 4, seed=12)
    part = _without(m, {1: ("open", "high", "low"), 2: ("high", "low"), 3: ("open",)})
    names = feature_names(CFG)
    rng, body, gap = (names.index(n) for n in ("log_high_low", "log_close_open", "overnight_gap"))
    spec = fit_feature_spec(part, CFG, 100)
    assert spec.missing_prices == (("S01", ("open", "high", "low")), ("S02", ("high", "low")), ("S03", ("open",)))
    for raw in (raw_features(part, CFG), compute_features(part, spec)):
        assert (raw[:, 1, [rng, body, gap]] == 0).all()
        assert (raw[:, 2, rng] == 0).all() and (raw[20:, 2, [body, gap]] != 0).all()
        assert (raw[:, 3, [body, gap]] == 0).all() and (raw[20:, 3, rng] != 0).all()
        assert (raw[20:, 0, [rng, body, gap]] != 0).all()
    # The features that need no open/high/low are those of the full data, bit for bit.
    same = [f for f in range(len(names)) if f not in (rng, body, gap)]
    np.testing.assert_array_equal(raw_features(part, CFG)[..., same], raw_features(m, CFG)[..., same])
    # The range is fitted on the assets that have it (S00, S03) only, the body and gap on S00 and S02.
    raw = raw_features(m, CFG)
    assert spec.mean[rng] == pytest.approx(raw[:100, [0, 3], rng].mean(), rel=1e-12)
    assert spec.std[gap] == pytest.approx(raw[1:100, [0, 2], gap].std(), rel=1e-12)
    assert spec.mean[same[0]] == fit_feature_spec(m, CFG, 100).mean[same[0]]


def test_a_feature_no_asset_has_is_left_unscaled_and_zero(synthetic_ohlc) -> None:
    close_only = _without(synthetic_ohlc(80, 2, seed=13), {0: ("open", "high", "low"), 1: ("open", "high", "low")})
    spec = fit_feature_spec(close_only, CFG, 50)
    for name in ("log_high_low", "log_close_open", "overnight_gap"):
        f = spec.names.index(name)
        assert (spec.mean[f], spec.std[f]) == (0.0, 1.0)
        assert (compute_features(close_only, spec)[..., f] == 0).all()
    assert np.isfinite(compute_features(close_only, spec)).all()


def test_missing_prices_round_trip_and_a_spec_without_them_loads(synthetic_ohlc) -> None:
    spec = fit_feature_spec(_without(synthetic_ohlc(100, 2, seed=14), {1: ("open", "high", "low")}), CFG, 70)
    stored = json.loads(json.dumps(spec.to_dict()))
    assert stored["missing_prices"] == {"S01": ["open", "high", "low"]}
    assert FeatureSpec.from_dict(stored) == spec
    legacy = {k: v for k, v in stored.items() if k != "missing_prices"}  # written before the record existed
    assert FeatureSpec.from_dict(legacy).missing_prices == ()
    with pytest.raises(ConfigError, match="missing_prices must map symbols"):
        FeatureSpec.from_dict({**stored, "missing_prices": {"S01": ["close"]}})


@pytest.mark.parametrize("windows", [(1, 5), (0,), (5, 5), (2.5,), (True, 3)])
@pytest.mark.parametrize("field", ["ma_windows", "autocorr_windows"])
def test_ma_and_autocorr_windows_are_checked(windows, field) -> None:
    with pytest.raises(ConfigError, match=f"features.{field} must be distinct integers >= 2"):
        FeatureConfig(**{field: windows})
    assert getattr(FeatureConfig(**{field: ()}), field) == ()


def test_train_end_must_leave_room_after_warmup(synthetic_ohlc) -> None:
    m = synthetic_ohlc(100, 2, seed=6)
    with pytest.raises(DataError, match="too few to fit the feature normaliser"):
        fit_feature_spec(m, CFG, 21)
    with pytest.raises(DataError, match=r"train_end must lie in \(0, 100\]"):
        fit_feature_spec(m, CFG, 101)


def test_sample_features_are_sane(sample_market: MarketData) -> None:
    cfg = FeatureConfig()
    spec = fit_feature_spec(sample_market, cfg, 1500)
    feats = compute_features(sample_market, spec)
    assert np.isfinite(feats).all()
    assert spec.std[spec.names.index("log_return_1")] == pytest.approx(0.02, rel=0.3)  # ~2% daily for these stocks
    assert (np.abs(feats) >= spec.clip).mean() < 1e-3  # clipping is a guard, not a routine event


@pytest.mark.parametrize("cfg", [
    CFG,
    FeatureConfig(return_windows=(2, 30), volatility_window=7),
    FeatureConfig(return_windows=(3,), volatility_window=4, ma_windows=(2, 41)),  # the MA window sets the halo
    FeatureConfig(return_windows=(3,), volatility_window=4, ma_windows=(2,), autocorr_windows=(5, 44)),  # halo
    FeatureConfig(return_windows=(1,), volatility_window=4, ma_windows=(), cross_sectional=False),
])
def test_blocks_of_bars_give_the_whole_array_values_bit_for_bit(synthetic_ohlc, monkeypatch, cfg) -> None:
    # Features are computed a block of bars at a time (features._block_rows); every block size, including blocks
    # shorter than the feature windows, must give what one block over all bars gives, to the last bit.
    m = synthetic_ohlc(157, 3, seed=7)
    filled = np.zeros((157, 3), dtype=bool)
    filled[40:43, 1] = filled[90, 2] = True  # the normaliser leaves forward-filled bars out
    m = MarketData.from_arrays(m.symbols, m.timestamps, m.open, m.high, m.low, m.close, m.volume, filled=filled)
    monkeypatch.setattr(features_module, "_block_rows", lambda n_assets: 10**9)
    raw, spec = raw_features(m, cfg), fit_feature_spec(m, cfg, 120)
    feats = compute_features(m, spec)
    for rows in (1, 2, 6, 7, 29, 30, 31, 64, 156):
        monkeypatch.setattr(features_module, "_block_rows", lambda n_assets, rows=rows: rows)
        np.testing.assert_array_equal(raw_features(m, cfg), raw)
        assert fit_feature_spec(m, cfg, 120) == spec
        np.testing.assert_array_equal(compute_features(m, spec), feats)


# ------------------------------------------------------------------------------------ union calendar


def _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs, max_fill: int = 2) -> MarketData:
    """5 assets over 160 bars: S01 lists at bar 40, S02's last print is bar 110, S03 halts on bars 60..74, S04 lists
    at bar 20 and prints its last bar at 140."""
    import pandas as pd

    from differentiable_market.config import DataConfig
    from differentiable_market.data import load_market

    folder = write_ohlc_csvs(synthetic_ohlc(160, 5, seed=31), tmp_path / "union")
    keep = {"S01": lambda i: i >= 40, "S02": lambda i: i <= 110, "S03": lambda i: not 60 <= i < 75,
            "S04": lambda i: 20 <= i <= 140}
    for sym, rule in keep.items():
        frame = pd.read_csv(folder / f"{sym}.csv", float_precision="round_trip")
        frame[[rule(i) for i in range(len(frame))]].to_csv(folder / f"{sym}.csv", index=False, float_format="%.17g")
    return load_market(DataConfig(root=str(folder), calendar="union", max_fill_bars=max_fill), min_bars=1)


def _with_arrays(m: MarketData, n_bars: int | None = None, **arrays) -> MarketData:
    """``m`` (first ``n_bars`` bars) with some price arrays replaced; mask and calendar kept."""
    t = slice(0, n_bars or m.n_bars)
    get = {k: arrays.get(k, getattr(m, k))[t] for k in ("open", "high", "low", "close", "volume")}
    return MarketData.from_arrays(m.symbols, m.timestamps[t], get["open"], get["high"], get["low"], get["close"],
                                  get["volume"], filled=m.filled[t], calendar=m.calendar, listed=m.listed[t],
                                  tradeable=m.tradeable[t], missing_columns=m.missing_columns)


def test_placeholder_prices_reach_no_feature(tmp_path, synthetic_ohlc, write_ohlc_csvs) -> None:
    m = _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs)
    t = np.arange(m.n_bars)[:, None]
    first = np.where(~m.filled, t, m.n_bars).min(axis=0)
    last = np.where(~m.filled, t, -1).max(axis=0)
    placeholder = ~m.tradeable & ((t < first) | (t > last))
    assert placeholder[:40, 1].all() and placeholder[113:, 2].all() and placeholder[:20, 4].all()
    rng = np.random.default_rng(0)
    price = rng.uniform(0.01, 1e4, placeholder.shape)
    other = _with_arrays(m, **{name: np.where(placeholder, new, getattr(m, name)) for name, new in (
        ("open", price), ("high", price * 1.5), ("low", price / 1.5), ("close", price),
        ("volume", rng.uniform(0, 1e9, placeholder.shape)))})
    assert not np.array_equal(other.close, m.close)
    np.testing.assert_array_equal(raw_features(other, CFG), raw_features(m, CFG))
    spec = fit_feature_spec(m, CFG, 100)
    assert fit_feature_spec(other, CFG, 100) == spec
    np.testing.assert_array_equal(compute_features(other, spec), compute_features(m, spec))


def test_union_features_warm_up_from_each_listing_and_are_zero_where_untradeable(
        tmp_path, synthetic_ohlc, write_ohlc_csvs) -> None:
    m = _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs)
    raw = raw_features(m, CFG)
    names, starts = feature_names(CFG), first_valid_bars(CFG)
    own = [f for f, n in enumerate(names) if not n.startswith("xs_")]
    # S01 (listed at 40) has exactly the features of its own file loaded alone, shifted by its listing bar.
    alone = MarketData.from_arrays(("S01",), m.timestamps[40:], m.open[40:, 1:2], m.high[40:, 1:2], m.low[40:, 1:2],
                                   m.close[40:, 1:2], m.volume[40:, 1:2])
    np.testing.assert_array_equal(raw[40:, 1, own], raw_features(alone, CFG)[:, 0, own])
    for f in range(len(names)):
        assert (raw[: 40 + starts[f], 1, f] == 0).all()
    assert (raw[41:, 1, names.index("log_return_1")] != 0).all()
    # untradeable bars are 0: S02 from bar 113 (last print 110, max_fill_bars 2), S03 on bars 62..74 of its halt
    assert (raw[113:, 2] == 0).all() and (raw[62:75, 3] == 0).all()
    assert (raw[60:62, 3, names.index("log_return_20")] != 0).all() and (raw[75:, 3, 0] != 0).all()


def test_union_cross_sectional_means_run_over_the_valid_assets(tmp_path, synthetic_ohlc, write_ohlc_csvs) -> None:
    m = _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs)
    raw = raw_features(m, CFG)
    names = feature_names(CFG)
    r, xs = names.index("log_return_5"), names.index("xs_log_return_5")
    t = 42  # S01 is listed but its 5-bar window is not complete; S04 is valid; all others are
    valid = [0, 2, 3, 4]
    np.testing.assert_allclose(raw[t, valid, xs], raw[t, valid, r] - raw[t, valid, r].mean(), rtol=0, atol=1e-15)
    assert raw[t, 1, xs] == 0.0
    t = 120  # S02 gone: the mean over the other four
    valid = [0, 1, 3, 4]
    np.testing.assert_allclose(raw[t, valid, xs], raw[t, valid, r] - raw[t, valid, r].mean(), rtol=0, atol=1e-15)


def test_union_normaliser_is_fitted_on_valid_printed_training_bars(tmp_path, synthetic_ohlc, write_ohlc_csvs) -> None:
    m = _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs)
    raw = raw_features(m, CFG)
    spec = fit_feature_spec(m, CFG, 120)
    names, starts = feature_names(CFG), first_valid_bars(CFG)
    t = np.arange(120)[:, None]
    first = np.array([0, 40, 0, 0, 20])
    for f in (names.index("log_return_1"), names.index("volatility_10"), names.index("xs_log_close_ma_20")):
        keep = ~m.filled[:120] & m.tradeable[:120] & (t >= first + starts[f])
        x = raw[:120, :, f][keep]
        assert spec.mean[f] == pytest.approx(x.mean(), rel=1e-9, abs=1e-15)
        assert spec.std[f] == pytest.approx(x.std(), rel=1e-9)


@pytest.mark.parametrize("t", [30, 45, 70, 111, 115, 159])
def test_union_features_up_to_t_do_not_depend_on_later_bars(tmp_path, synthetic_ohlc, write_ohlc_csvs, t) -> None:
    m = _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs)
    np.testing.assert_array_equal(raw_features(_with_arrays(m, t + 1), CFG), raw_features(m, CFG)[: t + 1])


def test_union_features_are_the_same_in_blocks_of_any_size(tmp_path, synthetic_ohlc, write_ohlc_csvs,
                                                             monkeypatch) -> None:
    m = _union_market(tmp_path, synthetic_ohlc, write_ohlc_csvs)
    monkeypatch.setattr(features_module, "_block_rows", lambda n_assets: 10**9)
    raw, spec = raw_features(m, CFG), fit_feature_spec(m, CFG, 120)
    feats = compute_features(m, spec)
    for rows in (1, 7, 30, 41, 159):
        monkeypatch.setattr(features_module, "_block_rows", lambda n_assets, rows=rows: rows)
        np.testing.assert_array_equal(raw_features(m, CFG), raw)
        # the union normaliser accumulates its moments block by block: equal to rounding
        again = fit_feature_spec(m, CFG, 120)
        np.testing.assert_allclose(again.mean, spec.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(again.std, spec.std, rtol=1e-12)
        np.testing.assert_array_equal(compute_features(m, spec), feats)
