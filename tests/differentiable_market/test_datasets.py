import sys

import numpy as np
import pytest

from differentiable_market.config import DataConfig
from differentiable_market.data import MarketData, load_market
from differentiable_market.datasets import nyse_o, trading_days, write_market_folder
from differentiable_market.errors import DataError
from differentiable_market.metrics import bars_per_year
from differentiable_market.synthetic import reversal_market


def test_trading_days_skip_weekends_and_the_nyse_holidays():
    days = trading_days("2024-01-01", 253)  # New Year's Day: rolled forward to the 2nd
    d = days.astype("datetime64[D]")
    assert str(d[0]) == "2024-01-02" and np.is_busday(d).all() and (np.diff(d.view(np.int64)) > 0).all()
    for holiday in ("2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-07-04", "2024-09-02",
                    "2024-11-28", "2024-12-25"):  # MLK, Presidents', Good Friday, Memorial, ..., Christmas
        assert np.datetime64(holiday) not in d
    assert str(d[-1]) == "2024-12-31"  # 253 trading days in 2024 on these rules (the NYSE's 252 add Juneteenth)
    assert 251 <= bars_per_year(trading_days("1962-07-03", 5652)) <= 255


def _assert_same_market(a: MarketData, b: MarketData) -> None:
    """Same timestamps, and the same prices and volumes symbol by symbol (the loader sorts the symbols)."""
    assert b.symbols == tuple(sorted(a.symbols))
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    order = [a.symbols.index(s) for s in b.symbols]
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name)[:, order], rtol=1e-12, atol=0)


def test_write_market_folder_round_trips_through_the_loader(tmp_path):
    market = reversal_market(60, 3, seed=2)
    folder = write_market_folder(market, tmp_path / "new" / "market")
    assert sorted(p.name for p in folder.iterdir()) == ["S000.csv", "S001.csv", "S002.csv"]
    _assert_same_market(market, load_market(DataConfig(root=str(folder)), min_bars=1))


def test_write_market_folder_round_trips_intraday_times(tmp_path):
    rng = np.random.default_rng(0)
    close = np.exp(np.cumsum(rng.normal(0, 0.01, (40, 2)), axis=0))
    ts = np.datetime64("2021-03-01T14:30", "ns") + np.arange(40) * np.timedelta64(90, "s")
    volume = rng.uniform(0, 5, (40, 2))
    market = MarketData.from_arrays(("Y", "X"), ts, close, close * 1.01, close * 0.99, close, volume)  # unsorted
    _assert_same_market(market, load_market(DataConfig(root=str(write_market_folder(market, tmp_path))), min_bars=1))


def test_write_market_folder_keeps_a_close_only_asset_close_only(tmp_path):
    full = reversal_market(30, 2, seed=3)
    c = full.close
    market = MarketData.from_arrays(full.symbols, full.timestamps, np.column_stack([full.open[:, 0], c[:, 1]]),
                                    np.column_stack([full.high[:, 0], c[:, 1]]),
                                    np.column_stack([full.low[:, 0], c[:, 1]]), c, full.volume,
                                    missing_columns=((), ("open", "high", "low")))
    folder = write_market_folder(market, tmp_path / "m")
    assert (folder / "S001.csv").read_text().splitlines()[0] == "timestamp,close,volume"
    back = load_market(DataConfig(root=str(folder)), min_bars=1)
    _assert_same_market(market, back)
    assert back.missing_columns == market.missing_columns


def test_write_market_folder_refuses_a_non_empty_folder_and_bad_symbols(tmp_path):
    market = reversal_market(20, 2, seed=0)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=f"{tmp_path}.* is not empty"):
        write_market_folder(market, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    bad = MarketData.from_arrays(("a/b",), None, *[market.close[:, :1]] * 4)
    with pytest.raises(DataError, match="cannot be a file name"):
        write_market_folder(bad, tmp_path / "bad")


def test_nyse_o_without_the_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "universal", None)  # makes ``import universal`` fail
    with pytest.raises(DataError, match="uv sync --group crosscheck"):
        nyse_o()


def test_nyse_o_is_covers_set_from_price_1():
    pytest.importorskip("universal", reason="the NYSE set ships with universal-portfolios: uv sync --group crosscheck")
    m = nyse_o()
    assert (m.n_bars, m.n_assets) == (5652, 36)
    assert m.symbols == tuple(sorted(m.symbols)) and m.symbols[:3] == ("A", "B", "C") and m.symbols[-1] == "x7"
    c = m.close
    np.testing.assert_array_equal(c[0], 1.0)
    np.testing.assert_allclose(c[1, 0] / c[0, 0], 1.01515, rtol=1e-12)  # the first price relative of the first stock
    np.testing.assert_allclose(c[2, 0] / c[1, 0], 1.01493, rtol=1e-12)
    for name in ("open", "high", "low"):
        np.testing.assert_array_equal(getattr(m, name), c)
    np.testing.assert_array_equal(m.volume, 0.0)
    # Final wealths published for this set (Li & Hoi's OLPS survey, 2014): the best stock 54.14, the market
    # (buy and hold from equal weight) 14.50, the uniform constant-rebalanced portfolio 27.08.
    np.testing.assert_allclose(c[-1].max(), 54.14, atol=0.005)
    np.testing.assert_allclose(c[-1].mean(), 14.50, atol=0.005)
    np.testing.assert_allclose(np.prod((c[1:] / c[:-1]).mean(axis=1)), 27.08, atol=0.005)
    assert 251 <= bars_per_year(m.timestamps) <= 255
