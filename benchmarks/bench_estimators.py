"""asv benchmarks of fastmle's estimators against scikit-learn: fit times.

Skipped (``setup`` raises NotImplementedError) for builds without
``fastmle.LogisticRegression``, and the scikit-learn ratios when scikit-learn is
not installed. Both sides fit unpenalised models with an intercept on the same
data: fastmle ``X(fit_intercept=True, alpha=0.0)`` against scikit-learn
``LogisticRegression(C=np.inf, tol=1e-10)`` (binary, and multinomial for 10
classes; a tight tolerance so that both seek the same optimum, as
``benchmarks/fits.py`` does), ``LinearRegression`` and ``PoissonRegressor(alpha=0,
solver="lbfgs", tol=1e-10)``. fastmle's fit time
includes its standard errors; scikit-learn computes none.
"""

from __future__ import annotations

import time

import numpy as np

import fastmle

from . import data

N, D, CLASSES = 2 * 10**3 if data.SMOKE else 2 * 10**5, 20, 10
MODELS = ("LogisticRegression", "SoftmaxRegression", "GaussianRegression", "PoissonRegression")


def _problem(model: str, seed: int = 0):
    """X (N x D, float64) and targets drawn from a model with random coefficients."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    if model == "LogisticRegression":
        p = 1 / (1 + np.exp(-(X @ rng.standard_normal(D) * 0.5 + 0.2)))
        return X, (rng.random(N) < p).astype(np.int64)
    if model == "SoftmaxRegression":
        z = X @ (rng.standard_normal((D, CLASSES)) * 0.3)
        g = rng.gumbel(size=z.shape)  # argmax of logits + Gumbel noise: a softmax draw
        return X, np.argmax(z + g, axis=1)
    if model == "PoissonRegression":
        return X, rng.poisson(np.exp(0.5 + X @ rng.standard_normal(D) * 0.1)).astype(float)
    return X, X @ rng.standard_normal(D) + 1.0 + rng.standard_normal(N)


def _fastmle(model: str):
    if not hasattr(fastmle, "LogisticRegression") or not hasattr(fastmle, model):
        raise NotImplementedError(f"this build has no fastmle.{model}")
    return getattr(fastmle, model)(fit_intercept=True, alpha=0.0)


def _sklearn(model: str):
    try:
        from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor
    except ImportError:
        raise NotImplementedError("scikit-learn is not installed") from None
    if model == "GaussianRegression":
        return LinearRegression()
    if model == "PoissonRegression":
        return PoissonRegressor(alpha=0.0, solver="lbfgs", tol=1e-10, max_iter=1000)
    return LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)


def _fit_seconds(make, X, y, runs=3):
    best = float("inf")
    for _ in range(runs):
        est = make()
        t0 = time.perf_counter()
        est.fit(X, y)
        best = min(best, time.perf_counter() - t0)
    return best


class _Estimator:
    """Set-up shared by the estimator benchmarks: the data, one small warm-up fit."""

    params = (list(MODELS),)
    param_names = ("model",)
    timeout = 300

    def setup(self, model):
        _fastmle(model)
        self.X, self.y = _problem(model)
        _fastmle(model).fit(self.X[:1000], self.y[:1000])  # compile / load


class Fit(_Estimator):
    """Fit time of each fastmle estimator on N x D data."""

    def time_fit(self, model):
        _fastmle(model).fit(self.X, self.y)


class FitVsSklearn(_Estimator):
    """How many times faster than scikit-learn fastmle fits (min of 3 fits each)."""

    def setup(self, model):
        _sklearn(model)
        super().setup(model)

    def track_speedup_vs_sklearn(self, model):
        ours = _fit_seconds(lambda: _fastmle(model), self.X, self.y)
        theirs = _fit_seconds(lambda: _sklearn(model), self.X, self.y)
        return theirs / ours

    track_speedup_vs_sklearn.unit = "x faster than scikit-learn"
