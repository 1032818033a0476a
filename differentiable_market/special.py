"""Digamma and trigamma of float32 CPU tensors, 4x and 1.7x faster than torch's and at least as accurate.

The Dirichlet terms of a training step (``dirichlet.py``) evaluate digamma and trigamma for every window x rollout x
bar x asset (25 million components a step at 256 assets). Torch's CPU kernels run a scalar series per component:
digamma shifts x up to 10 one step at a time, a division per step, so it costs 13 ns a component on two cores of an
AVX2 EPYC (3.4 ns here), trigamma 4.8 ns (2.9 here). Here the shift is fixed, so the loop has no branch and the compiler vectorises it:

    psi(x) = log(x + 6) - N(x) / D(x) - 1/(2y) - 1/(12y^2) + 1/(120y^4) - 1/(252y^6) + 1/(240y^8),  y = x + 6,

where D(x) = x (x+1) ... (x+5) and N(x) = D'(x), so N / D = sum_{k<6} 1 / (x+k) in one division; and

    psi1(x) = (N^2 - D D'') / D^2 + 1/y + 1/(2y^2) + 1/(6y^3) - 1/(30y^5) + 1/(42y^7) - 1/(30y^9),

since sum_{k<6} 1 / (x+k)^2 = -(N / D)'. The tails are the asymptotic (Bernoulli) series at y >= 6, whose next terms
are below 1e-9 of the result. The loop runs in float64; digamma's one logarithm, log(x + 6), is torch's vectorised
float32 kernel (float64's costs 6 ns a component). So trigamma is within 2 ulps of the exact value, and digamma
within 2 ulps plus 2 ulps of log(x + 6): about 2e-7 absolute near its root (x = 1.46), where torch's float32 digamma
errs by 1.2e-6. The tests hold both to torch's float64 digamma and trigamma. Valid for x > 0 (Dirichlet concentrations); NaN stays NaN and +inf gives +inf (digamma) and 0
(trigamma).

``digamma`` and ``trigamma`` take this route for float32 CPU tensors without gradient outside ``torch.compile``'s
tracing, and torch's otherwise (float64, which the tests use as the reference; other devices; autograd).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
LARGE = 1e10  # above it the shift's sums are taken as 6 / x and 6 / x^2 (relative error 2.5e-10, far below float32's
# resolution; D^2 would overflow near 1e25)


@njit(**_JIT)
def _digamma_loop(x: np.ndarray, log_y: np.ndarray, out: np.ndarray) -> None:
    """out = psi(x) from x and log(x + 6), all 1-D and contiguous."""
    for i in range(x.size):
        v = np.float64(x[i])
        d = (((((v + 15.0) * v + 85.0) * v + 225.0) * v + 274.0) * v + 120.0) * v
        n = ((((6.0 * v + 75.0) * v + 340.0) * v + 675.0) * v + 548.0) * v + 120.0
        shift = n / d if v < LARGE else 6.0 / v  # sum_{k<6} 1 / (x + k)
        r = 1.0 / (v + 6.0)
        r2 = r * r
        tail = r * 0.5 + r2 * (1.0 / 12 - r2 * (1.0 / 120 - r2 * (1.0 / 252 - r2 * (1.0 / 240))))
        out[i] = log_y[i] - shift - tail


@njit(**_JIT)
def _trigamma_loop(x: np.ndarray, out: np.ndarray) -> None:
    """out = psi1(x), both 1-D and contiguous."""
    for i in range(x.size):
        v = np.float64(x[i])
        d = (((((v + 15.0) * v + 85.0) * v + 225.0) * v + 274.0) * v + 120.0) * v
        n = ((((6.0 * v + 75.0) * v + 340.0) * v + 675.0) * v + 548.0) * v + 120.0
        d2 = (((30.0 * v + 300.0) * v + 1020.0) * v + 1350.0) * v + 548.0
        shift = (n * n - d * d2) / (d * d) if v < LARGE else 6.0 / (v * v)  # sum_{k<6} 1 / (x + k)^2
        r = 1.0 / (v + 6.0)
        r2 = r * r
        tail = r * (1.0 + r * (0.5 + r * (1.0 / 6 - r2 * (1.0 / 30 - r2 * (1.0 / 42 - r2 * (1.0 / 30))))))
        out[i] = shift + tail


def fast(x: torch.Tensor) -> bool:
    """Whether ``digamma`` / ``trigamma`` of ``x`` take the compiled loops."""
    return (x.dtype == torch.float32 and x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad)
            and not torch.compiler.is_compiling())


def digamma(x: torch.Tensor) -> torch.Tensor:
    """psi(x) for x > 0, as ``torch.digamma`` (see the module docstring for the route)."""
    if not fast(x):
        return torch.digamma(x)
    flat = x.detach().contiguous().reshape(-1)
    log_y = flat.add(6.0).log_()  # float32: within an ulp of log(x + 6), and 5x cheaper than float64's
    out = torch.empty_like(flat)
    _digamma_loop(flat.numpy(), log_y.numpy(), out.numpy())
    return out.reshape(x.shape)


def trigamma(x: torch.Tensor) -> torch.Tensor:
    """psi1(x) = d psi / dx for x > 0, as ``torch.polygamma(1, x)``."""
    if not fast(x):
        return torch.polygamma(1, x)
    flat = x.detach().contiguous().reshape(-1)
    out = torch.empty_like(flat)
    _trigamma_loop(flat.numpy(), out.numpy())
    return out.reshape(x.shape)
