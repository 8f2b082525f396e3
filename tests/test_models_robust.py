"""Robust covariances (cov_type) and the model-level tests (llnull_, llr_, ...) of every
estimator, against statsmodels' Logit, MNLogit, Poisson, GLM and OLS."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastmle as fm

sm = pytest.importorskip("statsmodels.api")

N, K = 400, 3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, K))
    eta = X @ [0.5, -0.4, 0.3]
    groups = rng.integers(0, 25, N)
    ys = {
        "logit": (rng.random(N) < 1 / (1 + np.exp(-eta))).astype(float),
        "mnlogit": np.digitize(eta + rng.logistic(size=N), [-1.0, 0.0, 1.0]).astype(float),
        "poisson": rng.poisson(np.exp(0.3 + 0.6 * eta)).astype(float),
        "ols": 1.0 + X @ [1.0, 2.0, -1.0] + rng.normal(size=N) * (1 + X[:, 0] ** 2),
    }
    return X, ys, groups


MODELS = {
    "logit": (fm.LogisticRegression, lambda y, X: sm.Logit(y, X)),
    "mnlogit": (fm.SoftmaxRegression, lambda y, X: sm.MNLogit(y, X)),
    "poisson": (fm.PoissonRegression, lambda y, X: sm.Poisson(y, X)),
    "ols": (fm.GaussianRegression, lambda y, X: sm.OLS(y, X)),
}


def _sm_fit(name, y, X, **kw):
    model = MODELS[name][1](y, sm.add_constant(X))
    if name == "ols":
        return model.fit(**kw)
    return model.fit(disp=0, tol=1e-13, method="newton", maxiter=100, **kw)


def _flat(name, a):
    a = np.asarray(a)
    return a.T.ravel() if name == "mnlogit" else a  # MNLogit: (k, J - 1), class-major here


def _ours(name, m):
    return m.bse_[:-1] if name == "ols" else m.bse_  # GaussianRegression: sigma2 last


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "HC1", "cluster"])
def test_robust_covariance_matches_statsmodels(name, cov_type):
    X, ys, groups = _data()
    y = ys[name]
    kw = {"groups": groups} if cov_type == "cluster" else {}
    est = MODELS[name][0]
    opts = {"variance": "ols"} if name == "ols" and cov_type == "nonrobust" else {}
    m = est(cov_type=cov_type, **opts).fit(X, y, **kw)
    sm_cov = "HC0" if cov_type == "HC1" and name != "ols" else cov_type
    extra = {"cov_kwds": {"groups": groups}} if cov_type == "cluster" else {}
    ref = _sm_fit(name, y, X, cov_type=sm_cov, **extra)
    expected = _flat(name, ref.bse)
    factor = 1.0
    if cov_type == "HC1" and name != "ols":
        # statsmodels' HC1 of Logit, MNLogit, Poisson (and GLM) has no correction: n / (n - k)
        factor = N / (N - expected.size)
    assert_allclose(_ours(name, m), expected * np.sqrt(factor), rtol=1e-8)
    if name != "mnlogit":
        p = expected.size
        assert_allclose(
            m.cov_params()[:p, :p],
            np.asarray(ref.cov_params()) * factor,
            rtol=1e-7,
            atol=1e-12 * expected.max() ** 2,
        )
    line = next(t for t in m.summary().splitlines() if t.startswith("Covariance Type:"))
    assert cov_type in line


@pytest.mark.parametrize("cov_type", ["HC0", "cluster"])
def test_robust_with_frequency_weights_is_repeated_rows(cov_type):
    X, ys, groups = _data(1)
    w = np.random.default_rng(3).integers(0, 4, N)
    rep = np.repeat(np.arange(N), w)
    for name in MODELS:
        est = MODELS[name][0]
        kw = {"groups": groups} if cov_type == "cluster" else {}
        m = est(cov_type=cov_type).fit(X, ys[name], sample_weight=w, **kw)
        kw = {"groups": groups[rep]} if cov_type == "cluster" else {}
        r = est(cov_type=cov_type).fit(X[rep], ys[name][rep], **kw)
        assert_allclose(m.bse_, r.bse_, rtol=1e-8, err_msg=name)
    # and statsmodels GLM with freq_weights (cluster: its scores carry the weights)
    m = fm.PoissonRegression(cov_type=cov_type).fit(
        X, ys["poisson"], sample_weight=w, **({"groups": groups} if cov_type == "cluster" else {})
    )
    ref = sm.GLM(ys["poisson"][rep], sm.add_constant(X)[rep], family=sm.families.Poisson()).fit(
        tol=1e-13,
        cov_type=cov_type,
        **({"cov_kwds": {"groups": groups[rep]}} if cov_type == "cluster" else {}),
    )
    assert_allclose(m.bse_, ref.bse, rtol=1e-8)


@pytest.mark.parametrize("name", ["logit", "mnlogit", "poisson"])
@pytest.mark.parametrize("intercept", [True, False])
def test_model_tests_match_statsmodels(name, intercept):
    X, ys, _ = _data(2)
    y = ys[name]
    m = MODELS[name][0](fit_intercept=intercept).fit(X, y)
    Xs = sm.add_constant(X) if intercept else X
    model = MODELS[name][1](y, Xs)
    ref = model.fit(disp=0, tol=1e-13, method="newton", maxiter=100)
    assert_allclose(m.loglik_, ref.llf, rtol=1e-10)
    assert_allclose(m.llnull_, ref.llnull, rtol=1e-8)
    assert_allclose(m.llr_, ref.llr, rtol=1e-7)
    assert m.df_model_ == ref.df_model
    assert_allclose(m.llr_pvalue_, ref.llr_pvalue, rtol=1e-7, atol=1e-300)
    assert_allclose(m.pseudo_r2_, ref.prsquared, rtol=1e-8)
    text = m.summary()
    for label, value in [
        ("LL-Null:", f"{m.llnull_:.6f}"),
        ("LLR p-value:", f"{m.llr_pvalue_:.4g}"),
        ("Pseudo R-squ.:", f"{m.pseudo_r2_:.4f}"),
    ]:
        assert next(t for t in text.splitlines() if t.startswith(label)).endswith(value)


def test_deviance_matches_glm():
    X, ys, _ = _data(4)
    Xc = sm.add_constant(X)
    for est, y, fam in [
        (fm.LogisticRegression, ys["logit"], sm.families.Binomial()),
        (fm.PoissonRegression, ys["poisson"], sm.families.Poisson()),
        (fm.GaussianRegression, ys["ols"], sm.families.Gaussian()),
    ]:
        m = est().fit(X, y)
        ref = sm.GLM(y, Xc, family=fam).fit(tol=1e-13)
        assert_allclose(m.deviance_, ref.deviance, rtol=1e-8, err_msg=est.__name__)
    m = fm.SoftmaxRegression().fit(X, ys["mnlogit"])
    assert_allclose(m.deviance_, -2 * m.loglik_, rtol=1e-14)


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("kind", ["lstsq", "alpha0-hetero-off", "weights"])
def test_gaussian_r2_matches_ols(intercept, kind):
    X, ys, _ = _data(5)
    y = ys["ols"] + 5.0
    w = np.random.default_rng(6).uniform(0.5, 2.0, N) if kind == "weights" else None
    Xs = sm.add_constant(X) if intercept else X
    ref = (sm.WLS(y, Xs, weights=w) if w is not None else sm.OLS(y, Xs)).fit()
    m = fm.GaussianRegression(fit_intercept=intercept, solver="newton", warm_start=kind != "lstsq")
    if kind != "lstsq":  # a warm start takes the iterative path (a pass for the RSS)
        m.fit(X, y, sample_weight=w)
    m.fit(X, y, sample_weight=w)
    assert_allclose(m.r2_, ref.rsquared, rtol=1e-9)
    assert_allclose(m.deviance_, ref.ssr, rtol=1e-9)
    assert m.df_model_ == ref.df_model
    assert next(t for t in m.summary().splitlines() if t.startswith("R-squared:")).endswith(
        f"{m.r2_:.6f}"
    )


def test_gaussian_robust_heteroscedastic_runs_and_alpha():
    X, ys, groups = _data(7)
    m = fm.GaussianRegression(heteroscedastic=True, cov_type="cluster").fit(
        X, ys["ols"], groups=groups
    )
    assert np.isfinite(m.bse_).all()
    # a penalised fit: the sandwich of the penalised Hessian, finite and positive
    m = fm.LogisticRegression(alpha=2.0, cov_type="HC0").fit(X, ys["logit"])
    assert (m.bse_ > 0).all()


def test_bad_groups_and_cov_type():
    X, ys, groups = _data()
    y = ys["logit"]
    with pytest.raises(ValueError, match="cov_type='cluster' needs fit"):
        fm.LogisticRegression(cov_type="cluster").fit(X, y)
    with pytest.raises(ValueError, match="groups is only used"):
        fm.LogisticRegression().fit(X, y, groups=groups)
    with pytest.raises(ValueError, match=r"groups must have shape \(400,\)"):
        fm.LogisticRegression(cov_type="cluster").fit(X, y, groups=groups[:-1])
    with pytest.raises(ValueError, match="at least 2 clusters"):
        fm.LogisticRegression(cov_type="cluster").fit(X, y, groups=np.zeros(N))
    with pytest.raises(ValueError, match="cov_type='HC3' is not valid"):
        fm.LogisticRegression(cov_type="HC3").fit(X, y)


def test_chi2_sf_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    from fastmle.models._inference import chi2_sf

    for x, df in [
        (0.5, 1),
        (3.2, 2),
        (10.0, 5),
        (100.0, 7),
        (1500.0, 40),
        (2000.0, 999),
        (50.0, 1000),
        (700.0, 3),
    ]:
        assert_allclose(chi2_sf(x, df), stats.chi2.sf(x, df), rtol=1e-11)
    assert chi2_sf(-1.0, 3) == 1.0
    assert np.isnan(chi2_sf(1.0, 0))


def test_dask_robust_matches_in_memory():
    da = pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    X, ys, groups = _data(8)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        Xd = da.from_array(X, chunks=(100, K))
        for est, y, ct in [
            (fm.LogisticRegression, ys["logit"], "HC1"),
            (fm.SoftmaxRegression, ys["mnlogit"], "cluster"),
            (fm.GaussianRegression, ys["ols"], "cluster"),
        ]:
            kw = {"groups": da.from_array(groups, chunks=100)} if ct == "cluster" else {}
            got = est(cov_type=ct).fit(Xd, y, **kw)
            ref = est(cov_type=ct).fit(X, y, **({"groups": groups} if kw else {}))
            assert_allclose(got.bse_, ref.bse_, rtol=1e-10, err_msg=est.__name__)
            assert_allclose(got.deviance_, ref.deviance_, rtol=1e-10)
