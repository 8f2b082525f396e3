"""CUDA kernels (numba-cuda). Imported only when a device array reaches a public
function: importing this module imports ``numba.cuda`` (it does not create a
context; the first launch does).

Structure (every sum deterministic, no float atomics):

- Row kernels (cross-entropy, logsumexp/softmax/log_softmax): a block of
  ``THREADS`` threads handles ``THREADS // tpr`` rows, ``tpr`` threads per row
  (a power of two, about the row length for short rows, ``THREADS`` for long
  ones). Max, exp-sum and smoothing sums are tree reductions in shared memory over
  each row's segment of threads (no warp shuffles). When the block's rows fit in
  the dynamic shared-memory budget (``SMEM_BYTES``) they are cached there on the
  first pass and the exps overwrite them; otherwise every pass re-reads global
  memory and the gradient pass recomputes the exps (two passes for the max and
  the sum, one for the gradient).
- Element-wise kernels: a fixed grid (a function of the size only) strides over
  the elements; each thread sums its losses in float64, each block writes one
  partial sum.
- Batch reductions: per-row (float64) or per-block partial sums in an array, then
  one block sums them in a fixed order (``finish``).

Invalid data that the CPU path rejects before computing (class indices outside
[0, C), probabilities outside [0, 1], negative variances) cannot be checked on the
host without a synchronization: the kernels give NaN for the affected rows or
elements and count them in a per-device error record (integer atomics only).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, uint64

from .._calls import (
    BCE_LOGITS,
    BCE_PROBS,
    COL,
    FULL,
    GAUSSIAN,
    KL,
    LOSSES,
    LSE,
    MSE,
    POISSON,
    ROW,
    SOFTMAX,
)

# block size (a power of two) and the dynamic shared memory a block may use for
# cached rows (48 KB per block minus the static reduction buffers, 10 KB at 256
# threads): a float32 row of up to 9216 classes is cached
THREADS = 256
SMEM_BYTES = 36 * 1024
MAX_BLOCKS = 1024  # element-wise and reduction grids

# error record slots: bad class indices (count, first row), then one count per
# element-wise loss of the values outside its ValueRule (fastmle._calls.LOSSES)
ERR_LABELS, ERR_FIRST_LABEL, ERR_VALUES = 0, 1, 2
ERR_SLOTS = ERR_VALUES + len(LOSSES)
NO_ROW = np.iinfo(np.int64).max

_TORCH_EPSILON = float(np.float32(1e-12))
_cache: dict = {}


def _memo(key, build):
    """One compiled kernel per key and block size (tests shrink ``THREADS`` under
    the simulator before the first launch)."""
    key = (key, THREADS)
    k = _cache.get(key)
    if k is None:
        k = _cache[key] = build()
    return k


# --- device helpers -----------------------------------------------------------


@cuda.jit(device=True)
def _vmax(a, b):
    """max that propagates NaN from either side."""
    return b if (b > a or b != b) else a


@cuda.jit(device=True)
def _is_finite(v):
    return math.isfinite(v)


@cuda.jit(device=True)
def _seg_sum(buf, tid, lane, tpr):
    """Tree sum over each segment of ``tpr`` threads; every thread of the block
    must call it. Returns the segment's sum (the value at its first slot)."""
    cuda.syncthreads()
    s = tpr // 2
    while s > 0:
        if lane < s:
            buf[tid] += buf[tid + s]
        cuda.syncthreads()
        s //= 2
    v = buf[tid - lane]
    cuda.syncthreads()
    return v


@cuda.jit(device=True)
def _block_sum(buf, acc):
    """The sum of every thread's ``acc`` over the block (``buf``: one float64 of
    shared memory per thread); every thread of the block must call it."""
    tid = cuda.threadIdx.x
    buf[tid] = acc
    return _seg_sum(buf, tid, tid, buf.shape[0])


@cuda.jit(device=True)
def _seg_tree(buf, k, tid, lane, tpr):
    """Tree sums of rows 0..k-1 of ``buf`` (k, THREADS) over each segment of
    ``tpr`` threads, all in one pass (one barrier per level); the sums end up at
    each segment's first slot. Every thread of the block must call it."""
    cuda.syncthreads()
    s = tpr // 2
    while s > 0:
        if lane < s:
            for q in range(k):
                buf[q, tid] += buf[q, tid + s]
        cuda.syncthreads()
        s //= 2


@cuda.jit(device=True)
def _seg_max(buf, tid, lane, tpr):
    cuda.syncthreads()
    s = tpr // 2
    while s > 0:
        if lane < s:
            buf[tid] = _vmax(buf[tid], buf[tid + s])
        cuda.syncthreads()
        s //= 2
    return buf[tid - lane]  # buf is not reused: no barrier after the read


def threads_per_row(c: int) -> int:
    t = 1
    while t < c and t < THREADS:
        t *= 2
    return t


def row_launch(n_rows: int, c: int, itemsize: int, smem_bytes: int | None = None):
    """(blocks, tpr, rows per block, cached, dynamic shared bytes) for a row kernel."""
    tpr = threads_per_row(c)
    rpb = THREADS // tpr
    blocks = max(1, (n_rows + rpb - 1) // rpb)
    need = rpb * c * itemsize
    budget = SMEM_BYTES if smem_bytes is None else smem_bytes
    cached = need <= budget
    return blocks, tpr, rpb, cached, (need if cached else 0)


# --- cross-entropy with class indices -----------------------------------------


def ce_labels_kernel():
    """Per block: the float64 sum of weight[t] over kept rows (the mean's
    denominator); bad labels are counted in ``err``."""

    def build():
        @cuda.jit
        def k(target, weight, ignore_index, n_classes, partial, err):
            buf = cuda.shared.array(THREADS, float64)
            tid = cuda.threadIdx.x
            n = target.size
            acc = 0.0
            i = cuda.blockIdx.x * THREADS + tid
            step = cuda.gridDim.x * THREADS
            while i < n:
                t = target[i]
                if t != ignore_index:
                    if t < 0 or t >= n_classes:
                        cuda.atomic.add(err, ERR_LABELS, 1)
                        cuda.atomic.min(err, ERR_FIRST_LABEL, i)
                    else:
                        acc += float64(weight[t])
                i += step
            tot = _block_sum(buf, acc)
            if tid == 0:
                partial[cuda.blockIdx.x] = tot

        return k

    return _memo("ce_labels", build)


def ce_params_kernel():
    """One block: params = [denominator, gradient scale, sum of the class weights]."""

    def build():
        @cuda.jit
        def k(partial, weight, is_mean, params):
            buf = cuda.shared.array(THREADS, float64)
            tid = cuda.threadIdx.x
            acc = 0.0
            for j in range(tid, partial.size, THREADS):
                acc += partial[j]
            denom = _block_sum(buf, acc)
            acc = 0.0
            for j in range(tid, weight.size, THREADS):
                acc += float64(weight[j])
            w_total = _block_sum(buf, acc)
            if tid == 0:
                params[0] = denom
                if is_mean:
                    params[1] = 1.0 / denom if denom != 0.0 else math.nan
                else:
                    params[1] = 1.0
                params[2] = w_total

        return k

    return _memo("ce_params", build)


def ce_index_kernel(dt):
    """Softmax cross-entropy rows with class-index targets: rows_out[i] (float64)
    always, the gradient into grad when want_grad."""
    dt = np.dtype(dt)

    def build():
        from numba import from_dtype

        nt = from_dtype(dt)

        @cuda.jit
        def k(
            x,
            target,
            weight,
            ignore_index,
            eps,
            params,
            grad,
            want_grad,
            rows_out,
            tpr,
            cached,
        ):
            cache = cuda.shared.array(0, nt)
            fbuf = cuda.shared.array(THREADS, nt)
            sums = cuda.shared.array((4, THREADS), float64)
            tid = cuda.threadIdx.x
            lane = tid % tpr
            rl = tid // tpr
            rpb = THREADS // tpr
            n = x.shape[0]
            c_ = x.shape[1]
            i = cuda.blockIdx.x * rpb + rl
            active = i < n
            scale = params[1]
            w_total = params[2]
            smooth = eps > 0.0
            keep = 1.0 - eps
            t = 0
            ignored = True
            bad = False
            xt = 0.0
            # a row's elements by unsigned indices into 1-D views: signed ones cost
            # Numba's negative-index wraparound (a shift and a mask) on every access
            xi = x[min(i, n - 1)]
            u0, uc, us = uint64(lane), uint64(c_), uint64(tpr)
            uo = uint64(rl * c_)  # the row's place in the cache (a view would be generic)
            if active:
                t = target[i]
                ignored = t == ignore_index
                bad = (not ignored) and (t < 0 or t >= c_)
                if not ignored and not bad and lane == 0:
                    xt = float64(x[i, t])  # read before any gradient write (out=input)
            # pass 1: row max (and the row into shared memory)
            m = nt(-math.inf)
            if active:
                for j in range(u0, uc, us):
                    v = xi[j]
                    if cached:
                        cache[uo + j] = v
                    m = _vmax(m, v)
            fbuf[tid] = m
            m = _seg_max(fbuf, tid, lane, tpr)
            work = active and not ignored and not bad and _is_finite(m)
            # pass 2: exps; r = sum of exps without the max element's exact 1
            r = 0.0
            n_one = 0
            sd = 0.0
            if work and smooth:  # its own pass, before the exps replace the row's cache
                for j in range(u0, uc, us):
                    v = cache[uo + j] if cached else xi[j]
                    sd += float64(weight[j]) * float64(v - m)
            if work:
                for j in range(u0, uc, us):
                    v = cache[uo + j] if cached else xi[j]
                    e = nt(math.exp(v - m))
                    if cached:
                        cache[uo + j] = e
                    if e >= 1:
                        n_one += 1
                    else:
                        r += float64(e)
            sums[0, tid] = r
            sums[1, tid] = n_one
            sums[2, tid] = sd
            _seg_tree(sums, 3, tid, lane, tpr)
            r = sums[0, tid - lane] + (sums[1, tid - lane] - 1.0)
            sd = sums[2, tid - lane]
            li = 0.0
            a = 0.0
            wt = 0.0
            if work:
                ls = math.log1p(r)
                wt = float64(weight[t])
                li = keep * wt * (ls - (xt - float64(m)))
                if smooth:
                    li += eps / c_ * (w_total * ls - sd)
                a = scale * (keep * wt + eps * w_total / c_) / (1.0 + r)
            elif active and not ignored:
                li = math.nan
            if active and lane == 0:
                rows_out[i] = li
            # pass 3: gradient. Branches that do not change along the row are taken
            # once, outside the loops; the target's element is made apart, by the
            # lane that owns it, from its exp read before the loop (out=input)
            if want_grad and active:
                ac = nt(a)
                ct = nt(scale * keep * wt)
                sh = scale * eps / c_
                gi = grad[i]
                if work:
                    ut = uint64(t)
                    mine = ut % us == u0
                    et = nt(0.0)
                    if mine:
                        et = cache[uo + ut] if cached else nt(math.exp(xi[ut] - m))
                    if cached and not smooth:  # the common case: one product an element
                        for j in range(u0, uc, us):
                            gi[j] = cache[uo + j] * ac
                    else:
                        for j in range(u0, uc, us):
                            e = cache[uo + j] if cached else nt(math.exp(xi[j] - m))
                            g = e * ac
                            if smooth:
                                g -= nt(float64(weight[j]) * sh)
                            gi[j] = g
                    if mine:
                        g = et * ac
                        if smooth:
                            g -= nt(float64(weight[ut]) * sh)
                        gi[ut] = g - ct
                else:
                    fill = nt(0.0) if ignored else nt(math.nan)
                    for j in range(u0, uc, us):
                        gi[j] = fill

        return k

    return _memo(("ce_index", dt.str), build)


def ce_prob_kernel(dt):
    """Softmax cross-entropy rows with class-probability targets y (N, C)."""
    dt = np.dtype(dt)

    def build():
        from numba import from_dtype

        nt = from_dtype(dt)

        @cuda.jit
        def k(x, y, weight, eps, scale, grad, want_grad, rows_out, tpr, cached):
            cache = cuda.shared.array(0, nt)
            fbuf = cuda.shared.array(THREADS, nt)
            sums = cuda.shared.array((4, THREADS), float64)
            tid = cuda.threadIdx.x
            lane = tid % tpr
            rl = tid // tpr
            rpb = THREADS // tpr
            n = x.shape[0]
            c_ = x.shape[1]
            i = cuda.blockIdx.x * rpb + rl
            active = i < n
            # unsigned indices into the row's 1-D views (see ce_index_kernel)
            xi, yi = x[min(i, n - 1)], y[min(i, n - 1)]
            u0, uc, us = uint64(lane), uint64(c_), uint64(tpr)
            uo = uint64(rl * c_)
            keep = nt(1.0 - eps)
            spread = nt(eps / c_)
            m = nt(-math.inf)
            if active:
                for j in range(u0, uc, us):
                    v = xi[j]
                    if cached:
                        cache[uo + j] = v
                    m = _vmax(m, v)
            fbuf[tid] = m
            m = _seg_max(fbuf, tid, lane, tpr)
            work = active and _is_finite(m)
            r = 0.0
            n_one = 0
            wq_sum = 0.0
            wqd_sum = 0.0
            if work:
                for j in range(u0, uc, us):
                    v = cache[uo + j] if cached else xi[j]
                    d = v - m
                    wq = weight[j] * (keep * yi[j] + spread)
                    wq_sum += float64(wq)
                    if wq != 0:
                        wqd_sum += float64(wq) * float64(d)
                    e = nt(math.exp(d))
                    if cached:
                        cache[uo + j] = e
                    if e >= 1:
                        n_one += 1
                    else:
                        r += float64(e)
            sums[0, tid] = r
            sums[1, tid] = n_one
            sums[2, tid] = wq_sum
            sums[3, tid] = wqd_sum
            _seg_tree(sums, 4, tid, lane, tpr)
            r = sums[0, tid - lane] + (sums[1, tid - lane] - 1.0)
            wq_sum = sums[2, tid - lane]
            wqd_sum = sums[3, tid - lane]
            li = math.nan
            a = 0.0
            if work:
                li = wq_sum * math.log1p(r) - wqd_sum
                a = scale * wq_sum / (1.0 + r)
            if active and lane == 0:
                rows_out[i] = li
            if want_grad and active:
                ac = nt(a)
                sc = nt(scale)
                nan = nt(math.nan)
                gi = grad[i]
                for j in range(u0, uc, us):
                    if work:
                        e = cache[uo + j] if cached else nt(math.exp(xi[j] - m))
                        gi[j] = e * ac - sc * weight[j] * (keep * yi[j] + spread)
                    else:
                        gi[j] = nan

        return k

    return _memo(("ce_prob", dt.str), build)


# --- logsumexp / softmax / log_softmax ----------------------------------------


def softmax_kernel(dt):
    """Rows of a (outer, C, inner) array along the middle axis: row q = a * inner + b
    holds elements a*C*inner + j*inner + b. lse[q] always (x's dtype); softmax or
    log_softmax into out (same layout as x) for those modes."""
    dt = np.dtype(dt)

    def build():
        from numba import from_dtype

        nt = from_dtype(dt)

        @cuda.jit
        def k(x, n_rows, c_, inner, mode, out, lse, tpr, cached):
            cache = cuda.shared.array(0, nt)
            fbuf = cuda.shared.array(THREADS, nt)
            sums = cuda.shared.array((4, THREADS), float64)
            tid = cuda.threadIdx.x
            lane = tid % tpr
            rl = tid // tpr
            rpb = THREADS // tpr
            q = cuda.blockIdx.x * rpb + rl
            active = q < n_rows
            # unsigned indices (see ce_index_kernel); inactive rows never index
            u0, uc, us = uint64(lane), uint64(c_), uint64(tpr)
            uo = uint64(rl * c_)
            ui = uint64(inner)
            ub = uint64((q // inner) * c_ * inner + q % inner) if active else uint64(0)
            m = nt(-math.inf)
            if active:
                for j in range(u0, uc, us):
                    v = x[ub + j * ui]
                    if cached:
                        cache[uo + j] = v
                    m = _vmax(m, v)
            fbuf[tid] = m
            m = _seg_max(fbuf, tid, lane, tpr)
            work = active and _is_finite(m)
            r = 0.0
            n_one = 0
            if work:
                for j in range(u0, uc, us):
                    v = cache[uo + j] if cached else x[ub + j * ui]
                    e = nt(math.exp(v - m))
                    if cached and mode == SOFTMAX:
                        cache[uo + j] = e
                    if e >= 1:
                        n_one += 1
                    else:
                        r += float64(e)
            sums[0, tid] = r
            sums[1, tid] = n_one
            _seg_tree(sums, 2, tid, lane, tpr)
            r = sums[0, tid - lane] + (sums[1, tid - lane] - 1.0)
            ls = 0.0
            if work:
                ls = math.log1p(r)
            if active and lane == 0:
                # a non-finite max: +inf gives +inf, only -inf gives -inf, NaN stays
                lse[q] = nt(float64(m) + ls) if work else m
            if active and mode != LSE:
                nan = nt(math.nan)
                a = nt(1.0 / (1.0 + r)) if work else nan
                lsc = nt(ls)
                # one loop per case: the branches do not change along the row
                if not work:
                    for j in range(u0, uc, us):
                        out[ub + j * ui] = nan
                elif mode == SOFTMAX and cached:
                    for j in range(u0, uc, us):
                        out[ub + j * ui] = cache[uo + j] * a
                elif mode == SOFTMAX:
                    for j in range(u0, uc, us):
                        p = ub + j * ui
                        out[p] = nt(math.exp(x[p] - m)) * a
                else:
                    for j in range(u0, uc, us):
                        p = ub + j * ui
                        v = cache[uo + j] if cached else x[p]
                        out[p] = (v - m) - lsc

        return k

    return _memo(("softmax", dt.str), build)


# --- element-wise losses ------------------------------------------------------


@cuda.jit(device=True)
def _opval(a, kind, k, l_):
    """Element k of the input's (R, L) view of an operand of layout ``kind``."""
    if kind == FULL:
        return a[k]
    if kind == COL:
        return a[k % l_]
    if kind == ROW:
        return a[k // l_]
    return a[0]


@cuda.jit(device=True)
def _first_use(kind, k, l_):
    """Whether element k is the first to read its entry of an operand of layout
    ``kind``: counted there, a bad entry is counted once, as on the CPU."""
    if kind == FULL:
        return True
    if kind == COL:
        return k < l_
    if kind == ROW:
        return k % l_ == 0
    return k == 0


def _point(loss_id, nt):
    """The point formula of element-wise loss ``loss_id`` in dtype ``nt``, as a device
    function ``(x, y, b, c, scale, params) -> (loss, scale * d/dx, scale * d/db)``:
    y, b, c are its operands in the order of ``LOSSES[loss_id].operands`` (unused ones
    are x), ``params`` the record's ``Pointwise.params``, named where they are read.
    The formulas mirror ``fastmle._cpu.elementwise`` operation for operation."""
    if loss_id == BCE_LOGITS:

        @cuda.jit(device=True)
        def point(xj, yj, wj, pw, scale, params):  # target, weight, pos_weight
            one = nt(1.0)
            zero = nt(0.0)
            ax = xj if xj >= zero else -xj
            e = nt(math.exp(-ax)) if ax == ax else xj
            t = nt(math.log1p(e))
            rr = one / (one + e)
            aa = yj * pw
            bb = one - yj
            la = aa * (t + (-xj if -xj > zero else zero)) if aa != zero else zero
            lb = bb * (t + (xj if xj > zero else zero)) if bb != zero else zero
            if xj >= zero:
                gj = rr * (bb - aa * e)
            else:
                gj = rr * (bb * e - aa)
            # a NaN logit stays NaN even where both coefficients are 0 (y = 1,
            # pos_weight = 0), as on the CPU and in PyTorch
            return wj * (la + lb if xj == xj else xj), nt(scale) * wj * gj, zero

    elif loss_id == BCE_PROBS:

        @cuda.jit(device=True)
        def point(xj, yj, wj, unused, scale, params):  # target, weight
            one = nt(1.0)
            zero = nt(0.0)
            floor = nt(-100.0)
            lp = nt(math.log(xj)) if xj > zero else nt(-math.inf)
            lq = nt(math.log1p(-xj)) if xj < one else nt(-math.inf)
            if xj != xj:
                lp = xj
                lq = xj
            lp = lp if (lp > floor or lp != lp) else floor  # PyTorch's clamp at -100
            lq = lq if (lq > floor or lq != lq) else floor
            den = (one - xj) * xj
            tiny = nt(_TORCH_EPSILON)
            den = den if (den > tiny or den != den) else tiny
            return -wj * (yj * lp + (one - yj) * lq), nt(scale) * wj * (xj - yj) / den, zero

    elif loss_id == GAUSSIAN:

        @cuda.jit(device=True)
        def point(xj, tj, vj, unused, scale, params):  # target, var
            eps, const = params  # the clamp of var, the 'full' constant
            one = nt(1.0)
            half = nt(0.5)
            sc = nt(scale)
            epsv = nt(eps)
            v = epsv if vj < epsv else vj
            d = xj - tj
            r = one / v
            d2r = d * d * r
            lv = nt(math.log(v)) if v == v else v
            return half * (lv + d2r) + nt(const), sc * (d * r), sc * (half * r * (one - d2r))

    elif loss_id == MSE:

        @cuda.jit(device=True)
        def point(xj, tj, unused1, unused2, scale, params):  # target
            d = xj - tj
            return d * d, nt(2.0 * scale) * d, nt(0.0)

    elif loss_id == KL:

        @cuda.jit(device=True)
        def point(xj, tj, unused1, unused2, scale, params):  # target
            log_target = params[0] != 0.0
            zero = nt(0.0)
            sc = nt(scale)
            if log_target:
                et = nt(math.exp(tj)) if tj == tj else tj
                return et * (tj - xj), -sc * et, zero
            if tj == zero:
                lj = zero if xj == xj else xj  # 0 * NaN input is NaN (CPU, torch)
            elif tj > zero:
                lj = tj * (nt(math.log(tj)) - xj)
            else:
                lj = nt(math.nan)
            return lj, -sc * tj, zero

    elif loss_id == POISSON:

        @cuda.jit(device=True)
        def stirling(tj):
            """The Stirling term of log(t!) that ``full`` adds where t > 1 (else 0)."""
            if not tj > nt(1.0):
                return nt(0.0)
            lt = nt(math.log(tj))
            return tj * lt - tj + nt(0.5) * lt + nt(HALF_LOG_2PI)

        @cuda.jit(device=True)
        def point(xj, tj, unused1, unused2, scale, params):  # target
            flags, eps = params  # flags: 1 = log_input, 2 = full (summed)
            log_input = flags == 1.0 or flags == 3.0
            full = flags >= 2.0
            zero = nt(0.0)
            sc = nt(scale)
            st = stirling(tj) if full else zero
            if log_input:
                # exp(x) - t*x: exp(x) > 0 and overflows only where the value does
                ex = nt(math.exp(xj))
                return ex - tj * xj + st, sc * (ex - tj), zero
            xe = xj + nt(eps)
            # log(0) = -inf, log(< 0) = NaN (the simulator's math.log would raise)
            lx = nt(math.log(xe)) if xe > zero else (nt(-math.inf) if xe == zero else nt(math.nan))
            return xj - tj * lx + st, sc * (nt(1.0) - tj / xe), zero

    else:
        raise ValueError(f"no CUDA point formula for element-wise loss id {loss_id}")
    return point


HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def elementwise_kernel(loss_id, dt):
    """Fixed-grid element-wise loss: partial[block] = float64 sum of the block's
    losses; per-element loss, gradient (times scale) and d/d(operand b) on request.
    Values outside the loss's ValueRule (``LOSSES[loss_id].rule``) give NaN and are
    counted in ``err`` (each entry of the checked argument once)."""
    dt = np.dtype(dt)
    loss = LOSSES[loss_id]
    n_ops = len(loss.operands)
    checked = loss.rule is not None
    rule_at = loss.rule.position if checked else 0
    lo = loss.rule.lo if checked else 0.0
    hi = loss.rule.hi if checked else 0.0

    def build():
        from numba import from_dtype

        nt = from_dtype(dt)
        point = _point(loss_id, nt)

        @cuda.jit
        def k(
            x,
            a,
            ka,
            b,
            kb,
            c3,
            kc,
            l_,
            params,
            scale,
            grad,
            want_grad,
            loss_el,
            want_el,
            dv,
            want_dv,
            partial,
            err,
        ):
            buf = cuda.shared.array(THREADS, float64)
            tid = cuda.threadIdx.x
            n = x.size
            nan = nt(math.nan)
            acc = 0.0
            k_ = cuda.blockIdx.x * THREADS + tid
            step = cuda.gridDim.x * THREADS
            while k_ < n:
                xj = x[k_]
                yj = _opval(a, ka, k_, l_)
                bj = _opval(b, kb, k_, l_) if n_ops >= 2 else xj
                cj = _opval(c3, kc, k_, l_) if n_ops >= 3 else xj
                bad = False
                if checked:
                    v = (
                        xj
                        if rule_at == 0
                        else (yj if rule_at == 1 else (bj if rule_at == 2 else cj))
                    )
                    kv = (
                        FULL
                        if rule_at == 0
                        else (ka if rule_at == 1 else (kb if rule_at == 2 else kc))
                    )
                    if v < nt(lo) or v > nt(hi):
                        bad = True
                        if _first_use(kv, k_, l_):
                            cuda.atomic.add(err, ERR_VALUES + loss_id, 1)
                if bad:
                    lj = nan
                    gj = nan
                    dvj = nan
                else:
                    lj, gj, dvj = point(xj, yj, bj, cj, scale, params)
                if want_el:
                    loss_el[k_] = lj
                if want_grad:
                    grad[k_] = gj
                if want_dv:
                    dv[k_] = dvj
                acc += float64(lj)
                k_ += step
            tot = _block_sum(buf, acc)
            if tid == 0:
                partial[cuda.blockIdx.x] = tot

        return k

    return _memo(("ew", loss_id, dt.str), build)


# --- reductions ---------------------------------------------------------------


def block_sums_kernel():
    """partial[block] = float64 sum of the block's strided share of a (any float)."""

    def build():
        @cuda.jit
        def k(a, partial):
            buf = cuda.shared.array(THREADS, float64)
            tid = cuda.threadIdx.x
            acc = 0.0
            i = cuda.blockIdx.x * THREADS + tid
            step = cuda.gridDim.x * THREADS
            while i < a.size:
                acc += float64(a[i])
                i += step
            tot = _block_sum(buf, acc)
            if tid == 0:
                partial[cuda.blockIdx.x] = tot

        return k

    return _memo("block_sums", build)


def finish_kernel():
    """One block: out[0] = sum(vals) (fixed order), divided by the denominator for
    a mean (params[0] when use_params, else denom; nan when it is 0)."""

    def build():
        @cuda.jit
        def k(vals, params, use_params, denom, is_mean, out):
            buf = cuda.shared.array(THREADS, float64)
            tid = cuda.threadIdx.x
            acc = 0.0
            for j in range(tid, vals.size, THREADS):
                acc += vals[j]
            tot = _block_sum(buf, acc)
            if tid == 0:
                if is_mean:
                    d = params[0] if use_params else denom
                    tot = tot / d if d != 0.0 else math.nan
                out[0] = tot

        return k

    return _memo("finish", build)


def cast_kernel():
    """out[i] = a[i] (dtype conversion, e.g. float64 row losses to float32)."""

    def build():
        @cuda.jit
        def k(a, out):
            i = cuda.grid(1)
            if i < a.size:
                out[i] = a[i]

        return k

    return _memo("cast", build)


def row_sums_kernel():
    """out[i] = sum of row i of a (R, L) (float64 accumulation), a block per row."""

    def build():
        @cuda.jit
        def k(a, l_, out):
            buf = cuda.shared.array(THREADS, float64)
            tid = cuda.threadIdx.x
            i = cuda.blockIdx.x
            acc = 0.0
            for j in range(tid, l_, THREADS):
                acc += float64(a[i * l_ + j])
            tot = _block_sum(buf, acc)
            if tid == 0:
                out[i] = tot

        return k

    return _memo("row_sums", build)


def col_sums_kernel():
    """out[j] = sum over rows of column j of a (R, L), in row order."""

    def build():
        @cuda.jit
        def k(a, r_, l_, out):
            j = cuda.grid(1)
            if j < l_:
                acc = 0.0
                for i in range(r_):
                    acc += float64(a[i * l_ + j])
                out[j] = acc

        return k

    return _memo("col_sums", build)


def reset_errors_kernel():
    def build():
        @cuda.jit
        def k(err):
            i = cuda.grid(1)
            if i < err.size:
                err[i] = NO_ROW if i == ERR_FIRST_LABEL else 0

        return k

    return _memo("reset", build)
