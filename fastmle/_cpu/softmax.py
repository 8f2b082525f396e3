"""logsumexp, softmax and log_softmax along the rows of a 2-D view (kernels)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .._calls import LOG_SOFTMAX as _LOG_SOFTMAX
from .._calls import LSE as _LSE
from .._calls import SOFTMAX as _SOFTMAX
from . import rows as _rows
from .jit import DRIVER_OPTIONS
from .numerics import borrowed
from .threads import run_pieces


@njit(**DRIVER_OPTIONS)
def _rows_kernel(c0, c1, x, out, lse, mode, per_chunk):
    """Per row of chunks [c0, c1) of x (R, C): lse[i] (float64) always; softmax or
    log_softmax into out."""
    n, c_ = x.shape
    # the arguments, which the caller keeps alive, without refcounts (numerics.borrowed)
    x, out, lse = borrowed(x), borrowed(out), borrowed(lse)
    e = np.empty(c_, x.dtype)  # exp(x - max) of the current row
    for c in range(c0, c1):
        r1 = min(n, (c + 1) * per_chunk)
        m = _rows.row_max(x[c * per_chunk])  # every chunk has at least one row
        for i in range(c * per_chunk, r1):
            xi = x[i]
            nxt = x[i + 1] if i + 1 < r1 else xi
            oi = e if mode == _LSE else out[i]
            if not math.isfinite(m):
                # PyTorch: logsumexp is +-inf / NaN, softmax and log_softmax are NaN
                lse[i] = _rows.masked_logsumexp(xi)
                if mode != _LSE:
                    oi[:] = np.nan
                m = _rows.row_max(nxt)
                continue
            mi = m
            r, m = _rows.exp_row(xi, mi, e, nxt)
            ls = math.log1p(r)
            if mode == _SOFTMAX:
                _rows.scale_row(e, oi, _rows.cast(1.0 / (1.0 + r), x))
            elif mode == _LOG_SOFTMAX:
                _rows.log_softmax_row(xi, mi, _rows.cast(ls, x), oi)
            lse[i] = np.float64(mi) + ls


def run(rows, mode):
    """(float64 lse per row, softmax or log_softmax of the rows (empty for LSE)) of
    C-contiguous ``rows`` (R, C)."""
    r, c = rows.shape
    lse = np.empty(r)
    out = np.empty(rows.shape if mode != _LSE else (0, c), rows.dtype)
    if r and c:
        per = _rows.rows_per_chunk(c)
        run_pieces(_rows_kernel, (r + per - 1) // per, rows, out, lse, mode, per)
    elif r:
        lse[:] = -np.inf  # empty sum
    return lse, out
