"""Row kernels shared by softmax cross-entropy and logsumexp/softmax/log_softmax.

A row is read from memory once: its max is computed while the previous row's exps
are (so the first read overlaps arithmetic), the exp pass stores exp(x - max) in
a scratch row that stays in L1, and the final pass writes the gradient (or the
softmax) from it. Each exp is computed once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .jit import KERNEL_OPTIONS, inner
from .numerics import exp_nonpos, from_sortable, sortable, store_fence, stream_copy

# Rows are grouped into chunks of about this many elements. The chunking (not the
# number of threads) fixes the order of every floating-point sum, so results are
# bitwise identical at any thread count.
CHUNK_ELEMENTS = 32768


def cast(value, like):
    """``value`` converted to the dtype of array (or float) ``like``, in jitted code."""
    raise NotImplementedError("only callable from jitted code")


@overload(cast)
def _cast_impl(value, like):
    dt = like.dtype if isinstance(like, types.Array) else like
    if isinstance(dt, types.Float):
        return lambda value, like: dt(value)
    return None


def rows_per_chunk(n_cols: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(n_cols, 1))


# Outputs at least this large are written with non-temporal stores (see
# ``_math.stream_copy``): far beyond the caches, so caching them only costs the
# read of every line before it is written. Smaller ones stay in the cache, where
# the caller will read them.
STREAM_BYTES = 1 << 24


def streams(out) -> bool:
    """Whether kernels should write ``out`` (an array, or None) with streaming stores."""
    return out is not None and out.nbytes >= STREAM_BYTES


@inner(**KERNEL_OPTIONS)
def write_row(e, g, stream):
    """g[:] = e[:], with non-temporal stores if ``stream`` (then the caller must
    :func:`fence` before its chunk ends)."""
    if stream:
        stream_copy(e, g)
    else:
        for j in range(e.size):
            g[j] = e[j]


@inner(**KERNEL_OPTIONS)
def fence(stream):
    """Make the streaming stores of this thread visible (a no-op without them)."""
    if stream:
        store_fence()


@njit(**KERNEL_OPTIONS)
def sum64(a):
    """sum(a) accumulated in float64 (vectorized: reassociation is allowed here)."""
    s = 0.0
    for j in range(a.size):
        s += a[j]
    return s


@inner(**KERNEL_OPTIONS)
def row_max(x):
    """max(x) for a non-empty row; NaN if the row holds a (positive) NaN."""
    k = sortable(x[0])
    for j in range(1, x.size):
        kj = sortable(x[j])
        k = kj if kj > k else k  # integer max: vectorizes without fast-math
    return from_sortable(k, x[0])


@inner(**KERNEL_OPTIONS)
def exp_row(x, m, e, nxt):
    """e[j] = exp(x[j] - m); returns (r, max(nxt)) with r = sum(e) - 1 in float64.

    The max element contributes exactly exp(0) = 1, so r collects the other terms
    without that 1 and log1p(r) keeps full relative accuracy when r is tiny (a
    confident, correct prediction: log(1 + 1e-13) computed as log(s) would lose
    three digits).

    ``nxt`` is the next row (same length, or ``x`` itself for the last one): its
    max is computed in the same loop, so that its first read from memory overlaps
    with this row's exp arithmetic instead of following it (measured 1.2x faster).

    ``e`` must not overlap ``x`` or ``nxt``: LLVM would then fall back to scalar
    code (it cannot prove that reading x[j] before writing e[j] is safe; measured
    3.6x slower in place). Callers pass a scratch row and write the gradient from
    it. The sum is a second loop over ``e`` (in L1 by then): fused into the exp
    loop, the float64 accumulator halves the SIMD width of the exp.
    """
    k = sortable(nxt[0])
    for j in range(x.size):
        e[j] = exp_nonpos(x[j] - m)
        kj = sortable(nxt[j])
        k = kj if kj > k else k
    one = cast(1.0, x)
    r = 0.0
    n_one = 0
    for j in range(x.size):
        v = e[j]
        r += v if not v >= one else 0.0  # NaN is added, and propagates
        n_one += 1 if v >= one else 0
    return r + (n_one - 1), from_sortable(k, nxt[0])


@inner(**KERNEL_OPTIONS)
def exp_row_weighted(x, m, e, nxt, w):
    """As :func:`exp_row`, also returning sum(w[j] * (x[j] - m)) in float64."""
    sd = 0.0
    for j in range(x.size):
        sd += np.float64(w[j]) * np.float64(x[j] - m)
    r, m_next = exp_row(x, m, e, nxt)
    return r, m_next, sd


@inner(**KERNEL_OPTIONS)
def exp_row_soft(x, m, e, nxt, y, w, keep, spread):
    """For probability targets q = keep * y + spread: returns (sum exp(x - m) - 1,
    max(nxt), sum w q, sum w q (x - m)), storing exp(x - m) in e. A class with
    w q = 0 adds 0 to the last sum even if x is -inf (0 * -inf counts as 0)."""
    wq_sum = 0.0
    wqd_sum = 0.0
    zero = cast(0.0, x)
    for j in range(x.size):
        d = x[j] - m
        wq = w[j] * (keep * y[j] + spread)
        wq_sum += wq
        wqd_sum += np.float64(wq) * np.float64(d) if wq != zero else 0.0
    r, m_next = exp_row(x, m, e, nxt)
    return r, m_next, wq_sum, wqd_sum


@inner(**KERNEL_OPTIONS)
def soft_grad_row(e, g, y, w, keep, spread, a, scale):
    """g[j] = e[j] * a - scale * w[j] * q[j]."""
    for j in range(e.size):
        g[j] = e[j] * a - scale * w[j] * (keep * y[j] + spread)


@inner(**KERNEL_OPTIONS)
def scale_row(e, g, a):
    """g[j] = e[j] * a."""
    for j in range(e.size):
        g[j] = e[j] * a


@inner(**KERNEL_OPTIONS)
def scale_inplace(e, a):
    """e[j] *= a (one array: no aliasing check to fail, so it vectorizes)."""
    for j in range(e.size):
        e[j] = e[j] * a


@inner(**KERNEL_OPTIONS)
def scale_shift_inplace(e, a, b):
    """e[j] = e[j] * a - b[j]."""
    for j in range(e.size):
        e[j] = e[j] * a - b[j]


@inner(**KERNEL_OPTIONS)
def scale_shift_row(e, g, a, b):
    """g[j] = e[j] * a - b[j]."""
    for j in range(e.size):
        g[j] = e[j] * a - b[j]


@inner(**KERNEL_OPTIONS)
def log_softmax_row(x, m, ls, out):
    """out[j] = (x[j] - m) - ls: x - m is exact near the max, so the largest
    log-probabilities keep full accuracy."""
    for j in range(x.size):
        out[j] = (x[j] - m) - ls


@inner(**KERNEL_OPTIONS)
def masked_logsumexp(x):
    """logsumexp for a row whose max is not finite, as PyTorch defines it: the
    shift is taken as 0 when the max is +-inf (so all -inf gives -inf, any +inf
    gives +inf) and NaN propagates. Rare path, scalar code."""
    m = np.float64(row_max(x))
    if m != m:
        return m
    if math.isinf(m):
        m = 0.0
    s = 0.0
    for j in range(x.size):
        s += math.exp(np.float64(x[j]) - m)
    return math.log(s) + m
