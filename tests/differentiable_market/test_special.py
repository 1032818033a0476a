"""The compiled digamma and trigamma (``special.py``) against torch's float64 ones, which are the reference."""

import math

import numpy as np
import pytest
import torch

from differentiable_market import special


def _log_uniform(lo: float, hi: float, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.empty(n, dtype=torch.float64).uniform_(math.log(lo), math.log(hi), generator=gen).exp().float()


def _spacing(x: torch.Tensor) -> torch.Tensor:
    """float32's spacing at |x|, as float64."""
    return torch.from_numpy(np.spacing(x.float().abs().numpy())).double()


@pytest.mark.parametrize("lo, hi", [(1e-4, 0.5), (0.5, 3.0), (3.0, 30.0), (30.0, 3e5)])
def test_digamma_and_trigamma_are_within_float32_rounding_of_float64(lo, hi):
    """Over concentrations from 1e-4 to 3e5, log-uniformly, against torch's float64 values: trigamma within 2 ulps;
    digamma within 2 ulps of its value plus 2 of log(x + 6), the one step computed in float32 (so near digamma's root,
    where the value is near 0, the error is the logarithm's: about 2e-7, where torch's float32 digamma errs by
    1e-6)."""
    x = _log_uniform(lo, hi, 200_000, seed=int(lo * 1e4))
    psi, psi1 = torch.digamma(x.double()), torch.polygamma(1, x.double())
    assert special.fast(x)
    ours = special.digamma(x)
    bound = 2 * _spacing(psi) + 2 * _spacing(torch.log(x.double() + 6))
    assert ((ours.double() - psi).abs() <= bound).all()
    assert ((special.trigamma(x).double() - psi1).abs() <= 2 * _spacing(psi1)).all()
    assert ours.dtype == torch.float32 and ours.shape == x.shape


def test_special_values_and_shapes():
    x = torch.tensor([0.0, math.inf, math.nan, 1e-30, 1e12, 1e30])
    torch.testing.assert_close(special.digamma(x), torch.digamma(x), equal_nan=True)
    torch.testing.assert_close(special.trigamma(x), torch.polygamma(1, x), equal_nan=True)
    # any layout: a transposed, broadcast tensor keeps its shape and values
    y = _log_uniform(0.5, 200.0, 12, seed=3).reshape(3, 4).t()[:, None].expand(4, 5, 3)
    torch.testing.assert_close(special.digamma(y), torch.digamma(y.double()).float(), rtol=3e-7, atol=4e-7)
    torch.testing.assert_close(special.trigamma(y), torch.polygamma(1, y.double()).float(), rtol=3e-7, atol=0)


def test_the_compiled_loops_serve_float32_cpu_tensors_without_gradient_only():
    """float64 (the tests' reference), autograd and other dtypes take torch's kernels, bit for bit."""
    x64 = _log_uniform(0.5, 200.0, 1000, seed=4).double()
    assert not special.fast(x64)
    assert torch.equal(special.digamma(x64), torch.digamma(x64))
    assert torch.equal(special.trigamma(x64), torch.polygamma(1, x64))
    x = x64.float().requires_grad_()
    assert not special.fast(x)
    special.digamma(x).sum().backward()  # torch's digamma, differentiable
    assert torch.equal(x.grad, torch.polygamma(1, x.detach()))
    with torch.no_grad():
        assert special.fast(x)
    assert not special.fast(x64.to(torch.bfloat16))
