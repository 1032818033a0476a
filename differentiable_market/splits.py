"""Chronological train / validation / test split of the bar index, with an embargo gap between splits.

Layout over bars 0..T-1 (half-open ranges)::

    [ train ............ ) embargo [ validation ) embargo [ test ... )
    0                  tr_end     va_start     va_end     te_start   T

Scoring rule, for whoever consumes a split: a decision made after bar t closes is scored only if every price it
earns lies inside the split. The env owns the execution horizon h: open execution (h = 2) earns O[t+2] / O[t+1],
close execution (h = 1) earns C[t+1] / C[t]; scoring decisions t in [start, end - h) satisfies the rule. Evaluation
may warm a policy's recurrent state up on the bars just before ``start`` (they are in the past, so this is no
look-ahead) but scores nothing there. With the default embargo (the lookback), such a lookback-long warm-up lies
entirely inside the gap, so no evaluation window ever contains a bar the policy was trained on (nor do feature
windows, when they are no longer than the embargo).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

import numpy as np

from .config import DataConfig, SplitName
from .errors import ConfigError, DataError

MIN_EVAL_BARS = 3  # the fewest bars a validation or test split may have: one scored decision with open execution


@dataclass(frozen=True)
class Splits:
    """Half-open bar-index ranges (start, end) of the three splits of an n_bars-long market."""

    n_bars: int
    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]
    embargo: int

    def __post_init__(self) -> None:
        (a, b), (c, d), (e, f) = self.train, self.validation, self.test
        ok = 0 <= a < b and b + self.embargo <= c < d and d + self.embargo <= e < f <= self.n_bars
        if not ok or self.embargo < 0:
            raise ConfigError(
                f"invalid splits: train {self.train}, validation {self.validation}, test {self.test}, embargo "
                f"{self.embargo}, n_bars {self.n_bars}; they must be ordered, non-empty and embargo bars apart."
            )

    def bounds(self, name: SplitName) -> tuple[int, int]:
        """(start, end) of "train", "validation", "test", or "all" (every bar)."""
        if name == "all":
            return (0, self.n_bars)
        if name in ("train", "validation", "test"):
            return getattr(self, name)
        raise ConfigError(f"unknown split {name!r}; choose one of {list(get_args(SplitName))}.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_bars": self.n_bars,
            "train": list(self.train),
            "validation": list(self.validation),
            "test": list(self.test),
            "embargo": self.embargo,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Splits:
        keys = {"n_bars", "train", "validation", "test", "embargo"}
        if not isinstance(d, dict) or set(d) != keys:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"splits must have exactly the keys {sorted(keys)}; got {got}.")
        rng = {k: (int(d[k][0]), int(d[k][1])) for k in ("train", "validation", "test")}
        return cls(n_bars=int(d["n_bars"]), embargo=int(d["embargo"]), **rng)


def make_splits(n_bars: int, cfg: DataConfig, lookback: int) -> Splits:
    """Split n_bars chronologically: validation and test get cfg.val_fraction and cfg.test_fraction of the bars
    left after the two embargo gaps (rounded), train the rest. ``cfg.split_bars``, when given, are used as they are
    (checked for order, embargo and size).

    The embargo is cfg.embargo_bars, or the lookback when that is None. Raises DataError when train would have fewer
    than lookback + 3 bars or validation / test fewer than MIN_EVAL_BARS.
    """
    if lookback < 1:
        raise ConfigError(f"lookback must be >= 1 bar, got {lookback}.")
    embargo = lookback if cfg.embargo_bars is None else cfg.embargo_bars
    if cfg.split_bars:
        a, b, c, d, e, f = cfg.split_bars
        if f > n_bars or b - a < lookback + 3:
            raise DataError(
                f"data.split_bars {list(cfg.split_bars)} do not fit {n_bars} bars with lookback {lookback}: the "
                f"test range must end by bar {n_bars} and train needs >= lookback + 3 = {lookback + 3} bars."
            )
        return Splits(n_bars=n_bars, train=(a, b), validation=(c, d), test=(e, f), embargo=embargo)
    usable = n_bars - 2 * embargo
    n_val = round(usable * cfg.val_fraction)
    n_test = round(usable * cfg.test_fraction)
    n_train = usable - n_val - n_test
    min_train = lookback + 3
    if n_train < min_train or min(n_val, n_test) < MIN_EVAL_BARS:
        raise DataError(
            f"{n_bars} bars are too few to split with lookback {lookback} and embargo {embargo}: train would get "
            f"{max(n_train, 0)} bars (needs >= lookback + 3 = {min_train}), validation {max(n_val, 0)} and test "
            f"{max(n_test, 0)} (need >= {MIN_EVAL_BARS} each). Use a shorter --lookback, a smaller --embargo-bars, "
            "or more data."
        )
    va_start = n_train + embargo
    te_start = va_start + n_val + embargo
    return Splits(
        n_bars=n_bars,
        train=(0, n_train),
        validation=(va_start, va_start + n_val),
        test=(te_start, n_bars),
        embargo=embargo,
    )


def train_end_cutoff(cfg: DataConfig, lookback: int) -> Callable[[np.ndarray], int]:
    """The loader's ``universe_cutoff`` for a run with this data config and lookback: ``cfg.universe_through`` when
    set, else the end of its training split.

    The splits depend only on the number of calendar bars, so the cut-off is a function of the calendar, which the
    loader knows before it decides which assets to drop.
    """
    if cfg.universe_through is not None:
        return through_cutoff(cfg.universe_through)
    return lambda calendar: make_splits(len(calendar), cfg, lookback).train[1]


def through_cutoff(last_timestamp: str) -> Callable[[np.ndarray], int]:
    """The loader's ``universe_cutoff`` that ends at ``last_timestamp`` (ISO, UTC, inclusive), e.g. a checkpoint's
    ``trained_through``: the calendar bars at or before it decide the universe."""
    stop = np.datetime64(last_timestamp, "ns")
    return lambda calendar: int(np.searchsorted(calendar, stop, side="right"))
