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
        "overnight_gap", "log_volume_rel_10",
    )
    assert feats.shape == (120, 3, spec.n_features) and feats.dtype == np.float32
    assert warmup_bars(CFG) == 20


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
    # too little history: exactly 0, never backfilled
    assert (col["log_return_20"][:20] == 0).all() and (col["log_return_20"][20] != 0).all()
    assert (col["volatility_10"][:10] == 0).all() and (col["volatility_10"][10] > 0).all()
    assert (col["overnight_gap"][0] == 0).all() and (col["log_volume_rel_10"][:9] == 0).all()


@pytest.mark.parametrize("t", [0, 5, 19, 20, 63, 118])
def test_features_are_causal(synthetic_ohlc, t: int) -> None:
    m = synthetic_ohlc(120, 3, seed=2)
    spec = fit_feature_spec(m, CFG, train_end=60)
    base = compute_features(m, spec)
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


@pytest.mark.parametrize("cfg", [CFG, FeatureConfig(return_windows=(2, 30), volatility_window=7)])
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
