"""Rebuild (or check) the bundled sample in ``differentiable_market/sample_data/`` from ``bokeh-sampledata``.

The source is ``bokeh_sampledata/_data/stocks.csv.gz`` (Quandl WIKI prices, public domain). Its open, high, low and
close are unadjusted; every row is rescaled by ``Adj Close / Close`` so splits and dividends leave no jumps, and
volume is divided by the same ratio (share volume in adjusted units, so dollar volume is unchanged).

    uv run --group sample python scripts/build_sample_data.py           # write the CSVs
    uv run --group sample python scripts/build_sample_data.py --check   # verify the shipped CSVs match
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SYMBOLS = ("AAPL", "GOOG", "IBM", "MSFT")
FIRST_DATE = "2004-08-19"  # GOOG's first bar: the latest start among the four
LAST_DATE = "2013-03-01"
EXPECTED_BARS = 2148
SIGNIFICANT_DIGITS = 6
OUT_DIR = Path(__file__).resolve().parents[1] / "differentiable_market" / "sample_data"


def source_file() -> Path:
    spec = importlib.util.find_spec("bokeh_sampledata")
    if spec is None or spec.origin is None:
        sys.exit("bokeh-sampledata is not installed; run: uv sync --group sample")
    path = Path(spec.origin).parent / "_data" / "stocks.csv.gz"
    if not path.is_file():
        sys.exit(f"{path} not found; this bokeh-sampledata version lays out its files differently.")
    return path


def _fmt(values: np.ndarray) -> list[str]:
    return [f"{v:.{SIGNIFICANT_DIGITS}g}" for v in values]


def build_csvs(src: Path) -> dict[str, str]:
    """CSV text per symbol: adjusted OHLC to 6 significant digits, adjusted integer volume."""
    raw = pd.read_csv(src)
    raw = raw[(raw["Date"] >= FIRST_DATE) & (raw["Date"] <= LAST_DATE)]
    out: dict[str, str] = {}
    for sym in SYMBOLS:
        df = raw[raw["Ticker"] == sym].sort_values("Date")
        if len(df) != EXPECTED_BARS:
            raise SystemExit(f"{sym}: expected {EXPECTED_BARS} bars in {FIRST_DATE}..{LAST_DATE}, found {len(df)}.")
        ratio = (df["Adj Close"] / df["Close"]).to_numpy()
        cols = {"timestamp": df["Date"].to_numpy()}
        for name, src_col in (("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close")):
            cols[name] = _fmt(df[src_col].to_numpy() * ratio)
        cols["volume"] = np.rint(df["Volume"].to_numpy() / ratio).astype(np.int64)
        buf = io.StringIO()
        pd.DataFrame(cols).to_csv(buf, index=False, lineterminator="\n")
        out[sym] = buf.getvalue()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify the shipped files instead of writing them")
    args = parser.parse_args(argv)
    csvs = build_csvs(source_file())
    if args.check:
        bad = [s for s, text in csvs.items() if not (OUT_DIR / f"{s}.csv").is_file()
               or (OUT_DIR / f"{s}.csv").read_text() != text]
        if bad:
            print(f"out of date or missing: {', '.join(bad)}; rebuild with scripts/build_sample_data.py")
            return 1
        print(f"OK: {len(csvs)} files in {OUT_DIR} match the source.")
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for sym, text in csvs.items():
        (OUT_DIR / f"{sym}.csv").write_text(text)
    total = sum(len(t) for t in csvs.values())
    print(f"wrote {len(csvs)} files ({total / 1024:.0f} KiB) to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
