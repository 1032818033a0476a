"""Strategies to compare a policy against, as causal target weights on the backtester's windows.

Modules: ``core`` (equal weight, buy and hold, OLMAR, inverse volatility, the cash baselines, single assets and the
best single asset in hindsight), ``olps`` (the online-portfolio-selection zoo), ``risk`` (risk-based portfolios),
``simplex`` (the solvers they share) and ``registry`` (every baseline by name with its family, and the sets that
``--baselines`` accepts).
"""

from .core import (OLMAR_EPS, OLMAR_WINDOW, VOL_LOOKBACK, best_single_hindsight, buy_and_hold, equal_weight,
                   equal_weight_with_cash, inverse_volatility, olmar, single_asset, volatility_target)
from .simplex import simplex_projection

__all__ = [
    "OLMAR_EPS", "OLMAR_WINDOW", "VOL_LOOKBACK", "best_single_hindsight", "buy_and_hold", "equal_weight",
    "equal_weight_with_cash", "inverse_volatility", "olmar", "simplex_projection", "single_asset",
    "volatility_target",
]
