"""Tests of the maximum-likelihood estimators in fastmle.models.

The references are statsmodels (unpenalised MLE and its observed-information
standard errors) and scikit-learn (penalised fits), both test-only dependencies
skipped where missing, and independent float64 NumPy implementations of each
penalised negative log-likelihood and its gradient written here (``objective`` and
``gradient``), which fastmle's kernels are never used for.
"""

from __future__ import annotations

import functools
import math
import sys
import tracemalloc
import warnings

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastmle as fm
from fastmle.models import NotFittedError as FmNotFittedError

LOG_2PI = math.log(2.0 * math.pi)
SOLVERS = ("newton", "lbfgs")


# --- data ----------------------------------------------------------------------------


def _expit(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(Z):
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


@functools.cache
def logistic_data(seed=0, n=3000, d=4):
    """Well-conditioned binary data; true coefficients kept away from 0 so that a
    relative comparison of the estimates is meaningful."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    beta = rng.choice([-1.0, 1.0], d) * rng.uniform(0.4, 1.0, d)
    y = (rng.random(n) < _expit(0.4 + X @ beta)).astype(np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


@functools.cache
def softmax_data(seed=0, n=3000, d=4, k=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    # contrasts to class 0 (statsmodels' parameters) kept away from 0
    B = rng.choice([-1.0, 1.0], (k, d + 1)) * rng.uniform(0.4, 0.9, (k, d + 1))
    B[0] = 0.0
    Z = B[:, 0] + X @ B[:, 1:].T
    y = np.argmax(Z + rng.gumbel(size=Z.shape), axis=1).astype(np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


@functools.cache
def gaussian_data(seed=0, n=3000, d=4, heteroscedastic=False):
    """y = 1.5 + X beta + noise; log var(noise) = gamma0 + X gamma when heteroscedastic."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    beta = rng.choice([-1.0, 1.0], d) * rng.uniform(0.5, 2.0, d)
    gamma = np.zeros(d + 1)
    gamma[0] = math.log(0.5)
    if heteroscedastic:
        gamma[1:] = rng.choice([-1.0, 1.0], d) * rng.uniform(0.3, 0.6, d)
    log_var = gamma[0] + X @ gamma[1:]
    y = 1.5 + X @ beta + np.exp(0.5 * log_var) * rng.standard_normal(n)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y, np.concatenate([[1.5], beta]), gamma


# --- an independent float64 implementation of each penalised NLL ------------------------

KINDS = ("logistic", "softmax", "gaussian", "gaussian_het")


def make_model(kind, **kw):
    if kind == "logistic":
        return fm.LogisticRegression(**kw)
    if kind == "softmax":
        return fm.SoftmaxRegression(**kw)
    return fm.GaussianRegression(heteroscedastic=(kind == "gaussian_het"), **kw)


def make_data(kind, seed=0, n=3000, d=4, k=3):
    if kind == "logistic":
        return logistic_data(seed, n, d)
    if kind == "softmax":
        return softmax_data(seed, n, d, k)
    X, y, _, _ = gaussian_data(seed, n, d, kind == "gaussian_het")
    return X, y


def free_mask(kind, d, k, fit_intercept):
    """Which entries of W (outputs x [intercept, coefficients]) are parameters, in
    the documented order of params_ (row by row)."""
    if kind == "logistic":
        mask = np.ones((1, d + 1), bool)
    elif kind == "softmax":
        mask = np.ones((k, d + 1), bool)
        mask[0] = False  # contrasts to class 0
    else:
        mask = np.ones((2, d + 1), bool)
        if kind == "gaussian":
            mask[1, 1:] = False  # one variance parameter
    mask[:, 0] &= fit_intercept
    if kind.startswith("gaussian"):
        mask[1, 0] = True  # the variance intercept is always free
    return mask


def theta_from_params(kind, params):
    """params_ -> the free entries of W (the homoscedastic model reports sigma^2 where
    W holds log sigma^2)."""
    theta = np.array(params, dtype=np.float64)
    if kind == "gaussian":
        theta[-1] = math.log(theta[-1])
    return theta


def _onehot(y, k):
    Y = np.zeros((y.size, k))
    Y[np.arange(y.size), y] = 1.0
    return Y


def objective(kind, theta, X, y, alpha, mask, sw=None):
    """The penalised NLL sum_i w_i NLL_i + alpha/2 * penalty, from scratch."""
    X = np.asarray(X, dtype=np.float64)
    W = np.zeros(mask.shape)
    W[mask] = theta
    Z = W[:, 0] + X @ W[:, 1:].T
    w = np.ones(X.shape[0]) if sw is None else np.asarray(sw, dtype=np.float64)
    C = W[:, 1:]
    if kind == "logistic":
        z = Z[:, 0]
        rows = np.logaddexp(0.0, z) - y * z
        pen = np.sum(C**2)
    elif kind == "softmax":
        m = Z.max(axis=1)
        lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
        rows = lse - Z[np.arange(y.size), y]
        pen = np.sum((C - C.mean(axis=0)) ** 2)  # centred coefficients
    else:
        r = y - Z[:, 0]
        rows = 0.5 * (LOG_2PI + Z[:, 1] + r * r * np.exp(-Z[:, 1]))
        pen = np.sum(C**2)
    return float(np.sum(w * rows)) + 0.5 * alpha * pen


def gradient(kind, theta, X, y, alpha, mask, sw=None):
    """The analytic gradient of ``objective`` with respect to theta."""
    X = np.asarray(X, dtype=np.float64)
    W = np.zeros(mask.shape)
    W[mask] = theta
    Z = W[:, 0] + X @ W[:, 1:].T
    w = np.ones(X.shape[0]) if sw is None else np.asarray(sw, dtype=np.float64)
    if kind == "logistic":
        R = (_expit(Z[:, 0]) - y)[:, None]
    elif kind == "softmax":
        R = _softmax(Z) - _onehot(y, mask.shape[0])
    else:
        r = y - Z[:, 0]
        iv = np.exp(-Z[:, 1])
        R = np.stack([-r * iv, 0.5 * (1.0 - r * r * iv)], axis=1)
    R = R * w[:, None]
    G = np.concatenate([R.sum(axis=0)[:, None], R.T @ X], axis=1)
    C = W[:, 1:]
    G[:, 1:] += alpha * ((C - C.mean(axis=0)) if kind == "softmax" else C)
    return G[mask]


def fd_gradient(f, theta, rel=1e-6):
    g = np.empty_like(theta)
    for j in range(theta.size):
        h = rel * max(1.0, abs(theta[j]))
        e = np.zeros_like(theta)
        e[j] = h
        g[j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def fd_hessian(f, theta, rel=1e-4):
    p = theta.size
    H = np.empty((p, p))
    h = rel * np.maximum(1.0, np.abs(theta))
    for a in range(p):
        for b in range(a + 1):
            ea = np.zeros(p)
            eb = np.zeros(p)
            ea[a] = h[a]
            eb[b] = h[b]
            H[a, b] = H[b, a] = (
                f(theta + ea + eb) - f(theta + ea - eb) - f(theta - ea + eb) + f(theta - ea - eb)
            ) / (4 * h[a] * h[b])
    return H


def fitted_gradient(kind, model, X, y, sw=None):
    """The penalised gradient (``gradient``) at the model's params_."""
    d = np.asarray(X).shape[1]
    k = model.classes_.size if kind == "softmax" else 1
    codes = (
        np.unique(y, return_inverse=True)[1].reshape(-1)
        if kind in ("logistic", "softmax")
        else np.asarray(y, dtype=np.float64)
    )
    mask = free_mask(kind, d, k, model.fit_intercept)
    theta = theta_from_params(kind, model.params_)
    return gradient(kind, theta, X, codes, float(model.alpha), mask, sw)


def _not_fitted(excinfo):
    # scikit-learn's NotFittedError when sklearn is loaded (so its helpers recognise
    # it), fastmle's otherwise: both are ValueError and AttributeError subclasses
    err = excinfo.value
    assert type(err).__name__ == "NotFittedError"
    assert isinstance(err, ValueError) and isinstance(err, AttributeError)


# --- 1. statsmodels and scikit-learn ------------------------------------------------------

RTOL = 1e-6


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("solver", SOLVERS)
def test_logistic_matches_statsmodels_logit(solver, fit_intercept):
    sm = pytest.importorskip("statsmodels.api")
    X, y = logistic_data(0, 3000, 4)
    exog = sm.add_constant(X) if fit_intercept else X
    ref = sm.Logit(y, exog).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    m = fm.LogisticRegression(solver=solver, fit_intercept=fit_intercept).fit(X, y)
    assert m.converged_ and m.solver_ == solver
    np.testing.assert_allclose(m.params_, ref.params, rtol=RTOL)
    np.testing.assert_allclose(m.bse_, ref.bse, rtol=RTOL)
    np.testing.assert_allclose(
        m.cov_params(), ref.cov_params(), rtol=10 * RTOL, atol=RTOL * np.abs(ref.cov_params()).max()
    )
    np.testing.assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    np.testing.assert_allclose(m.aic_, ref.aic, rtol=1e-10)
    np.testing.assert_allclose(m.bic_, ref.bic, rtol=1e-10)
    assert m.n_params_ == exog.shape[1] and m.nobs_ == 3000
    np.testing.assert_allclose(m.intercept_, [ref.params[0] if fit_intercept else 0.0])
    np.testing.assert_allclose(m.coef_[0], ref.params[-4:], rtol=RTOL)
    names = (["const"] if fit_intercept else []) + [f"x{j}" for j in range(4)]
    assert m.param_names_ == names


@pytest.mark.parametrize("k,fit_intercept", [(3, True), (4, True), (3, False)])
@pytest.mark.parametrize("solver", SOLVERS)
def test_softmax_matches_statsmodels_mnlogit(solver, k, fit_intercept):
    sm = pytest.importorskip("statsmodels.api")
    X, y = softmax_data(1, 3000, 4, k)
    exog = sm.add_constant(X) if fit_intercept else X
    ref = sm.MNLogit(y, exog).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    m = fm.SoftmaxRegression(solver=solver, fit_intercept=fit_intercept).fit(X, y)
    assert m.converged_
    params = np.asarray(ref.params)  # (d + 1, k - 1)
    np.testing.assert_allclose(m.params_, params.T.ravel(), rtol=RTOL)
    np.testing.assert_allclose(m.bse_, np.asarray(ref.bse).T.ravel(), rtol=RTOL)
    np.testing.assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    np.testing.assert_allclose(m.aic_, ref.aic, rtol=1e-10)
    np.testing.assert_allclose(m.bic_, ref.bic, rtol=1e-10)
    # coef_/intercept_ are the same model, centred over the classes
    W = np.zeros((k, exog.shape[1]))
    W[1:] = params.T
    W -= W.mean(axis=0)
    np.testing.assert_allclose(m.coef_, W[:, -4:], rtol=RTOL, atol=1e-9)
    np.testing.assert_allclose(m.intercept_, W[:, 0] if fit_intercept else 0.0, atol=1e-7)
    assert len(m.param_names_) == m.params_.size == (k - 1) * exog.shape[1]
    assert m.param_names_[0] == ("1: const" if fit_intercept else "1: x0")


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("solver", SOLVERS)
def test_gaussian_matches_statsmodels_ols(solver, fit_intercept):
    sm = pytest.importorskip("statsmodels.api")
    X, y, _, _ = gaussian_data(2, 3000, 5)
    n = X.shape[0]
    exog = sm.add_constant(X) if fit_intercept else X
    p = exog.shape[1]
    ref = sm.OLS(y, exog).fit()
    m = fm.GaussianRegression(solver=solver, fit_intercept=fit_intercept).fit(X, y)
    assert m.converged_
    sigma2 = ref.ssr / n
    np.testing.assert_allclose(m.params_[:-1], ref.params, rtol=RTOL)
    np.testing.assert_allclose(m.params_[-1], sigma2, rtol=RTOL)
    np.testing.assert_allclose(m.sigma2_, sigma2, rtol=RTOL)
    # MLE standard errors: sigma^2 = RSS / n instead of RSS / (n - p)
    np.testing.assert_allclose(m.bse_[:-1], ref.bse * math.sqrt((n - p) / n), rtol=RTOL)
    np.testing.assert_allclose(m.bse_[-1], sigma2 * math.sqrt(2.0 / n), rtol=RTOL)
    np.testing.assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    # sigma^2 counts as a parameter (statsmodels' OLS aic does not count it)
    assert m.n_params_ == p + 1
    np.testing.assert_allclose(m.aic_, 2 * (p + 1) - 2 * ref.llf, rtol=1e-10)
    np.testing.assert_allclose(m.bic_, (p + 1) * math.log(n) - 2 * ref.llf, rtol=1e-10)
    np.testing.assert_allclose(m.coef_, ref.params[-5:], rtol=RTOL)
    assert m.param_names_[-1] == "sigma2"


@pytest.mark.parametrize("alpha", [0.0, 3.0, 50.0])
def test_logistic_matches_sklearn(alpha):
    sk = pytest.importorskip("sklearn.linear_model")
    X, y = logistic_data(3, 2000, 4)
    ref = sk.LogisticRegression(
        C=1.0 / alpha if alpha else np.inf, tol=1e-12, max_iter=1000, solver="newton-cholesky"
    ).fit(X, y)
    for solver in SOLVERS:
        m = fm.LogisticRegression(alpha=alpha, solver=solver).fit(X, y)
        np.testing.assert_allclose(m.coef_, ref.coef_, rtol=RTOL)
        np.testing.assert_allclose(m.intercept_, ref.intercept_, rtol=RTOL)
        assert m.coef_.shape == (1, 4) and m.intercept_.shape == (1,)


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("alpha", [2.0, 40.0])
def test_softmax_matches_sklearn_multinomial(alpha, k):
    sk = pytest.importorskip("sklearn.linear_model")
    X, y = softmax_data(4, 2000, 4, k)
    ref = sk.LogisticRegression(
        C=1.0 / alpha, tol=1e-12, max_iter=1000, solver="newton-cholesky"
    ).fit(X, y)
    ref_intercept = ref.intercept_ - ref.intercept_.mean()
    for solver in SOLVERS:
        m = fm.SoftmaxRegression(alpha=alpha, solver=solver).fit(X, y)
        assert m.coef_.shape == (k, 4) and m.intercept_.shape == (k,)
        np.testing.assert_allclose(m.coef_.sum(axis=0), 0.0, atol=1e-12)
        np.testing.assert_allclose(m.intercept_.sum(), 0.0, atol=1e-12)
        # relative to the largest coefficient: a penalised one can be ~1e-4, and the
        # solvers stop at |gradient| <= tol * n, not at a relative accuracy per entry
        np.testing.assert_allclose(
            m.coef_, ref.coef_, rtol=RTOL, atol=RTOL * np.abs(ref.coef_).max()
        )
        np.testing.assert_allclose(
            m.intercept_, ref_intercept, rtol=RTOL, atol=RTOL * np.abs(ref_intercept).max()
        )


def test_gaussian_matches_sklearn_linear_and_ridge():
    sk = pytest.importorskip("sklearn.linear_model")
    X, y, _, _ = gaussian_data(5, 2000, 4)
    ref = sk.LinearRegression().fit(X, y)
    m = fm.GaussianRegression().fit(X, y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=RTOL)
    np.testing.assert_allclose(m.intercept_, ref.intercept_, rtol=RTOL)
    # penalised: the mean model is Ridge with alpha * sigma^2 (documented)
    m = fm.GaussianRegression(alpha=400.0).fit(X, y)
    ridge = sk.Ridge(alpha=400.0 * m.sigma2_, tol=1e-14).fit(X, y)
    np.testing.assert_allclose(m.coef_, ridge.coef_, rtol=RTOL)
    np.testing.assert_allclose(m.intercept_, ridge.intercept_, rtol=RTOL)
    np.testing.assert_allclose(m.sigma2_, np.mean((y - ridge.predict(X)) ** 2), rtol=RTOL)


# --- 2. heteroscedastic Gaussian --------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_heteroscedastic_gaussian(solver):
    X, y, beta, gamma = gaussian_data(6, 5000, 2, heteroscedastic=True)
    n, d = X.shape
    m = fm.GaussianRegression(heteroscedastic=True, solver=solver).fit(X, y)
    assert m.converged_ and m.params_.size == 2 * (d + 1)
    # the truth, roughly (standard errors ~ sqrt(2 / n) = 0.02)
    np.testing.assert_allclose(m.coef_, beta[1:], atol=0.1)
    np.testing.assert_allclose(m.var_coef_, gamma[1:], atol=0.15)
    np.testing.assert_allclose(m.var_intercept_, gamma[0], atol=0.15)
    assert np.all(np.abs(m.params_ - np.concatenate([beta, gamma])) < 5 * m.bse_)
    np.testing.assert_allclose(
        m.predict_var(X[:5]), np.exp(m.var_intercept_ + X[:5] @ m.var_coef_), rtol=1e-12
    )
    assert m.param_names_ == ["const", "x0", "x1", "log_var: const", "log_var: x0", "log_var: x1"]

    mask = free_mask("gaussian_het", d, 1, True)

    def f(theta):
        return objective("gaussian_het", theta, X, y, 0.0, mask)

    theta = m.params_.copy()
    np.testing.assert_allclose(-f(theta), m.loglik_, rtol=1e-12)
    g = fd_gradient(f, theta)
    assert np.max(np.abs(g)) <= 2e-8 * n, g  # the solver stops at 1e-8 n; FD noise ~1e-10 n
    # the finite differences can see a gradient: a nudge of 1e-4 is far from 0
    assert np.max(np.abs(fd_gradient(f, theta + 1e-4))) > 1e-4 * n
    H = fd_hessian(f, theta)
    np.testing.assert_allclose(m.bse_, np.sqrt(np.diag(np.linalg.inv(H))), rtol=1e-5)
    np.testing.assert_allclose(
        m.cov_params(), np.linalg.inv(H), rtol=1e-4, atol=1e-5 * np.abs(m.cov_params()).max()
    )


# --- 3. weights -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_integer_sample_weight_is_repetition(kind):
    X, y = make_data(kind, 7, 600, 3)
    rng = np.random.default_rng(7)
    w = rng.integers(0, 4, X.shape[0])  # 0 drops the row
    Xr, yr = np.repeat(X, w, axis=0), np.repeat(y, w)
    a = make_model(kind, solver="newton", tol=1e-10).fit(X, y, sample_weight=w)
    b = make_model(kind, solver="newton", tol=1e-10).fit(Xr, yr)
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.bse_, b.bse_, rtol=1e-7)
    np.testing.assert_allclose(a.loglik_, b.loglik_, rtol=1e-10)
    # and the weighted NLL is the objective that was minimised
    g = fitted_gradient(kind, a, X, y, sw=w)
    assert np.max(np.abs(g)) <= 1e-8 * w.sum()


@pytest.mark.parametrize("model", [fm.LogisticRegression, fm.SoftmaxRegression])
def test_class_weight_equals_sample_weight(model):
    X, y = (logistic_data if model is fm.LogisticRegression else softmax_data)(8, 800, 3)
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    k = classes.size
    balanced = y.size / (k * counts)
    a = model(class_weight="balanced").fit(X, y)
    b = model().fit(X, y, sample_weight=balanced[codes])
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-12)
    np.testing.assert_allclose(a.bse_, b.bse_, rtol=1e-12)
    np.testing.assert_allclose(a.loglik_, b.loglik_, rtol=1e-12)
    # a dict (classes not listed get weight 1), combined with sample_weight
    cw = {classes[0]: 3.0, classes[-1]: 0.5}
    per_class = np.array([cw.get(c, 1.0) for c in classes])
    sw = np.random.default_rng(8).uniform(0.5, 2.0, y.size)
    a = model(class_weight=cw).fit(X, y, sample_weight=sw)
    b = model().fit(X, y, sample_weight=sw * per_class[codes])
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-12)
    np.testing.assert_allclose(a.loglik_, b.loglik_, rtol=1e-12)
    assert not np.allclose(a.params_, model().fit(X, y, sample_weight=sw).params_, rtol=1e-3)


# --- 4. input dtypes, layouts and memory ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_float32_and_layouts(kind):
    X, y = make_data(kind, 9, 2500, 4)
    X32 = X.astype(np.float32)
    ref = make_model(kind).fit(X32.astype(np.float64), y)
    m32 = make_model(kind).fit(X32, y)
    np.testing.assert_allclose(m32.params_, ref.params_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(m32.bse_, ref.bse_, rtol=1e-6)
    np.testing.assert_allclose(
        m32.predict(X32), ref.predict(X32.astype(np.float64)), rtol=1e-6, atol=1e-9
    )

    ref = make_model(kind).fit(X, y)
    wide = np.empty((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    for Xv in (np.asfortranarray(X), wide[:, ::2], X.tolist()):
        m = make_model(kind).fit(Xv, y)
        np.testing.assert_allclose(m.params_, ref.params_, rtol=1e-10)
        np.testing.assert_allclose(m.bse_, ref.bse_, rtol=1e-10)
    # strided rows
    m = make_model(kind).fit(np.repeat(X, 2, axis=0)[::2], y)
    np.testing.assert_allclose(m.params_, ref.params_, rtol=1e-10)

    Xi = np.round(3 * X).astype(np.int32)
    ref = make_model(kind).fit(Xi.astype(np.float64), y)
    for Xv in (Xi, Xi.astype(np.int64), Xi.astype(np.int8)):
        m = make_model(kind).fit(Xv, y)
        np.testing.assert_allclose(m.params_, ref.params_, rtol=1e-10)
        np.testing.assert_allclose(m.predict(Xv), ref.predict(Xi.astype(np.float64)), rtol=1e-10)


@pytest.fixture(scope="module")
def big_memmap(tmp_path_factory):
    """A read-only float64 memmap of 100 000 x 40 (32 MB).

    40 columns rather than 20 so that the O(n) arrays of a fit (label encoding with
    np.unique makes ~5 vectors of n float64, the solver ~1 more) are small next to
    X: then 25% of X bounds everything, and any whole copy of X (even a float32
    one, 50%) fails it. Measured: ~13% of X for LogisticRegression, ~8% for
    GaussianRegression.
    """
    n, d = 100_000, 40
    path = tmp_path_factory.mktemp("memmap") / "X.npy"
    rng = np.random.default_rng(10)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, d))
    for s in range(0, n, 25_000):
        X[s : s + 25_000] = rng.standard_normal((25_000, d))
    X.flush()
    del X
    X = np.load(path, mmap_mode="r")
    beta = rng.uniform(-0.3, 0.3, d)
    z = np.empty(n)
    for s in range(0, n, 25_000):
        z[s : s + 25_000] = X[s : s + 25_000] @ beta
    y_bin = (rng.random(n) < _expit(0.2 + z)).astype(np.int64)
    y_real = 1.0 + z + rng.standard_normal(n)
    return X, y_bin, y_real


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["logistic", "gaussian"])
def test_memmap_is_read_in_place(big_memmap, kind):
    X, y_bin, y_real = big_memmap
    y = y_bin if kind == "logistic" else y_real
    assert isinstance(X, np.memmap) and not X.flags.writeable
    make_model(kind).fit(X[:3000], y[:3000])  # compiled / loaded from cache outside the trace
    # the bound is meaningful: a copy of X alone exceeds it
    bound = 0.25 * X.nbytes
    assert _peak_bytes(lambda: np.array(X, dtype=np.float32)) > bound
    m = make_model(kind, solver="newton")
    peak = _peak_bytes(lambda: m.fit(X, y))
    assert m.converged_
    assert peak < bound, f"fit allocated {peak / 1e6:.1f} MB for a {X.nbytes / 1e6:.0f} MB X"
    # same result as an in-memory copy of a slice
    part = make_model(kind).fit(np.array(X[:5000]), y[:5000])
    np.testing.assert_array_equal(make_model(kind).fit(X[:5000], y[:5000]).params_, part.params_)
    # prediction reads the memmap block by block too
    p = m.predict(X)
    assert p.shape == (X.shape[0],)


def test_memmap_fortran_and_float32(tmp_path):
    X, y = logistic_data(11, 4000, 5)
    ref = fm.LogisticRegression().fit(X, y)
    for dtype, fortran in ((np.float64, True), (np.float32, False)):
        path = tmp_path / f"{np.dtype(dtype).name}{fortran}.npy"
        mm = np.lib.format.open_memmap(
            path, mode="w+", dtype=dtype, shape=X.shape, fortran_order=fortran
        )
        mm[:] = X
        mm.flush()
        del mm
        mm = np.load(path, mmap_mode="r")
        m = fm.LogisticRegression().fit(mm, y)
        np.testing.assert_allclose(
            m.params_, ref.params_, rtol=1e-10 if dtype is np.float64 else 1e-5
        )


@pytest.mark.parametrize("make", [fm.LogisticRegression, fm.PoissonRegression])
def test_memmap_written_with_nan_during_the_fit_raises(tmp_path, monkeypatch, make):
    """Issue 17 item 14: X is checked for NaN on the first pass only; a memmap rewritten
    with NaN during the fit gave NaN (or stale) parameters without an error."""
    from fastmle.models import _solver

    X, y = logistic_data(12, 4000, 5)
    path = tmp_path / "X.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=X.shape)
    mm[:] = X
    mm.flush()
    Xr = np.load(path, mmap_mode="r")
    calls = []
    evaluate = _solver.Problem.evaluate

    def spoiling(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after the first pass: another process writes NaN
            mm[100:200] = np.nan
            mm.flush()
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(_solver.Problem, "evaluate", spoiling)
    model = make()
    with pytest.raises(ValueError, match="X .changed during the fit.* NaN or infinity"):
        model.fit(Xr, y)
    assert not hasattr(model, "params_")


# --- 5. bad input and hard cases ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_input(kind):
    X, y = make_data(kind, 12, 300, 3)
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb[137, 1] = bad
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            make_model(kind).fit(Xb, y)
        m = make_model(kind).fit(X, y)
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            m.predict(Xb)
        Xb32 = Xb.astype(np.float32)
        with pytest.raises(ValueError, match="X contains NaN or infinity"):
            make_model(kind).fit(Xb32, y)
    yb = np.asarray(y, dtype=np.float64).copy()
    yb[5] = np.nan
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        make_model(kind).fit(X, yb)
    yb[5] = np.inf
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        make_model(kind).fit(X, yb)


def test_non_finite_in_a_later_block():
    X, y = logistic_data(12, 3000, 3)
    from fastmle.models import _solver

    rows = max(1024, (_solver.BLOCK_BYTES // (3 * 8)) // 1024 * 1024)
    Xb = np.vstack([X] * (rows // 3000 + 2))
    yb = np.concatenate([y] * (rows // 3000 + 2))
    Xb[-1, 0] = np.nan
    assert Xb.shape[0] > rows
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        fm.LogisticRegression().fit(Xb, yb)


@pytest.mark.parametrize("model", [fm.LogisticRegression, fm.SoftmaxRegression])
def test_bad_labels(model):
    X, _ = logistic_data(13, 200, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        model().fit(X, np.ones(200))
    with pytest.raises(ValueError, match="at least 2 classes"):
        model().fit(X, ["a"] * 200)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        model().fit(X, np.linspace(0, 1, 200))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model().fit(X, np.arange(199) % 2)
    with pytest.raises(ValueError, match="y must be 1-dimensional"):
        model().fit(X, np.zeros((200, 2)))


@pytest.mark.parametrize("het", [False, True])
def test_gaussian_exact_fit_warns(het):
    X, _, beta, _ = gaussian_data(13, 200, 3)
    y = beta[0] + X @ beta[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NumPy warning leaks
        with pytest.warns(fm.ConvergenceWarning, match="exact linear function of X"):
            m = fm.GaussianRegression(heteroscedastic=het).fit(X, y)
    np.testing.assert_allclose(m.coef_, beta[1:], rtol=1e-10)
    if het:  # no MLE of the variance model: the least-squares start, flagged
        assert not m.converged_ and np.isnan(m.bse_).all()
    else:  # closed form: sigma2 = 0, exact coefficients, an unbounded likelihood
        assert m.converged_ and m.sigma2_ == 0.0 and m.loglik_ == np.inf
        assert (m.bse_ == 0.0).all()


def test_logistic_rejects_three_classes():
    X, y = softmax_data(13, 300, 3, 3)
    with pytest.raises(ValueError, match="(?i)binary.*3 classes.*SoftmaxRegression"):
        fm.LogisticRegression().fit(X, y)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_sample_weight(kind):
    X, y = make_data(kind, 14, 200, 3)
    w = np.ones(200)
    w[3] = -0.5
    with pytest.raises(ValueError, match="negative"):
        make_model(kind).fit(X, y, sample_weight=w)
    with pytest.raises(ValueError, match="sums to (0|zero)"):
        make_model(kind).fit(X, y, sample_weight=np.zeros(200))
    with pytest.raises(ValueError, match="sums to (0|zero)"):
        make_model(kind).fit(X, y, sample_weight=np.r_[np.zeros(199), 1e-320] * 0)
    with pytest.raises(ValueError, match="sample_weight has shape"):
        make_model(kind).fit(X, y, sample_weight=np.ones(199))
    w[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        make_model(kind).fit(X, y, sample_weight=w)


def test_bad_class_weight():
    X, y = logistic_data(14, 200, 3)
    with pytest.raises(ValueError, match="not classes of y"):
        fm.LogisticRegression(class_weight={0: 1.0, 5: 2.0}).fit(X, y)
    with pytest.raises(ValueError, match="class_weight must be"):
        fm.LogisticRegression(class_weight="sometimes").fit(X, y)
    with pytest.raises(ValueError, match="finite and >= 0"):
        fm.LogisticRegression(class_weight={0: -1.0}).fit(X, y)
    with pytest.raises(ValueError, match="sums to (0|zero)"):
        fm.LogisticRegression(class_weight={0: 0.0, 1: 0.0}).fit(X, y)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_checks(kind):
    X, y = make_data(kind, 15, 200, 3)
    unfitted = make_model(kind)
    methods = ["predict", "cov_params", "summary"]
    if kind in ("logistic", "softmax"):
        methods += ["predict_proba", "predict_log_proba", "decision_function"]
    for name in methods:
        with pytest.raises(Exception, match="not fitted yet") as excinfo:
            meth = getattr(unfitted, name)
            meth() if name in ("cov_params", "summary") else meth(X)
        _not_fitted(excinfo)
    assert issubclass(FmNotFittedError, ValueError) and issubclass(FmNotFittedError, AttributeError)
    m = make_model(kind).fit(X, y)
    cls = type(m).__name__
    with pytest.raises(ValueError, match=f"X has 4 features, but {cls} is expecting 3"):
        m.predict(np.ones((5, 4)))
    with pytest.raises(ValueError, match="Expected 2D array"):
        m.predict(X[0])
    with pytest.raises(ValueError, match="Expected 2D array"):
        make_model(kind).fit(X[:, 0], y)


@pytest.mark.parametrize(
    "param,value,message",
    [
        ("solver", "sgd", "solver='sgd' is not valid"),
        ("solver", None, "is not valid"),
        ("alpha", -1.0, "alpha must be a finite number >= 0"),
        ("alpha", np.nan, "alpha must be a finite number >= 0"),
        ("alpha", np.inf, "alpha must be a finite number >= 0"),
        ("alpha", "1", "alpha must be"),
        ("tol", 0.0, "tol must be a number > 0"),
        ("tol", -1e-3, "tol must be a number > 0"),
        ("tol", np.nan, "tol must be a number > 0"),
        ("max_iter", 0, "max_iter must be an integer >= 1"),
        ("max_iter", 2.5, "max_iter must be an integer >= 1"),
        ("max_iter", -3, "max_iter must be an integer >= 1"),
    ],
)
@pytest.mark.parametrize("kind", ["logistic", "softmax", "gaussian"])
def test_invalid_parameters(kind, param, value, message):
    X, y = make_data(kind, 16, 100, 2)
    m = make_model(kind, **{param: value})
    with pytest.raises(ValueError, match=message):
        m.fit(X, y)
    assert not hasattr(m, "n_iter_")  # nothing fitted
    with pytest.raises(ValueError, match="Invalid parameter"):
        m.set_params(lambda_=1.0)


def _separable(k):
    rng = np.random.default_rng(17)
    X = rng.standard_normal((400, 2))
    score = X @ np.array([1.0, -2.0])
    if k == 2:
        y = (score > 0).astype(int)
    else:
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))
    return X, y


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("k", [2, 3])
def test_separable_data_warns(k, solver):
    X, y = _separable(k)
    model = fm.LogisticRegression if k == 2 else fm.SoftmaxRegression
    with pytest.warns(fm.ConvergenceWarning, match="(?s)separable.*alpha") as rec:
        m = model(solver=solver).fit(X, y)
    assert any("separable" in str(w.message) for w in rec)
    assert not m.converged_
    assert np.all(np.isfinite(m.coef_)) and np.all(np.isfinite(m.intercept_))
    assert np.array_equal(m.predict(X), y)  # the iterate separates them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = model(solver=solver, alpha=1.0).fit(X, y)
    assert m.converged_ and np.all(np.isfinite(m.bse_))
    g = fitted_gradient("logistic" if k == 2 else "softmax", m, X, y)
    assert np.max(np.abs(g)) <= 1e-8 * X.shape[0]


def _reduced(kind, X, y, drop):
    return make_model(kind, solver="newton").fit(np.delete(X, drop, axis=1), y)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["logistic", "softmax", "gaussian"])
def test_duplicated_column(kind, solver):
    X, y = make_data(kind, 18, 1500, 3)
    Xd = np.column_stack([X, X[:, 1]])  # x3 == x1
    with pytest.warns(RuntimeWarning, match="singular"):
        m = make_model(kind, solver=solver).fit(Xd, y)
    red = _reduced(kind, Xd, y, 3)
    np.testing.assert_allclose(m.loglik_, red.loglik_, rtol=1e-9)
    assert np.all(np.isfinite(m.params_))
    names = m.param_names_
    hit = np.array([n.endswith(("x1", "x3")) for n in names])
    assert np.all(np.isnan(m.bse_[hit]))
    assert np.all(np.isfinite(m.bse_[~hit]))
    # the unaffected parameters: the reduced model's estimates and standard errors
    keep = [names.index(n) for n in red.param_names_ if not n.endswith("x1")]
    red_keep = [i for i, n in enumerate(red.param_names_) if not n.endswith("x1")]
    np.testing.assert_allclose(m.params_[keep], red.params_[red_keep], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(m.bse_[keep], red.bse_[red_keep], rtol=1e-6)
    # the two copies share the reduced coefficient
    if kind != "softmax":
        c = np.ravel(m.coef_)
        np.testing.assert_allclose(c[1] + c[3], np.ravel(red.coef_)[1], rtol=1e-6)


@pytest.mark.parametrize("kind", ["logistic", "gaussian"])
def test_constant_column_with_intercept(kind):
    X, y = make_data(kind, 19, 1500, 2)
    Xc = np.column_stack([X, np.full(X.shape[0], 3.0)])
    with pytest.warns(RuntimeWarning, match="information matrix is singular"):
        m = make_model(kind).fit(Xc, y)
    names = m.param_names_
    hit = np.array([n in ("const", "x2") for n in names])
    assert np.all(np.isnan(m.bse_[hit])) and np.all(np.isfinite(m.bse_[~hit]))
    red = _reduced(kind, Xc, y, 2)
    np.testing.assert_allclose(m.loglik_, red.loglik_, rtol=1e-9)
    np.testing.assert_allclose(m.bse_[~hit], red.bse_[1:], rtol=1e-6)
    np.testing.assert_allclose(m.predict(Xc), red.predict(X), rtol=1e-6, atol=1e-9)
    # without an intercept the constant column is just the intercept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = make_model(kind, fit_intercept=False).fit(Xc, y)
    assert np.all(np.isfinite(m.bse_))
    np.testing.assert_allclose(m.loglik_, red.loglik_, rtol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", KINDS)
def test_max_iter_reached_warns(kind, solver):
    X, y = make_data(kind, 20, 2000, 4)
    X = X * np.array([1.0, 30.0, 0.1, 5.0])  # badly scaled: not one step
    # (alpha > 0: the homoscedastic model starts at least squares, its unpenalised optimum)
    alpha = 1.0 if kind == "gaussian" else 0.0
    with pytest.warns(fm.ConvergenceWarning, match="did not converge in max_iter=1"):
        m = make_model(kind, solver=solver, max_iter=1, alpha=alpha).fit(X, y)
    assert not m.converged_ and m.n_iter_ >= 1
    assert np.all(np.isfinite(m.params_))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = make_model(kind, solver=solver, max_iter=1000, alpha=alpha).fit(X, y)
    assert m.converged_


@pytest.mark.parametrize("kind", ["logistic", "softmax", "gaussian", "gaussian_het"])
def test_n_iter_never_exceeds_max_iter(kind):
    X, y = make_data(kind, 20, 2000, 4)
    alpha = 1.0 if kind == "gaussian" else 0.0
    for solver in SOLVERS:
        for max_iter in (1, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", fm.ConvergenceWarning)
                m = make_model(kind, solver=solver, max_iter=max_iter, alpha=alpha).fit(
                    X * np.array([1.0, 30.0, 0.1, 5.0]), y
                )
            assert not m.converged_
            assert m.n_iter_ <= max_iter, (solver, max_iter, m.n_iter_)


def test_lbfgs_reaches_a_tight_tol():
    X, y = softmax_data(1, 3000, 4, 3)
    ref = fm.SoftmaxRegression(solver="newton", tol=1e-10).fit(X, y)
    assert ref.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("error", fm.ConvergenceWarning)
        m = fm.SoftmaxRegression(solver="lbfgs", tol=1e-10).fit(X, y)
    assert m.converged_
    np.testing.assert_allclose(m.params_, ref.params_, rtol=1e-9)


# --- 6. warm start and verbosity --------------------------------------------------------------


def _warm_start_cases():
    for kind in KINDS:
        for solver in SOLVERS:
            yield pytest.param(kind, solver, id=f"{kind}-{solver}")


@pytest.mark.parametrize("kind,solver", list(_warm_start_cases()))
def test_warm_start(kind, solver):
    X, y = make_data(kind, 21, 2000, 4)
    # (alpha > 0: the homoscedastic model starts at least squares, its unpenalised optimum)
    alpha = 2.0 if kind == "gaussian" else 0.0
    m = make_model(kind, solver=solver, warm_start=True, alpha=alpha).fit(X, y)
    first = m.n_iter_
    assert first >= 3
    params = m.params_.copy()
    m.fit(X, y)
    np.testing.assert_allclose(m.params_, params, rtol=1e-6, atol=1e-9)
    cold = make_model(kind, solver=solver, alpha=alpha).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == first  # no warm start: the same fit again
    # a warm start with a different number of features starts afresh
    m2 = make_model(kind, solver=solver, warm_start=True, alpha=alpha).fit(X, y)
    m2.fit(X[:, :3], y)
    assert m2.coef_.shape[-1] == 3 and m2.converged_
    assert m.n_iter_ <= 1


@pytest.mark.parametrize("solver", SOLVERS)
def test_verbose(capsys, solver):
    X, y = logistic_data(22, 1000, 3)
    m = fm.LogisticRegression(solver=solver, verbose=0).fit(X, y)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    m = fm.LogisticRegression(solver=solver, verbose=1).fit(X, y)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("iter")]
    # one line per iteration (L-BFGS's closing Newton step is counted but not printed)
    assert m.n_iter_ >= 2 and m.n_iter_ - 1 <= len(lines) <= m.n_iter_
    assert all("loss" in ln and "grad" in ln for ln in lines)
    assert "LogisticRegression" in out + err  # the closing summary line


# --- 7. predictions ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_classifier_predictions(kind):
    X, y = make_data(kind, 23, 1500, 4, k=4)
    m = make_model(kind).fit(X, y)
    P = m.predict_proba(X)
    assert P.shape == (X.shape[0], m.classes_.size)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    D = m.decision_function(X)
    logits = np.column_stack([np.zeros_like(D), D]) if kind == "logistic" else D
    np.testing.assert_allclose(P, _softmax(logits), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(m.predict_log_proba(X), np.log(P), rtol=1e-10, atol=1e-12)
    # the decision function is the linear model
    W = np.column_stack([m.intercept_, m.coef_])
    np.testing.assert_allclose(D, np.squeeze(W[:, 0] + X @ W[:, 1:].T), rtol=1e-10, atol=1e-12)
    pred = m.predict(X)
    np.testing.assert_array_equal(pred, m.classes_[np.argmax(P, axis=1)])
    metrics = pytest.importorskip("sklearn.metrics")
    assert m.score(X, y) == pytest.approx(metrics.accuracy_score(y, pred), abs=1e-15)
    w = np.random.default_rng(23).uniform(0, 2, y.size)
    assert m.score(X, y, sample_weight=w) == pytest.approx(
        metrics.accuracy_score(y, pred, sample_weight=w), rel=1e-12
    )


def test_regressor_predictions():
    X, y, _, _ = gaussian_data(24, 1500, 4)
    m = fm.GaussianRegression().fit(X, y)
    np.testing.assert_allclose(m.predict(X), m.intercept_ + X @ m.coef_, rtol=1e-12)
    np.testing.assert_allclose(m.predict_var(X), m.sigma2_, rtol=1e-12)
    metrics = pytest.importorskip("sklearn.metrics")
    assert m.score(X, y) == pytest.approx(metrics.r2_score(y, m.predict(X)), rel=1e-12)
    w = np.random.default_rng(24).uniform(0, 2, y.size)
    assert m.score(X, y, sample_weight=w) == pytest.approx(
        metrics.r2_score(y, m.predict(X), sample_weight=w), rel=1e-12
    )


def test_two_class_softmax_is_logistic():
    X, y = logistic_data(29, 1500, 3)
    a = fm.SoftmaxRegression().fit(X, y)
    b = fm.LogisticRegression().fit(X, y)
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-9)
    np.testing.assert_allclose(a.bse_, b.bse_, rtol=1e-9)
    np.testing.assert_allclose(a.loglik_, b.loglik_, rtol=1e-12)
    # scikit-learn's binary convention: the log-odds of classes_[1]
    np.testing.assert_allclose(
        a.decision_function(X), b.decision_function(X), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-9)
    np.testing.assert_allclose(a.coef_[1] - a.coef_[0], b.coef_[0], rtol=1e-9)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_string_labels(kind):
    X, y = make_data(kind, 25, 800, 3)
    names = np.array(["ant", "bee", "cat"])[: np.unique(y).size]
    ys = names[y]
    a = make_model(kind).fit(X, ys)
    b = make_model(kind).fit(X, y)
    np.testing.assert_array_equal(a.classes_, names)
    np.testing.assert_array_equal(a.params_, b.params_)
    np.testing.assert_array_equal(a.predict(X), names[b.predict(X)])
    assert a.score(X, ys) == b.score(X, y)
    # a label list, and class_weight keyed by the labels
    c = make_model(kind, class_weight={"bee": 2.0}).fit(X, ys.tolist())
    d = make_model(kind, class_weight={1: 2.0}).fit(X, y)
    np.testing.assert_array_equal(c.params_, d.params_)
    if kind == "softmax":
        assert a.param_names_[0] == "bee: const"


@pytest.mark.parametrize("kind", KINDS)
def test_dataframe_feature_names(kind):
    pd = pytest.importorskip("pandas")
    X, y = make_data(kind, 26, 600, 3)
    cols = ["age", "height", "income"]
    df = pd.DataFrame(X, columns=cols)
    m = make_model(kind).fit(df, pd.Series(y))
    np.testing.assert_array_equal(m.feature_names_in_, cols)
    assert m.n_features_in_ == 3
    text = m.summary()
    for c in cols:
        assert c in text
    assert all(any(n.endswith(c) for n in m.param_names_) for c in cols)
    for n in m.param_names_:
        assert n in text
    ref = make_model(kind).fit(X, y)
    np.testing.assert_array_equal(m.params_, ref.params_)
    assert not hasattr(ref, "feature_names_in_")
    np.testing.assert_array_equal(m.predict(df), ref.predict(X))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        m.predict(X)
    with pytest.raises(ValueError, match="feature names should match"):
        m.predict(df[cols[::-1]])


def test_summary_contents():
    X, y = logistic_data(27, 800, 2)
    m = fm.LogisticRegression().fit(X, y)
    text = m.summary()
    for s in (
        "LogisticRegression",
        "Log-likelihood",
        f"{m.loglik_:.6f}",
        "AIC",
        "BIC",
        "std err",
        "P>|z|",
        "const",
        "x0",
        "x1",
        "Converged:",
        "800",
    ):
        assert s in text, s
    row = next(ln for ln in text.splitlines() if ln.startswith("x1 "))
    assert f"{m.params_[2]:.5g}" in row and f"{m.bse_[2]:.4g}" in row


# --- 8. thread count --------------------------------------------------------------------------


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("kind", KINDS)
def test_thread_count_does_not_change_results(kind):
    X, y = make_data(kind, 28, 6000, 4)  # several 1024-row chunks
    w = np.random.default_rng(28).uniform(0.5, 2.0, X.shape[0])
    saved = numba.get_num_threads()
    fits = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            fits.append(
                [
                    make_model(kind, solver=s, alpha=0.5).fit(X, y, sample_weight=sw)
                    for s in SOLVERS
                    for sw in (None, w)
                ]
            )
    finally:
        numba.set_num_threads(saved)
    for a, b in zip(*fits):
        assert np.array_equal(a.params_, b.params_)
        assert np.array_equal(a.bse_, b.bse_)
        assert a.loglik_ == b.loglik_ and a.n_iter_ == b.n_iter_
        assert np.array_equal(a.predict(X[:3000]), b.predict(X[:3000]))


# --- 9. the gradient at the optimum, on random problems ---------------------------------------


@settings(
    max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    kind=st.sampled_from(KINDS),
    n=st.integers(50, 300),
    d=st.integers(1, 5),
    k=st.integers(2, 4),
    alpha=st.sampled_from([0.0, 0.5]),
    fit_intercept=st.booleans(),
    solver=st.sampled_from(SOLVERS),
    weighted=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_gradient_is_zero_at_the_fit(kind, n, d, k, alpha, fit_intercept, solver, weighted, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    if kind == "logistic":
        # a weak signal: label noise keeps the classes overlapping (the MLE exists)
        y = (rng.random(n) < _expit(0.3 + X @ rng.uniform(-0.5, 0.5, d))).astype(int)
        assume(np.unique(y).size == 2)
    elif kind == "softmax":
        Z = rng.uniform(-0.3, 0.3, k) + X @ rng.uniform(-0.5, 0.5, (k, d)).T
        y = np.argmax(Z + rng.gumbel(size=Z.shape), axis=1)
        assume(np.unique(y).size == k)
    else:
        mean = 1.0 + X @ rng.uniform(-1, 1, d)
        log_var = -0.5 + (X @ rng.uniform(-0.3, 0.3, d) if kind == "gaussian_het" else 0.0)
        y = mean + np.exp(0.5 * log_var) * rng.standard_normal(n)
    sw = rng.uniform(0.2, 3.0, n) if weighted else None
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m = make_model(kind, alpha=alpha, fit_intercept=fit_intercept, solver=solver).fit(
            X, y, sample_weight=sw
        )
    # separable draws have no MLE (rare with this much label noise)
    assume(not any("separable" in str(w.message) for w in rec))
    assert not rec, [str(w.message) for w in rec]
    assert m.converged_
    total = n if sw is None else sw.sum()
    g = fitted_gradient(kind, m, X, y, sw)
    assert np.max(np.abs(g)) <= 2e-8 * total, (np.max(np.abs(g)) / total, m.n_iter_)
    # and the reported log-likelihood is that of params_
    mask = free_mask(kind, d, k if kind == "softmax" else 1, fit_intercept)
    codes = (
        np.unique(y, return_inverse=True)[1].reshape(-1) if kind in ("logistic", "softmax") else y
    )
    theta = theta_from_params(kind, m.params_)
    np.testing.assert_allclose(
        m.loglik_, -objective(kind, theta, X, codes, 0.0, mask, sw), rtol=1e-10
    )


def test_verbose_progress_bar_on_a_terminal(monkeypatch, capsys):
    from fastmle.models import _solver

    X, y = make_data("logistic", 23, 5000, 3)
    monkeypatch.setattr(_solver, "BLOCK_BYTES", 1)  # the smallest blocks: 1024 rows
    monkeypatch.setattr(_solver, "PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    fm.LogisticRegression(verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "100.0%" in err and "[" + "#" * 30 + "]" in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # piped: no bar
    fm.LogisticRegression(verbose=1).fit(X, y)
    assert "%" not in capsys.readouterr().err


# --- 10. BLAS threads, failed refits, fits without inference, the solver's best point ----------

_BLAS_FIT = """
import sys, numpy as np, fastmle as fm
sys.path.insert(0, {tests!r})
from test_models import make_data, make_model
out = []
for kind in ("logistic", "softmax", "gaussian"):
    X, y = make_data(kind, 31, 20_000, 30)
    m = make_model(kind, solver="newton").fit(X, y)
    out.append(np.concatenate([m.params_, m.bse_]))
np.save(sys.argv[1], np.concatenate(out))
"""


def test_blas_thread_count_does_not_change_results(tmp_path):
    # the Hessian and Gram blocks go through BLAS: the bits must not depend on how many
    # threads BLAS would use (OPENBLAS_NUM_THREADS is read once, at load)
    import os
    import subprocess

    script = _BLAS_FIT.format(tests=os.path.dirname(__file__))
    runs = []
    for threads in ("1", "2"):
        path = tmp_path / f"blas{threads}.npy"
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        runs.append(np.load(path))
    assert np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize("kind", ["logistic", "softmax", "gaussian"])
def test_failed_refit_leaves_the_model_unchanged(kind):
    X, y = make_data(kind, 32, 600, 6)
    m = make_model(kind).fit(X, y)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(m).items()}
    expected = m.predict(X[:5])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        m.fit(np.ones((2000, 1)), y[:10])
    assert vars(m).keys() == before.keys()
    for k, v in before.items():
        assert (
            np.array_equal(getattr(m, k), v)
            if isinstance(v, np.ndarray)
            else getattr(m, k) == v or (v != v)
        ), k
    np.testing.assert_array_equal(m.predict(X[:5]), expected)
    with pytest.raises(ValueError, match="X has 1 features"):
        m.predict(np.ones((5, 1)))


@pytest.mark.parametrize("kind", ["logistic", "softmax", "gaussian"])
def test_fit_without_inference(kind):
    X, y = make_data(kind, 33, 800, 3)
    full = make_model(kind).fit(X, y)
    bare = make_model(kind, inference=False).fit(X, y)
    np.testing.assert_allclose(bare.params_, full.params_, rtol=1e-9, atol=1e-12)
    assert not hasattr(bare, "bse_")
    with pytest.raises(ValueError, match="inference=False"):
        bare.summary()
    with pytest.raises(ValueError, match="inference=False"):
        bare.cov_params()


def test_too_many_parameters_for_inference_is_refused_before_any_pass():
    from fastmle.models import _estimators

    X = np.zeros((3, _estimators.MAX_INFERENCE_PARAMS))
    with pytest.raises(ValueError, match="inference=False"):
        fm.LogisticRegression().fit(X, [0, 1, 0])


def test_gaussian_ols_convention_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    X, y, _, _ = gaussian_data(34, 300, 4)
    m = fm.GaussianRegression(variance="ols").fit(X, y)
    ref = sm.OLS(y, sm.add_constant(X)).fit()
    np.testing.assert_allclose(m.params_[:-1], ref.params, rtol=1e-10)
    np.testing.assert_allclose(m.bse_[:-1], ref.bse, rtol=1e-10)
    np.testing.assert_allclose(m.sigma2_, ref.scale, rtol=1e-10)
    np.testing.assert_allclose(m.loglik_, ref.llf, rtol=1e-12)
    with pytest.raises(ValueError, match="variance"):
        fm.GaussianRegression(variance="unbiased").fit(X, y)


def test_solver_returns_its_best_point():
    # 32 rows, 14 classes, 52 parameters (the shape of statsmodels' spector data with
    # TUCE as the target): L-BFGS used to return a trial whose loss had risen
    rng = np.random.default_rng(35)
    X = rng.standard_normal((32, 3)) * [1, 10, 0.3]
    y = rng.integers(0, 14, 32)
    zero = -32 * np.log(1 / 14)  # the NLL of all-zero coefficients is at most this
    for solver in ("lbfgs", "newton", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = fm.SoftmaxRegression(solver=solver, inference=False).fit(X, y)
        assert np.isfinite(m.loglik_) and -m.loglik_ <= zero + 1e-9, solver


def _always_one_dummy(seed=36, n=200):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    d = (rng.random(n) < 0.3).astype(float)
    y = (rng.random(n) < _expit(0.5 * x)).astype(int)
    y[d == 1] = 1  # d = 1 predicts y = 1 perfectly; d = 0 rows are mixed
    return np.column_stack([x, d]), y


@pytest.mark.parametrize("tol", [1e-8, 1e-12])
def test_quasi_separation_is_detected(tol):
    sm = pytest.importorskip("statsmodels.api")
    X, y = _always_one_dummy()
    with pytest.warns(fm.ConvergenceWarning, match=r"Quasi-complete separation.*\['x1'\]"):
        m = fm.LogisticRegression(tol=tol).fit(X, y)
    assert not m.converged_
    # the other coefficients are those of the model without the separated rows
    keep = X[:, 1] == 0
    ref = sm.Logit(y[keep], sm.add_constant(X[keep, :1])).fit(disp=0)
    np.testing.assert_allclose(m.params_[:2], ref.params, rtol=1e-6)
    # penalised, the estimate exists: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fm.LogisticRegression(alpha=1.0).fit(X, y).converged_


def test_quasi_separation_softmax_iris_like():
    # one class separable from the others by x0, the other two overlapping
    rng = np.random.default_rng(37)
    n = 300
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 2))
    X[:, 0] += np.where(y == 0, 6.0, 0.0)
    X[:, 1] += 0.8 * (y == 2)
    X[y == 0, 0] = np.maximum(X[y == 0, 0], 3.5)
    X[y != 0, 0] = np.minimum(X[y != 0, 0], 3.0)
    with pytest.warns(fm.ConvergenceWarning, match="Quasi-complete separation"):
        m = fm.SoftmaxRegression().fit(X, y)
    assert not m.converged_


def test_no_false_separation_warning_on_strong_but_finite_effects():
    rng = np.random.default_rng(38)
    X = rng.standard_normal((5000, 3))
    y = (rng.random(5000) < _expit(X @ [4.0, -3.0, 0.5])).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fm.LogisticRegression().fit(X, y)
    assert m.converged_


@pytest.mark.parametrize("kind", ["logistic", "softmax", "gaussian", "gaussian-het"])
@pytest.mark.parametrize("solver", ["auto", "lbfgs"])
def test_default_tol_gives_nine_digits(kind, solver):
    # what a user compares with statsmodels/R: coefficients, standard errors and
    # sigma2 to >= 9 significant digits with the default tol, vs a fit to tol 1e-14
    sm = pytest.importorskip("statsmodels.api")
    het = kind == "gaussian-het"
    X, y = make_data("gaussian" if het else kind, 39, 4000, 5)
    make = (
        (lambda **kw: fm.GaussianRegression(heteroscedastic=True, **kw))
        if het
        else (lambda **kw: make_model(kind, **kw))
    )
    m = make(solver=solver).fit(X, y)
    ref = make(solver="newton", tol=1e-14).fit(X, y)
    np.testing.assert_allclose(
        m.params_, ref.params_, rtol=1e-9, atol=1e-9 * np.abs(ref.params_).max()
    )
    np.testing.assert_allclose(m.bse_, ref.bse_, rtol=1e-9)
    if kind == "logistic":  # and the tight reference is statsmodels' optimum
        r = sm.Logit(y, sm.add_constant(X)).fit(method="newton", tol=1e-14, disp=0)
        np.testing.assert_allclose(ref.params_, r.params, rtol=1e-10)


def test_wide_fit_without_inference_never_forms_a_hessian(monkeypatch):
    # 50 rows x 6000 columns (the 50 x 20,000 report, smaller): inference is refused
    # at once, and inference=False fits by L-BFGS alone, no p x p matrix on the way
    from fastmle.models import _solver

    rng = np.random.default_rng(40)
    X = rng.standard_normal((50, 6000))
    y = np.arange(50) % 2
    with pytest.raises(ValueError, match="inference=False"):
        fm.LogisticRegression().fit(X, y)

    def no_hessian(*args, **kwargs):
        raise AssertionError("a Hessian pass in a fit without inference")

    monkeypatch.setattr(_solver, "gram", no_hessian)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fm.ConvergenceWarning)  # separable: n < p
        m = fm.LogisticRegression(inference=False, max_iter=30).fit(X, y)
    assert m.coef_.shape == (1, 6000) and np.isfinite(m.coef_).all()


def test_long_factorisations_are_interruptible():
    """Issue 13 item 6: LAPACK on a large information matrix (seconds at thousands of
    parameters) runs in a worker thread, so that Ctrl-C reaches the caller at once."""
    import _thread
    import ctypes
    import sys
    import threading
    import time

    from fastmle.models import _linalg

    if sys.platform == "win32":
        pytest.skip("the stand-in for LAPACK is libc's sleep")
    libc = ctypes.CDLL(None)

    @_linalg.interruptible
    def stuck(M):  # stands for LAPACK: 3 s in C, where a pending Ctrl-C is not seen
        libc.sleep(3)
        return M

    timer = threading.Timer(0.2, _thread.interrupt_main)  # Ctrl-C, as the flag it sets
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        stuck(np.zeros((_linalg.INTERRUPTIBLE_ORDER, 1)))
    # in the caller's thread, the interrupt would wait for the 3 s call to return
    assert time.perf_counter() - t0 < 1.5
    # the solver's factorisations go through it, with the same results in the thread
    for fn in ("newton_direction", "gram_covariance", "r_solve", "r_covariance"):
        assert getattr(_linalg, fn).__wrapped__.__name__ == fn
    rng = np.random.default_rng(0)
    A = rng.standard_normal((1100, _linalg.INTERRUPTIBLE_ORDER))
    H = A.T @ A
    cov, bad = _linalg.gram_covariance(H)
    ref, ref_bad = _linalg.gram_covariance.__wrapped__(H)
    np.testing.assert_allclose(cov, ref, rtol=1e-12, atol=0)
    assert not bad.any() and not ref_bad.any()
    # an exception in the worker reaches the caller
    with pytest.raises(np.linalg.LinAlgError):
        _linalg.interruptible(np.linalg.cholesky)(-np.eye(_linalg.INTERRUPTIBLE_ORDER))
