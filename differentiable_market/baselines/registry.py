"""Every baseline by name, with its family, and the sets that ``--baselines`` accepts.

Families: ``core`` (equal weight, buy and hold, OLMAR, inverse volatility, and with cash ``equal_weight_cash`` and
``vol_target``), ``olps`` (the online-portfolio-selection zoo, ``olps.py``), ``risk`` (risk-based portfolios,
``risk.py``), ``single`` (holding one asset, ``holds``) and ``hindsight`` (not tradeable: the best single asset and the
best constant rebalanced portfolio of each window, chosen knowing its returns).

``--baselines`` takes a set name (``core``, the default and the fast one; ``olps``; ``risk``; ``all``) or
comma-separated set and baseline names. ``equal_weight`` always runs: the reports measure everything against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from . import core, olps, risk

Family = Literal["core", "olps", "risk", "single", "hindsight"]
Kind = Literal["baseline", "single", "hindsight"]
FAMILY_TITLES = {"core": "Core baselines", "olps": "Online portfolio selection", "risk": "Risk-based portfolios",
                 "single": "Single assets", "hindsight": "Hindsight (not tradeable)"}


@dataclass(frozen=True)
class Inputs:
    """What the baselines are computed from: closes [T, A], decision bars [W, L], gross growth of each decision
    [W, L, A (+1)] (buy and hold, risk-based drift and the hindsight lines), the symbols and the core parameters."""

    close_ta: Tensor
    bars_wl: Tensor
    growth_wla: Tensor
    include_cash: bool
    symbols: tuple[str, ...]
    olmar_window: int = core.OLMAR_WINDOW
    olmar_eps: float = core.OLMAR_EPS
    vol_lookback: int = core.VOL_LOOKBACK
    tradeable_wla: Tensor | None = None  # bool [W, L, A (+1)] columns each decision may hold; None: all

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.bars_wl.shape)  # type: ignore[return-value]

    @property
    def n(self) -> int:
        return len(self.symbols)


@dataclass(frozen=True)
class Baseline:
    name: str
    family: Family
    kind: Kind
    label: Callable[[Inputs], str]
    weights: Callable[[Inputs], Tensor]
    cash_only: bool = False  # only when the backtest trades cash


def _c(text: str) -> Callable[[Inputs], str]:
    return lambda _: text


def _risk(method: str) -> Callable[[Inputs], Tensor]:
    return lambda i: risk.risk_based(method, i.close_ta, i.bars_wl, i.growth_wla, i.include_cash)


RISK_NOTE = f"{risk.RISK_LOOKBACK}-bar trailing returns, rebalanced every {risk.RISK_EVERY} bars"

BASELINES: tuple[Baseline, ...] = (
    Baseline("equal_weight", "core", "baseline", _c("Equal weight, rebalanced every bar"),
             lambda i: core.equal_weight(i.shape, i.n, i.include_cash)),
    Baseline("buy_and_hold", "core", "baseline", _c("Buy and hold from equal weight"),
             lambda i: core.buy_and_hold(i.growth_wla, i.include_cash, i.tradeable_wla)),
    Baseline("olmar", "core", "baseline", lambda i: f"OLMAR (window {i.olmar_window}, eps {i.olmar_eps:g})",
             lambda i: core.olmar(i.close_ta, i.bars_wl, i.include_cash, i.olmar_window, i.olmar_eps)),
    Baseline("inverse_vol", "core", "baseline", lambda i: f"Inverse volatility ({i.vol_lookback}-bar trailing)",
             lambda i: core.inverse_volatility(i.close_ta, i.bars_wl, i.include_cash, i.vol_lookback)),
    Baseline("equal_weight_cash", "core", "baseline",
             lambda i: f"Equal weight over the {i.n} assets and cash, 1/{i.n + 1} each",
             lambda i: core.equal_weight_with_cash(i.shape, i.n), cash_only=True),
    Baseline("vol_target", "core", "baseline",
             lambda i: f"Equal weight scaled to its long-run volatility ({i.vol_lookback}-bar trailing, max 100%), "
                       "rest in cash",
             lambda i: core.volatility_target(i.close_ta, i.bars_wl, i.vol_lookback), cash_only=True),
    Baseline("eg", "olps", "baseline", _c(f"EG, exponentiated gradient (eta {olps.EG_ETA:g})"),
             lambda i: olps.eg(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("ons", "olps", "baseline",
             _c(f"ONS, online Newton step (delta {olps.ONS_DELTA:g}, beta {olps.ONS_BETA:g}, eta {olps.ONS_ETA:g})"),
             lambda i: olps.ons(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("anticor", "olps", "baseline", _c(f"Anticor (window {olps.ANTICOR_WINDOW})"),
             lambda i: olps.anticor(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("anticor_bah", "olps", "baseline",
             _c("BAH(Anticor), buy and hold over Anticor's windows "
                f"{olps.ANTICOR_BAH_WINDOWS[0]}-{olps.ANTICOR_BAH_WINDOWS[1]}"),
             lambda i: olps.anticor_bah(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("pamr", "olps", "baseline", _c(f"PAMR (eps {olps.PAMR_EPS:g})"),
             lambda i: olps.pamr(i.close_ta, i.bars_wl, i.include_cash, variant=0)),
    Baseline("pamr1", "olps", "baseline", _c(f"PAMR-1 (eps {olps.PAMR_EPS:g}, C {olps.PAMR_C:g})"),
             lambda i: olps.pamr(i.close_ta, i.bars_wl, i.include_cash, variant=1)),
    Baseline("pamr2", "olps", "baseline", _c(f"PAMR-2 (eps {olps.PAMR_EPS:g}, C {olps.PAMR_C:g})"),
             lambda i: olps.pamr(i.close_ta, i.bars_wl, i.include_cash, variant=2)),
    Baseline("cwmr", "olps", "baseline",
             _c(f"CWMR-Stdev (eps {olps.CWMR_EPS:g}, confidence {olps.CWMR_CONFIDENCE:g})"),
             lambda i: olps.cwmr(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("rmr", "olps", "baseline", _c(f"RMR (window {olps.RMR_WINDOW}, eps {olps.RMR_EPS:g})"),
             lambda i: olps.rmr(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("corn", "olps", "baseline", _c(f"CORN (window {olps.CORN_WINDOW}, rho {olps.CORN_RHO:g})"),
             lambda i: olps.corn(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("up", "olps", "baseline",
             _c(f"Universal portfolio (Cover), {olps.UP_SAMPLES:,} sampled CRPs, seed {olps.UP_SEED}"),
             lambda i: olps.universal_portfolio(i.close_ta, i.bars_wl, i.include_cash)),
    Baseline("min_variance", "risk", "baseline", _c(f"Minimum variance, Ledoit-Wolf covariance ({RISK_NOTE})"),
             _risk("min_variance")),
    Baseline("erc", "risk", "baseline", _c(f"Equal risk contribution, Ledoit-Wolf covariance ({RISK_NOTE})"),
             _risk("erc")),
    Baseline("hrp", "risk", "baseline", _c(f"Hierarchical risk parity, sample covariance ({RISK_NOTE})"),
             _risk("hrp")),
    Baseline("max_sharpe", "risk", "baseline",
             _c(f"Maximum Sharpe, Ledoit-Wolf covariance and Bayes-Stein mean ({RISK_NOTE})"), _risk("max_sharpe")),
    Baseline("bcrp_hindsight", "hindsight", "hindsight",
             _c("Best constant rebalanced portfolio IN HINDSIGHT, before fees (not tradeable)"),
             lambda i: olps.bcrp_hindsight(i.growth_wla, i.include_cash)),
)
BY_NAME = {b.name: b for b in BASELINES}
HOLDS = "holds"  # every single-asset hold ("hold:<symbol>")
BEST_SINGLE = "best_single_hindsight"
SETS: dict[str, tuple[str, ...]] = {
    "core": ("equal_weight", "buy_and_hold", "olmar", "inverse_vol", "equal_weight_cash", "vol_target", HOLDS,
             BEST_SINGLE),
    "olps": ("equal_weight", "eg", "ons", "anticor", "anticor_bah", "pamr", "pamr1", "pamr2", "cwmr", "rmr", "corn",
             "up", "bcrp_hindsight"),
    "risk": ("equal_weight", "min_variance", "erc", "hrp", "max_sharpe"),
}
SETS["all"] = tuple(dict.fromkeys(SETS["core"] + SETS["olps"] + SETS["risk"]))
ORDER = tuple(dict.fromkeys([b.name for b in BASELINES if b.family != "hindsight"] + [HOLDS, BEST_SINGLE,
                                                                                      "bcrp_hindsight"]))
DEFAULT = "core"


def resolve(selection: str) -> tuple[str, ...]:
    """The baseline names (and ``holds``) that ``--baselines selection`` runs, in report order, equal weight first.

    Raises ConfigError naming the flag and the valid choices for an unknown or empty token."""
    tokens = [t.strip() for t in selection.split(",")]
    names: set[str] = {"equal_weight"}
    for tok in tokens:
        if tok in SETS:
            names.update(SETS[tok])
        elif tok in BY_NAME or tok in (HOLDS, BEST_SINGLE):
            names.add(tok)
        else:
            import difflib

            close = difflib.get_close_matches(tok, [*SETS, *ORDER], n=1, cutoff=0.5)
            raise ConfigError(
                f"--baselines: unknown name {tok!r} in {selection!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f". Give a set ({', '.join(SETS)}) or comma-separated names from: {', '.join(ORDER)} (e.g. "
                "--baselines core,eg,erc).")
    return tuple(n for n in ORDER if n in names)


def family_of(name: str) -> Family:
    """The family of a baseline or strategy name as the backtester names it (``hold:<symbol>`` is single)."""
    if name.startswith("hold:"):
        return "single"
    if name == BEST_SINGLE:
        return "hindsight"
    return BY_NAME[name].family


def generate(selection: str, inputs: Inputs) -> Iterator[tuple[str, str, Kind, Family, Tensor]]:
    """(name, label, kind, family, weights [W, L, A (+1)]) of every selected baseline, each built only when reached
    (a caller that accounts each one and lets it go holds one at a time)."""
    for name in resolve(selection):
        if name == HOLDS:
            for i, s in enumerate(inputs.symbols):
                yield (f"hold:{s}", f"Hold {s}", "single", "single",
                       core.single_asset(i, inputs.shape, inputs.n, inputs.include_cash))
        elif name == BEST_SINGLE:
            w, _ = core.best_single_hindsight(inputs.growth_wla, inputs.include_cash)
            yield BEST_SINGLE, "Best single asset IN HINDSIGHT (not tradeable)", "hindsight", "hindsight", w
        else:
            b = BY_NAME[name]
            if b.cash_only and not inputs.include_cash:
                continue
            with torch.no_grad():
                w = b.weights(inputs)
            yield b.name, b.label(inputs), b.kind, b.family, w
