"""Row-block kernels for linear models: Z = [1, X] W, G = [1, X]^T R, H = [1, X]^T diag(w) [1, X].

The estimators pass over X in row blocks that stay in cache and call these three
kernels on each block, around a fused loss kernel. X is read in its own dtype
(float32 is never copied to float64); every product is accumulated in float64.
Row sums are split into fixed chunks of ``CHUNK`` rows, reduced in a fixed order,
so the results do not depend on the number of threads.

The parameters are held transposed, ``Wt`` of shape (k, d + 1), column 0 being
the intercept: each of the k linear predictors is one contiguous row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._jit import KERNEL_OPTIONS, PARALLEL_OPTIONS
from ._threading import launch

CHUNK = 1024


@njit(**KERNEL_OPTIONS)
def _dot(x, w):
    s = 0.0
    for j in range(x.shape[0]):
        s += np.float64(x[j]) * w[j]
    return s


@njit(**KERNEL_OPTIONS)
def _axpy(y, a, x):
    for j in range(y.shape[0]):
        y[j] += a * np.float64(x[j])


@njit(**PARALLEL_OPTIONS)
def _predictor_kernel(X, Wt, Z):
    n = X.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            for m in range(Wt.shape[0]):
                Z[i, m] = Wt[m, 0] + _dot(X[i], Wt[m, 1:])


@njit(**PARALLEL_OPTIONS)
def _backprop_kernel(X, R, G):
    n = X.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.zeros((nch,) + G.shape)
    for c in prange(nch):
        p = parts[c]
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            for m in range(R.shape[1]):
                r = R[i, m]
                p[m, 0] += r
                _axpy(p[m, 1:], r, X[i])
    for c in range(nch):
        G += parts[c]


@njit(**KERNEL_OPTIONS)
def _axpy4(y, a0, a1, a2, a3, x0, x1, x2, x3):
    for j in range(y.shape[0]):
        y[j] += (a0 * np.float64(x0[j]) + a1 * np.float64(x1[j])
                 + a2 * np.float64(x2[j]) + a3 * np.float64(x3[j]))


@njit(**KERNEL_OPTIONS)
def _gram_rows(X, w, i0, i1, h):
    # Four rows per sweep over h: four multiply-adds per load and store of h[a, b].
    i = i0
    while i + 4 <= i1:
        x0, x1, x2, x3 = X[i], X[i + 1], X[i + 2], X[i + 3]
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        h[0, 0] += w0 + w1 + w2 + w3
        for a in range(1, h.shape[0]):
            b0 = w0 * np.float64(x0[a - 1])
            b1 = w1 * np.float64(x1[a - 1])
            b2 = w2 * np.float64(x2[a - 1])
            b3 = w3 * np.float64(x3[a - 1])
            h[a, 0] += b0 + b1 + b2 + b3
            _axpy4(h[a, 1:a + 1], b0, b1, b2, b3, x0[:a], x1[:a], x2[:a], x3[:a])
        i += 4
    for r in range(i, i1):
        h[0, 0] += w[r]
        for a in range(1, h.shape[0]):
            wa = w[r] * np.float64(X[r, a - 1])
            h[a, 0] += wa
            _axpy(h[a, 1:a + 1], wa, X[r, :a])


@njit(**PARALLEL_OPTIONS)
def _gram_kernel(X, Wts, H):
    n = X.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.zeros((nch,) + H.shape)
    for c in prange(nch):
        for q in range(Wts.shape[1]):  # one weighted Gram matrix at a time stays in L1
            _gram_rows(X, Wts[:, q], c * CHUNK, min(n, (c + 1) * CHUNK), parts[c, q])
    for c in range(nch):
        H += parts[c]


def predictor(X: np.ndarray, Wt: np.ndarray) -> np.ndarray:
    """Z[i, m] = Wt[m, 0] + X[i] . Wt[m, 1:], in float64, shape (n, k)."""
    Z = np.empty((X.shape[0], Wt.shape[0]))
    if X.shape[0]:
        launch(_predictor_kernel, X, Wt, Z)
    return Z


def backprop(X: np.ndarray, R: np.ndarray, G: np.ndarray) -> None:
    """G[m] += sum_i R[i, m] * [1, X[i]]; G has shape (k, d + 1), float64."""
    if X.shape[0]:
        launch(_backprop_kernel, X, R, G)


def gram(X: np.ndarray, Wts: np.ndarray, H: np.ndarray) -> None:
    """H[q] += sum_i Wts[i, q] [1, X[i]] [1, X[i]]^T, lower triangles only.

    H has shape (q, d + 1, d + 1), float64; call :func:`symmetrize` once at the end.
    """
    if X.shape[0]:
        launch(_gram_kernel, X, Wts, H)


def symmetrize(H: np.ndarray) -> np.ndarray:
    """Copy the lower triangles of a stack of square matrices into the upper ones."""
    lower = np.tril(H)
    return lower + np.swapaxes(np.tril(H, -1), -1, -2)
