"""The baseline registry: sets and names for --baselines, families, and every baseline's weights."""

import numpy as np
import pytest
import torch

from differentiable_market.baselines import registry
from differentiable_market.env import decision_growth
from differentiable_market.errors import ConfigError


def test_sets_resolve_in_report_order_with_equal_weight_always():
    assert registry.resolve("core") == ("equal_weight", "buy_and_hold", "olmar", "inverse_vol", "equal_weight_cash",
                                        "vol_target", "holds", "best_single_hindsight")
    olps = registry.resolve("olps")
    assert olps[0] == "equal_weight" and olps[-1] == "bcrp_hindsight"
    assert {"eg", "ons", "anticor", "pamr", "pamr1", "pamr2", "cwmr", "rmr", "corn", "up"} <= set(olps)
    assert registry.resolve("risk") == ("equal_weight", "min_variance", "erc", "hrp", "max_sharpe")
    assert set(registry.resolve("all")) == set(registry.ORDER)
    assert registry.resolve(" erc , core") == registry.resolve("core")[:6] + ("erc",) + registry.resolve("core")[6:]
    for bad in ("", "core,", "olmr"):
        with pytest.raises(ConfigError, match="--baselines: unknown name"):
            registry.resolve(bad)


def test_every_baseline_gives_simplex_weights_with_its_family():
    rng = np.random.default_rng(0)
    close = torch.tensor(100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(120, 3)), axis=0)))
    bars = torch.tensor([list(range(70, 100)), list(range(85, 115))])
    for cash in (False, True):
        g = decision_growth(close, close, "open", cash)[bars]
        inputs = registry.Inputs(close, bars, g, cash, ("A", "B", "C"), 5, 10.0, 20)
        seen = {}
        for name, label, kind, family, w in registry.generate("all", inputs):
            assert w.shape == (2, 30, 3 + cash), name
            assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(2, 30, dtype=w.dtype)), name
            assert label and family == registry.family_of(name), name
            assert (kind == "hindsight") == (family == "hindsight")
            seen[name] = family
        assert ("equal_weight_cash" in seen) == cash and ("vol_target" in seen) == cash
        assert seen["hold:B"] == "single" and seen["up"] == "olps" and seen["hrp"] == "risk"
