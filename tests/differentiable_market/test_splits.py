"""Chronological splits with embargo (differentiable_market.splits)."""

from __future__ import annotations

import json

import pytest

from differentiable_market.config import DataConfig
from differentiable_market.errors import ConfigError, DataError
from differentiable_market.splits import Splits, make_splits


def test_default_splits_of_the_sample_length() -> None:
    s = make_splits(2148, DataConfig(), lookback=64)
    # 2148 - 2 * 64 = 2020 bars to share: round(0.15 * 2020) = 303 each to validation and test, 1414 to train
    assert s.embargo == 64
    assert s.train == (0, 1414)
    assert s.validation == (1414 + 64, 1414 + 64 + 303)
    assert s.test == (1781 + 64, 2148)
    assert s.test[1] - s.test[0] == 303


@pytest.mark.parametrize("n_bars,lookback,embargo", [(500, 32, None), (1000, 100, 0), (300, 16, 5), (97, 8, None)])
def test_splits_are_ordered_disjoint_and_embargoed(n_bars: int, lookback: int, embargo: int | None) -> None:
    cfg = DataConfig(embargo_bars=embargo, val_fraction=0.2, test_fraction=0.1)
    s = make_splits(n_bars, cfg, lookback)
    gap = lookback if embargo is None else embargo
    assert s.embargo == gap
    assert s.train[0] == 0 and s.test[1] == n_bars
    assert s.validation[0] - s.train[1] == gap and s.test[0] - s.validation[1] == gap
    assert s.train[1] - s.train[0] >= lookback + 3
    assert min(s.validation[1] - s.validation[0], s.test[1] - s.test[0]) >= 3
    used = (s.train[1] - s.train[0]) + (s.validation[1] - s.validation[0]) + (s.test[1] - s.test[0])
    assert used + 2 * gap == n_bars


def test_bounds_and_round_trip() -> None:
    s = make_splits(400, DataConfig(), lookback=20)
    assert s.bounds("all") == (0, 400)
    assert s.bounds("train") == s.train and s.bounds("validation") == s.validation and s.bounds("test") == s.test
    with pytest.raises(ConfigError, match="unknown split 'valid'"):
        s.bounds("valid")  # type: ignore[arg-type]
    assert Splits.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ConfigError, match="exactly the keys"):
        Splits.from_dict({**s.to_dict(), "extra": 0})


def test_too_little_data_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"200 bars are too few .*lookback 90 and embargo 90: train would get 14 bars "
                                        r"\(needs >= lookback \+ 3 = 93\).*shorter --lookback"):
        make_splits(200, DataConfig(), lookback=90)
    with pytest.raises(DataError, match=r"validation 2 and test 2 \(need >= 3 each\)"):
        make_splits(30, DataConfig(embargo_bars=0, val_fraction=0.05, test_fraction=0.05), lookback=8)


def test_invalid_hand_made_splits_are_rejected() -> None:
    with pytest.raises(ConfigError, match="embargo bars apart"):
        Splits(n_bars=100, train=(0, 50), validation=(55, 70), test=(75, 100), embargo=10)
    with pytest.raises(ConfigError, match="ordered"):
        Splits(n_bars=100, train=(0, 50), validation=(60, 55), test=(75, 100), embargo=0)


def test_universe_cutoffs_end_at_the_training_split() -> None:
    import numpy as np

    from differentiable_market.splits import through_cutoff, train_end_cutoff

    calendar = np.datetime64("2000-01-01", "ns") + np.arange(2148) * np.timedelta64(1, "D")
    assert train_end_cutoff(DataConfig(), lookback=64)(calendar) == 1414  # as in the default-splits test above
    explicit = DataConfig(split_bars=(0, 500, 540, 700, 740, 900))
    assert train_end_cutoff(explicit, lookback=32)(calendar) == 500
    assert through_cutoff("2000-01-10T00:00:00")(calendar) == 10  # bars 0..9 are on or before it
    assert through_cutoff("2000-01-10T12:00:00")(calendar) == 10
    assert through_cutoff("1999-01-01T00:00:00")(calendar) == 0
