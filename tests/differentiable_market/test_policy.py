import pytest
import torch

from differentiable_market.config import PolicyConfig
from differentiable_market.policy import DirichletGRUPolicy


def _policy(include_cash: bool = False, **kw) -> DirichletGRUPolicy:
    torch.manual_seed(0)
    return DirichletGRUPolicy(PolicyConfig(architecture="flat", action="target", hidden_size=16, head_hidden=8, **kw), n_assets=3, n_features=5,
                              include_cash=include_cash)


def test_concentrations_shape_floor_and_cap():
    policy = _policy(include_cash=True)
    with torch.no_grad():
        policy.head_out.bias.fill_(1e4)  # would overflow the cap
    feats = torch.randn(2, 7, 3, 5)
    proj = policy.state_projection(policy.encode(feats))
    alpha = policy.concentrations(proj[:, None], torch.full((2, 4, 7, 4), 0.25))
    assert alpha.shape == (2, 4, 7, 4)
    assert alpha.dtype == torch.float32
    assert float(alpha.detach().max()) == policy.cfg.alpha_max
    with torch.no_grad():
        policy.head_out.bias.fill_(-1e4)
    alpha = policy.concentrations(proj[:, None], torch.full((2, 4, 7, 4), 0.25))
    torch.testing.assert_close(alpha, torch.full_like(alpha, policy.cfg.alpha_floor))


@pytest.mark.parametrize("encoder", ["mingru", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_is_causal(encoder, layers):
    policy = _policy(encoder=encoder, num_layers=layers)
    feats = torch.randn(1, 12, 3, 5)
    later = feats.clone()
    later[:, 6:] += torch.randn_like(later[:, 6:]) * 10
    h1, h2 = policy.encode(feats), policy.encode(later)
    torch.testing.assert_close(h1[:, :6], h2[:, :6], rtol=0, atol=0)
    assert not torch.allclose(h1[:, 6:], h2[:, 6:])


@pytest.mark.parametrize("encoder", ["mingru", "gru"])
def test_gradient_checkpointing_gives_the_same_gradients(encoder):
    feats = torch.randn(2, 9, 3, 5)
    grads = []
    for ckpt in (False, True):
        policy = _policy(gradient_checkpointing=ckpt, encoder=encoder)
        policy.encode(feats).square().sum().backward()
        grads.append([p.grad.clone() for p in policy.encoder.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("encoder", "expected"),
    [
        ("gru", {"encoder.gru.weight_ih_l0", "encoder.gru.weight_hh_l0"}),
        ("mingru", {"encoder.layers.0.gate.weight", "encoder.layers.0.candidate.weight"}),
    ],
)
def test_hidden_matrices_are_two_dimensional_hidden_weights(encoder, expected):
    policy = _policy(encoder=encoder)
    params = dict(policy.named_parameters())
    names = policy.hidden_matrix_names()
    assert names == expected | {"head_state.weight"}
    assert all(params[n].ndim == 2 for n in names)


def test_gru_state_dicts_from_before_selectable_encoders_still_load():
    policy = _policy(encoder="gru")
    legacy = {k.replace("encoder.gru.", "gru."): v.clone() for k, v in policy.state_dict().items()}
    assert "gru.weight_hh_l0" in legacy
    fresh = _policy(encoder="gru")
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(legacy)
    for (name, a), b in zip(policy.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def test_chunked_teacher_forced_head_matches_the_plain_head_and_finite_differences(monkeypatch):
    import differentiable_market.policy.head as policy_module

    policy = _policy(include_cash=True).double()
    with torch.no_grad():
        policy.head_out.weight.normal_()
        policy.head_held.weight.normal_()
        policy.head_out.bias.fill_(1.5)  # some concentrations at the cap, some below: both gradient branches
    monkeypatch.setattr(policy_module, "HEAD_CHUNK_ELEMENTS", 40)  # several chunks of the batch
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(5, 1, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    held = torch.rand(5, 3, 7, 4, generator=gen, dtype=torch.float64)
    params = (policy.head_held.weight, policy.head_out.weight, policy.head_out.bias)
    plain = policy_module._head(proj, held, *params, policy.cfg.alpha_floor, 3.0)
    chunked = policy_module._ChunkedHead.apply(proj, held, *params, policy.cfg.alpha_floor, 3.0)
    assert bool((plain == 3.0).any()) and bool((plain < 3.0).any())
    torch.testing.assert_close(chunked, plain, rtol=1e-14, atol=0)
    torch.testing.assert_close(policy.concentrations(proj, held),
                               policy_module._head(proj, held, *params, policy.cfg.alpha_floor, policy.cfg.alpha_max))
    assert torch.autograd.gradcheck(
        lambda p, *w: policy_module._ChunkedHead.apply(p, held, *w, policy.cfg.alpha_floor, 3.0), (proj, *params)
    )
