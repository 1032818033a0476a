import numpy as np
import pytest

from differentiable_market.synthetic import planted_signal_market


def _lag1(r: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(r[1:, j], r[:-1, j])[0, 1] for j in range(r.shape[1])])


def test_the_signal_assets_are_ar1_with_the_planted_coefficient_and_the_rest_are_not():
    m = planted_signal_market(20_000, 6, seed=3, autocorrelation=0.3, signal_assets=2)
    rho = _lag1(np.diff(np.log(m.close), axis=0))
    np.testing.assert_allclose(rho[:2], 0.3, atol=0.03)  # standard error ~ 1/sqrt(20000) = 0.007
    np.testing.assert_allclose(rho[2:], 0.0, atol=0.03)


def test_one_signal_asset_is_the_default_and_bad_counts_are_refused():
    a, b = planted_signal_market(200, 3, seed=0), planted_signal_market(200, 3, seed=0, signal_assets=1)
    np.testing.assert_array_equal(a.close, b.close)
    with pytest.raises(ValueError, match="signal_assets"):
        planted_signal_market(200, 3, seed=0, signal_assets=4)
