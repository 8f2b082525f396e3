"""Penalised maximum likelihood over row blocks: one pass per objective evaluation.

Every evaluation reads X once, in blocks of rows sized to stay in cache: Z = [1, X]
W, the family's fused loss and gradient, G += [1, X]^T R and, when a Hessian is
wanted, the weighted Gram matrices. Extra memory is a few blocks plus O(p^2) for
p parameters. X is never copied as a whole: a float32 block stays float32, a
block of another dtype or layout is converted alone.

The objective is ``sum_i w_i NLL_i + alpha/2 * sum_j W[:, j]^T P W[:, j]`` over
the non-intercept columns j, with the family's penalty matrix P.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from .._linear import backprop, gram, predictor, symmetrize
from .._progress import Bar
from ._base import ConvergenceWarning, check_finite_block, warning

BLOCK_BYTES = 4 << 20
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


def block_rows(X) -> int:
    """Rows per block: about ``BLOCK_BYTES`` of X, a multiple of 1024."""
    d = X.shape[1]
    return max(1024, (BLOCK_BYTES // max(1, d * X.dtype.itemsize)) // 1024 * 1024)


def row_blocks(X, y, sw):
    """(X, y, sample_weight) in blocks of ``block_rows(X)`` rows."""
    n, rows = X.shape[0], block_rows(X)
    for s in range(0, n, rows):
        yield float_block(X[s:s + rows]), y[s:s + rows], None if sw is None else sw[s:s + rows]


# -- the work of one pass, on the blocks of one chunk of rows ------------------------
# Each returns a tuple of partial sums (floats, arrays or None) that add up over the
# chunks. ``check``: look for NaN/inf in X (the first pass over the data).

def nll_sums(blocks, check, W, family, full_pairs, vec_pairs, hess, count_wrong):
    """(NLL, dNLL/dW, Hessian blocks of the full pairs, of the vector pairs, number of
    misclassified rows); the Hessian parts are None without ``hess``."""
    k, d1 = W.shape
    G = np.zeros((k, d1))
    Hf = np.zeros((len(full_pairs), d1, d1)) if hess else None
    Hv = np.zeros((len(vec_pairs), d1)) if hess else None
    loss, wrong = 0.0, 0
    # With all coefficients 0 (a cold start), Z = intercepts + 0 * X is NaN exactly
    # in the rows of X holding NaN or inf: the predictor checks X for free.
    via_z = check and not W[:, 1:].any() and bool(np.isfinite(W).all())
    for Xb, yb, swb in blocks:
        if check and not via_z:
            check_finite_block(Xb)
        Z = predictor(Xb, W)
        if via_z and not np.isfinite(Z).all():
            check_finite_block(Xb)
        if hess:
            Wts = family.hess_weights(Z, yb, swb)
            if full_pairs:
                gram(Xb, np.ascontiguousarray(Wts[:, full_pairs]), Hf)
            if vec_pairs:
                backprop(Xb, np.ascontiguousarray(Wts[:, vec_pairs]), Hv)
        if count_wrong:
            wrong += family.misclassified(Z, yb, swb)
        block_loss, R = family.loss_grad(Z, yb, swb)
        loss += block_loss
        backprop(Xb, R, G)
    return loss, G, Hf, Hv, wrong


def normal_sums(blocks, check, d1):
    """The weighted normal equations of least squares: ([1, X]^T W [1, X], [1, X]^T W y)."""
    A = np.zeros((1, d1, d1))
    b = np.zeros((1, d1))
    for Xb, yb, swb in blocks:
        if check:
            check_finite_block(Xb)
        w = np.ones((Xb.shape[0], 1)) if swb is None else swb[:, None].copy()
        gram(Xb, w, A)
        backprop(Xb, w * yb[:, None], b)
    return A, b


def rss_sums(blocks, check, beta):
    """(weighted residual sum of squares of y on [1, X] beta,)."""
    rss = 0.0
    for Xb, yb, swb in blocks:
        if check:
            check_finite_block(Xb)
        r = yb - predictor(Xb, beta[None, :])[:, 0]
        rss += float(r @ r) if swb is None else float((r * r) @ swb)
    return (rss,)


def add_sums(parts):
    """The element-wise sum of partial-sum tuples, added in the order given."""
    out = list(parts[0])
    for part in parts[1:]:
        out = [None if a is None else a + b for a, b in zip(out, part)]
    return tuple(out)


class Problem:
    """The penalised NLL of one family on (X, y, sw), as a function of the free
    parameters ``theta = W[mask]`` (W of shape (k, d + 1), column 0 the intercepts).

    The data is only touched by :meth:`_pass`, one pass of a function of row blocks
    (``nll_sums``, ...): a subclass that overrides it and ``weight_sum`` fits data
    held elsewhere (``_distributed.DaskProblem``). A problem is a context manager,
    entered for the duration of a fit.
    """

    def __init__(self, X, y, sw, family, mask, alpha, verbose=0):
        self.X, self.y, self.sw = X, y, sw
        self.alpha, self.verbose = float(alpha), verbose
        self.weight_sum = self._weight_sum()
        self.checked = False
        self._set_family(family, mask)

    def _set_family(self, family, mask):
        self.family, self.mask = family, mask
        k = family.k
        full = mask[:, 1:].any(axis=1)
        free = mask.any(axis=1)
        pairs = [(a, b) for a in range(k) for b in range(a + 1)]
        used = [i for i, (a, b) in enumerate(pairs) if free[a] and free[b]]
        self.full_pairs = [i for i in used if full[pairs[i][0]] and full[pairs[i][1]]]
        self.vec_pairs = [i for i in used if i not in self.full_pairs]
        self.pairs = pairs
        self.n_evals = 0

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

    def _pass(self, fn, *args) -> tuple:
        """``fn(blocks, check, *args)`` over all the rows: one pass over X, checked for
        NaN/inf the first time."""
        out = fn(self._blocks(), not self.checked, *args)
        self.checked = True
        return out

    def _blocks(self):
        """Blocks of (X, y, sample_weight), with a progress bar for slow verbose passes."""
        n, done = self.X.shape[0], 0
        bar = Bar(f"  pass {self.n_evals}:", after=PROGRESS_AFTER) if self.verbose else None
        for block in row_blocks(self.X, self.y, self.sw):
            yield block
            done += block[0].shape[0]
            if bar:
                bar(done / n)
        if bar:
            bar.close()

    def evaluate(self, theta, hess=False, count_wrong=False):
        """(objective, gradient, Hessian or None, number of misclassified rows)."""
        self.n_evals += 1
        fam, mask = self.family, self.mask
        W = self.unpack(theta)
        k, d1 = W.shape
        self.counted = count_wrong
        loss, G, Hf, Hv, wrong = self._pass(nll_sums, W, fam, self.full_pairs,
                                            self.vec_pairs, hess, count_wrong)
        C = W[:, 1:]
        P = fam.penalty
        loss += 0.5 * self.alpha * float(np.sum(C * (P @ C)))
        G[:, 1:] += self.alpha * (P @ C)
        H = None
        if hess:
            H = self._assemble(Hf, Hv, k, d1)
        return loss, G[mask], H, wrong

    def _assemble(self, Hf, Hv, k, d1):
        H = np.zeros((k, d1, k, d1))
        Hf = symmetrize(Hf)
        for i, q in enumerate(self.full_pairs):
            a, b = self.pairs[q]
            H[a, :, b, :] = Hf[i]
            H[b, :, a, :] = Hf[i].T
        for i, q in enumerate(self.vec_pairs):
            a, b = self.pairs[q]
            # only the intercept row/column of a block with a non-full side is used
            H[a, 0, b, :] = H[b, :, a, 0] = Hv[i]
            H[a, :, b, 0] = H[b, 0, a, :] = Hv[i]
        P = self.family.penalty
        for a in range(k):
            for b in range(k):
                if P[a, b]:
                    idx = np.arange(1, d1)
                    H[a, idx, b, idx] += self.alpha * P[a, b]
        H = H.reshape(k * d1, k * d1)
        m = self.mask.ravel()
        return H[np.ix_(m, m)]

    def least_squares(self):
        """Weighted least squares of y on [1, X] (the mean model's unpenalised MLE), its
        residual sum of squares and the Gram matrix [1, X]^T W [1, X] of the free mean
        parameters: two passes, the Gram matrix and the residuals."""
        A, b = self._pass(normal_sums, self.mask.shape[1])
        A = symmetrize(A)[0]
        free = self.mask[0]
        beta = np.zeros(A.shape[0])
        beta[free] = np.linalg.lstsq(A[np.ix_(free, free)], b[0, free], rcond=None)[0]
        (rss,) = self._pass(rss_sums, beta)
        return beta, rss, A[np.ix_(free, free)]

    def converged(self, g) -> bool:
        return float(np.max(np.abs(g), initial=0.0)) <= self.tol * self.weight_sum


def _newton_direction(H, g):
    try:
        L = np.linalg.cholesky(H)
        return np.linalg.solve(L.T, np.linalg.solve(L, g))
    except np.linalg.LinAlgError:
        # singular or indefinite: a step along the eigenvectors of H, curvature
        # clipped from below, so it is still a descent direction
        vals, vecs = np.linalg.eigh(H)
        floor = max(vals.max(initial=0.0), 1.0) * 1e-10
        return vecs @ ((vecs.T @ g) / np.maximum(np.abs(vals), floor))


def _sufficient_decrease(f, f1, t, slope) -> bool:
    """Armijo's condition, up to the rounding of the objective (a float64 sum of n
    terms): near the optimum the true decrease is below that noise, and the step is
    judged by the gradients, which stay accurate."""
    return f1 <= f - 1e-4 * t * slope + 1e-12 * abs(f)


def _report(problem, it, f, g, step):
    if problem.verbose:
        print(f"iter {it:4d}  loss {f / problem.weight_sum:.10g}  "
              f"|grad|_inf {np.max(np.abs(g), initial=0) / problem.weight_sum:.3e}  "
              f"step {step:.3g}", file=sys.stderr)


def _count_wrong(problem, f) -> bool:
    """Whether to look for a separating iterate: unpenalised classifiers, once the mean
    NLL is below log(2) (on separable data the NLL goes to 0; counting is not free)."""
    return (hasattr(problem.family, "misclassified") and problem.alpha == 0
            and f < math.log(2.0) * problem.weight_sum)


def _finished(problem, it, theta, f, g, H, wrong):
    """The result if iteration ``it`` starts at the optimum or at a separating iterate."""
    if problem.converged(g):
        return Result(theta, f, g, H, it, True)
    if problem.counted and wrong == 0:
        return Result(theta, f, g, H, it, False, separable=True)
    return None


def _backtrack(problem, theta, p, f, slope, count, hess=False):
    """Step ``theta - t p`` with t = 1, 1/2, ... until the decrease is sufficient; the
    Hessian is evaluated (if asked) only with the full step, the usual Newton case."""
    t = 1.0
    while True:
        trial = theta - t * p
        f1, g1, H1, w1 = problem.evaluate(trial, hess=hess and t == 1.0, count_wrong=count)
        if _sufficient_decrease(f, f1, t, slope) or t < 1e-10:
            return t, trial, f1, g1, H1, w1
        t *= 0.5


def newton(problem: Problem, theta, max_iter: int, hess0=None) -> Result:
    """Damped Newton; ``hess0``: the Hessian at ``theta`` when it is already known."""
    count = _count_wrong(problem, 0.0)
    f, g, H, wrong = problem.evaluate(theta, hess=hess0 is None, count_wrong=count)
    if hess0 is not None:
        H = hess0
    for it in range(max_iter + 1):
        done = _finished(problem, it, theta, f, g, H, wrong)
        if done or it == max_iter:
            return done or Result(theta, f, g, H, max_iter, False)
        count = _count_wrong(problem, f)
        p = _newton_direction(H, g)
        slope = float(g @ p)
        t, trial, f1, g1, H1, w1 = _backtrack(problem, theta, p, f, slope, count, hess=True)
        if H1 is None:
            f1, g1, H1, w1 = problem.evaluate(trial, hess=True, count_wrong=count)
        stalled = not _sufficient_decrease(f, f1, t, slope)
        theta, f, g, H, wrong = trial, f1, g1, H1, w1
        _report(problem, it + 1, f, g, t)
        if stalled:
            # no decrease at the resolution of the objective: as close as it gets
            return Result(theta, f, g, H, it + 1, problem.converged(g))


def lbfgs(problem: Problem, theta, max_iter: int, memory: int = 10) -> Result:
    count = _count_wrong(problem, 0.0)
    f, g, _, wrong = problem.evaluate(theta, count_wrong=count)
    S, Y = [], []
    for it in range(max_iter + 1):
        done = _finished(problem, it, theta, f, g, None, wrong)
        if done or it == max_iter:
            return done or Result(theta, f, g, None, max_iter, False)
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
        if slope <= 0:  # lost descent: restart from the gradient
            S, Y = [], []
            p = g / problem.weight_sum
            slope = float(g @ p)
        t, trial, f1, g1, _, w1 = _backtrack(problem, theta, p, f, slope, count)
        s, y = trial - theta, g1 - g
        if float(s @ y) > 1e-12 * float(y @ y):
            S.append(s)
            Y.append(y)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        stalled = not _sufficient_decrease(f, f1, t, slope)
        theta, f, g, wrong = trial, f1, g1, w1
        _report(problem, it + 1, f, g, t)
        if stalled:
            return Result(theta, f, g, None, it + 1, problem.converged(g))


def _polish(problem: Problem, res: Result) -> Result:
    """One Newton step after L-BFGS, with the Hessian that inference needs anyway:
    the error of the estimate goes from ~tol to ~tol^2 for one cheap extra pass. The
    Hessian is that of the last L-BFGS iterate, a step of ~tol away."""
    f, g, H, _ = problem.evaluate(res.theta, hess=True)
    theta = res.theta - _newton_direction(H, g)
    f1, g1, _, _ = problem.evaluate(theta)
    if _sufficient_decrease(f, f1, 0.0, 0.0) and np.max(np.abs(g1)) <= np.max(np.abs(g)):
        res = Result(theta, f1, g1, H, res.n_iter + 1, False)
    else:
        res = Result(res.theta, f, g, H, res.n_iter, False)
    res.converged = problem.converged(res.grad)
    return res


LBFGS_BEFORE_NEWTON = 50  # solver="auto": L-BFGS iterations before it hands over to Newton


def solve(problem: Problem, theta, solver: str, max_iter: int, tol: float,
          search=None, fallback: bool = False, started: int = 0, hess0=None) -> Result:
    """Minimise ``problem`` from ``theta`` in at most ``max_iter`` iterations.

    ``solver="lbfgs"`` ends with a Newton step (when ``max_iter`` allows), and
    continues with Newton if that step falls short of ``tol``; with ``fallback`` (the
    "auto" choice) it also hands over to Newton after ``LBFGS_BEFORE_NEWTON``
    iterations (badly scaled X). ``search = (problem2, theta2, back)`` runs L-BFGS in
    another parametrisation of the same objective (``back`` maps its parameters to
    ``problem``'s), where it may converge faster. ``started``: iterations already
    spent on the starting point (they count towards ``max_iter`` and ``n_iter``);
    ``hess0``: the Hessian there, if known (Newton then starts with a cheap pass).
    """
    problem.tol = tol
    limit, max_iter = max_iter, max_iter - started
    if solver == "newton":
        res = newton(problem, theta, max_iter, hess0)
    else:
        budget = max_iter
        if fallback:
            budget = min(budget, LBFGS_BEFORE_NEWTON)
        if search is None:
            res = lbfgs(problem, theta, budget)
        else:
            other, theta2, back = search
            other.tol = tol
            res = lbfgs(other, theta2, budget)
            res.theta = back(res.theta)
            problem.n_evals += other.n_evals
        if res.converged and res.n_iter < max_iter:
            res = _polish(problem, res)
        if not (res.converged or res.separable) and res.n_iter < max_iter \
                and (fallback or res.hess is not None):
            more = newton(problem, res.theta, max_iter - res.n_iter)
            more.n_iter += res.n_iter
            res = more
    if res.separable:
        warnings.warn(warning(
            ConvergenceWarning,
            "The classes are perfectly separable by a linear function of X: the maximum "
            "likelihood estimate does not exist (the coefficients grow without bound). The "
            "finite coefficients of the current iterate are returned; use alpha > 0 for a "
            "penalised estimate."), stacklevel=3)
    elif not res.converged:
        warnings.warn(warning(
            ConvergenceWarning,
            f"The {solver} solver did not converge in max_iter={limit} iterations "
            f"(|gradient|_inf / sum of weights = "
            f"{np.max(np.abs(res.grad)) / problem.weight_sum:.3g} > tol={tol}): increase "
            "max_iter, scale X, or use alpha > 0."), stacklevel=3)
    res.n_iter += started
    return res
