"""Compiled CPU loops of the linear recurrence h_t = a_t * h_{t-1} + b_t (numba) and of its backward.

On a CPU the recurrence is memory-bound: per element it is one multiply-add, and what costs is how many times the
[N, T, H] tensors are read and written. The chunked closed form of ``encoders._scan`` makes a dozen passes forward
(cumulative sums, exponentials, a division, the carries) and about twenty backward (the flips of the reversed scan,
the pads); these loops make one pass each way, the inner loop over the hidden units (contiguous, vectorised by the
compiler). They run on one thread: a pass over a 256-asset history takes milliseconds, and numba's parallel loops
would start a second OpenMP runtime beside torch's, two pools of spinning threads on the same cores. The exponential
a = exp(log a) is left to torch, whose kernels are vectorised (numba's ``exp`` is a scalar libm call without Intel's
SVML). Plain IEEE arithmetic (no fastmath), so the result is the sequential recurrence as written, and cutting a
sequence into pieces continued from each last state gives the same bits. numba caches the machine code on disk
(``cache=True``): only a process that finds no cache compiles (seconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def recurrence_forward(a: np.ndarray, b: np.ndarray, h0: np.ndarray, out: np.ndarray) -> None:
    """out[i, t] = a[i, t] * out[i, t - 1] + b[i, t], from out[i, -1] = h0[i, 0]; all [N, T, H] (h0 [N, 1, H])."""
    n, t_len, hidden = a.shape
    for i in range(n):
        for j in range(hidden):
            out[i, 0, j] = a[i, 0, j] * h0[i, 0, j] + b[i, 0, j]
        for t in range(1, t_len):
            for j in range(hidden):
                out[i, t, j] = a[i, t, j] * out[i, t - 1, j] + b[i, t, j]


@njit(**_JIT)
def recurrence_backward(a: np.ndarray, h: np.ndarray, h0: np.ndarray, grad: np.ndarray, grad_a: np.ndarray,
                        grad_b: np.ndarray, grad_h0: np.ndarray) -> None:
    """Gradients of ``recurrence_forward`` given dL/dh = ``grad``: g_t = grad_t + a_{t+1} g_{t+1} backwards in time,
    dL/db_t = g_t, dL/da_t = g_t h_{t-1} (h_{-1} = h0), dL/dh0 = a_0 g_0; one reverse pass per row."""
    n, t_len, hidden = a.shape
    for i in range(n):
        last = t_len - 1
        for j in range(hidden):
            grad_b[i, last, j] = grad[i, last, j]
        for t in range(last - 1, -1, -1):
            for j in range(hidden):
                grad_b[i, t, j] = grad[i, t, j] + a[i, t + 1, j] * grad_b[i, t + 1, j]
                grad_a[i, t + 1, j] = grad_b[i, t + 1, j] * h[i, t, j]
        for j in range(hidden):
            grad_a[i, 0, j] = grad_b[i, 0, j] * h0[i, 0, j]
            grad_h0[i, 0, j] = a[i, 0, j] * grad_b[i, 0, j]
