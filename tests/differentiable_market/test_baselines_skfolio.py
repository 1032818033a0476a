"""Risk-based baselines against skfolio (an independent implementation, one problem per call) on trailing windows of
252 simple returns: synthetic 8 and 20 assets with a common factor, and the bundled sample's last year.

Our weights come from ``risk.risk_based`` at one decision bar, i.e. the very path the backtester uses (the
Ledoit-Wolf covariance for minimum variance, ERC and max Sharpe; the sample covariance for HRP); skfolio is fitted on
the same 252 returns. skfolio solves the convex problems with the interior-point solver Clarabel, whose default
stopping tolerances (1e-8 on the duality gap and feasibility) leave weights up to about 2e-4 off the optimum on
these windows: the objective is flat near its minimum, so a gap of g moves weights by about sqrt(g / curvature). The
tests tighten Clarabel to 1e-12 (the weights then agree to a few 1e-6 at most) and assert two things: the weights
agree to ``WEIGHT_ATOL``, and ours are no worse on the objective itself (variance, spread of risk contributions,
Sharpe ratio), which does not depend on the solver's tolerance. Our solvers are exact active-set / Newton methods.
"""

import warnings

import numpy as np
import pytest
import torch

from differentiable_market.baselines import risk

skfolio = pytest.importorskip("skfolio", reason="skfolio is not installed: uv sync --group crosscheck")
from skfolio.cluster import HierarchicalClustering, LinkageMethod  # noqa: E402
from skfolio.distance import BaseDistance  # noqa: E402
from skfolio.moments import LedoitWolf, ShrunkMu, ShrunkMuMethods  # noqa: E402
from skfolio.optimization import (  # noqa: E402
    HierarchicalRiskParity,
    MeanRisk,
    ObjectiveFunction,
    RiskBudgeting,
)
from skfolio.prior import EmpiricalPrior  # noqa: E402
from skfolio.seriation import HierarchicalSeriation  # noqa: E402

LOOKBACK = 252
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}
WEIGHT_ATOL = 2e-5  # observed at most 4.6e-6 with TIGHT (max Sharpe, 8 assets)


def _synthetic_close(n_assets: int, seed: int) -> np.ndarray:
    """LOOKBACK + 1 closes whose returns have a common factor with betas in [0.5, 1.5], idiosyncratic volatilities
    in [1%, 3%] and dispersed drifts (so the max Sharpe portfolio holds several assets, not one corner)."""
    rng = np.random.default_rng(seed)
    vols = rng.uniform(0.01, 0.03, n_assets)
    beta = rng.uniform(0.5, 1.5, n_assets)
    r = (rng.normal(0.0004, 0.01, (LOOKBACK, 1)) * beta + rng.normal(0.0, 1.0, (LOOKBACK, n_assets)) * vols
         + rng.normal(0.001, 0.001, n_assets))
    return 100.0 * np.vstack([np.ones(n_assets), np.cumprod(1.0 + r, axis=0)])


@pytest.fixture(params=["synthetic-8", "synthetic-20", "sample"])
def close(request) -> np.ndarray:
    """[LOOKBACK + 1, A] closes: the decision bar is the last one."""
    if request.param == "sample":
        return np.asarray(request.getfixturevalue("sample_market").close)[-(LOOKBACK + 1):]
    n_assets, seed = {"synthetic-8": (8, 0), "synthetic-20": (20, 1)}[request.param]
    return _synthetic_close(n_assets, seed)


def _ours(method: str, close: np.ndarray) -> np.ndarray:
    c = torch.tensor(close)
    bars = torch.tensor([[len(close) - 1]])
    growth = torch.ones(1, 1, close.shape[1], dtype=torch.float64)
    return risk.risk_based(method, c, bars, growth, False, lookback=LOOKBACK, every=1)[0, 0].numpy()


def _returns(close: np.ndarray) -> np.ndarray:
    return close[1:] / close[:-1] - 1.0


def _fit(model, x: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skfolio's notices about solver settings and deprecations
        return model.fit(x)


def _lw_cov(x: np.ndarray) -> np.ndarray:
    return LedoitWolf().fit(x).covariance_


def _bayes_stein() -> ShrunkMu:
    # vol_weighted_target: the target is the minimum-variance portfolio's mean (Jorion's), not the grand mean.
    return ShrunkMu(covariance_estimator=LedoitWolf(), vol_weighted_target=True, method=ShrunkMuMethods.BAYES_STEIN)


def test_min_variance_matches_skfolio(close):
    """Long-only, fully invested minimum variance of the Ledoit-Wolf covariance: skfolio ``MeanRisk`` (MINIMIZE_RISK,
    VARIANCE). Observed max |dw|: 5e-7 (8 assets), 5e-8 (20), 4.5e-7 (sample); 2.4e-5, 1.9e-4, 1.0e-4 with Clarabel's
    default tolerances, where skfolio's variance is above ours."""
    x = _returns(close)
    sk = _fit(MeanRisk(objective_function=ObjectiveFunction.MINIMIZE_RISK, risk_measure=skfolio.RiskMeasure.VARIANCE,
                       prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()), solver_params=TIGHT),
              x).weights_
    w = _ours("min_variance", close)
    np.testing.assert_allclose(w, sk, rtol=0, atol=WEIGHT_ATOL)
    cov = _lw_cov(x)
    assert w @ cov @ w <= sk @ cov @ sk * (1 + 1e-12)


def test_equal_risk_contribution_matches_skfolio(close):
    """ERC of the Ledoit-Wolf covariance: skfolio ``RiskBudgeting`` (VARIANCE, equal budgets). Observed max |dw|:
    3e-8 (8 assets), 2e-8 (20), 4e-7 (sample); up to 8e-6 with Clarabel's defaults. Our risk contributions are equal
    to 1e-12 of the total; skfolio's to its tolerance."""
    x = _returns(close)
    sk = _fit(RiskBudgeting(risk_measure=skfolio.RiskMeasure.VARIANCE,
                            prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf()), solver_params=TIGHT),
              x).weights_
    w = _ours("erc", close)
    np.testing.assert_allclose(w, sk, rtol=0, atol=WEIGHT_ATOL)
    cov = _lw_cov(x)

    def spread(v):
        rc = v * (cov @ v)
        return np.ptp(rc / rc.sum())

    assert spread(w) < 1e-12 and spread(w) <= spread(sk)


def test_bayes_stein_mean_matches_skfolio(close):
    """Jorion's Bayes-Stein mean with the Ledoit-Wolf covariance against skfolio's ``ShrunkMu(BAYES_STEIN,
    vol_weighted_target=True)``: the same formula (n = the number of returns, not n - 1; the target is the
    minimum-variance portfolio's mean; both use the covariance they are given rather than Jorion's
    (n - 1) / (n - A - 2) scaled sample covariance), so it agrees to rounding (observed 3e-16 relative)."""
    x = _returns(close)
    valid = torch.ones(1, LOOKBACK, dtype=torch.bool)
    cov, mean, _ = risk.ledoit_wolf(torch.tensor(x)[None], valid)
    ours = risk.bayes_stein_mean(cov, mean, torch.tensor([float(LOOKBACK)]))[0].numpy()
    sk = _bayes_stein().fit(x).mu_
    np.testing.assert_allclose(ours, sk, rtol=1e-12, atol=1e-12 * np.abs(sk).max())


def test_max_sharpe_matches_skfolio(close):
    """Long-only max Sharpe ratio (risk-free rate 0) with the Ledoit-Wolf covariance and the Bayes-Stein mean (the
    same moments on both sides: ``test_bayes_stein_mean_matches_skfolio``): skfolio ``MeanRisk`` (MAXIMIZE_RATIO,
    VARIANCE: the Sharpe ratio, by Charnes-Cooper). The windows hold 3 of 8, 6 of 20 and 2 of 4 assets. Observed max
    |dw|: 4.6e-6 (8 assets), 1.1e-6 (20), 1.7e-6 (sample); up to 1.0e-4 with Clarabel's defaults. Our Sharpe ratio
    is the higher one in every case."""
    x = _returns(close)
    prior = EmpiricalPrior(mu_estimator=_bayes_stein(), covariance_estimator=LedoitWolf())
    model = _fit(MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RATIO,
                          risk_measure=skfolio.RiskMeasure.VARIANCE, prior_estimator=prior, solver_params=TIGHT), x)
    sk = model.weights_
    w = _ours("max_sharpe", close)
    np.testing.assert_allclose(w, sk, rtol=0, atol=WEIGHT_ATOL)
    mu, cov = model.prior_estimator_.return_distribution_.mu, model.prior_estimator_.return_distribution_.covariance

    def sharpe(v):
        return mu @ v / np.sqrt(v @ cov @ v)

    assert sharpe(w) >= sharpe(sk) * (1 - 1e-12)


class _DistanceOfDistances(BaseDistance):
    """Lopez de Prado's clustering input: the Euclidean distance between the columns of the correlation distance
    d = sqrt((1 - rho) / 2). skfolio's distances stop at d (``PearsonDistance``)."""

    def __init__(self) -> None:
        pass

    def fit(self, X, y=None):
        self.codependence_ = np.corrcoef(np.asarray(X), rowvar=False)
        d = np.sqrt(np.clip((1.0 - self.codependence_) / 2.0, 0.0, None))
        self.distance_ = np.sqrt(((d[:, None, :] - d[None, :, :]) ** 2).sum(-1))
        return self


def _single_linkage_hrp(distance: BaseDistance | None) -> HierarchicalRiskParity:
    """skfolio's HRP with single linkage and the leaves in scipy's order (``optimal_ordering=False``)."""
    seriation = HierarchicalSeriation(
        hierarchical_clustering_estimator=HierarchicalClustering(linkage_method=LinkageMethod.SINGLE),
        optimal_ordering=False)
    return HierarchicalRiskParity(risk_measure=skfolio.RiskMeasure.VARIANCE, distance_estimator=distance,
                                  seriation_estimator=seriation)


def test_hrp_matches_skfolio_given_the_papers_distance(close):
    """HRP: single linkage, the dendrogram's leaf order as scipy returns it, recursive bisection by inverse-variance
    cluster variances. skfolio's ``HierarchicalRiskParity`` differs by convention in three ways: it clusters the
    correlation distance d itself, not the paper's Euclidean distance between the columns of d (the "distance of
    distances" we use); its default linkage is Ward; and by default it reorders the leaves optimally
    (``optimal_ordering=True``). With skfolio given single linkage, no reordering and the paper's distance (a
    ``BaseDistance`` written here), the leaf orders are the same and the weights agree to rounding (observed 1.0e-12
    at most: no iterative solver on either side; the variance normalisation, n or n - 1, cancels in the bisection). With
    skfolio's d and single linkage the tree is the same on the 8-asset window but not on the 20-asset one, where the
    weights differ by up to 1.9e-2; with all of skfolio's defaults they differ by up to 8.1e-2 (8 assets) and 1.9e-2
    (20). On the four-asset sample every convention gives the same weights."""
    x = _returns(close)
    w = _ours("hrp", close)
    model = _fit(_single_linkage_hrp(_DistanceOfDistances()), x)
    np.testing.assert_allclose(w, model.weights_, rtol=0, atol=1e-10)
