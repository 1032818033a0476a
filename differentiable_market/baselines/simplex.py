"""Batched solvers on the probability simplex {y : y >= 0, sum(y) = 1}: Euclidean projection, a convex quadratic
programme (for ONS's projection in the norm of its Hessian estimate, and the Newton steps of the log-optimal
portfolio), and the log-optimal (best constant rebalanced) portfolio of a set of price relatives.

Every function works on a batch [B, ...] at once; the quadratic programme is an exact primal active-set method (each
iteration solves one bordered linear system per batch row), so its answer is exact to rounding, not to a solver
tolerance. It is written here rather than taken from a QP library (cvxopt, as universal-portfolios uses) because it
must run batched over windows inside a loop over bars, with no per-problem Python overhead.
"""

from __future__ import annotations

import torch
from torch import Tensor


def simplex_projection(y: Tensor) -> Tensor:
    """Euclidean projection of each row of y [..., A] onto the probability simplex (sort-based, exact)."""
    u, _ = torch.sort(y, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - 1.0
    k = torch.arange(1, y.shape[-1] + 1, dtype=y.dtype, device=y.device)
    support = u - css / k > 0
    rho = support.to(torch.int64).cumsum(dim=-1).amax(dim=-1, keepdim=True)  # support is a prefix of the sorted row
    theta = torch.gather(css, -1, rho - 1) / rho.to(y.dtype)
    return torch.clamp(y - theta, min=0.0)


def simplex_qp(q_baa: Tensor, c_ba: Tensor, y0_ba: Tensor, max_iter: int | None = None,
               a_ba: Tensor | None = None) -> Tensor:
    """argmin_y 0.5 y'Qy - c'y over the simplex, for each batch row; Q [B, A, A] symmetric positive definite.

    With ``a_ba`` [B, A] the equality constraint is a'y = 1 instead of sum(y) = 1 (still y >= 0), and y0 must satisfy
    it; the answer is then not renormalised.

    Primal active-set method started from the feasible y0 [B, A] (warm start: the previous answer, whose zero
    pattern is usually right already). Each iteration solves the equality-constrained problem on the free
    coordinates F (y_i = 0 off F, sum = 1) through the bordered system [[Q_FF, -1], [1', 0]] [y; nu] = [c_F; 1];
    if that point is feasible it is taken and the most negative multiplier mu_i = (Qy - c)_i - nu a_i of a fixed
    coordinate (if any) frees it; otherwise the step stops at the first coordinate to reach 0, which is fixed.
    Rows that are done stay unchanged while the others iterate. Returns y [B, A].
    """
    batch, n = c_ba.shape
    dtype, device = c_ba.dtype, c_ba.device
    max_iter = 4 * n + 20 if max_iter is None else max_iter
    y = y0_ba.clone()
    free = y > 0
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    eye = torch.eye(n, dtype=dtype, device=device)
    scale = q_baa.abs().amax(dim=(-1, -2)) + c_ba.abs().amax(dim=-1)  # [B], for the multiplier tolerance
    a = torch.ones_like(c_ba) if a_ba is None else a_ba
    kkt = torch.zeros(batch, n + 1, n + 1, dtype=dtype, device=device)
    rhs = torch.zeros(batch, n + 1, dtype=dtype, device=device)
    for _ in range(max_iter):
        m = free.to(dtype)
        kkt[:, :n, :n] = q_baa * m[:, :, None] * m[:, None, :] + eye * (1.0 - m)[:, :, None]
        kkt[:, :n, n] = -m * a
        kkt[:, n, :n] = m * a
        rhs[:, :n] = c_ba * m
        rhs[:, n] = 1.0
        sol = torch.linalg.solve(kkt, rhs)
        y_eq, nu = sol[:, :n] * m, sol[:, n]
        step = y_eq - y
        blocking = free & (step < 0) & (y_eq < 0)
        feasible = ~blocking.any(dim=-1)
        # Feasible: take it, then look for a fixed coordinate whose multiplier says it should enter.
        mu = torch.einsum("bij,bj->bi", q_baa, y_eq) - c_ba - nu[:, None] * a
        mu = torch.where(free, torch.inf, mu)
        mu_min, enter = mu.min(dim=-1)
        optimal = feasible & (mu_min >= -1e-12 * scale)
        # Infeasible: the longest step that keeps y >= 0, stopping at the first free coordinate to reach 0.
        ratio = torch.where(blocking, y / torch.where(blocking, -step, 1.0), torch.inf)
        alpha, leave = ratio.min(dim=-1)
        alpha = alpha.clamp(max=1.0)
        active = ~done
        y_new = torch.where(feasible[:, None], y_eq, y + alpha[:, None] * step)
        y = torch.where(active[:, None], y_new.clamp(min=0.0), y)
        rows = torch.arange(batch, device=device)
        leaving = active & ~feasible
        y[rows[leaving], leave[leaving]] = 0.0
        free[rows[leaving], leave[leaving]] = False
        entering = active & feasible & ~optimal
        free[rows[entering], enter[entering]] = True
        done = done | optimal
        if bool(done.all()):
            break
    return y / y.sum(dim=-1, keepdim=True) if a_ba is None else y


def log_optimal(x_bna: Tensor, mask_bn: Tensor | None = None, b0_ba: Tensor | None = None, max_iter: int = 50,
                tol: float = 1e-13) -> Tensor:
    """The constant rebalanced portfolio of largest growth, argmax_b sum_n m_n log(b . x_n) over the simplex.

    x_bna [B, N, A]: gross price relatives (> 0); mask_bn [B, N] (default all ones) weights each period (0 leaves it
    out); b0 [B, A] the starting point (default equal weight). Newton's method with the simplex constraint: each
    step solves the quadratic model exactly (``simplex_qp``) and backtracks until the objective does not fall.
    The Hessian gets a ridge of 1e-12 x its mean diagonal so that fewer periods than assets stay solvable (the optimum
    is then not unique). Rows with no period (all-zero mask) return equal weight. Returns b [B, A].
    """
    batch, _, n = x_bna.shape
    dtype = x_bna.dtype
    m = torch.ones(x_bna.shape[:2], dtype=dtype, device=x_bna.device) if mask_bn is None else mask_bn.to(dtype)
    b = torch.full((batch, n), 1.0 / n, dtype=dtype, device=x_bna.device) if b0_ba is None else b0_ba.clone()
    eye = torch.eye(n, dtype=dtype, device=x_bna.device)

    def objective(w: Tensor) -> Tensor:
        r = torch.einsum("bna,ba->bn", x_bna, w)
        return (m * torch.log(r.clamp(min=1e-300))).sum(dim=-1)

    f = objective(b)
    done = torch.zeros(batch, dtype=torch.bool, device=x_bna.device)  # rows stop one by one: each row's answer
    for _ in range(max_iter):  # is then independent of the others in the batch
        r = torch.einsum("bna,ba->bn", x_bna, b)
        z = x_bna * (m / r)[:, :, None]  # [B, N, A]
        grad = z.sum(dim=1)
        hess = torch.einsum("bni,bnj->bij", z, x_bna / r[:, :, None])
        ridge = 1e-12 * torch.diagonal(hess, dim1=-2, dim2=-1).mean(dim=-1).clamp(min=1e-300)
        hess = hess + ridge[:, None, None] * eye
        target = simplex_qp(hess, torch.einsum("bij,bj->bi", hess, b) + grad, b)
        step = torch.where(done[:, None], 0.0, target - b)
        t = torch.ones(batch, dtype=dtype, device=x_bna.device)
        for _ in range(30):  # backtracking: a full Newton step is taken near the optimum
            f_new = objective(b + t[:, None] * step)
            ok = f_new >= f - 1e-15 * f.abs()
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        new = (b + t[:, None] * step).clamp(min=0.0)
        b = torch.where(done[:, None], b, new / new.sum(dim=-1, keepdim=True))
        f = objective(b)
        done = done | (step.abs().amax(dim=-1) < tol)
        if bool(done.all()):
            break
    empty = m.sum(dim=-1) == 0
    return torch.where(empty[:, None], torch.full_like(b, 1.0 / n), b)
