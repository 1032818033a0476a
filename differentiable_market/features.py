"""Causal per-bar features of each asset, and their normaliser fitted on the training split only.

Every feature of bar t is a function of bars 0..t only (trailing windows, no centring, no forward-looking
statistics). A feature whose window reaches before bar 0 is 0 at those early bars rather than backfilled. Features
(for ``return_windows = (1, 5, 20)`` and ``volatility_window = 20``), all in log units:

- ``log_return_w``: log(C_t / C_{t-w}), the trailing close-to-close return over w bars;
- ``volatility_n``: sqrt(mean of the last n one-bar close-to-close log returns squared) (realised volatility per bar);
- ``log_high_low``: log(H_t / L_t), the bar's range;
- ``log_close_open``: log(C_t / O_t), the bar's body;
- ``overnight_gap``: log(O_t / C_{t-1});
- ``log_volume_rel_n``: log(1 + V_t) minus its mean over the last n bars (0 everywhere when volume is absent).

The normaliser z-scores each feature with one mean and std pooled over assets and the training bars [0, train_end)
whose window is complete; the result is clipped to +-``clip`` so extreme (valid) data cannot blow up the policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
    return (*returns, f"volatility_{n}", "log_high_low", "log_close_open", "overnight_gap", f"log_volume_rel_{n}")


def first_valid_bars(cfg: FeatureConfig) -> tuple[int, ...]:
    """Per feature, the first bar whose window lies entirely inside the data."""
    n = cfg.volatility_window
    return (*cfg.return_windows, n, 0, 0, 1, n - 1)


def warmup_bars(cfg: FeatureConfig) -> int:
    """Bars at the start of the data where some feature is still 0 for lack of history."""
    return max(first_valid_bars(cfg))


def _trailing_sum(x: np.ndarray, n: int) -> np.ndarray:
    """sum of x[t-n+1..t] along axis 0 (rows before 0 count as 0); a prefix sum, so row t sees rows <= t only."""
    cs = np.cumsum(x, axis=0)
    out = cs.copy()
    out[n:] -= cs[:-n]
    return out


def raw_features(market: MarketData, cfg: FeatureConfig) -> np.ndarray:
    """Unnormalised features, float64 [T, A, F] in the order of ``feature_names(cfg)``; early bars are 0."""
    m = market
    out = np.empty((m.n_bars, m.n_assets, len(feature_names(cfg))))
    columns = _columns(m.open, m.high, m.low, m.close, m.volume, cfg)
    for f, (col, start) in enumerate(zip(columns, first_valid_bars(cfg))):
        col[:start] = 0.0
        out[..., f] = col
    return out


def _columns(
    o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, cfg: FeatureConfig
) -> Iterator[np.ndarray]:
    """The features of [T, A] price and volume arrays, one float64 [T, A] column at a time.

    Bars before ``first_valid_bars`` hold partial-window values; callers set them to 0. One column at a time keeps
    the peak memory at a few [T, A] arrays beside the caller's output.
    """
    log_c = np.log(c)
    n = cfg.volatility_window
    for w in cfg.return_windows:
        r = np.zeros_like(log_c)
        r[w:] = log_c[w:] - log_c[:-w]
        yield r
    r1 = np.zeros_like(log_c)
    r1[1:] = np.diff(log_c, axis=0)
    yield np.sqrt(np.maximum(_trailing_sum(r1 * r1, n), 0.0) / n)
    del r1
    log_o = np.log(o)
    yield np.log(h) - np.log(lo)
    yield log_c - log_o
    gap = np.zeros_like(log_c)
    gap[1:] = log_o[1:] - log_c[:-1]
    yield gap
    log_v = np.log1p(v)
    yield log_v - _trailing_sum(log_v, n) / n


@dataclass(frozen=True)
class FeatureSpec:
    """How to turn a MarketData into policy inputs: the feature config, names and the train-only normaliser."""

    config: FeatureConfig
    names: tuple[str, ...]
    mean: tuple[float, ...]  # per feature, pooled over assets and bars [warm-up, train_end)
    std: tuple[float, ...]
    train_end: int  # normaliser fitted on bars [0, train_end) only
    clip: float = FEATURE_CLIP

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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        keys = {"config", "names", "mean", "std", "train_end", "clip"}
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"feature spec must have exactly the keys {sorted(keys)}; got {got}.")
        return cls(
            config=config_from_dict(FeatureConfig, d["config"], "feature_spec.config"),
            names=tuple(d["names"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            train_end=int(d["train_end"]),
            clip=float(d["clip"]),
        )


def fit_feature_spec(market: MarketData, cfg: FeatureConfig, train_end: int) -> FeatureSpec:
    """Fit the normaliser on bars [0, train_end) of every asset (forward-filled bars left out).

    Only bars whose feature window is complete count, so the zeros of the warm-up do not shrink the std.
    """
    names = feature_names(cfg)
    if not (0 < train_end <= market.n_bars):
        raise DataError(f"train_end must lie in (0, {market.n_bars}], got {train_end}.")
    if not cfg.normalise:
        return FeatureSpec(cfg, names, (0.0,) * len(names), (1.0,) * len(names), train_end)
    starts = first_valid_bars(cfg)
    if train_end - max(starts) < 2:
        raise DataError(
            f"the training split has {train_end} bars, too few to fit the feature normaliser after the "
            f"{max(starts)}-bar feature warm-up. Use more data or shorter feature windows."
        )
    m, k = market, train_end  # only the training bars go in, so later data cannot reach the normaliser
    columns = _columns(m.open[:k], m.high[:k], m.low[:k], m.close[:k], m.volume[:k], cfg)
    real = ~market.filled[:k]
    means, stds = [], []
    for col, start in zip(columns, starts):
        x = col[start:][real[start:]]
        if x.size == 0:  # every bar filled: nothing to learn the scale from
            x = col[start:].reshape(-1)
        std = float(x.std())
        means.append(float(x.mean()))
        stds.append(std if std > _STD_FLOOR else 1.0)
    return FeatureSpec(cfg, names, tuple(means), tuple(stds), train_end)


def compute_features(market: MarketData, spec: FeatureSpec) -> np.ndarray:
    """Policy inputs, float32 [T, A, F]: normalised (if the config says so), clipped to +-spec.clip.

    Bars before a feature's window is complete are 0 (the train mean, once normalised).
    """
    m = market
    out = np.empty((m.n_bars, m.n_assets, spec.n_features), dtype=np.float32)
    columns = _columns(m.open, m.high, m.low, m.close, m.volume, spec.config)
    for f, (col, start) in enumerate(zip(columns, first_valid_bars(spec.config))):
        col -= spec.mean[f]
        col /= spec.std[f]
        np.clip(col, -spec.clip, spec.clip, out=col)
        col[:start] = 0.0
        out[..., f] = col
    return out
