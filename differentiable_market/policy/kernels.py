"""Compiled CPU loops (numba) of the policies' memory-bound elementwise work: the minimal GRU's gated recurrence
h_t = a_t * h_{t-1} + (1 - a_t) * c_t and its backward through the gates; the cross-sectional policy's affine head
in teacher forcing (its logit, and its backward summed over rollouts).

On a CPU the recurrence and the gates' algebra are memory-bound: per element a few multiply-adds, and what costs is
how many times the [N, T, P, H] tensors are read and written. Done in torch, the gates alone take a dozen passes
each way (a, b, their gradients, the chain rule through sigmoid and expm1); these loops make one pass each way, with
the transcendentals (sigmoid, expm1) left to torch, whose kernels are vectorised (numba's ``exp`` is a scalar libm
call without Intel's SVML). The inner loops run over the last two dims in memory order (contiguous, vectorised by the
compiler), so the cross-sectional policy's [windows, bars, assets, H] tokens need no transpose. The head's loops
save its chain rule's passes in the same way. They run on one thread: numba's parallel loops would start a second
OpenMP runtime beside torch's, two pools of spinning threads on the same cores (two Python threads over halves of
the head's rows, tried, saved 6%: the loops are memory-bound). Plain IEEE arithmetic (no fastmath), so the result is
the sequential recurrence as written, and cutting a sequence into pieces continued from each last state gives the
same bits. numba caches the machine code on disk (``cache=True``): only a process that finds no cache compiles
(seconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def gated_forward(m: np.ndarray, kc: np.ndarray, h0: np.ndarray, one: np.ndarray, out: np.ndarray) -> None:
    """The minimal GRU's recurrence from its gates: out_t = (1 + m_t) * out_{t-1} - m_t * c_t over dim 1, from
    out_{-1} = h0. m = a - 1 = -z [N, T, P, H]; the candidates c are the last H of kc [N, T, P, 2H] (the gate logits
    are the first H); h0 [N, 1, P, H]; ``one`` a 1-element array of the dtype, so the arithmetic stays in it. The
    inner loops run over P x H in memory order, each (n, p, j) a sequence of its own."""
    n, t_len, p, hidden = m.shape
    o = one[0]
    for i in range(n):
        for q in range(p):
            for j in range(hidden):
                mm = m[i, 0, q, j]
                out[i, 0, q, j] = (o + mm) * h0[i, 0, q, j] - mm * kc[i, 0, q, hidden + j]
        for t in range(1, t_len):
            for q in range(p):
                for j in range(hidden):
                    mm = m[i, t, q, j]
                    out[i, t, q, j] = (o + mm) * out[i, t - 1, q, j] - mm * kc[i, t, q, hidden + j]


@njit(**_JIT)
def gated_backward(s: np.ndarray, m: np.ndarray, kc: np.ndarray, h: np.ndarray, h0: np.ndarray, grad: np.ndarray,
                   grad_last: np.ndarray, consts: np.ndarray, grad_kc: np.ndarray, grad_h0: np.ndarray) -> None:
    """Gradients of ``gated_forward`` through the gates, given dL/dh = ``grad`` [N, T, P, H] and, for a copy of the
    last state, ``grad_last`` [N, 1, P, H], in one reverse pass.

    With g_t = grad_t + a_{t+1} g_{t+1} (a = 1 + m) and h_{-1} = h0: dL/dc_t = -m_t g_t, dL/dm_t = g_t (h_{t-1} - c_t);
    m = expm1(-D s) gives dm/ds = -D a, and s = sigmoid(k) gives ds/dk = s (1 - s). Writes dL/dk and dL/dc into
    grad_kc [N, T, P, 2H] (the layout of kc) and dL/dh0 = a_0 g_0 into grad_h0. ``consts``: [1, D] in the dtype."""
    n, t_len, p, hidden = m.shape
    o, d = consts[0], consts[1]
    carry = np.empty_like(h0[0, 0])  # a_{t+1} g_{t+1}, [P, H]
    for i in range(n):
        carry[:] = grad_last[i, 0]
        for t in range(t_len - 1, -1, -1):
            prev = h[i, t - 1] if t > 0 else h0[i, 0]  # [P, H] rows, so the inner loop has no branch
            g_row, m_row, s_row, kc_row, out_row = grad[i, t], m[i, t], s[i, t], kc[i, t], grad_kc[i, t]
            for q in range(p):
                for j in range(hidden):
                    g = g_row[q, j] + carry[q, j]
                    mm = m_row[q, j]
                    a = o + mm
                    ss = s_row[q, j]
                    out_row[q, hidden + j] = -(mm * g)
                    out_row[q, j] = g * (prev[q, j] - kc_row[q, hidden + j]) * (-d * a) * (ss * (o - ss))
                    carry[q, j] = a * g
        grad_h0[i, 0] = carry


@njit(**_JIT)
def affine_logits(a: np.ndarray, b: np.ndarray, held: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """The affine head's logit out[n, r, t, j] = a[n, t, j] + b[n, t, j] * (held[n, r, t, j] * scale[j]), the state
    projection's two planes a, b [N, T, A] shared by the R rows of held [N, R, T, A]: the same operations, in the same
    order, as the torch formula (``cross._affine_alpha``), so the same bits."""
    n, r_len, t_len, a_len = held.shape
    for i in range(n):
        for r in range(r_len):
            for t in range(t_len):
                for j in range(a_len):
                    out[i, r, t, j] = a[i, t, j] + b[i, t, j] * (held[i, r, t, j] * scale[j])


@njit(**_JIT)
def affine_backward(a: np.ndarray, b: np.ndarray, held: np.ndarray, scale: np.ndarray, grad: np.ndarray,
                    sig: np.ndarray, consts: np.ndarray, grad_a: np.ndarray, grad_b: np.ndarray) -> None:
    """The affine head's backward in one pass: with u = held * scale and raw the logit (``affine_logits``),
    g = grad * sigmoid(raw) where the cap does not bind (raw + floor < cap: the test is exact when cap > floor + 20,
    where softplus returns its argument) and 0 where it does; grad_a = sum_r g, grad_b = sum_r g u [N, T, A].
    ``sig`` = sigmoid(raw) [N, R, T, A] (torch's); ``consts`` = [floor, cap] in the dtype."""
    n, r_len, t_len, a_len = held.shape
    floor, cap = consts[0], consts[1]
    zero = floor - floor
    grad_a[:] = 0
    grad_b[:] = 0
    for i in range(n):
        for r in range(r_len):
            for t in range(t_len):
                for j in range(a_len):
                    u = held[i, r, t, j] * scale[j]
                    raw = a[i, t, j] + b[i, t, j] * u
                    g = grad[i, r, t, j] * sig[i, r, t, j] if raw + floor < cap else zero
                    grad_a[i, t, j] += g
                    grad_b[i, t, j] += g * u
