"""Property-based fuzzing of the loader and of the train/backtest CLI flags (Hypothesis).

Every case ends one of two ways: it loads and the aligned data hold the invariants, or it raises the package's error
type with a message naming the file (or folder, or flag). Profiles are registered in conftest.py: "default" (fast,
derandomized) and "long" (selected with ``-m slow`` via the ``slow`` tests below).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from differentiable_market.config import DataConfig
from differentiable_market.data import load_market
from differentiable_market.errors import ConfigError, DifferentiableMarketError
from differentiable_market.marketsimulator import run as backtest_cli
from differentiable_market.marketsimulator.backtester import BacktestOptions
from differentiable_market.train import build_parser, config_from_args

from conftest import make_synthetic_ohlc, write_market_csvs

N_BARS, N_ASSETS = 24, 2
MIN_BARS = 8


def _check_invariants(m) -> None:
    ts = m.timestamps.view(np.int64)
    assert m.timestamps.dtype == np.dtype("datetime64[ns]")
    assert (np.diff(ts) > 0).all()
    for a in (m.open, m.high, m.low, m.close):
        assert np.isfinite(a).all() and (a > 0).all()
    tol = 1e-6
    assert (m.high >= np.maximum(m.open, m.close) * (1 - tol)).all()
    assert (m.low <= np.minimum(m.open, m.close) * (1 + tol)).all()
    assert np.isfinite(m.volume).all() and (m.volume >= 0).all()
    assert len(m.missing_columns) == m.n_assets
    for i, cols in enumerate(m.missing_columns):  # what a file lacked is derived from what it had
        assert set(cols) <= {"open", "high", "low"}
        if "open" in cols:
            assert np.array_equal(m.open[:, i], m.close[:, i])
        if "high" in cols:
            assert np.array_equal(m.high[:, i], np.maximum(m.open[:, i], m.close[:, i]))
        if "low" in cols:
            assert np.array_equal(m.low[:, i], np.minimum(m.open[:, i], m.close[:, i]))


def _load_or_refuse(folder: Path) -> None:
    try:
        market = load_market(DataConfig(root=str(folder)), min_bars=MIN_BARS)
    except DifferentiableMarketError as exc:
        text = str(exc)
        names = [str(folder)] + [str(p) for p in folder.iterdir()] + [p.name for p in folder.iterdir()]
        # "about the set of files" errors (calendar, every asset dropped) name the assets rather than a path
        names += [p.name.split(".")[0] for p in folder.iterdir()]
        assert any(n in text for n in names), text
        event(f"refused: {text.split(': ', 2)[1][:30] if text.count(': ') > 1 else text[:30]}")
        return
    _check_invariants(market)
    event("loaded" + (" (some prices derived from the close)" if any(market.missing_columns) else ""))


# ---------------------------------------------------------------------------------------------------------------
# Mutations of valid CSV text

MUTATIONS = (
    "drop_rows", "dup_rows", "shuffle_rows", "swap_columns", "rename_column", "garbage", "latin1", "utf16",
    "extreme", "mixed_tz", "empty_cell", "truncate", "epoch", "drop_columns", "none",
)


def _mutate(text: str, kind: str, data: st.DataObject) -> bytes:
    lines = text.splitlines()
    if not lines:
        return text.encode()
    header, rows = lines[0], lines[1:]
    if kind == "drop_rows" and rows:
        keep = data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
        rows = [r for r, k in zip(rows, keep) if k]
    elif kind == "dup_rows" and rows:
        i = data.draw(st.integers(0, len(rows) - 1))
        rows.insert(data.draw(st.integers(0, len(rows))), rows[i])
    elif kind == "shuffle_rows":
        rows = data.draw(st.permutations(rows))
    elif kind == "swap_columns":
        cols = header.split(",")
        i, j = data.draw(st.integers(0, len(cols) - 1)), data.draw(st.integers(0, len(cols) - 1))
        cols[i], cols[j] = cols[j], cols[i]
        header = ",".join(cols)
    elif kind == "rename_column":
        cols = header.split(",")
        i = data.draw(st.integers(0, len(cols) - 1))
        cols[i] = data.draw(st.sampled_from(["Date", " TIME ", "CLOSE", "Open", "adj close", "x", "", "high"]))
        header = ",".join(cols)
    elif kind == "drop_columns":
        # A close-only or partial file: some of open, high, low, volume left out; one time in four also close or
        # the time column.
        cols = header.split(",")
        names = [c.strip().lower() for c in cols]
        optional = [i for i, c in enumerate(names) if c in ("open", "high", "low", "volume")]
        required = [i for i, c in enumerate(names) if c in ("close", "timestamp")]
        gone = set(data.draw(st.lists(st.sampled_from(optional), unique=True))) if optional else set()
        if required and data.draw(st.integers(0, 3)) == 0:
            gone.add(data.draw(st.sampled_from(required)))
        header = ",".join(c for i, c in enumerate(cols) if i not in gone)
        rows = [",".join(f for i, f in enumerate(r.split(",")) if i not in gone) for r in rows]
    elif kind == "extreme" and rows:
        scale = data.draw(st.sampled_from([1e-300, 1e-12, 1e12, 1e300, 1.7e308]))
        out = []
        for r in rows:
            f = r.split(",")
            try:
                f[1:5] = [repr(float(x) * scale) for x in f[1:5]]
            except ValueError:  # an earlier mutation left a non-number here
                pass
            out.append(",".join(f))
        rows = out
    elif kind == "mixed_tz" and rows:
        zone = data.draw(st.sampled_from(["+05:30", "-08:00", "Z", "+00:00", " UTC", "+14:00"]))
        i = data.draw(st.integers(0, len(rows) - 1))
        f = rows[i].split(",")
        f[0] = f[0] + ("T12:00:00" if len(f[0]) == 10 else "") + zone
        rows[i] = ",".join(f)
    elif kind == "empty_cell" and rows:
        i, j = data.draw(st.integers(0, len(rows) - 1)), data.draw(st.integers(0, 5))
        f = rows[i].split(",")
        f[min(j, len(f) - 1)] = data.draw(st.sampled_from(["", " ", "nan", "NaN", "inf", "-1", "0", "null", "1e999"]))
        rows[i] = ",".join(f)
    elif kind == "epoch" and rows:
        import pandas as pd

        unit = data.draw(st.sampled_from([1, 1000]))
        out = []
        for r in rows:
            f = r.split(",")
            try:
                f[0] = str(int(pd.Timestamp(f[0]).timestamp()) * unit)
            except (ValueError, TypeError, OverflowError):  # an earlier mutation left a non-date here
                pass
            out.append(",".join(f))
        rows = out
    body = "\n".join([header, *rows]) + "\n"
    if kind == "latin1":
        header_name = "timestämp" if data.draw(st.booleans()) else "timestamp"
        return body.replace("timestamp", header_name).encode("latin-1", errors="replace")
    if kind == "utf16":
        return body.encode("utf-16")  # BOM included
    raw = body.encode()
    if kind == "garbage":
        at = data.draw(st.integers(0, len(raw)))
        junk = data.draw(st.binary(min_size=1, max_size=16))
        raw = raw[:at] + junk + raw[at:]
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    return raw


def _fuzz_folder(data: st.DataObject, parquet: bool) -> None:
    seed = data.draw(st.integers(0, 2**16))
    market = make_synthetic_ohlc(N_BARS, N_ASSETS, seed=seed, step=data.draw(st.sampled_from(["1D", "1h"])))
    folder = Path(tempfile.mkdtemp(prefix="fuzz"))
    # Some files hold closes only or some of the prices, before any mutation: mixed folders load often enough.
    subsets = st.sampled_from([("close",), ("close", "volume"), ("open", "close"), ("high", "low", "close")])
    columns = {s: cols for s in market.symbols if (cols := data.draw(st.none() | subsets)) is not None}
    try:
        write_market_csvs(market, folder, columns)
        for path in sorted(folder.glob("*.csv")):
            # half the files stay valid, so a folder loads often enough to exercise the alignment invariants
            kinds = data.draw(st.lists(st.sampled_from(MUTATIONS), max_size=2) | st.just(["none"]))
            raw = path.read_text()
            kinds = kinds or ["none"]
            for kind in kinds[:-1]:
                raw = _mutate(raw, kind, data).decode("utf-8", errors="replace")
            path.write_bytes(_mutate(raw, kinds[-1], data))
            if parquet and data.draw(st.booleans()):
                _to_parquet(path)
        _load_or_refuse(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _to_parquet(path: Path) -> None:
    """Turn a (mutated) CSV into Parquet when pandas can read it; otherwise leave the CSV."""
    import pandas as pd

    try:
        df = pd.read_csv(path, encoding="utf-8-sig")
        if "timestamp" in df.columns and df["timestamp"].dtype == object:
            parsed = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601", errors="coerce")
            if not parsed.isna().any():
                df["timestamp"] = parsed
        df.to_parquet(path.with_suffix(".parquet"))
    except Exception:
        return
    path.unlink()


@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_csv_folders_load_or_refuse_naming_the_file(data: st.DataObject) -> None:
    _fuzz_folder(data, parquet=False)


@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_parquet_folders_load_or_refuse_naming_the_file(data: st.DataObject) -> None:
    _fuzz_folder(data, parquet=True)


_PRICE = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(closes=st.lists(_PRICE, min_size=MIN_BARS, max_size=40),
       optional=st.lists(st.sampled_from(["open", "high", "low", "volume"]), unique=True),
       header_case=st.sampled_from([str.lower, str.upper, str.title]))
def test_any_subset_of_optional_columns_loads_with_exact_closes(closes, optional, header_case) -> None:
    """A file with a time column, close and any subset of open/high/low/volume loads; close is kept bit for bit, the
    columns it lacked are derived from the close and said in the notes; with only open, high is max(open, close)."""
    n = len(closes)
    c = np.array(closes)
    frame = {"timestamp": [str(np.datetime64("2021-01-01") + k) for k in range(n)], "close": c}
    if "open" in optional:
        frame["open"] = c * 1.01
    if "high" in optional:
        frame["high"] = c * 1.02
    if "low" in optional:
        frame["low"] = np.minimum(c, frame.get("open", c)) * 0.99
    if "volume" in optional:
        frame["volume"] = np.arange(n, dtype=float)
    folder = Path(tempfile.mkdtemp(prefix="fuzz"))
    try:
        import pandas as pd

        pd.DataFrame(frame).rename(columns=header_case).to_csv(folder / "X.csv", index=False, float_format="%.17g")
        m = load_market(DataConfig(root=str(folder)), min_bars=MIN_BARS)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _check_invariants(m)
    lacking = tuple(k for k in ("open", "high", "low") if k not in optional)
    assert m.missing_columns == (lacking,)
    assert np.array_equal(m.close[:, 0], c)
    assert np.array_equal(m.open[:, 0], frame.get("open", c))
    said = "X.csv: close only" if len(lacking) == 3 else "X.csv: no "
    assert any(note.startswith(said) for note in m.notes) == bool(lacking)
    event(f"lacking {len(lacking)}")


@given(raw=st.binary(max_size=256))
def test_random_bytes_are_refused_naming_the_file(raw: bytes) -> None:
    folder = Path(tempfile.mkdtemp(prefix="fuzz"))
    try:
        (folder / "X.csv").write_bytes(raw)
        _load_or_refuse(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@settings(settings.get_profile("long"))
@given(data=st.data())
def test_mutated_folders_long(data: st.DataObject) -> None:
    _fuzz_folder(data, parquet=data.draw(st.booleans()))


# ---------------------------------------------------------------------------------------------------------------
# CLI flags at the edges of their ranges

EDGE_INTS = st.one_of(st.sampled_from([0, -1, 1, 2, 2**31, 2**63, -(2**63)]), st.integers(-(10**6), 10**6))
EDGE_FLOATS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-0.0", "1e308", "1e-320", "-1", "1", "0.5", "1e400"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_train_parser = build_parser()
INT_FLAGS, FLOAT_FLAGS = [], []
for _a in _train_parser._actions:
    if _a.option_strings and _a.type is int:
        INT_FLAGS.append(_a.option_strings[0])
    elif _a.option_strings and _a.type is float:
        FLOAT_FLAGS.append(_a.option_strings[0])


@st.composite
def _train_argv(draw) -> list[str]:
    argv: list[str] = []
    for flag in draw(st.lists(st.sampled_from(INT_FLAGS + FLOAT_FLAGS), min_size=1, max_size=4, unique=True)):
        value = str(draw(EDGE_INTS)) if flag in INT_FLAGS else draw(EDGE_FLOATS)
        argv.append(f"{flag}={value}")
    return argv


def _names_flag(text: str, argv: list[str]) -> bool:
    for arg in argv:
        flag = arg.split("=")[0]
        field = flag.lstrip("-").replace("-", "_")
        if flag in text or field in text or field.split("_")[0] in text:
            return True
    return False


def _parsed(parser, argv: list[str]):
    """The parsed flags, or None when argparse refused them the usual way (usage message, exit status 2)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2
        return None


@given(argv=_train_argv())
def test_train_flags_parse_to_a_valid_config_or_a_named_error(argv: list[str]) -> None:
    args = _parsed(_train_parser, argv)
    if args is None:
        return
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        assert _names_flag(str(exc), argv), (argv, str(exc))
        return
    for arg in argv:  # a value that was accepted is stored as given
        flag, value = arg.split("=")
        stored = getattr(args, _train_parser._option_string_actions[flag].dest)
        assert stored == (int(value) if flag in INT_FLAGS else float(value)), (argv, cfg)


_bt_parser = backtest_cli.build_parser()


@given(
    window=st.one_of(st.none(), EDGE_INTS.map(str), st.sampled_from(["nan", "1.5", ""])),
    stride=st.one_of(st.none(), EDGE_INTS.map(str)),
    cost=st.one_of(st.none(), EDGE_FLOATS),
)
@example(window=None, stride="1", cost=None)
@example(window="2", stride="0", cost="nan")
def test_backtest_flags_parse_to_valid_options_or_a_named_error(window, stride, cost) -> None:
    argv = ["--checkpoint", "run"]
    for flag, value in (("--window-length", window), ("--stride", stride), ("--cost-bps", cost)):
        if value is not None:
            argv.append(f"{flag}={value}")
    args = _parsed(_bt_parser, argv)
    if args is None:
        return
    try:
        opts, _ = backtest_cli.resolve_options(args)
    except ConfigError as exc:
        assert _names_flag(str(exc), argv[2:]), (argv, str(exc))
        return
    assert opts.window_length is None or opts.window_length >= 2
    assert opts.stride is None or opts.stride >= 1
    assert opts.cost_bps is None or 0 <= opts.cost_bps < 10_000


# Regression examples of bugs the fuzzing found (NaN passed range checks such as `x < 0`; a size error named no flag).


@pytest.mark.parametrize("flag", ["--risk-aversion", "--lr", "--drawdown-lambda"])
def test_nan_train_flags_are_refused(flag: str) -> None:
    with pytest.raises(ConfigError, match=flag.lstrip("-").replace("-", "_")):
        config_from_args(_train_parser.parse_args([f"{flag}=nan"]))


def test_nan_train_cost_bps_is_refused() -> None:
    with pytest.raises(ConfigError, match="cost_bps"):
        config_from_args(_train_parser.parse_args(["--cost-bps=nan"]))


@pytest.mark.parametrize("flag", ["--hidden-size", "--num-layers"])
def test_policy_size_error_names_the_flag(flag: str) -> None:
    with pytest.raises(ConfigError, match=flag.lstrip("-").replace("-", "_")):
        config_from_args(_train_parser.parse_args([f"{flag}=0"]))


def test_nan_backtest_cost_is_refused() -> None:
    args = _bt_parser.parse_args(["--checkpoint", "run", "--cost-bps=nan"])
    with pytest.raises(ConfigError, match="cost"):
        BacktestOptions(checkpoint=args.checkpoint, cost_bps=args.cost_bps)


@given(lives=st.lists(st.lists(st.booleans(), min_size=30, max_size=30).filter(any), min_size=1, max_size=5),
       max_fill=st.integers(0, 4), min_listed=st.none() | st.integers(1, 5))
def test_union_calendar_matches_a_bar_by_bar_reference(lives, max_fill, min_listed) -> None:
    """Any pattern of prints per asset (listings, delistings, halts): the union calendar holds every printed day,
    the mask is "a print at most max_fill calendar bars back" counted bar by bar on the whole calendar, the
    placeholders are 1.0 before the first print and the last close after, and min_listed starts the calendar at the
    first bar where that many assets are tradeable (or is refused naming the flag)."""
    days = [str(np.datetime64("2021-01-01") + k) for k in range(30)]
    folder = Path(tempfile.mkdtemp(prefix="fuzz"))
    try:
        for i, printed in enumerate(lives):
            rows = [f"{days[k]},{100 + 10 * i + k}" for k in range(30) if printed[k]]
            (folder / f"S{i}.csv").write_text("date,close\n" + "\n".join(rows) + "\n")
        try:
            m = load_market(DataConfig(root=str(folder), calendar="union", max_fill_bars=max_fill,
                                       min_listed=min_listed), min_bars=1)
        except DifferentiableMarketError as exc:
            assert min_listed is not None and "--min-listed" in str(exc), str(exc)
            event("refused: min_listed")
            return
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _check_invariants(m)
    cal = [k for k in range(30) if any(p[k] for p in lives)]  # every printed day, in order
    ref = np.array([[any(p[cal[j]] for j in range(max(0, b - max_fill), b + 1)) for p in lives]
                    for b in range(len(cal))])
    start = 0 if min_listed is None else int(np.argmax(ref.sum(axis=1) >= min_listed))
    assert m.n_bars == len(cal) - start
    np.testing.assert_array_equal(m.tradeable, ref[start:])
    for i, p in enumerate(lives):
        own = [k for k in cal if p[k]]
        for j, k in enumerate(cal[start:]):
            seen = [d for d in own if d <= k]
            assert m.close[j, i] == (100 + 10 * i + seen[-1] if seen else 1.0)
            assert m.filled[j, i] == (not p[k]) and m.listed[j, i] == (own[0] <= k <= own[-1])
    event("loaded")
