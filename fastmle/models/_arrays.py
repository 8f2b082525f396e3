"""Fits on the arrays of other array libraries: the solver's passes where X lives.

``fit(X, y)`` with X a CuPy array (on a GPU) or any array of the array API standard
(``array_api_strict``, ...) runs every pass of the solver in X's own library: per
block of rows, the linear predictors ``Z = [1, X] W^T`` (a matrix product), the
family's loss and ``R = dNLL/dZ`` by fastmle's own kernel for that device (the CUDA
kernels for CuPy, the CPU kernels for arrays in host memory), the gradient
``[1, X]^T R`` and, for a Hessian, the weighted Gram products, all in float64 (a
float32 block is converted alone). Only sums of O(p^2) numbers come to the host,
where the solver runs as for NumPy (:class:`~fastmle.models._solver.Problem`: this
module only replaces its ``_pass``). y, the weights and the offset are checked and
encoded on the host, as for NumPy, and copied to X's device once per fit.

One code path for every namespace: its operations are those of the standard
(through ``array_api_compat``, which also adapts NumPy and CuPy), so that the tests
run it on NumPy and ``array_api_strict`` on any machine (tests/test_array_api.py).
"""

from __future__ import annotations

import math

import numpy as np

from .. import bernoulli, categorical, gaussian, poisson
from ._base import check_finite_block
from ._families import PERFECT, Bernoulli, Categorical, Gaussian, Poisson
from ._linalg import RFactor
from ._namespace import namespace, to_host
from ._solver import Problem, _columns, nll_sums, normal_sums, qr_sums, rss_sums

BLOCK_BYTES = 64 << 20  # a block's float64 copy of X; its products are smaller


class _Device:
    """X's namespace and device, and fastmle's kernels called on its arrays: CuPy
    arrays go to the CUDA kernels as they are, host arrays of other namespaces to the
    CPU kernels through NumPy views (DLPack), and the results come back as arrays of
    the namespace."""

    def __init__(self, X):
        import array_api_compat

        self.xp = namespace(X)
        self.device = array_api_compat.device(X)
        self.native = array_api_compat.is_cupy_array(X) or array_api_compat.is_numpy_array(X)

    def put(self, a, dtype=None):
        """A host array (or None) on X's device."""
        if a is None:
            return None
        xp = self.xp
        a = xp.asarray(np.ascontiguousarray(a), device=self.device)
        return a if dtype is None else xp.astype(a, dtype)

    def kernel(self, fn, *args, **kwargs):
        """fastmle's ``fn`` on arrays of the namespace; returns arrays of it."""
        if self.native:
            return fn(*args, **kwargs)
        host = [np.from_dlpack(a) if hasattr(a, "__dlpack__") else a for a in args]
        out = fn(*host, **kwargs)
        wrap = lambda v: self.put(v) if isinstance(v, np.ndarray) else v  # noqa: E731
        return tuple(tuple(wrap(u) for u in v) if isinstance(v, tuple) else wrap(v) for v in out)


# -- the families' loss, gradient and Hessian weights, in the namespace's operations --
# A loss takes X's _Device, a block's linear predictors Z (n, k; Poisson's offset
# included), y and the weights sw (or None), and returns (the weighted NLL of the
# block as a float, R = dNLL/dZ (n, k)): the same formulas as the families' NumPy
# passes (models/_families), through the same public kernels.


def _sum(xp, v, sw):
    return float(xp.sum(v if sw is None else v * sw))


def _bernoulli_loss(dev, Z, y, sw):
    loss, g = dev.kernel(
        bernoulli.binary_cross_entropy_with_logits_value_and_grad,
        Z[:, 0],
        y,
        weight=sw,
        reduction="sum",
    )
    return float(loss), g[:, None]


def _poisson_loss(dev, Z, y, sw):
    rows, g = dev.kernel(poisson.poisson_nll_loss_value_and_grad, Z[:, 0], y, reduction="none")
    return _sum(dev.xp, rows, sw), (g if sw is None else g * sw)[:, None]


def _categorical_loss(dev, Z, y, sw):
    rows, g = dev.kernel(categorical.cross_entropy_value_and_grad, Z, y, reduction="none")
    return _sum(dev.xp, rows, sw), (g if sw is None else g * sw[:, None])


def _gaussian_loss(dev, Z, y, sw):
    xp = dev.xp
    var = xp.exp(Z[:, 1])
    rows, (d_mean, d_var) = dev.kernel(
        gaussian.gaussian_nll_loss_value_and_grad,
        xp.asarray(Z[:, 0], copy=True),  # contiguous: the CUDA kernels take no strides
        y,
        var,
        full=True,
        eps=float(np.finfo(np.float64).tiny),
        reduction="none",
    )
    R = xp.stack([d_mean, d_var * var], axis=1)  # chain rule through var = exp(log_var)
    return _sum(xp, rows, sw), (R if sw is None else R * sw[:, None])


def _sigmoid_slope(xp, z):
    e = xp.exp(-xp.abs(z))  # p (1 - p) = e / (1 + e)^2 with e = exp(-|z|): no overflow
    return e / ((1.0 + e) * (1.0 + e))


def _hess_weights(xp, family, Z, y):
    """d2NLL/dZ_a dZ_b (b <= a) per row, packed as the columns a (a + 1) / 2 + b."""
    if isinstance(family, Bernoulli):
        return _sigmoid_slope(xp, Z[:, 0])[:, None]
    if isinstance(family, Poisson):
        return xp.exp(Z[:, 0])[:, None]
    inv_var = xp.exp(-Z[:, 1])
    r = y - Z[:, 0]
    return xp.stack([inv_var, r * inv_var, 0.5 * r * r * inv_var], axis=1)


_LOSSES = {
    Bernoulli: _bernoulli_loss,
    Poisson: _poisson_loss,
    Categorical: _categorical_loss,
    Gaussian: _gaussian_loss,
}


def _margins(xp, family, Z, y):
    """Each row's own-class score minus the best other's (> 0: classified right)."""
    if isinstance(family, Bernoulli):
        return xp.where(y > 0.5, Z[:, 0], -Z[:, 0])
    own = y[:, None] == xp.arange(Z.shape[1], dtype=y.dtype, device=Z.device)[None, :]
    zy = xp.sum(xp.where(own, Z, 0.0), axis=1)
    return zy - xp.max(xp.where(own, -xp.inf, Z), axis=1)


def _softmax(xp, Z):
    P = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))  # exp(z - max) <= 1: no overflow
    return P / xp.sum(P, axis=1, keepdims=True)


def _kron_hessian(xp, Xa, P, w):
    """sum_i w_i (diag(p_i) - p_i p_i^T) (x) x_i x_i^T over the rows Xa = [1, X]."""
    n, d1 = Xa.shape
    m = P.shape[1]
    Ps = P if w is None else P * xp.sqrt(w)[:, None]
    M = xp.reshape(Ps[:, :, None] * Xa[:, None, :], (n, m * d1))
    Pw = P if w is None else P * w[:, None]
    zero = xp.zeros((d1, d1), dtype=Xa.dtype, device=Xa.device)
    # the block diagonal of the m weighted Grams, built without item assignment (JAX)
    grams = [Xa.T @ (Xa * Pw[:, a : a + 1]) for a in range(m)]
    diag = xp.concat(
        [xp.concat([grams[a] if b == a else zero for b in range(m)], axis=1) for a in range(m)]
    )
    return diag - M.T @ M


class ArrayProblem(Problem):
    """:class:`~fastmle.models._solver.Problem` on an array-API X (CuPy, ...): each pass
    runs on X's device, block by block, and returns host sums (see the module's
    docstring). y, sw and offset are host NumPy arrays, copied to the device here."""

    def __init__(
        self, X, y, sw, family, mask, alpha, verbose=0, offset=None, groups=None, robust=None
    ):
        if robust:  # clusters: per-cluster sums are a scatter-add, not in the standard
            raise ValueError(
                "cov_type='cluster' is not available for X of "
                f"{type(X).__module__}: fit a NumPy X, or use cov_type='HC0'/'HC1'"
            )
        self.dev = dev = _Device(X)
        ydt = dev.xp.int64 if isinstance(family, Categorical) else dev.xp.float64
        self._on = (dev.put(y, ydt), dev.put(sw, dev.xp.float64), dev.put(offset, dev.xp.float64))
        super().__init__(X, y, sw, family, mask, alpha, verbose, offset, groups, robust)

    def _pass(self, fn, *args) -> tuple:
        impl = {nll_sums: self._nll_sums, _columns: self._columns, rss_sums: self._rss_sums}
        out = impl[fn](not self.checked, *args)
        self.checked = True
        return out

    def _blocks(self, check):
        """(rows [1, X] of a block in float64, y, sw, offset) on the device."""
        y, sw, off = self._on
        for s, e, Xa in _row_blocks(self.dev, self.X, check):
            yield Xa, y[s:e], *(None if a is None else a[s:e] for a in (sw, off))

    def _host(self, a):
        return None if a is None else to_host(a).astype(np.float64, copy=False)

    def _nll_sums(self, check, W, family, layout, hess, count_wrong, robust=None):
        """:func:`~fastmle.models._solver.nll_sums` on the device."""
        xp, dev = self.dev.xp, self.dev
        d1 = W.shape[1]
        Wd = dev.put(W, xp.float64)
        loss_of = next(f for cls, f in _LOSSES.items() if isinstance(family, cls))
        count_wrong = (count_wrong or hess) and family.classifier
        kron = layout[0] == "kron"
        G = Hf = Hv = sq = meat = None
        wrong = np.zeros(2, np.int64)
        loss = 0.0
        for Xa, yb, swb, ob in self._blocks(check):
            Z = Xa @ Wd.T
            if ob is not None:
                Z = xp.concat([Z[:, :1] + ob[:, None], Z[:, 1:]], axis=1)
            block_loss, R = loss_of(dev, Z, yb, swb)
            loss += block_loss
            G = _add(G, R.T @ Xa)
            if hess and robust == 0:  # sum_i w_i s_i s_i^T, s_i = dNLL_i/dZ (x) [1, x_i]
                S = R  # unweighted: the scores themselves
                if swb is not None:
                    S = loss_of(dev, Z, yb, None)[1] * xp.sqrt(swb)[:, None]
                M = xp.reshape(S[:, :, None] * Xa[:, None, :], (Xa.shape[0], -1))
                meat = _add(meat, M.T @ M)
            if check:
                Xw = Xa if swb is None else Xa * xp.sqrt(swb)[:, None]
                sq = _add(sq, xp.sum(Xw * Xw, axis=0))
            if count_wrong:
                m = _margins(xp, family, Z, yb)
                if swb is not None:
                    m = xp.where(swb > 0, m, xp.nan)  # NaN counts as neither
                perfect = PERFECT + math.log(max(family.k - 1, 1))
                wrong += [_count(xp, m <= 0), _count(xp, m > perfect)]
            if hess and kron:
                S = _softmax(xp, Z)
                P = xp.stack([S[:, int(a)] for a in layout[1]], axis=1)
                Hf = _add(Hf, _kron_hessian(xp, Xa, P, swb))
            elif hess:
                Wts = _hess_weights(xp, family, Z, yb)
                if swb is not None:
                    Wts = Wts * swb[:, None]
                full, vec = layout[1], layout[2]
                if full:
                    Hf = _add(Hf, xp.stack([Xa.T @ (Xa * Wts[:, q : q + 1]) for q in full]))
                if vec:
                    Hv = _add(Hv, xp.stack([Wts[:, q] @ Xa for q in vec]))
        G, Hf, Hv, sq, meat = (self._host(a) for a in (G, Hf, Hv, sq, meat))
        if hess and not kron:  # an empty list of pairs: the shapes nll_sums gives
            Hf = np.zeros((0, d1, d1)) if Hf is None else Hf
            Hv = np.zeros((0, d1)) if Hv is None else Hv
        return loss, G, Hf, Hv, wrong, sq, meat

    def _columns(self, check, fn, cols, intercept):
        """The Gram matrix (``normal_sums``) or the R factor (``qr_sums``) of the rows
        sqrt(w) [1, X[:, cols], y] (without the 1 if not ``intercept``), on the device."""
        xp = self.dev.xp
        idx = self.dev.put(np.r_[[0] if intercept else [], np.asarray(cols) + 1].astype(np.int64))
        G = R = None
        for Xa, yb, swb, _ in self._blocks(check):
            A = xp.concat([xp.take(Xa, idx, axis=1), yb[:, None]], axis=1)
            if swb is not None:
                A = A * xp.sqrt(swb)[:, None]
            if fn is normal_sums:
                G = _add(G, A.T @ A)
            else:  # TSQR: the running R stacked on the block's rows
                R = xp.linalg.qr(A if R is None else xp.concat([R, A], axis=0))[1]
        if fn is normal_sums:
            return (self._host(G),)
        if fn is not qr_sums:
            raise NotImplementedError(fn)
        return (RFactor.of(self._host(R)),)

    def _rss_sums(self, check, W):
        """(sum w (y - Z_0)^2,) on the device."""
        xp = self.dev.xp
        w = self.dev.put(W[0], xp.float64)
        rss = 0.0
        for Xa, yb, swb, _ in self._blocks(check):
            r = yb - Xa @ w
            rss += _sum(xp, r * r, swb)
        return (rss,)


def _count(xp, flags) -> int:
    return int(xp.sum(xp.astype(flags, xp.int64)))


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _row_blocks(dev, X, check):
    """(start, stop, rows [1, X] in float64) of X's blocks on its device; ``check``:
    raise the NumPy path's error for NaN/inf."""
    xp = dev.xp
    n, d = X.shape
    rows = max(1024, BLOCK_BYTES // (8 * (d + 1)))
    one = xp.ones((min(rows, n), 1), dtype=xp.float64, device=dev.device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        Xa = xp.concat([one[: e - s, :], xp.astype(X[s:e, :], xp.float64)], axis=1)
        if check and not bool(xp.all(xp.isfinite(Xa))):
            check_finite_block(to_host(X[s:e, :]))
        yield s, e, Xa


def linear(X, W: np.ndarray) -> np.ndarray:
    """``[1, X] W^T`` on X's device (float64), returned to the host: (n, k)."""
    dev = _Device(X)
    Wt = dev.put(W, dev.xp.float64).T
    out = np.empty((X.shape[0], W.shape[0]))
    for s, e, Xa in _row_blocks(dev, X, check=True):
        out[s:e] = to_host(Xa @ Wt)
    return out
