"""The estimators: a family, a parameter mask and a solver, with scikit-learn's API."""

from __future__ import annotations

import functools
import math
import numbers
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .._cpu.linear import predictor
from .._kinds import is_array_api, is_dask
from ..categorical import log_softmax
from . import _chunks, _families
from ._base import (
    BaseEstimator,
    ConvergenceWarning,
    check_finite_block,
    check_rows,
    map_rows,
    per_row,
    reduce_rows,
    warning,
)
from ._inference import chi2_sf, summary_table
from ._linalg import EPS, gram_covariance, r_covariance
from ._namespace import to_host
from ._solver import Problem, Result, float_block, rss_sums, solve

SOLVERS = ("auto", "lbfgs", "newton")
COV_TYPES = ("nonrobust", "HC0", "HC1", "cluster")
_COV_NAMES = {
    "nonrobust": "nonrobust",
    "HC0": "HC0 (robust)",
    "HC1": "HC1 (robust, n / (n - k))",
    "cluster": "cluster (G / (G - 1) (n - 1) / (n - k))",
}
# "auto" takes Newton's method while a Hessian pass (n p^2 / 2 multiply-adds) costs
# about as much as the handful of gradient passes (n p, memory-bound) it saves.
NEWTON_MAX_PARAMS = 20

# Standard errors need the dense p x p information matrix and its inverse: at 5000
# parameters 200 MB and ~10 s of LAPACK (in a worker thread, so that Ctrl-C returns at
# once: _linalg.interruptible); beyond, fits refuse inference (inference=False fits
# the coefficients by L-BFGS alone)
MAX_INFERENCE_PARAMS = 5000
NEWTON_FALLBACK_MAX_PARAMS = 500


@dataclass
class Fit:
    """What an estimation hands to ``fit``: the solver's result, the covariance of
    theta (None without inference), the parameters X does not identify, the solver's
    name, and the log-likelihood where it is not ``-result.loss`` (exact fits)."""

    result: Result
    cov: np.ndarray | None
    unidentified: np.ndarray
    solver: str
    loglik: float | None = None
    rss: float | None = None  # Gaussian least squares: the weighted residual sum of squares


@dataclass
class Start:
    """Where the solver starts: the parameters, the iterations spent finding them, the
    Hessian there when it is known, and ``final`` when there is nothing to solve."""

    theta: np.ndarray
    iterations: int = 0
    hess: np.ndarray | None = None
    final: bool = False


def _distributed():
    from . import _distributed

    return _distributed


def _arrays():
    from . import _arrays

    return _arrays


def _rowwise(method):
    """The method also takes a Dask X, and then returns a Dask array: the method on
    each chunk of rows (computed when the user computes it)."""

    @functools.wraps(method)
    def wrapper(self, X):
        if is_dask(X):
            return self._map_chunks(method.__name__, X)
        return method(self, X)

    return wrapper


def _call(estimator, name, X):
    return getattr(estimator, name)(X)


def _target_sums(family, y, sw, offset=None) -> np.ndarray:
    if offset is not None:
        return np.sum(reduce_rows(family.target_sums, y, sw, offset), axis=0)
    return np.sum(reduce_rows(family.target_sums, y, sw), axis=0)


def _weighted_ss(y, sw, center) -> float:
    """sum w (y - center)^2 of some rows."""
    r = y - center
    return float(r @ r if sw is None else (r * r) @ sw)


def _group_codes(groups, n: int):
    """``(codes, number of groups)``: each row's cluster as an index into the sorted
    distinct values of ``groups`` (a NumPy or Dask array of n labels)."""
    if not is_dask(groups):
        groups = np.asarray(groups)
    check_rows(groups, "groups", n)
    values = np.unique(np.concatenate(reduce_rows(np.unique, groups)))
    if values.size < 2:
        raise ValueError(
            f"cov_type='cluster' needs at least 2 clusters in groups, got {values.size}"
        )
    return map_rows(np.searchsorted, values, groups, dtype=np.intp), int(values.size)


def _real_rows(a, name: str, n: int):
    """A per-row float64 array (NumPy or Dask), checked finite, of shape (n,)."""
    a = per_row(a, name, n)
    if not all(reduce_rows(_all_finite, a)):
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _positive(a) -> bool:
    return bool((a > 0).all())


def _labels(y) -> np.ndarray:
    """The distinct labels of y, checked to be labels."""
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        if np.any(y != np.round(y)):
            raise ValueError(
                "Unknown label type: continuous. A classifier needs class labels; use "
                "GaussianRegression for a continuous target"
            )
    return np.unique(y)


def _class_counts(y, k):
    return np.bincount(y.astype(np.intp), minlength=k)


def _class_weighted(y, sw, per_class):
    w = per_class[y.astype(np.intp)]
    return w if sw is None else sw * w


def _all_finite(a) -> bool:
    return bool(np.isfinite(a).all())


_FIT_DOC = """
        Fit by penalised maximum likelihood.

        Parameters
        ----------
        X : array_like or Dask array of shape (n_samples, n_features)
            Any real dtype; float32 and float64 ndarrays (``np.memmap`` included) are
            read in place, block by block, never copied as a whole. A Dask array is
            fitted on a ``dask.distributed`` cluster (the current client, else an
            embedded local one), one task per chunk of rows and pass, without
            gathering X (``fastmle.models._distributed`` tells how).
        y : array_like or Dask array of shape (n_samples,)
        sample_weight : array_like or Dask array of shape (n_samples,), optional
            Non-negative weights, not all zero: each row's NLL is multiplied by its
            weight (a weight of 2 is the row repeated).
        groups : array_like or Dask array of shape (n_samples,), optional
            The cluster of each row, for ``cov_type="cluster"`` (required then, and
            only then).

        Returns
        -------
        self
"""


class _LinearMLE(BaseEstimator):
    """Shared fit/inference; subclasses pick the family, the mask and the outputs."""

    _classifier = False
    _newton_max_params = NEWTON_MAX_PARAMS

    def __init__(
        self,
        *,
        fit_intercept=True,
        alpha=0.0,
        tol=1e-8,
        max_iter=200,
        solver="auto",
        warm_start=False,
        inference=True,
        cov_type="nonrobust",
        verbose=0,
    ):
        self.fit_intercept = fit_intercept
        self.cov_type = cov_type
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.warm_start = warm_start
        self.inference = inference
        self.verbose = verbose

    # -- parameters --------------------------------------------------------------

    def _check_params(self) -> None:
        if (
            not isinstance(self.alpha, numbers.Real)
            or not np.isfinite(self.alpha)
            or self.alpha < 0
        ):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if not isinstance(self.tol, numbers.Real) or not self.tol > 0:
            raise ValueError(f"tol must be a number > 0, got {self.tol!r}")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r} is not valid: use one of {SOLVERS}")
        if not isinstance(self.inference, (bool, np.bool_)):
            raise ValueError(f"inference must be True or False, got {self.inference!r}")
        if not isinstance(self.cov_type, str) or self.cov_type not in COV_TYPES:
            raise ValueError(f"cov_type={self.cov_type!r} is not valid: use one of {COV_TYPES}")

    def _sample_weight(self, y, sw):
        """The row weights of the NLL, from the checked ``sample_weight`` (or None)."""
        return sw

    # -- fitting -----------------------------------------------------------------

    def fit(self, X, y, sample_weight=None, groups=None):
        # a fit that raises (or is interrupted) leaves the estimator as it was
        state = dict(self.__dict__)
        try:
            return self._fit(X, y, sample_weight, groups)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(state)
            raise

    def _offset(self, n, exposure, offset):
        """The per-row offset of the first linear predictor (None: none)."""
        return None

    def _fit(self, X, y, sample_weight, groups, exposure=None, offset=None):
        self._check_params()
        t0 = time.perf_counter()
        X = self._check_X(X, reset=True)
        n, d = X.shape
        y = self._check_y(y, n)
        if (groups is None) != (self.cov_type != "cluster"):
            raise ValueError(
                "cov_type='cluster' needs fit(X, y, groups=...), the cluster of each row"
                if groups is None
                else f"groups is only used with cov_type='cluster' (cov_type={self.cov_type!r})"
            )
        if is_dask(X):
            y, sample_weight, exposure, offset, groups = _chunks.rows_like(
                X, y, sample_weight, exposure, offset, groups
            )
        else:  # per-row arrays of a NumPy or array-API X are checked on the host
            y, sample_weight, exposure, offset, groups = (
                np.asarray(a) if is_dask(a) else to_host(a) if is_array_api(a) else a
                for a in (y, sample_weight, exposure, offset, groups)
            )
        y = self._encode_y(y)
        # sample weights are frequency weights: nobs_ is their sum (class weights aside)
        sw, nobs = self._check_sample_weight(sample_weight, n)
        sw = self._sample_weight(y, sw)
        off = self._offset(n, exposure, offset)
        codes, n_groups = (None, 0) if groups is None else _group_codes(groups, n)
        robust = None if self.cov_type == "nonrobust" or not self.inference else n_groups
        family, mask = self._family(d)
        self._guard_inference(int(mask.sum()))
        make = Problem
        if is_dask(X):
            make = _distributed().DaskProblem
        elif is_array_api(X):
            make = _arrays().ArrayProblem
        with make(X, y, sw, family, mask, self.alpha, self.verbose, off, codes, robust) as problem:
            fit = self._estimate(problem, family, mask, y, sw)
            if robust is not None and fit.cov is not None:
                fit.cov = self._sandwich(problem, fit, mask, nobs, n_groups)
            sums = self._model_sums(problem, family, y, sw, off, fit)
        res, cov, bad = fit.result, fit.cov, fit.unidentified
        if res.perfect and bad.any() and res.quasi is None and family.classifier and not self.alpha:
            # rows predicted perfectly leave no curvature along the separating direction
            res.quasi, res.converged, bad = bad, False, np.zeros_like(bad)
        self._W = problem.unpack(res.theta)
        self._mask = mask
        C = self._W[:, 1:]
        penalty = 0.5 * float(self.alpha) * float(np.sum(C * (family.penalty @ C)))
        # the solver's NLL leaves out terms of y alone (Poisson's log(y!)): added here
        self.loglik_ = (
            -(res.loss - penalty) - sums.get("const", 0.0) if fit.loglik is None else fit.loglik
        )
        self.n_iter_ = res.n_iter
        self.converged_ = res.converged
        self.solver_ = fit.solver
        self.nobs_ = nobs
        self.n_params_ = int(mask.sum())
        self.aic_ = 2.0 * self.n_params_ - 2.0 * self.loglik_
        self.bic_ = self.n_params_ * math.log(nobs) - 2.0 * self.loglik_
        self._set_tests(sums, mask, bad)
        if robust is not None:
            self.n_groups_ = n_groups if self.cov_type == "cluster" else None
        self.param_names_ = self._names(mask)
        if res.quasi is not None:
            hit = [name for name, q in zip(self.param_names_, res.quasi) if q]
            warnings.warn(
                warning(
                    ConvergenceWarning,
                    f"Quasi-complete separation: {res.perfect} rows are predicted perfectly "
                    "(probability of their class > 1 - 1e-8) and the likelihood keeps rising "
                    f"along a direction of {hit}: their maximum likelihood estimates do not "
                    "exist (they grow without bound). The last iterate is returned, its "
                    "standard errors meaningless; use alpha > 0 for a penalised estimate.",
                ),
                stacklevel=3,
            )
        if cov is None:
            self.params_, _ = self._natural(res.theta, np.zeros((res.theta.size,) * 2))
        else:
            self.params_, self._cov = self._natural(res.theta, cov)
            self.bse_ = np.sqrt(np.diag(self._cov))
            if bad.any():
                hit = [name for name, b in zip(self.param_names_, bad) if b]
                warnings.warn(
                    f"The information matrix is singular: X does not identify {hit} "
                    "(collinear or constant columns); their standard errors are nan.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        self._set_outputs()
        self.fit_time_ = time.perf_counter() - t0
        if self.verbose:
            print(
                f"{type(self).__name__}: {res.n_iter} iterations ({fit.solver}), "
                f"{problem.n_evals} passes over X, loglik {self.loglik_:.10g}, "
                f"{'converged' if res.converged else 'NOT converged'}, "
                f"{self.fit_time_:.3g} s",
                file=sys.stderr,
            )
        return self

    def _robust_k(self, mask) -> int:
        """The number of parameters in the small-sample corrections of HC1 and cluster."""
        return int(mask.sum())

    def _sandwich(self, problem, fit, mask, nobs, n_groups) -> np.ndarray:
        """The robust covariance ``H^-1 M H^-1`` times the small-sample correction of
        ``cov_type``: H^-1 the model-based covariance of theta, M the scores' outer
        products (per row, or of their per-cluster sums) of the last Hessian pass."""
        if problem.meat is None:  # no Hessian pass was needed (closed forms)
            problem.evaluate(fit.result.theta, hess=True)
        bread = fit.cov.copy()
        bad = np.isnan(np.diag(bread))
        bread[bad, :] = 0.0
        bread[:, bad] = 0.0
        cov = bread @ problem.meat @ bread
        n, k = nobs, self._robust_k(mask)
        if self.cov_type == "HC1":
            cov *= n / (n - k)
        elif self.cov_type == "cluster":
            cov *= n_groups / (n_groups - 1.0) * (n - 1.0) / (n - k)
        cov[bad, :] = np.nan
        cov[:, bad] = np.nan
        return cov

    def _model_sums(self, problem, family, y, sw, off, fit) -> dict:
        """What the model-level statistics need: the intercept-only and saturated
        log-likelihoods (from sums over y alone: those of the start, if it took them)."""
        sums = problem.target_sums
        if sums is None:
            sums = _target_sums(family, y, sw, off)
        return {
            "llnull": family.null_loglik(sums),
            "llsat": family.saturated_loglik(sums),
            "const": family.nll_constant(sums),
        }

    def _df_model(self, mask, bad) -> int:
        """The degrees of freedom of the likelihood-ratio test: identified parameters
        beyond those of the null model (one intercept per free output, with or without
        ``fit_intercept``, as statsmodels' discrete models)."""
        return int(mask.sum() - mask.any(axis=1).sum() - bad.sum())

    def _set_tests(self, sums, mask, bad) -> None:
        """llnull_, llr_, llr_pvalue_, pseudo_r2_, deviance_, df_model_ (statsmodels'
        definitions: the null model has the intercepts alone, and any offset)."""
        self.df_model_ = self._df_model(mask, bad)
        self.llnull_ = float(sums["llnull"])
        self.llr_ = 2.0 * (self.loglik_ - self.llnull_)
        self.llr_pvalue_ = chi2_sf(self.llr_, self.df_model_)
        self.pseudo_r2_ = 1.0 - self.loglik_ / self.llnull_ if self.llnull_ else float("nan")
        self.deviance_ = 2.0 * (sums["llsat"] - self.loglik_)

    def _test_lines(self) -> list:
        return [
            ("Pseudo R-squ.:", f"{self.pseudo_r2_:.4f}"),
            ("LL-Null:", f"{self.llnull_:.6f}"),
            ("LLR p-value:", f"{self.llr_pvalue_:.4g}"),
            ("Deviance:", f"{self.deviance_:.6f}"),
        ]

    def _guard_inference(self, p: int) -> None:
        if self.inference and p > MAX_INFERENCE_PARAMS:
            raise ValueError(
                f"{p} parameters: standard errors need the dense {p} x {p} information "
                f"matrix ({8 * p * p / 2**30:.1f} GiB, O(p^3) to invert), above the limit "
                f"of {MAX_INFERENCE_PARAMS} parameters. Pass inference=False to fit the "
                "coefficients alone."
            )

    def _estimate(self, problem, family, mask, y, sw) -> Fit:
        """The solver's result, the covariance of theta (None without inference), the
        unidentified parameters and the solver's name."""
        start = self._initial(problem, family, mask, y, sw)
        theta = start.theta
        solver = self.solver
        if solver == "auto":
            solver = "newton" if mask.sum() <= self._newton_max_params else "lbfgs"
        if start.final:  # no maximum likelihood estimate to search for
            f, g, _, _ = problem.evaluate(theta)
            res = Result(theta, f, g, None, start.iterations, False)
            cov = np.full((theta.size,) * 2, np.nan) if self.inference else None
            return Fit(res, cov, np.zeros(theta.size, bool), solver)
        search = self._search(problem, theta) if solver == "lbfgs" else None
        # "auto" hands a slow L-BFGS over to Newton where Newton's steps are cheap next to
        # gradient passes (1000 classes x 3: three Hessians were 80% of a 13 s fit)
        cheap = mask.sum() <= NEWTON_FALLBACK_MAX_PARAMS
        res = solve(
            problem,
            theta,
            solver,
            int(self.max_iter),
            float(self.tol),
            search,
            fallback=self.solver == "auto" and cheap,
            started=start.iterations,
            hess0=start.hess,
            polish=bool(self.inference),
        )
        if not self.inference:
            return Fit(res, None, np.zeros(theta.size, bool), solver)
        H = res.hess
        if H is None:
            _, _, H, _ = problem.evaluate(res.theta, hess=True)
        cov, bad = gram_covariance(H)
        return Fit(res, cov, bad, solver)

    def _initial(self, problem, family, mask, y, sw) -> Start:
        if (
            self.warm_start
            and hasattr(self, "_W")
            and self._W.shape == mask.shape
            and np.array_equal(self._mask, mask)
        ):
            return Start(self._W[mask].copy())
        W = np.zeros(mask.shape)
        problem.target_sums = _target_sums(family, y, sw, problem.offset)
        W[:, 0] = family.initial_intercepts(problem.target_sums)
        return Start(W[mask])

    def _natural(self, theta, cov):
        return theta.copy(), cov

    def _search(self, problem, theta):
        return None

    def _names(self, mask):
        features = (
            list(map(str, self.feature_names_in_))
            if hasattr(self, "feature_names_in_")
            else [f"x{j}" for j in range(self.n_features_in_)]
        )
        cols = ["const"] + features
        prefixes = self._output_names()
        return [
            f"{prefixes[a]}{cols[j]}"
            for a in range(mask.shape[0])
            for j in range(mask.shape[1])
            if mask[a, j]
        ]

    def _output_names(self):
        return [""] * self._mask.shape[0]

    def cov_params(self) -> np.ndarray:
        """Covariance of ``params_``: the inverse observed information at the optimum
        (``cov_type="nonrobust"``), else the sandwich of ``cov_type``."""
        self._check_inference()
        return self._cov.copy()

    def _check_inference(self) -> None:
        self._check_is_fitted()
        if not hasattr(self, "_cov"):
            raise ValueError(
                f"This {type(self).__name__} was fitted with inference=False: "
                "refit with inference=True for standard errors"
            )

    def summary(self) -> str:
        """A text table of the model (log-likelihood, information criteria, the tests
        against the intercept-only model, the covariance type) and of the estimates
        (coef, std err, z, P>|z|, 95% interval)."""
        self._check_inference()
        lines = [
            ("Model:", type(self).__name__),
            ("Observations:", str(self.nobs_)),
            ("Parameters:", str(self.n_params_)),
            ("alpha:", f"{self.alpha:g}"),
            ("Log-likelihood:", f"{self.loglik_:.6f}"),
            ("AIC:", f"{self.aic_:.4f}"),
            ("BIC:", f"{self.bic_:.4f}"),
            *self._test_lines(),
            ("Covariance Type:", _COV_NAMES[self.cov_type]),
            ("Converged:", f"{self.converged_} ({self.n_iter_} iterations, {self.solver_})"),
        ]
        return summary_table(
            f"{type(self).__name__} results", self.param_names_, self.params_, self.bse_, lines
        )

    # -- prediction --------------------------------------------------------------

    def _map_chunks(self, name: str, X):
        """Method ``name`` on each chunk of rows of a Dask X: a Dask array."""
        self._check_is_fitted()
        X = self._check_X(X, reset=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # feature names: checked above
            probe = getattr(self, name)(np.zeros((1, X.shape[1])))
        return _chunks.map_rows_2d(functools.partial(_call, self, name), X, probe, token=name)

    def _linear(self, X) -> np.ndarray:
        self._check_is_fitted()
        X = self._check_X(X, reset=False)
        if is_array_api(X):  # on X's device; the (n, k) predictors come to the host
            return _arrays().linear(X, self._W)
        out = np.empty((X.shape[0], self._W.shape[0]))
        rows = max(1024, (1 << 22) // max(1, 8 * X.shape[1]))
        for s in range(0, X.shape[0], rows):
            Xb = float_block(X[s : s + rows])
            check_finite_block(Xb)
            out[s : s + rows] = predictor(Xb, self._W)
        return out

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags

        tags = Tags(
            estimator_type="classifier" if self._classifier else "regressor",
            target_tags=TargetTags(required=True),
        )
        if self._classifier:
            tags.classifier_tags = ClassifierTags(multi_class=self._multi_class)
        else:
            tags.regressor_tags = RegressorTags()
        return tags


class _Classifier(_LinearMLE):
    _classifier = True
    _multi_class = True

    def __init__(
        self,
        *,
        fit_intercept=True,
        alpha=0.0,
        tol=1e-8,
        max_iter=200,
        solver="auto",
        warm_start=False,
        class_weight=None,
        inference=True,
        cov_type="nonrobust",
        verbose=0,
    ):
        super().__init__(
            fit_intercept=fit_intercept,
            alpha=alpha,
            tol=tol,
            max_iter=max_iter,
            solver=solver,
            warm_start=warm_start,
            inference=inference,
            cov_type=cov_type,
            verbose=verbose,
        )
        self.class_weight = class_weight

    def _encode_y(self, y):
        """The index of each label in ``classes_`` (which it sets)."""
        if y.dtype.kind not in "fbiuUSO":
            raise ValueError(f"Unknown label type: y has dtype {y.dtype}")
        classes = np.unique(np.concatenate(reduce_rows(_labels, y)))
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in y; got 1 class "
                f"({classes[0]!r})"
            )
        self.classes_ = classes
        return map_rows(np.searchsorted, classes, y, dtype=np.intp)

    def _sample_weight(self, y, sw):
        n = y.shape[0]
        cw = self.class_weight
        if cw is None:
            return sw
        if isinstance(cw, str) and cw == "balanced":
            counts = np.sum(
                reduce_rows(functools.partial(_class_counts, k=self.classes_.size), y), axis=0
            )
            per_class = n / (self.classes_.size * np.maximum(counts, 1))
        elif isinstance(cw, dict):
            unknown = set(cw) - set(self.classes_.tolist())
            if unknown:
                raise ValueError(
                    f"class_weight has labels {sorted(unknown, key=str)} that "
                    f"are not classes of y {self.classes_.tolist()}"
                )
            per_class = np.array([float(cw.get(c, 1.0)) for c in self.classes_.tolist()])
            if not np.isfinite(per_class).all() or (per_class < 0).any():
                raise ValueError("class_weight values must be finite and >= 0")
        else:
            raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")
        sw = map_rows(_class_weighted, y, sw, dtype=np.float64, per_class=per_class)
        if sum(reduce_rows(np.sum, sw)) <= 0:
            raise ValueError("sample_weight * class_weight sums to 0")
        return sw

    @_rowwise
    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        self._check_is_fitted()
        return self.classes_[np.argmax(self._logits(X), axis=1)]

    @_rowwise
    def predict_log_proba(self, X) -> np.ndarray:
        """Log-probabilities of ``classes_``, shape (n_samples, n_classes)."""
        return log_softmax(self._logits(X), axis=1)

    @_rowwise
    def predict_proba(self, X) -> np.ndarray:
        """Probabilities of ``classes_``, shape (n_samples, n_classes)."""
        return np.exp(self.predict_log_proba(X))

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy (weighted by ``sample_weight``)."""
        y = np.asarray(y).reshape(-1)
        return float(np.average(self.predict(X) == y, weights=sample_weight))


class LogisticRegression(_Classifier):
    """Binary logistic regression by maximum likelihood (Bernoulli NLL, BCE with logits).

    Parameters
    ----------
    fit_intercept : bool, default True
    alpha : float, default 0
        L2 penalty ``alpha/2 * ||coef||^2`` added to the summed NLL (the intercept is
        never penalised); 0 is the pure MLE. scikit-learn's ``C`` is ``1 / alpha``.
    tol : float, default 1e-8
        Stop when ``max|gradient| <= tol * sum(sample_weight)`` in equilibrated
        coordinates (each coefficient times the root mean square of its column of X):
        the rule, the solver's steps and its singularity tests do not depend on the
        units of X or y. Newton's last step is taken at no cost, so coefficients end
        ~tol^2 from the optimum.
    max_iter : int, default 200
    solver : {'auto', 'lbfgs', 'newton'}, default 'auto'
        'auto' is Newton's method up to 20 parameters, L-BFGS above (then a Newton
        step with the Hessian that the standard errors need).
    inference : bool, default True
        Compute the covariance and standard errors (the dense information matrix:
        p^2 numbers and O(n p^2 + p^3) work for p parameters; refused above 5000
        parameters). False fits the coefficients alone, faster.
    cov_type : {'nonrobust', 'HC0', 'HC1', 'cluster'}, default 'nonrobust'
        The covariance behind ``bse_`` and ``cov_params()``: the inverse observed
        information, or the sandwich ``H^-1 (sum_i w_i s_i s_i^T) H^-1`` of the
        scores s_i (HC0), times n / (n - k) (HC1: n the sum of weights, k the number
        of parameters), or of the per-cluster sums of the scores (``cluster``: pass
        ``fit(..., groups=)``), times G / (G - 1) (n - 1) / (n - k) for G clusters.
        The scores' products are accumulated in the Hessian passes, by row blocks.
        statsmodels' HC1 for Logit, MNLogit, Poisson and GLM applies no correction
        (it equals its HC0); its OLS HC1 and every cluster covariance are as here.
    warm_start : bool, default False
        Start from the previous fit's coefficients.
    class_weight : dict, 'balanced' or None
        Multiplies each row's weight by the weight of its class.
    verbose : int, default 0
        1 prints each iteration (loss, gradient norm, step) to stderr.

    Attributes
    ----------
    classes_, coef_ (1, n_features), intercept_ (1,), n_iter_, n_features_in_,
    feature_names_in_, loglik_, aic_, bic_, params_ (intercept then coefficients),
    bse_ (their standard errors), param_names_, converged_, nobs_ (the sum of
    ``sample_weight``: weights are frequency weights, as statsmodels' ``freq_weights``;
    a fit with integer weights equals the fit on the rows repeated); the tests
    against the intercept-only model, as statsmodels' results: llnull_ (its
    log-likelihood), llr_ (2 (loglik_ - llnull_)), df_model_, llr_pvalue_ (chi^2 with
    df_model_ degrees of freedom), pseudo_r2_ (McFadden's 1 - loglik_ / llnull_),
    deviance_ (GLM's: -2 loglik_ for 0/1 classes).
    """

    _multi_class = False

    def _encode_y(self, y):
        codes = super()._encode_y(y)
        if self.classes_.size != 2:
            raise ValueError(
                "Only binary classification is supported. The type of the target is "
                f"multiclass ({self.classes_.size} classes): use SoftmaxRegression"
            )
        return codes.astype(np.float64)

    def _family(self, d):
        mask = np.ones((1, d + 1), bool)
        mask[0, 0] = bool(self.fit_intercept)
        return _families.Bernoulli(), mask

    def _set_outputs(self):
        self.coef_ = self._W[:, 1:].copy()
        self.intercept_ = self._W[:, 0].copy()

    @_rowwise
    def decision_function(self, X) -> np.ndarray:
        """The log-odds of ``classes_[1]``, shape (n_samples,)."""
        return self._linear(X)[:, 0]

    def _logits(self, X):
        z = self._linear(X)
        return np.hstack([np.zeros_like(z), z])


class SoftmaxRegression(_Classifier):
    """Multinomial logistic regression by maximum likelihood (softmax cross-entropy).

    Parameters are those of :class:`LogisticRegression`; 'auto' picks L-BFGS above
    20 parameters ((n_classes - 1) * (n_features + 1)).

    ``coef_`` (n_classes, n_features) and ``intercept_`` are centred over the classes,
    as scikit-learn's multinomial model; ``params_``, ``bse_`` and ``cov_params()``
    are the identified contrasts to the first class (statsmodels' MNLogit), in the
    order class 1 (intercept, coefficients), class 2, ...
    """

    def _encode_y(self, y):
        return super()._encode_y(y).astype(np.intp)

    def _family(self, d):
        k = self.classes_.size
        mask = np.ones((k, d + 1), bool)
        mask[0] = False
        mask[:, 0] &= bool(self.fit_intercept)
        return _families.Categorical(k), mask

    def _output_names(self):
        return [f"{c}: " for c in self.classes_]

    def _search(self, problem, theta):
        # L-BFGS in scikit-learn's symmetric parametrisation (every class free): the
        # contrasts to class 0 are correlated and take about twice the iterations.
        k = self.classes_.size
        mask = problem.mask.copy()
        mask[0] = mask[1]
        sym = problem.sibling(_families.Categorical(k, True), mask)

        def back(t):
            W = sym.unpack(t)
            return (W - W[0])[problem.mask]

        return sym, problem.unpack(theta)[mask], back

    def _set_outputs(self):
        W = self._W - self._W.mean(axis=0)
        self.coef_ = W[:, 1:].copy()
        self.intercept_ = W[:, 0].copy()

    @_rowwise
    def decision_function(self, X) -> np.ndarray:
        """Centred class scores, shape (n_samples, n_classes); for two classes the
        log-odds of ``classes_[1]``, shape (n_samples,), as scikit-learn's binary
        classifiers."""
        Z = self._linear(X)
        if Z.shape[1] == 2:
            return Z[:, 1] - Z[:, 0]
        return Z - Z.mean(axis=1, keepdims=True)

    def _logits(self, X):
        return self._linear(X)


class GaussianRegression(_LinearMLE):
    """Linear regression with Gaussian noise, variance included, by maximum likelihood.

    The mean is linear in X. With ``heteroscedastic=False`` the variance sigma^2 is
    one parameter (its MLE is RSS / n); with ``heteroscedastic=True`` log sigma^2 is a
    second linear model of X, fitted jointly through the Gaussian NLL.

    Standard errors follow the maximum-likelihood convention by default: sigma^2 =
    RSS / n and z-tests, so they are sqrt((n - p) / n) of OLS's; AIC/BIC count sigma^2
    as a parameter. ``variance="ols"`` gives statsmodels OLS's numbers instead.

    The homoscedastic model without penalty is fitted in closed form, in one pass:
    least squares from the Cholesky factor of the equilibrated Gram matrix of
    sqrt(w) [1, X, y] where that is accurate, else from a QR accumulated block by
    block (coefficients at Householder-QR accuracy on the NIST StRD sets). An exact
    fit (residuals at rounding level) gives sigma2_ = 0, standard errors 0 and
    loglik_ = inf, with a ConvergenceWarning.

    Parameters
    ----------
    heteroscedastic : bool, default False
    variance : {'ml', 'ols'}, default 'ml'
        'ml': sigma2_ = RSS / n (the MLE); 'ols': RSS / (n - p) and the standard
        errors of statsmodels OLS (homoscedastic, alpha=0 only). ``loglik_`` is the
        maximised log-likelihood either way.
    fit_intercept, alpha, tol, max_iter, solver, warm_start, inference, cov_type, verbose
        As in :class:`LogisticRegression`; ``alpha`` penalises the NLL, so for a
        homoscedastic model it equals scikit-learn Ridge's ``alpha / sigma^2``. The
        robust covariances of the mean's coefficients are those of statsmodels OLS
        (``fit(cov_type=...)``): k in their corrections counts the mean's parameters.

    Attributes
    ----------
    coef_ (n_features,), intercept_, sigma2_ (homoscedastic), var_coef_ and
    var_intercept_ (the log-variance model, heteroscedastic), params_ (mean model,
    then sigma2 or the log-variance model), bse_, loglik_, aic_, bic_, r2_ (statsmodels
    OLS's R^2: 1 - RSS / TSS, TSS centred with an intercept, uncentred without),
    deviance_ (the weighted RSS, as GLM's Gaussian deviance), df_model_, ...
    """

    def __init__(
        self,
        *,
        heteroscedastic=False,
        variance="ml",
        fit_intercept=True,
        alpha=0.0,
        tol=1e-8,
        max_iter=200,
        solver="auto",
        warm_start=False,
        inference=True,
        cov_type="nonrobust",
        verbose=0,
    ):
        super().__init__(
            fit_intercept=fit_intercept,
            alpha=alpha,
            tol=tol,
            max_iter=max_iter,
            solver=solver,
            warm_start=warm_start,
            inference=inference,
            cov_type=cov_type,
            verbose=verbose,
        )
        self.heteroscedastic = heteroscedastic
        self.variance = variance

    # Newton starts at the least-squares solution, where the mean model is already
    # at its optimum: a step or two, whatever the number of features.
    _newton_max_params = 500

    def _check_params(self) -> None:
        super()._check_params()
        if self.variance not in ("ml", "ols"):
            raise ValueError(
                f"variance={self.variance!r} is not valid: use 'ml' (sigma2 = "
                "RSS / n, the MLE) or 'ols' (RSS / (n - p), statsmodels OLS)"
            )
        if self.variance == "ols" and (self.heteroscedastic or self.alpha):
            raise ValueError(
                "variance='ols' is the least-squares convention: it needs "
                "heteroscedastic=False and alpha=0"
            )

    def _estimate(self, problem, family, mask, y, sw) -> Fit:
        if self.heteroscedastic or self.alpha or (self.warm_start and hasattr(self, "_W")):
            return super()._estimate(problem, family, mask, y, sw)
        # closed form: the least-squares coefficients and sigma2 = RSS / n, one pass
        beta, rss, R, bad = problem.least_squares()
        wsum = problem.weight_sum
        exact = not rss > self._exact_rss(family, y, sw, R.shape[0])
        if exact:
            warnings.warn(
                warning(
                    ConvergenceWarning,
                    "y is an exact linear function of X (the residuals are at rounding level): "
                    "the maximum likelihood variance is 0, the likelihood unbounded (loglik_ = "
                    "inf) and the standard errors 0.",
                ),
                stacklevel=4,
            )
        p = R.shape[0] - int(bad.sum())  # the rank of X (with the intercept)
        ml = 0.0 if exact else rss / wsum
        s2 = ml if self.variance == "ml" or exact else rss / max(wsum - p, 1e-300)
        theta = np.concatenate([beta[mask[0]], [math.log(s2) if s2 > 0 else -math.inf]])
        loglik = math.inf if exact else -0.5 * wsum * (math.log(2.0 * math.pi * ml) + 1.0)
        res = Result(theta, -loglik, np.zeros(theta.size), None, 1, True)
        if not self.inference:
            return Fit(res, None, np.zeros(theta.size, bool), "lstsq", loglik, rss)
        cov = np.zeros((theta.size, theta.size))
        if not exact:
            cov[:-1, :-1] = s2 * r_covariance(R)[0]
            # var(log sigma2): 2 / n for the MLE, 2 / (n - p) for the unbiased estimate
            cov[-1, -1] = 2.0 / (wsum if self.variance == "ml" else max(wsum - p, 1e-300))
        return Fit(res, cov, np.append(bad, False), "lstsq", loglik, rss)

    def _robust_k(self, mask) -> int:
        # statsmodels OLS counts the regressors, not sigma^2
        return int(mask.sum()) - (0 if self.heteroscedastic else 1)

    def _df_model(self, mask, bad) -> int:
        return int(mask[0].sum() - mask[0, 0] - bad[: int(mask[0].sum())].sum())

    def _model_sums(self, problem, family, y, sw, off, fit) -> dict:
        if fit.rss is not None:
            rss = fit.rss
        else:
            (rss,) = problem._pass(rss_sums, problem.unpack(fit.result.theta))
        sums = _target_sums(family, y, sw)
        if self.fit_intercept:
            mean = sums[1] / sums[0]
            tss = float(np.sum(reduce_rows(functools.partial(_weighted_ss, center=mean), y, sw)))
        else:
            tss = float(sums[2])
        return {"rss": float(rss), "tss": tss}

    def _set_tests(self, sums, mask, bad) -> None:
        self.df_model_ = self._df_model(mask, bad)
        self.deviance_ = sums["rss"]
        self.r2_ = 1.0 - sums["rss"] / sums["tss"] if sums["tss"] > 0 else float("nan")

    def _test_lines(self) -> list:
        return [("R-squared:", f"{self.r2_:.6f}"), ("Deviance (RSS):", f"{self.deviance_:.6g}")]

    @staticmethod
    def _exact_rss(family, y, sw, p) -> float:
        """The RSS at or below which y is an exact linear function of X: a QR of
        [X, y] leaves a residual of a few p eps |y| then (measured: 1e-16 |y| on NIST's
        Wampler1/2; their noisy twins 1e-3 |y| and more)."""
        return (8 * (p + 1) * EPS) ** 2 * _target_sums(family, y, sw)[2]

    def _initial(self, problem, family, mask, y, sw):
        if self.warm_start and hasattr(self, "_W"):
            return super()._initial(problem, family, mask, y, sw)
        beta, rss, R, _ = problem.least_squares()  # the first iteration
        W = np.zeros(mask.shape)
        W[0] = beta
        var = rss / problem.weight_sum
        floor = self._exact_rss(family, y, sw, R.shape[0])
        if not rss > floor:
            warnings.warn(
                warning(
                    ConvergenceWarning,
                    "y is an exact linear function of X (the residuals are at rounding level): "
                    "the maximum likelihood variance is 0 and the likelihood is unbounded. The "
                    "least-squares coefficients are returned, with sigma2 at the rounding level "
                    "and nan standard errors.",
                ),
                stacklevel=3,
            )
            W[1, 0] = math.log(max(floor / problem.weight_sum, 1e-300))
            return Start(W[mask], iterations=1, final=True)
        W[1, 0] = np.log(var)
        # the mean model's parameters in units of sigma, so that the solver's
        # coordinates are free of y's units
        family.out_scale = np.array([1.0 / math.sqrt(var), 1.0])
        hess = None
        if not self.heteroscedastic:
            # The Hessian of the NLL there, exactly: R^T R / var (+ the penalty) for the
            # mean, 0 between mean and variance (normal equations), sum(w) / 2 for log var.
            m = mask[0, 1:].sum()
            p = R.shape[0]
            H = np.zeros((p + 1, p + 1))
            H[:p, :p] = R.T @ R / var
            coef = np.arange(p - m, p)
            H[coef, coef] += float(self.alpha)
            H[p, p] = 0.5 * problem.weight_sum
            hess = H
        return Start(W[mask], iterations=1, hess=hess)

    def _encode_y(self, y):
        if y.shape[0] < 2:
            raise ValueError(
                f"GaussianRegression needs at least 2 samples, got {y.shape[0]} "
                "sample: the variance cannot be estimated from n_samples = 1"
            )
        if y.dtype.kind not in "biufO":
            raise ValueError(f"y must be numeric, got dtype {y.dtype}")
        y = y.astype(np.float64)
        if not all(reduce_rows(_all_finite, y)):
            raise ValueError("y contains NaN or infinity: remove or impute those values")
        return y

    def _family(self, d):
        mask = np.ones((2, d + 1), bool)
        mask[0, 0] = bool(self.fit_intercept)
        if not self.heteroscedastic:
            mask[1, 1:] = False
        return _families.Gaussian(), mask

    def _output_names(self):
        return ["", "log_var: "] if self.heteroscedastic else ["", ""]

    def _natural(self, theta, cov):
        if self.heteroscedastic:
            return theta.copy(), cov
        # report sigma^2 itself (delta method) rather than log sigma^2
        params = theta.copy()
        params[-1] = np.exp(theta[-1])
        J = np.ones_like(theta)
        J[-1] = params[-1]
        return params, cov * J[:, None] * J[None, :]

    def _names(self, mask):
        names = super()._names(mask)
        if not self.heteroscedastic:
            names[-1] = "sigma2"
        return names

    def _set_outputs(self):
        self.coef_ = self._W[0, 1:].copy()
        self.intercept_ = float(self._W[0, 0])
        if self.heteroscedastic:
            self.var_coef_ = self._W[1, 1:].copy()
            self.var_intercept_ = float(self._W[1, 0])
        else:
            self.sigma2_ = float(np.exp(self._W[1, 0]))

    @_rowwise
    def predict(self, X) -> np.ndarray:
        """The predicted mean of each row."""
        return self._linear(X)[:, 0]

    @_rowwise
    def predict_var(self, X) -> np.ndarray:
        """The predicted variance sigma^2(x) of each row."""
        return np.exp(self._linear(X)[:, 1])

    def score(self, X, y, sample_weight=None) -> float:
        """The coefficient of determination R^2 of the mean prediction."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        resid = np.average((y - self.predict(X)) ** 2, weights=sample_weight)
        total = np.average((y - np.average(y, weights=sample_weight)) ** 2, weights=sample_weight)
        return float(1.0 - resid / total) if total > 0 else float("nan")


class PoissonRegression(_LinearMLE):
    """Poisson regression (log link) by maximum likelihood: counts y >= 0 with mean
    ``mu = exposure * exp(offset + intercept + X coef)``.

    The NLL of a row is ``mu - y log(mu) + log(y!)``, minimised in one fused pass over
    X per evaluation (``log(y!)``, a constant, is summed once: ``loglik_`` is the full
    Poisson log-likelihood, as statsmodels reports). y need not be integer (as in
    statsmodels and scikit-learn: quasi-likelihood for non-negative rates).

    Parameters
    ----------
    fit_intercept, alpha, tol, max_iter, solver, warm_start, inference, cov_type, verbose
        As in :class:`LogisticRegression`; ``alpha`` penalises the summed NLL, so it is
        scikit-learn ``PoissonRegressor``'s ``alpha`` times the sum of the weights.

    Attributes
    ----------
    coef_ (n_features,), intercept_, params_ (intercept then coefficients), bse_,
    loglik_, aic_, bic_, llnull_ (the intercept-only model, with the same exposure and
    offset), llr_, llr_pvalue_, pseudo_r2_, deviance_ (GLM's Poisson deviance), nobs_,
    n_iter_, converged_, ...
    """

    def fit(self, X, y, sample_weight=None, exposure=None, offset=None, groups=None):
        """
        Fit by penalised maximum likelihood.

        Parameters
        ----------
        X, y, sample_weight, groups
            As in :meth:`LogisticRegression.fit`; y: non-negative counts (or rates).
        exposure : array_like or Dask array of shape (n_samples,), optional
            Positive; the mean is proportional to it (``log(exposure)`` is added to
            the linear predictor, as statsmodels' ``exposure``).
        offset : array_like or Dask array of shape (n_samples,), optional
            Added to the linear predictor with coefficient 1.

        Returns
        -------
        self
        """
        state = dict(self.__dict__)
        try:
            return self._fit(X, y, sample_weight, groups, exposure, offset)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(state)
            raise

    @staticmethod
    def _offset(n, exposure, offset):
        off = None if offset is None else _real_rows(offset, "offset", n)
        if exposure is not None:
            e = _real_rows(exposure, "exposure", n)
            if not all(reduce_rows(_positive, e)):
                raise ValueError("exposure must be > 0 in every row")
            log_e = map_rows(np.log, e, dtype=np.float64)
            off = log_e if off is None else off + log_e
        return off

    def _encode_y(self, y):
        if y.dtype.kind not in "biufO":
            raise ValueError(f"y must be numeric (counts), got dtype {y.dtype}")
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "y must be numeric (counts): it has values that are not numbers"
            ) from None
        if not all(reduce_rows(_all_finite, y)):
            raise ValueError("y contains NaN or infinity: remove or impute those values")
        if not all(reduce_rows(_non_negative, y)):
            raise ValueError("y has negative values: Poisson regression needs counts y >= 0")
        return y

    def _family(self, d):
        mask = np.ones((1, d + 1), bool)
        mask[0, 0] = bool(self.fit_intercept)
        return _families.Poisson(), mask

    def _set_outputs(self):
        self.coef_ = self._W[0, 1:].copy()
        self.intercept_ = float(self._W[0, 0])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags

    @_rowwise
    def _log_mean(self, X) -> np.ndarray:
        return self._linear(X)[:, 0]

    def predict(self, X, exposure=None, offset=None) -> np.ndarray:
        """The predicted mean ``exposure * exp(offset + intercept + X coef)`` of each
        row (a Dask array for a Dask X), as statsmodels' ``predict(exog, exposure=,
        offset=)``: without them, the mean at exposure 1 and offset 0."""
        eta = self._log_mean(X)
        n = eta.shape[0]
        if offset is not None:
            eta = eta + _real_rows(offset, "offset", n)
        if exposure is not None:
            e = _real_rows(exposure, "exposure", n)
            if not all(reduce_rows(_positive, e)):
                raise ValueError("exposure must be > 0 in every row")
            eta = eta + np.log(e)
        with np.errstate(over="ignore"):
            return np.exp(eta)

    def score(self, X, y, sample_weight=None) -> float:
        """D^2, the fraction of the Poisson deviance explained (scikit-learn
        ``PoissonRegressor.score``): 1 - D(y, mu) / D(y, mean(y))."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        mu = np.asarray(self.predict(X))
        w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, float)

        def dev(m):
            return float(w @ (2.0 * (_families._xlogy(y, y / m) - (y - m))))

        null = dev(np.full_like(y, np.average(y, weights=w)))
        return 1.0 - dev(mu) / null if null > 0 else float("nan")


def _non_negative(a) -> bool:
    return bool((a >= 0).all())


_LinearMLE.fit.__doc__ = _FIT_DOC
