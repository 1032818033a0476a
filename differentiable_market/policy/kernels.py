"""Compiled CPU loops (numba) of the policies' memory-bound elementwise work: the minimal GRU's gated recurrence
h_t = a_t * h_{t-1} + (1 - a_t) * c_t and its backward through the gates; the cross-sectional policy's affine head
in teacher forcing (its logit, and its backward summed over rollouts).

On a CPU the recurrence and the gates' algebra are memory-bound: per element a few multiply-adds, and what costs is
how many times the [N, T, P, H] tensors are read and written. Done in torch, the gates alone take a dozen passes
each way (a, b, their gradients, the chain rule through sigmoid and expm1); these loops make one pass each way, with
the transcendentals (sigmoid, expm1) left to torch, whose kernels are vectorised (numba's ``exp`` is a scalar libm
call without Intel's SVML). The inner loops run over the last two dims in memory order (contiguous, vectorised by the
compiler; the recurrence's over all P x H states of a bar at once), so the cross-sectional policy's [windows, bars,
assets, H] tokens need no transpose. The head's loops save its chain rule's passes in the same way. They run on one
thread: numba's parallel loops would start a second OpenMP runtime beside torch's, two pools of spinning threads on
the same cores (two Python threads over halves of the head's rows, tried, saved 6%: the loops are memory-bound).
Plain IEEE arithmetic (no fastmath), so the result is the sequential recurrence as written, and cutting a sequence
into pieces continued from each last state gives the same bits. numba caches the machine code on disk
(``cache=True``): only a process that finds no cache compiles (seconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def gated_forward(m: np.ndarray, kc: np.ndarray, h0: np.ndarray, one: np.ndarray, out: np.ndarray) -> None:
    """The minimal GRU's recurrence from its gates: out_t = (1 + m_t) * out_{t-1} - m_t * c_t over dim 1, from
    out_{-1} = h0. m = a - 1 = -z [N, T, P, H]; the candidates c are the last H of kc [N, T, P, 2H] (the gate logits
    are the first H); h0 [N, 1, P, H]; ``one`` a 1-element array of the dtype, so the arithmetic stays in it. Every
    array C-contiguous (``reshape`` raises otherwise); each (n, p, j) a sequence of its own.

    Bar t is one flat loop over its P x H states (``_candidates`` first copies that bar's candidates, every other
    run of H in kc, into a buffer): the compiler vectorises a loop whose arrays may overlap behind a test of the
    overlap, which a loop of P x H runs once per bar and a loop over H ran once per 32 states. In the 256-asset
    history pass this loop takes 17 ms where the nested one took 55 ms, though alone, on arrays of its own, the nested
    one was as fast: why it slowed down inside the pass was not pinned down."""
    n, t_len, p, hidden = m.shape
    o = one[0]
    ph = p * hidden
    cand = np.empty(ph, dtype=m.dtype)
    for i in range(n):
        for t in range(t_len):
            prev = out[i, t - 1].reshape(ph) if t > 0 else h0[i, 0].reshape(ph)
            _candidates(kc[i, t], cand)
            m_row, out_row = m[i, t].reshape(ph), out[i, t].reshape(ph)
            for k in range(ph):
                mm = m_row[k]
                out_row[k] = (o + mm) * prev[k] - mm * cand[k]


@njit(**_JIT)
def _candidates(kc_row: np.ndarray, cand: np.ndarray) -> None:
    """The last H of each row of kc_row [P, 2H] into cand [P x H]."""
    p, hidden = kc_row.shape[0], kc_row.shape[1] // 2
    for q in range(p):
        for j in range(hidden):
            cand[q * hidden + j] = kc_row[q, hidden + j]


@njit(**_JIT)
def gated_backward(s: np.ndarray, m: np.ndarray, kc: np.ndarray, h: np.ndarray, h0: np.ndarray, grad: np.ndarray,
                   grad_last: np.ndarray, consts: np.ndarray, grad_kc: np.ndarray, grad_h0: np.ndarray) -> None:
    """Gradients of ``gated_forward`` through the gates, given dL/dh = ``grad`` [N, T, P, H] and, for a copy of the
    last state, ``grad_last`` [N, 1, P, H], in one reverse pass.

    With g_t = grad_t + a_{t+1} g_{t+1} (a = 1 + m) and h_{-1} = h0: dL/dc_t = -m_t g_t, dL/dm_t = g_t (h_{t-1} - c_t);
    m = expm1(-D s) gives dm/ds = -D a, and s = sigmoid(k) gives ds/dk = s (1 - s). Writes dL/dk and dL/dc into
    grad_kc [N, T, P, 2H] (the layout of kc) and dL/dh0 = a_0 g_0 into grad_h0. ``consts``: [1, D] in the dtype.
    Every array C-contiguous. As in the forward, bar t is one flat loop over its P x H states, reading the
    candidates from a buffer and writing both gradients to buffers that are then spread into grad_kc's layout."""
    n, t_len, p, hidden = m.shape
    o, d = consts[0], consts[1]
    ph = p * hidden
    carry = np.empty(ph, dtype=m.dtype)  # a_{t+1} g_{t+1}
    cand, grad_k, grad_c = np.empty_like(carry), np.empty_like(carry), np.empty_like(carry)
    for i in range(n):
        carry[:] = grad_last[i, 0].reshape(ph)
        for t in range(t_len - 1, -1, -1):
            prev = h[i, t - 1].reshape(ph) if t > 0 else h0[i, 0].reshape(ph)
            _candidates(kc[i, t], cand)
            g_row, m_row, s_row = grad[i, t].reshape(ph), m[i, t].reshape(ph), s[i, t].reshape(ph)
            for k in range(ph):
                g = g_row[k] + carry[k]
                mm = m_row[k]
                a = o + mm
                ss = s_row[k]
                grad_c[k] = -(mm * g)
                grad_k[k] = g * (prev[k] - cand[k]) * (-d * a) * (ss * (o - ss))
                carry[k] = a * g
            out_row = grad_kc[i, t]
            for q in range(p):
                for j in range(hidden):
                    out_row[q, j] = grad_k[q * hidden + j]
                    out_row[q, hidden + j] = grad_c[q * hidden + j]
        grad_h0[i, 0] = carry.reshape(p, hidden)


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
