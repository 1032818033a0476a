import torch
from torch.distributions import Dirichlet, kl_divergence

from differentiable_market import dirichlet


def _alphas(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 5 + 0.1


def test_log_prob_matches_torch_distribution():
    alpha = _alphas(0, (6, 5))
    w = Dirichlet(alpha).sample()
    torch.testing.assert_close(dirichlet.log_prob(alpha, w), Dirichlet(alpha).log_prob(w), rtol=1e-10, atol=1e-10)


def test_entropy_matches_torch_distribution():
    alpha = _alphas(1, (7, 3))
    torch.testing.assert_close(dirichlet.entropy(alpha), Dirichlet(alpha).entropy(), rtol=1e-10, atol=1e-10)


def test_kl_matches_torch_and_is_zero_on_itself():
    a, b = _alphas(2, (4, 6)), _alphas(3, (4, 6))
    torch.testing.assert_close(dirichlet.kl_divergence(a, b), kl_divergence(Dirichlet(a), Dirichlet(b)))
    torch.testing.assert_close(dirichlet.kl_divergence(a, a), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    assert bool((dirichlet.kl_divergence(a, b) > 0).all())


def test_shared_terms_give_the_same_three_values():
    a, b = _alphas(4, (3, 7, 5)), _alphas(5, (3, 7, 5))
    w = Dirichlet(a).sample()
    lp, ent, kl = dirichlet.log_prob_entropy_kl(a, w, b)
    torch.testing.assert_close(lp, dirichlet.log_prob(a, w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ent, dirichlet.entropy(a), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl, dirichlet.kl_divergence(a, b), rtol=1e-12, atol=1e-12)
