"""The selection gate: which evaluated checkpoint of a run may replace the untrained policy as best.pt.

A run scores its policy on the validation split at every evaluation ("look"). Picking the best of several noisy
scores favours whichever checkpoint fitted the validation noise, so a trained checkpoint replaces the untrained policy
(equal weight seen through the action) only on evidence, and the evidence is calibrated for the looks taken:

- **Two benchmarks.** For look k the per-bar differentials are d_k = (policy - equal weight) and u_k = (policy -
  untrained policy), net log growth per validation bar. A checkpoint must beat both: the benchmark a reader compares
  with, and the policy it displaces (which with a no-trade band trades less than equal weight and may beat it).
- **Autocorrelation-robust t.** t(x) = mean(x) / (omega / sqrt(T)), omega^2 the long-run variance of x by the
  Newey-West (Bartlett kernel) estimator with its automatic bandwidth (``arch.covariance.kernel.Bartlett``). A look's
  evidence is s_k = min(t(d_k), t(u_k)).
- **Corrected for the looks.** The 2K hypotheses "look k does not beat benchmark b" get one critical value: the
  (1 - alpha) quantile of the stationary-bootstrap distribution of the largest of their 2K t-statistics. Every
  look's two differentials are resampled jointly (the same bars, so the looks' strong correlation is kept),
  recentred at their sample means and studentised by the same omega: M* = max over k and b of t*(k, b). This is the
  single-step max-t test of White's reality check and Romano & Wolf's first step: whatever the true means, the
  chance that any true null is rejected is at most alpha (asymptotically), and a look passes only where both of its
  nulls are rejected, s_k >= the critical value, so a run without an edge keeps a trained look with probability at
  most alpha. (Taking the quantile of max_k s*_k instead would be too lenient: with one benchmark beaten by far and
  the other not at all, s_k is that other t alone, whose quantile the min of two recentred t's understates.)
  alpha is ``norm.sf(min_t)``, so ``--select-min-t`` keeps its meaning for one look (t of at least 2: alpha 2.3%,
  one-sided) and the threshold rises with the number and independence of the looks.
- Among the looks whose s_k reaches the critical value, the best validation objective wins; with none, best.pt is the
  untrained policy. Recomputed at every look with all looks so far (a checkpoint that passed early can fail once
  later looks raise the critical value), from a fixed seed, so a resumed run decides exactly as an uninterrupted one.

What this controls: the probability that a run whose checkpoints have no edge over either benchmark keeps a trained
one (the false-pass rate per run). ``benchmarks/gate_calibration.py`` measures it on random walks and the power on
markets with an edge. Looks whose policy has not moved off the benchmark (a zero differential) carry no evidence and
are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BOOTSTRAP_REPS = 1000
_MIN_BARS = 8  # fewer validation bars cannot estimate a long-run variance; such runs keep the untrained policy


def long_run_std(x: np.ndarray) -> float:
    """sqrt of the Newey-West long-run variance of a [T] series (Bartlett kernel, automatic bandwidth), i.e. the
    standard deviation that ``sqrt(T) * mean(x)`` has asymptotically under serial dependence; 0 for a constant series,
    NaN for a series with a non-finite value."""
    from arch.covariance.kernel import Bartlett

    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        return math.nan
    if x.size < 2 or float(np.ptp(x)) <= 1e-15 * max(1.0, float(np.abs(x).max())):
        return 0.0
    return math.sqrt(max(float(Bartlett(x).cov.long_run[0, 0]), 0.0))


def hac_t(x: np.ndarray) -> float:
    """The autocorrelation-robust t-statistic of mean(x) = 0: sqrt(T) mean(x) / omega (0 for a constant series, NaN
    for one with a non-finite value)."""
    x = np.asarray(x, dtype=np.float64)
    omega = long_run_std(x)
    if math.isnan(omega):
        return math.nan
    return float(math.sqrt(x.size) * x.mean() / omega) if omega > 0 else 0.0


@dataclass(frozen=True)
class Look:
    """One evaluated checkpoint: its step, validation objective and per-bar excess log growth [T] over equal weight
    and over the untrained policy."""

    step: int
    objective: float
    excess_equal: np.ndarray
    excess_untrained: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "objective": self.objective, "excess_equal": self.excess_equal.tolist(),
                "excess_untrained": self.excess_untrained.tolist()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Look:
        return Look(int(d["step"]), float(d["objective"]), np.asarray(d["excess_equal"], dtype=np.float64),
                    np.asarray(d["excess_untrained"], dtype=np.float64))


@dataclass(frozen=True)
class Decision:
    """The gate's verdict over the looks so far. ``step`` is the chosen look's step, or None: the untrained policy.
    ``critical_t`` is the bootstrap critical value of the max over the looks (inf with no live look), ``evidence``
    each look's s_k (step -> min of the two t-statistics; None for a look without evidence)."""

    step: int | None
    critical_t: float
    alpha: float
    looks: int
    evidence: dict[int, float | None] = field(default_factory=dict)
    t_equal: dict[int, float] = field(default_factory=dict)
    t_untrained: dict[int, float] = field(default_factory=dict)

    def passed(self, step: int) -> bool:
        s = self.evidence.get(step)
        return s is not None and s >= self.critical_t


def block_for(x: np.ndarray) -> float:
    """Expected block length of the stationary bootstrap of the columns of ``x`` [T, k] (``study.stats``)."""
    from .study.stats import block_length

    return block_length(x)


def critical_value(columns: np.ndarray, omega: np.ndarray, alpha: float, seed: int,
                   reps: int = BOOTSTRAP_REPS) -> float:
    """The (1 - alpha) quantile of the largest recentred, studentised bootstrap t-statistic over the columns.

    ``columns`` [T, 2K] holds d_1..d_K then u_1..u_K, ``omega`` [2K] their long-run standard deviations (all > 0)."""
    from arch.bootstrap import StationaryBootstrap

    t_bars, width = columns.shape
    means = columns.mean(0)
    bs = StationaryBootstrap(block_for(columns), columns, seed=np.random.default_rng(seed))
    boot = np.empty((reps, width))
    for r, data in enumerate(bs.bootstrap(reps)):
        boot[r] = data[0][0].mean(0)
    t_star = math.sqrt(t_bars) * (boot - means) / omega  # [reps, 2K]
    return float(np.quantile(t_star.max(1), 1.0 - alpha, method="higher"))


class SelectionGate:
    """Accumulates a run's looks and decides best.pt (see the module docstring). ``min_t`` None turns the gate off:
    the best validation objective of any trained look wins (as before the gate existed)."""

    def __init__(self, min_t: float | None, seed: int, reps: int = BOOTSTRAP_REPS) -> None:
        self.min_t = min_t
        self.seed = seed
        self.reps = reps
        self.looks: list[Look] = []

    @property
    def alpha(self) -> float:
        """The false-pass rate per run the gate is set for: the one-sided level of a t of ``min_t`` on one look."""
        from scipy.special import ndtr

        return float(ndtr(-self.min_t)) if self.min_t is not None else 1.0

    def add(self, look: Look) -> Decision:
        """Record a look (replacing an earlier one at the same step, as a resumed run re-evaluates) and decide."""
        self.looks = [lk for lk in self.looks if lk.step != look.step] + [look]
        self.looks.sort(key=lambda lk: lk.step)
        return self.decide()

    def decide(self) -> Decision:
        looks = self.looks
        if self.min_t is None:
            finite = [lk for lk in looks if math.isfinite(lk.objective)]
            best = max(finite, key=lambda lk: lk.objective, default=None)
            return Decision(None if best is None else best.step, -math.inf, 1.0, len(looks))
        t_eq, t_un, evidence = {}, {}, {}
        live: list[tuple[Look, float, float]] = []
        for lk in looks:
            om_d, om_u = long_run_std(lk.excess_equal), long_run_std(lk.excess_untrained)
            n = lk.excess_equal.size
            t_eq[lk.step] = math.sqrt(n) * lk.excess_equal.mean() / om_d if om_d > 0 else 0.0
            t_un[lk.step] = math.sqrt(n) * lk.excess_untrained.mean() / om_u if om_u > 0 else 0.0
            if om_d > 0 and om_u > 0 and n >= _MIN_BARS and math.isfinite(lk.objective):
                evidence[lk.step] = min(t_eq[lk.step], t_un[lk.step])
                live.append((lk, om_d, om_u))
            else:
                evidence[lk.step] = None
        if not live:
            return Decision(None, math.inf, self.alpha, len(looks), evidence, t_eq, t_un)
        columns = np.stack([lk.excess_equal for lk, _, _ in live] + [lk.excess_untrained for lk, _, _ in live], 1)
        omega = np.array([om for _, om, _ in live] + [om for _, _, om in live])
        critical = critical_value(columns, omega, self.alpha, self.seed, self.reps)
        passing = [lk for lk, _, _ in live if evidence[lk.step] >= critical]
        best = max(passing, key=lambda lk: lk.objective, default=None)
        return Decision(None if best is None else best.step, critical, self.alpha, len(looks), evidence, t_eq, t_un)

    def state_dict(self) -> dict[str, Any]:
        return {"looks": [lk.to_dict() for lk in self.looks]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.looks = [Look.from_dict(d) for d in (state or {}).get("looks", [])]
