"""scikit-learn conventions without importing scikit-learn.

``get_params``/``set_params``, the fitted-input bookkeeping (``n_features_in_``,
``feature_names_in_``) and the input checks, with scikit-learn's messages, so the
estimators pass its ``check_estimator`` while fastmle's run-time dependencies
stay NumPy and Numba. Nothing here copies X: blocks of rows are converted one at
a time by the solver.

Dask arrays (``_distributed``) are checked without being computed: the checks of
values (labels, weights, NaN) run chunk by chunk on the cluster through
:func:`reduce_rows` and :func:`map_rows`, which take NumPy arrays as one chunk.
"""

from __future__ import annotations

import inspect
import sys
import warnings

import numpy as np

from .._kinds import is_array_api, is_dask
from ._chunks import check_X, map_chunks, reduce_chunks
from ._namespace import check_X as check_array_api


class ConvergenceWarning(UserWarning):
    """The solver stopped before the optimum (``max_iter``, or no MLE exists)."""


class DataConversionWarning(UserWarning):
    """An input was converted to the shape or type the estimator needs."""


def warning(cls: type, message: str) -> Warning:
    """``cls(message)``, also an instance of scikit-learn's class of the same name
    when scikit-learn is loaded, so that filters on either class catch it (fastmle
    never imports scikit-learn itself)."""
    sk = getattr(sys.modules.get("sklearn.exceptions"), cls.__name__, None)
    if sk is None:
        return cls(message)
    if sk not in _BOTH:
        _BOTH[sk] = type(cls.__name__, (cls, sk), {"__module__": cls.__module__})
    return _BOTH[sk](message)


_BOTH: dict = {}


def reduce_rows(fn, *arrays) -> list:
    """``[fn(*arrays)]`` for NumPy arrays (or None); for Dask arrays chunked alike, fn
    of each chunk, computed on the cluster, in chunk order."""
    if any(is_dask(a) for a in arrays):
        return reduce_chunks(fn, *arrays)
    return [fn(*arrays)]


def map_rows(fn, *arrays, dtype, **kwargs):
    """``fn(*arrays, **kwargs)``, lazily chunk by chunk for Dask arrays (of ``dtype``)."""
    if any(is_dask(a) for a in arrays):
        return map_chunks(fn, *arrays, dtype=dtype, **kwargs)
    return fn(*arrays, **kwargs)


class BaseEstimator:
    """Parameters are the ``__init__`` arguments, stored unchanged."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {type(self).__name__}: "
                    f"valid parameters are {valid}"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = [
            f"{k}={v!r}"
            for k, v in self.get_params().items()
            if not (v is defaults.get(k) or _same(v, defaults.get(k)))
        ]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_iter_")

    def _check_is_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise _not_fitted_error()(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    # -- input checks ------------------------------------------------------------

    def _check_X(self, X, reset: bool) -> np.ndarray:
        """X as a 2-D numeric ndarray (no copy for ndarray/memmap input), or a Dask
        array chunked by rows."""
        names = _feature_names(X)
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):
            raise TypeError("sparse input is not supported: pass a dense array (X.toarray())")
        if is_dask(X):
            X = check_X(X)
        elif is_array_api(X):  # fitted where it lives (models/_arrays)
            X = check_array_api(X)
        elif type(X).__module__.startswith("dask"):
            raise TypeError(
                f"X is a {type(X).__name__}: pass a Dask array "
                "(X.to_dask_array(lengths=True)) or a NumPy array"
            )
        else:
            X = np.asarray(X)
        if isinstance(X, np.ndarray) and X.dtype.kind == "c":
            raise ValueError("Complex data not supported: pass real values")
        if isinstance(X, np.ndarray) and X.dtype.kind not in "biuf":
            X = X.astype(np.float64)  # a TypeError/ValueError names the bad value
        if X.ndim != 2:
            raise ValueError(
                f"Expected 2D array, got {X.ndim}D array instead. Reshape your data either "
                "using X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it "
                "contains a single sample"
            )
        if X.shape[0] < 1:
            raise ValueError(
                f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required."
            )
        if X.shape[1] < 1:
            raise ValueError(
                f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
            )
        if reset:
            self.n_features_in_ = X.shape[1]
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            self._check_features(X, names)
        return X

    def _check_features(self, X: np.ndarray, names) -> None:
        cls = type(self).__name__
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is None:
            warnings.warn(
                f"X has feature names, but {cls} was fitted without feature names",
                UserWarning,
                stacklevel=4,
            )
        elif names is None and fitted is not None:
            warnings.warn(
                f"X does not have valid feature names, but {cls} was fitted with feature names",
                UserWarning,
                stacklevel=4,
            )
        elif names is not None and not np.array_equal(names, fitted):
            raise ValueError(
                "The feature names should match those that were passed during fit: "
                f"got {list(names)}, fitted with {list(fitted)}"
            )
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {cls} is expecting {self.n_features_in_} "
                "features as input"
            )

    def _check_y(self, y, n: int) -> np.ndarray:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        if not is_dask(y):
            y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                warning(
                    DataConversionWarning,
                    "A column-vector y was passed when a 1d array was expected. Please change "
                    "the shape of y to (n_samples,), for example using ravel().",
                ),
                stacklevel=4,
            )
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y must be 1-dimensional, got shape {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"X and y have inconsistent numbers of samples: {n} and {y.shape[0]}")
        return y

    def _check_sample_weight(self, sample_weight, n: int) -> tuple:
        """``(sample_weight as float64 or None, its sum)``, checked (n when None)."""
        if sample_weight is None:
            return None, float(n)
        sw = per_row(sample_weight, "sample_weight", n)
        parts = np.array(reduce_rows(_weight_sums, sw))
        if not parts[:, 0].all():
            raise ValueError("sample_weight contains NaN or infinity")
        if parts[:, 1].any():
            raise ValueError("sample_weight has negative values: weights must be >= 0")
        if parts[:, 2].sum() <= 0:
            raise ValueError(
                "sample_weight sums to zero (all weights are zero): at least one "
                "sample needs a positive weight"
            )
        return sw, float(parts[:, 2].sum())


def check_rows(a, name: str, n: int) -> None:
    """A per-row argument (sample_weight, exposure, offset, groups) has shape (n,)."""
    if a.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},), one value per row of X; {name} has shape {a.shape}"
        )


def per_row(a, name: str, n: int):
    """A per-row number as float64 (NumPy, or Dask lazily), a scalar repeated n times;
    shape checked, values not."""
    a = a.astype(np.float64) if is_dask(a) else np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(n, float(a))
    check_rows(a, name, n)
    return a


def _weight_sums(sw) -> tuple:
    """(all finite, any negative, sum) of sample weights."""
    return bool(np.isfinite(sw).all()), bool((sw < 0).any()), float(sw.sum())


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def _feature_names(X):
    cols = getattr(X, "columns", None)
    if cols is None:
        return None
    names = np.asarray(cols, dtype=object)
    if len(names) and all(isinstance(c, str) for c in names):
        return names
    return None


def _not_fitted_error():
    try:  # scikit-learn's class when it is already loaded, so its helpers recognise it
        import sys

        return sys.modules["sklearn.exceptions"].NotFittedError
    except (KeyError, AttributeError):
        return NotFittedError


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit``."""


def check_finite_block(Xb: np.ndarray, what: str = "X") -> None:
    if not np.isfinite(Xb).all():
        raise ValueError(f"{what} contains NaN or infinity: remove or impute those values")
