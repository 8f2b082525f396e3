"""The solver's linear algebra, in equilibrated coordinates.

Every solve, singularity test and covariance here works on a scaled copy of its
matrix: the information matrix H becomes ``C = H / (d d^T)`` with ``d = sqrt(diag H)``
(unit diagonal), an R factor has its columns scaled to unit norm. Scaling a column
of X by any factor scales d by the same factor and leaves C unchanged, so nothing
decided here (a rank, a step, a standard error) depends on the units of the data.

Two representations of the information, one per accuracy need:

- a Gram matrix ``H = A^T A`` (BLAS ``syrk`` over row blocks): cheap, for the
  Newton steps of the classifiers, where the step's accuracy only affects the
  speed of convergence and the optimum is fixed by the gradient. Its singularity
  cutoff is ``GRAM_RANK_TOL`` on the eigenvalues of C.
- an R factor of A (TSQR: :class:`RFactor`, each block's rows stacked under the
  running R and re-factored), for least squares: it is as accurate as a
  Householder QR of the whole matrix (cond(A) eps rather than cond(A)^2 eps), and
  its cutoff ``R_RANK_TOL`` is on the singular values of the scaled R.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

EPS = np.finfo(np.float64).eps
# From this order on, a factorisation runs in a worker thread (see interruptible):
# LAPACK on 1000 x 1000 takes ~0.1 s, on 5000 x 5000 (MAX_INFERENCE_PARAMS) ~10 s.
INTERRUPTIBLE_ORDER = 1000
# relative eigenvalue of C (cond(C) = cond(A)^2) below which a direction is singular:
# C's entries carry rounding of ~p eps, so its inverse has ~cond(C) p eps relative error
GRAM_RANK_TOL = 1e-12
# relative singular value of the scaled R below which a direction is singular: a
# computed R is exact for data perturbed by ~p eps relatively (Householder QR)
R_RANK_TOL = 64 * EPS


def interruptible(fn):
    """``fn(M, ...)`` in a daemon worker thread when M (its first argument) is of order
    ``INTERRUPTIBLE_ORDER`` or more, the calling thread waiting on an event: a long
    LAPACK call holds the interpreter in C, where Ctrl-C waits until it returns; the
    wait is interrupted at once (KeyboardInterrupt in the caller), and the abandoned
    call finishes in the background. Smaller matrices are done in the caller."""

    @functools.wraps(fn)
    def run(M, *args):
        if M.shape[0] < INTERRUPTIBLE_ORDER:
            return fn(M, *args)
        out: list = []
        done = threading.Event()

        def work():
            try:
                out.append((True, fn(M, *args)))
            except BaseException as exc:  # re-raised in the caller
                out.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=work, name="fastmle-lapack", daemon=True).start()
        while not done.wait(0.05):  # short waits: Ctrl-C is seen on every platform
            pass
        ok, value = out[0]
        if not ok:
            raise value
        return value

    return run


def unit_scales(diag: np.ndarray) -> np.ndarray:
    """sqrt(diag) where positive and finite, else 1 (an all-zero column stays put)."""
    d = np.sqrt(np.where(diag > 0, diag, 1.0))
    d[~np.isfinite(d)] = 1.0
    return d


def equilibrated(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, d)`` with ``H = d C d`` and C of unit diagonal (where H's is positive)."""
    d = unit_scales(np.diag(H).copy())
    return H / d[:, None] / d[None, :], d


@interruptible
def newton_direction(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``H^-1 g``, solved on the equilibrated H; where H is singular or indefinite, a
    step along its eigenvectors with |curvature| (still a descent direction), none
    along directions of no curvature (there, the gradient is rounding noise)."""
    C, d = equilibrated(H)
    gs = g / d
    try:
        L = np.linalg.cholesky(C)
        if np.diag(L).min() > np.sqrt(GRAM_RANK_TOL):
            return np.linalg.solve(L.T, np.linalg.solve(L, gs)) / d
    except np.linalg.LinAlgError:
        pass
    vals, vecs = np.linalg.eigh(C)
    flat = np.abs(vals) <= max(float(np.abs(vals).max(initial=0.0)), 1e-300) * GRAM_RANK_TOL
    step = np.where(flat, 0.0, (vecs.T @ gs) / np.where(flat, 1.0, np.abs(vals)))
    return vecs @ step / d


def _null_parameters(vecs: np.ndarray, null: np.ndarray) -> np.ndarray:
    """The parameters that take part in the null directions ``vecs[:, null]``."""
    return np.abs(vecs[:, null]).max(axis=1, initial=0.0) > 1e-8


@interruptible
def gram_covariance(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(H^-1, unidentified)``: the inverse of the observed information, and the
    parameters in singular directions of H (their rows and columns of H^-1 are nan)."""
    p = H.shape[0]
    bad = np.zeros(p, bool)
    if p == 0:
        return np.zeros((0, 0)), bad
    if not np.isfinite(H).all():
        return np.full((p, p), np.nan), ~bad
    C, d = equilibrated(H)
    try:  # the usual case, well conditioned: O(p^3 / 3), several times faster than eigh
        Linv = np.linalg.inv(np.linalg.cholesky(C))
        inv = Linv.T @ Linv
        # cond(C) <= ||C|| ||C^-1|| <= p trace(C^-1) (unit diagonal): a bound, not a guess
        if np.isfinite(inv).all() and p * np.trace(inv) * GRAM_RANK_TOL < 1.0:
            return inv / d[:, None] / d[None, :], bad
    except np.linalg.LinAlgError:
        pass
    vals, vecs = np.linalg.eigh(C)
    null = vals <= max(float(vals.max()), 0.0) * GRAM_RANK_TOL
    inv = np.where(null, 0.0, 1.0 / np.where(null, 1.0, vals))
    cov = (vecs * inv) @ vecs.T / d[:, None] / d[None, :]
    bad = _null_parameters(vecs, null)
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    return cov, bad


class RFactor:
    """The R factor of a tall matrix whose rows arrive in blocks (TSQR): ``R + R2`` is
    the R of both row sets stacked. A partial sum of a pass, as the Gram sums are."""

    def __init__(self, R: np.ndarray):
        self.R = R

    @classmethod
    def of(cls, A: np.ndarray) -> RFactor:
        return cls(_qr_r(A))

    def __add__(self, other: RFactor) -> RFactor:
        return RFactor(_qr_r(np.vstack([self.R, other.R])))


def _qr_r(A: np.ndarray) -> np.ndarray:
    """The square R (Householder QR) of ``A``; rows of zeros pad a short A."""
    m, n = A.shape
    if m < n:
        A = np.vstack([A, np.zeros((n - m, n))])
    return np.linalg.qr(A, mode="r")


def _scaled_svd(R: np.ndarray):
    """SVD of R with unit-norm columns: ``(U, s, Vt, d, null)``, R = U s Vt d."""
    d = unit_scales(np.einsum("ij,ij->j", R, R))
    U, s, Vt = np.linalg.svd(R / d, full_matrices=False)
    return U, s, Vt, d, s <= s.max(initial=0.0) * R_RANK_TOL


@interruptible
def r_solve(R: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares from an R factor: ``x`` minimising ``|R x - b|`` of minimum norm in
    equilibrated coordinates, the unidentified parameters, and the part of ``|b|^2``
    that a rank-deficient R leaves unexplained."""
    U, s, Vt, d, null = _scaled_svd(R)
    c = U.T @ b
    x = Vt.T @ np.where(null, 0.0, c / np.where(null, 1.0, s)) / d
    return x, _null_parameters(Vt.T, null), float(c[null] @ c[null])


@interruptible
def r_covariance(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``((R^T R)^-1, unidentified)`` from the SVD of the equilibrated R: accurate to
    cond(R) eps, where the Gram matrix R^T R would give cond(R)^2 eps."""
    p = R.shape[1]
    if p == 0:
        return np.zeros((0, 0)), np.zeros(0, bool)
    _, s, Vt, d, null = _scaled_svd(R)
    V = Vt.T / np.where(null, 1.0, s)
    V[:, null] = 0.0
    cov = V @ V.T / d[:, None] / d[None, :]
    bad = _null_parameters(Vt.T, null)
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    return cov, bad
