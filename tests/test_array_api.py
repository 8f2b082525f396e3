"""Fits on array-API arrays (models/_arrays): the passes in X's own library.

The same code serves CuPy on a GPU; here it runs on ``array_api_strict`` (a minimal,
strict implementation of the standard: any operation outside it raises) and on NumPy
through ``array_api_compat``, and must give the NumPy fit's estimates.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastmle as fm
from fastmle.models import _arrays
from fastmle.models._solver import Problem

xps = pytest.importorskip("array_api_strict")
pytest.importorskip("array_api_compat")
import nist  # noqa: E402

RTOL = 1e-9  # of max(|estimate|, its standard error): both fits converge to ~1e-12


def _data(seed=0, n=3000, d=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[:, 1] *= 1e6  # a column in other units
    b = np.array([0.5, -1e-6, 0.8, 0.0])[:d]
    eta = X @ b
    targets = {
        "logistic": (eta + rng.logistic(size=n) > 0).astype(float),
        "softmax": np.argmax(np.c_[eta, -eta, 0.5 * X[:, 0]] + rng.gumbel(size=(n, 3)), axis=1),
        "poisson": rng.poisson(np.exp(0.3 * eta)),
        "gaussian": eta + rng.standard_normal(n),
        "heteroscedastic": eta + np.exp(0.3 * X[:, 0]) * rng.standard_normal(n),
    }
    return X, targets, rng.uniform(0.5, 2.0, n)


ESTIMATORS = {
    "logistic": fm.LogisticRegression,
    "softmax": fm.SoftmaxRegression,
    "poisson": fm.PoissonRegression,
    "gaussian": fm.GaussianRegression,
    "heteroscedastic": lambda: fm.GaussianRegression(heteroscedastic=True),
}


def _close(got, want, se, rtol, what):
    err = np.abs(np.asarray(got) - want)
    bound = rtol * np.maximum(np.abs(want), se)
    assert (err <= bound).all(), f"{what}: {np.max(err / bound) * rtol:.3g} > {rtol:g}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_array_api_fit_is_the_numpy_fit(kind, weighted, dtype):
    X, targets, sw = _data()
    X = X.astype(dtype)
    y, w = targets[kind], (sw if weighted else None)
    ref = ESTIMATORS[kind]().fit(X, y, sample_weight=w)
    Xs = xps.asarray(X)
    got = ESTIMATORS[kind]().fit(Xs, xps.asarray(y), sample_weight=w)
    # Gaussian's closed form: both Grams are accurate to cond^2 eps ~ 1e-8 (see
    # Problem.least_squares); the iterative fits agree to their convergence
    rtol = 1e-6 if kind == "gaussian" else RTOL
    _close(got.params_, ref.params_, ref.bse_, rtol, "params_")
    np.testing.assert_allclose(got.bse_, ref.bse_, rtol=1e-8)
    assert got.loglik_ == pytest.approx(ref.loglik_, rel=1e-10)
    assert got.converged_ and got.n_iter_ == pytest.approx(ref.n_iter_, abs=1)
    predicted = got.predict(Xs)  # computed on X's device, returned as NumPy
    assert isinstance(predicted, np.ndarray)
    np.testing.assert_allclose(predicted, ref.predict(X), rtol=1e-7, atol=1e-12)
    if kind in ("logistic", "softmax"):
        np.testing.assert_allclose(got.predict_proba(Xs), ref.predict_proba(X), atol=1e-9)


@pytest.mark.parametrize("cov_type", ["HC0", "HC1"])
@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_robust_covariances_on_the_device(kind, cov_type):
    """The scores' outer products accumulate on the device as on the host."""
    X, targets, sw = _data(8)
    ref = ESTIMATORS[kind]()
    ref.set_params(cov_type=cov_type).fit(X, targets[kind], sample_weight=sw)
    got = ESTIMATORS[kind]()
    got.set_params(cov_type=cov_type).fit(xps.asarray(X), targets[kind], sample_weight=sw)
    np.testing.assert_allclose(got.bse_, ref.bse_, rtol=1e-8)
    np.testing.assert_allclose(got.cov_params(), ref.cov_params(), rtol=1e-7, atol=1e-300)


def test_poisson_offset_and_exposure_on_the_device():
    X, targets, _ = _data(1)
    rng = np.random.default_rng(5)
    off, ex = rng.uniform(-1, 1, X.shape[0]), rng.uniform(0.5, 2, X.shape[0])
    y = rng.poisson(np.exp(0.3 * X[:, 0] + off) * ex)
    ref = fm.PoissonRegression().fit(X, y, offset=off, exposure=ex)
    got = fm.PoissonRegression().fit(xps.asarray(X), y, offset=xps.asarray(off), exposure=ex)
    _close(got.params_, ref.params_, ref.bse_, RTOL, "params_")
    np.testing.assert_allclose(got.bse_, ref.bse_, rtol=1e-8)


def _family_and_mask(kind, y, d):
    est = ESTIMATORS[kind]()
    if kind == "softmax":
        est.classes_ = np.unique(y)
    return est._family(d)


@pytest.mark.parametrize("kind", ["logistic", "softmax", "poisson", "heteroscedastic"])
def test_a_pass_in_numpy_through_array_api_compat_is_the_fused_pass(kind):
    """ArrayProblem on NumPy arrays (array_api_compat's numpy namespace, fastmle's CPU
    kernels called directly): the objective, gradient, Hessian and row counts of the
    fused Numba passes, at a point away from the optimum."""
    X, targets, sw = _data(2, n=2500)
    y = targets[kind]
    if kind == "softmax":
        y = y.astype(np.intp)
    family, mask = _family_and_mask(kind, y, X.shape[1])
    off = np.linspace(-0.5, 0.5, X.shape[0]) if kind == "poisson" else None
    theta = np.random.default_rng(3).standard_normal(int(mask.sum())) * 0.1
    theta[2 :: X.shape[1] + 1] *= 1e-6  # the column in units of 1e6 (after the intercept)
    args = (X, y, sw, family, mask, 0.0, 0, off)
    want = Problem(*args).evaluate(theta, hess=True, count_wrong=True)
    problem = _arrays.ArrayProblem(*args)
    assert problem.dev.native  # NumPy: the kernels take its arrays as they are
    got = problem.evaluate(theta, hess=True, count_wrong=True)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-9 * np.abs(want[1]).max())
    np.testing.assert_allclose(got[2], want[2], rtol=1e-9, atol=1e-9 * np.abs(want[2]).max())
    np.testing.assert_array_equal(got[3], want[3])


def test_many_blocks_same_as_one(monkeypatch):
    X, targets, sw = _data(4)
    Xs = xps.asarray(X)
    one = fm.SoftmaxRegression().fit(Xs, targets["softmax"], sample_weight=sw)
    monkeypatch.setattr(_arrays, "BLOCK_BYTES", 1)  # 1024-row blocks: three of them
    many = fm.SoftmaxRegression().fit(Xs, targets["softmax"], sample_weight=sw)
    _close(many.params_, one.params_, one.bse_, 1e-11, "params_")
    np.testing.assert_allclose(many.bse_, one.bse_, rtol=1e-10)


@pytest.mark.parametrize("name", ["Longley", "Wampler4", "Pontius", "NoInt2"])
def test_nist_on_array_api(name):
    """Certified values through the device path, including its QR (TSQR) fallback for
    ill-conditioned designs (Wampler4, Longley) and a fit through the origin."""
    ds = nist.load()[name]
    model, _ = nist.fit_fastmle(ds, asarray=xps.asarray, variance="ols")
    assert (nist.lres(nist.mean_params(model, ds), ds.beta) >= nist.coef_threshold(ds)).all()
    se = nist.lres(np.asarray(model.bse_)[: ds.p], ds.sd)
    assert (se >= nist.sd_threshold(ds)[1]).all()


def test_bad_inputs_raise_clear_errors():
    X, targets, _ = _data(6, n=500)
    Xn = X.copy()
    Xn[7, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        fm.LogisticRegression().fit(xps.asarray(Xn), targets["logistic"])
    groups = np.arange(X.shape[0]) % 7
    with pytest.raises(ValueError, match="cov_type='cluster' is not available"):
        fm.LogisticRegression(cov_type="cluster").fit(
            xps.asarray(X), targets["logistic"], groups=groups
        )
    with pytest.raises(ValueError, match="not supported"):
        fm.LogisticRegression().fit(xps.asarray(X.astype(np.complex128)), targets["logistic"])
    with pytest.raises(ValueError, match="Expected 2D array"):
        fm.LogisticRegression().fit(xps.asarray(X[:, 0]), targets["logistic"])
    m = fm.LogisticRegression().fit(xps.asarray(X), targets["logistic"])
    with pytest.raises(ValueError, match="expecting 4 features"):
        m.predict(xps.asarray(X[:, :3]))
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        m.predict(xps.asarray(Xn))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.predict(xps.asarray(X))  # no warning of any kind


def test_failed_device_fit_leaves_the_model_as_it_was():
    X, targets, _ = _data(7, n=500)
    m = fm.LogisticRegression().fit(X, targets["logistic"])
    before = m.coef_.copy()
    Xn = X.copy()
    Xn[0, 0] = np.inf
    with pytest.raises(ValueError):
        m.fit(xps.asarray(Xn), targets["logistic"])
    np.testing.assert_array_equal(m.coef_, before)


def test_jax_arrays_fit_on_their_device():
    """JAX arrays (host memory here) take the same path: DLPack to the CPU kernels."""
    jax = pytest.importorskip("jax")
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # float64 arrays (restored below)
    try:
        X, targets, sw = _data(9, n=1500)
        for kind in ("logistic", "softmax"):
            ref = ESTIMATORS[kind]().fit(X, targets[kind], sample_weight=sw)
            got = ESTIMATORS[kind]().fit(
                jax.numpy.asarray(X), jax.numpy.asarray(targets[kind]), sample_weight=sw
            )
            _close(got.params_, ref.params_, ref.bse_, RTOL, f"{kind} params_")
            np.testing.assert_allclose(got.bse_, ref.bse_, rtol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", before)
