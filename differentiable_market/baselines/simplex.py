"""Batched solvers on the probability simplex {y : y >= 0, sum(y) = 1}: Euclidean projection, a convex quadratic
programme (for ONS's projection in the norm of its Hessian estimate, the Newton steps of the log-optimal portfolio and
the risk-based portfolios), and the log-optimal (best constant rebalanced) portfolio of a set of price relatives.

Every function works on a batch [B, ...] at once; the quadratic programme is an exact primal active-set method (each
iteration solves one bordered linear system per batch row), so its answer is exact to rounding, not to a solver
tolerance. It is written here rather than taken from a QP library (cvxopt, as universal-portfolios uses) because it
must run batched over windows inside a loop over bars, with no per-problem overhead.

The solvers work on float64 numpy arrays (``*_np``; the quadratic programme's loop is compiled, ``kernels.qp``, which
ONS also calls once per bar), with torch wrappers for everything else.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import kernels


def simplex_projection(y: Tensor) -> Tensor:
    """Euclidean projection of each row of y [..., A] onto the probability simplex (sort-based, exact)."""
    u, _ = torch.sort(y, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - 1.0
    k = torch.arange(1, y.shape[-1] + 1, dtype=y.dtype, device=y.device)
    support = u - css / k > 0
    rho = support.to(torch.int64).cumsum(dim=-1).amax(dim=-1, keepdim=True)  # support is a prefix of the sorted row
    theta = torch.gather(css, -1, rho - 1) / rho.to(y.dtype)
    return torch.clamp(y - theta, min=0.0)


def qp_np(q: np.ndarray, c: np.ndarray, y0: np.ndarray, max_iter: int | None = None,
          a: np.ndarray | None = None) -> np.ndarray:
    """argmin_y 0.5 y'Qy - c'y over the simplex, for each batch row; Q [B, A, A] symmetric positive definite.

    With ``a`` [B, A] the equality constraint is a'y = 1 instead of sum(y) = 1 (still y >= 0), and y0 must satisfy
    it; the answer is then not renormalised.

    Primal active-set method started from the feasible y0 [B, A] (warm start: the previous answer, whose zero
    pattern is usually right already). Each iteration solves the equality-constrained problem on the free
    coordinates F (y_i = 0 off F, a'y = 1) through the bordered system [[Q_FF, -a_F], [a_F', 0]] [y; nu] = [c_F; 1];
    if that point is feasible it is taken and the most negative multiplier mu_i = (Qy - c)_i - nu a_i of a fixed
    coordinate (if any) frees it; otherwise the step stops at the first coordinate to reach 0, which is fixed.
    Each row is solved on its own, by a compiled loop (``kernels.qp``). Returns y [B, A].
    """
    n = c.shape[-1]
    y = np.array(y0, dtype=np.float64, order="C")
    aa = np.ones_like(y) if a is None else np.ascontiguousarray(a, dtype=np.float64)
    kernels.qp_batch(np.ascontiguousarray(q, dtype=np.float64), np.ascontiguousarray(c, dtype=np.float64), y, aa,
                     4 * n + 20 if max_iter is None else max_iter)
    return y / y.sum(axis=-1, keepdims=True) if a is None else y


def simplex_qp(q_baa: Tensor, c_ba: Tensor, y0_ba: Tensor, max_iter: int | None = None,
               a_ba: Tensor | None = None) -> Tensor:
    """``qp_np`` on tensors (float64)."""
    out = qp_np(q_baa.double().cpu().numpy(), c_ba.double().cpu().numpy(), y0_ba.double().cpu().numpy(), max_iter,
                None if a_ba is None else a_ba.double().cpu().numpy())
    return torch.from_numpy(out).to(c_ba.device)


def log_optimal_np(x: np.ndarray, mask: np.ndarray | None = None, b0: np.ndarray | None = None, max_iter: int = 50,
                   tol: float = 1e-13) -> np.ndarray:
    """The constant rebalanced portfolio of largest growth, argmax_b sum_n m_n log(b . x_n) over the simplex.

    x [B, N, A]: gross price relatives (> 0); mask [B, N] (default all ones) weights each period (0 leaves it out);
    b0 [B, A] the starting point (default equal weight). Newton's method with the simplex constraint: each step
    solves the quadratic model exactly (``qp_np``) and backtracks until the objective does not fall; each row stops
    on its own (step below ``tol``, or no gain in the objective), so its answer does not depend on the other rows of
    the batch. The Hessian gets a ridge of 1e-12 x its mean diagonal so that fewer periods than assets stay solvable
    (the optimum is then not unique). Rows with no period (all-zero mask) return equal weight. Returns b [B, A].
    """
    batch, _, n = x.shape
    m = np.ones(x.shape[:2]) if mask is None else mask.astype(float)
    b = np.full((batch, n), 1.0 / n) if b0 is None else b0.copy()
    eye = np.eye(n)

    def objective(w: np.ndarray) -> np.ndarray:
        r = (x @ w[:, :, None])[:, :, 0]  # matmul, not einsum: BLAS
        return (m * np.log(np.maximum(r, 1e-300))).sum(axis=-1)

    f = objective(b)
    warm = b.copy()
    done = np.zeros(batch, dtype=bool)
    for _ in range(max_iter):
        r = (x @ b[:, :, None])[:, :, 0]
        z = x * (m / r)[:, :, None]
        grad = z.sum(axis=1)
        hess = z.transpose(0, 2, 1) @ (x / r[:, :, None])
        ridge = 1e-12 * np.maximum(np.einsum("bii->b", hess) / n, 1e-300)
        hess = hess + ridge[:, None, None] * eye
        # Warm start from the last Newton target, not from b: after a damped step b is interior, and the active-set
        # method would then drop the zero coordinates again, one iteration (one solve) each.
        target = qp_np(hess, (hess @ b[:, :, None])[:, :, 0] + grad, warm)
        warm = np.where(done[:, None], warm, target)
        step = np.where(done[:, None], 0.0, target - b)
        t = np.ones(batch)
        for _ in range(30):  # backtracking: a full Newton step is taken near the optimum
            ok = objective(b + t[:, None] * step) >= f - 1e-15 * np.abs(f)
            if ok.all():
                break
            t = np.where(ok, t, 0.5 * t)
        new = np.maximum(b + t[:, None] * step, 0.0)
        b = np.where(done[:, None], b, new / new.sum(axis=-1, keepdims=True))
        f_new = objective(b)
        # Stop at a step below tol, or once a Newton step no longer raises the objective: at the optimum both the
        # step and the gain are rounding noise (about 1e-13 on the NYSE set), and iterating on noise changes nothing.
        done |= (np.abs(step).max(axis=-1) < tol) | (f_new <= f)
        f = f_new
        if done.all():
            break
    empty = m.sum(axis=-1) == 0
    return np.where(empty[:, None], 1.0 / n, b)


def log_optimal(x_bna: Tensor, mask_bn: Tensor | None = None, b0_ba: Tensor | None = None, max_iter: int = 50,
                tol: float = 1e-13) -> Tensor:
    """``log_optimal_np`` on tensors (float64)."""
    out = log_optimal_np(x_bna.double().cpu().numpy(), None if mask_bn is None else mask_bn.cpu().numpy(),
                         None if b0_ba is None else b0_ba.double().cpu().numpy(), max_iter, tol)
    return torch.from_numpy(out).to(x_bna.device)
