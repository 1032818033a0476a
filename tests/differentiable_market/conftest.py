"""Shared fixtures: synthetic OHLC markets (seeded, deterministic) and the bundled real sample.

- ``synthetic_ohlc(n_bars=256, n_assets=3, seed=0, **kw) -> MarketData``: factory fixture (``make_synthetic_ohlc``).
- ``write_ohlc_csvs(market, folder=None, columns=None) -> Path``: writes one ``SYMBOL.csv`` per asset (into
  tmp_path/"data" by default) in the loader's format and returns the folder; ``columns`` writes only some columns of
  the symbols it names (close-only and partial files).
- ``sample_market``: the bundled daily sample, loaded once per session.
- ``write_union_csvs(market, folder, keep)`` and ``replace_unread_prices(market, max_fill)``: files with listings,
  delistings and halts for a union calendar, and that market with the prices no tradeable decision reads replaced.
- Hypothesis profiles (test_fuzz.py): "default" (100 examples per test, derandomized) and "long" (2,000, for ``-m slow``
  or ``--hypothesis-profile=long``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from differentiable_market.config import DataConfig
from differentiable_market.data import MarketData, bundled_sample_dir, load_market


def make_synthetic_ohlc(
    n_bars: int = 256,
    n_assets: int = 3,
    seed: int = 0,
    *,
    start: str = "2020-01-01",
    step: str = "1D",
    drift: float = 2e-4,
    vol: float = 0.02,
    price0: float = 100.0,
) -> MarketData:
    """Geometric random walk with overnight gaps and intrabar ranges; volume is lognormal.

    drift and vol are per bar (log units); O/H/L/C are mutually consistent (low <= open, close <= high).
    """
    rng = np.random.default_rng(seed)
    shape = (n_bars, n_assets)
    gap = rng.normal(0.0, vol * 0.3, shape)
    body = rng.normal(drift, vol, shape)
    log_open = np.log(price0) + np.cumsum(gap + body, axis=0) - body  # open_t = close_{t-1} * exp(gap_t)
    log_close = log_open + body
    o, c = np.exp(log_open), np.exp(log_close)
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0.0, vol * 0.5, shape)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0.0, vol * 0.5, shape)))
    v = np.round(np.exp(rng.normal(13.0, 0.5, shape)))
    ts = np.datetime64(start, "ns") + np.arange(n_bars) * np.timedelta64(_step_ns(step), "ns")
    symbols = tuple(f"S{i:02d}" for i in range(n_assets))
    return MarketData.from_arrays(symbols, ts, o, h, lo, c, v, source=f"synthetic(seed={seed})")


def _step_ns(step: str) -> int:
    import pandas as pd

    return int(pd.Timedelta(step).value)


def write_market_csvs(market: MarketData, folder: Path, columns: dict[str, tuple[str, ...]] | None = None) -> Path:
    """One SYMBOL.csv per asset with columns timestamp,open,high,low,close,volume (dates if all at midnight).

    ``columns``: for the symbols it names, write the timestamp and only these of the other columns (for example
    ``("close",)`` for a close-only file).
    """
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    ts = pd.DatetimeIndex(market.timestamps)
    stamps = ts.strftime("%Y-%m-%d") if (ts.normalize() == ts).all() else ts.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    for j, sym in enumerate(market.symbols):
        frame = pd.DataFrame(
            {
                "timestamp": stamps,
                "open": market.open[:, j],
                "high": market.high[:, j],
                "low": market.low[:, j],
                "close": market.close[:, j],
                "volume": market.volume[:, j],
            }
        )
        if columns and sym in columns:
            frame = frame[["timestamp", *columns[sym]]]
        frame.to_csv(folder / f"{sym}.csv", index=False, float_format="%.17g")
    return folder


def write_union_csvs(market: MarketData, folder: Path, keep: dict[str, Callable[[int], bool]]) -> Path:
    """``market`` written by ``write_market_csvs``, then the file of each symbol in ``keep`` cut to the bars (row
    indices) its rule keeps: listings, delistings and halts for a union calendar. Returns the folder."""
    import pandas as pd

    write_market_csvs(market, folder)
    for sym, rule in keep.items():
        frame = pd.read_csv(folder / f"{sym}.csv", float_precision="round_trip")
        frame[[rule(i) for i in range(len(frame))]].to_csv(folder / f"{sym}.csv", index=False, float_format="%.17g")
    return folder


def replace_unread_prices(market: MarketData, max_fill: int, horizon: int = 2, seed: int = 0) -> MarketData:
    """A union-calendar ``market`` with every price and volume that no tradeable decision reads replaced by random
    values: before an asset's first print, and more than ``max_fill`` + ``horizon`` bars after its last one (a
    decision made while it is still tradeable fills and marks at the held last close of the next ``horizon``
    bars). Mask, calendar and flags are kept."""
    t = np.arange(market.n_bars)[:, None]
    first = np.where(~market.filled, t, market.n_bars).min(axis=0)
    last = np.where(~market.filled, t, -1).max(axis=0)
    unread = (t < first) | (t > last + max_fill + horizon)
    rng = np.random.default_rng(seed)
    price = rng.uniform(0.01, 1e4, unread.shape)
    new = {name: np.where(unread, value, getattr(market, name)) for name, value in (
        ("open", price), ("high", price * 1.5), ("low", price / 1.5), ("close", price),
        ("volume", rng.uniform(0, 1e9, unread.shape)))}
    return MarketData.from_arrays(market.symbols, market.timestamps, new["open"], new["high"], new["low"],
                                  new["close"], new["volume"], filled=market.filled, calendar=market.calendar,
                                  listed=market.listed, tradeable=market.tradeable,
                                  missing_columns=market.missing_columns)


@pytest.fixture
def synthetic_ohlc() -> Callable[..., MarketData]:
    """Factory: ``synthetic_ohlc(n_bars, n_assets, seed, **kw)`` -> MarketData (see make_synthetic_ohlc)."""
    return make_synthetic_ohlc


@pytest.fixture
def write_ohlc_csvs(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``write_ohlc_csvs(market, folder=None, columns=None)`` -> the folder (tmp_path / "data" by default)."""

    def write(market: MarketData, folder: Path | None = None,
              columns: dict[str, tuple[str, ...]] | None = None) -> Path:
        return write_market_csvs(market, folder if folder is not None else tmp_path / "data", columns)

    return write


@pytest.fixture(scope="session")
def sample_market() -> MarketData:
    """The bundled AAPL/GOOG/IBM/MSFT daily sample, aligned (2,148 bars)."""
    return load_market(DataConfig(root=str(bundled_sample_dir())), min_bars=1)


def _register_hypothesis_profiles() -> None:
    """"default": fast and derandomized (CI is deterministic); "long": more examples, for ``-m slow`` runs."""
    try:
        from hypothesis import settings
    except ImportError:  # hypothesis is in the dev group; without it test_fuzz.py fails to import, nothing else
        return
    common = {"deadline": None, "database": None, "print_blob": True}  # no .hypothesis/ folder in the checkout
    settings.register_profile("default", max_examples=100, derandomize=True, **common)
    settings.register_profile("long", max_examples=2000, derandomize=False, **common)
    settings.load_profile("default")


_register_hypothesis_profiles()


def tiny_study_config(data_root: Path, save_dir: Path, epochs: int = 4):
    """A seconds-long training config for study tests (hidden 8, lookback 16, 4 windows x 2 rollouts, float32)."""
    from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig

    return ExperimentConfig(
        data=DataConfig(root=str(data_root)),
        policy=PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8),
        train=TrainConfig(lookback=16, batch_windows=4, rollout_groups=2, epochs=epochs, eval_interval=2,
                          log_interval=2, device="cpu", dtype="float32", save_dir=str(save_dir)),
    )
