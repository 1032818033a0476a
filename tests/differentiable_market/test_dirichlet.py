import pytest
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


def test_masked_terms_equal_the_dirichlet_of_the_tradeable_subset_exactly():
    """Per row, log-prob, entropy and KL over the masked-in components equal torch's Dirichlet built on that subset
    alone; what the masked-out components hold (alpha, beta) changes nothing; one component is a point mass."""
    torch.manual_seed(3)
    alpha, beta = _alphas(4, (6, 5)), _alphas(5, (6, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0], [0, 1, 1, 1, 1],
                         [1, 0, 0, 0, 1]], dtype=torch.bool)
    w = torch.zeros_like(alpha)
    for r in range(6):
        w[r, mask[r]] = Dirichlet(alpha[r, mask[r]]).sample() if mask[r].sum() > 1 else 1.0
    lp, ent, kl = dirichlet.masked_log_prob_entropy_kl(alpha, w, beta, mask)
    for r in range(6):
        a, b, x = alpha[r, mask[r]], beta[r, mask[r]], w[r, mask[r]]
        if a.numel() == 1:
            assert lp[r] == 0 and ent[r] == 0 and kl[r] == 0
            continue
        torch.testing.assert_close(lp[r], Dirichlet(a).log_prob(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ent[r], Dirichlet(a).entropy(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(kl[r], kl_divergence(Dirichlet(a), Dirichlet(b)), rtol=1e-10, atol=1e-10)
    other = dirichlet.masked_log_prob_entropy_kl(torch.where(mask, alpha, 7.0), w, torch.where(mask, beta, 0.3), mask)
    for x, y in zip((lp, ent, kl), other):
        assert torch.equal(x, y)
    full = dirichlet.log_prob_entropy_kl(alpha[:1], w[:1], beta[:1])
    for x, y in zip(full, (lp[:1], ent[:1], kl[:1])):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 6])
def test_closed_form_backward_matches_finite_differences_and_autograd_of_the_formulas(chunk, monkeypatch):
    """The fused terms' gradient in alpha (closed form, nothing saved but the inputs) against finite differences and
    against autograd through the plain formulas, for every mix of the three outputs, with and without a mask, whole
    and in chunks of one row."""
    if chunk is not None:
        monkeypatch.setattr(dirichlet, "ROW_CHUNK_ELEMENTS", chunk)
    alpha, beta = _alphas(6, (3, 4, 6)), _alphas(7, (3, 4, 6))
    w = Dirichlet(alpha).sample()
    mask = torch.rand(3, 1, 6, generator=torch.Generator().manual_seed(8)) < 0.6
    mask[..., 0] = True
    mask[0, 0] = torch.tensor([True, False, False, False, False, False])  # a point mass row
    w_masked = torch.where(mask, w, 0.0)
    w_masked = w_masked / w_masked.sum(-1, keepdim=True)
    weights = torch.randn(3, 3, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def scalar(terms):
        return sum((weights[i] * t).sum() for i, t in enumerate(terms))

    for fused, plain, x in (
        (lambda a: dirichlet.log_prob_entropy_kl(a, w, beta), lambda a: dirichlet._terms(a, w, beta, None), w),
        (lambda a: dirichlet.masked_log_prob_entropy_kl(a, w_masked, beta, mask),
         lambda a: dirichlet._terms(a, w_masked, beta, mask), w_masked),
    ):
        assert torch.autograd.gradcheck(lambda a: scalar(fused(a)), (alpha.clone().requires_grad_(),))
        for x, y in zip(fused(alpha), plain(alpha)):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
        a1, a2 = alpha.clone().requires_grad_(), alpha.clone().requires_grad_()
        scalar(fused(a1)).backward()
        scalar(plain(a2)).backward()
        torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-10, atol=1e-10)
    lp = dirichlet.log_prob_entropy_kl(alpha.clone().requires_grad_(), w, beta)[0]
    assert "ScoreTerms" in type(lp.grad_fn).__name__  # the fused route, not autograd through the formulas


@pytest.mark.parametrize("chunk", [None, 4 * 257])
@pytest.mark.parametrize("masked", [False, True])
def test_kept_score_gives_the_same_bits_as_recomputing_it(chunk, masked, monkeypatch):
    """``keep_score``: the backward reads the forward's log w - digamma(alpha) instead of evaluating both again. In
    float32, on the training layout ([windows, rollouts, bars, assets], alpha and w of the sampled rows) and in chunks
    of rows, the three values and the gradient are the same bits as without it, and it is the gradient of the plain
    formulas (float64 gradcheck, through chunks)."""
    if chunk is not None:
        monkeypatch.setattr(dirichlet, "ROW_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(11)
    alpha = torch.rand(5, 3, 4, 257, generator=g) * 3 + 0.05
    beta = torch.rand(5, 3, 4, 257, generator=g) * 3 + 0.05
    mask = (torch.rand(5, 1, 4, 257, generator=g) < 0.8) if masked else None
    w = torch._standard_gamma(alpha, generator=g).clamp_min(1e-30)
    if masked:
        w = w * mask
    w = w / w.sum(-1, keepdim=True)
    weights = torch.randn(3, 5, 3, 4, generator=g)

    def run(keep: bool, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = a.clone().requires_grad_()
        terms = (dirichlet.log_prob_entropy_kl(a, w, beta, keep) if mask is None
                 else dirichlet.masked_log_prob_entropy_kl(a, w, beta, mask, keep))
        sum((weights[i] * t).sum() for i, t in enumerate(terms)).backward()
        return (*terms, a.grad)

    for kept, recomputed in zip(run(True, alpha), run(False, alpha)):
        assert torch.equal(kept, recomputed)
    a64, b64 = alpha[:2, :, :2, :6].double(), beta[:2, :, :2, :6].double()
    w64 = w[:2, :, :2, :6].double().clamp_min(1e-6)
    w64 = w64 / w64.sum(-1, keepdim=True)
    m64 = None if mask is None else mask[:2, :, :2, :6] | (torch.arange(6) < 2)  # two components at least per row
    if m64 is not None:
        w64 = w64 * m64 / (w64 * m64).sum(-1, keepdim=True)

    def fused(a: torch.Tensor) -> torch.Tensor:
        terms = (dirichlet.log_prob_entropy_kl(a, w64, b64, True) if m64 is None
                 else dirichlet.masked_log_prob_entropy_kl(a, w64, b64, m64, True))
        return sum(t.sum() * (i + 1) for i, t in enumerate(terms))

    assert torch.autograd.gradcheck(fused, (a64.clone().requires_grad_(),))
