"""PoissonRegression against statsmodels (GLM Poisson and discrete Poisson)."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastmle as fm

sm = pytest.importorskip("statsmodels.api")


def _data(n=600, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    exposure = rng.uniform(0.5, 3.0, n)
    offset = rng.normal(scale=0.3, size=n)
    beta = np.linspace(0.3, -0.2, d)
    y = rng.poisson(exposure * np.exp(offset + X @ beta + 0.2)).astype(float)
    return X, y, exposure, offset


def _glm(X, y, **kw):
    return sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), **kw).fit(tol=1e-13)


@pytest.mark.parametrize("extra", ["none", "exposure", "offset", "both"])
def test_matches_statsmodels(extra):
    X, y, exposure, offset = _data()
    kw = {
        "exposure": exposure if extra in ("exposure", "both") else None,
        "offset": offset if extra in ("offset", "both") else None,
    }
    kw = {k: v for k, v in kw.items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fm.PoissonRegression().fit(X, y, **kw)
    ref = _glm(X, y, **kw)
    disc = sm.Poisson(y, sm.add_constant(X), **kw).fit(disp=0, tol=1e-13)
    assert m.converged_
    assert_allclose(m.params_, ref.params, rtol=1e-8, atol=1e-12)
    assert_allclose(m.bse_, ref.bse, rtol=1e-8)
    assert_allclose(m.params_, disc.params, rtol=1e-8, atol=1e-12)
    assert_allclose(m.bse_, disc.bse, rtol=1e-8)
    assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    assert_allclose(m.aic_, disc.aic, rtol=1e-10)
    assert_allclose(m.bic_, disc.bic, rtol=1e-10)
    assert_allclose(m.deviance_, ref.deviance, rtol=1e-9)
    assert_allclose(m.llnull_, disc.llnull, rtol=1e-8)
    assert_allclose(m.llr_, disc.llr, rtol=1e-8)
    assert_allclose(m.llr_pvalue_, disc.llr_pvalue, rtol=1e-8)
    assert_allclose(m.pseudo_r2_, disc.prsquared, rtol=1e-8)
    assert m.df_model_ == disc.df_model
    assert_allclose(m.coef_, ref.params[1:], rtol=1e-8)
    assert_allclose(m.intercept_, ref.params[0], rtol=1e-8)
    # predict: the mean, with statsmodels' exposure/offset arguments
    assert_allclose(
        m.predict(X[:50], **{k: v[:50] for k, v in kw.items()}),
        ref.predict(sm.add_constant(X)[:50], **{k: v[:50] for k, v in kw.items()}),
        rtol=1e-9,
    )
    assert_allclose(m.predict(X[:5]), np.exp(m.intercept_ + X[:5] @ m.coef_), rtol=1e-12)


def test_frequency_weights_are_repeated_rows():
    X, y, exposure, _ = _data(300, seed=1)
    w = np.random.default_rng(2).integers(0, 4, X.shape[0])
    m = fm.PoissonRegression().fit(X, y, sample_weight=w, exposure=exposure)
    rep = np.repeat(np.arange(X.shape[0]), w)
    r = fm.PoissonRegression().fit(X[rep], y[rep], exposure=exposure[rep])
    ref = _glm(X, y, freq_weights=w, exposure=exposure)
    assert_allclose(m.params_, ref.params, rtol=1e-8, atol=1e-12)
    assert_allclose(m.bse_, ref.bse, rtol=1e-8)
    assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    assert_allclose(m.deviance_, ref.deviance, rtol=1e-9)
    assert_allclose(m.llnull_, ref.llnull, rtol=1e-8)
    assert m.nobs_ == w.sum()
    for a in ("params_", "bse_", "loglik_", "llnull_", "deviance_", "aic_", "bic_"):
        assert_allclose(getattr(m, a), getattr(r, a), rtol=1e-8)


def test_non_integer_counts_and_no_intercept():
    X, y, exposure, _ = _data(400, seed=3)
    y = y * 0.37  # rates: statsmodels takes them too (quasi-likelihood)
    m = fm.PoissonRegression(fit_intercept=False).fit(X, y, exposure=exposure)
    ref = sm.GLM(y, X, family=sm.families.Poisson(), exposure=exposure).fit(tol=1e-13)
    assert_allclose(m.params_, ref.params, rtol=1e-8, atol=1e-12)
    assert_allclose(m.bse_, ref.bse, rtol=1e-8)
    assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    assert m.intercept_ == 0.0


@pytest.mark.parametrize("k", [-3, 3])
def test_units_invariance(k):
    X, y, exposure, _ = _data(500, d=4, seed=4)
    base = fm.PoissonRegression().fit(X, y, exposure=exposure)
    s = 10.0 ** (k * np.arange(1, 5) / 2)
    m = fm.PoissonRegression().fit(X * s, y, exposure=exposure)
    assert m.n_iter_ == base.n_iter_
    assert_allclose(m.params_[1:] * s, base.params_[1:], rtol=1e-9)
    assert_allclose(m.bse_[1:] * s, base.bse_[1:], rtol=1e-9)
    assert_allclose(m.loglik_, base.loglik_, rtol=1e-12)
    # exposure's units move the intercept alone
    e = fm.PoissonRegression().fit(X, y, exposure=exposure * 10.0**k)
    assert_allclose(e.params_[0], base.params_[0] - k * np.log(10.0), rtol=1e-9)
    assert_allclose(e.params_[1:], base.params_[1:], rtol=1e-9)


def test_alpha_penalty_matches_sklearn():
    from sklearn.linear_model import PoissonRegressor

    X, y, _, _ = _data(500, seed=5)
    sk = PoissonRegressor(alpha=0.3, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y)
    m = fm.PoissonRegression(alpha=0.3 * X.shape[0]).fit(X, y)
    assert_allclose(m.coef_, sk.coef_, rtol=1e-7)
    assert_allclose(m.intercept_, sk.intercept_, rtol=1e-7)
    assert_allclose(m.score(X, y), sk.score(X, y), rtol=1e-7)


def test_memmap_and_float32(tmp_path):
    X, y, exposure, offset = _data(3000, seed=6)
    ref = fm.PoissonRegression().fit(X, y, exposure=exposure, offset=offset)
    path = tmp_path / "X.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    got = fm.PoissonRegression().fit(mm, y, exposure=exposure, offset=offset)
    assert_allclose(got.params_, ref.params_, rtol=1e-12)
    assert_allclose(got.bse_, ref.bse_, rtol=1e-12)
    f32 = fm.PoissonRegression().fit(X.astype(np.float32), y)
    ref32 = _glm(X.astype(np.float32).astype(np.float64), y)
    assert_allclose(f32.params_, ref32.params, rtol=1e-8, atol=1e-12)


def test_large_linear_predictor_is_stable():
    # counts up to ~e^30 and a start far from the optimum: no overflow, no warning
    rng = np.random.default_rng(7)
    X = rng.normal(size=(2000, 2))
    y = rng.poisson(np.exp(25.0 + X @ [2.0, -1.5])).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fm.PoissonRegression().fit(X, y)
    ref = _glm(X, y)
    assert_allclose(m.params_, ref.params, rtol=1e-8)
    assert_allclose(m.bse_, ref.bse, rtol=1e-7)


def test_bad_inputs():
    X, y, exposure, offset = _data(50)
    with pytest.raises(ValueError, match="negative"):
        fm.PoissonRegression().fit(X, y - 1)
    with pytest.raises(ValueError, match="exposure must be > 0"):
        fm.PoissonRegression().fit(X, y, exposure=exposure - 10)
    with pytest.raises(ValueError, match="exposure must have shape"):
        fm.PoissonRegression().fit(X, y, exposure=exposure[:-1])
    with pytest.raises(ValueError, match="offset contains NaN"):
        fm.PoissonRegression().fit(X, y, offset=np.full(50, np.nan))
    with pytest.raises(ValueError, match="y contains NaN"):
        fm.PoissonRegression().fit(X, np.full(50, np.nan))
    with pytest.raises(ValueError, match="numeric"):
        fm.PoissonRegression().fit(X, np.array(["a"] * 50))
    m = fm.PoissonRegression().fit(X, y)
    with pytest.raises(ValueError, match="exposure must be > 0"):
        m.predict(X, exposure=np.zeros(50))


def test_summary():
    X, y, exposure, _ = _data(300)
    m = fm.PoissonRegression().fit(X, y, exposure=exposure)
    text = m.summary()
    assert "PoissonRegression results" in text
    for label, value in [
        ("LL-Null:", f"{m.llnull_:.6f}"),
        ("Pseudo R-squ.:", f"{m.pseudo_r2_:.4f}"),
        ("Covariance Type:", "nonrobust"),
    ]:
        line = next(t for t in text.splitlines() if t.startswith(label))
        assert line.endswith(value)


def test_dask_matches_in_memory():
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    X, y, exposure, offset = _data(4000, seed=8)
    w = np.random.default_rng(9).integers(1, 3, 4000).astype(float)
    g = np.random.default_rng(10).integers(0, 30, 4000)
    ref = fm.PoissonRegression(cov_type="cluster").fit(
        X, y, sample_weight=w, exposure=exposure, offset=offset, groups=g
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        Xd = da.from_array(X, chunks=(1000, 3))
        got = fm.PoissonRegression(cov_type="cluster").fit(
            Xd,
            da.from_array(y, chunks=1000),
            sample_weight=w,
            exposure=exposure,
            offset=da.from_array(offset, chunks=1000),
            groups=g,
        )
        pred = got.predict(Xd, exposure=exposure)
        assert isinstance(pred, da.Array)
        assert_allclose(pred.compute(), ref.predict(X, exposure=exposure), rtol=1e-12)
    assert_allclose(got.params_, ref.params_, rtol=1e-10, atol=1e-14)
    assert_allclose(got.bse_, ref.bse_, rtol=1e-10)
    assert_allclose(got.loglik_, ref.loglik_, rtol=1e-12)
    assert_allclose(got.llnull_, ref.llnull_, rtol=1e-12)
