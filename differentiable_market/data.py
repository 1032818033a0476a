"""Read a folder of per-symbol OHLC(V) files, validate every bar, and align the assets on one calendar.

One file per symbol (``.csv``, ``.csv.gz`` or ``.parquet``; the symbol is the file name without that suffix). Columns
are matched case-insensitively: a time column (``timestamp``, ``date``, ``datetime`` or ``time``), ``close``, and
optionally ``open``, ``high``, ``low`` and ``volume``. A file without ``open`` takes the close as its open; one without
``high`` or ``low`` takes max(open, close) and min(open, close) (so a close-only file has open = high = low = close).
Which columns each asset lacked is kept in ``MarketData.missing_columns`` and said in the notes: the features that
need them are 0 for that asset, and with "open" execution such an asset fills at the next bar's close
(``execution_note``). Times may be dates, ISO date-times with or without a zone (no
zone means UTC), or epoch seconds / milliseconds (told apart by magnitude); all become UTC instants.

Alignment: the calendar is the union of the assets' timestamps from the latest first bar to the earliest last bar,
so nothing is ever backfilled. An asset that lists late or delists early is therefore kept, and every asset's history
is cut to the span in which all of them are listed (the notes name the assets that set the span). A bar an asset lacks on that calendar is forward-filled from its previous close
(open = high = low = close = previous close, volume 0), at most ``max_fill_bars`` in a row; an asset with a longer gap
is dropped and reported by name. Nothing is interpolated and nothing is left out silently. That is the default
calendar ("intersection"); ``DataConfig.calendar = "union"`` keeps every asset over its own life instead, with a
causal tradeable mask (``_align_union``; the features, accounting, policies, training, the backtester, the study and
predict respect it).

Universe cut-off: which assets are kept may only depend on the past of the bars a model is fitted on, otherwise a gap
in 2012 would remove an asset from a model trained on 2004-2010. Given ``universe_cutoff`` (a function of the
calendar; the training CLI and the backtester pass "the end of the training split"), only missing bars before the
cut-off count towards ``max_fill_bars``. A longer gap after it (or one that only grows past the limit after it) keeps
the asset and is forward-filled like a short one: the price stays flat, so the asset earns nothing over the gap and
an account holding it simply holds it through the gap, earning the jump when trading resumes. Each such gap is
listed in ``MarketData.late_gaps`` and in the notes. The splits depend only on the number of calendar bars, so the
cut-off is recomputed from the current calendar every time an asset is dropped (dropping can change the calendar).
Without a cut-off, gaps anywhere in the data decide (the whole data set is treated as the fitting period).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import DataConfig
from .errors import DataError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_ROOT = "trainingdata"
DATA_SUFFIXES = (".csv.gz", ".csv", ".parquet")
TIME_COLUMNS = ("timestamp", "date", "datetime", "time")
PRICE_COLUMNS = ("open", "high", "low", "close")
OPTIONAL_PRICES = ("open", "high", "low")  # a file may lack these; close is required
BUNDLED_SOURCE = "bundled sample"  # MarketData.source of the bundled sample, the same on every machine
OHLC_TOLERANCE = 1e-6  # relative slack for high >= max(open, close) and low <= min(open, close) (rounded files)
RELEASE_BYTES = 256 << 20  # while aligning, freed file data goes back to the system in steps of this size
SPLIT_LIKE_LOG_MOVE = 0.4  # |log(open_t / close_{t-1})| above this (-33% / +49%) gets a note: an unadjusted split?


def bundled_sample_dir() -> Path:
    """Folder of the bundled daily sample (AAPL, GOOG, IBM, MSFT; see its README.md)."""
    return Path(__file__).resolve().parent / "sample_data"


def resolve_data_root(root: str) -> tuple[Path, bool]:
    """Folder to read, and whether it is the bundled sample.

    The default root ``trainingdata`` falls back to the bundled sample when that folder does not exist (the caller
    should say so); any other root must exist.
    """
    path = Path(root).expanduser()
    if path.is_dir():
        return path, False
    if root == DEFAULT_ROOT and not path.exists():
        return bundled_sample_dir(), True
    what = "is not a folder" if path.exists() else "does not exist"
    raise DataError(f"data root {str(path)!r} {what}. Pass --data-root with a folder of per-symbol OHLC files.")


def _iso(ns: int | np.datetime64) -> str:
    """UTC ISO-8601 text of a timestamp; plain YYYY-MM-DD for midnight."""
    t = np.datetime64(int(ns) if not isinstance(ns, np.datetime64) else ns, "ns")
    text = np.datetime_as_string(t, unit="s")
    return text[:10] if text.endswith("T00:00:00") else text + "+00:00"


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


@dataclass(frozen=True, eq=False, repr=False)
class MarketData:
    """Aligned prices of A assets over T bars. Arrays are read-only.

    timestamps: datetime64[ns] [T], strictly increasing UTC instants.
    open, high, low, close: float64 [T, A], positive; volume: float64 [T, A], >= 0 (0 on filled bars).
    filled: bool [T, A], True where the bar was forward-filled from the previous close.
    dropped: (symbol, reason) for every asset the loader had to leave out; notes: human-readable lines.
    universe_cutoff: the number of leading bars whose gaps decided which assets were kept (None: all of them).
    late_gaps: (symbol, description) of every run of missing bars longer than ``max_fill_bars`` that lies (partly)
    after the cut-off and was forward-filled instead of dropping the asset (see the module docstring).
    missing_columns: per asset, the price columns among open, high, low that its file lacked (in that order), and
    which were therefore derived from the close (open = close, high = max(open, close), low = min(open, close)).
    Given as () it means every asset had all four.
    calendar: "intersection" (every asset listed over the whole calendar) or "union" (each asset over its own life;
    ``load_market`` with ``DataConfig.calendar = "union"``, see ``_align_union``).
    listed: bool [T, A], True from an asset's first to its last print in its file. It knows when the asset delists,
    i.e. the future: for reports only, never for a decision. None (the default) means listed everywhere.
    tradeable: bool [T, A], the causal mask: True at bar t when the asset's last print at or before t is at most
    ``max_fill_bars`` bars old. A delisting (or a long halt) is known only once that many bars have passed without a
    print. None (the default) means tradeable everywhere. With a union calendar, prices on bars an asset has not
    yet listed are placeholders (1.0, volume 0) and after its last print its last close (volume 0): consumers must
    not read them where the asset is not tradeable.
    """

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    filled: np.ndarray
    source: str = "arrays"
    dropped: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    universe_cutoff: int | None = None
    late_gaps: tuple[tuple[str, str], ...] = ()
    missing_columns: tuple[tuple[str, ...], ...] = ()
    calendar: str = "intersection"
    listed: np.ndarray | None = None
    tradeable: np.ndarray | None = None

    def __post_init__(self) -> None:
        syms = self.symbols
        if not syms or any(not isinstance(s, str) or not s for s in syms) or len(set(syms)) != len(syms):
            raise DataError(f"MarketData needs unique, non-empty symbol names; got {syms!r}.")
        ts = self.timestamps
        if ts.dtype != np.dtype("datetime64[ns]") or ts.ndim != 1 or len(ts) < 1:
            raise DataError(f"MarketData.timestamps must be a non-empty 1-D datetime64[ns] array, got {ts.dtype}.")
        steps = np.diff(ts.view(np.int64))
        if (steps <= 0).any():
            i = int(np.argmax(steps <= 0))
            raise DataError(f"MarketData.timestamps must strictly increase; bar {i + 1} ({_iso(ts[i + 1])}) does not.")
        shape = (len(ts), len(syms))
        for name in ("open", "high", "low", "close", "volume", "filled"):
            a = getattr(self, name)
            want = np.bool_ if name == "filled" else np.float64
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != want:
                got = (a.shape, a.dtype) if isinstance(a, np.ndarray) else type(a).__name__
                raise DataError(f"MarketData.{name} must be {np.dtype(want)} of shape {shape} (bars, assets): {got}.")
            object.__setattr__(self, name, _readonly(a))
        object.__setattr__(self, "timestamps", _readonly(ts))
        if self.calendar not in ("intersection", "union"):
            raise DataError(f"MarketData.calendar must be 'intersection' or 'union', got {self.calendar!r}.")
        for name in ("listed", "tradeable"):
            a = getattr(self, name)
            if a is None:  # everywhere: one shared read-only True, not a [T, A] array
                a = np.broadcast_to(np.True_, shape)
            elif not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != np.bool_:
                got = (a.shape, a.dtype) if isinstance(a, np.ndarray) else type(a).__name__
                raise DataError(f"MarketData.{name} must be bool of shape {shape} (bars, assets): {got}.")
            object.__setattr__(self, name, _readonly(a))
        self._check_prices()
        self._check_missing_columns()

    def _check_prices(self) -> None:
        for name in PRICE_COLUMNS:
            a = getattr(self, name)
            bad = ~(np.isfinite(a) & (a > 0))
            if bad.any():
                t, i = np.argwhere(bad)[0]
                raise DataError(f"MarketData.{name} of {self.symbols[i]} at bar {t} is {a[t, i]}; prices must be > 0.")
        v = self.volume
        if not (np.isfinite(v) & (v >= 0)).all():
            raise DataError("MarketData.volume must be finite and >= 0.")
        tol = OHLC_TOLERANCE
        hi_bad = self.high < np.maximum(self.open, self.close) * (1 - tol)
        lo_bad = self.low > np.minimum(self.open, self.close) * (1 + tol)
        for bad, what in ((hi_bad, "high below max(open, close)"), (lo_bad, "low above min(open, close)")):
            if bad.any():
                t, i = np.argwhere(bad)[0]
                raise DataError(f"MarketData: {self.symbols[i]} at bar {t} ({_iso(self.timestamps[t])}) has {what}.")

    def _check_missing_columns(self) -> None:
        missing = self.missing_columns or ((),) * len(self.symbols)
        if len(missing) != len(self.symbols):
            raise DataError(f"MarketData.missing_columns needs one entry per asset ({len(self.symbols)}), got "
                            f"{len(missing)}.")
        for given in missing:
            if isinstance(given, str) or not set(given) <= set(OPTIONAL_PRICES):
                raise DataError(f"MarketData.missing_columns entries are tuples of {list(OPTIONAL_PRICES)}, got "
                                f"{given!r}.")
        missing = tuple(tuple(c for c in OPTIONAL_PRICES if c in given) for given in missing)  # canonical order
        object.__setattr__(self, "missing_columns", missing)
        # A column said to be missing must hold what the loader derives for it, or the features would mix both.
        derived = {"open": lambda i: self.close[:, i],
                   "high": lambda i: np.maximum(self.open[:, i], self.close[:, i]),
                   "low": lambda i: np.minimum(self.open[:, i], self.close[:, i])}
        for i, cols in enumerate(missing):
            for c in cols:
                if not np.array_equal(getattr(self, c)[:, i], derived[c](i)):
                    raise DataError(f"MarketData: {self.symbols[i]} is said to lack {c}, but its {c} is not the one "
                                    "derived from open and close (open = close, high = max, low = min).")

    @property
    def lacking_open(self) -> np.ndarray:
        """bool [A]: assets whose file had no open column (their open is the close)."""
        return np.array(["open" in cols for cols in self.missing_columns], dtype=np.bool_)

    @property
    def lacking_range(self) -> np.ndarray:
        """bool [A]: assets whose file lacked high or low (their bar range is not known)."""
        return np.array([("high" in cols) or ("low" in cols) for cols in self.missing_columns], dtype=np.bool_)

    def missing_prices(self) -> dict[str, list[str]]:
        """{symbol: the columns among open, high, low its file lacked}, for the assets that lacked any."""
        return {s: list(cols) for s, cols in zip(self.symbols, self.missing_columns) if cols}

    @classmethod
    def from_arrays(
        cls,
        symbols: tuple[str, ...] | list[str],
        timestamps: Any,
        open: Any,
        high: Any,
        low: Any,
        close: Any,
        volume: Any = None,
        *,
        filled: Any = None,
        source: str = "arrays",
        notes: tuple[str, ...] = (),
        missing_columns: tuple[tuple[str, ...], ...] = (),
        calendar: str = "intersection",
        listed: Any = None,
        tradeable: Any = None,
    ) -> MarketData:
        """Build (and validate) a market from [T, A] price arrays; inputs are copied.

        timestamps: anything ``numpy.asarray(..., dtype='datetime64[ns]')`` accepts (tz-aware pandas times are
        converted to UTC), or None for consecutive days from 2000-01-01. volume None means zeros.
        missing_columns: see the class docstring (the prices given for those columns must be the derived ones).
        calendar, listed, tradeable: see the class docstring (None: listed and tradeable everywhere).
        """
        o = np.array(open, dtype=np.float64)
        if o.ndim != 2:
            raise DataError(f"from_arrays: prices must be 2-D [bars, assets], got shape {o.shape}.")
        n_bars = o.shape[0]
        if timestamps is None:
            ts = np.datetime64("2000-01-01", "ns") + np.arange(n_bars) * np.timedelta64(1, "D")
        else:
            if hasattr(timestamps, "tz") and timestamps.tz is not None:
                timestamps = timestamps.tz_convert("UTC").tz_localize(None)
            ts = np.array(timestamps, dtype="datetime64[ns]").reshape(-1)
        if len(ts) != n_bars:
            raise DataError(f"from_arrays: {len(ts)} timestamps for {n_bars} bars of prices.")
        vol = np.zeros_like(o) if volume is None else np.array(volume, dtype=np.float64)
        fill = np.zeros(o.shape, dtype=np.bool_) if filled is None else np.array(filled, dtype=np.bool_)
        return cls(
            symbols=tuple(symbols),
            timestamps=ts,
            open=o,
            high=np.array(high, dtype=np.float64),
            low=np.array(low, dtype=np.float64),
            close=np.array(close, dtype=np.float64),
            volume=vol,
            filled=fill,
            source=source,
            notes=tuple(notes),
            missing_columns=tuple(tuple(c) for c in missing_columns),
            calendar=calendar,
            listed=None if listed is None else np.array(listed, dtype=np.bool_),
            tradeable=None if tradeable is None else np.array(tradeable, dtype=np.bool_),
        )

    @property
    def n_bars(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the data a model was trained on: symbols, range, bar count and a hash of O/H/L/C; with
        ``missing_prices`` when some asset's file lacked open, high or low (a close-only file and one that spells out
        open = high = low = close hash alike but give different features)."""
        h = hashlib.sha256()
        for a in (self.open, self.high, self.low, self.close):
            h.update(np.ascontiguousarray(a, dtype="<f8").data)  # no copy for the usual C-ordered float64
        missing = self.missing_prices()
        return {
            "symbols": list(self.symbols),
            "first_timestamp": _iso(self.timestamps[0]),
            "last_timestamp": _iso(self.timestamps[-1]),
            "n_bars": self.n_bars,
            "ohlc_sha256": h.hexdigest(),
            "source": self.source,
            **({"missing_prices": missing} if missing else {}),
            **({"calendar": self.calendar} if self.calendar != "intersection" else {}),
        }

    def __repr__(self) -> str:
        return (
            f"MarketData({self.n_assets} assets {list(self.symbols)[:8]}{'...' if self.n_assets > 8 else ''}, "
            f"{self.n_bars} bars {_iso(self.timestamps[0])}..{_iso(self.timestamps[-1])}, source={self.source!r})"
        )


# ----------------------------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class _Series:
    """One file's validated bars, sorted by time. ts: int64 ns UTC [n]; o, h, l, c, v: float64 [n]."""

    ts: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray  # noqa: E741
    c: np.ndarray
    v: np.ndarray
    notes: tuple[str, ...]
    missing: tuple[str, ...] = ()  # which of open, high, low the file lacked (derived from the close)


UniverseCutoff = Callable[[np.ndarray], int]


def load_market(cfg: DataConfig, min_bars: int, universe_cutoff: UniverseCutoff | None = None) -> MarketData:
    """Load, validate and align the files under ``cfg.root`` (or the bundled sample, see ``resolve_data_root``).

    min_bars: the fewest aligned bars the caller can use (the lookback plus what the splits need). A file with fewer
    bars, or a common calendar shorter than this, is a DataError.
    universe_cutoff: maps the aligned calendar (datetime64[ns] [T]) to the number of leading bars whose gaps decide
    which assets are dropped, typically the end of the training split (``splits.train_end_cutoff``); gaps after it
    are forward-filled and listed in ``late_gaps``. None: gaps anywhere decide. See the module docstring.
    """
    root, bundled = resolve_data_root(cfg.root)
    notes: list[str] = []
    if bundled:
        notes.append(f"'{cfg.root}' not found: using the bundled sample in {root}")
    files = _list_files(root, cfg.glob)
    selected = _select(sorted(files), cfg, root, notes)
    series = {}
    union = cfg.calendar == "union"
    for sym in selected:
        s = _read_series(files[sym], 1 if union else min_bars)  # on a union calendar a short life is no error
        notes.extend(s.notes)
        series[sym] = s
    source = BUNDLED_SOURCE if root.resolve() == bundled_sample_dir() else str(root.resolve())
    if union:
        market = _align_union(series, cfg.max_fill_bars, cfg.min_listed, min_bars, source, notes)
    else:
        market = _align(series, cfg.max_fill_bars, min_bars, source, notes, universe_cutoff)
    del series
    _release_freed_memory()
    return market


def _release_freed_memory() -> None:
    """Hand the memory freed by reading the files back to the operating system.

    Each file's columns are arrays of a few MB. Allocators keep such freed blocks for reuse instead of returning them:
    pyarrow's memory pool (Parquet files) and glibc's heap (CSV files; glibc serves them from its heap once its
    dynamic mmap threshold has grown past their size, and free() only ever shrinks the top of the heap). After
    loading 100 assets x 500,000 one-minute bars that kept 2.2 GB resident next to the 1.5 GB of aligned prices
    (``benchmarks/data_scale.py``). Both calls take milliseconds; glibc's is skipped where there is no glibc.
    """
    import ctypes

    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return
    trim(0)


def _symbol_of(path: Path) -> str | None:
    name = path.name
    for suffix in DATA_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _list_files(root: Path, glob: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(root.glob(glob)):
        sym = _symbol_of(path)
        if sym is None or not path.is_file():
            continue
        if sym in files:
            raise DataError(
                f"two files for symbol {sym!r}: {files[sym]} and {path}. Keep one, or pick one with --data-glob."
            )
        files[sym] = path
    if not files:
        present = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else []
        raise DataError(
            f"no .csv, .csv.gz or .parquet files match {glob!r} in {root} (it holds: {present or 'nothing'}). "
            "Point --data-root at a folder of per-symbol OHLC files or change --data-glob."
        )
    return files


def _select(available: list[str], cfg: DataConfig, root: Path, notes: list[str]) -> list[str]:
    missing = [s for s in cfg.include if s not in available]
    if missing:
        raise DataError(
            f"--include names {missing} but {root} has no such file; available symbols: {_listing(available)}."
        )
    chosen = [s for s in available if s in cfg.include] if cfg.include else list(available)
    absent_excl = [s for s in cfg.exclude if s not in available]
    if absent_excl:
        notes.append(f"exclude lists {absent_excl}, which are not in {root}")
    excluded = [s for s in chosen if s in cfg.exclude]
    chosen = [s for s in chosen if s not in cfg.exclude]
    if excluded:
        notes.append(f"excluded by request: {', '.join(excluded)}")
    if cfg.max_assets is not None and len(chosen) > cfg.max_assets:
        notes.append(f"max_assets={cfg.max_assets}: left out {', '.join(chosen[cfg.max_assets:])}")
        chosen = chosen[: cfg.max_assets]
    if not chosen:
        raise DataError(f"no symbols left after --include/--exclude in {root}; available: {_listing(available)}.")
    return chosen


def _listing(names: list[str], limit: int = 40) -> str:
    return str(names) if len(names) <= limit else f"{names[:limit]} and {len(names) - limit} more"


def _read_frame(path: Path) -> pd.DataFrame:
    import pandas as pd

    sym = _symbol_of(path)
    try:
        if path.name.lower().endswith(".parquet"):
            df = pd.read_parquet(path)
            if not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()
        else:
            df = pd.read_csv(path, skipinitialspace=True, float_precision="round_trip", encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty. Delete it or leave it out with --exclude {sym}.") from None
    except Exception as exc:  # parser, encoding, gzip and parquet errors all mean the same to the user
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc}). Fix or remove the file.") from None
    if len(df) == 0:
        raise DataError(f"{path}: the file has a header but no data rows. Delete it or --exclude {sym}.")
    return df


def _column_names(names: list[Any], path: Path) -> dict[str, Any]:
    """{lower-cased, stripped name: column} of a file's columns; two that differ only in case are an error."""
    by_name: dict[str, Any] = {}
    for col in names:
        key = str(col).strip().lower()
        if key in by_name:
            raise DataError(f"{path}: columns {by_name[key]!r} and {col!r} differ only in case. Keep one.")
        by_name[key] = col
    return by_name


def _columns(df: pd.DataFrame, path: Path) -> dict[str, Any]:
    """The file's time, open, high, low, close and volume columns; None for an optional one it lacks."""
    by_name = _column_names(list(df.columns), path)
    found = list(df.columns)
    if not any(p in by_name for p in PRICE_COLUMNS):
        raise DataError(
            f"{path}: does not look like a price file (columns: {found[:12]}). If it is not price data, leave it out "
            f"with --exclude {_symbol_of(path)} or narrow --data-glob; otherwise name its columns close (required) and "
            "open, high, low, volume (optional)."
        )
    if "close" not in by_name:
        raise DataError(
            f"{path}: has no close column (columns: {found[:12]}); close is required (open, high, low and volume are "
            "optional). If the close is under another name (such as 'adj close' or 'price'), rename that column to "
            "close."
        )
    time_key = next((k for k in TIME_COLUMNS if k in by_name), None)
    if time_key is None:
        raise DataError(
            f"{path}: no time column (looked for {', '.join(TIME_COLUMNS)}; columns: {found[:12]}). Add one."
        )
    out = {k: by_name.get(k) for k in PRICE_COLUMNS}
    out["time"] = by_name[time_key]
    out["volume"] = by_name.get("volume")
    return out


def _missing_note(name: str, missing: tuple[str, ...]) -> str:
    """The load note of a file that lacked some of open, high, low (``missing``, non-empty)."""
    if len(missing) == len(OPTIONAL_PRICES):
        return (f"{name}: close only (no open, high, low): open, high and low are taken as the close; its bar-range, "
                "body and overnight-gap features are 0")
    taken = {"open": "open = close", "high": "high = max(open, close)", "low": "low = min(open, close)"}
    zero = (["bar-range"] if {"high", "low"} & set(missing) else []) + (
        ["body", "overnight-gap"] if "open" in missing else [])
    return (f"{name}: no {', '.join(missing)} column(s), taken as {', '.join(taken[c] for c in missing)}; its "
            f"{', '.join(zero)} feature(s) are 0")


def symbols_without_open(cfg: DataConfig) -> tuple[str, ...]:
    """The selected symbols (``--include``/``--exclude``/``--max-assets``) whose file has no open column, read from
    the files' headers only. Used to choose the execution before the data are loaded; a file whose header cannot be
    read is left to ``load_market`` to report."""
    root, _ = resolve_data_root(cfg.root)
    files = _list_files(root, cfg.glob)
    out = []
    for sym in _select(sorted(files), cfg, root, []):
        path = files[sym]
        try:
            if path.name.lower().endswith(".parquet"):
                import pyarrow.parquet as pq

                names = list(pq.read_schema(path).names)
            else:
                import pandas as pd

                names = list(pd.read_csv(path, nrows=0, skipinitialspace=True, encoding="utf-8-sig").columns)
            by_name = _column_names(names, path)
        except Exception:  # noqa: BLE001 -- any unreadable header is reported by the loader itself
            continue
        if "close" in by_name and "open" not in by_name:
            out.append(sym)
    return tuple(out)


def execution_note(market: MarketData, execution: str) -> str | None:
    """What ``execution`` means for the assets without an open price (None when every asset has one)."""
    lacking = [s for s, flag in zip(market.symbols, market.lacking_open) if flag]
    if not lacking:
        return None
    names = _listing(lacking, 10)
    which = f"{len(lacking)} of {market.n_assets} assets have no open price ({names})"
    if execution == "close":
        return (f"execution close: {which}; every decision made after bar t closes fills at the close of bar t and "
                "earns the close-to-close return to bar t+1")
    others = " (the other assets fill at the open of bar t+1)" if len(lacking) < market.n_assets else ""
    return (f"execution open: {which}, so their open is the close: a decision made after bar t closes fills them at "
            f"the close of bar t+1, one bar after the decision{others}, and earns the close of t+2 over the close of "
            "t+1; pass --execution close to fill every asset at the close of bar t")


class _Where:
    """Formats 'file: row N (line N+1, timestamp ...)' for errors; row is the 1-based data row in the file."""

    def __init__(self, path: Path, ts_ns: np.ndarray | None = None):
        self.path, self.ts_ns, self.csv = path, ts_ns, not path.name.lower().endswith(".parquet")

    def __call__(self, i: int) -> str:
        parts = [f"line {i + 2}"] if self.csv else []
        if self.ts_ns is not None:
            parts.append(f"timestamp {_iso(self.ts_ns[i])}")
        return f"{self.path}: row {i + 1}" + (f" ({', '.join(parts)})" if parts else "")


def _parse_times(values: pd.Series, path: Path) -> np.ndarray:
    """int64 nanoseconds since the epoch, UTC, one per row (file order)."""
    import pandas as pd

    where = _Where(path)
    nulls = values.isna().to_numpy()
    if nulls.any():
        raise DataError(f"{where(int(np.argmax(nulls)))}: the time is missing. Fill it in or delete the row.")
    try:
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            parsed = values.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(values.dtype):
            parsed = values.dt.tz_localize("UTC")
        elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            parsed = _parse_numeric_times(values)
        else:
            parsed = pd.to_datetime(values.astype(str).str.strip(), utc=True, format="ISO8601", errors="coerce")
    except (ValueError, OverflowError) as exc:
        raise DataError(f"{path}: the time column cannot be read as dates ({exc}).") from None
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where(i)}: time {values.iloc[i]!r} is not a date. Use YYYY-MM-DD, an ISO date-time such as "
            "2024-01-31T14:30:00+00:00 (no zone means UTC), or epoch seconds or milliseconds."
        )
    return parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _parse_numeric_times(values: pd.Series) -> pd.Series:
    import pandas as pd

    v = values.to_numpy(dtype=np.float64)
    if np.all(v == np.round(v)) and v.min() >= 1900_01_01 and v.max() <= 2100_12_31:
        # YYYYMMDD integers; as epoch seconds they would all fall in 1970-1973
        as_dates = pd.to_datetime(values.astype(np.int64).astype(str), format="%Y%m%d", utc=True, errors="coerce")
        if not as_dates.isna().any():
            return as_dates
    mag = np.abs(v).max()
    unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
    return pd.to_datetime(values, unit=unit, utc=True)


def _numeric(values: pd.Series, name: str, where: _Where, allow_zero: bool) -> np.ndarray:
    import pandas as pd

    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    missing = values.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise DataError(f"{where(i)}: {name} is missing. Fill it in or delete the row (short gaps are filled).")
    bad = ~np.isfinite(num)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where(i)}: {name} is not a number ({values.iloc[i]!r}). Fix the value or delete the row.")
    low = num < 0 if allow_zero else num <= 0
    if low.any():
        i = int(np.argmax(low))
        need = ">= 0" if allow_zero else "> 0"
        raise DataError(f"{where(i)}: {name} is {num[i]:g}, but it must be {need}. Fix the value or delete the row.")
    return num


def _read_series(path: Path, min_bars: int) -> _Series:
    df = _read_frame(path)
    cols = _columns(df, path)
    ts = _parse_times(df[cols["time"]], path)
    where = _Where(path, ts)
    o, h, l, c = (None if cols[k] is None else _numeric(df[cols[k]], k, where, allow_zero=False)  # noqa: E741
                  for k in PRICE_COLUMNS)
    missing = tuple(k for k in OPTIONAL_PRICES if cols[k] is None)
    o = c if o is None else o  # shared, not copied: a close-only file holds one price column
    h = (c if o is c else np.maximum(o, c)) if h is None else h
    l = (c if o is c else np.minimum(o, c)) if l is None else l  # noqa: E741
    v = np.zeros(len(df)) if cols["volume"] is None else _numeric(df[cols["volume"]], "volume", where, True)
    hi_ref, lo_ref = np.maximum(o, c), np.minimum(o, c)
    for bad, text in (
        (h < hi_ref * (1 - OHLC_TOLERANCE), lambda i: f"high {h[i]:g} is below max(open, close) = {hi_ref[i]:g}"),
        (l > lo_ref * (1 + OHLC_TOLERANCE), lambda i: f"low {l[i]:g} is above min(open, close) = {lo_ref[i]:g}"),
    ):
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where(i)}: {text(i)}. Fix the bar (high is the bar's highest price, low its lowest) or delete "
                f"the row ({int(bad.sum())} such row(s) in the file)."
            )
    notes = [_missing_note(path.name, missing)] if missing else []
    steps = np.diff(ts)
    if (steps > 0).all():  # already sorted and unique, as exports usually are: no reordering copies
        ts_sorted, columns = ts, (o, h, l, c, v)
    else:
        order = np.argsort(ts, kind="stable")
        if (steps < 0).any():
            notes.append(f"{path.name}: rows were not in time order; sorted them")
        ts_sorted = ts[order]
        dup = np.flatnonzero(np.diff(ts_sorted) == 0)
        if dup.size:
            a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
            raise DataError(
                f"{path}: timestamp {_iso(ts_sorted[dup[0]])} appears more than once (rows {a + 1} and {b + 1}; "
                f"{dup.size} duplicate(s) in the file). Remove the duplicate rows."
            )
        columns = (o[order], h[order], l[order], c[order], v[order])
    if len(ts) < min_bars:
        raise DataError(
            f"{path}: has {len(ts)} bars but at least {min_bars} are needed (the lookback plus the splits). Add "
            f"history, use a shorter --lookback, or leave it out with --exclude {_symbol_of(path)}."
        )
    series = _Series(ts_sorted, *columns, tuple(notes), missing)
    return dataclasses.replace(series, notes=series.notes + _suspicious_moves(series, path, df))


def _suspicious_moves(s: _Series, path: Path, df: pd.DataFrame) -> tuple[str, ...]:
    """Notes (not errors: crypto can halve in a day) on moves that look like an unadjusted split."""
    ratio = s.o[1:] / s.c[:-1]
    limit = np.exp(SPLIT_LIKE_LOG_MOVE)
    if not ((ratio > limit) | (ratio < 1 / limit)).any():  # no logarithm of every bar in the usual case
        return ()
    jumps = np.abs(np.log(ratio))
    i = int(np.argmax(jumps)) + 1
    adjusted = [c for c in df.columns if "adj" in str(c).lower()]
    hint = f"; the file has {adjusted} but the loader uses open/high/low/close as given" if adjusted else ""
    move = "close-to-close" if "open" in s.missing else "overnight"
    return (
        f"{path.name}: {int((jumps > SPLIT_LIKE_LOG_MOVE).sum())} {move} move(s) beyond "
        f"{np.expm1(-SPLIT_LIKE_LOG_MOVE):.0%}/{np.expm1(SPLIT_LIKE_LOG_MOVE):+.0%}, the largest "
        f"{s.c[i - 1]:g} -> {s.o[i]:g} at {_iso(s.ts[i])}; if that is an unadjusted split, adjust the prices{hint}",
    )


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a 1-D bool array."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    return starts, np.flatnonzero(d == -1) - starts


def _calendar(series: dict[str, _Series], active: list[str]) -> np.ndarray:
    start = max(series[s].ts[0] for s in active)
    end = min(series[s].ts[-1] for s in active)
    if start > end:
        ranges = "; ".join(f"{s} {_iso(series[s].ts[0])}..{_iso(series[s].ts[-1])}" for s in active)
        raise DataError(
            f"the assets share no common dates ({ranges}). Leave out the ones that do not overlap with --exclude."
        )
    parts = [_between(series[s].ts, start, end) for s in active]
    # The union of sorted, unique arrays: the longest one plus whatever the others add to it. Sorting all of them
    # together costs seconds at tens of millions of rows; the assets of one market mostly share their bars.
    base = max(parts, key=len)
    extra = [p[~_contains(base, p)] for p in parts if p is not base]
    return np.unique(np.concatenate([base, *extra]))


def _between(ts: np.ndarray, start: int, end: int) -> np.ndarray:
    """The part of sorted ``ts`` in [start, end], as a view."""
    return ts[np.searchsorted(ts, start, side="left"):np.searchsorted(ts, end, side="right")]


def _contains(sorted_ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """bool per value: whether it is in ``sorted_ts`` (sorted, non-empty)."""
    i = np.minimum(np.searchsorted(sorted_ts, values), len(sorted_ts) - 1)
    return sorted_ts[i] == values


def _last_at_or_before(s: _Series, cal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per calendar bar, the index of the series' last bar at or before it, and whether the series lacks that bar
    (bool [T]; at the calendar's start the series' earlier bars count as present)."""
    idx = np.searchsorted(s.ts, cal, side="right") - 1
    return idx, s.ts[idx] != cal


def _missing(s: _Series, cal: np.ndarray) -> np.ndarray:
    """bool [T]: calendar bars the series lacks (at the calendar's start its earlier bars count as present)."""
    return _last_at_or_before(s, cal)[1]


def _align(
    series: dict[str, _Series], max_fill: int, min_bars: int, source: str, notes: list[str],
    universe_cutoff: UniverseCutoff | None = None,
) -> MarketData:
    """The aligned market of ``series`` (see the module docstring). Consumes ``series``: the kept assets' entries
    are removed as their bars are copied into the aligned arrays."""
    active = list(series)
    dropped: list[tuple[str, str]] = []
    while True:
        if not active:
            reasons = "; ".join(f"{s}: {r}" for s, r in dropped)
            raise DataError(f"every asset was dropped ({reasons}). Raise --max-fill-bars or fix the files.")
        cal = _calendar(series, active)
        # Recomputed on every pass: dropping an asset can change the calendar, and with it the splits.
        cut = len(cal)
        if universe_cutoff is not None:
            cut = min(max(int(universe_cutoff(cal.view("datetime64[ns]"))), 0), len(cal))
        cut_date = _iso(cal[cut - 1]) if cut else "before the first bar"
        within = "" if cut == len(cal) else f" before the universe cut-off ({cut} bars, to {cut_date})"
        gaps = {}
        for sym in active:
            starts, lengths = _runs(_missing(series[sym], cal[:cut]))
            if lengths.size and lengths.max() > max_fill:
                k = int(np.argmax(lengths))
                first, last = cal[starts[k]], cal[starts[k] + lengths[k] - 1]
                gaps[sym] = (
                    f"{int(lengths[k])} consecutive bars missing from {_iso(first)} to {_iso(last)} on the common "
                    f"calendar{within} (max_fill_bars={max_fill}; raise --max-fill-bars or fix the file)"
                )
        if not gaps:
            break
        dropped.extend(gaps.items())
        notes.extend(f"dropped {s}: {r}" for s, r in gaps.items())
        active = [s for s in active if s not in gaps]
    late_gaps: list[tuple[str, str]] = []
    asset_notes: list[str] = []
    for sym in active:
        missing = _missing(series[sym], cal)
        starts, lengths = _runs(missing)
        if cut < len(cal):
            for a, n in zip(starts.tolist(), lengths.tolist()):
                if n > max_fill:  # it lies (partly) after the cut-off, or the asset would have been dropped
                    late_gaps.append((sym, (
                        f"{n} consecutive bars missing from {_iso(cal[a])} to {_iso(cal[a + n - 1])}, after the "
                        f"universe cut-off ({cut_date}): longer than max_fill_bars="
                        f"{max_fill} but kept; forward-filled (flat price, the asset earns nothing over the gap and "
                        "a holder holds it through)")))
        n_missing = int(lengths.sum())
        unused = len(series[sym].ts) - (len(cal) - n_missing)
        if n_missing:
            asset_notes.append(f"{sym}: {n_missing} bar(s) forward-filled (longest run {int(lengths.max())})")
        if unused:
            asset_notes.append(f"{sym}: {unused} bar(s) outside the common calendar not used")
    if cut < len(cal):
        notes.append(f"universe decided on the first {cut} bars (to {cut_date}); longer gaps after that are "
                     "forward-filled and listed, the asset is kept")
        notes.extend(f"late gap in {s}: {r}" for s, r in late_gaps)

    n = len(cal)
    first_sym = max(active, key=lambda s: series[s].ts[0])
    last_sym = min(active, key=lambda s: series[s].ts[-1])
    if n < min_bars:
        raise DataError(
            f"the assets share only {n} bars ({_iso(cal[0])}..{_iso(cal[-1])}: {first_sym} starts latest, {last_sym} "
            f"ends earliest) but {min_bars} are needed. Leave those out with --exclude or use a shorter --lookback."
        )
    notes.append(
        f"calendar: {n} bars {_iso(cal[0])}..{_iso(cal[-1])} (starts at {first_sym}'s first bar, ends at "
        f"{last_sym}'s last bar)"
    )
    # Asset by asset into asset-major buffers, then transposed into the [T, A] arrays: an asset is a strided column
    # of a [T, A] array, and writing it there touched a cache line per bar (4 s at 100 assets x 382,000 bars). Each
    # asset's own bars are let go once copied, and handed back to the system every RELEASE_BYTES, so the file data
    # and the aligned arrays are not both resident at full size.
    missing_columns = tuple(series[s].missing for s in active)
    names = ("o", "h", "l", "c", "v")
    buffers = {k: np.empty((len(active), n)) for k in names}
    absent = np.empty((len(active), n), dtype=np.bool_)
    freed = 0
    for j, sym in enumerate(active):
        s = series.pop(sym)
        idx, missing = _last_at_or_before(s, cal)  # idx: last own bar at or before each calendar bar
        # mode="clip" only because "raise" would gather into a temporary first; every idx is in range.
        close = np.take(s.c, idx, out=buffers["c"][j], mode="clip")  # on a missing bar, the previous close
        for k in ("o", "h", "l", "v"):
            col = np.take(getattr(s, k), idx, out=buffers[k][j], mode="clip")
            col[missing] = 0.0 if k == "v" else close[missing]
        absent[j] = missing
        freed += 6 * s.ts.nbytes
        del s, idx, missing, close, col
        if freed > RELEASE_BYTES:
            _release_freed_memory()
            freed = 0
    arrays = {k: np.ascontiguousarray(buffers.pop(k).T) for k in names}  # one buffer alive beside its copy
    filled = np.ascontiguousarray(absent.T)
    del absent
    notes.extend(asset_notes)
    return MarketData(
        symbols=tuple(active),
        timestamps=cal.view("datetime64[ns]"),
        open=arrays["o"],
        high=arrays["h"],
        low=arrays["l"],
        close=arrays["c"],
        volume=arrays["v"],
        filled=filled,
        source=source,
        dropped=tuple(dropped),
        notes=tuple(notes),
        universe_cutoff=None if universe_cutoff is None else cut,
        late_gaps=tuple(late_gaps),
        missing_columns=missing_columns,
    )


def _union_calendar(series: dict[str, _Series]) -> np.ndarray:
    """Every timestamp of every series, sorted and unique (int64 ns)."""
    parts = [s.ts for s in series.values()]
    base = max(parts, key=len)
    extra = [p[~_contains(base, p)] for p in parts if p is not base]
    return np.unique(np.concatenate([base, *extra]))


def _align_union(
    series: dict[str, _Series], max_fill: int, min_listed: int | None, min_bars: int, source: str, notes: list[str],
) -> MarketData:
    """Every asset over its own life on the union calendar, with ``listed`` and the causal ``tradeable`` mask.

    The calendar holds every timestamp of every file, from the earliest first bar (or, with ``min_listed``, from the
    first bar at which that many assets are tradeable) to the latest last bar. No asset is dropped: a gap longer than
    ``max_fill`` makes the asset untradeable until its prints resume. Per asset and calendar bar t: a bar with a print
    holds it; a later bar holds the last close (volume 0, ``filled``); a bar before the first print holds the
    placeholder 1.0 (volume 0, ``filled``). ``tradeable[t]`` is whether the last print at or before t lies at most
    ``max_fill`` calendar bars back, computed on the whole calendar (from the earliest first bar) before ``min_listed``
    cuts its start (at the first bar where that many assets are tradeable), so the age of a print made before that
    start is counted exactly. Consumes ``series``.
    """
    active = list(series)
    full = _union_calendar(series)
    positions = np.arange(len(full))
    if min_listed is not None and min_listed > len(active):
        raise DataError(f"--min-listed {min_listed} is more than the {len(active)} assets in the data; lower it.")
    # Pass 1, on the whole calendar: per asset, the bars with a print and the causal mask (a row at a time: the
    # int64 positions of all assets at once would be 8 bytes per asset-bar).
    printed = np.zeros((len(active), len(full)), dtype=np.bool_)
    tradeable_full = np.empty((len(active), len(full)), dtype=np.bool_)
    for j, sym in enumerate(active):
        printed[j, np.searchsorted(full, series[sym].ts)] = True  # every own bar is on the calendar
        last_print = np.maximum.accumulate(np.where(printed[j], positions, -(max_fill + 1)))
        np.less_equal(positions - last_print, max_fill, out=tradeable_full[j])
    del last_print
    start = 0
    if min_listed is not None:  # the first bar at which that many assets are tradeable (a causal count)
        count = tradeable_full.sum(axis=0)
        if count.max() < min_listed:
            raise DataError(f"no bar has {min_listed} tradeable assets (at most {int(count.max())}, first at "
                            f"{_iso(full[int(np.argmax(count))])}); lower --min-listed.")
        start = int(np.argmax(count >= min_listed))
    cal = full[start:]
    n = len(cal)
    if n < min_bars:
        raise DataError(f"the union calendar has only {n} bars ({_iso(cal[0])}..{_iso(cal[-1])}) but {min_bars} are "
                        "needed. Add history or use a shorter --lookback.")
    first_sym = min(active, key=lambda s: series[s].ts[0])
    last_sym = max(active, key=lambda s: series[s].ts[-1])
    opening = (f"starts at {first_sym}'s first bar" if min_listed is None
               else f"starts at the first bar where {min_listed} assets are tradeable")
    notes.append(f"calendar: union, {n} bars {_iso(cal[0])}..{_iso(cal[-1])} ({opening}, ends at {last_sym}'s last "
                 f"bar); every asset is kept over its own life, tradeable where its last print is at most "
                 f"{max_fill} bar(s) old")
    names = ("o", "h", "l", "c", "v")
    buffers = {k: np.empty((len(active), n)) for k in names}
    absent = np.empty((len(active), n), dtype=np.bool_)
    listed = np.empty((len(active), n), dtype=np.bool_)
    tradeable = np.empty((len(active), n), dtype=np.bool_)
    missing_columns = tuple(series[s].missing for s in active)
    freed = 0
    for j, sym in enumerate(active):  # pass 2: the calendar's bars from its start, each file let go once copied
        s = series.pop(sym)
        idx = np.searchsorted(s.ts, cal, side="right") - 1  # last own bar at or before each bar; -1 before listing
        tradeable[j] = tradeable_full[j, start:]
        listed[j] = (cal >= s.ts[0]) & (cal <= s.ts[-1])
        absent[j] = ~printed[j, start:]
        before = idx < 0
        close = np.take(s.c, idx, out=buffers["c"][j], mode="clip")
        close[before] = 1.0
        for k in ("o", "h", "l", "v"):
            col = np.take(getattr(s, k), idx, out=buffers[k][j], mode="clip")
            col[absent[j]] = 0.0 if k == "v" else close[absent[j]]
        life = _life_note(sym, s, cal, tradeable[j], max_fill)
        if life:
            notes.append(life)
        freed += 6 * s.ts.nbytes
        del s, idx, close, col
        if freed > RELEASE_BYTES:
            _release_freed_memory()
            freed = 0
    del printed, tradeable_full
    _release_freed_memory()
    arrays = {k: np.ascontiguousarray(buffers.pop(k).T) for k in names}
    return MarketData(
        symbols=tuple(active),
        timestamps=cal.view("datetime64[ns]"),
        open=arrays["o"],
        high=arrays["h"],
        low=arrays["l"],
        close=arrays["c"],
        volume=arrays["v"],
        filled=np.ascontiguousarray(absent.T),
        source=source,
        notes=tuple(notes),
        missing_columns=missing_columns,
        calendar="union",
        listed=np.ascontiguousarray(listed.T),
        tradeable=np.ascontiguousarray(tradeable.T),
    )


def _life_note(sym: str, s: _Series, cal: np.ndarray, tradeable: np.ndarray, max_fill: int) -> str | None:
    """A note on an asset that is not tradeable over the whole union calendar: when it lists, when its delisting
    becomes known, and its halts (runs of untradeable bars between prints); None when it is tradeable throughout."""
    if tradeable.all():
        return None
    parts = []
    if s.ts[0] > cal[0]:
        parts.append(f"lists at bar {int(np.searchsorted(cal, s.ts[0]))} ({_iso(s.ts[0])})")
    if s.ts[-1] < cal[-1]:
        # the bar after the last tradeable one (0: untradeable throughout, its last print long before this calendar)
        gone = len(tradeable) - int(np.argmax(tradeable[::-1])) if tradeable.any() else 0
        known = f"untradeable from bar {gone}" if gone < len(cal) else "still tradeable at the last bar"
        parts.append(f"last print at {_iso(s.ts[-1])}, {known} (a delisting is known {max_fill} bar(s) after it)")
    inside = (cal >= s.ts[0]) & (cal <= s.ts[-1])
    starts, lengths = _runs(~tradeable & inside)
    if lengths.size:
        k = int(np.argmax(lengths))
        parts.append(f"{lengths.size} halt(s) longer than max_fill_bars={max_fill}, untradeable until prints resume "
                     f"(the longest {int(lengths[k])} bars from {_iso(cal[starts[k]])})")
    return f"{sym}: " + "; ".join(parts)

