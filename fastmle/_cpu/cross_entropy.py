"""Softmax cross-entropy kernels (the formula: ``fastmle.categorical``).

Numerics: with m = max_j x_ij, s = sum_j exp(x_ij - m) >= 1 cannot overflow, and
lse_i - x_ij = log1p(s - 1) - (x_ij - m) is a sum of two non-negative terms, where
s - 1 is summed without the max element's exact 1: the loss keeps full relative
accuracy even when it is tiny (log1p(exp(-30)) for a gap of 30, where PyTorch's
log(s) loses three digits). Row sums are accumulated in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import rows as _rows
from .jit import DRIVER_OPTIONS, KERNEL_OPTIONS, inner
from .numerics import borrowed, exp_nonpos, from_sortable, log1p, sortable
from .._rules import as_class_indices, bad_labels_message
from .threads import run_pieces

# --- kernels --------------------------------------------------------------------


LABEL_CHUNK = 65536


@njit(**DRIVER_OPTIONS)
def _check_labels(c0, c1, target, n_classes, ignore_index, weight, bad, first, wsum):
    """Per chunk c of LABEL_CHUNK labels: the number of bad labels, the index of the
    first one (-1: none) and the float64 sum of weight[t] over the kept rows."""
    n = target.size
    for c in range(c0, c1):
        acc = 0.0
        nb = 0
        fb = -1
        for i in range(c * LABEL_CHUNK, min(n, (c + 1) * LABEL_CHUNK)):
            t = target[i]
            if t == ignore_index:
                continue
            if t < 0 or t >= n_classes:
                nb += 1
                if fb < 0:
                    fb = i
            else:
                acc += np.float64(weight[t])
        bad[c] = nb
        first[c] = fb
        wsum[c] = acc


@inner(**KERNEL_OPTIONS)
def _class_terms(weight, eps, scale, x):
    """(sum of the class weights in float64, the per-class part of the smoothed
    gradient scale * eps * w_j / C in x's dtype)."""
    w_total = 0.0
    for j in range(weight.size):
        w_total += np.float64(weight[j])
    return w_total, (weight * (scale * eps / weight.size)).astype(x.dtype)


@njit(**DRIVER_OPTIONS)
def _ce_index_kernel(
    c0,
    c1,
    x,
    target,
    weight,
    ignore_index,
    eps,
    scale,
    grad,
    want_grad,
    rows_out,
    want_rows,
    per_chunk,
    stream,
    partial,
):
    n, c_ = x.shape
    w_total, shift = _class_terms(weight, eps, scale, x)
    # the arguments, which the caller keeps alive, without refcounts (numerics.borrowed)
    x, target, weight, grad = borrowed(x), borrowed(target), borrowed(weight), borrowed(grad)
    rows_out = borrowed(rows_out)
    smooth = eps > 0.0
    keep = 1.0 - eps
    e = np.empty(c_, x.dtype)  # exp(x - max) of the current row
    for c in range(c0, c1):
        r1 = min(n, (c + 1) * per_chunk)
        acc = 0.0
        m = x[0, 0]
        known = False  # whether m already holds max(x[i]) (computed with the previous row)
        for i in range(c * per_chunk, r1):
            xi = x[i]
            nxt = x[i + 1] if i + 1 < r1 else xi
            gi = grad[i] if want_grad else e
            t = target[i]
            li = 0.0
            if t == ignore_index:
                known = False
                if want_grad:
                    gi[:] = 0
            else:
                xt = np.float64(xi[t])  # read before the gradient (maybe into xi) is written
                if not known:
                    m = _rows.row_max(xi)
                known = False
                if not math.isfinite(m):  # a row with +inf, NaN or only -inf: NaN, like PyTorch
                    li = np.nan
                    if want_grad:
                        gi[:] = np.nan
                else:
                    if smooth:
                        r, m_next, sd = _rows.exp_row_weighted(xi, m, e, nxt, weight)
                    else:
                        r, m_next = _rows.exp_row(xi, m, e, nxt)
                        sd = 0.0
                    mf = np.float64(m)
                    m, known = m_next, True
                    s = 1.0 + r
                    ls = math.log1p(r)
                    wt = np.float64(weight[t])
                    li = keep * wt * (ls - (xt - mf))
                    if smooth:
                        li += eps / c_ * (w_total * ls - sd)
                    if want_grad:
                        a = scale * (keep * wt + eps * w_total / c_) / s
                        if stream:  # finish the row in the scratch, then stream it out
                            if smooth:
                                _rows.scale_shift_inplace(e, _rows.cast(a, x), shift)
                            else:
                                _rows.scale_inplace(e, _rows.cast(a, x))
                            e[t] -= _rows.cast(scale * keep * wt, x)
                            _rows.write_row(e, gi, True)
                        else:
                            if smooth:
                                _rows.scale_shift_row(e, gi, _rows.cast(a, x), shift)
                            else:
                                _rows.scale_row(e, gi, _rows.cast(a, x))
                            gi[t] -= _rows.cast(scale * keep * wt, x)
            if want_rows:
                rows_out[i] = li
            acc += li
        _rows.fence(stream)
        partial[c] = acc


# --- few classes: rows too short for a SIMD loop each ----------------------------
# With C below SHORT_ROWS the per-row loops of _ce_index_kernel are mostly overhead
# (measured 14x the copy floor at C = 10), and so are per-row reductions over a
# flat chunk (5.5x: a max and a float64 sum over 10 elements are a chain of
# dependent scalar operations). Here a block of rows is transposed into an L1
# scratch (class j of row i at xt[j * nb + i]), so that every per-row reduction
# (max, sum of exps, smoothing sum) runs over classes in the outer loop and over
# rows in the inner, vectorized one; the gradient is transposed back as it is
# scaled. Each row's sums add its classes in the same order as before (0, 1, ...).
SHORT_ROWS = 64
# The per-class loops take class j's row of the block as a slice and index it
# from 0: indexed as xt[j * nb + i], LLVM could not rule out a negative index
# (Numba wraps those around) and vectorized the loads as gathers.
# rows per block: a block's logits and exps stay in L1 (16 KB of float32)
SHORT_BLOCK_ELEMENTS = 4096


# The transposes were most of the short-rows kernel (C = 10: 8.0 + 5.5 of ~25 ms per
# 2^20 rows on one thread). Up to TRANSPOSE_BY_CLASS classes, one class at a time:
# strided loads (in), stores (out), contiguous on the other side (3.3 and 3.7 ms);
# beyond, by rows: four at a time in (33 classes: 21 against 29 ms), one out (19 ms,
# against 38 by class). All measured, float32, AVX-512 and AVX2 alike.
TRANSPOSE_BY_CLASS = 16


@inner(**KERNEL_OPTIONS)
def _transpose_in(xf, xt, nb, c_):
    """xt[j * nb + i] = xf[i * c_ + j] for nb rows of c_ classes."""
    if c_ <= TRANSPOSE_BY_CLASS:
        for j in range(c_):
            xj, xs = xt[j * nb : (j + 1) * nb], xf[j:]
            for i in range(nb):
                xj[i] = xs[i * c_]
        return
    i = 0
    while i + 4 <= nb:
        for j in range(c_):
            b, a = j * nb + i, i * c_ + j
            xt[b] = xf[a]
            xt[b + 1] = xf[a + c_]
            xt[b + 2] = xf[a + 2 * c_]
            xt[b + 3] = xf[a + 3 * c_]
        i += 4
    for r in range(i, nb):
        for j in range(c_):
            xt[j * nb + r] = xf[r * c_ + j]


@inner(**KERNEL_OPTIONS)
def _col_max(xt, keys, nb, c_):
    """keys[i] = sortable key of max_j xt[j * nb + i] (integer max: vectorizes)."""
    for i in range(nb):
        keys[i] = sortable(xt[i])
    for j in range(1, c_):
        xj = xt[j * nb : (j + 1) * nb]
        for i in range(nb):
            k = sortable(xj[i])
            keys[i] = k if k > keys[i] else keys[i]


@inner(**KERNEL_OPTIONS)
def _col_exp(xt, m, nb, c_):
    """xt[j * nb + i] = exp(xt[j * nb + i] - m[i]), in place; two classes per loop
    (one was latency-bound on the exp's chain, see _cpu/elementwise on lanes)."""
    for j in range(0, c_ - 1, 2):
        xa, xb = xt[j * nb : (j + 1) * nb], xt[(j + 1) * nb : (j + 2) * nb]
        for i in range(nb):
            xa[i] = exp_nonpos(xa[i] - m[i])
            xb[i] = exp_nonpos(xb[i] - m[i])
    if c_ % 2:
        xj = xt[(c_ - 1) * nb : c_ * nb]
        for i in range(nb):
            xj[i] = exp_nonpos(xj[i] - m[i])


@inner(**KERNEL_OPTIONS)
def _col_sums(et, r, n_one, nb, c_):
    """r[i] = sum_j e_ij over e_ij < 1 (float64, classes in order), n_one[i] =
    count of e_ij >= 1 (NaN is added to r and propagates)."""
    one = _rows.cast(1.0, et)
    for i in range(nb):
        r[i] = 0.0
        n_one[i] = 0
    for j in range(c_):
        ej = et[j * nb : (j + 1) * nb]
        for i in range(nb):
            v = ej[i]
            r[i] += v if not v >= one else 0.0
            n_one[i] += 1 if v >= one else 0


@inner(**KERNEL_OPTIONS)
def _col_weighted(xt, m, weight, sd, nb, c_):
    """sd[i] = sum_j w_j (x_ij - m_i) in float64 (classes in order)."""
    for i in range(nb):
        sd[i] = 0.0
    for j in range(c_):
        wj = np.float64(weight[j])
        xj = xt[j * nb : (j + 1) * nb]
        for i in range(nb):
            sd[i] += wj * np.float64(xj[i] - m[i])


@inner(**KERNEL_OPTIONS)
def _col_scale(et, a, nb, c_):
    """et[j * nb + i] *= a[i]."""
    for j in range(c_):
        ej = et[j * nb : (j + 1) * nb]
        for i in range(nb):
            ej[i] = ej[i] * a[i]


@inner(**KERNEL_OPTIONS)
def _col_scale_shift(et, a, shift, nb, c_):
    """et[j * nb + i] = et[j * nb + i] * a[i] - shift[j]."""
    for j in range(c_):
        sj = shift[j]
        ej = et[j * nb : (j + 1) * nb]
        for i in range(nb):
            ej[i] = ej[i] * a[i] - sj


@inner(**KERNEL_OPTIONS)
def _transpose_out(et, g, nb, c_):
    """g[i * c_ + j] = et[j * nb + i]."""
    if c_ <= TRANSPOSE_BY_CLASS:
        for j in range(c_):
            ej, gs = et[j * nb : (j + 1) * nb], g[j:]
            for i in range(nb):
                gs[i * c_] = ej[i]
        return
    for i in range(nb):
        for j in range(c_):
            g[i * c_ + j] = et[j * nb + i]


@inner(**KERNEL_OPTIONS)
def _row_terms(
    xb,
    tb,
    m,
    r_blk,
    n_one,
    sd,
    weight,
    ignore_index,
    keep,
    eps,
    w_total,
    scale,
    smooth,
    r_,
    coef,
    off,
    a,
    b,
    c_,
):
    """Per row of a block, without branches (so it vectorizes): r (sum of exps
    minus the max's 1), the loss' coefficient and offset (loss = coef log1p(r) -
    off), the gradient's scale a and the target's shift b. Ignored rows get
    zeros; rows whose max is not finite get NaN."""
    inf = _rows.cast(np.inf, m)
    for i in range(m.size):
        t = tb[i]
        ign = t == ignore_index
        tt = 0 if ign else t
        mi = m[i]
        fin = abs(mi) < inf  # false for +-inf and NaN
        r = r_blk[i] + np.float64(n_one[i] - 1)
        wt = np.float64(weight[tt])
        co = keep * wt + eps * w_total / c_
        of = keep * wt * (np.float64(xb[i * c_ + tt]) - np.float64(mi))
        if smooth:
            of += eps / c_ * sd[i]
        ai = scale * co / (1.0 + r)
        ok = fin and not ign
        r_[i] = r if ok else 0.0
        coef[i] = co if ok else 0.0
        off[i] = of if ok else (0.0 if ign else np.nan)
        a[i] = _rows.cast(ai if ok else (0.0 if ign else np.nan), m)
        b[i] = _rows.cast(scale * keep * wt if ok else 0.0, m)


@inner(**KERNEL_OPTIONS)
def _row_losses(r, coef, off, out):
    """out[i] = coef[i] * log1p(r[i]) - off[i]; returns their sum in float64. ``out``
    must not be one of the inputs: LLVM's run-time overlap check then fails and the
    loop runs scalar (3.5x slower per row, measured)."""
    for i in range(r.size):
        out[i] = coef[i] * log1p(r[i]) - off[i]
    return _rows.sum64(out)


def _make_short_rows(smooth: bool):
    """The short-rows driver with or without label smoothing, fixed at compile time:
    a call compiles only the loops it runs. (Streaming stores stay an argument: a
    loss and its value-and-gradient then run the same machine code, so their losses
    agree to the bit.)"""

    @njit(**DRIVER_OPTIONS)
    def _ce_short_rows_kernel(
        c0,
        c1,
        x,
        target,
        weight,
        ignore_index,
        eps,
        scale,
        grad,
        want_grad,
        rows_out,
        want_rows,
        per_chunk,
        stream,
        partial,
    ):
        n, c_ = x.shape
        w_total, shift = _class_terms(weight, eps, scale, x)
        # the arguments, which the caller keeps alive, without refcounts (numerics.borrowed)
        x, target, weight, grad = borrowed(x), borrowed(target), borrowed(weight), borrowed(grad)
        rows_out = borrowed(rows_out)
        xf = x.reshape(-1)
        g = grad.reshape(-1)  # empty without the gradient
        keep = 1.0 - eps
        lost = _rows.cast(0.0, x)
        # the scratch of a block of rows (the per-class loops below run over it)
        nbmax = max(1, SHORT_BLOCK_ELEMENTS // c_)
        xt = np.empty(nbmax * c_, x.dtype)
        keys = np.full(nbmax, sortable(x[0, 0]))  # int32 / int64 like the keys
        m = np.empty(nbmax, x.dtype)
        r_blk = np.empty(nbmax)
        n_one = np.empty(nbmax, np.int64)
        sd = np.empty(nbmax)
        a = np.empty(nbmax, x.dtype)
        bt = np.empty(nbmax, x.dtype)
        gbuf = np.empty(nbmax * c_ if stream else 0, x.dtype)
        # a chunk's loss_i = coef_i * log1p(r_i) - off_i, with all log1p in one loop
        r_all, coef_all, off_all = np.empty(per_chunk), np.empty(per_chunk), np.empty(per_chunk)
        loss_all = np.empty(0 if want_rows else per_chunk)
        # one level of calls below the driver: each level recompiles the code under it (a
        # per-chunk function here cost a first call 0.8 s CPU more, measured)
        for c in range(c0, c1):
            r0 = c * per_chunk
            r1 = min(n, r0 + per_chunk)
            r_, coef, off = r_all[: r1 - r0], coef_all[: r1 - r0], off_all[: r1 - r0]
            for b0 in range(r0, r1, nbmax):
                nb = min(nbmax, r1 - b0)
                xb = xf[b0 * c_ : (b0 + nb) * c_]
                tb = target[b0 : b0 + nb]
                _transpose_in(xb, xt, nb, c_)
                _col_max(xt, keys, nb, c_)
                for i in range(nb):
                    m[i] = from_sortable(keys[i], lost)
                if smooth:
                    _col_weighted(xt, m, weight, sd, nb, c_)
                _col_exp(xt, m, nb, c_)
                _col_sums(xt, r_blk, n_one, nb, c_)
                _row_terms(
                    xb,
                    tb,
                    m[:nb],
                    r_blk,
                    n_one,
                    sd,
                    weight,
                    ignore_index,
                    keep,
                    eps,
                    w_total,
                    scale,
                    smooth,
                    r_[b0 - r0 : b0 - r0 + nb],
                    coef[b0 - r0 : b0 - r0 + nb],
                    off[b0 - r0 : b0 - r0 + nb],
                    a,
                    bt,
                    c_,
                )
                if want_grad:
                    if smooth:
                        _col_scale_shift(xt, a, shift, nb, c_)
                    else:
                        _col_scale(xt, a, nb, c_)
                    for i in range(nb):
                        t = tb[i]
                        if t == ignore_index:
                            for j in range(c_):
                                xt[j * nb + i] = 0
                        else:
                            xt[t * nb + i] -= bt[i]
                    if stream:
                        _transpose_out(xt, gbuf, nb, c_)
                        _rows.write_row(gbuf[: nb * c_], g[b0 * c_ : (b0 + nb) * c_], True)
                    else:
                        _transpose_out(xt, g[b0 * c_ : (b0 + nb) * c_], nb, c_)
            out = rows_out[r0:r1] if want_rows else loss_all[: r1 - r0]
            partial[c] = _row_losses(r_, coef, off, out)
            _rows.fence(stream)

    return _ce_short_rows_kernel


_SHORT_ROWS = {smooth: _make_short_rows(smooth) for smooth in (False, True)}  # compiled on use


@njit(**DRIVER_OPTIONS)
def _ce_prob_kernel(
    c0, c1, x, y, weight, eps, scale, grad, want_grad, rows_out, want_rows, per_chunk, partial
):
    n, c_ = x.shape
    # the arguments, which the caller keeps alive, without refcounts (numerics.borrowed)
    x, y, weight, grad = borrowed(x), borrowed(y), borrowed(weight), borrowed(grad)
    rows_out = borrowed(rows_out)
    keep = _rows.cast(1.0 - eps, x)
    spread = _rows.cast(eps / c_, x)
    e = np.empty(c_, x.dtype)
    for c in range(c0, c1):
        acc = 0.0
        r1 = min(n, (c + 1) * per_chunk)
        m = _rows.row_max(x[c * per_chunk])  # every chunk has at least one row
        for i in range(c * per_chunk, r1):
            xi = x[i]
            yi = y[i]
            nxt = x[i + 1] if i + 1 < r1 else xi
            gi = grad[i] if want_grad else e
            if math.isfinite(m):
                r, m, wq_sum, wqd_sum = _rows.exp_row_soft(xi, m, e, nxt, yi, weight, keep, spread)
                s = 1.0 + r
                li = wq_sum * math.log1p(r) - wqd_sum
                if want_grad:
                    _rows.soft_grad_row(
                        e,
                        gi,
                        yi,
                        weight,
                        keep,
                        spread,
                        _rows.cast(scale * wq_sum / s, x),
                        _rows.cast(scale, x),
                    )
            else:
                li = np.nan
                if want_grad:
                    gi[:] = np.nan
                m = _rows.row_max(nxt)
            if want_rows:
                rows_out[i] = li
            acc += li
        partial[c] = acc


# --- drivers ----------------------------------------------------------------------


def labels(t, n_classes, ignore_index, w, row0=0):
    """Class indices ``t`` (N,) as a contiguous int32/int64 array, checked to lie in
    [0, C) unless equal to ignore_index; returns it and the sum of w[t] over the kept
    rows. ``row0``: the index of t's first row in the whole batch (for the message)."""
    t = as_class_indices(t)
    nch = (t.size + LABEL_CHUNK - 1) // LABEL_CHUNK
    bad = np.zeros(nch, np.int64)
    first = np.full(nch, -1, np.int64)
    wsum = np.zeros(nch)
    run_pieces(_check_labels, nch, t, n_classes, ignore_index, w, bad, first, wsum)
    nbad = int(bad.sum())
    if nbad:
        i = int(first[first >= 0][0])
        raise ValueError(bad_labels_message(nbad, n_classes, ignore_index, row0 + i, t[i]))
    return t, float(np.sum(wsum))


def compute(x2, t2, w, probs, eps, ignore_index, scale, want_rows, grad2):
    """Run the kernel on checked rows; returns (float64 loss sum, per-row losses
    (float64, empty unless ``want_rows``)). ``grad2``: the gradient's rows, or None."""
    n = x2.shape[0]
    want_grad = grad2 is not None
    if not want_grad:
        grad2 = np.empty((0, x2.shape[1]), x2.dtype)
    rows = np.empty(n if want_rows else 0)
    if not n:
        return 0.0, rows
    per = _rows.rows_per_chunk(x2.shape[1])
    stream = want_grad and _rows.streams(grad2)
    partial = np.zeros((n + per - 1) // per)
    if probs:
        run_pieces(
            _ce_prob_kernel,
            partial.size,
            x2,
            t2,
            w,
            eps,
            scale,
            grad2,
            want_grad,
            rows,
            want_rows,
            per,
            partial,
        )
    else:
        if x2.shape[1] < SHORT_ROWS:
            kernel = _SHORT_ROWS[eps > 0.0]
        else:
            kernel = _ce_index_kernel
        run_pieces(
            kernel,
            partial.size,
            x2,
            t2,
            w,
            ignore_index,
            eps,
            scale,
            grad2,
            want_grad,
            rows,
            want_rows,
            per,
            stream,
            partial,
        )
    return float(np.sum(partial)), rows
