import math

import numpy as np
import pytest
from scipy.stats import norm

from differentiable_market.gate import Look, SelectionGate, critical_value, hac_t, long_run_std


def _newey_west(x: np.ndarray, bandwidth: float) -> float:
    """The Bartlett-kernel long-run variance: gamma_0 + 2 sum_{j <= bandwidth} (1 - j / (bandwidth + 1)) gamma_j."""
    d = x - x.mean()
    n = d.size
    lags = int(np.floor(bandwidth))
    gam = [float(d[j:] @ d[: n - j]) / n for j in range(lags + 1)]
    return gam[0] + 2.0 * sum((1.0 - j / (bandwidth + 1)) * gam[j] for j in range(1, lags + 1))


def test_the_long_run_variance_is_the_bartlett_sum_at_arch_s_bandwidth():
    from arch.covariance.kernel import Bartlett

    rng = np.random.default_rng(0)
    e = rng.normal(size=600)
    x = e + 0.6 * np.roll(e, 1)  # an MA(1): long-run variance (1 + 0.6)^2 = 2.56 per unit innovation variance
    assert long_run_std(x) ** 2 == pytest.approx(_newey_west(x, Bartlett(x).bandwidth), rel=1e-9)
    assert long_run_std(x) ** 2 == pytest.approx(2.56, rel=0.25)
    # positive autocorrelation makes the robust t smaller than the i.i.d. one by about sqrt(2.56 / 1.36)
    iid_t = math.sqrt(x.size) * x.mean() / x.std(ddof=1)
    assert abs(hac_t(x)) < abs(iid_t)
    assert hac_t(np.zeros(50)) == 0.0 and long_run_std(np.full(50, 3.0)) == 0.0


def test_one_look_needs_the_one_sided_normal_quantile_and_many_independent_looks_more():
    rng = np.random.default_rng(1)
    n, alpha = 800, 0.05
    one = rng.normal(size=(n, 1))
    cols = np.concatenate([one, one], 1)  # d and u identical: the untrained policy is equal weight
    c1 = critical_value(cols, np.array([1.0, 1.0]) * cols.std(), alpha, seed=0, reps=2000)
    assert c1 == pytest.approx(norm.ppf(1 - alpha), abs=0.15)
    # five identical looks are one look
    five_same = np.concatenate([np.repeat(one, 5, 1), np.repeat(one, 5, 1)], 1)
    c_same = critical_value(five_same, np.full(10, one.std()), alpha, seed=0, reps=2000)
    assert c_same == pytest.approx(c1, abs=1e-9)
    # five independent looks: the quantile of the largest of five standard normals
    ind = rng.normal(size=(n, 5))
    c_ind = critical_value(np.concatenate([ind, ind], 1), np.tile(ind.std(0), 2), alpha, seed=0, reps=2000)
    assert c_ind == pytest.approx(norm.ppf((1 - alpha) ** (1 / 5)), abs=0.15)
    assert c_ind > c1 + 0.4


def _look(step, excess_equal, excess_untrained=None, objective=None):
    eu = excess_equal if excess_untrained is None else excess_untrained
    return Look(step, float(excess_equal.sum()) if objective is None else objective, excess_equal, eu)


def test_a_clear_edge_passes_and_the_best_objective_among_passing_looks_wins():
    rng = np.random.default_rng(2)
    gate = SelectionGate(min_t=2.0, seed=0, reps=500)
    noise = rng.normal(0, 0.01, size=(4, 450))
    gate.add(_look(50, noise[0]))  # nothing: no evidence
    assert gate.decide().step is None
    strong = noise[1] + 0.004  # t about 6
    weaker = noise[2] + 0.003
    gate.add(_look(100, strong, objective=1.0))
    d = gate.add(_look(150, weaker, objective=2.0))
    assert d.passed(100) and d.passed(150) and not d.passed(50)
    assert d.step == 150  # both passed: the better validation objective
    assert d.critical_t > norm.ppf(1 - d.alpha) - 0.2  # three looks need at least one look's threshold
    assert d.alpha == pytest.approx(norm.sf(2.0))


def test_a_look_must_beat_the_untrained_policy_too():
    rng = np.random.default_rng(3)
    gate = SelectionGate(min_t=2.0, seed=0, reps=500)
    beats_equal = rng.normal(0, 0.01, size=450) + 0.004
    # the untrained policy (a band that trades less) already earns the same edge over equal weight
    d = gate.add(Look(50, 1.0, beats_equal, rng.normal(0, 0.01, size=450)))
    assert d.t_equal[50] > 4 and abs(d.t_untrained[50]) < 3.5 and d.evidence[50] == d.t_untrained[50]
    if d.t_untrained[50] < d.critical_t:
        assert d.step is None


def test_a_look_identical_to_the_benchmark_carries_no_evidence_and_the_gate_off_takes_the_best_objective():
    gate = SelectionGate(min_t=2.0, seed=0)
    d = gate.add(Look(50, 5.0, np.zeros(300), np.zeros(300)))
    assert d.evidence[50] is None and d.step is None and math.isinf(d.critical_t)
    off = SelectionGate(min_t=None, seed=0)
    off.add(Look(50, 1.0, np.zeros(300), np.zeros(300)))
    assert off.add(Look(100, 0.5, np.ones(300), np.ones(300))).step == 50


def test_decisions_are_deterministic_and_survive_a_state_round_trip():
    rng = np.random.default_rng(4)
    looks = [Look(s, float(rng.normal()), rng.normal(0.0005 * i, 0.01, 300), rng.normal(0.0005 * i, 0.01, 300))
             for i, s in enumerate((50, 100, 150))]
    a = SelectionGate(2.0, seed=11, reps=300)
    for lk in looks:
        da = a.add(lk)
    b = SelectionGate(2.0, seed=11, reps=300)
    b.load_state_dict(a.state_dict())
    db = b.decide()
    assert (da.step, da.critical_t, da.evidence) == (db.step, db.critical_t, db.evidence)
    # a look re-evaluated at the same step (a resumed run) replaces the earlier record
    b.add(looks[0])
    assert [lk.step for lk in b.looks] == [50, 100, 150]


def test_the_false_pass_rate_of_correlated_looks_without_an_edge_stays_near_alpha():
    """Null simulation: each run has 6 looks whose excess paths share a common noise path (correlated checkpoints,
    as consecutive evaluations are) plus their own. The gate keeps a trained look in about alpha of the runs."""
    rng = np.random.default_rng(5)
    runs, passes = 200, 0
    for r in range(runs):
        common = rng.normal(0, 0.01, size=300)
        base = rng.normal(0, 0.01, size=300)
        gate = SelectionGate(min_t=float(norm.isf(0.1)), seed=r, reps=199)
        for k in range(6):
            own = rng.normal(0, 0.01, size=300)
            d = common + 0.5 * own
            gate.looks.append(Look(50 * (k + 1), 0.0, d, d - 0.3 * base))
        passes += gate.decide().step is not None
    # alpha 0.1 over 200 runs: binomial sd 0.021; the bound allows three of them
    assert passes / runs < 0.1 + 0.064
