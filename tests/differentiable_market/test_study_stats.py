import math

import numpy as np
import pytest

from differentiable_market.metrics import path_metrics
from differentiable_market.study.stats import (
    Interval,
    block_length,
    bootstrap_ci,
    deflated_sharpe_ratio,
    dsr_of,
    expected_max_sharpe,
    mean_growth_ci,
    probabilistic_sharpe_ratio,
    psr_of,
    sample_moments,
    sharpe_difference_ci,
    sharpe_per_bar,
    spa_test,
)

Z90 = 1.6448536269514722  # Phi^-1(0.95): half-width of a two-sided 90% normal interval, in standard errors


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _ar1(phi: float, n: int, sd: float, rng: np.random.Generator) -> np.ndarray:
    e = rng.normal(0.0, sd, size=n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1.0 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


# --- probabilistic Sharpe ratio ----------------------------------------------------------------------------------


def test_psr_reproduces_bailey_lopez_de_prado_2012_examples():
    # "The Sharpe Ratio Efficient Frontier" (2012): monthly SR 0.458 (1.59 annualised) over 24 months gives
    # PSR(0) = 0.982 for normal returns and 0.913 with skewness -2.448 and kurtosis 10.164. The figures are as
    # reproduced in the paper-example tests of rubenbriones/Probabilistic-Sharpe-Ratio; they also follow from the
    # formula by hand (0.98167, 0.91336).
    assert probabilistic_sharpe_ratio(0.458, 0.0, 24, 0.0, 3.0) == pytest.approx(0.982, abs=5e-4)
    assert probabilistic_sharpe_ratio(0.458, 0.0, 24, -2.448, 10.164) == pytest.approx(0.913, abs=5e-4)
    # Same source: the standard deviation of the Sharpe estimator for two 134-month track records is 0.1028 and
    # 0.1550. PSR(SR - d) = Phi(d / sigma), so sigma comes back as d / Phi^-1(PSR).
    from scipy.special import ndtri

    for sr, skew, kurt, sigma in ((0.7079, -0.2250, 2.9570, 0.1028), (0.8183, -1.4455, 7.0497, 0.1550)):
        psr = probabilistic_sharpe_ratio(sr, sr - 0.1, 134, skew, kurt)
        assert 0.1 / ndtri(psr) == pytest.approx(sigma, abs=5e-5)


def test_psr_normal_returns_reduce_to_lo_closed_form():
    # Skewness 0 and kurtosis 3: PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 + SR^2 / 2)), by hand with math.erf.
    for sr, srb, n in ((0.1, 0.0, 250), (0.05, 0.02, 1000), (-0.03, 0.0, 60), (0.2, 0.25, 40)):
        expected = _phi((sr - srb) * math.sqrt(n - 1) / math.sqrt(1.0 + sr**2 / 2.0))
        assert probabilistic_sharpe_ratio(sr, srb, n, 0.0, 3.0) == pytest.approx(expected, rel=1e-12)
    assert probabilistic_sharpe_ratio(0.1, 0.1, 500, -1.0, 6.0) == pytest.approx(0.5)
    # Vectorised over benchmarks; negative skew and fat tails lower the PSR of a positive Sharpe ratio.
    psr = probabilistic_sharpe_ratio(0.1, np.array([0.0, 0.05, 0.1]), 250, 0.0, 3.0)
    assert psr.shape == (3,) and np.all(np.diff(psr) < 0)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 250, -1.0, 8.0) < probabilistic_sharpe_ratio(0.1, 0.0, 250, 0.0, 3.0)
    assert math.isnan(probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0))


def test_psr_of_uses_sample_moments():
    from scipy.stats import kurtosis, skew

    rng = np.random.default_rng(1)
    r = rng.standard_t(5, size=800) * 0.01 + 0.0008
    sr, sk, ku, n = sample_moments(r)
    assert sr == pytest.approx(r.mean() / r.std(ddof=1))
    assert sk == pytest.approx(skew(r)) and ku == pytest.approx(kurtosis(r, fisher=False)) and n == 800
    assert psr_of(r, 0.01) == pytest.approx(probabilistic_sharpe_ratio(sr, 0.01, n, sk, ku))
    assert sharpe_per_bar(np.stack([r, 2 * r], axis=1)) == pytest.approx([sr, sr])
    assert all(math.isnan(v) for v in sample_moments(np.full(10, 0.01))[:3])


# --- deflated Sharpe ratio ---------------------------------------------------------------------------------------


def test_dsr_reproduces_bailey_lopez_de_prado_2014_example():
    # "The Deflated Sharpe Ratio" (2014), numerical example: annualised SR 2.5 on T = 1250 daily bars, N = 100
    # trials whose annualised Sharpe ratios have variance 1/2, skewness -3, kurtosis 10; 250 bars a year. The paper
    # gives SR0 ~ 0.1132 per bar and DSR ~ 0.9004 (as also encoded in jameschch/LeanOptimization's DSR test).
    per_year = 250
    sr0 = expected_max_sharpe(100, 0.5 / per_year)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    sr = 2.5 / math.sqrt(per_year)
    dsr = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, n_trials=100, var_trials=0.5 / per_year)
    assert dsr == pytest.approx(0.9004, abs=5e-5)
    # By hand: the PSR of the same track record against SR0.
    z = (sr - sr0) * math.sqrt(1249) / math.sqrt(1 + 3 * sr + 9 / 4 * sr**2)
    assert dsr == pytest.approx(_phi(z), rel=1e-12)


def test_dsr_trial_forms_agree_and_one_trial_is_psr():
    rng = np.random.default_rng(2)
    trials = rng.normal(0.0, 0.03, size=40)
    sr, n, sk, ku = 0.09, 750, -0.5, 5.0
    by_list = deflated_sharpe_ratio(sr, n, sk, ku, trial_sharpes=trials)
    by_moments = deflated_sharpe_ratio(sr, n, sk, ku, n_trials=40, var_trials=float(trials.var(ddof=1)))
    assert by_list == pytest.approx(by_moments, rel=1e-12)
    assert by_list < probabilistic_sharpe_ratio(sr, 0.0, n, sk, ku)
    assert deflated_sharpe_ratio(sr, n, sk, ku, n_trials=1, var_trials=0.01) == pytest.approx(
        probabilistic_sharpe_ratio(sr, 0.0, n, sk, ku))
    dsrs = [deflated_sharpe_ratio(sr, n, sk, ku, n_trials=k, var_trials=1e-3) for k in (2, 10, 100, 1000)]
    assert np.all(np.diff(dsrs) < 0)
    r = rng.normal(0.001, 0.01, size=500)
    # dsr_of floors V at 1/T, the sampling variance of a skill-less Sharpe estimate (here 1/500 > var(trials))
    sr_r, sk_r, ku_r, _ = sample_moments(r)
    assert dsr_of(r, trials) == pytest.approx(deflated_sharpe_ratio(
        sr_r, 500, sk_r, ku_r, n_trials=40, var_trials=max(float(trials.var(ddof=1)), 1 / 500)))
    wide = trials * 3  # var 0.0081 > 1/500: the trials' own variance
    assert dsr_of(r, wide) == pytest.approx(deflated_sharpe_ratio(sr_r, 500, sk_r, ku_r, trial_sharpes=wide))
    # three near-identical seeds: without the floor the DSR would be almost the PSR
    seeds = np.array([0.05, 0.0501, 0.0502])
    assert dsr_of(r, seeds) < deflated_sharpe_ratio(sr_r, 500, sk_r, ku_r, trial_sharpes=seeds)
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(sr, n, sk, ku, trial_sharpes=trials, n_trials=40)
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(sr, n, sk, ku, n_trials=40)


# --- block length and bootstrap intervals ------------------------------------------------------------------------


def test_block_length_floor_cap_and_dependence():
    rng = np.random.default_rng(3)
    assert block_length(np.zeros(50)) == 1.0  # undefined for a constant series: floored
    assert block_length(rng.normal(size=5)) == 1.0  # too short to estimate
    assert block_length(rng.normal(size=2000)) < 2.0
    assert block_length(np.arange(10.0)) == 2.5  # a trend: Politis-White says 4 bars, capped at T / 4
    ar = _ar1(0.8, 2000, 0.01, rng)
    b_ar = block_length(ar)
    assert b_ar > 5.0
    assert block_length(np.stack([rng.normal(size=2000), ar], axis=1)) == b_ar  # the longest column's


def test_mean_ci_iid_normal_covers_truth_with_normal_theory_width():
    rng = np.random.default_rng(4)
    mu, sd, n, per_year = 4e-4, 0.01, 2000, 252
    x = rng.normal(mu, sd, size=n)
    ci = mean_growth_ci(x, per_year, level=0.9, reps=2000, seed=7)
    assert isinstance(ci, Interval) and ci.level == 0.9 and ci.reps == 2000
    assert ci.estimate == pytest.approx(x.mean() * per_year)
    assert ci.low < mu * per_year < ci.high
    assert ci.low < ci.estimate < ci.high
    normal_width = 2 * Z90 * x.std(ddof=1) / math.sqrt(n) * per_year
    assert (ci.high - ci.low) == pytest.approx(normal_width, rel=0.2)
    # Deterministic under a seed, different under another.
    assert mean_growth_ci(x, per_year, reps=2000, seed=7) == ci
    assert mean_growth_ci(x, per_year, reps=2000, seed=8) != ci
    assert mean_growth_ci(x, per_year, reps=2000, seed=np.random.default_rng(7)) == ci


def test_mean_ci_autocorrelated_is_wider_than_iid_bootstrap():
    rng = np.random.default_rng(5)
    x = _ar1(0.8, 2000, 0.01, rng) + 3e-4
    auto = mean_growth_ci(x, 252, reps=1000, seed=0)
    iid = mean_growth_ci(x, 252, reps=1000, seed=0, block=1)
    assert auto.block_length > 1.0 and iid.block_length == 1.0
    # The long-run variance of an AR(1) mean is (1 + phi) / (1 - phi) = 9 times the i.i.d. one: 3x the width.
    assert (auto.high - auto.low) > 2.0 * (iid.high - iid.low)


def test_sharpe_difference_ci_matches_metrics_and_keeps_pairing():
    rng = np.random.default_rng(6)
    a = rng.normal(6e-4, 0.01, size=1000)
    b = 0.7 * a + rng.normal(0.0, 0.005, size=1000)
    ci = sharpe_difference_ci(a, b, 252, reps=500, seed=0)
    zeros = np.zeros((2, 1000))
    sharpe = path_metrics(np.stack([a, b]), zeros, zeros, periods_per_year=252)["sharpe"]
    assert ci.estimate == pytest.approx(sharpe[0] - sharpe[1])
    assert ci.low < ci.estimate < ci.high
    # A strategy against itself: every resample pairs each bar with itself, so the difference is exactly 0.
    same = sharpe_difference_ci(a, a, 252, reps=200, seed=0)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    # The generic entry point takes any statistic of the [T, k] path.
    med = bootstrap_ci(np.stack([a, b], axis=1), lambda ab: float(np.median(ab[:, 0] - ab[:, 1])), reps=200)
    assert med.low <= med.estimate <= med.high
    with pytest.raises(ValueError):
        sharpe_difference_ci(a, b[:-1], 252)


# --- SPA ---------------------------------------------------------------------------------------------------------


def test_spa_detects_planted_edge_and_not_noise():
    rng = np.random.default_rng(7)
    n = 1500
    bench = rng.normal(2e-4, 0.01, size=n)  # per-bar log growth of the benchmark
    noise_models = bench[:, None] + rng.normal(0.0, 0.004, size=(n, 5))
    edge_model = bench + 6e-4 + rng.normal(0.0, 0.004, size=n)

    null = spa_test(-bench, -noise_models, reps=500, seed=0)
    assert null.pvalue > 0.1
    assert null.n_models == 5 and null.n_bars == n and null.block_size >= 1

    edge = spa_test(-bench, -np.column_stack([noise_models, edge_model]), reps=500, seed=0)
    assert edge.pvalue < 0.05
    assert edge.pvalue_lower <= edge.pvalue <= edge.pvalue_upper
    assert spa_test(-bench, -np.column_stack([noise_models, edge_model]), reps=500, seed=0) == edge
    assert spa_test(-bench, -edge_model, block_size=5, reps=200, seed=1).block_size == 5


def test_spa_statistic_is_hansens_studentised_maximum():
    from differentiable_market.study.stats import spa_statistic

    # T_SPA = max(0, max_k sqrt(T) d_k / omega_k): sqrt(100) * 0.1 / 0.5 = 2 beats 10 * 0.3 / 3 = 1
    assert spa_statistic(np.array([0.1, 0.3, -0.2]), np.array([0.5, 3.0, 1.0]), 100) == pytest.approx(2.0)
    assert spa_statistic(np.array([-0.1, -0.3]), np.array([0.5, 3.0]), 100) == 0.0  # floored at 0


def test_spa_is_studentised_a_precise_small_edge_is_found_next_to_a_noisy_large_one():
    rng = np.random.default_rng(5)
    t = 1000
    bench = np.zeros(t)
    precise = rng.normal(0.004, 0.02, t)  # t-stat about 6
    noisy = rng.normal(0.0, 2.0, t)
    noisy += 0.001 - noisy.mean()  # no better than the precise one on average, but 100x as noisy: t-stat 0.016
    res = spa_test(-bench, -np.column_stack([precise, noisy]), block_size=1, reps=1000, seed=0)
    assert res.pvalue < 0.01
    # a raw-mean statistic (what arch 8 computes whatever 'studentize' says) is dominated by the noisy model
    from arch.bootstrap import SPA

    raw = SPA(-bench, -np.column_stack([precise, noisy]), block_size=1, reps=1000, bootstrap="stationary",
              seed=np.random.default_rng(0))
    raw.compute()
    assert raw.pvalues["consistent"] > 0.3  # about P(N(0, 2 / sqrt(T)) > 0.004) = 0.47
    # rescaling one model's differentials changes nothing: each model is measured in its own standard errors
    scaled = spa_test(-bench, -np.column_stack([precise, 10.0 * noisy]), block_size=1, reps=1000, seed=0)
    assert abs(scaled.pvalue - res.pvalue) <= 1 / 1000 and scaled.statistic == pytest.approx(res.statistic)


def test_spa_of_one_iid_model_matches_the_normal_tail():
    from scipy.stats import norm

    rng = np.random.default_rng(2)
    d = rng.normal(0.002, 0.01, 800)
    res = spa_test(np.zeros(800), -d, block_size=1, reps=4000, seed=3)
    t_stat = d.mean() / d.std(ddof=1) * np.sqrt(800)
    assert res.statistic == pytest.approx(t_stat, rel=0.05)  # bootstrap omega ~ the sample standard deviation
    assert res.pvalue_upper == pytest.approx(norm.sf(t_stat), abs=0.02)
