"""Causal per-bar features of each asset, and their normaliser fitted on the training split only.

Every feature of bar t is a function of bars 0..t only (trailing windows, no centring, no forward-looking
statistics). A feature whose window reaches before bar 0 is 0 at those early bars rather than backfilled. Features
(for ``return_windows = (1, 5, 20)`` and ``volatility_window = 20``), all in log units, in column order:

- ``log_return_w``: log(C_t / C_{t-w}), the trailing close-to-close return over w bars;
- ``volatility_n``: sqrt(mean of the last n one-bar close-to-close log returns squared) (realised volatility per bar);
- ``log_high_low``: log(H_t / L_t), the bar's range;
- ``log_close_open``: log(C_t / O_t), the bar's body;
- ``overnight_gap``: log(O_t / C_{t-1});
- ``log_volume_rel_n``: log(1 + V_t) minus its mean over the last n bars (0 everywhere when volume is absent);
- ``log_close_ma_w`` (for ``ma_windows = (5, 10, 20)``): log(C_t / mean(C_{t-w+1..t})), the close relative to its
  trailing arithmetic moving average (its inverse is the OLMAR reversal signal);
- ``autocorr_w`` (for ``autocorr_windows = (20,)``): the trailing lag-1 autocorrelation of the one-bar returns,
  sum(r_s r_{s-1}) / sum(r_s^2) over s = t-w+1..t (uncentred: daily means are negligible next to their spread; 0 when
  every return in the window is 0), and ``ar_forecast_w``: that times r_t, the next return an AR(1) fit over the
  window predicts. A shared cross-sectional encoder sees no asset identity, so an edge that lives in one asset's own
  dynamics (momentum or reversal of that asset) must show in that asset's features: these two make it show;
- with ``cross_sectional``, ``xs_log_return_w`` and ``xs_log_close_ma_w``: that feature minus its mean over the
  assets at the same bar. The mean runs over the assets present in the data (every column of the MarketData, filled
  bars included), not over a sampled subset; with one asset these features are 0.

The normaliser z-scores each feature with one mean and std pooled over assets and the training bars [0, train_end)
whose window is complete; the result is clipped to +-``clip`` so extreme (valid) data cannot blow up the policy.

Assets whose file lacked open, high or low (``MarketData.missing_columns``; the loader derived them from the close)
have no bar range, body or overnight gap: ``log_high_low`` is 0 for an asset without high or low, ``log_close_open``
and ``overnight_gap`` are 0 for one without open, both raw and normalised (0 is the training mean, a neutral input),
and those assets' values are left out of the normaliser's fit. ``FeatureSpec.missing_prices`` records which assets of
the fitting data lacked which columns.

On a union calendar (``MarketData.calendar == "union"``), each asset's features warm up from its own listing (its
first print, or bar 0 when it is tradeable there): a feature is 0 until its window lies entirely after the listing,
and 0 wherever the asset is not tradeable (``MarketData.tradeable``). The one-bar returns and volumes before the
listing enter no trailing sum, the cross-sectional means run over the assets whose source feature is valid at that
bar, and the normaliser is fitted on valid real bars only, so the placeholder prices before a listing and after a
known delisting reach no feature (tested by changing them). On a common calendar nothing of this applies and the
values are those computed before it existed, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import FeatureConfig, config_from_dict, config_to_dict
from .data import MarketData
from .errors import ConfigError, DataError

FEATURE_CLIP = 10.0
_STD_FLOOR = 1e-12  # a feature this flat on train (e.g. volume when there is none) is left unscaled


def feature_names(cfg: FeatureConfig) -> tuple[str, ...]:
    """Feature names in column order (see the module docstring)."""
    n = cfg.volatility_window
    returns = tuple(f"log_return_{w}" for w in cfg.return_windows)
    averages = tuple(f"log_close_ma_{w}" for w in cfg.ma_windows)
    relative = tuple(f"xs_{name}" for name in (*returns, *averages)) if cfg.cross_sectional else ()
    autocorr = tuple(name for w in cfg.autocorr_windows for name in (f"autocorr_{w}", f"ar_forecast_{w}"))
    return (*returns, f"volatility_{n}", "log_high_low", "log_close_open", "overnight_gap", f"log_volume_rel_{n}",
            *averages, *autocorr, *relative)


def first_valid_bars(cfg: FeatureConfig) -> tuple[int, ...]:
    """Per feature, the first bar whose window lies entirely inside the data."""
    n = cfg.volatility_window
    averages = tuple(w - 1 for w in cfg.ma_windows)
    relative = (*cfg.return_windows, *averages) if cfg.cross_sectional else ()
    autocorr = tuple(w + 1 for w in cfg.autocorr_windows for _ in range(2))  # r_{s-1} of the oldest s: bar t - w
    return (*cfg.return_windows, n, 0, 0, 1, n - 1, *averages, *autocorr, *relative)


def undefined_assets(market: MarketData, cfg: FeatureConfig) -> list[np.ndarray | None]:
    """Per feature (``feature_names`` order), bool [A] of the assets for which it is not defined because their file
    lacked the prices it needs (the feature is 0 for them), or None when it is defined for every asset."""
    no_range, no_open = market.lacking_range, market.lacking_open
    needs = {"log_high_low": no_range, "log_close_open": no_open, "overnight_gap": no_open}
    return [needs[name] if name in needs and needs[name].any() else None for name in feature_names(cfg)]


def warmup_bars(cfg: FeatureConfig) -> int:
    """Bars at the start of the data where some feature is still 0 for lack of history."""
    return max(first_valid_bars(cfg))


class _TrailingSum:
    """sum of x[t-n+1..t] along axis 0 (rows before bar 0 count as 0), fed consecutive row blocks of x.

    A running prefix sum carried from block to block, so row t sees rows <= t only and every value is bit for bit the
    one a prefix sum over all rows at once gives (the same additions in the same order).
    """

    def __init__(self, n: int, n_assets: int) -> None:
        self.n = n
        self.seen = 0  # rows fed so far
        self.tail = np.zeros((0, n_assets))  # prefix sums of the last (up to) n rows fed

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The trailing sums of the next block of rows ``x`` [rows, A] (overwritten with its prefix sums)."""
        n, rows, tail = self.n, len(x), self.tail
        if len(tail):
            x[0] += tail[-1]
        cs = np.cumsum(x, axis=0, out=x)
        out = cs.copy()
        # Row i (bar seen + i) subtracts the prefix sum of bar seen + i - n, if that bar exists: from the tail while
        # i < n, from this block after.
        first, mid = max(0, n - self.seen), min(n, rows)
        if first < mid:
            out[first:mid] -= tail[len(tail) + first - n : len(tail) + mid - n]
        if rows > n:
            out[n:] -= cs[: rows - n]
        self.tail = np.concatenate([tail, cs[-n:]])[-n:]
        self.seen += rows
        return out


@dataclass(frozen=True)
class _Life:
    """Where features are defined on a union calendar: ``first`` int64 [A], each asset's listing bar (its first print,
    0 when it is tradeable at bar 0, T when it never prints); ``tradeable`` bool [T, A], the market's causal mask."""

    first: np.ndarray
    tradeable: np.ndarray
    # the current block's masks by window start: features share a few starts, and each block is asked per feature
    _block: dict[tuple[int, int, int], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def valid(self, t0: int, rows: int, start: int) -> np.ndarray:
        """bool [rows, A]: bars t0.. where a feature whose window needs ``start`` earlier bars is defined."""
        key = (t0, rows, start)
        if key not in self._block:
            if any(k[0] != t0 for k in self._block):
                self._block.clear()
            t = np.arange(t0, t0 + rows)[:, None]
            self._block[key] = (t >= self.first[None, :] + start) & self.tradeable[t0 : t0 + rows]
        return self._block[key]

    def zero_invalid(self, col: np.ndarray, t0: int, start: int) -> None:
        """Set ``col`` [rows, A] (bars t0..) to 0 where ``valid`` is False, in place."""
        np.copyto(col, 0.0, where=~self.valid(t0, len(col), start))


def _life(market: MarketData) -> _Life | None:
    """The assets' lives on a union calendar; None on a common calendar (every feature defined everywhere)."""
    if market.calendar != "union":
        return None
    printed = ~market.filled
    first = np.where(printed.any(axis=0), printed.argmax(axis=0), market.n_bars)
    return _Life(np.where(market.tradeable[0], 0, first).astype(np.int64), market.tradeable)


def _block_rows(n_assets: int) -> int:
    """Rows per block: a [rows, A] float64 block of about 1 MB, so a block's few passes stay in cache."""
    return max(256, (1 << 20) // (8 * max(n_assets, 1)))


def _blocks(market: MarketData, cfg: FeatureConfig, stop: int | None = None,
            life: _Life | None = None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """The features of bars [0, stop) (default: all), one block of consecutive bars at a time: (first bar, float64
    [rows, A] per feature in ``feature_names`` order). Bars before ``first_valid_bars`` hold partial-window values;
    callers set them to 0.

    Blocks keep the peak memory at the caller's output plus a few blocks, instead of a few [T, A] arrays, and each
    block's passes in cache. The values equal those of computing every bar at once, bit for bit: each block also
    reads the bars before it (the past) that the longest return, moving-average or autocorrelation window reaches,
    and the trailing sums carry their prefix sums. ``life``: the market's ``_life``, passed by callers that use it
    too (its masks of the current block are then computed once); None computes it.
    """
    m = market
    life = _life(m) if life is None else life
    stop = m.n_bars if stop is None else stop
    rows = _block_rows(m.n_assets)
    halo = max(*cfg.return_windows, *(w - 1 for w in cfg.ma_windows), *(w + 1 for w in cfg.autocorr_windows), 1)
    sums = (_TrailingSum(cfg.volatility_window, m.n_assets), _TrailingSum(cfg.volatility_window, m.n_assets))
    for t0 in range(0, stop, rows):
        a, t1 = max(t0 - halo, 0), min(t0 + rows, stop)
        yield t0, list(_columns(m.open[a:t1], m.high[a:t1], m.low[a:t1], m.close[a:t1], m.volume[a:t1], cfg,
                                t0 - a, sums, life, t0))


def _columns(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, cfg: FeatureConfig, skip: int,
    sums: tuple[_TrailingSum, _TrailingSum], life: _Life | None = None, t0: int = 0,
) -> Iterator[np.ndarray]:
    """The features of the bars from row ``skip`` on of [rows, A] price and volume arrays, one float64 column at a
    time. The first ``skip`` rows are the bars just before (at least ``max(return_windows)``, ``max(ma_windows) - 1``
    and ``max(autocorr_windows) + 1`` of them, or all bars from bar 0); ``sums`` are the trailing sums of the
    volatility and the volume feature, fed in bar order. ``life`` (a union calendar; the rows from ``skip`` on are
    bars ``t0``..): the one-bar returns up to each asset's listing bar and the volumes before it are taken as 0, and
    the cross-sectional means run over the assets whose source feature is valid.
    """
    log_c = np.log(c)
    n = cfg.volatility_window
    rows = len(c) - skip

    def valid(start: int) -> np.ndarray | None:
        return None if life is None else life.valid(t0, rows, start)

    relative = []  # cross-sectional features, taken before their source is yielded (callers change columns in place)
    for w in cfg.return_windows:
        r = np.zeros_like(log_c)
        np.subtract(log_c[w:], log_c[:-w], out=r[w:])
        if cfg.cross_sectional:
            relative.append(_minus_asset_mean(r[skip:], valid(w)))
        yield r[skip:]
    r1_all = np.zeros_like(log_c)  # one-bar returns of every row, the bars before included
    np.subtract(log_c[1:], log_c[:-1], out=r1_all[1:])
    if life is not None:  # a return into the listing bar starts from a placeholder
        r1_all[np.arange(t0 - skip, t0 + rows)[:, None] <= life.first[None, :]] = 0.0
    r1 = r1_all[skip:]
    vol = sums[0](r1 * r1)
    np.maximum(vol, 0.0, out=vol)
    vol /= n
    yield np.sqrt(vol, out=vol)
    log_o = np.log(o[skip:])
    yield np.log(h[skip:]) - np.log(lo[skip:])
    log_c, prev_log_c = log_c[skip:], log_c[skip - 1 : len(log_c) - 1] if skip else None
    yield log_c - log_o
    gap = np.zeros_like(log_o)
    if prev_log_c is None:
        np.subtract(log_o[1:], log_c[:-1], out=gap[1:])
    else:
        np.subtract(log_o, prev_log_c, out=gap)
    yield gap
    log_v = np.log1p(v[skip:])
    if life is not None:
        log_v[np.arange(t0, t0 + rows)[:, None] < life.first[None, :]] = 0.0
    mean_v = sums[1](log_v.copy())
    mean_v /= n
    yield np.subtract(log_v, mean_v, out=log_v)
    for w in cfg.ma_windows:
        # The w closes are summed directly, oldest last, not as a difference of prefix sums: a prefix sum holds the
        # whole history, so for an asset far below its past prices the difference would lose the window's digits.
        total = _trailing_direct_sum(c, skip, w)
        total /= w
        ma = np.subtract(log_c, np.log(total, out=total), out=total)
        if cfg.cross_sectional:
            relative.append(_minus_asset_mean(ma, valid(w - 1)))
        yield ma
    if cfg.autocorr_windows:
        lagged = np.zeros_like(r1_all)  # r_s r_{s-1}
        np.multiply(r1_all[1:], r1_all[:-1], out=lagged[1:])
        squared = r1_all * r1_all
        for w in cfg.autocorr_windows:
            # summed directly over the w bars, like the moving averages: no cancellation between prefix sums
            num, den = _trailing_direct_sum(lagged, skip, w), _trailing_direct_sum(squared, skip, w)
            rho = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            forecast = rho * r1  # before rho is yielded: callers change columns in place
            yield rho
            yield forecast
    yield from relative


def _trailing_direct_sum(x: np.ndarray, skip: int, w: int) -> np.ndarray:
    """sum of x[j-w+1..j] for the rows j from ``skip`` on of ``x`` [rows, A], rows before row 0 counting as 0; the
    w rows added one by one (newest first), so each value is the same whatever block holds it and carries no
    cancellation from a prefix sum over the whole history."""
    total = x[skip:].copy()
    for k in range(1, min(w, len(x))):
        lo = max(k - skip, 0)  # rows whose row j - k exists
        total[lo:] += x[skip + lo - k : len(x) - k]
    return total


def _row_sums(x: np.ndarray) -> np.ndarray:
    """[rows, 1]: the sums of the rows of ``x`` [rows, A], as a pairwise tree of elementwise additions spelled out
    here, not numpy's sum over an axis (whose order of additions is its own choice), so that a bar's value is the same
    whatever block it lies in."""
    total = x
    while total.shape[1] > 1:
        half = total.shape[1] // 2
        pair = total[:, :half] + total[:, half : 2 * half]
        if total.shape[1] % 2:
            pair[:, :1] += total[:, 2 * half :]
        total = pair
    return total


def _minus_asset_mean(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``x`` [rows, A] minus each row's mean over the A assets, as a new array; with ``valid`` (bool [rows, A]) the
    mean over the valid entries of each row only (the others' results are meaningless: callers zero them)."""
    if valid is None:
        return x - _row_sums(x) / x.shape[1]
    count = _row_sums(valid.astype(np.float64))
    return x - _row_sums(np.where(valid, x, 0.0)) / np.maximum(count, 1.0)


def raw_features(market: MarketData, cfg: FeatureConfig) -> np.ndarray:
    """Unnormalised features, float64 [T, A, F] in the order of ``feature_names(cfg)``; early bars are 0."""
    m = market
    out = np.empty((m.n_bars, m.n_assets, len(feature_names(cfg))))
    starts = first_valid_bars(cfg)
    undefined = undefined_assets(m, cfg)
    life = _life(m)
    for t0, columns in _blocks(m, cfg, life=life):
        for f, col in enumerate(columns):
            col[: max(starts[f] - t0, 0)] = 0.0
            if undefined[f] is not None:
                col[:, undefined[f]] = 0.0
            if life is not None:
                life.zero_invalid(col, t0, starts[f])
            out[t0 : t0 + len(col), :, f] = col
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """How to turn a MarketData into policy inputs: the feature config, names and the train-only normaliser."""

    config: FeatureConfig
    names: tuple[str, ...]
    mean: tuple[float, ...]  # per feature, pooled over assets and bars [warm-up, train_end)
    std: tuple[float, ...]
    train_end: int  # normaliser fitted on bars [0, train_end) only
    clip: float = FEATURE_CLIP
    # (symbol, the columns among open, high, low its file lacked) for each asset of the fitting data that lacked any:
    # their range, body or gap features were 0 and left out of the fit. () for specs written before it was recorded
    # (the loader then required all four prices).
    missing_prices: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        expected = feature_names(self.config)
        if tuple(self.names) != expected:
            raise ConfigError(f"feature names {list(self.names)} do not match the feature config {list(expected)}.")
        if len(self.mean) != len(expected) or len(self.std) != len(expected):
            raise ConfigError(f"feature normaliser needs {len(expected)} means and stds.")
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(s) and s > 0 for s in self.std):
            raise ConfigError("feature normaliser means must be finite and stds finite and > 0.")
        if self.clip <= 0:
            raise ConfigError(f"feature clip must be > 0, got {self.clip}.")

    @property
    def n_features(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "names": list(self.names),
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
            "train_end": int(self.train_end),
            "clip": float(self.clip),
            "missing_prices": {sym: list(cols) for sym, cols in self.missing_prices},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        keys = {"config", "names", "mean", "std", "train_end", "clip", "missing_prices"}
        legacy = keys - {"missing_prices"}  # written before the loader accepted files without open, high or low
        if not isinstance(d, dict) or set(d) not in (keys, legacy):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"feature spec must have exactly the keys {sorted(keys)}; got {got}.")
        missing = d.get("missing_prices", {})
        if not isinstance(missing, dict) or not all(
                isinstance(cols, list) and set(cols) <= {"open", "high", "low"} for cols in missing.values()):
            raise ConfigError(f"feature spec missing_prices must map symbols to lists of open/high/low; got "
                              f"{missing!r}.")
        config = d["config"]
        if isinstance(config, dict):
            # A spec written before these keys existed was fitted without the moving-average, cross-sectional and
            # autocorrelation features; the current defaults would ask for columns its policy never saw.
            config = {"ma_windows": (), "cross_sectional": False, "autocorr_windows": (), **config}
        return cls(
            config=config_from_dict(FeatureConfig, config, "feature_spec.config"),
            names=tuple(d["names"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            train_end=int(d["train_end"]),
            clip=float(d["clip"]),
            missing_prices=tuple((str(sym), tuple(cols)) for sym, cols in missing.items()),
        )


def fit_feature_spec(market: MarketData, cfg: FeatureConfig, train_end: int) -> FeatureSpec:
    """Fit the normaliser on bars [0, train_end) of every asset (forward-filled bars left out).

    Only bars whose feature window is complete count, so the zeros of the warm-up do not shrink the std; nor do the
    zeros of a feature an asset lacks the prices for (``undefined_assets``). A feature no asset has is left unscaled.
    """
    names = feature_names(cfg)
    if not (0 < train_end <= market.n_bars):
        raise DataError(f"train_end must lie in (0, {market.n_bars}], got {train_end}.")
    missing = tuple((sym, tuple(cols)) for sym, cols in market.missing_prices().items())
    if not cfg.normalise:
        return FeatureSpec(cfg, names, (0.0,) * len(names), (1.0,) * len(names), train_end, missing_prices=missing)
    starts = first_valid_bars(cfg)
    if train_end - max(starts) < 2:
        raise DataError(
            f"the training split has {train_end} bars, too few to fit the feature normaliser after the "
            f"{max(starts)}-bar feature warm-up. Use more data or shorter feature windows."
        )
    k = train_end  # only the training bars go in, so later data cannot reach the normaliser
    real = ~market.filled[:k]
    # Per feature, the assets it is defined for (None: all), and its values on their real (not forward-filled)
    # training bars whose window is complete, in bar-major order: the one array numpy's mean and std then run over.
    defined = [None if u is None else ~u for u in undefined_assets(market, cfg)]
    life = _life(market)
    if life is not None:
        moments = _valid_training_moments(market, cfg, k, life, defined)
    else:
        moments = [(x.size, float(x.mean()) if x.size else 0.0, float(x.std()) if x.size else 1.0)
                   for x in _training_values(market, cfg, k, real, defined)]
    means, stds = [], []
    for count, mean, std in moments:
        means.append(mean if count else 0.0)
        stds.append(std if count and std > _STD_FLOOR else 1.0)
    return FeatureSpec(cfg, names, tuple(means), tuple(stds), train_end, missing_prices=missing)


def _training_values(market: MarketData, cfg: FeatureConfig, k: int, real: np.ndarray,
                     defined: list[np.ndarray | None]) -> list[np.ndarray]:
    """Per feature, its values on the real bars [0, k) of the assets it is defined for whose window is complete (all
    such bars when every one was filled), filled into one preallocated array each."""
    starts = first_valid_bars(cfg)
    counts = [int(real[start:].sum() if ok is None else real[start:, ok].sum()) for start, ok in zip(starts, defined)]
    n_defined = [market.n_assets if ok is None else int(ok.sum()) for ok in defined]
    use_all = [count == 0 for count in counts]  # every bar filled: nothing else to learn the scale from
    values = [np.empty(max(k - start, 0) * n if every else count)
              for start, count, every, n in zip(starts, counts, use_all, n_defined)]
    filled_to = [0] * len(values)
    for t0, columns in _blocks(market, cfg, stop=k):
        for f, col in enumerate(columns):
            skip = max(starts[f] - t0, 0)
            if skip >= len(col) or n_defined[f] == 0:
                continue
            rows = col[skip:] if defined[f] is None else col[skip:, defined[f]]
            keep = real[t0 + skip : t0 + len(col)]
            x = rows.reshape(-1) if use_all[f] else rows[keep if defined[f] is None else keep[:, defined[f]]]
            values[f][filled_to[f] : filled_to[f] + x.size] = x
            filled_to[f] += x.size
    return values


def _valid_training_moments(market: MarketData, cfg: FeatureConfig, k: int, life: _Life,
                            defined: list[np.ndarray | None]) -> list[tuple[int, float, float]]:
    """Union calendar: per feature, (count, mean, std) of its values on the bars [0, k) that have a print and where it
    is valid for that asset (``_Life.valid``; never a placeholder). Accumulated block by block (Chan et al.'s pairwise
    update of count, mean and sum of squared deviations), so no copy of the training values is made."""
    starts = first_valid_bars(cfg)
    acc = [(0, 0.0, 0.0) for _ in starts]  # count, mean, sum of squared deviations
    for t0, columns in _blocks(market, cfg, stop=k, life=life):
        for f, col in enumerate(columns):
            keep = ~market.filled[t0 : t0 + len(col)] & life.valid(t0, len(col), starts[f])
            if defined[f] is not None:
                keep &= defined[f][None, :]
            x = col[keep]
            if not x.size:
                continue
            n, mean, m2 = acc[f]
            mean_b = float(x.mean())
            m2_b = float(np.square(x - mean_b).sum())
            total = n + x.size
            delta = mean_b - mean
            acc[f] = (total, mean + delta * x.size / total, m2 + m2_b + delta * delta * n * x.size / total)
    return [(n, mean, float(np.sqrt(m2 / n)) if n else 1.0) for n, mean, m2 in acc]


def compute_features(market: MarketData, spec: FeatureSpec) -> np.ndarray:
    """Policy inputs, float32 [T, A, F]: normalised (if the config says so), clipped to +-spec.clip.

    Bars before a feature's window is complete are 0 (the train mean, once normalised).
    """
    m = market
    out = np.empty((m.n_bars, m.n_assets, spec.n_features), dtype=np.float32)
    starts = first_valid_bars(spec.config)
    undefined = undefined_assets(m, spec.config)
    life = _life(m)
    for t0, columns in _blocks(m, spec.config, life=life):
        for f, col in enumerate(columns):
            col -= spec.mean[f]
            col /= spec.std[f]
            np.clip(col, -spec.clip, spec.clip, out=col)
            col[: max(starts[f] - t0, 0)] = 0.0
            if undefined[f] is not None:
                col[:, undefined[f]] = 0.0
            if life is not None:
                life.zero_invalid(col, t0, starts[f])
            out[t0 : t0 + len(col), :, f] = col
    return out
