"""Penalised maximum likelihood over row blocks: one pass per objective evaluation.

Every evaluation reads X once, in blocks of rows sized to stay in cache: Z = [1, X]
W, the family's fused loss and gradient, G += [1, X]^T R and, when a Hessian is
wanted, the weighted Gram matrices. Extra memory is a few blocks plus O(p^2) for
p parameters (the fused Hessian pass: one buffer of 16 MB or a tenth of X's rows,
whichever is smaller). X is never copied as a whole: a float32 block stays float32,
a block of another dtype or layout is converted alone.

The objective is ``sum_i w_i NLL_i + alpha/2 * sum_j W[:, j]^T P W[:, j]`` over
the non-intercept columns j, with the family's penalty matrix P.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .._cpu.linear import (
    KRON_BYTES,
    backprop,
    column_squares,
    gram,
    gram_rows,
    group_sums,
    predictor,
    softmax_hessian,
    symmetrize,
)
from .._progress import Bar
from ._base import ConvergenceWarning, check_finite_block, warning
from ._families import row_counts
from ._linalg import RFactor, equilibrated, newton_direction, r_solve, unit_scales

# Blocks of the unfused passes (Gaussian; softmax with 64 classes or more: three
# kernel calls per block and their thread hand-offs, ~0.1 ms each on these VMs) and of
# softmax's Hessian passes. 3*10^5 x 50 softmax fit, 10 classes, all passes
# unfused: 3.1 / 2.7 / 2.6 / 2.3 s with 4 / 8 / 16 / 32 MB blocks (measured); 16 MB
# keeps a block (and its predictors) in a server's last-level cache between the
# predictor and the back-propagation. At most a tenth of X, so that a block's float64
# copy and products stay small next to X (a memmap's fit allocates little).
BLOCK_BYTES = 16 << 20
PROGRESS_AFTER = 1.0  # verbose fits draw a progress bar on passes that take longer (s)


def float_block(Xb: np.ndarray) -> np.ndarray:
    """A block of rows as the kernels take it: float32/float64 C-contiguous rows are
    used in place, any other dtype or layout is converted (this block alone)."""
    if Xb.dtype in (np.float32, np.float64) and Xb.flags.c_contiguous:
        return Xb
    return np.ascontiguousarray(Xb, dtype=np.float64)


@dataclass
class Result:
    theta: np.ndarray
    loss: float
    grad: np.ndarray
    hess: np.ndarray | None
    n_iter: int
    converged: bool
    separable: bool = False
    reason: str = ""  # why it stopped short: "max_iter", "no decrease", "not finite"
    perfect: int = 0  # rows predicted perfectly at the end (classifiers)
    step: np.ndarray | None = None  # the last Newton step, in equilibrated coordinates
    quasi: np.ndarray | None = None  # parameters running off (quasi-separation)


# A fused pass (one kernel per block, nothing kept between kernels; also the softmax
# family's gradient passes, sized with the logits it keeps) takes big blocks:
# each block costs thread hand-offs and Python work (measured under Numba's TBB
# layer, ~0.4 ms per block: 4 MB blocks made a 10^6 x 50 logistic pass 108 ms, the
# kernel alone 66 ms). The kernel's per-chunk partial sums take ~0.1% of a block.
FUSED_BLOCK_BYTES = 256 << 20
# A fused Hessian pass writes each block's rows sqrt(h) [1, x] (float64) for one BLAS
# product: 16 MB of them per block, or a tenth of X's rows if fewer (the buffer stays
# small next to X). Per-block costs (launch, thread hand-offs, BLAS set-up) made
# 10^6 x 50 passes 207 / 158 / 145 / 130 / 125 ms with 2 / 4 / 8 / 16 / 32 MB (measured).
HESS_BLOCK_BYTES = 16 << 20


def block_rows(X, nbytes: int = BLOCK_BYTES, row_bytes: int = 0) -> int:
    """Rows per block: about ``nbytes`` of X (or of rows of ``row_bytes``), a multiple
    of 1024."""
    row_bytes = row_bytes or X.shape[1] * X.dtype.itemsize
    return max(1024, (nbytes // max(1, row_bytes)) // 1024 * 1024)


def hessian_rows(X) -> int:
    """Rows per block of a fused Hessian pass (see ``HESS_BLOCK_BYTES``)."""
    rows = block_rows(X, HESS_BLOCK_BYTES, 8 * (X.shape[1] + 1))
    return max(1024, min(rows, X.shape[0] // 10 // 1024 * 1024))


class RowBlocks:
    """(X, y, sample_weight, offset, groups) in blocks of rows (None for an absent
    offset or groups): iterating gives blocks of about ``BLOCK_BYTES`` of X, or a tenth
    of X if less (they stay in cache between the products of a block), :meth:`sized`
    blocks of another size. ``progress(rows_done)`` is called after each block."""

    def __init__(self, X, y, sw, progress=None, offset=None, groups=None):
        self.X, self.y, self.sw, self.progress = X, y, sw, progress
        self.offset, self.groups = offset, groups

    def __iter__(self):
        return self.sized(min(BLOCK_BYTES, self.X.nbytes // 10))

    def sized(self, nbytes: int = 0, rows: int = 0):
        """Blocks of about ``nbytes`` of X, or of ``rows`` rows."""
        X, y, sw, off, grp = self.X, self.y, self.sw, self.offset, self.groups
        n, rows = X.shape[0], rows or block_rows(X, nbytes)
        for s in range(0, n, rows):
            yield (
                float_block(X[s : s + rows]),
                y[s : s + rows],
                None if sw is None else sw[s : s + rows],
                None if off is None else off[s : s + rows],
                None if grp is None else grp[s : s + rows],
            )
            if self.progress:
                self.progress(min(n, s + rows))
        if self.progress:
            self.progress(None)


def row_blocks(X, y, sw, offset=None, groups=None) -> RowBlocks:
    return RowBlocks(X, y, sw, offset=offset, groups=groups)


# -- the work of one pass, on the blocks of one chunk of rows ------------------------
# Each returns a tuple of partial sums (floats, arrays or None) that add up over the
# chunks. ``check``: look for NaN/inf in X (the first pass over the data).


def nll_sums(blocks, check, W, family, layout, hess, count_wrong, robust=None):
    """(NLL, dNLL/dW, Hessian parts (``layout`` ("pairs", full, vector): the weighted
    Grams of the full pairs, of the vector pairs; ("kron", outputs): the Hessian of
    those outputs' logits, then None), numbers of
    [misclassified, perfectly predicted] rows (counted with ``count_wrong`` or ``hess``,
    for classifiers), weighted column sums of squares of [1, X]); the Hessian parts
    are None without ``hess``, the sums of squares None without ``check`` (they are
    taken on the first pass, which reads every value anyway), then, with ``hess`` and
    ``robust`` (the number of clusters, or 0 for one score per row), the scores' outer
    products: ``sum_i w_i s_i s_i^T`` over rows (0), else the per-cluster sums
    ``sum_{i in g} w_i s_i`` of shape (clusters, k (d + 1)), s_i = dNLL_i/dW of row i."""
    k, d1 = W.shape
    G = np.zeros((k, d1))
    Hf = Hv = None
    if hess and layout[0] == "kron":  # the Hessian of the outputs layout[1], whole
        outputs = layout[1]
        Hf = np.zeros((len(outputs) * d1, len(outputs) * d1))
    elif hess:
        full_pairs, vec_pairs = layout[1:]
        Hf = np.zeros((len(full_pairs), d1, d1))
        Hv = np.zeros((len(vec_pairs), d1))
    sq = np.zeros(d1) if check else None
    meat = None
    if hess and robust is not None:
        meat = np.zeros((k * d1, k * d1) if robust == 0 else (robust, k * d1))
    loss, wrong = 0.0, np.zeros(2, np.int64)
    count_wrong = (count_wrong or hess) and family.classifier
    fused = family.fused is not None
    # an unfused family's loss and gradient in one read of X, if it can (its logits Z
    # kept where the counts, scores or Hessian need them)
    one_read = getattr(family, "one_read", None)
    keep_z = count_wrong or hess or meat is not None
    # a fused (one-predictor) family's Hessian: the pass's rows sqrt(h) [1, x], squared
    # by BLAS; its first row is the intercept's vector where only that is free
    rows_hessian = fused and hess
    H1 = np.zeros((d1, d1)) if rows_hessian else None
    A = buf = None
    with one_blas_thread() if hess else contextlib.nullcontext():
        sized = blocks
        if rows_hessian:
            sized = blocks.sized(rows=hessian_rows(blocks.X))
        elif fused and not hess:
            sized = blocks.sized(FUSED_BLOCK_BYTES)
        elif one_read is not None and not hess:  # one kernel per block, and the logits
            row = blocks.X.dtype.itemsize * blocks.X.shape[1] + (8 * k if keep_z else 0)
            sized = blocks.sized(rows=block_rows(blocks.X, FUSED_BLOCK_BYTES, row))
        for Xb, yb, swb, ob, gb in sized:
            part = None  # the first pass's column squares: by the fused kernel, or alone
            if check:
                part = np.zeros(d1) if fused or one_read else column_squares(Xb, swb)
            if fused:  # the loss, gradient and counts in one read of the block
                m = Xb.shape[0]
                Z = np.empty((m, k)) if meat is not None else None
                if rows_hessian:  # one buffer for the pass's blocks (the last may be short)
                    buf = np.empty((m, d1)) if buf is None or buf.shape[0] < m else buf
                    A = buf[:m]
                extra = {} if ob is None else {"offset": ob}
                loss += family.fused(Xb, W, yb, swb, G, wrong, Z, A, part, **extra)
            elif one_read is not None:
                Z = np.empty((Xb.shape[0], k)) if keep_z else None
                loss += one_read(Xb, W, yb, swb, G, Z, part)
            else:
                Z = predictor(Xb, W)
            if check:
                if not np.isfinite(part).all():  # NaN or inf in X (or squares past 1e308)
                    check_finite_block(Xb)
                sq += part
            if meat is not None:
                _score_products(Xb, family.scores(Z, yb), swb, gb, meat)
            if rows_hessian:
                gram_rows(A, H1)
            elif hess and layout[0] == "kron":
                softmax_hessian(Xb, family.probabilities(Z)[:, outputs], swb, Hf)
            elif hess:
                Wts = family.hess_weights(Z, yb, swb)
                if full_pairs:
                    gram(Xb, np.ascontiguousarray(Wts[:, full_pairs]), Hf)
                if vec_pairs:
                    backprop(Xb, np.ascontiguousarray(Wts[:, vec_pairs]), Hv)
            if not fused:
                if count_wrong:
                    wrong += row_counts(family, Z, yb, swb)
                if one_read is not None:
                    continue
                block_loss, R = family.loss_grad(Z, yb, swb)  # may overwrite Z
                loss += block_loss
                backprop(Xb, R, G)
    if rows_hessian and full_pairs:
        Hf[0] += H1
    elif rows_hessian and vec_pairs:
        Hv[0] += H1[0]
    if not check and not np.isfinite(G).all():
        # X and y were checked on the first pass; NaN now means they changed since (a
        # memmap written to during the fit). An overflow (inf) passes this re-read.
        for Xb, yb, *_ in blocks:
            check_finite_block(Xb, "X (changed during the fit?)")
            check_finite_block(yb, "y (changed during the fit?)")
    return loss, G, Hf, Hv, wrong, sq, meat


def _score_products(Xb, r, swb, gb, meat) -> None:
    """meat += sum_i w_i s_i s_i^T (gb None) or meat[g] += sum_{i in g} w_i s_i, for the
    scores s_i = r_i (x) [1, x_i] of a block's rows, a slice of rows at a time."""
    k, d1 = r.shape[1], Xb.shape[1] + 1
    rows = max(1, KRON_BYTES // (8 * k * d1))
    for s in range(0, Xb.shape[0], rows):
        Xa = np.empty((min(rows, Xb.shape[0] - s), d1))
        Xa[:, 0] = 1.0
        Xa[:, 1:] = Xb[s : s + rows]
        w = None if swb is None else swb[s : s + rows]
        M = (r[s : s + rows, :, None] * Xa[:, None, :]).reshape(Xa.shape[0], k * d1)
        if gb is None:
            if w is not None:
                M *= np.sqrt(w)[:, None]
            meat += M.T @ M  # syrk
        else:
            if w is not None:
                M *= w[:, None]
            group_sums(gb[s : s + rows], M, meat)


def rss_sums(blocks, check, W):
    """(sum w (y - Z_0)^2,): the weighted residual sum of squares of the first output."""
    rss = 0.0
    for Xb, yb, swb, *_ in blocks:
        if check:
            check_finite_block(Xb)
        r = yb - predictor(Xb, W)[:, 0]
        rss += float(r @ r if swb is None else (r * r) @ swb)
    return (rss,)


def one_blas_thread():
    """BLAS on one thread for the Hessian blocks: next to fastmle's threads a
    second BLAS thread only contends for the same cores (measured on 2 cores: 2.7 ms
    per 10240 x 50 block on one thread, 7.4 ms on two), and one thread sums in one
    order whatever the machine. Without threadpoolctl, BLAS keeps its own setting."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _augmented(Xb, yb, swb, intercept: bool) -> np.ndarray:
    """sqrt(w) [1, X, y] (or [X, y]) of one block, float64."""
    m, d = Xb.shape
    A = np.empty((m, d + 1 + intercept))
    if intercept:
        A[:, 0] = 1.0
    A[:, intercept:-1] = Xb
    A[:, -1] = yb
    if swb is not None:
        A *= np.sqrt(swb)[:, None]
    return A


def normal_sums(blocks, check, intercept):
    """(the Gram matrix of sqrt(w) [1, X, y], or of [X, y] without ``intercept``,)."""
    G = 0.0
    with one_blas_thread():
        for Xb, yb, swb, *_ in blocks:
            if check:
                check_finite_block(Xb)
            A = _augmented(Xb, yb, swb, intercept)
            G = G + A.T @ A  # syrk
            del A  # not two blocks' copies at once
    return (G,)


QR_ROWS = 1 << 17  # elements of a TSQR step: 1 MB, so that its copies stay small


def qr_sums(blocks, check, intercept):
    """(R factor of the rows sqrt(w) [1, X, y], or of [X, y] without ``intercept``,):
    each step stacks the running R on the next rows and re-factors (TSQR)."""
    R = None
    for Xb, yb, swb, *_ in blocks:
        if check:
            check_finite_block(Xb)
        p = Xb.shape[1] + 1 + intercept
        rows = max(2 * p, QR_ROWS // p)
        for s in range(0, Xb.shape[0], rows):
            sl = slice(s, s + rows)
            A = _augmented(Xb[sl], yb[sl], None if swb is None else swb[sl], intercept)
            if R is not None:
                A = np.vstack([R.R, A])
            R = RFactor.of(A)
    return (R,)


def add_sums(parts):
    """The element-wise sum of partial-sum tuples, added in the order given."""
    out = list(parts[0])
    for part in parts[1:]:
        out = [a if b is None else b if a is None else a + b for a, b in zip(out, part)]
    return tuple(out)


class Problem:
    """The penalised NLL of one family on (X, y, sw), as a function of the free
    parameters ``theta = W[mask]`` (W of shape (k, d + 1), column 0 the intercepts).

    The data is only touched by :meth:`_pass`, one pass of a function of row blocks
    (``nll_sums``, ...): a subclass that overrides it and ``weight_sum`` fits data
    held elsewhere (``_distributed.DaskProblem``). A problem is a context manager,
    entered for the duration of a fit. The first pass checks X for NaN/inf and
    measures its columns (:meth:`param_scales`); siblings share what it found.

    ``offset``: a known term added to every row's first linear predictor (Poisson's
    offset + log(exposure)); ``robust``: None, or the number of clusters of the
    integer codes ``groups`` (0: one cluster per row), for which every Hessian pass
    also accumulates the outer products of the scores into ``meat`` (see
    :func:`nll_sums`), restricted to the free parameters.
    """

    def __init__(
        self, X, y, sw, family, mask, alpha, verbose=0, offset=None, groups=None, robust=None
    ):
        self.X, self.y, self.sw = X, y, sw
        self.offset, self.groups, self.robust = offset, groups, robust
        self.meat = None
        self.target_sums = None  # the family's sums over y, once the start has taken them
        self.alpha, self.verbose = float(alpha), verbose
        self.weight_sum = self._weight_sum()
        self._data = {"checked": False, "col_sq": None}
        self._set_family(family, mask)

    @property
    def checked(self) -> bool:
        return self._data["checked"]

    @checked.setter
    def checked(self, value: bool) -> None:
        self._data["checked"] = value

    def _set_family(self, family, mask):
        self.family, self.mask = family, mask
        free = mask.any(axis=1)
        self.full_pairs = self.vec_pairs = self.pairs = ()
        if family.kron_hessian:
            self.layout = ("kron", np.flatnonzero(free))
        else:  # few outputs: their pairs (a, b), b <= a, with Hessian blocks
            k = family.k
            full = mask[:, 1:].any(axis=1)
            self.pairs = [(a, b) for a in range(k) for b in range(a + 1)]
            used = [i for i, (a, b) in enumerate(self.pairs) if free[a] and free[b]]
            self.full_pairs = [i for i in used if full[self.pairs[i][0]] and full[self.pairs[i][1]]]
            self.vec_pairs = [i for i in used if i not in self.full_pairs]
            self.layout = ("pairs", self.full_pairs, self.vec_pairs)
        self.n_evals = 0
        self.counted = False

    def sibling(self, family, mask) -> Problem:
        """The problem of another family or mask on the same data."""
        other = copy.copy(self)
        other._set_family(family, mask)
        return other

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _weight_sum(self) -> float:
        return float(self.X.shape[0] if self.sw is None else self.sw.sum())

    def unpack(self, theta: np.ndarray) -> np.ndarray:
        W = np.zeros(self.mask.shape)
        W[self.mask] = theta
        return W

    def param_scales(self) -> np.ndarray:
        """The scale of each free parameter: the weighted root mean square of its column
        of [1, X], times the family's scale of its predictor (``family.out_scale``).
        ``theta * param_scales()`` is free of the units of X (and of y where the
        family's scale carries them)."""
        sq = self._data["col_sq"]
        cols = unit_scales(sq / sq[0])
        return (self.family.out_scale[:, None] * cols[None, :])[self.mask]

    def _pass(self, fn, *args) -> tuple:
        """``fn(blocks, check, *args)`` over all the rows: one pass over X, checked for
        NaN/inf the first time."""
        out = fn(self._blocks(), not self.checked, *args)
        self.checked = True
        return out

    def _blocks(self) -> RowBlocks:
        """Blocks of (X, y, sample_weight), with a progress bar for slow verbose passes."""
        progress = None
        if self.verbose:
            n = self.X.shape[0]
            bar = Bar(f"  pass {self.n_evals}:", after=PROGRESS_AFTER)

            def progress(done):
                if done is None:
                    bar.close()
                else:
                    bar(done / n)

        return RowBlocks(self.X, self.y, self.sw, progress, self.offset, self.groups)

    def evaluate(self, theta, hess=False, count_wrong=False):
        """(objective, gradient, Hessian or None, number of misclassified rows)."""
        self.n_evals += 1
        fam, mask = self.family, self.mask
        W = self.unpack(theta)
        k, d1 = W.shape
        self.counted = (count_wrong or hess) and fam.classifier
        loss, G, Hf, Hv, wrong, sq, meat = self._pass(
            nll_sums, W, fam, self.layout, hess, count_wrong, self.robust
        )
        if sq is not None:
            self._data["col_sq"] = sq
        C = W[:, 1:]
        P = fam.penalty
        loss += 0.5 * self.alpha * float(np.sum(C * (P @ C)))
        G[:, 1:] += self.alpha * (P @ C)
        H = None
        if hess:
            H = self._assemble(Hf, Hv, k, d1)
        if meat is not None:
            m = mask.ravel()
            # per cluster: the sums of the scores, whose Gram matrix is the meat
            self.meat = meat[np.ix_(m, m)] if self.robust == 0 else meat[:, m].T @ meat[:, m]
        return loss, G[mask], H, wrong

    def _assemble(self, Hf, Hv, k, d1):
        H = np.zeros((k, d1, k, d1))
        pairwise = self.layout[0] == "pairs"
        if pairwise:
            Hf = symmetrize(Hf)
        else:
            out, cols = self.layout[1], np.arange(d1)
            H[np.ix_(out, cols, out, cols)] = Hf.reshape(out.size, d1, out.size, d1)
        for i, q in enumerate(self.full_pairs if pairwise else ()):
            a, b = self.pairs[q]
            H[a, :, b, :] = Hf[i]
            H[b, :, a, :] = Hf[i].T
        for i, q in enumerate(self.vec_pairs if pairwise else ()):
            a, b = self.pairs[q]
            # only the intercept row/column of a block with a non-full side is used
            H[a, 0, b, :] = H[b, :, a, 0] = Hv[i]
            H[a, :, b, 0] = H[b, 0, a, :] = Hv[i]
        if self.alpha:  # alpha P between the same feature of two outputs
            for j in range(1, d1):
                H[:, j, :, j] += self.alpha * self.family.penalty
        H = H.reshape(k * d1, k * d1)
        m = self.mask.ravel()
        return H[np.ix_(m, m)]

    def least_squares(self):
        """Weighted least squares of y on the free columns of [1, X] (the mean model's
        unpenalised MLE): ``(beta, rss, R, unidentified)``, beta of shape (d + 1,) (0
        where not free), R the factor of the free columns (R^T R is their weighted
        Gram matrix) and the free parameters that X does not identify.

        One pass forms the Gram matrix of sqrt(w) [1, X, y] (BLAS syrk) and takes R from
        the Cholesky factor of its equilibrated form. That is as accurate as a QR when
        the scaled columns are well conditioned (cond <= ``GRAM_COND``: error <= cond^2
        eps ~ 2e-12) and y is not nearly fitted exactly (RSS >= ``GRAM_RSS`` |y|^2, so
        RSS = |y|^2 - |Q^T y|^2 keeps 12 digits); otherwise a second pass accumulates
        the QR of those rows block by block (TSQR: ~8x the flops of syrk, measured
        1.2 s vs 0.16 s on 10^6 x 50), with the accuracy of a Householder QR of the
        whole matrix.
        """
        free = self.mask[0]
        intercept = bool(free[0])
        cols = np.flatnonzero(free[1:])
        R = self._gram_r(intercept, cols)
        if R is None:
            (F,) = self._pass(_columns, qr_sums, cols, intercept)
            R = F.R
        R11, r12 = R[:-1, :-1], R[:-1, -1]
        coef, bad, lost = r_solve(R11, r12)
        rss = float(R[-1, -1] ** 2) + lost
        beta = np.zeros(free.shape[0])
        beta[free] = coef
        # the columns' weighted sums of squares are the squared column norms of R
        sq = np.full(free.shape[0], self.weight_sum)
        sq[np.flatnonzero(free)] = np.einsum("ij,ij->j", R11, R11)
        self._data["col_sq"] = sq
        return beta, rss, R11, bad

    def _gram_r(self, intercept, cols):
        """R of sqrt(w) [1, X, y] from its Gram matrix, or None where that is not accurate."""
        (G,) = self._pass(_columns, normal_sums, cols, intercept)
        C, d = equilibrated(G)
        try:
            L = np.linalg.cholesky(C)
        except np.linalg.LinAlgError:
            return None
        vals = np.linalg.eigvalsh(C[:-1, :-1])
        if vals[0] * GRAM_COND < vals[-1] or L[-1, -1] ** 2 < GRAM_RSS:
            return None
        return L.T * d[None, :]


GRAM_COND = 1e4
GRAM_RSS = 1e-4


def _columns(blocks, check, fn, cols, intercept):
    """``fn`` on the blocks restricted to the columns ``cols`` of X."""
    blocks = (
        (Xb if cols.size == Xb.shape[1] else Xb[:, cols], yb, swb) for Xb, yb, swb, *_ in blocks
    )
    return fn(blocks, check, intercept)


class Scaled:
    """A problem in equilibrated coordinates ``t = D theta`` (D: its parameter scales),
    in which the solvers run: their steps, line searches and stopping rule
    (``max |dNLL/dt| <= tol * sum(w)``) are then free of the units of the data."""

    def __init__(self, problem: Problem, tol: float):
        self.problem, self.tol = problem, tol
        self.D = problem.param_scales()
        self.weight_sum = problem.weight_sum

    def __getattr__(self, name):
        return getattr(self.problem, name)

    def scale(self, ev):
        f, g, H, wrong = ev
        D = self.D
        return f, g / D, None if H is None else H / D[:, None] / D[None, :], wrong

    def evaluate(self, t, hess=False, count_wrong=False):
        return self.scale(self.problem.evaluate(t / self.D, hess, count_wrong))

    def converged(self, g) -> bool:
        return float(np.max(np.abs(g), initial=0.0)) <= self.tol * self.weight_sum

    def natural(self, res: Result) -> Result:
        D = self.D
        res.theta = res.theta / D
        res.grad = res.grad * D
        if res.hess is not None:
            res.hess = res.hess * D[:, None] * D[None, :]
        return res


def _sufficient_decrease(f, f1, t, slope) -> bool:
    """Armijo's condition, up to the rounding of the objective (a float64 sum of n
    terms): near the optimum the true decrease is below that noise, and the step is
    judged by the gradients, which stay accurate."""
    return f1 <= f - 1e-4 * t * slope + 1e-12 * abs(f)


def _report(problem, it, f, g, step):
    if problem.verbose:
        print(
            f"iter {it:4d}  loss {f / problem.weight_sum:.10g}  "
            f"|grad|_inf {np.max(np.abs(g), initial=0) / problem.weight_sum:.3e}  "
            f"step {step:.3g}",
            file=sys.stderr,
        )


def _count_wrong(problem, f) -> bool:
    """Whether to look for a separating iterate: unpenalised classifiers, once the mean
    NLL is below log(2) (on separable data the NLL goes to 0; counting is not free)."""
    return (
        problem.family.classifier and problem.alpha == 0 and f < math.log(2.0) * problem.weight_sum
    )


def _backtrack(problem, theta, p, f, slope, count, hess=False):
    """Step ``theta - t p`` with t = 1, 1/2, ... down to 1e-10 until the decrease is
    sufficient: ``(t, trial, f, g, H, wrong)``, or None where no step decreases the
    objective. The Hessian is evaluated (if asked) only with the full step, the usual
    Newton case."""
    t = 1.0
    while t >= 1e-10:
        trial = theta - t * p
        f1, g1, H1, w1 = problem.evaluate(trial, hess=hess and t == 1.0, count_wrong=count)
        if _sufficient_decrease(f, f1, t, slope):
            return t, trial, f1, g1, H1, w1
        t *= 0.5
    return None


def _stop(problem, it, theta, f, g, H, wrong):
    """The result if iteration ``it`` starts at the optimum (then with the Newton step
    at hand taken: its error is ~|step|^2) or at a separating iterate."""
    if problem.converged(g):
        step = None
        if H is not None and np.isfinite(H).all():
            step = newton_direction(H, g)
            theta = theta - step
        return Result(theta, f, g, H, it, True, perfect=int(wrong[1]), step=step)
    if problem.counted and wrong[0] == 0:
        return Result(theta, f, g, H, it, False, separable=True)
    return None


STEP_TOL = 1e-10  # a last Newton step longer than this (equilibrated): refresh the Hessian


def newton(problem: Scaled, theta, max_iter: int, first, refine: bool = True) -> Result:
    """Damped Newton from ``theta``, where ``first = (f, g, H, wrong)``. With
    ``refine``, a converged result whose last step exceeds ``STEP_TOL`` is evaluated
    once more after that step (not counted as an iteration): the Hessian, hence the
    standard errors, then belong to the returned point (their error is ~ the step:
    up to ~1e-8 relative at tol=1e-8 without it, measured)."""
    f, g, H, wrong = first
    for it in range(max_iter + 1):
        done = _stop(problem, it, theta, f, g, H, wrong)
        if (
            done
            and refine
            and done.converged
            and done.step is not None
            and np.abs(done.step).max() > STEP_TOL
        ):
            ev = problem.evaluate(done.theta, hess=True)
            done = _stop(problem, it, done.theta, *ev) or done
        if done:
            return done
        if it == max_iter:
            return Result(theta, f, g, H, it, False, reason="max_iter")
        if not (np.isfinite(H).all() and np.isfinite(g).all()):
            return Result(theta, f, g, H, it, False, reason="not finite")
        count = _count_wrong(problem, f)
        p = newton_direction(H, g)
        step = _backtrack(problem, theta, p, f, float(g @ p), count, hess=True)
        if step is None:  # the best point is where we are
            return Result(theta, f, g, H, it, False, reason="no decrease")
        t, theta, f, g, H1, wrong = step
        H = H1 if H1 is not None else problem.evaluate(theta, hess=True, count_wrong=count)[2]
        _report(problem, it + 1, f, g, t)


def lbfgs(problem: Scaled, theta, max_iter: int, first, memory: int = 10) -> Result:
    """L-BFGS from ``theta``, where ``first = (f, g, None, wrong)``."""
    f, g, _, wrong = first
    S, Y = [], []
    for it in range(max_iter + 1):
        done = _stop(problem, it, theta, f, g, None, wrong)
        if done:
            return done
        if it == max_iter:
            return Result(theta, f, g, None, it, False, reason="max_iter")
        # two-loop recursion: p approximates H^-1 g
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(S), reversed(Y)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        if S:
            q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
        else:
            q /= max(1.0, float(np.linalg.norm(g)) / math.sqrt(problem.weight_sum))
            q /= problem.weight_sum
        for (s, y), a in zip(zip(S, Y), reversed(alphas)):
            b = float(y @ q) / float(y @ s)
            q += (a - b) * s
        count = _count_wrong(problem, f)
        p = q
        slope = float(g @ p)
        if not slope > 0:  # lost descent: restart from the gradient
            S, Y = [], []
            p = g / problem.weight_sum
            slope = float(g @ p)
        step = _backtrack(problem, theta, p, f, slope, count)
        if step is None:
            return Result(theta, f, g, None, it, False, reason="no decrease")
        t, trial, f1, g1, _, w1 = step
        s, y = trial - theta, g1 - g
        if float(s @ y) > 1e-12 * float(y @ y):
            S.append(s)
            Y.append(y)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        theta, f, g, wrong = trial, f1, g1, w1
        _report(problem, it + 1, f, g, t)


LBFGS_BEFORE_NEWTON = 50  # solver="auto": L-BFGS iterations before it hands over to Newton
LBFGS_TIGHTER = 1e-4
LBFGS_TIGHTER_FUSED = 1e-3
COSTLY_HESSIAN = 256


def solve(
    problem: Problem,
    theta,
    solver: str,
    max_iter: int,
    tol: float,
    search=None,
    fallback: bool = False,
    started: int = 0,
    hess0=None,
    polish: bool = True,
) -> Result:
    """Minimise ``problem`` from ``theta`` in at most ``max_iter`` iterations, in the
    equilibrated coordinates of :class:`Scaled`.

    ``solver="lbfgs"`` continues with Newton once L-BFGS meets ``tol`` (the Hessian
    that inference needs anyway: its first step takes the error from ~tol to
    ~tol^2); with ``fallback`` (the "auto" choice) it also hands over to Newton after
    ``LBFGS_BEFORE_NEWTON`` iterations. ``search = (problem2, theta2, back)`` runs
    L-BFGS in another parametrisation of the same objective (``back`` maps its
    parameters to ``problem``'s), where it may converge faster. ``started``:
    iterations already spent on the starting point (they count towards ``max_iter``
    and ``n_iter``); ``hess0``: the Hessian there, if known; ``polish=False``: no
    Newton step after a converged L-BFGS (fits without inference). The result holds the
    best point found, in natural coordinates, and ``reason`` when it did not converge.
    """
    limit, max_iter = max_iter, max_iter - started
    if solver == "newton":
        first = problem.evaluate(theta, hess=hess0 is None, count_wrong=_count_wrong(problem, 0.0))
        if hess0 is not None:
            first = (first[0], first[1], hess0, first[3])
        scaled = Scaled(problem, tol)
        res = scaled.natural(
            newton(scaled, theta * scaled.D, max_iter, scaled.scale(first), refine=polish)
        )
    else:
        other, theta2, back = search if search is not None else (problem, theta, None)
        first = other.evaluate(theta2, count_wrong=_count_wrong(other, 0.0))
        # Before the Newton step that inference ends with, L-BFGS goes LBFGS_TIGHTER
        # further (a few gradient passes): that step is then below STEP_TOL and needs
        # no second Hessian pass (softmax 3e5 x 50 x 10: the Hessian is ~80% of a fit).
        # The fused one-predictor families' Hessian pass costs ~5 gradient passes: 1e-3
        # is enough (four 10^6 x 50 logistic and Poisson problems: 0-1 gradient passes
        # fewer than with 1e-4, no second Hessian pass, SEs within 1e-11 of those at the
        # exact optimum; 1e-2 saved one more pass on two of them but needed a second
        # Hessian pass, ~5 gradient passes, on a third; measured)
        # A Hessian pass of p parameters costs ~p / 16 gradient passes (softmax): from
        # COSTLY_HESSIAN parameters on, L-BFGS goes 10x further still, ~3 gradient passes
        # that usually spare a second Hessian pass (five softmax problems, 62-459
        # parameters: 3e5 x 50 x 10 classes 3.26 -> 2.44-2.59 s, one needing no second pass
        # 0.94 -> 1.04 s, measured)
        if other.family.fused is not None:
            tighter = LBFGS_TIGHTER_FUSED
        elif theta.size < COSTLY_HESSIAN:
            tighter = LBFGS_TIGHTER
        else:
            tighter = LBFGS_TIGHTER / 10
        so = Scaled(other, tol * tighter if polish else tol)
        budget = min(max_iter, LBFGS_BEFORE_NEWTON) if fallback else max_iter
        res = lbfgs(so, theta2 * so.D, budget, so.scale(first))
        if (
            not (res.converged or res.separable)
            and float(np.max(np.abs(res.grad), initial=0.0)) <= tol * so.weight_sum
        ):
            res.converged, res.reason = True, ""  # at tol, if not tighter
        res = so.natural(res)
        if back is not None:
            res.theta = back(res.theta)
            res.grad = None
            problem.n_evals += other.n_evals
        if (
            not res.separable
            and res.n_iter < max_iter
            and ((res.converged and polish) or (fallback and not res.converged))
        ):
            scaled = Scaled(problem, tol)
            t = res.theta * scaled.D
            ev = scaled.evaluate(t, hess=True)
            more = scaled.natural(newton(scaled, t, max_iter - res.n_iter, ev, refine=polish))
            more.n_iter += res.n_iter
            res = more
        elif res.grad is None:
            _, res.grad, _, _ = problem.evaluate(res.theta)
    _check_quasi_separation(problem, res)
    _warn(problem, res, solver, limit, tol)
    res.n_iter += started
    return res


QUASI_STEP = 0.1  # a Newton step this long (equilibrated) at "convergence": running off


def _check_quasi_separation(problem, res) -> None:
    """Quasi-complete separation: some rows predicted perfectly while Newton still
    moves the coefficients far (the likelihood keeps rising along a direction that
    separates those rows: the MLE is at infinity). At a finite optimum the last step
    is ~tol; here each step adds ~1 to the log-odds of the separated rows."""
    if not (
        problem.family.classifier
        and problem.alpha == 0
        and res.converged
        and res.perfect
        and res.step is not None
    ):
        return
    size = np.abs(res.step)
    if size.max() > QUASI_STEP:
        res.converged = False
        res.quasi = size > 1e-2 * size.max()


def _warn(problem, res, solver, limit, tol):
    # the gradient in equilibrated coordinates t = D theta: dNLL/dt = g / D
    gnorm = float(np.max(np.abs(res.grad / problem.param_scales()), initial=0.0))
    where = (
        f"max |gradient| in equilibrated coordinates / sum of weights = "
        f"{gnorm / problem.weight_sum:.3g} > tol={tol}"
    )
    if res.separable:
        warnings.warn(
            warning(
                ConvergenceWarning,
                "The classes are perfectly separable by a linear function of X: the maximum "
                "likelihood estimate does not exist (the coefficients grow without bound). The "
                "finite coefficients of the current iterate are returned; use alpha > 0 for a "
                "penalised estimate.",
            ),
            stacklevel=4,
        )
    elif res.reason == "max_iter":
        warnings.warn(
            warning(
                ConvergenceWarning,
                f"The {solver} solver did not converge in max_iter={limit} iterations ({where}): "
                "increase max_iter, or use alpha > 0.",
            ),
            stacklevel=4,
        )
    elif res.reason:
        warnings.warn(
            warning(
                ConvergenceWarning,
                f"The {solver} solver stopped after {res.n_iter} iterations: "
                + (
                    "the objective did not decrease along the search direction"
                    if res.reason == "no decrease"
                    else "the Hessian or gradient is not finite"
                )
                + f" ({where}). The best point found is returned; X may have nearly collinear "
                "columns (alpha > 0 makes the problem well-posed).",
            ),
            stacklevel=4,
        )
