"""The walk-forward plan: which bars each fold trains, validates and is tested on.

Out-of-sample decisions are the last ``oos_fraction`` of the scorable decision bars, cut into ``folds`` contiguous,
non-overlapping blocks (one per fold, in time order). Fold k, whose block is decisions [d_k, d_{k+1}), is laid out as

    [ train ............ ) embargo [ validation ) embargo [ test: decisions d_k .. d_{k+1} - 1 )

The test split of the fold's run is the price range [d_k, d_{k+1} + horizon), so every price a test decision earns
lies inside it, and consecutive folds' decisions tile the out-of-sample range with no gap and no overlap. Validation
is the ``val_bars`` bars ending ``embargo`` bars before d_k; training ends ``embargo`` bars before validation and
starts at bar 0 ("expanding") or ``train_bars`` bars before its end ("rolling"). No bar a fold trains or validates on
lies inside any test block of that fold or a later one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError, DataError

WindowKind = Literal["expanding", "rolling"]


@dataclass(frozen=True)
class Fold:
    """Half-open bar ranges of one fold; ``decisions`` are the out-of-sample decision bars it contributes."""

    index: int
    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]
    decisions: tuple[int, int]

    @property
    def split_bars(self) -> tuple[int, int, int, int, int, int]:
        """The fold's ranges as ``DataConfig.split_bars``."""
        return (*self.train, *self.validation, *self.test)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "train": list(self.train), "validation": list(self.validation),
                "test": list(self.test), "decisions": list(self.decisions)}


def plan_folds(
    n_bars: int,
    horizon: int,
    folds: int,
    oos_fraction: float,
    val_bars: int,
    embargo: int,
    lookback: int,
    window: WindowKind = "expanding",
    train_bars: int | None = None,
) -> list[Fold]:
    """The folds of a walk-forward study over ``n_bars`` bars (see the module docstring)."""
    if folds < 1:
        raise ConfigError(f"--folds must be >= 1, got {folds}.")
    if not 0.0 < oos_fraction < 1.0:
        raise ConfigError(f"--oos-fraction must lie in (0, 1), got {oos_fraction}.")
    if window == "rolling" and (train_bars is None or train_bars < lookback + 3):
        raise ConfigError(f"a rolling window needs --train-bars >= lookback + 3 = {lookback + 3}, got {train_bars}.")
    last = n_bars - horizon  # decisions [0, last) are scorable
    n_oos = round(last * oos_fraction)
    if n_oos < folds:
        raise DataError(f"{n_oos} out-of-sample decision bars cannot make {folds} folds; lower --folds or raise "
                        "--oos-fraction.")
    first = last - n_oos
    edges = [first + (n_oos * k) // folds for k in range(folds + 1)]
    out = []
    for k in range(folds):
        d0, d1 = edges[k], edges[k + 1]
        va_end = d0 - embargo
        va_start = va_end - val_bars
        tr_end = va_start - embargo
        tr_start = 0 if window == "expanding" else max(0, tr_end - (train_bars or 0))
        if tr_end - tr_start < lookback + 3 or val_bars < horizon + 1:
            raise DataError(
                f"Fold {k} (test decisions from bar {d0}) leaves {max(tr_end - tr_start, 0)} training bars, fewer "
                f"than lookback + 3 = {lookback + 3}, with {val_bars} validation bars and an embargo of {embargo}. "
                "Lower --oos-fraction, --val-fraction, --embargo-bars or --lookback, or use more data."
            )
        out.append(Fold(k, (tr_start, tr_end), (va_start, va_end), (d0, min(n_bars, d1 + horizon)), (d0, d1)))
    return out
