"""Action designs: the fill rule against an independent share-counting simulation, the rollout loop against the
differentiable path, exact log-probabilities of what was sampled, gradients, and closed forms of untrained policies."""

import numpy as np
import pytest
import torch

from differentiable_market import actions, dirichlet
from differentiable_market.checkpoint import _with_legacy_defaults
from differentiable_market.config import EnvConfig, ExperimentConfig, PolicyConfig, TrainConfig, config_from_dict
from differentiable_market.env import account, decision_growth, initial_holdings, observed_growth
from differentiable_market.errors import ConfigError
from differentiable_market.policy import make_policy
from differentiable_market.rollout import deterministic_weights, ensemble_weights, generate_paths, mean_weights
from differentiable_market.synthetic import random_walk_market
from differentiable_market.trainer import Trainer, prepare_market

F64 = torch.float64
CPU = torch.device("cpu")


def _prices(seed: int, n_bars: int, n_assets: int) -> tuple[np.ndarray, np.ndarray]:
    """Open and close [T, A]: a close random walk with an overnight gap before every open."""
    rng = np.random.default_rng(seed)
    close = np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_assets)), axis=0)) * rng.uniform(5, 50, n_assets)
    prev = np.vstack([close[:1], close[:-1]])
    return prev * np.exp(rng.normal(0.0, 0.01, (n_bars, n_assets))), close


def _excess_cash(u: np.ndarray) -> np.ndarray:
    """The excess cash target written out for one bar with every column tradeable (independent of
    actions.excess_cash): cash (c - 1/n)^+ / (1 - 1/n), each asset its share of the assets times the rest."""
    n = len(u)
    cash = max(u[-1] - 1.0 / n, 0.0) / (1.0 - 1.0 / n)
    return np.array([u[i] / (1.0 - u[-1]) * (1.0 - cash) for i in range(n - 1)] + [cash])


def _rule(action: str, u: np.ndarray, h: np.ndarray, s: float, cash_excess: bool = False) -> np.ndarray:
    """The desired weights of the action, written out per asset (independent of actions.desired)."""
    if cash_excess:
        u = _excess_cash(u)
    if action == "partial":
        return np.array([h[i] + s * (u[i] - h[i]) for i in range(len(u))])
    # band: the nearest point of {lo <= w <= hi, sum w = 1} is clip(h + lam, lo, hi); lam by bisection
    b = s / len(u)
    lo, hi = np.maximum(u - b, 0.0), u + b
    if cash_excess:  # no more cash than the target's
        hi[-1] = u[-1]
    left, right = -2.0, 2.0
    for _ in range(200):
        mid = 0.5 * (left + right)
        left, right = (mid, right) if np.clip(h + mid, lo, hi).sum() < 1.0 else (left, mid)
    return np.clip(h + 0.5 * (left + right), lo, hi)


def _share_counting(open_, close, u, action, s, execution, include_cash, cost_rate, every, cash_excess=False):
    """Wealth after each decision's holding period, from wealth 1 in cash (or nothing held without cash), keeping
    share counts: at each decision the holdings valued at its close give the trade a - h (fractions of wealth),
    which is applied at the fill to the holdings valued at the fill price; the fee is paid on the traded value."""
    n_dec, n_out = u.shape
    fill_px = open_[1:1 + n_dec] if execution == "open" else close[:n_dec]
    mark_px = open_[2:2 + n_dec] if execution == "open" else close[1:1 + n_dec]
    seen_px = close[:n_dec]  # what a decision after the close of bar t values the holdings at
    if include_cash:
        fill_px, mark_px, seen_px = (np.hstack([x, np.ones((n_dec, 1))]) for x in (fill_px, mark_px, seen_px))
    n_risky = n_out - int(include_cash)
    shares = np.zeros(n_out)
    cash0 = np.zeros(n_out)
    if include_cash:
        cash0[-1] = 1.0
    wealth = np.empty(n_dec)
    for t in range(n_dec):
        if t == 0:
            p = h = cash0
            value = 1.0
        else:
            value = float((shares * fill_px[t]).sum())
            p = shares * fill_px[t] / value
            h = shares * seen_px[t] / float((shares * seen_px[t]).sum())
        if t % every:
            w = p
        else:
            w = np.maximum(p + _rule(action, u[t], h, s, cash_excess) - h, 0.0)
            w = w / w.sum()
        traded = sum(abs(w[i] - p[i]) for i in range(n_risky))
        after_fee = value * (1.0 - cost_rate * traded)
        shares = w * after_fee / fill_px[t]
        wealth[t] = float((shares * mark_px[t]).sum())
    return wealth


@pytest.mark.parametrize("action", ["partial", "band"])
@pytest.mark.parametrize("execution", ["open", "close"])
@pytest.mark.parametrize("include_cash,cash_excess", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("every", [1, 3])
def test_each_action_accounts_as_share_counting(action, execution, include_cash, cash_excess, every):
    open_, close = _prices(0, 40, 4)
    o, c = torch.as_tensor(open_), torch.as_tensor(close)
    g = decision_growth(o, c, execution, include_cash)
    seen = observed_growth(o, c, execution, include_cash)
    u = torch.as_tensor(np.random.default_rng(1).dirichlet(np.ones(g.shape[-1]), size=g.shape[0]))
    s = torch.tensor([0.3], dtype=F64)
    initial = initial_holdings(g.shape[-1], include_cash, dtype=F64)
    w = actions.execute_path(action, u, g, seen, initial, s, every, cash_excess=cash_excess)
    acc = account(w, g, initial, 0.002, include_cash)
    ours = torch.exp(torch.cumsum(acc.log_growth, 0)).numpy()
    ref = _share_counting(open_, close, u.numpy(), action, 0.3, execution, include_cash, 0.002, every, cash_excess)
    if cash_excess:  # the draws do put cash above its uniform share on some bars, and below it on others
        assert bool((u[:, -1] > 0.25).any()) and bool((u[:, -1] < 0.2).any())
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    if every > 1:  # bars off the schedule do not trade at all
        off = torch.arange(len(w)) % every != 0
        assert float(acc.turnover[off].abs().max()) < 1e-15


def test_full_targets_are_the_targets():
    u = torch.softmax(torch.randn(5, 3, dtype=F64), -1)
    g = torch.ones(5, 3, dtype=F64)
    assert actions.execute_path("target", u, g, g, torch.zeros(3, dtype=F64), None) is u


@pytest.mark.parametrize("action", ["partial", "band"])
def test_a_decision_not_to_trade_costs_nothing(action):
    """Targets equal to the holdings each decision sees: no trade and no fee (to rounding), in open execution where
    the overnight gap moves the holdings between the decision and the fill."""
    open_, close = _prices(3, 12, 3)
    o, c = torch.as_tensor(open_), torch.as_tensor(close)
    g, seen = decision_growth(o, c, "open", False), observed_growth(o, c, "open", False)
    s = torch.tensor([0.5], dtype=F64)
    h0 = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    p = h = h0
    fills = []
    for t in range(len(g)):
        w = actions.fill(action, h.clone(), h, p, s)
        fills.append(w)
        p, h = w * g[t] / (w * g[t]).sum(), w * seen[t] / (w * seen[t]).sum()
    acc = account(torch.stack(fills), g, h0, 0.001, False)
    assert float(acc.turnover.max()) < 1e-14 and float(acc.cost.max()) < 1e-17
    assert float((g - seen).abs().max()) > 1e-3  # the fill holdings did differ from what the decisions saw


def test_partial_rebalancing_of_an_untrained_policy_converges_to_equal_weight_in_closed_form():
    """An untrained policy's target is equal weight over the assets exactly (no cash: the excess cash target); with
    constant prices and rate r the holdings are EW + (1 - r)^(t+1) (cash - EW) after fill t."""
    policy = make_policy(PolicyConfig(action="partial", hidden_size=8, head_hidden=8), 3, 5, True)
    r = float(policy.action_strength().detach())
    assert r == pytest.approx(actions.INITIAL_STRENGTH["partial"], abs=1e-6)
    t_len = 12
    ones = torch.ones(1, t_len, 4)
    w = deterministic_weights(policy, torch.randn(1, t_len, 3, 5), ones, True, growth=ones)[0].double()
    ew, cash = torch.tensor([1 / 3, 1 / 3, 1 / 3, 0], dtype=F64), torch.tensor([0, 0, 0, 1.0], dtype=F64)
    expected = torch.stack([ew + (1 - r) ** (t + 1) * (cash - ew) for t in range(t_len)])
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)


def test_band_of_an_untrained_policy_stops_trading_once_inside_the_band():
    """With the Dirichlet's own cash share as the cash target (an untrained policy aims at 1/5 in cash)."""
    policy = make_policy(PolicyConfig(action="band", hidden_size=8, head_hidden=8, cash_target="share"), 4, 5, True)
    t_len = 10
    ones = torch.ones(1, t_len, 5)
    w = deterministic_weights(policy, torch.randn(1, t_len, 4, 5), ones, True, growth=ones)[0].double()
    b = float(policy.action_strength().detach()) / 5
    assert float((w[-1] - 0.2).abs().max()) <= b + 1e-6  # every holding inside the band around equal weight
    turnover = account(w, torch.ones(t_len, 5, dtype=F64), initial_holdings(5, True, dtype=F64), 0.001, True).turnover
    assert float(turnover[0]) > 0 and float(turnover[-3:].abs().max()) < 1e-6


@pytest.mark.parametrize("action", ["partial", "band"])
@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_rollout_loop_matches_the_differentiable_path_and_logp_is_of_the_sampled_target(action, architecture):
    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(action=action, architecture=architecture, hidden_size=16, head_hidden=8,
                                      asset_hidden=8, asset_head_hidden=8), 3, 4, True)
    with torch.no_grad():
        policy.head_out.weight.normal_()
        if hasattr(policy, "head_held"):  # the mlp heads (the affine head reads h through head_out)
            policy.head_held.weight.normal_()
    open_, close = _prices(2, 14, 3)
    o, c = torch.as_tensor(open_), torch.as_tensor(close)
    g = decision_growth(o, c, "open", True).float()[None].expand(2, -1, -1)
    seen = observed_growth(o, c, "open", True).float()[None].expand(2, -1, -1)
    proj = policy.state_projection(policy.encode(torch.randn(2, g.shape[1], 3, 4)))
    paths = generate_paths(policy, proj, seen, 3, True, torch.Generator().manual_seed(0), growth=g)
    s = policy.action_strength()
    for row in range(4):  # every sampled path and the mean path: the loop's fills are execute_path's
        again = actions.execute_path(action, paths.targets[:, row], g, seen, initial_holdings(4, True), s,
                                       cash_excess=policy.cash_excess)
        torch.testing.assert_close(paths.weights[:, row], again, rtol=0, atol=1e-6)
    alpha = policy.concentrations(proj[:, None], paths.held)
    torch.testing.assert_close(mean_weights(alpha[:, 3]), paths.targets[:, 3])
    # GRPO scores the sampled targets, whose density is an exact Dirichlet; the fills are not samples
    logp = dirichlet.log_prob(alpha[:, :3].double(), paths.targets[:, :3].double())
    ref = torch.distributions.Dirichlet(alpha[:, :3].double()).log_prob(paths.targets[:, :3].double())
    torch.testing.assert_close(logp, ref)
    assert not torch.allclose(paths.targets, paths.weights)


def _hard_bands(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Holdings and bands [rows, A] that make the projection's search work: empty and one-hot holdings, holdings at
    equal weight or exactly on the target, bands from 1e-4 of equal weight to nearly all of it, sparse targets whose
    lower bounds clamp at 0 (knots that tie), from 2 to 257 assets."""
    g = torch.Generator().manual_seed(11)
    rows = []
    for n in (2, 3, 9, 257):
        u = torch.distributions.Dirichlet(torch.full((n,), 0.1)).sample((24,)).to(dtype)
        holdings = [torch.zeros_like(u), u.clone(), torch.full_like(u, 1.0 / n),
                    torch.nn.functional.one_hot(torch.randint(0, n, (24,), generator=g), n).to(dtype),
                    torch.where(torch.rand(u.shape, generator=g, dtype=dtype) < 0.5, u, torch.zeros_like(u))]
        for h in holdings:
            for beta in (1e-4, 0.25, 0.999):
                b = beta / n
                rows.append((h, (u - b).clamp_min(0.0), u + b))
    return rows


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_band_projection_is_the_exact_nearest_point_of_the_band(dtype, monkeypatch):
    monkeypatch.setattr(actions, "NEWTON_MIN_COLUMNS", 1)  # the Newton route at every width
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for h, lo, hi in _hard_bands(dtype):
        w = actions.band_projection(h, lo, hi)
        lam = actions._sorted_shift(h, lo, hi)  # the crossing found from every knot in order: no search
        torch.testing.assert_close(w, torch.clamp(h + lam, lo, hi), rtol=0, atol=tol)
        assert float((w.sum(-1) - 1).abs().max()) <= tol
        assert bool(((w >= lo - tol) & (w <= hi + tol)).all())
        # the differentiable route (recomputed from the free coordinates) gives the same point
        h_grad = h.clone().requires_grad_()
        torch.testing.assert_close(actions.band_projection(h_grad, lo, hi), w, rtol=0, atol=tol)
    # an independent bisection on one float64 row of each shape
    for h, lo, hi in _hard_bands(F64)[::7]:
        for row in range(0, h.shape[0], 5):
            left, right = -2.0, 2.0
            for _ in range(200):
                mid = 0.5 * (left + right)
                if np.clip(h[row].numpy() + mid, lo[row].numpy(), hi[row].numpy()).sum() < 1.0:
                    left = mid
                else:
                    right = mid
            ref = np.clip(h[row].numpy() + 0.5 * (left + right), lo[row].numpy(), hi[row].numpy())
            np.testing.assert_allclose(actions.band_projection(h[row], lo[row], hi[row]).numpy(), ref, atol=1e-12)


def test_band_projection_falls_back_to_the_sorted_knots_when_newton_runs_out(monkeypatch):
    h, lo, hi = _hard_bands(F64)[-1]
    expected = actions.band_projection(h, lo, hi)
    monkeypatch.setattr(actions, "NEWTON_MIN_COLUMNS", 1)
    monkeypatch.setattr(actions, "NEWTON_ITERATIONS", 1)  # a row is solved at the earliest on step 2: all sort
    torch.testing.assert_close(actions.band_projection(h, lo, hi), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("action", ["partial", "band"])
def test_execute_path_gradients_match_finite_differences(action):
    open_, close = _prices(4, 8, 3)
    o, c = torch.as_tensor(open_), torch.as_tensor(close)
    g, seen = decision_growth(o, c, "open", True), observed_growth(o, c, "open", True)
    # Targets through a softmax, so that perturbations stay on the simplex: the band's projection lands on a corner of
    # the box whenever as many holdings are clamped up as down, where only moves along the simplex are smooth.
    logits = torch.randn(g.shape, dtype=F64, generator=torch.Generator().manual_seed(5)).requires_grad_()
    param = torch.tensor([0.05], dtype=F64, requires_grad=True)
    initial = initial_holdings(4, True, dtype=F64)

    def value(logits, param):
        w = actions.execute_path(action, torch.softmax(logits, -1), g, seen, initial, actions.strength(param))
        return account(w, g, initial, 0.001, True, smooth_eps=1e-4).log_growth.sum()

    assert torch.autograd.gradcheck(value, (logits, param))


def test_ensemble_of_one_is_the_member():
    torch.manual_seed(0)
    policy = make_policy(PolicyConfig(action="band", hidden_size=16, head_hidden=8), 3, 4, False)
    with torch.no_grad():
        policy.head_out.weight.normal_()
    open_, close = _prices(5, 20, 3)
    o, c = torch.as_tensor(open_), torch.as_tensor(close)
    g = decision_growth(o, c, "open", False).float()[None]
    seen = observed_growth(o, c, "open", False).float()[None]
    feats = torch.randn(1, g.shape[1], 3, 4)
    alone = deterministic_weights(policy, feats, seen, False, growth=g, rebalance_every=2)
    together = ensemble_weights([policy], [feats], seen, None, g, 2)
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)


@pytest.mark.parametrize("action", ["partial", "band"])
def test_trainer_learns_the_action_strength_and_is_reproducible(action):
    market = random_walk_market(300, 3, seed=0)
    cfg = ExperimentConfig(policy=PolicyConfig(action=action, hidden_size=16, head_hidden=16),
                           env=EnvConfig(train_cost_bps=30.0, rebalance_every=2),
                           train=TrainConfig(lookback=32, batch_windows=8, epochs=3, device="cpu", dtype="float32"))
    runs = []
    for _ in range(2):
        tensors, _ = prepare_market(cfg, market, CPU)
        trainer = Trainer(cfg, tensors, CPU)
        with torch.no_grad():  # targets away from equal weight, so that the band binds and its width matters
            trainer.policy.head_out.weight.normal_(generator=torch.Generator().manual_seed(0))
        before = trainer.policy.action_param.detach().clone()
        stats = torch.stack([trainer.step() for _ in range(3)])
        assert not torch.equal(trainer.policy.action_param.detach(), before)  # the pathwise gradient reaches it
        runs.append(stats)
    assert torch.equal(runs[0], runs[1])
    ev = trainer.evaluate("validation")
    assert np.isfinite(ev["policy"]["log_growth"])


def test_training_fee_is_charged_in_training_only():
    env = EnvConfig(cost_bps=10.0, train_cost_bps=25.0)
    assert env.cost_rate == pytest.approx(1e-3) and env.train_cost_rate == pytest.approx(2.5e-3)
    assert EnvConfig(cost_bps=7.0).train_cost_rate == pytest.approx(7e-4)
    with pytest.raises(ConfigError, match="train_cost_bps"):
        EnvConfig(train_cost_bps=-1.0)
    with pytest.raises(ConfigError, match="rebalance_every"):
        EnvConfig(rebalance_every=0)
    with pytest.raises(ConfigError, match="action"):
        PolicyConfig(action="hold")


def test_configs_written_before_actions_load_as_full_targets_every_bar():
    old = {"policy": {"architecture": "flat", "encoder": "mingru"}, "env": {"cost_bps": 5.0}}
    cfg = config_from_dict(ExperimentConfig, _with_legacy_defaults(old))
    assert cfg.policy.action == "target" and cfg.env.rebalance_every == 1 and cfg.env.train_cost_bps is None
    assert "action_param" not in dict(make_policy(cfg.policy, 2, 3, False).named_parameters())


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_an_untrained_policy_is_its_benchmark_equal_weight(architecture):
    """The head's output layer starts at zero weight, so every concentration is the same: the untrained target is
    a zero tilt from equal weight, and with full targets the policy IS the equal-weight benchmark, costs included."""
    market = random_walk_market(80, 5, seed=1)
    policy = make_policy(PolicyConfig(architecture=architecture, action="target", hidden_size=8, head_hidden=8,
                                      asset_hidden=8, asset_head_hidden=8), 5, 7, False)
    o, c = torch.tensor(market.open), torch.tensor(market.close)
    growth = decision_growth(o, c, "open", False)
    seen = observed_growth(o, c, "open", False).float()
    w = deterministic_weights(policy, torch.randn(1, growth.shape[0], 5, 7), seen[None], False,
                              growth=growth[None].float())[0].double()
    torch.testing.assert_close(w, torch.full_like(w, 0.2), rtol=0, atol=1e-7)
    h0 = initial_holdings(5, False, dtype=F64)
    ours = account(w / w.sum(-1, keepdim=True), growth, h0, 0.001, False).log_growth
    ew = account(torch.full_like(w, 0.2), growth, h0, 0.001, False).log_growth
    torch.testing.assert_close(ours, ew, rtol=0, atol=1e-12)


def test_the_excess_cash_target_holds_no_cash_at_the_uniform_share_and_all_cash_at_one():
    n = 5
    uniform = torch.full((n,), 1.0 / n, dtype=F64)
    torch.testing.assert_close(actions.excess_cash(uniform), torch.tensor([0.25, 0.25, 0.25, 0.25, 0.0], dtype=F64),
                               rtol=0, atol=1e-15)
    all_cash = torch.tensor([1e-9, 1e-9, 1e-9, 1e-9, 1.0 - 4e-9], dtype=F64)
    assert abs(float(actions.excess_cash(all_cash)[-1]) - 1.0) < 1e-8
    u = torch.as_tensor(np.random.default_rng(2).dirichlet(np.ones(n), size=200))
    out = actions.excess_cash(u)
    torch.testing.assert_close(out.sum(-1), torch.ones(200, dtype=F64), rtol=0, atol=1e-14)
    ref = torch.as_tensor(np.stack([_excess_cash(row) for row in u.numpy()]))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)
    # the assets keep their relative weights
    torch.testing.assert_close(out[:, :-1] / out[:, :-1].sum(-1, keepdim=True), u[:, :-1] / u[:, :-1].sum(-1, keepdim=True))


def test_the_excess_cash_target_counts_only_the_tradeable_columns():
    """Columns a listing mask zeroed are not in the uniform share: 2 tradeable assets and cash make it 1/3."""
    u = torch.tensor([0.0, 0.3, 0.0, 0.2, 0.5], dtype=F64)
    out = actions.excess_cash(u)
    cash = (0.5 - 1.0 / 3.0) / (1.0 - 1.0 / 3.0)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.6 * (1 - cash), 0.0, 0.4 * (1 - cash), cash], dtype=F64))
    only_cash = torch.tensor([0.0, 0.0, 1.0], dtype=F64)  # nothing tradeable but cash: all cash
    torch.testing.assert_close(actions.excess_cash(only_cash), only_cash)


def test_the_excess_cash_target_is_differentiable_above_the_uniform_share():
    """Finite differences of the map where cash is above its uniform share (the linear piece), float64."""
    u = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(actions.excess_cash, (u,))


@pytest.mark.parametrize("architecture", ["flat", "cross"])
@pytest.mark.parametrize("action", ["target", "band"])
def test_an_untrained_policy_with_cash_holds_equal_weight_over_the_assets(architecture, action):
    """With the excess cash target an untrained policy trading cash holds none: from all cash its first fill is
    equal weight over the assets (the band keeps no cash above the target), and full targets stay there. (The
    partial action's closed form from all cash is the test above.)"""
    market = random_walk_market(60, 4, seed=3)
    cfg = PolicyConfig(architecture=architecture, action=action, hidden_size=8, head_hidden=8, asset_hidden=8,
                       asset_head_hidden=8)
    policy = make_policy(cfg, 4, 7, True)
    assert policy.cash_excess
    o, c = torch.tensor(market.open), torch.tensor(market.close)
    growth = decision_growth(o, c, "open", True)
    seen = observed_growth(o, c, "open", True).float()
    w = deterministic_weights(policy, torch.randn(1, growth.shape[0], 4, 7), seen[None], True,
                              growth=growth[None].float())[0].double()
    assert float(w[:, -1].abs().max()) < 1e-7  # no cash at any bar
    if action == "target":
        torch.testing.assert_close(w[:, :-1], torch.full_like(w[:, :-1], 0.25), rtol=0, atol=1e-7)
    else:  # the first fill is equal weight; after it the holdings drift inside the band
        torch.testing.assert_close(w[0, :-1], torch.full_like(w[0, :-1], 0.25), rtol=0, atol=1e-7)
        b = float(policy.action_strength().detach()) / 5
        assert float((w[:, :-1] - 0.25).abs().max()) <= b + 1e-6


def test_configs_written_before_the_autocorrelation_features_keep_their_features():
    old = {"policy": {"architecture": "cross"},
           "features": {"return_windows": [1, 5, 20], "ma_windows": [5, 10], "cross_sectional": True}}
    cfg = config_from_dict(ExperimentConfig, _with_legacy_defaults(old))
    assert cfg.features.autocorr_windows == () and cfg.features.ma_windows == (5, 10)
    assert cfg.features.cross_sectional and ExperimentConfig().features.autocorr_windows == (20,)


def test_configs_written_before_the_excess_cash_target_keep_the_dirichlet_share():
    old = {"policy": {"architecture": "cross", "encoder": "mingru", "action": "band"}, "env": {"include_cash": True}}
    cfg = config_from_dict(ExperimentConfig, _with_legacy_defaults(old))
    assert cfg.policy.cash_target == "share" and not make_policy(cfg.policy, 3, 4, True).cash_excess
    assert PolicyConfig().cash_target == "excess"


def test_band_projection_takes_half_precision_holdings_on_the_cpu():
    """The compiled Newton loop reads float32 or float64; bfloat16 holdings (as under autocast) are read as float64
    and the shift comes back in their dtype, the projection still on the simplex to bfloat16's rounding."""
    h, lo, hi = (x.to(torch.bfloat16) for x in _hard_bands(torch.float32)[-1])
    w = actions.band_projection(h, lo, hi)
    assert w.dtype == torch.bfloat16
    assert float((w.float().sum(-1) - 1).abs().max()) < 0.02
    assert bool(((w >= lo) & (w <= hi)).all())
