"""Likelihood families: linear predictors -> NLL, its gradient and Hessian weights.

The starting intercepts come from ``target_sums(y, sw)``, sums over the rows that
add up over blocks (so that they are computed where the data is), turned into
intercepts by ``initial_intercepts(sums)``.

A family sees one block of rows at a time: ``Z`` of shape (n, k) holds the k
linear predictors of each row, ``y`` the targets, ``sw`` the sample weights (or
None). Either ``fused(Xb, W, y, sw, G, counts, Z=None, A=None, sq=None)`` does a
block's NLL, gradient and row counts in one read of X (Z only if asked for; the rows
``sqrt(h) [1, x]`` of a one-predictor Hessian ``A^T A`` into ``A`` and the weighted
column squares of [1, X] into ``sq`` if given), or ``fused`` is
None and ``loss_grad(Z, y, sw)`` returns the weighted NLL of the block (a float64
sum) and ``R = dNLL/dZ`` (n, k), with ``margins(Z, y)`` (each row's own-class score
minus the best other) for the separation counts of a classifier; such a family may
offer ``one_read(Xb, W, y, sw, G, Z=None, sq=None)``, the block's NLL and gradient
in one read of X (the passes without a Hessian). For Newton steps
and inference, a fused family's pass gives its Hessian's rows; otherwise
``hess_weights(Z, y, sw)`` gives the second derivatives
``d2NLL/dZ_a dZ_b`` for b <= a, packed as columns ``a * (a + 1) // 2 + b``, or,
with ``kron_hessian``, ``probabilities(Z)`` feed one Kronecker-structured product.
``out_scale`` (k,) is the scale of each predictor's units (1 where they carry
none). Loss and gradient come from fastmle's fused kernels. ``scores(Z, y)``
gives each row's unweighted ``dNLL/dZ`` (n, k), for the robust covariances.
A family with ``offset = True`` (Poisson) takes a per-row ``offset`` in ``fused``
and ``target_sums`` (added to its linear predictor; Z includes it).
"""

from __future__ import annotations

import math

import numpy as np

from .._cpu.cross_entropy import SHORT_ROWS
from .._cpu.linear import bernoulli_pass, poisson_pass, poisson_sums, softmax_pass
from ..categorical import cross_entropy_value_and_grad
from ..gaussian import gaussian_nll_loss_value_and_grad

_TINY = np.finfo(np.float64).tiny


def _weighted(rows: np.ndarray, sw) -> float:
    return float(rows.sum() if sw is None else rows @ sw)


class Bernoulli:
    """y in {0, 1}; one predictor, the log-odds. NLL = BCE with logits."""

    k = 1
    classifier = True
    kron_hessian = False

    def __init__(self):
        self.penalty = np.ones((1, 1))
        self.out_scale = np.ones(1)

    @staticmethod
    def target_sums(y, sw) -> np.ndarray:
        """(sum of weights, weighted sum of y)."""
        return np.array([y.size if sw is None else sw.sum(), _weighted(y, sw)], dtype=float)

    def initial_intercepts(self, sums) -> np.ndarray:
        p = min(max(sums[1] / sums[0], 1e-12), 1 - 1e-12)
        return np.array([math.log(p / (1 - p))])

    @staticmethod
    def null_loglik(sums) -> float:
        """The log-likelihood of the intercept-only model."""
        w, wy = sums
        return float(_xlogy(wy, wy / w) + _xlogy(w - wy, (w - wy) / w))

    @staticmethod
    def saturated_loglik(sums) -> float:
        return 0.0

    @staticmethod
    def nll_constant(sums) -> float:
        return 0.0

    @staticmethod
    def scores(Z, y):
        z = Z[:, 0]
        e = np.exp(-np.abs(z))
        p = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # sigmoid without overflow
        return (p - y)[:, None]

    def fused(self, Xb, W, y, sw, G, counts, Z=None, A=None, sq=None) -> float:
        """NLL of a block, ``G += gradient``, ``counts += row_counts``, the linear
        predictors into ``Z`` (n, 1), the Hessian's rows into ``A`` and the column
        squares into ``sq`` if given: one read of X."""
        return bernoulli_pass(
            Xb, W, y, sw, G, counts, PERFECT, None if Z is None else Z.reshape(-1), A, sq
        )


class Categorical:
    """y in {0, ..., C-1}; C predictors, the first held at 0 (class 0 is the
    reference, as in statsmodels' MNLogit) or, with ``symmetric``, all free (an
    over-parametrisation in which gradient methods converge faster).
    NLL = softmax cross-entropy."""

    fused = None
    classifier = True
    # the Hessian as one product over the classes (_cpu.linear.softmax_hessian), not pairs
    kron_hessian = True

    def __init__(self, n_classes: int, symmetric: bool = False):
        self.k = n_classes
        self.out_scale = np.ones(n_classes)
        if n_classes >= SHORT_ROWS:  # no fused pass: the unfused kernels
            self.one_read = None
        # The L2 penalty of the centred (sum-to-zero) coefficients, scikit-learn's
        # multinomial parametrisation: written for contrasts to class 0, or, with
        # ``symmetric``, for free coefficients of every class (whose optimum is centred).
        self.penalty = np.eye(n_classes) - (0.0 if symmetric else 1.0 / n_classes)

    def target_sums(self, y, sw) -> np.ndarray:
        """The weighted count of each class."""
        return np.bincount(y, weights=sw, minlength=self.k).astype(float)

    def initial_intercepts(self, sums) -> np.ndarray:
        counts = np.maximum(sums / sums.sum(), 1e-12)
        return np.log(counts / counts[0])

    @staticmethod
    def null_loglik(sums) -> float:
        """The log-likelihood of the intercept-only model."""
        return float(np.sum(_xlogy(sums, sums / sums.sum())))

    @staticmethod
    def saturated_loglik(sums) -> float:
        return 0.0

    @staticmethod
    def nll_constant(sums) -> float:
        return 0.0

    @staticmethod
    def one_read(Xb, W, y, sw, G, Z=None, sq=None) -> float:
        """A block's NLL and ``G += gradient`` in one read of X (the fused softmax
        pass), the logits into ``Z`` (n, k) and the column squares into ``sq`` if
        given; for fewer than ``SHORT_ROWS`` classes (else None)."""
        return softmax_pass(Xb, W, y, sw, G, Z, sq)

    def loss_grad(self, Z, y, sw):
        if sw is None:
            loss, g = cross_entropy_value_and_grad(Z, y, reduction="sum", out=Z)
            return float(loss), g
        rows, g = cross_entropy_value_and_grad(Z, y, reduction="none", out=Z)
        g *= sw[:, None]
        return _weighted(rows, sw), g

    @staticmethod
    def probabilities(Z) -> np.ndarray:
        # NumPy, not fastmle's row kernel: used once per fit (for the Hessian, against
        # whose products it is small), it spares a first fit compiling that kernel
        # (~0.9 s CPU, measured); exp(z - max) cannot overflow, the sum is >= 1
        with np.errstate(invalid="ignore"):  # a row with inf: NaN, as the kernel gives
            P = np.exp(Z - Z.max(axis=1, keepdims=True))
            P /= P.sum(axis=1, keepdims=True)
        return P

    def scores(self, Z, y):
        R = self.probabilities(Z)
        R[np.arange(Z.shape[0]), y] -= 1.0
        return R

    def margins(self, Z, y) -> np.ndarray:
        """Each row's own-class score minus the best other class's: > 0 when right."""
        rows = np.arange(Z.shape[0])
        zy = Z[rows, y]
        Z[rows, y] = -np.inf
        other = Z.max(axis=1)
        Z[rows, y] = zy
        return zy - other


# A row whose own class has probability > 1 - 1e-8 (Bernoulli: margin > log(1e8);
# softmax with k classes: margin > log(1e8 (k - 1)) is enough) is predicted perfectly.
PERFECT = math.log(1e8)


def row_counts(family, Z, y, sw) -> np.ndarray:
    """[misclassified rows, perfectly predicted rows] among the rows of positive weight."""
    m = family.margins(Z, y)
    if sw is not None:
        m = m[sw > 0]
    perfect = PERFECT + math.log(max(family.k - 1, 1))
    return np.array([np.count_nonzero(m <= 0), np.count_nonzero(m > perfect)])


class Gaussian:
    """Two predictors: the mean and log sigma^2. NLL = Gaussian NLL (with the
    0.5 log(2 pi) constant). Homoscedastic models free only the intercept of
    log sigma^2."""

    k = 2
    classifier = False
    fused = None
    kron_hessian = False

    def __init__(self):
        self.penalty = np.eye(2)
        # the scale of each predictor: the mean's is the scale of y, set once a first
        # fit has measured it (1 / sigma), so that the solver works free of y's units
        self.out_scale = np.ones(2)

    @staticmethod
    def target_sums(y, sw) -> np.ndarray:
        """Sums of the weights, the weighted y and y^2."""
        return np.array(
            [y.size if sw is None else sw.sum(), _weighted(y, sw), _weighted(y * y, sw)],
            dtype=float,
        )

    def initial_intercepts(self, sums) -> np.ndarray:
        mean = sums[1] / sums[0]
        # only a starting point, but E[y^2] - mean^2 cancels when |mean| >> sd: a floor
        # at the rounding level of E[y^2] keeps log(var) near the scale of the data
        var = max(sums[2] / sums[0] - mean * mean, 1e-12 * sums[2] / sums[0], 1e-300)
        return np.array([mean, math.log(var)])

    def loss_grad(self, Z, y, sw):
        var = np.exp(Z[:, 1])
        rows, (d_mean, d_var) = gaussian_nll_loss_value_and_grad(
            Z[:, 0], y, var, full=True, eps=_TINY, reduction="none"
        )
        R = np.empty_like(Z)
        R[:, 0] = d_mean
        R[:, 1] = d_var * var  # chain rule through var = exp(log_var)
        if sw is not None:
            R *= sw[:, None]
        return _weighted(rows, sw), R

    def scores(self, Z, y):
        return self.loss_grad(Z, y, None)[1]

    def hess_weights(self, Z, y, sw):
        inv_var = np.exp(-Z[:, 1])
        r = y - Z[:, 0]
        W = np.empty((Z.shape[0], 3))
        W[:, 0] = inv_var  # d2 / d mean^2
        W[:, 1] = r * inv_var  # d2 / d mean d log_var
        W[:, 2] = 0.5 * r * r * inv_var  # d2 / d log_var^2
        if sw is not None:
            W *= sw[:, None]
        return W


def _xlogy(x, y):
    """x log y, 0 where x = 0."""
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


class Poisson:
    """y >= 0 (counts); one predictor, the log-mean ``eta = offset + x w``:
    NLL = mu - y eta (+ log(y!), a constant the solver leaves out: see ``target_sums``),
    mu = exp(eta)."""

    k = 1
    classifier = False
    kron_hessian = False
    offset = True

    def __init__(self):
        self.penalty = np.ones((1, 1))
        self.out_scale = np.ones(1)

    @staticmethod
    def target_sums(y, sw, offset=None) -> np.ndarray:
        """Weighted sums of [1, y, log(y!), y log y, exp(offset), y offset]."""
        return poisson_sums(y, sw, offset)

    def initial_intercepts(self, sums) -> np.ndarray:
        # the predictor's scale: the information per row is ~ mean(y) x^2, so in units
        # of 1 / sqrt(mean y) the solver's coordinates and stopping rule are free of the
        # scale of the counts
        wy = max(sums[1], 1e-12 * sums[0])
        self.out_scale = np.array([math.sqrt(wy / sums[0])])
        # the intercept-only MLE: exp(b) sum w exp(offset) = sum w y
        return np.array([math.log(wy / sums[4])])

    def fused(self, Xb, W, y, sw, G, counts, Z=None, A=None, sq=None, offset=None) -> float:
        """NLL of a block (without log(y!)), ``G += gradient``, the log-means into
        ``Z`` (n, 1), the Hessian's rows into ``A`` and the column squares into ``sq``
        if given: one read of X."""
        Z = None if Z is None else Z.reshape(-1)
        return poisson_pass(Xb, W, y, sw, G, offset, Z, A, sq)

    @staticmethod
    def scores(Z, y):
        with np.errstate(over="ignore"):
            return (np.exp(Z[:, 0]) - y)[:, None]

    @staticmethod
    def null_loglik(sums) -> float:
        """The log-likelihood of the intercept-only model (offset kept), in closed form."""
        wy = sums[1]
        if wy <= 0:
            return -sums[2]
        b = math.log(wy / sums[4])
        return b * wy + sums[5] - wy - sums[2]

    @staticmethod
    def saturated_loglik(sums) -> float:
        """The log-likelihood at mu = y."""
        return sums[3] - sums[1] - sums[2]

    @staticmethod
    def nll_constant(sums) -> float:
        """sum w log(y!): the part of the NLL that the fused pass leaves out."""
        return sums[2]
