"""Markets to learn on that come as arrays rather than folders: Cover's NYSE set, a trading-day calendar for data
without dates, and a writer that turns any ``MarketData`` into a folder the loader (and so every CLI) reads.

Nothing here downloads anything: the NYSE set is read from the ``universal-portfolios`` wheel when it is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .data import MarketData
from .errors import DataError

NYSE_O_START = "1962-07-03"  # first trading day of Cover's NYSE set (July 3rd, 1962)
NYSE_O_RESOURCE = "data/nyse_o.csv"  # inside the ``universal`` package (the universal-portfolios wheel)
CROSSCHECK_INSTALL = "uv sync --group crosscheck"


def _good_friday(year: int) -> np.datetime64:
    """Two days before Gregorian Easter Sunday (the anonymous Gregorian computus)."""
    a, b, c = year % 19, year // 100, year % 100
    g = (b - (b + 8) // 25 + 1) // 3
    h = (19 * a + b - b // 4 - g + 15) % 30
    weekday = (32 + 2 * (b % 4) + 2 * (c // 4) - h - c % 4) % 7
    m = (a + 11 * h + 22 * weekday) // 451
    month, day = divmod(h + weekday - 7 * m + 114, 31)
    return np.datetime64(f"{year}-{month:02d}-{day + 1:02d}") - np.timedelta64(2, "D")


def _holidays(first_year: int, last_year: int) -> np.ndarray:
    """Today's NYSE holidays, by their rules, in the years [first_year, last_year]; datetime64[D].

    New Year's Day, Martin Luther King Jr. Day (third Monday of January), Presidents' Day (third Monday of February),
    Good Friday, Memorial Day (last Monday of May), Independence Day, Labor Day (first Monday of September),
    Thanksgiving (fourth Thursday of November) and Christmas. A holiday on a weekend is not moved to a weekday, the
    rules are applied to every year (not as they were then), and one-off closures are left out: an approximation
    whose purpose is a realistic count of about 252 trading days a year.
    """
    days = []
    for y in range(first_year, last_year + 1):
        days += [np.datetime64(f"{y}-01-01"), np.datetime64(f"{y}-07-04"), np.datetime64(f"{y}-12-25"),
                 _good_friday(y)]
        days.append(np.busday_offset(f"{y}-01", 2, roll="forward", weekmask="Mon"))
        days.append(np.busday_offset(f"{y}-02", 2, roll="forward", weekmask="Mon"))
        days.append(np.busday_offset(f"{y}-06", -1, roll="forward", weekmask="Mon"))
        days.append(np.busday_offset(f"{y}-09", 0, roll="forward", weekmask="Mon"))
        days.append(np.busday_offset(f"{y}-11", 3, roll="forward", weekmask="Thu"))
    return np.array(days, dtype="datetime64[D]")


def trading_days(start: str, n_days: int) -> np.ndarray:
    """``n_days`` consecutive NYSE-like trading days from ``start`` (rolled forward to a trading day), as
    datetime64[ns] midnights: weekdays less the holidays of ``_holidays`` (``metrics.bars_per_year`` of such a calendar
    is about 253)."""
    first = np.datetime64(start, "D")
    first_year = int(str(first)[:4])
    holidays = _holidays(first_year, first_year + n_days // 240 + 2)  # fewer than 260 trading days in any year
    days = np.busday_offset(first, np.arange(n_days), roll="forward", holidays=holidays)
    return days.astype("datetime64[ns]")


def nyse_o() -> MarketData:
    """Cover's NYSE set: 36 NYSE stocks over 22 years (July 1962 to December 1984), 5,651 daily price relatives.

    Source and licence: T. Cover, "Universal Portfolios", Mathematical Finance 1(1), 1991 (the data of that paper),
    as shipped in the ``universal-portfolios`` package (``universal/data/nyse_o.csv``), which is distributed under
    "The Feedback MIT License" (Copyright (c) 2014, Mojmir Vinkler). Install it with ``uv sync --group crosscheck``;
    nothing is downloaded here.

    The package stores the set as normalised prices: row k is the product of the first k + 1 daily price relatives,
    so the price before the first day is 1. This returns T = 5,652 bars: bar 0 at price 1.0 for every stock, then
    those prices, so ``close[t + 1] / close[t]`` is day t's relative (the first relative is earned from bar 0).
    Close only: open = high = low = close, volume 0. Symbols are the package's column names (single letters and
    ``x1``..``x7``; ``A`` and ``a`` are different stocks), in sorted order as ``data.load_market`` lists them (the
    package's file has ``x7`` between ``P`` and ``R``).

    Dates: the set has none. The bars get consecutive NYSE-like trading days from 1962-07-03 (``trading_days``), so
    the dates are approximate (the last one is 1984-11-06, not 1984-12-31); only the number of bars per year (about
    252; ``metrics.bars_per_year`` gives 252.9) matters, for annualised figures.
    """
    import importlib.resources

    try:
        resource = importlib.resources.files("universal").joinpath(NYSE_O_RESOURCE)
    except ModuleNotFoundError:
        raise DataError(f"The NYSE set ships with the universal-portfolios package, which is not installed. Install "
                        f"it with `{CROSSCHECK_INSTALL}`.") from None
    if not resource.is_file():
        raise DataError(f"The installed universal-portfolios package has no {NYSE_O_RESOURCE}. Reinstall it with "
                        f"`{CROSSCHECK_INSTALL}`.")
    with resource.open("r", encoding="utf-8") as f:
        symbols = tuple(name.strip() for name in f.readline().split(","))
        prices = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if prices.shape[1] != len(symbols):
        raise DataError(f"universal-portfolios' {NYSE_O_RESOURCE} has {len(symbols)} symbols in its header but "
                        f"{prices.shape[1]} columns of prices.")
    order = np.argsort(symbols)  # the loader's order, so the set reads back from a folder column for column
    close = np.vstack([np.ones((1, len(symbols))), prices])[:, order]
    return MarketData.from_arrays([symbols[i] for i in order], trading_days(NYSE_O_START, close.shape[0]), close,
                                  close, close, close, None,
                                  source="NYSE 1962-1984 (Cover 1991; universal-portfolios nyse_o.csv)")


def _time_text(timestamps: np.ndarray) -> np.ndarray:
    """ISO text the loader reads back to the same instants: dates when every bar is at midnight UTC, else date-times
    in UTC to the coarsest unit (seconds or finer) that keeps them exact."""
    ns = timestamps.astype("datetime64[ns]").view(np.int64)
    if (ns % 86_400_000_000_000 == 0).all():
        return np.datetime_as_string(timestamps, unit="D")
    unit = next(u for u, step in (("s", 10**9), ("ms", 10**6), ("us", 10**3), ("ns", 1)) if (ns % step == 0).all())
    return np.char.add(np.datetime_as_string(timestamps, unit=unit), "+00:00")


def _check_symbol(symbol: str) -> None:
    if symbol in (".", "..") or any(c in symbol for c in ("/", "\\", "\0", os.sep)):
        raise DataError(f"Symbol {symbol!r} cannot be a file name; rename it before writing the market to a folder.")


def write_market_folder(market: MarketData, root: Path) -> Path:
    """Write ``market`` as one ``SYMBOL.csv`` per asset (timestamp, open, high, low, close, volume) under ``root``.

    ``data.load_market`` with ``DataConfig(root=str(root))`` reads it back to the same prices and timestamps: numbers
    are written to full (round-trip) precision. The loader lists symbols in sorted order, so a market whose symbols
    are not sorted reads back with its columns in that order. Which bars were forward-filled is not written (they read back as
    ordinary bars). An asset's file leaves out the columns among open, high, low that it lacked
    (``MarketData.missing_columns``), so a close-only asset reads back close-only. ``root`` is created when missing; an
    existing non-empty folder is refused, so nothing is ever overwritten, and so are symbols that cannot be file names
    or that collide as file names (``A`` and ``a`` on a case-insensitive file system). Returns ``root``.
    """
    import pandas as pd

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} exists and is not a folder; write the market into a new or empty folder.")
    if root.is_dir() and any(root.iterdir()):
        raise DataError(f"{root} is not empty; write the market into a new or empty folder (nothing was written).")
    for symbol in market.symbols:
        _check_symbol(symbol)
    root.mkdir(parents=True, exist_ok=True)
    times = _time_text(np.asarray(market.timestamps))
    for i, symbol in enumerate(market.symbols):
        frame = pd.DataFrame({"timestamp": times, "open": market.open[:, i], "high": market.high[:, i],
                              "low": market.low[:, i], "close": market.close[:, i], "volume": market.volume[:, i]})
        frame = frame.drop(columns=list(market.missing_columns[i]))
        path = root / f"{symbol}.csv"
        try:
            with open(path, "x", encoding="utf-8", newline="") as f:  # "x": a file name that collides is an error
                frame.to_csv(f, index=False)
        except FileExistsError:
            raise DataError(f"{path} already exists while writing symbol {symbol!r}: two symbols map to the same file "
                            f"name (a case-insensitive file system?). Rename one of them and write into a new folder "
                            f"({root} holds the files written so far).") from None
    return root
