"""Compiled loops of the sequential online-portfolio algorithms (numba, float64).

Each algorithm in ``olps`` (and OLMAR in ``core``) updates a portfolio bar after bar, so its work is a loop over time
of a dozen operations on vectors of A numbers. Written as numpy calls batched over windows, the per-call cost
(microseconds) dominates the arithmetic (nanoseconds) and the loops run at a few thousand bars per second, whatever
the batch; compiled, the same loop runs at memory speed. numba compiles these plain loops as written, with no
extension to build, and caches the machine code on disk (``cache=True``), so only a process that finds no cache pays
the compile (measured: 7.6 s for OLMAR alone, 25 s for every kernel; 1.6 s to load them all from the cache).

Conventions (shared by every kernel): ``x`` [T, A] are the data's price relatives (or the predicted relatives of
OLMAR and RMR, per bar), ``bars`` [W, L] the decision bar of each window and step, ``out`` [W, L, A] is written in
place. Every window restarts from equal weight. The arithmetic is the one documented in each ``olps`` function;
sums run left to right. The numpy loops these replaced agreed with them to 1e-12 or better (5e-14 for ONS, 2e-12
for CWMR), and the tests hold them to closed forms, reference loops and universal-portfolios.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def project(y: np.ndarray, out: np.ndarray) -> None:
    """Euclidean projection of y [A] onto the probability simplex, into out (sort-based, exact: with u sorted
    descending, theta = (sum_{j<=k} u_j - 1) / k for the largest k with u_k > theta_k, a prefix of the sorted row)."""
    n = y.shape[0]
    u = np.sort(y)
    css = 0.0
    rho = 0
    theta = 0.0
    for k in range(n):
        css += u[n - 1 - k]
        if u[n - 1 - k] - (css - 1.0) / (k + 1) > 0.0:
            rho = k + 1
            theta = (css - 1.0) / (k + 1)
    if rho == 0:  # only when y has NaNs: keep them visible
        theta = np.nan
    for i in range(n):
        out[i] = max(y[i] - theta, 0.0)


@njit(**_JIT)
def _mean(x: np.ndarray) -> float:
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s / x.shape[0]


@njit(**_JIT)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(**_JIT)
def _reversion_step(b: np.ndarray, x: np.ndarray, eps: float, tmp: np.ndarray) -> None:
    """OLMAR's (and RMR's) update of b in place: b <- proj(b + lam (x - mean x)),
    lam = max(0, eps - b.x) / ||x - mean x||^2 (0 when x is flat)."""
    n = x.shape[0]
    m = _mean(x)
    denom = 0.0
    for i in range(n):
        denom += (x[i] - m) * (x[i] - m)
    gap = eps - _dot(b, x)
    lam = max(gap, 0.0) / denom if denom > 0.0 else 0.0
    for i in range(n):
        tmp[i] = b[i] + lam * (x[i] - m)
    project(tmp, b)


@njit(**_JIT)
def olmar(x_pred: np.ndarray, ready: np.ndarray, bars: np.ndarray, eps: float, out: np.ndarray) -> None:
    """OLMAR-1 with the predicted relatives x_pred [T, A]; ``ready`` [T] says where an update happens."""
    n_windows, length = bars.shape
    n = x_pred.shape[1]
    b = np.empty(n)
    tmp = np.empty(n)
    for w in range(n_windows):
        b[:] = 1.0 / n
        for k in range(length):
            t = bars[w, k]
            if ready[t]:
                _reversion_step(b, x_pred[t], eps, tmp)
            out[w, k] = b


@njit(**_JIT)
def eg(x: np.ndarray, bars: np.ndarray, eta: float, out: np.ndarray) -> None:
    """EG's multiplicative update (``olps.eg``). Like every kernel here, the loop over windows and steps is written
    out again rather than shared through a function argument: numba writes, but does not load again, the on-disk
    cache of a function that takes another function (tried: every new process compiled it again)."""
    n_windows, length = bars.shape
    n = x.shape[1]
    b = np.empty(n)
    for w in range(n_windows):
        b[:] = 1.0 / n
        for k in range(length):
            t = bars[w, k]
            if t >= 1:
                xt = x[t]
                r = _dot(b, xt)
                s = 0.0
                for i in range(n):
                    b[i] = b[i] * np.exp(eta * xt[i] / r)
                    s += b[i]
                for i in range(n):
                    b[i] /= s
            out[w, k] = b


@njit(**_JIT)
def pamr(x: np.ndarray, bars: np.ndarray, eps: float, c: float, variant: int, max_step: float,
         out: np.ndarray) -> None:
    """PAMR and its variants 1 and 2 (``olps.pamr``)."""
    n_windows, length = bars.shape
    n = x.shape[1]
    b = np.empty(n)
    tmp = np.empty(n)
    for w in range(n_windows):
        b[:] = 1.0 / n
        for k in range(length):
            t = bars[w, k]
            if t >= 1:
                xt = x[t]
                m = _mean(xt)
                denom = 0.0
                for i in range(n):
                    denom += (xt[i] - m) * (xt[i] - m)
                loss = max(_dot(b, xt) - eps, 0.0)
                if variant == 2:
                    tau = loss / (denom + 0.5 / c)
                else:
                    tau = loss / denom if denom > 0.0 else 0.0
                    if variant == 1:
                        tau = min(tau, c)
                tau = min(tau, max_step)
                for i in range(n):
                    tmp[i] = b[i] - tau * (xt[i] - m)
                project(tmp, b)
            out[w, k] = b


@njit(**_JIT)
def qp(q: np.ndarray, c: np.ndarray, y: np.ndarray, a: np.ndarray, max_iter: int) -> None:
    """argmin 0.5 y'Qy - c'y subject to a'y = 1, y >= 0, from the feasible y (updated in place), for one problem:
    the primal active-set method described in ``simplex.qp_np``."""
    n = c.shape[0]
    scale = 0.0
    for i in range(n):
        for j in range(n):
            scale = max(scale, abs(q[i, j]))
    cmax = 0.0
    for i in range(n):
        cmax = max(cmax, abs(c[i]))
    scale += cmax
    free = y > 0.0
    y_eq = np.empty(n)
    for _ in range(max_iter):
        idx = np.nonzero(free)[0]  # the system is solved on the free coordinates only: ONS's are a few of A
        m = idx.shape[0]
        kkt = np.zeros((m + 1, m + 1))
        rhs = np.zeros(m + 1)
        for r in range(m):
            for col in range(m):
                kkt[r, col] = q[idx[r], idx[col]]
            kkt[r, m] = -a[idx[r]]
            kkt[m, r] = a[idx[r]]
            rhs[r] = c[idx[r]]
        rhs[m] = 1.0
        sol = np.linalg.solve(kkt, rhs)
        nu = sol[m]
        y_eq[:] = 0.0
        feasible = True
        for r in range(m):
            i = idx[r]
            y_eq[i] = sol[r]
            if y_eq[i] < y[i] and y_eq[i] < 0.0:
                feasible = False
        if feasible:
            enter = -1
            best = np.inf
            for i in range(n):
                if not free[i]:
                    mu = -c[i] - nu * a[i]
                    for r in range(m):
                        mu += q[i, idx[r]] * y_eq[idx[r]]
                    if mu < best:
                        best = mu
                        enter = i
            for i in range(n):
                y[i] = max(y_eq[i], 0.0)
            if enter < 0 or best >= -1e-12 * scale:
                return
            free[enter] = True
        else:
            leave = -1
            alpha = np.inf
            for i in range(n):
                step = y_eq[i] - y[i]
                if free[i] and step < 0.0 and y_eq[i] < 0.0:
                    ratio = y[i] / -step
                    if ratio < alpha:
                        alpha = ratio
                        leave = i
            alpha = min(alpha, 1.0)
            for i in range(n):
                y[i] = max(y[i] + alpha * (y_eq[i] - y[i]), 0.0)
            y[leave] = 0.0
            free[leave] = False


@njit(**_JIT)
def qp_batch(q: np.ndarray, c: np.ndarray, y: np.ndarray, a: np.ndarray, max_iter: int) -> None:
    """``qp`` for each row of a batch: q [B, A, A], c, y (in place) and a [B, A]."""
    for r in range(c.shape[0]):
        qp(q[r], c[r], y[r], a[r], max_iter)


@njit(**_JIT)
def ons(x: np.ndarray, bars: np.ndarray, delta: float, beta: float, eta: float, out: np.ndarray) -> None:
    """ONS (``olps.ons``): A and c accumulate, and each bar's projection warm-starts from the last one."""
    n_windows, length = bars.shape
    n = x.shape[1]
    p = np.empty(n)
    q = np.empty(n)
    g = np.empty(n)
    c = np.empty(n)
    dc = np.empty(n)
    a = np.empty((n, n))
    ones = np.ones(n)
    for w in range(n_windows):
        p[:] = 1.0 / n
        q[:] = 1.0 / n
        c[:] = 0.0
        a[:, :] = 0.0
        for i in range(n):
            a[i, i] = 1.0
        for k in range(length):
            t = bars[w, k]
            if t >= 1:
                xt = x[t]
                r = _dot(p, xt)
                for i in range(n):
                    g[i] = xt[i] / r
                for i in range(n):
                    for j in range(n):
                        a[i, j] += g[i] * g[j]
                    c[i] += (1.0 + 1.0 / beta) * g[i]
                    dc[i] = delta * c[i]
                qp(a, dc, q, ones, 4 * n + 20)
                s = 0.0
                for i in range(n):
                    s += q[i]
                for i in range(n):
                    q[i] /= s
                    p[i] = (1.0 - eta) * q[i] + eta / n
            out[w, k] = p


@njit(**_JIT)
def cwmr(x: np.ndarray, bars: np.ndarray, eps: float, theta: float, paper: bool, out: np.ndarray) -> None:
    """CWMR-Stdev; the state is the mean mu and Sigma (with the paper's update, ``paper``, also its inverse, both
    diagonal: they start so and get diagonal updates only, so a step costs O(A)). universal-portfolios' update (the
    cross-check only) adds a constant to every entry of Sigma^-1, computed as it does: inv(inv(Sigma) + ...)."""
    n_windows, length = bars.shape
    n = x.shape[1]
    mu = np.empty(n)
    tmp = np.empty(n)
    sx = np.empty(n)
    rows = np.empty(n)
    sigma = np.empty((n, n))
    prec = np.empty((n, n))
    for w in range(n_windows):
        mu[:] = 1.0 / n
        sigma[:, :] = 0.0
        prec[:, :] = 0.0
        for i in range(n):
            sigma[i, i] = 1.0 / n**2
            prec[i, i] = float(n) ** 2
        for k in range(length):
            t = bars[w, k]
            if t >= 1:
                xt = x[t]
                m = _dot(mu, xt)
                v = 0.0
                tr = 0.0
                xs = 0.0
                xr = 0.0
                for i in range(n):
                    if paper:  # Sigma stays diagonal: it starts so and gets diagonal updates only
                        s = sigma[i, i] * xt[i]
                        rs = sigma[i, i]
                    else:
                        s = 0.0
                        rs = 0.0
                        for j in range(n):
                            s += sigma[i, j] * xt[j]
                            rs += sigma[i, j]
                    sx[i] = s
                    rows[i] = rs
                    v += xt[i] * s
                    tr += sigma[i, i]
                    xs += sigma[i, i] * xt[i]
                    xr += xt[i] * rs
                x_bar = xs / tr
                foo = (v - x_bar * xr) / m**2 + v * theta**2 / 2.0
                gap = eps - np.log(m)
                qa = foo**2 - v**2 * theta**4 / 4.0
                qb = 2.0 * gap * foo
                qc = gap**2 - v * theta**2
                disc = qb**2 - 4.0 * qa * qc
                lam = 0.0
                if disc >= 0.0:
                    root = np.sqrt(disc)
                    r1 = (-qb + root) / (2.0 * qa)
                    r2 = (-qb - root) / (2.0 * qa)
                    if r1 != r1:
                        r1 = 0.0
                    if r2 != r2:
                        r2 = 0.0
                    lam = min(max(max(r1, r2), 0.0), 1e7)
                u_sqrt = 0.5 * (-lam * theta * v + np.sqrt(lam**2 * theta**2 * v**2 + 4.0 * v))
                for i in range(n):
                    tmp[i] = mu[i] - lam / m * (sx[i] - x_bar * rows[i])
                project(tmp, mu)
                gain = theta * lam / u_sqrt
                if gain == 0.0:  # a passive step leaves Sigma as it is (its trace is already 1 / A^2)
                    out[w, k] = mu
                    continue
                tr = 0.0
                if paper:
                    for i in range(n):
                        prec[i, i] += gain * xt[i] * xt[i]
                        sigma[i, i] = 1.0 / prec[i, i]
                        tr += sigma[i, i]
                    for i in range(n):
                        sigma[i, i] /= n**2 * tr
                        prec[i, i] *= n**2 * tr
                else:  # as universal-portfolios computes it, inverse of the inverse, so that rounding matches
                    sigma[:, :] = np.linalg.inv(np.linalg.inv(sigma) + gain * xt[0] ** 2)
                    for i in range(n):
                        tr += sigma[i, i]
                    sigma /= n**2 * tr
            out[w, k] = mu


@njit(**_JIT)
def _l1_median(points: np.ndarray, tau: float, max_iter: int, y: np.ndarray) -> None:
    """Weiszfeld's iteration for the L1 median of the rows of points [S, A], from their mean, into y; stops once
    ||y - y_last|| / ||y_last|| <= tau or after max_iter steps (distances floored at 1e-300)."""
    s_count, n = points.shape
    for i in range(n):
        y[i] = _mean(points[:, i])
    num = np.empty(n)
    for _ in range(max_iter):
        num[:] = 0.0
        den = 0.0
        for s in range(s_count):
            d = 0.0
            for i in range(n):
                d += (points[s, i] - y[i]) ** 2
            inv = 1.0 / max(np.sqrt(d), 1e-300)
            den += inv
            for i in range(n):
                num[i] += points[s, i] * inv
        moved = 0.0
        norm = 0.0
        for i in range(n):
            new = num[i] / den
            moved += (new - y[i]) ** 2
            norm += y[i] * y[i]
            y[i] = new
        if np.sqrt(moved) / np.sqrt(norm) <= tau:
            return


@njit(**_JIT)
def rmr(close: np.ndarray, bars: np.ndarray, window: int, eps: float, tau: float, max_iter: int,
        scale: np.ndarray, fixed: bool, out: np.ndarray) -> None:
    """RMR: prices divided by today's close (``fixed`` False) or by ``scale`` [A]."""
    n_windows, length = bars.shape
    n = close.shape[1]
    b = np.empty(n)
    tmp = np.empty(n)
    xm = np.empty(n)
    hist = np.empty((window, n))
    for w in range(n_windows):
        b[:] = 1.0 / n
        for k in range(length):
            t = bars[w, k]
            if t >= window:
                for s in range(window):
                    for i in range(n):
                        hist[s, i] = close[t - window + 1 + s, i] / (scale[i] if fixed else close[t, i])
                _l1_median(hist, tau, max_iter, xm)
                if fixed:
                    for i in range(n):
                        xm[i] /= close[t, i] / scale[i]
                _reversion_step(b, xm, eps, tmp)
            out[w, k] = b


@njit(**_JIT)
def anticor(signal: np.ndarray, bars: np.ndarray, window: int, first: int, swap: bool, out: np.ndarray) -> None:
    """Anticor with one window (see ``olps.anticor``); ``swap`` correlates recent with older (M[i, j] =
    corr(recent_i, older_j)), and updates start at bar ``first``."""
    n_windows, length = bars.shape
    n = signal.shape[1]
    b = np.empty(n)
    d1t = np.empty((n, window))
    d2 = np.empty((window, n))
    mu2 = np.empty(n)
    claim = np.empty((n, n))
    for w in range(n_windows):
        b[:] = 1.0 / n
        for k in range(length):
            t = bars[w, k]
            if t >= first:
                _anticor_step(signal, t, window, swap, b, d1t, d2, mu2, claim)
            out[w, k] = b


@njit(**_JIT)
def _anticor_step(signal: np.ndarray, t: int, window: int, swap: bool, b: np.ndarray, d1t: np.ndarray,
                  d2: np.ndarray, mu2: np.ndarray, claim: np.ndarray) -> None:
    """One Anticor update of b in place at bar t (the scratch arrays d1t [A, w], d2 [w, A], mu2 [A] and claim [A, A]
    are overwritten): Mcor = corr(older, recent) by one matrix product of the centred windows."""
    n = signal.shape[1]
    for i in range(n):
        s1 = 0.0
        s2 = 0.0
        for s in range(window):
            s1 += signal[max(t - 2 * window + 1 + s, 0), i]
            s2 += signal[max(t - window + 1 + s, 0), i]
        mu2[i] = s2 / window
        m1 = s1 / window
        a1 = 0.0
        a2 = 0.0
        for s in range(window):
            older = signal[max(t - 2 * window + 1 + s, 0), i] - m1
            recent = signal[max(t - window + 1 + s, 0), i] - mu2[i]
            if swap:
                older, recent = recent, older
            d1t[i, s] = older
            d2[s, i] = recent
    mcor = np.dot(d1t, d2)  # [A, A] covariances (times w)
    n1 = np.empty(n)
    n2 = np.empty(n)
    for i in range(n):
        a1 = 0.0
        a2 = 0.0
        for s in range(window):
            a1 += d1t[i, s] * d1t[i, s]
            a2 += d2[s, i] * d2[s, i]
        n1[i] = np.sqrt(a1)
        n2[i] = np.sqrt(a2)
    for i in range(n):
        for j in range(n):
            norm = n1[i] * n2[j]
            mcor[i, j] = mcor[i, j] / norm if norm > 0.0 else 0.0
    for i in range(n):
        total = 0.0
        for j in range(n):
            c = 0.0
            if i != j and mu2[i] > mu2[j] and mcor[i, j] > 0.0:
                c = mcor[i, j] + max(-mcor[i, i], 0.0) + max(-mcor[j, j], 0.0)
            claim[i, j] = c
            total += c
        if total > 0.0:
            for j in range(n):
                claim[i, j] = b[i] * claim[i, j] / total
    s = 0.0
    for i in range(n):
        moved = 0.0
        for j in range(n):
            moved += claim[j, i] - claim[i, j]
        n1[i] = max(b[i] + moved, 0.0)
        s += n1[i]
    for i in range(n):
        b[i] = n1[i] / s
