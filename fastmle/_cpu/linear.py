"""Row-block products for linear models: Z = [1, X] W, G = [1, X]^T R, H = [1, X]^T diag(w) [1, X].

The estimators pass over X in row blocks that stay in cache and call these three
products on each block, around a fused loss kernel. Z and G are memory-bound
Numba kernels; H is compute-bound and goes to BLAS. X is read in its own dtype
(float32 is never copied to float64); every product is accumulated in float64.
Row sums are split into fixed chunks of ``CHUNK`` rows, reduced in a fixed order,
so the results do not depend on the number of threads.

The parameters are held transposed, ``Wt`` of shape (k, d + 1), column 0 being
the intercept: each of the k linear predictors is one contiguous row.
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import get_num_threads, njit, prange

from .elementwise import _bce_logits_point
from .jit import KERNEL_OPTIONS, PARALLEL_OPTIONS, POINTWISE_OPTIONS
from .threads import launch

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
        y[j] += (
            a0 * np.float64(X[i, j])
            + a1 * np.float64(X[i + 1, j])
            + a2 * np.float64(X[i + 2, j])
            + a3 * np.float64(X[i + 3, j])
        )


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


@njit(**POINTWISE_OPTIONS)
def _bernoulli_row(z, y, sw, unit, i, perfect, cnt):
    # (weighted loss, gradient) of one row, and its [misclassified, perfect] counts
    lz, rz = _bce_logits_point(z, y[i], 1.0)
    m = (2.0 * y[i] - 1.0) * z
    if unit or sw[i] > 0.0:
        if m <= 0.0:
            cnt[0] += 1
        elif m > perfect:
            cnt[1] += 1
    if unit:
        return lz, rz
    return sw[i] * lz, sw[i] * rz


@njit(**POINTWISE_OPTIONS)
def _bernoulli_rows(X, wt, y, sw, perfect, p, cnt, Z, i0, i1):
    # the Bernoulli NLL of rows i0..i1 and p += its gradient, each row read once: the
    # dot products and updates vectorize (fast-math helpers), the point formula is
    # the public BCE-with-logits one, without fast-math (same bits as that loss)
    loss = 0.0
    b = wt[0]
    w = wt[1:]
    unit = sw.shape[0] == 0
    i = i0
    while i + 4 <= i1:
        s0, s1, s2, s3 = _dot4(w, X[i], X[i + 1], X[i + 2], X[i + 3])
        if Z.shape[0]:
            Z[i], Z[i + 1], Z[i + 2], Z[i + 3] = b + s0, b + s1, b + s2, b + s3
        l0, r0 = _bernoulli_row(b + s0, y, sw, unit, i, perfect, cnt)
        l1, r1 = _bernoulli_row(b + s1, y, sw, unit, i + 1, perfect, cnt)
        l2, r2 = _bernoulli_row(b + s2, y, sw, unit, i + 2, perfect, cnt)
        l3, r3 = _bernoulli_row(b + s3, y, sw, unit, i + 3, perfect, cnt)
        loss += (l0 + l1) + (l2 + l3)
        p[0] += (r0 + r1) + (r2 + r3)
        _axpy4(p[1:], r0, r1, r2, r3, X, i)
        i += 4
    for r in range(i, i1):
        zr = b + _dot(X[r], w)
        if Z.shape[0]:
            Z[r] = zr
        lr, rr = _bernoulli_row(zr, y, sw, unit, r, perfect, cnt)
        loss += lr
        p[0] += rr
        _axpy(p[1:], rr, X[r])
    return loss


@njit(**PARALLEL_OPTIONS)
def _bernoulli_kernel(X, wt, y, sw, perfect, G, counts, Z):
    n = X.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.zeros((nch, 1, G.shape[1]))
    cnts = np.zeros((nch, 2), np.int64)
    losses = np.zeros(nch)
    for c in prange(nch):
        losses[c] = _bernoulli_rows(
            X, wt, y, sw, perfect, parts[c, 0], cnts[c], Z, c * CHUNK, min(n, (c + 1) * CHUNK)
        )
    _add_parts(parts, G)
    loss = 0.0
    for c in range(nch):
        loss += losses[c]
        counts[0] += cnts[c, 0]
        counts[1] += cnts[c, 1]
    return loss


_NO_WEIGHTS = np.zeros(0)


def bernoulli_pass(
    X: np.ndarray,
    Wt: np.ndarray,
    y: np.ndarray,
    sw,
    G: np.ndarray,
    counts: np.ndarray,
    perfect: float,
    Z=None,
) -> float:
    """The summed (weighted) Bernoulli NLL of rows ``X`` with log-odds
    ``Wt[0, 0] + X . Wt[0, 1:]``, ``G += its gradient`` (shape (1, d + 1)) and
    ``counts += [misclassified rows, rows of margin > perfect]`` (positive weight):
    the predictor, the BCE-with-logits point formula and the back-propagation fused
    in one read of each row (y float64 of 0/1, sw float64 or None). ``Z``: a float64
    array of n, if given, receives the log-odds."""
    if not X.shape[0]:
        return 0.0
    sw = _NO_WEIGHTS if sw is None else sw
    Z = _NO_WEIGHTS if Z is None else Z
    return float(launch(_bernoulli_kernel, X, Wt[0], y, sw, perfect, G, counts, Z))


@njit(**POINTWISE_OPTIONS)
def _poisson_row(z, y, sw, unit, i):
    # (weighted NLL without the log(y!) constant, gradient) of one row at log-mean z:
    # mu - y z and mu - y; exp overflows to inf only where the NLL itself is inf
    mu = np.exp(z)
    if unit:
        return mu - y[i] * z, mu - y[i]
    return sw[i] * (mu - y[i] * z), sw[i] * (mu - y[i])


@njit(**POINTWISE_OPTIONS)
def _poisson_rows(X, wt, y, sw, off, p, Z, i0, i1):
    # the Poisson NLL of rows i0..i1 and p += its gradient, each row read once (as
    # _bernoulli_rows); ``off``: the per-row offsets, or empty
    loss = 0.0
    b = wt[0]
    w = wt[1:]
    unit = sw.shape[0] == 0
    has_off = off.shape[0] > 0
    i = i0
    while i + 4 <= i1:
        s0, s1, s2, s3 = _dot4(w, X[i], X[i + 1], X[i + 2], X[i + 3])
        z0, z1, z2, z3 = b + s0, b + s1, b + s2, b + s3
        if has_off:
            z0, z1, z2, z3 = z0 + off[i], z1 + off[i + 1], z2 + off[i + 2], z3 + off[i + 3]
        if Z.shape[0]:
            Z[i], Z[i + 1], Z[i + 2], Z[i + 3] = z0, z1, z2, z3
        l0, r0 = _poisson_row(z0, y, sw, unit, i)
        l1, r1 = _poisson_row(z1, y, sw, unit, i + 1)
        l2, r2 = _poisson_row(z2, y, sw, unit, i + 2)
        l3, r3 = _poisson_row(z3, y, sw, unit, i + 3)
        loss += (l0 + l1) + (l2 + l3)
        p[0] += (r0 + r1) + (r2 + r3)
        _axpy4(p[1:], r0, r1, r2, r3, X, i)
        i += 4
    for r in range(i, i1):
        zr = b + _dot(X[r], w)
        if has_off:
            zr += off[r]
        if Z.shape[0]:
            Z[r] = zr
        lr, rr = _poisson_row(zr, y, sw, unit, r)
        loss += lr
        p[0] += rr
        _axpy(p[1:], rr, X[r])
    return loss


@njit(**PARALLEL_OPTIONS)
def _poisson_kernel(X, wt, y, sw, off, G, Z):
    n = X.shape[0]
    nch = (n + CHUNK - 1) // CHUNK
    parts = np.zeros((nch, 1, G.shape[1]))
    losses = np.zeros(nch)
    for c in prange(nch):
        losses[c] = _poisson_rows(
            X, wt, y, sw, off, parts[c, 0], Z, c * CHUNK, min(n, (c + 1) * CHUNK)
        )
    _add_parts(parts, G)
    loss = 0.0
    for c in range(nch):
        loss += losses[c]
    return loss


def poisson_pass(
    X: np.ndarray, Wt: np.ndarray, y: np.ndarray, sw, G: np.ndarray, offset=None, Z=None
) -> float:
    """The summed (weighted) Poisson NLL ``sum w (mu - y eta)`` (without the constant
    ``log(y!)``) of rows ``X`` with log-mean ``eta = Wt[0, 0] + X . Wt[0, 1:] + offset``
    and ``G += its gradient`` (shape (1, d + 1)): the predictor, ``mu = exp(eta)`` and
    the back-propagation fused in one read of each row (y, sw, offset float64 or None).
    ``Z``: a float64 array of n, if given, receives eta (offset included)."""
    if not X.shape[0]:
        return 0.0
    sw = _NO_WEIGHTS if sw is None else sw
    off = _NO_WEIGHTS if offset is None else offset
    Z = _NO_WEIGHTS if Z is None else Z
    return float(launch(_poisson_kernel, X, Wt[0], y, sw, off, G, Z))


@njit(**PARALLEL_OPTIONS)
def _lgamma1_kernel(y, out):
    for i in prange(y.shape[0]):
        out[i] = math.lgamma(y[i] + 1.0)


def lgamma1(y: np.ndarray) -> np.ndarray:
    """log(y!) = lgamma(y + 1) of each element of a float64 array."""
    out = np.empty(y.shape[0])
    if y.shape[0]:
        launch(_lgamma1_kernel, y, out)
    return out


def group_sums(codes: np.ndarray, M: np.ndarray, S: np.ndarray) -> None:
    """``S[codes[i]] += M[i]`` for each row i, in row order within each group."""
    if not M.shape[0]:
        return
    order = np.argsort(codes, kind="stable")
    c = codes[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    S[c[starts]] += np.add.reduceat(M[order], starts, axis=0)


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


GRAM_PARTS = 4  # row slices of a block, each its own product: fixed, so the sums are too
_pool = None


def _gram_pool():
    """Threads for the slices (BLAS runs on one thread each, the GIL released): a
    second BLAS thread inside one product contends with Numba's threads, separate
    products in parallel do not (1e6 x 50 Hessian pass, 2 cores: 0.26 s on one
    thread, 0.32 s with OpenBLAS's two)."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(
            max(1, min(GRAM_PARTS, get_num_threads())), thread_name_prefix="fastmle-gram"
        )
    return _pool


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _gram_part(Xf, w):
    """(sum w x x^T, sum w x) of some rows, as BLAS products."""
    if (w >= 0).all():
        s = np.sqrt(w)
        A = Xf * s[:, None]
        return A.T @ A, s @ A  # NumPy calls syrk for a product with its transpose
    A = Xf * w[:, None]
    return A.T @ Xf, A.sum(axis=0)


def gram(X: np.ndarray, Wts: np.ndarray, H: np.ndarray) -> None:
    """H[q] += sum_i Wts[i, q] [1, X[i]] [1, X[i]]^T, by BLAS on a float64 copy of X.

    H has shape (q, d + 1, d + 1), float64; call :func:`symmetrize` once at the end.
    Non-negative weights (Hessians of convex NLLs) take ``dsyrk`` on sqrt(w) X: half
    the multiply-adds of a general product, and far more of the cores' FMA throughput
    than the hand-written Numba kernel it replaced. The block is cut in
    ``GRAM_PARTS`` fixed row slices, computed in parallel (one BLAS thread each:
    call it under ``threadpoolctl`` limits, as the solver does) and added in slice
    order: the bits do not depend on the thread count (tests/test_models.py).
    """
    n = X.shape[0]
    if not n:
        return
    Xf = np.asarray(X, dtype=np.float64)
    cuts = [n * i // GRAM_PARTS for i in range(GRAM_PARTS + 1)]
    for q in range(Wts.shape[1]):
        w = Wts[:, q]
        if n < 1024 * GRAM_PARTS:
            parts = [_gram_part(Xf, w)]
        else:
            parts = list(
                _gram_pool().map(
                    _gram_part,
                    [Xf[a:b] for a, b in zip(cuts, cuts[1:])],
                    [w[a:b] for a, b in zip(cuts, cuts[1:])],
                )
            )
        for XtX, wx in parts:
            H[q, 1:, 1:] += XtX
            H[q, 0, 1:] += wx
            H[q, 1:, 0] += wx
        H[q, 0, 0] += w.sum()


KRON_BYTES = 8 << 20  # the rows of p (x) [1, x] formed at a time in softmax_hessian


def _kron_part(X, P, s):
    """sum_i s_i^2 (diag(p_i) - p_i p_i^T) (x) [1, x_i] [1, x_i]^T over some rows."""
    m, d1 = P.shape[1], X.shape[1] + 1
    Xa = np.empty((X.shape[0], d1))
    Xa[:, 0] = 1.0
    Xa[:, 1:] = X
    Ps = P * s[:, None]
    M = (Ps[:, :, None] * Xa[:, None, :]).reshape(Xa.shape[0], m * d1)
    H = -(M.T @ M)  # syrk
    for a in range(m):
        A = Xa * np.sqrt(Ps[:, a] * s)[:, None]  # sqrt(w p_a) [1, x]
        H[a * d1 : (a + 1) * d1, a * d1 : (a + 1) * d1] += A.T @ A
    return H


def softmax_hessian(X: np.ndarray, P: np.ndarray, sw, H: np.ndarray) -> None:
    """H += sum_i w_i (diag(p_i) - p_i p_i^T) (x) [1, X[i]] [1, X[i]]^T: the Hessian of
    the softmax NLL in the logits of the m classes that P holds (P: (n, m)
    probabilities, H: (m (d + 1), m (d + 1)), class-major). Per slice of rows, two
    BLAS products: m weighted Grams (syrk) on the diagonal blocks, and one syrk of
    the rows sqrt(w_i) p_i (x) [1, x_i] for the rank-one part: the multiply-adds of
    the m (m + 1) / 2 pairwise weighted Grams in one large product, and memory
    O(m d) per row instead of a weight per class pair (1000 classes used to exhaust
    memory). Slices of ``KRON_BYTES`` are dealt to ``GRAM_PARTS`` lanes that run in
    parallel on the pool of :func:`gram`, each summing its slices in order, and the
    lanes are added in order: the bits do not depend on the thread count.
    """
    n, d = X.shape
    m = P.shape[1]
    if not n:
        return
    s = np.ones(n) if sw is None else np.sqrt(sw)
    rows = max(1, KRON_BYTES // (8 * m * (d + 1)))
    cuts = list(range(0, n, rows)) + [n]

    def lane(j):  # slices j, j + GRAM_PARTS, ...: one sum per lane, in slice order
        out = None
        for i in range(j, len(cuts) - 1, GRAM_PARTS):
            part = _kron_part(
                X[cuts[i] : cuts[i + 1]], P[cuts[i] : cuts[i + 1]], s[cuts[i] : cuts[i + 1]]
            )
            out = part if out is None else out + part
        return out

    for part in _gram_pool().map(lane, range(min(GRAM_PARTS, len(cuts) - 1))):
        H += part


def symmetrize(H: np.ndarray) -> np.ndarray:
    """Copy the lower triangles of a stack of square matrices into the upper ones."""
    lower = np.tril(H)
    return lower + np.swapaxes(np.tril(H, -1), -1, -2)
