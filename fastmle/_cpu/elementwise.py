"""One fused kernel for every element-wise loss (BCE, Gaussian NLL, MSE, KL, Poisson NLL).

The input is walked in fixed chunks of ``CHUNK`` contiguous elements. Auxiliary
operands (target, weight, pos_weight, var) broadcast to the input's shape; each is
described relative to a 2-D view (R, L) of the input as one of

    FULL    same shape as the input                 -> a view, no copy
    COL     constant along the leading dims         -> a length-L vector
    ROW     constant along the trailing dims        -> a length-R vector
    SCALAR  one value                               -> a length-1 vector

and expanded into a chunk-sized scratch buffer only when it is not FULL, so the
inner loop always runs over contiguous arrays and vectorizes. A chunk covers
whole rows (short rows) or part of one row (long rows), never parts of two.

Per-element losses are summed in float64 per chunk, and the chunk sums are added
in chunk order: the result does not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .jit import DRIVER_OPTIONS, KERNEL_OPTIONS, POINTWISE_OPTIONS, inner
from .numerics import atanh2_third, borrowed, exp, exp_nonpos, log, log1p
from .rows import cast, sum64
from .threads import run_pieces
from .._calls import (
    BCE_LOGITS,
    BCE_PROBS,
    COL,
    FULL,
    GAUSSIAN,
    KL,
    LOSSES,
    MSE,
    ROW,
    SCALAR,
    operand_kind,
    split,
)

CHUNK = 16384


# --- layout (Python) ------------------------------------------------------------


def _flat(op, kind, shape, k):
    if kind == SCALAR:
        return op.reshape(-1)[:1]
    full = np.broadcast_to(op, shape)
    if kind == FULL:
        return np.ascontiguousarray(full).reshape(-1)
    if kind == COL:
        return np.ascontiguousarray(full[(0,) * k]).reshape(-1)
    return np.ascontiguousarray(full[(Ellipsis,) + (0,) * (len(shape) - k)]).reshape(-1)


def layout(shape, operands):
    """(R, L, kinds, flats): the split of ``_calls.split`` and each operand flattened
    for it. Operands whose broadcast pattern fits no split are materialized at full
    size."""
    shape = tuple(shape)
    s = split(shape, [op.shape for op in operands])
    if s is None:
        kinds = [
            SCALAR if operand_kind(op.shape, shape, len(shape)) == SCALAR else FULL
            for op in operands
        ]
        s = 1, math.prod(shape), kinds, len(shape)
    r, l_, kinds, k = s
    if l_ == 0:  # nothing is read; derivatives come out as zeros of the operand's shape
        return r, l_, kinds, [np.ones(1, op.dtype) for op in operands]
    return r, l_, kinds, [_flat(op, kd, shape, k) for op, kd in zip(operands, kinds)]


# --- chunks (jitted) ------------------------------------------------------------


@njit(**KERNEL_OPTIONS)
def n_chunks(r, l_):
    if l_ >= CHUNK:
        return r * ((l_ + CHUNK - 1) // CHUNK)
    g = CHUNK // l_
    return (r + g - 1) // g


@inner(**KERNEL_OPTIONS)
def chunk_bounds(c, r, l_):
    """Rows [r0, r1) and columns [j0, j1) of chunk c."""
    if l_ >= CHUNK:
        per_row = (l_ + CHUNK - 1) // CHUNK
        i = c // per_row
        j0 = (c % per_row) * CHUNK
        return i, i + 1, j0, min(l_, j0 + CHUNK)
    g = CHUNK // l_
    return c * g, min(r, (c + 1) * g), 0, l_


@inner(**KERNEL_OPTIONS)
def operand_buffer(a, kind):
    """A chunk-sized scratch array for a non-FULL operand, holding a SCALAR operand's
    value already (filled once per range of chunks)."""
    buf = np.empty(0 if kind == FULL else CHUNK, a.dtype)
    if kind == SCALAR:
        buf[:] = a[0]
    return buf


@inner(**KERNEL_OPTIONS)
def operand(a, kind, buf, r0, r1, j0, j1, l_):
    """The chunk's part of operand ``a`` as a contiguous 1-D array (``buf`` is its
    :func:`operand_buffer`). Element loops, not slice assignments: those compile
    NumPy's shape-mismatch error message (string formatting, ~5 s, measured)."""
    lo = r0 * l_ + j0
    hi = (r1 - 1) * l_ + j1
    if kind == FULL:
        return a[lo:hi]
    if kind == SCALAR:
        return buf[: hi - lo]
    w = j1 - j0
    # slices indexed from 0: from a non-zero start the index could be negative as far
    # as LLVM knows (Numba wraps those around), and it vectorized gathers and scatters
    src = a[j0:j1]
    for r in range(r0, r1):
        dst = buf[(r - r0) * w : (r - r0 + 1) * w]
        if kind == ROW:
            v = a[r]
            for j in range(w):
                dst[j] = v
        else:
            for j in range(w):
                dst[j] = src[j]
    return buf[: hi - lo]


# Loops over elements live in their own functions, never inline in the loop over
# chunks: in a (then parallel) chunk loop's body they did not vectorize (measured),
# called on a slice they do.


# --- point-wise losses over one chunk (jitted) -----------------------------------
# Each writes the per-element loss l and gradient g (already times ``scale``).


@njit(inline="always", **POINTWISE_OPTIONS)
def _bce_logits_point(xj, yj, pwj):
    """(loss, d loss / dx) of y*pw*softplus(-x) + (1-y)*softplus(x).

    Both terms are >= 0 for y in [0, 1], so nothing cancels (PyTorch's
    (1-y)*x + ... loses everything for y=0, x=-20). With e = exp(-|x|) in (0, 1]
    nothing overflows: softplus(+-x) = log1p(e) + max(+-x, 0), log1p(e) =
    2 atanh(e / (2 + e)), sigmoid(|x|) = 1 / (1 + e). A zero coefficient times an
    infinite softplus counts as 0 (the limit at x = +-inf), but a NaN x gives NaN
    even where both coefficients are 0 (y = 1, pw = 0), as in PyTorch.
    """
    one = cast(1.0, xj)
    zero = cast(0.0, xj)
    e = exp_nonpos(-abs(xj))
    t = atanh2_third(e / (one + one + e))
    r = one / (one + e)
    a = yj * pwj
    b = one - yj
    la = a * (t + max(-xj, zero)) if a != zero else zero
    lb = b * (t + max(xj, zero)) if b != zero else zero
    pos = xj >= zero
    # (1-y) sigmoid(x) - y pw sigmoid(-x), sigmoid(x) = r or e r by the sign of x
    return la + lb if xj == xj else xj, r * ((b if pos else b * e) - (a * e if pos else a))


# Two lanes: the loss-only loops and Poisson's run over the first and the second half
# of their arrays at once (2-D views (2, n // 2) and an inner loop over the lane that
# LLVM unrolls), then over a left-over last element. With one lane, the chains of an
# exp or a log did not overlap from one vector iteration to the next and those loops
# were latency-bound (2e7 float32, loss only: Poisson 24 -> 9 ms, Gaussian 29 -> 20,
# BCE-with-logits 13.5 -> 11; Poisson's value and gradient 12.6 -> 11.6). The other
# value-and-gradient loops move 5-6 arrays and are bound by memory: two lanes there
# (twice the streams) made BCE and Gaussian 8-12% slower, so they keep one. Each
# element is computed by the same formula either way: the same bits (measured).


@njit(inline="always", **POINTWISE_OPTIONS)
def _lanes(a, h):
    """a[: 2 h] as two rows of h."""
    return a[: 2 * h].reshape((2, h))


@inner(**POINTWISE_OPTIONS)
def _bce_logits(x, y, w, pw, want_grad, unit_weights, scale, g, loss, dv):
    sc = cast(scale, x)
    one = cast(1.0, x)
    h = x.size // 2
    x2, y2, l2 = _lanes(x, h), _lanes(y, h), _lanes(loss, h)  # (the loss-only loops)
    # four loops, so that the common cases skip work (the unused derivative is
    # dead code there); each evaluates the same formula, so the loss is the same
    # bits with or without the gradient
    if unit_weights != 0.0:
        if want_grad:
            for j in range(x.size):
                lj, gj = _bce_logits_point(x[j], y[j], one)
                loss[j] = lj
                g[j] = sc * gj
        else:
            for j in range(h):
                for s in range(2):
                    l2[s, j] = _bce_logits_point(x2[s, j], y2[s, j], one)[0]
            for j in range(2 * h, x.size):
                loss[j] = _bce_logits_point(x[j], y[j], one)[0]
        return
    if want_grad:
        for j in range(x.size):
            lj, gj = _bce_logits_point(x[j], y[j], pw[j])
            loss[j] = w[j] * lj
            g[j] = sc * w[j] * gj
    else:
        w2, pw2 = _lanes(w, h), _lanes(pw, h)
        for j in range(h):
            for s in range(2):
                l2[s, j] = w2[s, j] * _bce_logits_point(x2[s, j], y2[s, j], pw2[s, j])[0]
        for j in range(2 * h, x.size):
            loss[j] = w[j] * _bce_logits_point(x[j], y[j], pw[j])[0]


_TORCH_EPSILON = float(np.float32(1e-12))  # PyTorch's floor is the float 1e-12f, in any dtype


@inner(**POINTWISE_OPTIONS)
def _bce_probs(p, y, w, unused, p0, p1, scale, g, loss, dv):
    one = cast(1.0, p)
    floor = cast(-100.0, p)
    tiny = cast(_TORCH_EPSILON, p)
    sc = cast(scale, p)
    for j in range(p.size):
        pj = p[j]
        lp = max(log(pj), floor)  # PyTorch clamps each log term at -100
        lq = max(log1p(-pj), floor)
        loss[j] = -w[j] * (y[j] * lp + (one - y[j]) * lq)
        # PyTorch's backward formula, including its 1e-12 floor on p(1-p)
        g[j] = sc * w[j] * (pj - y[j]) / max((one - pj) * pj, tiny)


@njit(inline="always", **POINTWISE_OPTIONS)
def _gaussian_point(xj, tj, vj, eps, const):
    """(loss, d/dx, d/dvar) of 0.5 * (log v + (x - t)**2 / v) + const, v = max(var, eps).
    Like PyTorch, the clamp is not differentiated (the gradient passes through)."""
    half = cast(0.5, xj)
    one = cast(1.0, xj)
    v = eps if vj < eps else vj
    d = xj - tj
    r = one / v
    d2r = d * d * r
    return half * (log(v) + d2r) + const, d * r, half * r * (one - d2r)


@inner(**POINTWISE_OPTIONS)
def _gaussian(x, t, v, unused, eps, const, scale, g, loss, dv):
    e = cast(eps, x)
    c = cast(const, x)
    sc = cast(scale, x)
    if g.size == 0:  # loss only
        h = x.size // 2
        x2, t2, v2, l2 = _lanes(x, h), _lanes(t, h), _lanes(v, h), _lanes(loss, h)
        for j in range(h):
            for s in range(2):
                l2[s, j] = _gaussian_point(x2[s, j], t2[s, j], v2[s, j], e, c)[0]
        for j in range(2 * h, x.size):
            loss[j] = _gaussian_point(x[j], t[j], v[j], e, c)[0]
        return
    for j in range(x.size):
        lj, gj, dvj = _gaussian_point(x[j], t[j], v[j], e, c)
        loss[j] = lj
        g[j] = sc * gj
        dv[j] = sc * dvj


@inner(**POINTWISE_OPTIONS)
def _mse(x, t, unused1, unused2, p0, p1, scale, g, loss, dv):
    sc2 = cast(2.0 * scale, x)
    for j in range(x.size):
        d = x[j] - t[j]
        loss[j] = d * d
        g[j] = sc2 * d


@inner(**POINTWISE_OPTIONS)
def _kl(x, t, unused1, unused2, log_target, p1, scale, g, loss, dv):
    zero = cast(0.0, x)
    sc = cast(scale, x)
    if log_target != 0.0:
        for j in range(x.size):
            et = exp(t[j])
            loss[j] = et * (t[j] - x[j])
            g[j] = -sc * et
    else:
        for j in range(x.size):
            tj = t[j]
            xj = x[j]
            # target * (log target - input), with 0 * +-inf = 0 (PyTorch: 0 * -inf = NaN),
            # but a NaN input stays NaN (PyTorch too)
            loss[j] = tj * (log(tj) - xj) if tj != zero else (zero if xj == xj else xj)
            g[j] = -sc * tj


HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@njit(inline="always", **POINTWISE_OPTIONS)
def _stirling(tj):
    """The Stirling term of ``log(t!)`` that ``full=True`` adds where t > 1 (else 0)."""
    one = cast(1.0, tj)
    if not tj > one:
        return cast(0.0, tj)
    lt = log(tj)
    return tj * lt - tj + cast(0.5, tj) * lt + cast(HALF_LOG_2PI, tj)


@njit(inline="always", **POINTWISE_OPTIONS)
def _poisson_point(xj, tj, log_input, full, e, sc):
    """PyTorch's poisson_nll_loss of one element: (loss, d/dx)."""
    stirling = _stirling(tj) if full else cast(0.0, xj)
    if log_input:  # exp(x) - t*x: exp(x) > 0 and overflows only where the value does
        ex = exp(xj)
        return ex - tj * xj + stirling, sc * (ex - tj)
    xe = xj + e
    return xj - tj * log(xe) + stirling, sc * (cast(1.0, xj) - tj / xe)


@inner(**POINTWISE_OPTIONS)
def _poisson(x, t, unused1, unused2, flags, eps, scale, g, loss, dv):
    """PyTorch's poisson_nll_loss. flags: 1 = log_input (x is log(rate)), 2 = full."""
    sc = cast(scale, x)
    e = cast(eps, x)
    full = flags >= 2.0
    h = x.size // 2
    x2, t2, l2, g2 = _lanes(x, h), _lanes(t, h), _lanes(loss, h), _lanes(g, h)
    if flags == 1.0 or flags == 3.0:  # two loops: log_input fixed in each
        for j in range(h):
            for s in range(2):
                l2[s, j], g2[s, j] = _poisson_point(x2[s, j], t2[s, j], True, full, e, sc)
        for j in range(2 * h, x.size):
            loss[j], g[j] = _poisson_point(x[j], t[j], True, full, e, sc)
    else:
        for j in range(h):
            for s in range(2):
                l2[s, j], g2[s, j] = _poisson_point(x2[s, j], t2[s, j], False, full, e, sc)
        for j in range(2 * h, x.size):
            loss[j], g[j] = _poisson_point(x[j], t[j], False, full, e, sc)


# --- the kernel -------------------------------------------------------------------


def _make_chunks(loss_id):
    """The chunk driver of one loss (``loss_id`` a compile-time constant: only that
    loss is compiled; the first call of an element-wise loss compiled all six,
    5.0 s CPU, measured)."""

    @njit(**DRIVER_OPTIONS)
    def _chunks(
        c0,
        c1,
        x,
        a,
        ka,
        b,
        kb,
        c3,
        kc,
        p0,
        p1,
        r,
        l_,
        scale,
        grad,
        want_grad,
        in_place,
        loss_out,
        want_none,
        dv_out,
        dv_kind,
        per_row_dv,
        part,
    ):
        """Chunks [c0, c1): part[c] = the float64 sum of chunk c's losses; fills grad,
        loss_out and the d/d(operand b) output as asked (``dv_kind`` -1: none, FULL:
        element-wise into dv_out, otherwise per-(chunk, row) partial sums into
        per_row_dv). ``in_place``: grad is x (``out=input``); a chunk's gradient is
        then made in a scratch and copied over x: written straight into x, its loop
        failed LLVM's run-time overlap check and ran scalar (BCE-with-logits 2e7
        float32: 95 against 15 ms, measured)."""
        # the arguments, which the caller keeps alive, without refcounts (see
        # numerics.borrowed)
        x, a, b, c3 = borrowed(x), borrowed(a), borrowed(b), borrowed(c3)
        grad, loss_out, dv_out = borrowed(grad), borrowed(loss_out), borrowed(dv_out)
        per_row_dv, part = borrowed(per_row_dv), borrowed(part)
        fa = operand_buffer(a, ka)
        fb = operand_buffer(b, kb)
        fc = operand_buffer(c3, kc)
        # outputs not asked for
        g_size = CHUNK if in_place or not (want_grad or loss_id == GAUSSIAN) else 0
        g_scratch = np.empty(g_size, x.dtype)
        l_scratch = np.empty(0 if want_none else CHUNK, x.dtype)
        dv_scratch = np.empty(0 if dv_kind == FULL else CHUNK, x.dtype)
        for c in range(c0, c1):
            r0, r1, j0, j1 = chunk_bounds(c, r, l_)
            lo = r0 * l_ + j0
            hi = (r1 - 1) * l_ + j1
            m = hi - lo
            xs = x[lo:hi]
            av = operand(a, ka, fa, r0, r1, j0, j1, l_)
            bv = operand(b, kb, fb, r0, r1, j0, j1, l_)
            cv = operand(c3, kc, fc, r0, r1, j0, j1, l_)
            # the gradient, or a scratch (in place; not asked for: empty for the
            # Gaussian's loss-only loop)
            gs = grad[lo:hi] if want_grad and not in_place else g_scratch[: min(m, g_scratch.size)]
            ls = loss_out[lo:hi] if want_none else l_scratch[:m]
            dvs = dv_out[lo:hi] if dv_kind == FULL else dv_scratch[:m]
            if loss_id == BCE_LOGITS:
                _bce_logits(xs, av, bv, cv, want_grad, p1, scale, gs, ls, dvs)
            elif loss_id == BCE_PROBS:
                _bce_probs(xs, av, bv, cv, p0, p1, scale, gs, ls, dvs)
            elif loss_id == GAUSSIAN:
                _gaussian(xs, av, bv, cv, p0, p1, scale, gs, ls, dvs)
            elif loss_id == MSE:
                _mse(xs, av, bv, cv, p0, p1, scale, gs, ls, dvs)
            elif loss_id == KL:
                _kl(xs, av, bv, cv, p0, p1, scale, gs, ls, dvs)
            else:
                _poisson(xs, av, bv, cv, p0, p1, scale, gs, ls, dvs)
            if in_place:
                gd = grad[lo:hi]
                for j in range(m):
                    gd[j] = gs[j]
            part[c] = sum64(ls)
            if dv_kind > FULL:
                w = j1 - j0
                for rr in range(r1 - r0):
                    per_row_dv[c, rr] = sum64(dvs[rr * w : (rr + 1) * w])

    return _chunks


_CHUNKS = {k: _make_chunks(k) for k in LOSSES}  # compiled on first use


@njit(**KERNEL_OPTIONS)
def _count_outside(c0, c1, a, lo, hi, counts):
    """counts[c] = how many elements of chunk c of (flat) a lie below lo or above hi
    (NaN is not counted)."""
    for c in range(c0, c1):
        # a slice, indexed from 0: with j from c * CHUNK the index could be negative as
        # far as LLVM knows, and the loop loaded through gathers (2.7 GB/s, measured)
        s = a[c * CHUNK : min(a.size, (c + 1) * CHUNK)]
        k = np.int32(0)
        for j in range(s.size):
            v = s[j]
            k += np.int32(1) if v < lo else np.int32(0)
            k += np.int32(1) if v > hi else np.int32(0)
        counts[c] = k


def count_outside(a: np.ndarray, lo, hi) -> int:
    """How many elements of C-contiguous ``a`` lie below lo or above hi (NaN is not
    counted); lo and hi of a's dtype."""
    flat = a.reshape(-1)
    counts = np.zeros((flat.size + CHUNK - 1) // CHUNK, np.int64)
    run_pieces(_count_outside, counts.size, flat, lo, hi, counts)
    return int(counts.sum())


# --- driver (Python) ----------------------------------------------------------------


def run(
    loss_id,
    x,
    operands,
    params=(0.0, 0.0),
    *,
    scale,
    want_loss,
    want_none,
    want_grad,
    out=None,
    dv_index=None,
    dv_dtype=None,
):
    """Run the fused kernel on C-contiguous ``x`` and up to three operands that
    broadcast to ``x.shape`` (already in x's dtype).

    Returns (sum of losses as a float64, per-element losses or None, grad or None,
    d/d operands[dv_index] shaped like that operand, or None). A d/d operand summed
    over elements is returned in ``dv_dtype`` (default: x's dtype).
    """
    dt = x.dtype
    ops = list(operands) + [np.ones(1, dt)] * (3 - len(operands))
    r, l_, kinds, flats = layout(x.shape, ops)
    if dv_index is not None and kinds[dv_index] == COL:
        # a per-column derivative would need cross-chunk sums: use a full-size one
        kinds[dv_index] = FULL
        flats[dv_index] = _flat(ops[dv_index], FULL, x.shape, x.ndim)
    n = x.size
    xf = x.reshape(-1)
    grad = out if out is not None else (np.empty(x.shape, dt) if want_grad else None)
    gf = grad.reshape(-1) if want_grad else np.empty(0, dt)
    loss_el = np.empty(x.shape, dt) if want_none else None
    lf = loss_el.reshape(-1) if want_none else np.empty(0, dt)
    dv_kind = -1 if dv_index is None else kinds[dv_index]
    dv_full = np.empty(n if dv_kind == FULL else 0, dt)
    nch = 0 if n == 0 else int(n_chunks(r, l_))
    rows_in_chunk = 1 if l_ >= CHUNK else max(1, min(r, CHUNK // max(l_, 1)))
    per_row = np.zeros((nch, rows_in_chunk) if dv_kind > FULL else (0, 0))
    if n:
        part = np.empty(nch)
        run_pieces(
            _CHUNKS[loss_id],
            nch,
            xf,
            flats[0],
            kinds[0],
            flats[1],
            kinds[1],
            flats[2],
            kinds[2],
            float(params[0]),
            float(params[1]),
            r,
            l_,
            float(scale),
            gf,
            want_grad,
            want_grad and np.may_share_memory(gf, xf),  # out=input: the one overlap allowed
            lf,
            want_none,
            dv_full,
            dv_kind,
            per_row,
            part,
        )
        total = float(np.sum(part))
    else:
        total = 0.0
    dv = None
    if dv_index is not None:
        dv = _reduce_dv(
            dv_kind, dv_full, per_row, r, l_, x.shape, operands[dv_index], dv_dtype or dt
        )
    return total, loss_el, grad, dv


def _reduce_dv(kind, dv_full, per_row, r, l_, shape, op, dt):
    """Sum the derivative over the elements that share each entry of ``op``."""
    if kind == FULL:
        full = dv_full.reshape(shape)
        if op.shape == tuple(shape):
            return full
        lead = len(shape) - op.ndim
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(op.shape) if s == 1 and shape[lead + i] != 1
        )
        return full.sum(axis=axes, dtype=np.float64).reshape(op.shape).astype(dt)
    if per_row.size == 0:
        return np.zeros(op.shape, dt)
    if kind == SCALAR:
        return np.full(op.shape, per_row.sum(), dt)
    if l_ >= CHUNK:  # several chunks per row, in order
        rows = per_row[:, 0].reshape(r, -1).sum(axis=1)
    else:
        rows = per_row.reshape(-1)[:r]
    return rows.astype(dt).reshape(op.shape)
