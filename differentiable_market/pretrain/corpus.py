"""The pretraining corpus: which markets a policy learns from before it meets a user's market, and how each is built.

A corpus is a list of ``MarketSpec``: a synthetic family with its parameters and seed, Cover's NYSE 1962-1984 set cut
at a date, or a user's folder (read by the ordinary loader) cut at a date. Every spec has a role: "train" markets are
learned from (their first ``train_share`` of bars; the rest is never used), "validation" markets only score the
policy, on their second half, to choose the pretrained checkpoint. The corpus, each market's hash and dates, and the
last real date trained on are recorded in the checkpoint (``pretrain.run``), so applying the policy to data from
before that date can be refused.

``default_corpus`` is the corpus of the shipped policy: synthetic families with varied asset counts, volatilities and
fees (reversal, momentum, planted, random walks, regime switches, churning universes), and NYSE 1962-1973 when the
``universal-portfolios`` package (the ``crosscheck`` dependency group) is installed. Its parameters are drawn from a
seeded generator, so the corpus is the same wherever it is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import DataConfig
from ..data import MarketData, load_market
from ..errors import ConfigError
from .. import synthetic

Role = Literal["train", "validation"]
SYNTHETIC = ("reversal", "momentum", "planted", "random", "regime", "churn")
FAMILIES = (*SYNTHETIC, "nyse", "folder")
NYSE_CUTOFF = "1973-12-31"  # the shipped corpus's NYSE part ends here: its later years stay out of sample


@dataclass(frozen=True)
class MarketSpec:
    """One corpus market. ``params`` are the family builder's keyword arguments (synthetic), ``through`` the last
    date used (real data; None: all of it), ``folder`` the data folder (family "folder")."""

    name: str
    family: str
    role: Role
    cost_bps: float = 10.0
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    execution: Literal["open", "close"] = "open"
    folder: str | None = None
    through: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"corpus market {self.name!r}: unknown family {self.family!r}; choose one of {FAMILIES}.")
        if self.role not in ("train", "validation"):
            raise ConfigError(f"corpus market {self.name!r}: role must be 'train' or 'validation', got {self.role!r}.")
        if self.family == "folder" and not self.folder:
            raise ConfigError(f"corpus market {self.name!r}: a 'folder' market needs its folder.")

    @property
    def synthetic(self) -> bool:
        return self.family in SYNTHETIC

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> MarketSpec:
        return MarketSpec(**d)


def build_market(spec: MarketSpec) -> MarketData:
    """The market a spec describes (synthetic: generated; nyse: read from the universal-portfolios package; folder:
    loaded by the ordinary loader), cut at ``spec.through`` when given."""
    if spec.family == "churn":
        with tempfile.TemporaryDirectory(prefix="dm-churn-") as tmp:
            synthetic.churn_universe(Path(tmp) / "m", seed=spec.seed, **spec.params)
            market = load_market(DataConfig(root=str(Path(tmp) / "m"), calendar="union", min_listed=4), min_bars=64)
    elif spec.synthetic:
        builder = {"reversal": synthetic.reversal_market, "momentum": synthetic.momentum_market,
                   "planted": synthetic.planted_signal_market, "random": synthetic.random_walk_market,
                   "regime": synthetic.regime_market}[spec.family]
        market = builder(seed=spec.seed, **spec.params)
    elif spec.family == "nyse":
        from ..datasets import nyse_o

        market = nyse_o()
    else:
        market = load_market(DataConfig(root=str(spec.folder)), min_bars=64)
    return cut(market, spec.through) if spec.through else market


def cut(market: MarketData, through: str) -> MarketData:
    """The bars of ``market`` up to and including the date ``through`` (an ISO date or date-time)."""
    stop = int(np.searchsorted(market.timestamps, np.datetime64(through) + np.timedelta64(1, "D"), side="left")
               if len(through) <= 10 else
               np.searchsorted(market.timestamps, np.datetime64(through), side="right"))
    if stop < 2:
        raise ConfigError(f"{market.source}: no bars on or before {through}.")

    def rows(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.array(a[:stop])

    return dataclasses.replace(
        market, timestamps=rows(market.timestamps), open=rows(market.open), high=rows(market.high),
        low=rows(market.low), close=rows(market.close), volume=rows(market.volume), filled=rows(market.filled),
        listed=rows(market.listed), tradeable=rows(market.tradeable))


def market_record(spec: MarketSpec, market: MarketData) -> dict[str, Any]:
    """What the checkpoint records of a corpus market: its spec, size, dates and price hash."""
    return {**spec.to_dict(), "n_assets": market.n_assets, "n_bars": market.n_bars,
            "first_timestamp": str(market.timestamps[0])[:19], "last_timestamp": str(market.timestamps[-1])[:19],
            "ohlc_sha256": market.fingerprint()["ohlc_sha256"]}


def corpus_hash(records: list[dict[str, Any]]) -> str:
    """One hash of the corpus: every market's spec and price hash, in order."""
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def last_real_date(records: list[dict[str, Any]]) -> str | None:
    """The last timestamp of real (not synthetic) data the corpus trains on, or None when it has none."""
    real = [r["last_timestamp"] for r in records if r["family"] not in SYNTHETIC and r["role"] == "train"]
    return max(real) if real else None


def default_corpus(seed: int = 0, train_markets: int = 36, validation_markets: int = 12,
                   nyse: bool = True) -> list[MarketSpec]:
    """The shipped corpus: ``train_markets`` synthetic training markets and ``validation_markets`` held-out
    validation markets, cycling through the synthetic families, with parameters drawn from a generator seeded by
    ``seed``; plus NYSE 1962-1973 as a training market when ``nyse`` (needs the crosscheck group).

    Ranges: 6 to 48 assets, 1,260 to 2,520 bars (5 to 10 years of days); fees 5, 10 (most) or 20 bps; idiosyncratic
    volatility 0.6% to 1.8% a bar; reversal rho 0.6 to 0.9; momentum drift 0.8 to 2 bps... see ``_draw``."""
    rng = np.random.default_rng(seed)
    order = ("reversal", "momentum", "planted", "random", "regime", "reversal", "random", "churn")
    specs = []
    for role, count in (("train", train_markets), ("validation", validation_markets)):
        for i in range(count):
            family = order[i % len(order)]
            params, cost = _draw(family, rng)
            specs.append(MarketSpec(f"{role}-{i:02d}-{family}", family, role, cost_bps=cost,
                                    seed=int(rng.integers(0, 2**31 - 1)), params=params))
    if nyse:
        specs.append(MarketSpec("nyse-1962-1973", "nyse", "train", cost_bps=10.0, execution="close",
                                through=NYSE_CUTOFF))
    return specs


def _draw(family: str, rng: np.random.Generator) -> tuple[dict[str, Any], float]:
    """One market's builder parameters and fee, drawn from the family's ranges."""
    cost = float(rng.choice([5.0, 10.0, 10.0, 10.0, 20.0]))
    bars = int(rng.integers(1260, 2521))
    vol = float(rng.uniform(0.006, 0.018))
    if family == "reversal":
        return {"n_bars": bars, "n_assets": int(rng.integers(8, 49)), "rho": float(rng.uniform(0.6, 0.9)),
                "idio_vol": vol, "walk_vol": float(rng.uniform(0.002, 0.008))}, cost
    if family == "momentum":
        return {"n_bars": bars, "n_assets": int(rng.integers(8, 49)), "idio_vol": vol,
                "trend_std": float(rng.uniform(8e-4, 2e-3)), "trend_rho": float(rng.uniform(0.95, 0.99))}, cost
    if family == "planted":
        n = int(rng.integers(4, 17))
        return {"n_bars": bars, "n_assets": n, "vol": vol, "signal_assets": int(rng.integers(1, min(3, n) + 1)),
                "autocorrelation": float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6))}, cost
    if family == "random":
        return {"n_bars": bars, "n_assets": int(rng.integers(4, 33)), "vol": vol}, cost
    if family == "regime":
        return {"n_bars": bars, "n_assets": int(rng.integers(8, 41)), "idio_vol": vol,
                "rho": float(rng.uniform(0.6, 0.9))}, cost
    return {"n_assets": int(rng.integers(20, 49)), "years": int(rng.integers(5, 9))}, cost  # churn
