"""logsumexp, log_softmax and softmax along an axis, stable for any finite input."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _rows
from ._jit import PARALLEL_OPTIONS
from ._threading import launch
from ._validation import as_float_array
from .cuda import gpu_twin
from .dask import dask_twin

__all__ = ["logsumexp", "log_softmax", "softmax"]

_LSE, _SOFTMAX, _LOG_SOFTMAX = 0, 1, 2


@njit(**PARALLEL_OPTIONS)
def _rows_kernel(x, out, lse, mode, per_chunk):
    """Per row of x (R, C): lse[i] (float64) always; softmax or log_softmax into out."""
    n, c_ = x.shape
    nchunks = (n + per_chunk - 1) // per_chunk
    for c in prange(nchunks):
        e = np.empty(c_, x.dtype)  # exp(x - max) of the current row
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


def _check_axis(ndim, axis):
    """``axis`` as an int in [0, ndim) (None stays None)."""
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if ndim == 0:
        # one element along its only "axis", as in torch and NumPy (softmax(0-d, 0) == 1)
        if axis in (0, -1):
            return None
        raise ValueError(f"axis {axis} is out of bounds for a 0-d array: use 0, -1 or None")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return int(axis) % ndim


def _as_rows(a, axis):
    x = as_float_array(a, "a")
    axis = _check_axis(x.ndim, axis)
    if axis is None:
        return x, x.reshape(1, -1), None
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    return x, moved.reshape(math.prod(moved.shape[:-1]), x.shape[axis]), axis


def _run(a, axis, mode):
    x, rows, ax = _as_rows(a, axis)
    r, c = rows.shape
    lse = np.empty(r)
    out = np.empty(rows.shape if mode != _LSE else (0, c), x.dtype)
    if r and c:
        launch(_rows_kernel, rows, out, lse, mode, _rows.rows_per_chunk(c))
    elif r:
        lse[:] = -np.inf  # empty sum
    return x, lse, out, ax


@dask_twin("logsumexp")
@gpu_twin("logsumexp")
def logsumexp(a, axis: int | None = -1, keepdims: bool = False):
    """log(sum(exp(a))) along ``axis``, without overflow.

    Parameters
    ----------
    a : array_like
        float32/float64 are computed in their own dtype; float16 in float32,
        integers and bool in float64.
    axis : int or None, default -1
        The axis to reduce; None reduces over all elements. A 0-d ``a`` takes 0,
        -1 or None (its one element).
    keepdims : bool, default False
        Keep the reduced axis with length 1.

    Returns
    -------
    ndarray or scalar of the computation dtype.

    Notes
    -----
    Like ``torch.logsumexp``: a slice whose max is +inf gives +inf, one of only
    -inf gives -inf, an empty slice gives -inf, NaN propagates.
    """
    x, lse, _, ax = _run(a, axis, _LSE)
    res = lse.astype(x.dtype)
    if ax is None:
        return res.reshape((1,) * x.ndim) if keepdims else x.dtype.type(res[0])
    shape = x.shape[:ax] + x.shape[ax + 1:]
    res = res.reshape(shape)
    return np.expand_dims(res, ax) if keepdims else res


def _normalized(a, axis, mode):
    x, _, out, ax = _run(a, axis, mode)
    if ax is None:
        return out.reshape(x.shape)
    moved = x.shape[:ax] + x.shape[ax + 1:] + (x.shape[ax],)
    return np.ascontiguousarray(np.moveaxis(out.reshape(moved), -1, ax))


@dask_twin("softmax")
@gpu_twin("softmax")
def softmax(a, axis: int | None = -1):
    """exp(a) / sum(exp(a)) along ``axis`` (``torch.softmax``, ``scipy.special.softmax``).

    A slice holding NaN, +inf, or only -inf gives NaN, as in PyTorch. Other
    arguments as in :func:`logsumexp`; the result has ``a``'s shape.
    """
    return _normalized(a, axis, _SOFTMAX)


@dask_twin("log_softmax")
@gpu_twin("log_softmax")
def log_softmax(a, axis: int | None = -1):
    """a - logsumexp(a) along ``axis``, computed as (a - max) - log(sum exp(a - max)).

    Edge cases and arguments as in :func:`softmax`.
    """
    return _normalized(a, axis, _LOG_SOFTMAX)
