"""Cutting tensors into chunks of rows, for the fused functions whose temporaries would otherwise be as large as
their inputs (the Dirichlet terms, the affine head)."""

from __future__ import annotations


def row_chunks(tensors: tuple, n: int, rows: int) -> list[tuple]:
    """``tensors`` cut along dim 0 into chunks of ``rows`` of its ``n`` rows; an entry that is None, 0-dim or not
    ``n`` rows long (broadcast along dim 0) is passed whole to every chunk. One chunk, the tensors as given, when
    ``rows >= n``."""
    if rows >= n:
        return [tuple(tensors)]

    def cut(x, i):
        if x is None or x.dim() == 0 or x.shape[0] != n:
            return x
        return x[i:i + rows]

    return [tuple(cut(x, i) for x in tensors) for i in range(0, n, rows)]
