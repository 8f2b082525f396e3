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

import functools
import math

import numpy as np
from numba import njit

from .cross_entropy import (
    SHORT_BLOCK_ELEMENTS,
    _col_exp,
    _col_max,
    _col_scale,
    _col_sums,
    _row_losses,
    _transpose_in,
    _transpose_out,
)
from .elementwise import _bce_logits_point
from .numerics import borrowed, exp, exp_nonpos, from_sortable
from .rows import sum64
from .jit import DRIVER_OPTIONS, KERNEL_OPTIONS, POINTWISE_OPTIONS, inner
from .threads import map_threads, run_pieces

CHUNK = 1024
_NO_WEIGHTS = np.zeros(0)  # an absent per-row argument
_NO_ROWS = np.zeros((0, 0))


@inner(**KERNEL_OPTIONS)
def _dot(x, w):
    s = 0.0
    for j in range(x.shape[0]):
        s += np.float64(x[j]) * w[j]
    return s


@inner(**KERNEL_OPTIONS)
def _axpy(y, a, x):
    for j in range(y.shape[0]):
        y[j] += a * np.float64(x[j])


@inner(**KERNEL_OPTIONS)
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


@inner(**KERNEL_OPTIONS)
def _dot4(u, t0, t1, t2, t3):
    s0 = s1 = s2 = s3 = 0.0
    for j in range(u.shape[0]):
        s0 += u[j] * t0[j]
        s1 += u[j] * t1[j]
        s2 += u[j] * t2[j]
        s3 += u[j] * t3[j]
    return s0, s1, s2, s3


@inner(**KERNEL_OPTIONS)
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


@njit(**DRIVER_OPTIONS)
def _predictor_kernel(c0, c1, X, Wt, Z):
    X, Wt, Z = borrowed(X), borrowed(Wt), borrowed(Z)
    n = X.shape[0]
    for c in range(c0, c1):
        _predict_rows(X, Wt, Z, c * CHUNK, min(n, (c + 1) * CHUNK))


@inner(**KERNEL_OPTIONS)
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


@inner(**KERNEL_OPTIONS)
def _squares_rows(X, sw, p, i0, i1):
    # rows i0..i1 as slices indexed from 0: indices from i0 could be negative as far as
    # LLVM knows (Numba wraps those around), and it loaded sw through gathers
    Xc, swc = X[i0:i1], sw[i0:i1] if sw.shape[0] else sw
    for i in range(i1 - i0):
        w = swc[i] if sw.shape[0] else 1.0
        p[0] += w
        for j in range(X.shape[1]):
            x = np.float64(Xc[i, j])
            p[j + 1] += w * (x * x)


@njit(**DRIVER_OPTIONS)
def _squares_kernel(c0, c1, X, sw, parts):
    X, sw, parts = borrowed(X), borrowed(sw), borrowed(parts)
    n = X.shape[0]
    for c in range(c0, c1):
        _squares_rows(X, sw, parts[c], c * CHUNK, min(n, (c + 1) * CHUNK))


def _chunks(n: int) -> int:
    return (n + CHUNK - 1) // CHUNK


def column_squares(X: np.ndarray, sw) -> np.ndarray:
    """[sum w, sum_i w_i x_ij^2 for each column j] of rows X (sw float64 or None), in
    float64: one parallel read of X (NaN or inf in X shows as a non-finite sum)."""
    out = np.zeros(X.shape[1] + 1)
    parts = np.zeros((_chunks(X.shape[0]), out.shape[0]))
    run_pieces(_squares_kernel, len(parts), X, _NO_WEIGHTS if sw is None else sw, parts)
    _add_parts(parts, out)
    return out


def _add_parts(parts: np.ndarray, out: np.ndarray) -> None:
    """out += the sum of the per-chunk parts over the chunks: their number and order
    are fixed by the rows, not the threads, and NumPy adds them in one fixed order."""
    out += parts.sum(axis=0)


@njit(**DRIVER_OPTIONS)
def _backprop_kernel(c0, c1, X, R, parts):
    X, R, parts = borrowed(X), borrowed(R), borrowed(parts)
    n = X.shape[0]
    for c in range(c0, c1):
        _backprop_rows(X, R, parts[c], c * CHUNK, min(n, (c + 1) * CHUNK))


# -- the fused passes of the one-predictor families -----------------------------------
# Each chunk of CHUNK rows goes through four loops: the linear predictor (X read from
# memory), the family's point formula over the chunk's predictors (a loop over
# contiguous arrays, which vectorizes; called row by row inside the dot-product loop
# it did not, and cost as much as reading X: 30 of 72 ms per 10^6 x 50 rows, measured),
# the back-propagation (X again, now from cache) and, for a Hessian, the rows
# sqrt(h) [1, x] that one BLAS product squares (see :func:`gram_rows`); on the first
# pass of a fit also the column squares (from cache: 35 ms less than their own pass).
# The drivers call these loops directly, one level of calls deep: each level of
# helper functions recompiles the code below it (the same loops behind a wrapper that
# reshaped the chunk for _predict_rows / _backprop_rows cost a first fit 0.7 s CPU
# more, for the same machine code and the same bits, measured).


@inner(**KERNEL_OPTIONS)
def _predict_one(X, w, off, z, i0):
    # z[j] = w[0] + X[i0 + j] . w[1:] (+ off[i0 + j]): _predict_rows for one predictor
    # (the same sums, so the same bits), four rows per pass over w
    wv = w[1:]
    j = 0
    while j + 4 <= z.shape[0]:
        s0, s1, s2, s3 = _dot4(wv, X[i0 + j], X[i0 + j + 1], X[i0 + j + 2], X[i0 + j + 3])
        z[j] = w[0] + s0
        z[j + 1] = w[0] + s1
        z[j + 2] = w[0] + s2
        z[j + 3] = w[0] + s3
        j += 4
    for q in range(j, z.shape[0]):
        z[q] = w[0] + _dot(X[i0 + q], wv)
    if off.shape[0]:
        offc = off[i0 : i0 + z.shape[0]]  # indexed from 0 (see _squares_rows)
        for q in range(z.shape[0]):
            z[q] += offc[q]


@inner(**KERNEL_OPTIONS)
def _backprop_one(X, r, p, i0):
    # p += [1, X[i0 + j]]^T r[j]: _backprop_rows for one predictor (the same sums)
    pv = p[1:]
    j = 0
    while j + 4 <= r.shape[0]:
        r0, r1, r2, r3 = r[j], r[j + 1], r[j + 2], r[j + 3]
        p[0] += r0 + r1 + r2 + r3
        _axpy4(pv, r0, r1, r2, r3, X, i0 + j)
        j += 4
    for q in range(j, r.shape[0]):
        p[0] += r[q]
        _axpy(pv, r[q], X[i0 + q])


@inner(**KERNEL_OPTIONS)
def _hessian_rows(X, sw, h, A, sq, i0, i1):
    # A[i] = sqrt(h[i - i0]) [1, X[i]] for the chunk's rows i where A is not empty;
    # sq += their weighted column squares where sq is not empty
    if A.shape[0]:
        Xc, Ac = X[i0:i1], A[i0:i1]  # indexed from 0 (see _squares_rows)
        for i in range(i1 - i0):
            s = np.sqrt(h[i])
            Ac[i, 0] = s
            for c in range(X.shape[1]):
                Ac[i, c + 1] = s * np.float64(Xc[i, c])
    if sq.shape[0]:
        _squares_rows(X, sw, sq, i0, i1)


@inner(**POINTWISE_OPTIONS)
def _bernoulli_points(z, y, sw, nll, r, h):
    # each row's weighted NLL, dNLL/dz and (h not empty) d2NLL/dz^2 = w p (1 - p) at
    # log-odds z: the public BCE-with-logits point formula, without fast-math (the
    # same bits as that loss)
    if sw.shape[0]:
        for j in range(z.shape[0]):
            lj, rj = _bce_logits_point(z[j], y[j], 1.0)
            nll[j] = sw[j] * lj
            r[j] = sw[j] * rj
    else:
        for j in range(z.shape[0]):
            nll[j], r[j] = _bce_logits_point(z[j], y[j], 1.0)
    if h.shape[0]:
        for j in range(z.shape[0]):
            e = exp_nonpos(-abs(z[j]))
            h[j] = e / ((1.0 + e) * (1.0 + e))  # p (1 - p), no overflow for large |z|
            if sw.shape[0]:
                h[j] *= sw[j]


@inner(**KERNEL_OPTIONS)
def _bernoulli_counts(z, y, sw, perfect, cnt):
    # cnt += [misclassified rows, rows of margin > perfect] among rows of positive weight
    wrong = good = 0
    for j in range(z.shape[0]):
        m = (2.0 * y[j] - 1.0) * z[j]
        keep = sw.shape[0] == 0 or sw[j] > 0.0
        wrong += keep and m <= 0.0
        good += keep and m > perfect
    cnt[0] += wrong
    cnt[1] += good


@njit(**DRIVER_OPTIONS)
def _bernoulli_kernel(c0, c1, X, wt, y, sw, perfect, Z, A, parts, sq_parts, cnts, losses):
    X, wt, y, sw, Z = borrowed(X), borrowed(wt), borrowed(y), borrowed(sw), borrowed(Z)
    A, parts, sq_parts = borrowed(A), borrowed(parts), borrowed(sq_parts)
    cnts, losses = borrowed(cnts), borrowed(losses)
    n = X.shape[0]
    # a chunk's predictors (when Z is not kept), NLLs, dNLL/dz and d2NLL/dz^2 (for A)
    zb, nb, rb, hb = np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK)
    for c in range(c0, c1):
        i0 = c * CHUNK
        i1 = min(n, i0 + CHUNK)
        m = i1 - i0
        z = Z[i0:i1] if Z.shape[0] else zb[:m]
        nll, r, h = nb[:m], rb[:m], hb[: m if A.shape[0] else 0]
        swc = sw[i0:i1] if sw.shape[0] else sw
        _predict_one(X, wt, _NO_WEIGHTS, z, i0)
        _bernoulli_points(z, y[i0:i1], swc, nll, r, h)
        _bernoulli_counts(z, y[i0:i1], swc, perfect, cnts[c])
        losses[c] = sum64(nll)
        _backprop_one(X, r, parts[c, 0], i0)
        _hessian_rows(X, sw, h, A, sq_parts[c], i0, i1)


def _fused(kernel, X, G, sq, *args, counts=None):
    """Run a fused pass's kernel over the chunks of X (its per-chunk parts added in
    chunk order: the bits do not depend on the thread count); returns the loss."""
    nch = _chunks(X.shape[0])
    parts = np.zeros((nch,) + G.shape)
    sq_parts = np.zeros((nch, sq.shape[0]))
    losses = np.zeros(nch)
    if counts is None:
        run_pieces(kernel, nch, X, *args, parts, sq_parts, losses)
    else:
        cnts = np.zeros((nch, 2), np.int64)
        run_pieces(kernel, nch, X, *args, parts, sq_parts, cnts, losses)
        counts += cnts.sum(axis=0)
    _add_parts(parts, G)
    _add_parts(sq_parts, sq)
    return float(sum64(losses))


def bernoulli_pass(
    X: np.ndarray,
    Wt: np.ndarray,
    y: np.ndarray,
    sw,
    G: np.ndarray,
    counts: np.ndarray,
    perfect: float,
    Z=None,
    A=None,
    sq=None,
) -> float:
    """The summed (weighted) Bernoulli NLL of rows ``X`` with log-odds
    ``Wt[0, 0] + X . Wt[0, 1:]``, ``G += its gradient`` (shape (1, d + 1)) and
    ``counts += [misclassified rows, rows of margin > perfect]`` (positive weight):
    the predictor, the BCE-with-logits point formula and the back-propagation fused
    in one read of each row (y float64 of 0/1, sw float64 or None). ``Z``: a float64
    array of n, if given, receives the log-odds; ``A``: a float64 array of (n, d + 1),
    if given, receives the rows ``sqrt(h) [1, x]`` of the Hessian's weights
    ``h = w p (1 - p)`` (the Hessian is ``A^T A``: :func:`gram_rows`); ``sq``: a
    float64 array of d + 1, if given, ``+=`` :func:`column_squares` of the rows."""
    if not X.shape[0]:
        return 0.0
    sw = _NO_WEIGHTS if sw is None else sw
    Z = _NO_WEIGHTS if Z is None else Z
    A = _NO_ROWS if A is None else A
    sq = _NO_WEIGHTS if sq is None else sq
    return _fused(_bernoulli_kernel, X, G, sq, Wt[0], y, sw, perfect, Z, A, counts=counts)


@inner(**POINTWISE_OPTIONS)
def _poisson_points(z, y, sw, nll, r, h):
    # each row's weighted NLL without the log(y!) constant, dNLL/dz and (h not empty)
    # d2NLL/dz^2 at log-mean z: mu - y z, mu - y and mu; exp overflows to inf only
    # where the NLL itself is inf (h is capped there: a rejected trial's Hessian is
    # not used)
    for j in range(z.shape[0]):
        mu = exp(z[j])
        w = sw[j] if sw.shape[0] else 1.0
        nll[j] = w * (mu - y[j] * z[j])
        r[j] = w * (mu - y[j])
    if h.shape[0]:
        for j in range(z.shape[0]):
            h[j] = exp(min(z[j], 700.0)) * (sw[j] if sw.shape[0] else 1.0)


@njit(**DRIVER_OPTIONS)
def _poisson_kernel(c0, c1, X, wt, y, sw, off, Z, A, parts, sq_parts, losses):
    X, wt, y, sw, off = borrowed(X), borrowed(wt), borrowed(y), borrowed(sw), borrowed(off)
    Z, A, parts = borrowed(Z), borrowed(A), borrowed(parts)
    sq_parts, losses = borrowed(sq_parts), borrowed(losses)
    n = X.shape[0]
    zb, nb, rb, hb = np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK)
    for c in range(c0, c1):
        i0 = c * CHUNK
        i1 = min(n, i0 + CHUNK)
        m = i1 - i0
        z = Z[i0:i1] if Z.shape[0] else zb[:m]
        nll, r, h = nb[:m], rb[:m], hb[: m if A.shape[0] else 0]
        _predict_one(X, wt, off, z, i0)
        _poisson_points(z, y[i0:i1], sw[i0:i1] if sw.shape[0] else sw, nll, r, h)
        losses[c] = sum64(nll)
        _backprop_one(X, r, parts[c, 0], i0)
        _hessian_rows(X, sw, h, A, sq_parts[c], i0, i1)


def poisson_pass(
    X: np.ndarray,
    Wt: np.ndarray,
    y: np.ndarray,
    sw,
    G: np.ndarray,
    offset=None,
    Z=None,
    A=None,
    sq=None,
) -> float:
    """The summed (weighted) Poisson NLL ``sum w (mu - y eta)`` (without the constant
    ``log(y!)``) of rows ``X`` with log-mean ``eta = Wt[0, 0] + X . Wt[0, 1:] + offset``
    and ``G += its gradient`` (shape (1, d + 1)): the predictor, ``mu = exp(eta)`` and
    the back-propagation fused in one read of each row (y, sw, offset float64 or None).
    ``Z``: a float64 array of n, if given, receives eta (offset included); ``A``: as
    in :func:`bernoulli_pass`, with ``h = w mu``; ``sq``: as in :func:`bernoulli_pass`."""
    if not X.shape[0]:
        return 0.0
    sw = _NO_WEIGHTS if sw is None else sw
    off = _NO_WEIGHTS if offset is None else offset
    Z = _NO_WEIGHTS if Z is None else Z
    A = _NO_ROWS if A is None else A
    sq = _NO_WEIGHTS if sq is None else sq
    return _fused(_poisson_kernel, X, G, sq, Wt[0], y, sw, off, Z, A)


# -- the fused pass of the softmax family (fewer than SHORT_ROWS classes) -------------
# Per chunk: the k logits of its rows (X read from memory), the short-rows
# cross-entropy's per-class loops on blocks of them (transposed, so that each loop runs
# over rows: see _cpu/cross_entropy), and the back-propagation (X again, from cache):
# one read of X, where the three kernel calls of the unfused pass read it twice.


@njit(**DRIVER_OPTIONS)
def _softmax_kernel(c0, c1, X, Wt, y, sw, Z, parts, sq_parts, losses):
    X, Wt, y, sw, Z = borrowed(X), borrowed(Wt), borrowed(y), borrowed(sw), borrowed(Z)
    parts, sq_parts, losses = borrowed(parts), borrowed(sq_parts), borrowed(losses)
    n, k = X.shape[0], Wt.shape[0]
    zb, rb = np.empty((CHUNK, k)), np.empty((CHUNK, k))  # a chunk's logits, dNLL/dlogits
    r_, coef, off, nll = np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK)
    nbmax = max(1, SHORT_BLOCK_ELEMENTS // k)  # rows per transposed block
    xt, keys, m = np.empty(nbmax * k), np.empty(nbmax, np.int64), np.empty(nbmax)
    r_blk, n_one = np.empty(nbmax), np.empty(nbmax, np.int64)
    a, b = np.empty(nbmax), np.empty(nbmax)
    for c in range(c0, c1):
        i0 = c * CHUNK
        i1 = min(n, i0 + CHUNK)
        nc = i1 - i0
        z = Z[i0:i1] if Z.shape[0] else zb[:nc]
        _predict_rows(X[i0:i1], Wt, z, 0, nc)
        zf, rf = z.reshape(-1), rb[:nc].reshape(-1)
        for b0 in range(0, nc, nbmax):
            nb = min(nbmax, nc - b0)
            zblk, tb = zf[b0 * k : (b0 + nb) * k], y[i0 + b0 : i0 + b0 + nb]
            _transpose_in(zblk, xt, nb, k)
            _col_max(xt, keys, nb, k)
            for i in range(nb):
                m[i] = from_sortable(keys[i], 0.0)
            _col_exp(xt, m, nb, k)
            _col_sums(xt, r_blk, n_one, nb, k)
            # NLL_i = w_i (log1p(r_i) - (z_it - m_i)), dNLL_i/dz_ij = a_i exp(z_ij - m_i)
            # - b_i [j = t_i] (r_i: the sum of the exps but the max's 1); a row whose max
            # is not finite gets NaN: the cross-entropy's _row_terms for unit class
            # weights, written out (calling it cost a first fit 0.2 s CPU more, measured)
            # (slices indexed from 0: see _cpu/cross_entropy on gathers)
            rs, cs, os_ = r_[b0 : b0 + nb], coef[b0 : b0 + nb], off[b0 : b0 + nb]
            ws = sw[i0 + b0 : i0 + b0 + nb] if sw.shape[0] else sw
            for i in range(nb):
                w = ws[i] if sw.shape[0] else 1.0
                ok = abs(m[i]) < np.inf
                r = r_blk[i] + np.float64(n_one[i] - 1)
                rs[i] = r if ok else 0.0
                cs[i] = w if ok else 0.0
                os_[i] = w * (zblk[i * k + tb[i]] - m[i]) if ok else np.nan
                a[i] = w / (1.0 + r) if ok else np.nan
                b[i] = w if ok else 0.0
            _col_scale(xt, a, nb, k)
            for i in range(nb):
                xt[tb[i] * nb + i] -= b[i]
            _transpose_out(xt, rf[b0 * k : (b0 + nb) * k], nb, k)
        losses[c] = _row_losses(r_[:nc], coef[:nc], off[:nc], nll[:nc])
        _backprop_rows(X[i0:i1], rb[:nc], parts[c], 0, nc)
        if sq_parts.shape[1]:
            _squares_rows(X, sw, sq_parts[c], i0, i1)


def softmax_pass(
    X: np.ndarray, Wt: np.ndarray, y: np.ndarray, sw, G: np.ndarray, Z=None, sq=None
) -> float:
    """The summed (weighted) softmax cross-entropy of rows ``X`` with logits
    ``Wt[:, 0] + X . Wt[:, 1:]^T`` (k < ``SHORT_ROWS`` classes) and ``G += its
    gradient`` (shape (k, d + 1)): the predictor, the cross-entropy and the
    back-propagation fused in one read of each row (y: class indices in [0, k), an
    integer array; sw float64 or None). ``Z``: a float64 array of (n, k), if given,
    receives the logits; ``sq``: as in :func:`bernoulli_pass`."""
    if not X.shape[0]:
        return 0.0
    k = Wt.shape[0]
    if not 0 <= y.min() <= y.max() < k:  # the kernel indexes with them
        raise ValueError(f"y: class indices must lie in [0, {k}), got {y.min()} .. {y.max()}")
    sw = _NO_WEIGHTS if sw is None else sw
    Z = _NO_ROWS if Z is None else Z
    sq = _NO_WEIGHTS if sq is None else sq
    return _fused(_softmax_kernel, X, G, sq, Wt, y, sw, Z)


# log(k!) and k log k of the small counts, looked up rather than computed per row (the
# scalar lgamma was most of the sums pass: 14 ms per 10^6 counts of mean ~1.6)
_SMALL_COUNTS = 1024
_LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(_SMALL_COUNTS)])
_K_LOG_K = np.array([k * math.log(k) if k else 0.0 for k in range(_SMALL_COUNTS)])


@inner(**POINTWISE_OPTIONS)
def _poisson_sum_rows(y, sw, off, log_fact, k_log_k, p, i0, i1):
    for i in range(i0, i1):
        w = sw[i] if sw.shape[0] else 1.0
        o = off[i] if off.shape[0] else 0.0
        yi = y[i]
        p[0] += w
        p[1] += w * yi
        k = int(yi) if 0.0 <= yi < log_fact.shape[0] else -1
        if k >= 0 and k == yi:  # a small count
            p[2] += w * log_fact[k]
            p[3] += w * k_log_k[k]
        else:
            p[2] += w * math.lgamma(yi + 1.0)
            if yi > 0.0:  # 0 log 0 = 0
                p[3] += w * (yi * math.log(yi))
        p[4] += w * math.exp(o)  # inf past exp's range, as the NLL
        p[5] += w * (yi * o)


@njit(**DRIVER_OPTIONS)
def _poisson_sums_kernel(c0, c1, y, sw, off, log_fact, k_log_k, parts):
    y, sw, off = borrowed(y), borrowed(sw), borrowed(off)
    log_fact, k_log_k, parts = borrowed(log_fact), borrowed(k_log_k), borrowed(parts)
    n = y.shape[0]
    for c in range(c0, c1):
        i1 = min(n, (c + 1) * CHUNK)
        _poisson_sum_rows(y, sw, off, log_fact, k_log_k, parts[c], c * CHUNK, i1)


def poisson_sums(y: np.ndarray, sw, offset) -> np.ndarray:
    """Weighted sums of [1, y, log(y!), y log y, exp(offset), y offset] over the rows
    (y, sw, offset float64; sw, offset may be None), in one parallel pass."""
    out = np.zeros(6)
    sw = _NO_WEIGHTS if sw is None else sw
    off = _NO_WEIGHTS if offset is None else offset
    parts = np.zeros((_chunks(y.shape[0]), 6))
    run_pieces(_poisson_sums_kernel, len(parts), y, sw, off, _LOG_FACTORIAL, _K_LOG_K, parts)
    _add_parts(parts, out)
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
    run_pieces(_predictor_kernel, _chunks(X.shape[0]), X, Wt, Z)
    return Z


def backprop(X: np.ndarray, R: np.ndarray, G: np.ndarray) -> None:
    """G[m] += sum_i R[i, m] * [1, X[i]]; G has shape (k, d + 1), float64."""
    parts = np.zeros((_chunks(X.shape[0]),) + G.shape)
    run_pieces(_backprop_kernel, len(parts), X, R, parts)
    _add_parts(parts, G)


GRAM_PARTS = 4  # row slices of a block, each its own product: fixed, so the sums are too
# The slices run on fastmle's threads (BLAS on one thread each, the GIL released): a
# second BLAS thread inside one product contends with the other threads, separate
# products in parallel do not (1e6 x 50 Hessian pass, 2 cores: 0.26 s on one
# thread, 0.32 s with OpenBLAS's two).


def _gram_part(Xf, w):
    """(sum w x x^T, sum w x) of some rows, as BLAS products."""
    if (w >= 0).all():
        s = np.sqrt(w)
        A = Xf * s[:, None]
        return A.T @ A, s @ A  # NumPy calls syrk for a product with its transpose
    A = Xf * w[:, None]
    return A.T @ Xf, A.sum(axis=0)


def _gram_slices(n: int) -> list[slice]:
    """The ``GRAM_PARTS`` fixed row slices of n rows that the pool's products take."""
    cuts = [n * i // GRAM_PARTS for i in range(GRAM_PARTS + 1)]
    return [slice(a, b) for a, b in zip(cuts, cuts[1:])]


def _square(A):
    return A.T @ A  # NumPy calls syrk for a product with its transpose


def gram_rows(A: np.ndarray, H: np.ndarray) -> None:
    """H += A^T A for float64 rows A (the rows sqrt(h) [1, x] of a fused pass): BLAS
    syrk on ``GRAM_PARTS`` fixed row slices in parallel, added in slice order (one
    BLAS thread each, as :func:`gram`), so the bits do not depend on the thread count.
    On 2 cores, 10^6 x 51 rows: 66 ms, against 137 ms for one product on one thread
    and 115 ms for one product on OpenBLAS's two threads (measured)."""
    n = A.shape[0]
    if n < 1024 * GRAM_PARTS:
        H += _square(A)
        return
    for part in map_threads(_square, [A[sl] for sl in _gram_slices(n)]):
        H += part


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
    slices = _gram_slices(n)
    for q in range(Wts.shape[1]):
        w = Wts[:, q]
        if n < 1024 * GRAM_PARTS:
            parts = [_gram_part(Xf, w)]
        else:
            parts = map_threads(_gram_part, [Xf[sl] for sl in slices], [w[sl] for sl in slices])
        for XtX, wx in parts:
            H[q, 1:, 1:] += XtX
            H[q, 0, 1:] += wx
            H[q, 1:, 0] += wx
        H[q, 0, 0] += w.sum()


KRON_BYTES = 8 << 20  # the per-row products formed at a time in softmax_hessian


def _pairs_cheaper(m: int, d1: int) -> bool:
    """Whether _pairs_part beats _kron_part for m classes and d1 columns: multiply-adds
    plus 16 per value formed (the products are formed at memory speed), a model that
    ranks the measured cases right (m, d1 = 9, 51: pairs 1.4x faster; 30, 11: 1.6x;
    63, 3 and 200, 4: the syrk 2.4x and 4x faster)."""
    npair, tri = m * (m + 1) // 2, d1 * (d1 + 1) // 2
    return npair * tri + 16 * (npair + tri) < (m * d1) ** 2 // 2 + 16 * m * d1


def _augmented_t(X):
    """[1, X]^T as a float64 (d + 1, n) array."""
    Xa = np.empty((X.shape[1] + 1, X.shape[0]))
    Xa[0] = 1.0
    Xa[1:] = X.T
    return Xa


@functools.lru_cache(maxsize=8)
def _pair_places(m: int, d1: int) -> tuple:
    """Where entry (q, t) of the packed Hessian goes in the (m d1)^2 matrix: q the
    class pair a <= b, t the feature pair j <= k, to (a j, b k) and its three mirrors."""
    a, b = (v[:, None] for v in np.triu_indices(m))
    j, k = (v[None, :] for v in np.triu_indices(d1))
    n = m * d1
    return tuple(
        ((r1 * d1 + c1) * n + r2 * d1 + c2).ravel()
        for r1, c1, r2, c2 in ((a, j, b, k), (a, k, b, j), (b, j, a, k), (b, k, a, j))
    )


def _pairs_part(X, P, w):
    """The distinct entries of sum_i w_i (diag(p_i) - p_i p_i^T) (x) x_i x_i^T over
    some rows (x_i = [1, X[i]]): entry (q, t) for class pair q = (a <= b) and feature
    pair t = (j <= l), as one BLAS product V^T U of the rows' class-pair weights V
    and feature-pair products U (m (m + 1) / 2 x d (d + 1) / 2 entries: about half
    the multiply-adds of the syrk in _kron_part, which makes each entry twice)."""
    m, d1 = P.shape[1], X.shape[1] + 1
    Xt, Pt = _augmented_t(X), np.ascontiguousarray(P.T)
    U = np.empty((d1 * (d1 + 1) // 2, X.shape[0]))
    o = 0
    for j in range(d1):  # U[t] = x_j x_l over l >= j
        np.multiply(Xt[j], Xt[j:], out=U[o : o + d1 - j])
        o += d1 - j
    a, b = np.triu_indices(m)
    V = Pt[a] * Pt[b]
    np.negative(V, out=V)
    V[a == b] += Pt
    V *= w
    return V @ U.T


def _kron_part(X, P, w):
    """sum_i w_i (diag(p_i) - p_i p_i^T) (x) [1, x_i] [1, x_i]^T over some rows."""
    m, d1 = P.shape[1], X.shape[1] + 1
    Xa = _augmented_t(X).T
    s = np.sqrt(w)
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
    probabilities, H: (m (d + 1), m (d + 1)), class-major). Either one BLAS product
    makes each distinct entry once (:func:`_pairs_part`), or one syrk of the rows
    sqrt(w_i) p_i (x) [1, x_i] and m weighted Grams make them all
    (:func:`_kron_part`, memory O(m d) per row: many classes, few features), whichever
    :func:`_pairs_cheaper` says (m = 9, d = 50, 3e5 rows, 2 cores: 0.70 against
    0.99 s, measured). Slices of ``KRON_BYTES``
    are dealt to ``GRAM_PARTS`` lanes that run in parallel on fastmle's threads, each
    summing its slices in order, and the lanes are added in order: the bits do not
    depend on the thread count.
    """
    n, d = X.shape
    m, d1 = P.shape[1], d + 1
    if not n:
        return
    w = np.ones(n) if sw is None else np.asarray(sw, dtype=np.float64)
    pairs = _pairs_cheaper(m, d1)
    part = _pairs_part if pairs else _kron_part
    per_row = max(m * (m + 1), d1 * (d1 + 1)) // 2 if pairs else m * d1
    rows = max(1, KRON_BYTES // (8 * per_row))
    cuts = list(range(0, n, rows)) + [n]

    def lane(j):  # slices j, j + GRAM_PARTS, ...: one sum per lane, in slice order
        out = None
        for i in range(j, len(cuts) - 1, GRAM_PARTS):
            sl = slice(cuts[i], cuts[i + 1])
            p = part(X[sl], P[sl], w[sl])
            out = p if out is None else out + p
        return out

    total = None
    for p in map_threads(lane, range(min(GRAM_PARTS, len(cuts) - 1))):
        total = p if total is None else total + p
    if pairs:  # each entry to its four places (some coincide: the same value)
        full = np.empty(H.size)
        for place in _pair_places(m, d1):
            full[place] = total.ravel()
        total = full.reshape(H.shape)
    H += total


def symmetrize(H: np.ndarray) -> np.ndarray:
    """Copy the lower triangles of a stack of square matrices into the upper ones."""
    lower = np.tril(H)
    return lower + np.swapaxes(np.tril(H, -1), -1, -2)
