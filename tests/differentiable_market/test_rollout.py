import torch

from differentiable_market.config import PolicyConfig
from differentiable_market.env import drift
from differentiable_market.policy import DirichletGRUPolicy
from differentiable_market.rollout import deterministic_weights, generate_paths, mean_weights


def _setup(include_cash: bool, cash_target: str = "share"):
    """A flat policy with full targets; by default the cash target is the Dirichlet's own share, so the weights
    held are the sampled targets themselves."""
    torch.manual_seed(0)
    cfg = PolicyConfig(architecture="flat", action="target", hidden_size=16, head_hidden=8, cash_target=cash_target)
    policy = DirichletGRUPolicy(cfg, 3, 4, include_cash)
    with torch.no_grad():
        policy.head_held.weight.normal_()  # make the held weights matter
        policy.head_out.weight.normal_()  # the zero init would make every action the same
    feats = torch.randn(2, 10, 3, 4)
    growth = torch.exp(torch.randn(2, 10, 3 + include_cash) * 0.02)
    if include_cash:
        growth[..., -1] = 1.0
    return policy, feats, growth


def test_paths_are_on_the_simplex_and_held_weights_are_the_observed_drift():
    policy, feats, growth = _setup(include_cash=True)
    proj = policy.state_projection(policy.encode(feats))
    gen = torch.Generator().manual_seed(1)
    paths = generate_paths(policy, proj, growth, 3, True, gen)
    assert paths.weights.shape == (2, 4, 10, 4)
    torch.testing.assert_close(paths.weights.sum(-1), torch.ones(2, 4, 10))
    assert bool((paths.weights > 0).all())
    # starts in cash, then holds the drift of the previous target
    torch.testing.assert_close(paths.held[:, :, 0], torch.tensor([0.0, 0, 0, 1]).expand(2, 4, 4))
    torch.testing.assert_close(paths.held[:, :, 1:], drift(paths.weights[:, :, :-1], growth[:, None, :-1]))


def test_teacher_forcing_reproduces_the_mean_path():
    policy, feats, growth = _setup(include_cash=False)
    proj = policy.state_projection(policy.encode(feats))
    paths = generate_paths(policy, proj, growth, 2, True, torch.Generator().manual_seed(0))
    alpha = policy.concentrations(proj[:, None], paths.held)
    torch.testing.assert_close(mean_weights(alpha[:, 2]), paths.weights[:, 2])


def test_same_generator_seed_same_samples():
    policy, feats, growth = _setup(include_cash=False)
    proj = policy.state_projection(policy.encode(feats))
    a = generate_paths(policy, proj, growth, 3, False, torch.Generator().manual_seed(5)).weights
    b = generate_paths(policy, proj, growth, 3, False, torch.Generator().manual_seed(5)).weights
    assert torch.equal(a, b)


def test_deterministic_weights_do_not_look_ahead():
    policy, feats, growth = _setup(include_cash=True)
    w = deterministic_weights(policy, feats, growth, include_cash=True)
    feats2, growth2 = feats.clone(), growth.clone()
    feats2[:, 7:] += 5.0  # features of bar t may move decision t, so perturb from bar 7
    growth2[:, 6:] *= 1.5  # growth of decision t is realised after t; it may only affect decisions after t
    w2 = deterministic_weights(policy, feats2, growth2, include_cash=True)
    torch.testing.assert_close(w[:, :7], w2[:, :7], rtol=0, atol=0)
    assert not torch.allclose(w[:, 7:], w2[:, 7:])


def test_cpu_dirichlet_sampler_matches_the_dirichlet_moments_and_its_seed():
    from differentiable_market.rollout import dirichlet_sampler

    alpha = torch.tensor([0.5, 1.0, 3.0, 20.0]).expand(200_000, 4).contiguous()
    draws = dirichlet_sampler(torch.Generator().manual_seed(0), torch.device("cpu"))(alpha)
    x = draws / draws.sum(-1, keepdim=True)
    a0 = float(alpha[0].sum())
    mean = alpha[0] / a0
    var = mean * (1 - mean) / (a0 + 1)  # Dirichlet marginal variance
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=4 * float(var.max().sqrt()) / 200_000**0.5)
    torch.testing.assert_close(x.var(0), var, rtol=0.03, atol=0)
    again = dirichlet_sampler(torch.Generator().manual_seed(0), torch.device("cpu"))(alpha)
    assert torch.equal(draws, again)


def _mask(b: int = 2, t: int = 10) -> torch.Tensor:
    """Asset mask [B, T, 3]: asset 0 lists at bar 4, asset 1 is gone from bar 6, asset 2 never trades."""
    m = torch.ones(b, t, 3, dtype=torch.bool)
    m[:, :4, 0] = False
    m[:, 6:, 1] = False
    m[:, :, 2] = False
    return m


def test_masked_rollouts_put_exactly_zero_on_untradeable_assets_and_score_the_subset_dirichlet():
    from differentiable_market import dirichlet
    from differentiable_market.env import tradeable_columns

    policy, feats, growth = _setup(include_cash=True)
    cols = tradeable_columns(_mask(), include_cash=True)
    proj = policy.state_projection(policy.encode(feats))
    paths = generate_paths(policy, proj, growth, 3, True, torch.Generator().manual_seed(1), tradeable=cols)
    w = paths.weights
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 10))
    assert bool((w[..., 2] == 0).all()) and bool((w[:, :, :4, 0] == 0).all()) and bool((w[:, :, 6:, 1] == 0).all())
    assert bool((w[:, :, 4:6, :2] > 0).all()) and bool((w[..., -1] > 0).all())
    # The mean path is the mean of the Dirichlet of the tradeable columns; teacher forcing reproduces it.
    with torch.no_grad():
        alpha = policy.concentrations(proj[:, None], paths.held)
    torch.testing.assert_close(mean_weights(alpha[:, 3] * cols), w[:, 3])
    logp, ent, kl = dirichlet.masked_log_prob_entropy_kl(alpha[:, :3], paths.targets[:, :3], alpha[:, :3],
                                                         cols[:, None])
    assert bool(torch.isfinite(logp).all() and torch.isfinite(ent).all()) and float(kl.abs().max()) < 1e-5


def test_with_the_excess_cash_target_the_weights_held_are_the_excess_map_of_the_sampled_targets():
    from differentiable_market.actions import excess_cash
    from differentiable_market.env import tradeable_columns

    policy, feats, growth = _setup(include_cash=True, cash_target="excess")
    cols = tradeable_columns(_mask(), include_cash=True)
    proj = policy.state_projection(policy.encode(feats))
    paths = generate_paths(policy, proj, growth, 3, True, torch.Generator().manual_seed(1), tradeable=cols)
    torch.testing.assert_close(paths.weights, excess_cash(paths.targets))
    assert bool((paths.weights[..., 2] == 0).all())  # untradeable columns stay at zero
    assert bool((paths.weights[..., -1] == 0).any()) and bool((paths.weights[..., -1] > 0).any())


def test_masked_deterministic_weights_do_not_look_ahead_and_ignore_untradeable_features():
    policy, feats, growth = _setup(include_cash=True)
    mask = _mask()
    feats = feats * mask[..., None]  # features are 0 where not tradeable (features.compute_features)
    w = deterministic_weights(policy, feats, growth, include_cash=True, tradeable=mask)
    assert bool((w[..., 2] == 0).all()) and bool((w[:, :4, 0] == 0).all()) and bool((w[:, 6:, 1] == 0).all())
    feats2, growth2, mask2 = feats.clone(), growth.clone(), mask.clone()
    feats2[:, 7:] += 5.0
    growth2[:, 6:] *= 1.5
    mask2[:, 7:, 1] = True  # a later listing (or a halt's end) changes nothing before it
    w2 = deterministic_weights(policy, feats2, growth2, include_cash=True, tradeable=mask2)
    torch.testing.assert_close(w[:, :7], w2[:, :7], rtol=0, atol=0)
    assert not torch.allclose(w[:, 7:], w2[:, 7:])


def test_a_masked_ensemble_of_one_is_its_member_between_rebalancing_bars_too():
    """Asset 1 stops being tradeable at bar 6, between the rebalancing bars 4 and 8: the ensemble sells it there,
    as a single policy's path does, instead of carrying it to the next rebalancing bar."""
    from differentiable_market.rollout import ensemble_weights

    policy, feats, growth = _setup(include_cash=True)
    mask = _mask()
    feats = feats * mask[..., None]
    single = deterministic_weights(policy, feats, growth, include_cash=True, rebalance_every=4, tradeable=mask)
    ens = ensemble_weights([policy], [feats], growth, rebalance_every=4, tradeable=mask)
    assert bool((ens[:, 6:, 1] == 0).all()) and bool((ens[:, 5, 1] > 0).all())
    torch.testing.assert_close(ens, single, rtol=0, atol=1e-6)
