"""Loader, validation and alignment (differentiable_market.data)."""

from __future__ import annotations

import gzip
import shutil
import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from differentiable_market.config import DataConfig
from differentiable_market.data import (
    BUNDLED_SOURCE,
    MarketData,
    bundled_sample_dir,
    execution_note,
    load_market,
    resolve_data_root,
    symbols_without_open,
)
from differentiable_market.errors import DataError

GOOD_ROWS = [
    ("2021-01-04", 10.0, 11.0, 9.5, 10.5, 1000),
    ("2021-01-05", 10.5, 10.8, 10.1, 10.2, 1200),
    ("2021-01-06", 10.2, 10.9, 10.0, 10.8, 900),
    ("2021-01-07", 10.8, 11.2, 10.6, 11.0, 1100),
    ("2021-01-08", 11.0, 11.1, 10.4, 10.6, 1000),
]
HEADER = "timestamp,open,high,low,close,volume"


def _csv(rows: list[tuple], header: str = HEADER) -> str:
    return "\n".join([header, *(",".join(str(x) for x in r) for r in rows)]) + "\n"


def _with(row: int, col: int, value: object) -> list[tuple]:
    """GOOD_ROWS with the cell at 0-based (row, col) replaced."""
    rows = [list(r) for r in GOOD_ROWS]
    rows[row][col] = value
    return [tuple(r) for r in rows]


def _load(folder: Path, min_bars: int = 1, **kw: object) -> MarketData:
    return load_market(DataConfig(root=str(folder), **kw), min_bars=min_bars)


# ------------------------------------------------------------------------------------------------ bundled sample


def test_bundled_sample_loads_aligned_and_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./trainingdata here, so the default root falls back to the sample
    load_market(DataConfig(), min_bars=1)  # warm-up: pandas' lazy imports
    t0 = time.perf_counter()
    m = load_market(DataConfig(), min_bars=200)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"loading the bundled sample took {elapsed:.3f}s"
    assert m.symbols == ("AAPL", "GOOG", "IBM", "MSFT")
    assert (m.n_bars, m.n_assets) == (2148, 4)
    assert m.source == BUNDLED_SOURCE
    assert not m.filled.any() and m.dropped == ()
    assert str(m.timestamps[0]) == "2004-08-19T00:00:00.000000000"
    assert str(m.timestamps[-1]) == "2013-03-01T00:00:00.000000000"
    assert any("bundled sample" in n for n in m.notes)
    fp = m.fingerprint()
    assert fp["first_timestamp"] == "2004-08-19" and fp["last_timestamp"] == "2013-03-01" and fp["n_bars"] == 2148
    assert len(fp["ohlc_sha256"]) == 64
    assert load_market(DataConfig(root=str(bundled_sample_dir())), min_bars=1).fingerprint() == fp


def test_sample_has_no_jumps_and_split_is_adjusted(sample_market: MarketData) -> None:
    log_ret = np.diff(np.log(sample_market.close), axis=0)
    assert np.abs(log_ret).max() < 0.25
    gaps = np.log(sample_market.open[1:] / sample_market.close[:-1])
    assert np.abs(gaps).max() < 0.25
    days = pd.DatetimeIndex(sample_market.timestamps)
    aapl = sample_market.symbols.index("AAPL")
    t = days.get_loc(pd.Timestamp("2005-02-28"))
    # unadjusted, the 2:1 split halves the price overnight (open 44.68 after a close of 88.99)
    assert 0.97 < sample_market.open[t, aapl] / sample_market.close[t - 1, aapl] < 1.03
    assert 0.97 < sample_market.close[t, aapl] / sample_market.close[t - 1, aapl] < 1.03
    msft = sample_market.symbols.index("MSFT")
    t = days.get_loc(pd.Timestamp("2004-11-15"))  # $3 special dividend: an unadjusted -9% gap
    assert 0.97 < sample_market.open[t, msft] / sample_market.close[t - 1, msft] < 1.03


def test_sample_files_match_their_source() -> None:
    if importlib.util.find_spec("bokeh_sampledata") is None:
        pytest.skip("bokeh-sampledata not installed (uv sync --group sample)")
    spec = importlib.util.spec_from_file_location(
        "build_sample_data", Path(__file__).resolve().parents[2] / "scripts" / "build_sample_data.py"
    )
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.main(["--check"]) == 0


# ------------------------------------------------------------------------------------------------ data root


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root("trainingdata") == (bundled_sample_dir(), True)
    (tmp_path / "trainingdata").mkdir()
    assert resolve_data_root("trainingdata") == (Path("trainingdata"), False)
    with pytest.raises(DataError, match="my_bars.*does not exist"):
        resolve_data_root(str(tmp_path / "my_bars"))


# ------------------------------------------------------------------------------------------------ validation


BAD_FILES = {
    "no_close_column": (_csv([r[:4] + r[5:] for r in GOOD_ROWS], "timestamp,open,high,low,volume"),
                        r"has no close column.*close is required.*rename that column to close"),
    "high_below_open_without_low": (_csv([(r[0], r[1], 9.0, r[4]) for r in GOOD_ROWS], "timestamp,open,high,close"),
                                    r"row 1 .*high 9 is below max\(open, close\) = 10.5"),
    "no_time_column": (_csv([r[1:] for r in GOOD_ROWS], "open,high,low,close,volume"), "no time column"),
    "empty": ("", "file is empty"),
    "header_only": (HEADER + "\n", "no data rows"),
    "non_numeric": (_csv(_with(2, 4, "abc")), r"row 3 \(line 4, timestamp 2021-01-06\): close is not a number"),
    "missing_price": (_csv(_with(1, 1, "")), r"row 2 \(line 3, timestamp 2021-01-05\): open is missing"),
    "zero_price": (_csv(_with(3, 3, 0)), r"row 4 .*low is 0, but it must be > 0"),
    "negative_price": (_csv(_with(0, 1, -10.0)), r"row 1 .*open is -10, but it must be > 0"),
    "high_below": (_csv(_with(2, 2, 10.5)), r"row 3 .*high 10.5 is below max\(open, close\) = 10.8"),
    "low_above": (_csv(_with(1, 3, 10.3)), r"row 2 .*low 10.3 is above min\(open, close\) = 10.2"),
    "negative_volume": (_csv(_with(4, 5, -1)), r"row 5 .*volume is -1, but it must be >= 0"),
    "duplicate_time": (_csv(_with(2, 0, "2021-01-05")), r"2021-01-05 appears more than once \(rows 2 and 3"),
    "bad_time": (_csv(_with(1, 0, "yesterday")), r"row 2 \(line 3\): time 'yesterday' is not a date"),
    "not_ohlc": ("symbol,sharpe,sortino\nAAPL,1.2,1.5\nMSFT,0.9,1.1\n",
                 r"does not look like a price file.*--exclude BAD.*--data-glob"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_error_names_file_row_and_problem(case: str, tmp_path: Path) -> None:
    text, pattern = BAD_FILES[case]
    (tmp_path / "GOOD.csv").write_text(_csv(GOOD_ROWS))
    (tmp_path / "BAD.csv").write_text(text)
    with pytest.raises(DataError, match=pattern) as err:
        _load(tmp_path)
    assert str(tmp_path / "BAD.csv") in str(err.value)


def test_tolerance_accepts_rounding_noise(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(_with(2, 2, 10.8 * (1 - 1e-7))))  # high a hair below the close
    assert _load(tmp_path).n_bars == 5


def test_too_few_bars_names_file(tmp_path: Path) -> None:
    (tmp_path / "SHORT.csv").write_text(_csv(GOOD_ROWS))
    with pytest.raises(DataError, match=r"SHORT.csv: has 5 bars but at least 10 are needed.*--lookback"):
        _load(tmp_path, min_bars=10)


def test_short_common_calendar_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS))
    (tmp_path / "B.csv").write_text(_csv(GOOD_ROWS[2:] + [("2021-01-11", 10.6, 10.7, 10.5, 10.6, 5)]))
    with pytest.raises(DataError, match=r"share only 3 bars .*B starts latest, A ends earliest.* 4 are needed"):
        _load(tmp_path, min_bars=4)


def test_no_common_dates(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS[:2]))
    (tmp_path / "B.csv").write_text(_csv(GOOD_ROWS[3:]))
    with pytest.raises(DataError, match=r"share no common dates \(A 2021-01-04..2021-01-05; B 2021-01-07"):
        _load(tmp_path)


def test_unsorted_rows_are_sorted_and_noted(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS[::-1]))
    m = _load(tmp_path)
    assert np.array_equal(m.close[:, 0], [r[4] for r in GOOD_ROWS])
    assert any("A.csv: rows were not in time order" in n for n in m.notes)


def test_two_files_for_one_symbol(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS))
    with gzip.open(tmp_path / "A.csv.gz", "wt") as f:
        f.write(_csv(GOOD_ROWS))
    with pytest.raises(DataError, match="two files for symbol 'A'"):
        _load(tmp_path)


# ------------------------------------------------------------------------------------------------ files and symbols


def test_suffixes_and_symbol_names(tmp_path: Path, synthetic_ohlc, write_ohlc_csvs) -> None:
    folder = write_ohlc_csvs(synthetic_ohlc(30, 3, seed=1))
    (folder / "README.md").write_text("not data")
    (folder / "notes.txt").write_text("not data")
    text = (folder / "S01.csv").read_text()
    (folder / "S01.csv").unlink()
    with gzip.open(folder / "S01.csv.gz", "wt") as f:
        f.write(text)
    pd.read_csv(folder / "S02.csv", float_precision="round_trip").to_parquet(folder / "S02.parquet")
    (folder / "S02.csv").unlink()
    m = _load(folder)
    assert m.symbols == ("S00", "S01", "S02")
    ref = synthetic_ohlc(30, 3, seed=1)
    np.testing.assert_array_equal(m.close, ref.close)
    np.testing.assert_array_equal(m.timestamps, ref.timestamps)
    assert _load(folder, glob="*.csv").symbols == ("S00",)


def test_include_exclude_max_assets(synthetic_ohlc, write_ohlc_csvs) -> None:
    folder = write_ohlc_csvs(synthetic_ohlc(20, 4, seed=2))
    assert _load(folder, include=("S03", "S01")).symbols == ("S01", "S03")
    m = _load(folder, exclude=("S00",))
    assert m.symbols == ("S01", "S02", "S03")
    assert any("excluded by request: S00" in n for n in m.notes)
    m = _load(folder, max_assets=2)
    assert m.symbols == ("S00", "S01")
    assert any("left out S02, S03" in n for n in m.notes)
    assert _load(folder, include=("S01", "S02", "S03"), exclude=("S02",), max_assets=1).symbols == ("S01",)
    available = r"available symbols: \['S00', 'S01', 'S02', 'S03'\]"
    with pytest.raises(DataError, match=r"--include names \['NOPE'\].*" + available):
        _load(folder, include=("S00", "NOPE"))


def test_excluded_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS))
    (tmp_path / "summary.csv").write_text(BAD_FILES["not_ohlc"][0])
    assert _load(tmp_path, exclude=("summary",)).symbols == ("A",)
    assert _load(tmp_path, glob="[A-Z]*.csv").symbols == ("A",)


def test_no_data_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(DataError, match=r"no .csv, .csv.gz or .parquet files match '\*'.*README.md"):
        _load(tmp_path)


# ------------------------------------------------------------------------------------------------ timestamps


def test_time_formats_give_the_same_utc_instants(tmp_path: Path) -> None:
    days = pd.date_range("2021-03-01", periods=5, freq="D", tz="UTC")
    prices = [r[1:] for r in GOOD_ROWS]
    variants = {
        "DATES": [d.strftime("%Y-%m-%d") for d in days],
        "NAIVE": [d.strftime("%Y-%m-%dT%H:%M:%S") for d in days],
        "ZULU": [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in days],
        "PLUS2": [(d + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00") for d in days],
        "MINUS5": [(d - pd.Timedelta(hours=5)).strftime("%Y-%m-%d %H:%M:%S-05:00") for d in days],
        "EPOCH_S": [str(d.value // 10**9) for d in days],
        "EPOCH_MS": [str(d.value // 10**6) for d in days],
        "YYYYMMDD": [d.strftime("%Y%m%d") for d in days],
    }
    for name, stamps in variants.items():
        folder = tmp_path / name
        folder.mkdir()
        rows = [(s, *p) for s, p in zip(stamps, prices)]
        (folder / f"{name}.csv").write_text(_csv(rows, "Date,Open,High,Low,Close,Volume"))
        m = _load(folder)
        np.testing.assert_array_equal(m.timestamps, days.tz_localize(None).to_numpy(), err_msg=name)
    folder = tmp_path / "PARQUET"
    folder.mkdir()
    frame = pd.DataFrame(prices, columns=["open", "high", "low", "close", "volume"])
    frame.insert(0, "datetime", days.tz_convert("Asia/Tokyo"))
    frame.to_parquet(folder / "TOKYO.parquet")
    np.testing.assert_array_equal(_load(folder).timestamps, days.tz_localize(None).to_numpy())


def test_intraday_epoch_ms(tmp_path: Path) -> None:
    stamps = pd.date_range("2024-05-01 13:30", periods=5, freq="5min", tz="UTC")
    (tmp_path / "X.csv").write_text(_csv([(s.value // 10**6, *r[1:]) for s, r in zip(stamps, GOOD_ROWS)]))
    m = _load(tmp_path)
    assert str(m.timestamps[1]) == "2024-05-01T13:35:00.000000000"
    assert m.fingerprint()["first_timestamp"] == "2024-05-01T13:30:00+00:00"


# ------------------------------------------------------------------------------------------------ alignment


def _drop_rows(folder: Path, symbol: str, rows: list[int]) -> None:
    path = folder / f"{symbol}.csv"
    frame = pd.read_csv(path, float_precision="round_trip")
    frame.drop(index=rows).to_csv(path, index=False, float_format="%.17g")


def test_forward_fill_within_limit_is_counted_and_marked(synthetic_ohlc, write_ohlc_csvs) -> None:
    ref = synthetic_ohlc(40, 3, seed=3)
    folder = write_ohlc_csvs(ref)
    _drop_rows(folder, "S01", [10, 11, 12])
    m = _load(folder, max_fill_bars=3)
    assert m.symbols == ref.symbols and m.n_bars == 40 and m.dropped == ()
    expected = np.zeros((40, 3), dtype=bool)
    expected[10:13, 1] = True
    np.testing.assert_array_equal(m.filled, expected)
    prev_close = ref.close[9, 1]
    for field in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(m, field)[10:13, 1], prev_close)
        np.testing.assert_array_equal(getattr(m, field)[~expected], getattr(ref, field)[~expected])
    np.testing.assert_array_equal(m.volume[10:13, 1], 0.0)
    assert "S01: 3 bar(s) forward-filled (longest run 3)" in m.notes


def test_longer_gap_drops_the_asset_by_name(synthetic_ohlc, write_ohlc_csvs) -> None:
    folder = write_ohlc_csvs(synthetic_ohlc(40, 3, seed=4))
    _drop_rows(folder, "S02", list(range(20, 24)))
    m = _load(folder, max_fill_bars=3)
    assert m.symbols == ("S00", "S01") and m.n_bars == 40 and not m.filled.any()
    ((sym, reason),) = m.dropped
    assert sym == "S02"
    assert "4 consecutive bars missing from 2020-01-21 to 2020-01-24" in reason
    assert any(n.startswith("dropped S02: 4 consecutive bars") for n in m.notes)


def test_every_asset_dropped_is_an_error(synthetic_ohlc, write_ohlc_csvs) -> None:
    folder = write_ohlc_csvs(synthetic_ohlc(40, 2, seed=5))
    _drop_rows(folder, "S00", [5, 6])
    _drop_rows(folder, "S01", [20, 21])
    with pytest.raises(DataError, match=r"every asset was dropped \(S00: 2 consecutive.*S01: 2 consecutive"):
        _load(folder, max_fill_bars=1)


def test_calendar_trims_to_common_range_without_backfill(synthetic_ohlc, write_ohlc_csvs) -> None:
    ref = synthetic_ohlc(30, 2, seed=6)
    folder = write_ohlc_csvs(ref)
    _drop_rows(folder, "S01", list(range(5)))  # S01 starts at bar 5
    # S00 lacks the first common bar (filled from its bar 4, which is in the past) and ends one bar earlier
    _drop_rows(folder, "S00", [5, 29])
    m = _load(folder)
    assert m.n_bars == 24 and m.timestamps[0] == ref.timestamps[5] and m.timestamps[-1] == ref.timestamps[28]
    assert m.filled[0, 0] and m.filled.sum() == 1
    assert m.open[0, 0] == m.close[0, 0] == ref.close[4, 0]
    assert "S00: 5 bar(s) outside the common calendar not used" in m.notes  # bars 0..4
    assert "S01: 1 bar(s) outside the common calendar not used" in m.notes  # bar 29


def test_late_listing_and_early_delisting_cut_the_calendar_to_the_shared_span(synthetic_ohlc, write_ohlc_csvs) -> None:
    ref = synthetic_ohlc(30, 3, seed=12)
    folder = write_ohlc_csvs(ref)
    _drop_rows(folder, "S00", [10])  # the longest file inside the shared span lacks a bar the others have
    _drop_rows(folder, "S01", [*range(6), 12])  # lists at bar 6
    _drop_rows(folder, "S02", [14, *range(25, 30)])  # delists after bar 24
    m = _load(folder)
    # All three kept; the calendar is the union of their bars from the latest listing to the earliest delisting.
    assert m.symbols == ("S00", "S01", "S02") and m.dropped == ()
    np.testing.assert_array_equal(m.timestamps, ref.timestamps[6:25])
    expected = np.zeros((19, 3), dtype=bool)
    expected[10 - 6, 0] = expected[12 - 6, 1] = expected[14 - 6, 2] = True
    np.testing.assert_array_equal(m.filled, expected)
    for j, t in ((0, 10), (1, 12), (2, 14)):
        assert m.open[t - 6, j] == m.high[t - 6, j] == m.low[t - 6, j] == m.close[t - 6, j] == ref.close[t - 1, j]
        assert m.volume[t - 6, j] == 0.0
    real = ~expected
    for field in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(m, field)[real], getattr(ref, field)[6:25][real])
    assert "calendar: 19 bars 2020-01-07..2020-01-25 (starts at S01's first bar, ends at S02's last bar)" in m.notes
    assert "S00: 11 bar(s) outside the common calendar not used" in m.notes  # bars 0-5 and 25-29
    assert "S01: 5 bar(s) outside the common calendar not used" in m.notes  # bars 25-29
    assert "S02: 6 bar(s) outside the common calendar not used" in m.notes  # bars 0-5


def test_fingerprint_hashes_the_price_bytes(synthetic_ohlc) -> None:
    import hashlib

    m = synthetic_ohlc(40, 3, seed=13)
    expected = hashlib.sha256(b"".join(a.astype("<f8").tobytes() for a in (m.open, m.high, m.low, m.close)))
    assert m.fingerprint()["ohlc_sha256"] == expected.hexdigest()


# ------------------------------------------------------------------------------------------------ MarketData


def test_from_arrays_validates_and_is_read_only(synthetic_ohlc) -> None:
    m = synthetic_ohlc(10, 2, seed=7)
    with pytest.raises(ValueError):
        m.close[0, 0] = 1.0
    with pytest.raises(DataError, match="high must be float64 of shape"):
        MarketData.from_arrays(m.symbols, m.timestamps, m.open, m.high[:5], m.low, m.close)
    with pytest.raises(DataError, match="9 timestamps for 10 bars"):
        MarketData.from_arrays(m.symbols, m.timestamps[:9], m.open, m.high, m.low, m.close)
    bad = m.close.copy()
    bad[3, 1] = -1.0
    with pytest.raises(DataError, match="close of S01 at bar 3"):
        MarketData.from_arrays(m.symbols, None, m.open, m.high, m.low, bad)
    with pytest.raises(DataError, match="unique"):
        MarketData.from_arrays(("A", "A"), None, m.open, m.high, m.low, m.close)
    flat = np.full((4, 1), 2.0)
    d = MarketData.from_arrays(["X"], None, flat, flat, flat, flat)
    assert d.volume.sum() == 0 and str(d.timestamps[3]) == "2000-01-04T00:00:00.000000000"


def test_fingerprint_tracks_prices(synthetic_ohlc) -> None:
    a, b = synthetic_ohlc(50, 2, seed=8), synthetic_ohlc(50, 2, seed=8)
    assert a.fingerprint() == b.fingerprint()
    c = b.close.copy()
    c[-1, 0] *= 1.0000001
    h = np.maximum(b.high, c)
    changed = MarketData.from_arrays(b.symbols, b.timestamps, b.open, h, b.low, c, b.volume, source=b.source)
    assert changed.fingerprint()["ohlc_sha256"] != a.fingerprint()["ohlc_sha256"]


def test_split_like_jump_is_noted_and_bom_header_read(tmp_path: Path) -> None:
    rows = [(*r[:5], r[4], r[5]) for r in GOOD_ROWS]  # an "adj close" column equal to close
    rows[3] = ("2021-01-07", 5.4, 5.6, 5.3, 5.5, 5.5, 1100)  # a 2:1 split left in the prices
    rows[4] = ("2021-01-08", 5.5, 5.55, 5.2, 5.3, 5.3, 1000)
    (tmp_path / "SPLIT.csv").write_text("\ufeff" + _csv(rows, "Date,Open,High,Low,Close,Adj Close,Volume"))
    m = _load(tmp_path)
    (note,) = [n for n in m.notes if n.startswith("SPLIT.csv: 1 overnight move(s)")]
    assert "10.8 -> 5.4 at 2021-01-07" in note and "['Adj Close']" in note


# ------------------------------------------------------------------------------------------ close-only and partial


def test_close_only_file_takes_open_high_low_as_the_close(tmp_path: Path) -> None:
    closes = [r[4] for r in GOOD_ROWS]
    (tmp_path / "C.csv").write_text(_csv([(r[0], r[4]) for r in GOOD_ROWS], "Date,Close"))
    (tmp_path / "V.csv").write_text(_csv([(r[0], r[4], r[5]) for r in GOOD_ROWS], "date,close,volume"))
    m = _load(tmp_path)
    for a in (m.open, m.high, m.low, m.close):
        assert np.array_equal(a, np.array([closes, closes]).T)
    assert np.array_equal(m.volume[:, 0], np.zeros(5)) and np.array_equal(m.volume[:, 1], [r[5] for r in GOOD_ROWS])
    assert m.missing_columns == (("open", "high", "low"), ("open", "high", "low"))
    assert m.lacking_open.tolist() == [True, True] and m.lacking_range.tolist() == [True, True]
    assert ("C.csv: close only (no open, high, low): open, high and low are taken as the close; its bar-range, body "
            "and overnight-gap features are 0") in m.notes
    assert m.fingerprint()["missing_prices"] == {"C": ["open", "high", "low"], "V": ["open", "high", "low"]}


def test_partial_file_derives_only_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / "OC.csv").write_text(_csv([(r[0], r[1], r[4]) for r in GOOD_ROWS], "timestamp,open,close"))
    (tmp_path / "NOLOW.csv").write_text(_csv([r[:3] + r[4:] for r in GOOD_ROWS], "timestamp,open,high,close,volume"))
    no_open = [(r[0], r[2], r[3], r[4]) for r in GOOD_ROWS]
    (tmp_path / "NOOPEN.csv").write_text(_csv(no_open, "timestamp,high,low,close"))
    m = _load(tmp_path)
    o, hi, lo, c = (np.array([r[k] for r in GOOD_ROWS]) for k in (1, 2, 3, 4))
    assert m.symbols == ("NOLOW", "NOOPEN", "OC")
    assert m.missing_columns == (("low",), ("open",), ("high", "low"))
    assert np.array_equal(m.open[:, 0], o) and np.array_equal(m.high[:, 0], hi)
    assert np.array_equal(m.low[:, 0], np.minimum(o, c))
    assert np.array_equal(m.open[:, 1], c) and np.array_equal(m.high[:, 1], hi) and np.array_equal(m.low[:, 1], lo)
    assert np.array_equal(m.high[:, 2], np.maximum(o, c)) and np.array_equal(m.low[:, 2], np.minimum(o, c))
    assert m.lacking_open.tolist() == [False, True, False] and m.lacking_range.tolist() == [True, False, True]
    assert ("OC.csv: no high, low column(s), taken as high = max(open, close), low = min(open, close); its bar-range "
            "feature(s) are 0") in m.notes
    assert any(n.startswith("NOOPEN.csv: no open column(s), taken as open = close; its body, overnight-gap")
               for n in m.notes)


def test_mixed_folder_aligns_ohlc_and_close_only_assets(synthetic_ohlc, write_ohlc_csvs) -> None:
    ref = synthetic_ohlc(40, 3, seed=11)
    folder = write_ohlc_csvs(ref, columns={"S01": ("close",), "S02": ("open", "close", "volume")})
    _drop_rows(folder, "S01", [10, 11])  # a short gap in the close-only file: forward-filled from its close
    m = _load(folder, max_fill_bars=3)
    assert m.n_bars == 40 and m.missing_columns == ((), ("open", "high", "low"), ("high", "low"))
    for name in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(m, name)[:, 0], getattr(ref, name)[:, 0])  # the OHLC asset is untouched
    c1 = ref.close[:, 1].copy()
    c1[10:12] = c1[9]
    assert m.filled[:, 1].tolist() == [10 <= t < 12 for t in range(40)]
    for name in ("open", "high", "low", "close"):
        assert np.array_equal(getattr(m, name)[:, 1], c1)
    assert np.array_equal(m.open[:, 2], ref.open[:, 2]) and np.array_equal(m.close[:, 2], ref.close[:, 2])


def test_close_only_parquet_and_bad_close_rows_name_the_row(tmp_path: Path) -> None:
    frame = pd.DataFrame({"timestamp": pd.to_datetime([r[0] for r in GOOD_ROWS], utc=True),
                          "close": [r[4] for r in GOOD_ROWS]})
    frame.to_parquet(tmp_path / "P.parquet")
    assert _load(tmp_path).missing_columns == (("open", "high", "low"),)
    (tmp_path / "P.parquet").unlink()
    rows = [(r[0], r[4]) for r in GOOD_ROWS]
    rows[2] = (rows[2][0], "")
    (tmp_path / "Q.csv").write_text(_csv(rows, "timestamp,close"))
    with pytest.raises(DataError, match=r"Q.csv: row 3 \(line 4, timestamp 2021-01-06\): close is missing. Fill it in"):
        _load(tmp_path)


def test_close_only_split_like_move_is_a_close_to_close_note(tmp_path: Path) -> None:
    rows = [(r[0], r[4]) for r in GOOD_ROWS]
    rows[3], rows[4] = (rows[3][0], 5.5), (rows[4][0], 5.3)  # a 2:1 split left in the closes
    (tmp_path / "J.csv").write_text(_csv(rows, "timestamp,close"))
    assert any(n.startswith("J.csv: 1 close-to-close move(s)") and "10.8 -> 5.5" in n for n in _load(tmp_path).notes)


def test_missing_columns_must_hold_the_derived_prices(synthetic_ohlc) -> None:
    m = synthetic_ohlc(6, 2, seed=3)
    c = m.close
    with pytest.raises(DataError, match="S00 is said to lack open"):
        MarketData.from_arrays(m.symbols, None, m.open, m.high, m.low, c, missing_columns=(("open",), ()))
    with pytest.raises(DataError, match="entries are tuples of"):
        MarketData.from_arrays(m.symbols, None, m.open, m.high, m.low, c, missing_columns=(("close",), ()))
    with pytest.raises(DataError, match="one entry per asset"):
        MarketData.from_arrays(m.symbols, None, m.open, m.high, m.low, c, missing_columns=((),))
    d = MarketData.from_arrays(m.symbols, None, c, c, c, c, missing_columns=(("low", "open", "high"), ()))
    assert d.missing_columns == (("open", "high", "low"), ()) and d.missing_prices() == {"S00": ["open", "high", "low"]}
    assert m.missing_columns == ((), ()) and "missing_prices" not in m.fingerprint()


def test_symbols_without_open_reads_the_selected_headers(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS))
    (tmp_path / "B.csv").write_text(_csv([(r[0], r[4]) for r in GOOD_ROWS], "Date, Close"))
    (tmp_path / "C.csv").write_text(_csv([(r[0], r[2], r[3], r[4]) for r in GOOD_ROWS], "timestamp,high,low,close"))
    (tmp_path / "D.csv").write_bytes(b"\xff\xfe\x00garbage")
    assert symbols_without_open(DataConfig(root=str(tmp_path))) == ("B", "C")
    assert symbols_without_open(DataConfig(root=str(tmp_path), exclude=("B",))) == ("C",)
    assert symbols_without_open(DataConfig(root=str(tmp_path), include=("A",))) == ()


def test_execution_note_says_when_a_fill_happens(tmp_path: Path) -> None:
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS))
    assert execution_note(_load(tmp_path), "open") is None
    (tmp_path / "B.csv").write_text(_csv([(r[0], r[4]) for r in GOOD_ROWS], "timestamp,close"))
    m = _load(tmp_path)
    opened = execution_note(m, "open")
    assert opened.startswith("execution open: 1 of 2 assets have no open price (['B'])")
    assert "fills them at the close of bar t+1, one bar after the decision (the other assets fill at the open" in opened
    assert "--execution close" in opened
    assert execution_note(m, "close").startswith("execution close: 1 of 2 assets have no open price")


# ------------------------------------------------------------------------------------------- universe cut-off


def test_a_gap_after_the_cutoff_keeps_the_asset_forward_filled_and_listed(synthetic_ohlc, write_ohlc_csvs) -> None:
    ref = synthetic_ohlc(40, 3, seed=4)
    folder = write_ohlc_csvs(ref)
    _drop_rows(folder, "S02", list(range(30, 34)))  # 4 bars, more than max_fill_bars=3
    dropped = load_market(DataConfig(root=str(folder), max_fill_bars=3), min_bars=1)
    assert dropped.symbols == ("S00", "S01")  # no cut-off: the whole data set decides
    m = load_market(DataConfig(root=str(folder), max_fill_bars=3), min_bars=1, universe_cutoff=lambda cal: 25)
    assert m.symbols == ref.symbols and m.dropped == () and m.universe_cutoff == 25
    np.testing.assert_array_equal(np.flatnonzero(m.filled[:, 2]), np.arange(30, 34))
    for field in ("open", "high", "low", "close"):  # flat at the last close before the gap: it earns nothing there
        np.testing.assert_array_equal(getattr(m, field)[30:34, 2], ref.close[29, 2])
    np.testing.assert_array_equal(m.close[34:, 2], ref.close[34:, 2])
    ((sym, text),) = m.late_gaps
    assert sym == "S02" and "4 consecutive bars missing from 2020-01-31 to 2020-02-03" in text
    assert "universe cut-off (2020-01-25)" in text
    assert any(n.startswith("late gap in S02: 4 consecutive bars") for n in m.notes)
    assert any(n.startswith("universe decided on the first 25 bars (to 2020-01-25)") for n in m.notes)


@pytest.mark.parametrize("cutoff,kept", [(32, True), (34, False), (40, False)])
def test_only_the_missing_bars_before_the_cutoff_count(synthetic_ohlc, write_ohlc_csvs, cutoff, kept) -> None:
    """A gap over bars 30..33 straddling the cut-off: 2 bars before bar 32 (kept), all 4 before bar 34 (dropped)."""
    folder = write_ohlc_csvs(synthetic_ohlc(40, 3, seed=4))
    _drop_rows(folder, "S02", list(range(30, 34)))
    m = load_market(DataConfig(root=str(folder), max_fill_bars=3), min_bars=1, universe_cutoff=lambda cal: cutoff)
    assert ("S02" in m.symbols) is kept
    assert len(m.late_gaps) == int(kept)
    if not kept:
        assert m.dropped[0][0] == "S02" and (cutoff == 40 or "before the universe cut-off (34 bars" in m.dropped[0][1])


def test_the_cutoff_is_recomputed_on_the_calendar_left_after_a_drop(synthetic_ohlc, write_ohlc_csvs) -> None:
    folder = write_ohlc_csvs(synthetic_ohlc(40, 3, seed=5))
    _drop_rows(folder, "S00", [0, 1, 2, 3, 4, 10, 11, 12, 13])  # starts late (calendar from bar 5), long gap early
    seen: list[int] = []

    def cutoff(calendar: np.ndarray) -> int:
        assert calendar.dtype == np.dtype("datetime64[ns]")
        seen.append(len(calendar))
        return len(calendar) // 2

    m = load_market(DataConfig(root=str(folder), max_fill_bars=3), min_bars=1, universe_cutoff=cutoff)
    assert seen == [35, 40]  # dropping S00 widened the calendar back to every bar
    assert m.symbols == ("S01", "S02") and m.n_bars == 40 and m.universe_cutoff == 20


def test_future_gaps_do_not_decide_the_training_universe_of_the_sample(tmp_path: Path) -> None:
    """The audit's reproduction: 5 MSFT rows removed in December 2012 (the test split) used to drop MSFT everywhere."""
    from differentiable_market.splits import make_splits, train_end_cutoff

    for f in bundled_sample_dir().glob("*.csv"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    frame = pd.read_csv(tmp_path / "MSFT.csv", dtype=str)
    december = frame.index[frame["timestamp"].str.startswith("2012-12")][:5]
    frame.drop(index=december).to_csv(tmp_path / "MSFT.csv", index=False)
    cfg = DataConfig(root=str(tmp_path))
    assert "MSFT" not in load_market(cfg, min_bars=1).symbols  # the old behaviour: gaps anywhere decide
    m = load_market(cfg, min_bars=1, universe_cutoff=train_end_cutoff(cfg, lookback=192))
    assert m.symbols == ("AAPL", "GOOG", "IBM", "MSFT") and m.n_bars == 2148
    assert m.universe_cutoff == make_splits(2148, cfg, 192).train[1]
    assert m.filled[:, 3].sum() == 5 and m.filled[:, :3].sum() == 0
    assert str(m.timestamps[np.flatnonzero(m.filled[:, 3])[0]])[:10] == "2012-12-03"
    ((sym, text),) = m.late_gaps
    assert sym == "MSFT" and "5 consecutive bars missing from 2012-12-03 to 2012-12-07" in text


# ------------------------------------------------------------------------------------ union calendar (data layer)

DAYS = pd.date_range("2020-01-01", periods=30, freq="D").strftime("%Y-%m-%d")


def _closes(folder: Path, sym: str, bars: list[int], price=lambda i: 100.0 + i) -> None:
    """A close-only file of ``sym`` with prints on the given bars of DAYS (close 100 + bar, volume 1)."""
    rows = [(DAYS[i], price(i), 1) for i in bars]
    (folder / f"{sym}.csv").write_text(_csv(rows, "date,close,volume"))


def test_union_calendar_keeps_every_asset_over_its_own_life(tmp_path: Path) -> None:
    _closes(tmp_path, "A", list(range(30)))
    _closes(tmp_path, "B", list(range(10, 30)))  # lists at bar 10
    _closes(tmp_path, "C", list(range(20)))  # last print at bar 19
    _closes(tmp_path, "D", [i for i in range(30) if not 5 <= i < 12])  # a 7-bar halt
    _closes(tmp_path, "E", [3, 4])  # two bars only: no error on a union calendar
    m = _load(tmp_path, min_bars=20, calendar="union", max_fill_bars=2)
    assert m.calendar == "union" and m.n_bars == 30 and m.symbols == ("A", "B", "C", "D", "E") and not m.dropped
    t = np.arange(30)
    assert m.listed.T.tolist() == [[True] * 30, (t >= 10).tolist(), (t <= 19).tolist(), [True] * 30,
                                   ((t >= 3) & (t <= 4)).tolist()]
    # tradeable: a print at most 2 bars back; C's delisting known at bar 22, D untradeable from the 3rd halted bar
    assert m.tradeable.T.tolist() == [[True] * 30, (t >= 10).tolist(), (t <= 21).tolist(),
                                      ((t < 7) | (t >= 12)).tolist(), ((t >= 3) & (t <= 6)).tolist()]
    assert m.filled[:, 3].tolist() == ((t >= 5) & (t < 12)).tolist()
    # placeholders: 1.0 before the first print, the last close after the last one; volume 0 on every bar without one
    assert (m.close[:10, 1] == 1.0).all() and (m.open[:10, 1] == 1.0).all() and m.close[10, 1] == 110.0
    assert (m.close[20:, 2] == 119.0).all() and (m.close[5:12, 3] == 104.0).all()
    assert (m.volume[m.filled] == 0).all() and (m.volume[~m.filled] == 1).all()
    assert "B: lists at bar 10 (2020-01-11)" in m.notes
    assert ("C: last print at 2020-01-20, untradeable from bar 22 (a delisting is known 2 bar(s) after it)"
            in m.notes)
    assert ("D: 1 halt(s) longer than max_fill_bars=2, untradeable until prints resume (the longest 5 bars from "
            "2020-01-08)") in m.notes
    assert m.fingerprint()["calendar"] == "union"
    # The default calendar refuses E's short file, and without E cuts everyone to C's life (bars 0..19).
    with pytest.raises(DataError, match="E.csv: has 2 bars but at least 20 are needed"):
        _load(tmp_path, min_bars=20, max_fill_bars=2)
    (tmp_path / "E.csv").unlink()
    assert _load(tmp_path, min_bars=10, max_fill_bars=10).n_bars == 10  # B lists at bar 10, C ends at bar 19


def test_the_tradeable_mask_and_prices_up_to_t_do_not_depend_on_later_bars(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    lives = {"A": (0, 30), "B": (4, 30), "C": (0, 17), "D": (8, 23), "E": (2, 30)}
    prints = {}
    for sym, (a, b) in lives.items():
        keep = rng.random(b - a) > 0.25  # random gaps, some longer than max_fill_bars
        keep[0] = keep[-1] = True
        prints[sym] = [a + i for i in np.flatnonzero(keep)]
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    full_dir.mkdir()
    for sym, bars in prints.items():
        _closes(full_dir, sym, bars, price=lambda i: round(float(rng.uniform(50, 150)), 2))
    full = _load(full_dir, calendar="union", max_fill_bars=2)
    for t in range(30):
        shutil.rmtree(cut_dir, ignore_errors=True)
        cut_dir.mkdir()
        for f in full_dir.glob("*.csv"):  # every row after bar t removed
            frame = pd.read_csv(f)
            frame = frame[frame["date"] <= DAYS[t]]
            if len(frame):
                frame.to_csv(cut_dir / f.name, index=False)
        seen = _load(cut_dir, calendar="union", max_fill_bars=2)
        cols = [full.symbols.index(s) for s in seen.symbols]
        assert seen.n_bars == t + 1
        for name in ("tradeable", "filled", "open", "close", "volume"):
            np.testing.assert_array_equal(getattr(seen, name), getattr(full, name)[: t + 1, cols], err_msg=name)
        for sym in full.symbols:  # an asset that has not listed by t is untradeable in the full data too
            if sym not in seen.symbols:
                assert not full.tradeable[: t + 1, full.symbols.index(sym)].any()


def test_min_listed_starts_the_calendar_and_counts_earlier_prints_exactly(tmp_path: Path) -> None:
    _closes(tmp_path, "A", list(range(30)))
    _closes(tmp_path, "B", list(range(12, 30)))
    _closes(tmp_path, "C", list(range(6, 30)))  # the fourth tradeable asset, at bar 6
    _closes(tmp_path, "OLD", list(range(0, 6)))  # last print one bar before that start
    _closes(tmp_path, "HALT", list(range(0, 11)) + list(range(15, 30)))
    m = _load(tmp_path, calendar="union", min_listed=4, max_fill_bars=2)
    assert m.n_bars == 24 and str(m.timestamps[0])[:10] == DAYS[6]
    assert "starts at the first bar where 4 assets are tradeable" in next(
        n for n in m.notes if n.startswith("calendar: union"))
    col = dict(zip(m.symbols, m.tradeable.T.tolist()))
    assert col["A"] == col["C"] == [True] * 24 and col["B"] == [False] * 6 + [True] * 18
    assert col["OLD"] == [True, True] + [False] * 22  # its bar-5 print is 1 bar old at the start: known gone at 8
    assert col["HALT"] == [True] * 7 + [False] * 2 + [True] * 15
    assert (m.close[:, m.symbols.index("OLD")] == 105.0).all()
    assert "OLD: last print at 2020-01-06, untradeable from bar 2 (a delisting is known 2 bar(s) after it)" in m.notes
    with pytest.raises(DataError, match="--min-listed 9 is more than the 5 assets"):
        _load(tmp_path, calendar="union", min_listed=9)
    with pytest.raises(DataError, match=r"no bar has 5 tradeable assets \(at most 4, first at 2020-01-07\)"):
        _load(tmp_path, calendar="union", min_listed=5, max_fill_bars=2)


def test_calendar_settings_are_checked_and_intersection_stays_the_default(tmp_path: Path) -> None:
    from differentiable_market.errors import ConfigError

    with pytest.raises(ConfigError, match="data.calendar must be one of"):
        DataConfig(calendar="outer")
    with pytest.raises(ConfigError, match="needs data.calendar 'union'"):
        DataConfig(min_listed=3)
    (tmp_path / "A.csv").write_text(_csv(GOOD_ROWS))
    m = _load(tmp_path)
    assert m.calendar == "intersection" and m.listed.all() and m.tradeable.all() and m.listed.shape == (5, 1)
    assert "calendar" not in m.fingerprint()
    with pytest.raises(DataError, match="tradeable must be bool of shape"):
        MarketData.from_arrays(m.symbols, None, m.open, m.high, m.low, m.close, tradeable=np.ones((4, 1)))
