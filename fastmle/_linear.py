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
from numba import get_num_threads, njit, prange

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


@njit(**KERNEL_OPTIONS)
def _axpy4(y, a0, a1, a2, a3, X, i):
    # rows i..i+3 of X through one array: with four separate row arrays LLVM gives up
    # on the run-time alias checks and the loop stays scalar (measured)
    for j in range(y.shape[0]):
        y[j] += (a0 * np.float64(X[i, j]) + a1 * np.float64(X[i + 1, j])
                 + a2 * np.float64(X[i + 2, j]) + a3 * np.float64(X[i + 3, j]))


@njit(**KERNEL_OPTIONS)
def _predict_rows(X, Wt, Z, i0, i1):
    i = i0
    while i + 4 <= i1:  # four rows per pass over a row of Wt
        for m in range(Wt.shape[0]):
            s0, s1, s2, s3 = _dot4(Wt[m, 1:], X[i], X[i + 1], X[i + 2], X[i + 3])
            Z[i, m] = Wt[m, 0] + s0
            Z[i + 1, m] = Wt[m, 0] + s1
            Z[i + 2, m] = Wt[m, 0] + s2
            Z[i + 3, m] = Wt[m, 0] + s3
        i += 4
    for r in range(i, i1):
        for m in range(Wt.shape[0]):
            Z[r, m] = Wt[m, 0] + _dot(X[r], Wt[m, 1:])


@njit(**PARALLEL_OPTIONS)
def _predictor_kernel(X, Wt, Z):
    n = X.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        _predict_rows(X, Wt, Z, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit(**KERNEL_OPTIONS)
def _backprop_rows(X, R, p, i0, i1):
    i = i0
    while i + 4 <= i1:  # four rows per pass over p: four multiply-adds per load/store
        for m in range(R.shape[1]):
            r0, r1, r2, r3 = R[i, m], R[i + 1, m], R[i + 2, m], R[i + 3, m]
            p[m, 0] += r0 + r1 + r2 + r3
            _axpy4(p[m, 1:], r0, r1, r2, r3, X, i)
        i += 4
    for r in range(i, i1):
        for m in range(R.shape[1]):
            p[m, 0] += R[r, m]
            _axpy(p[m, 1:], R[r, m], X[r])


@njit(**KERNEL_OPTIONS)
def _add_parts(parts, out):
    """out += parts[0] + parts[1] + ..., in chunk order. Not ``out += parts[c]`` in the
    parallel kernel: Numba makes that a parfor, one thread launch per chunk (25x slower
    under the workqueue layer, measured)."""
    flat = out.reshape(-1)
    for c in range(parts.shape[0]):
        part = parts[c].reshape(-1)
        for j in range(flat.shape[0]):
            flat[j] += part[j]


@njit(**PARALLEL_OPTIONS)
def _backprop_kernel(X, R, G):
    n = X.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.zeros((nch,) + G.shape)
    for c in prange(nch):
        _backprop_rows(X, R, parts[c], c * CHUNK, min(n, (c + 1) * CHUNK))
    _add_parts(parts, G)


@njit(**KERNEL_OPTIONS)
def _dot4(u, t0, t1, t2, t3):
    s0 = s1 = s2 = s3 = 0.0
    for j in range(u.shape[0]):
        s0 += u[j] * t0[j]
        s1 += u[j] * t1[j]
        s2 += u[j] * t2[j]
        s3 += u[j] * t3[j]
    return s0, s1, s2, s3


@njit(**KERNEL_OPTIONS)
def _transpose(X, i0, i1, T):
    # tiles of 16 rows: the writes to each row of T stay within a cache line or two
    d = X.shape[1]
    for t in range(i0, i1, 16):
        e = min(i1, t + 16)
        for i in range(t, e):
            T[0, i - i0] = 1.0
        for a in range(d):
            for i in range(t, e):
                T[a + 1, i - i0] = X[i, a]


@njit(**KERNEL_OPTIONS)
def _scaled(w, T, U):
    for a in range(T.shape[0]):
        for i in range(w.shape[0]):
            U[a, i] = w[i] * T[a, i]


@njit(**KERNEL_OPTIONS)
def _dot2x4(u0, u1, t0, t1, t2, t3):
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
    for j in range(u0.shape[0]):
        a, b = u0[j], u1[j]
        s00 += a * t0[j]
        s01 += a * t1[j]
        s02 += a * t2[j]
        s03 += a * t3[j]
        s10 += b * t0[j]
        s11 += b * t1[j]
        s12 += b * t2[j]
        s13 += b * t3[j]
    return s00, s01, s02, s03, s10, s11, s12, s13


@njit(**KERNEL_OPTIONS)
def _gram_block(U, T, h):
    # h[a, b] += sum_i w_i x_ia x_ib, as dot products of rows of the transposed block:
    # unit stride, vectorized, 2 x 4 outputs per sweep (8 multiply-adds per 6 loads).
    d1 = h.shape[0]
    a = 0
    while a + 2 <= d1:
        b = 0
        while b + 4 <= a + 1:
            s = _dot2x4(U[a], U[a + 1], T[b], T[b + 1], T[b + 2], T[b + 3])
            for c in range(4):
                h[a, b + c] += s[c]
                h[a + 1, b + c] += s[4 + c]
            b += 4
        for c in range(b, a + 2):
            s0, s1, s2, s3 = _dot4(T[c], U[a], U[a + 1], U[a + 1], U[a + 1])
            if c <= a:
                h[a, c] += s0
            h[a + 1, c] += s1
        a += 2
    if a < d1:
        for c in range(0, a + 1, 4):
            e = min(a + 1, c + 4)
            s0, s1, s2, s3 = _dot4(U[a], T[c], T[min(c + 1, e - 1)], T[min(c + 2, e - 1)],
                                   T[min(c + 3, e - 1)])
            h[a, c] += s0
            if c + 1 < e:
                h[a, c + 1] += s1
            if c + 2 < e:
                h[a, c + 2] += s2
            if c + 3 < e:
                h[a, c + 3] += s3


@njit(**PARALLEL_OPTIONS)
def _gram_kernel(X, Wts, H, runs):
    n = X.shape[0]
    d1 = H.shape[1]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.zeros((nch,) + H.shape)
    # the chunks in ``runs`` runs, each with its own two buffers: buffers allocated per
    # chunk cost an mmap/munmap each where malloc's mmap threshold is fixed (Dask
    # workers set MALLOC_TRIM_THRESHOLD_), which made the kernel ~3x slower there
    for r in prange(runs):
        T = np.empty((d1, CHUNK))
        U = np.empty((d1, CHUNK))
        for c in range(r * nch // runs, (r + 1) * nch // runs):
            i0, i1 = c * CHUNK, min(n, (c + 1) * CHUNK)
            Tc, Uc = T, U
            if i1 - i0 < CHUNK:  # the last chunk: buffers of its size (C-contiguous)
                Tc = np.empty((d1, i1 - i0))
                Uc = np.empty((d1, i1 - i0))
            _transpose(X, i0, i1, Tc)
            for q in range(Wts.shape[1]):
                _scaled(Wts[i0:i1, q], Tc, Uc)
                _gram_block(Uc, Tc, parts[c, q])
    _add_parts(parts, H)


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
        runs = min((X.shape[0] + CHUNK - 1) // CHUNK, 4 * get_num_threads())
        launch(_gram_kernel, X, Wts, H, runs)


def symmetrize(H: np.ndarray) -> np.ndarray:
    """Copy the lower triangles of a stack of square matrices into the upper ones."""
    lower = np.tril(H)
    return lower + np.swapaxes(np.tril(H, -1), -1, -2)
