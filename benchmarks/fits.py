"""Estimator fits side by side: fastmle vs scikit-learn (and glum), same data, one run.

    python benchmarks/fits.py [--quick] [--repeat R] [--json FILE]

Each round fits every contender once, in turn, so that a noisy machine slows them
alike; the table shows the best round. Every peer is asked for the same optimum
(no penalty, tight tolerance) and the table shows how far its coefficients are
from fastmle's (max |a - b| / max |b|). fastmle's time includes its standard
errors (the Hessian at the optimum), except for the "no inference" rows
(``inference=False``: coefficients only, as scikit-learn computes).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import fastmle as fm


def logistic_data(n, d, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    # float32 values, so a float32 copy holds exactly the same data
    X = rng.standard_normal((n, d), dtype=np.float32).astype(dtype)
    beta = rng.standard_normal(d) * 0.2
    z = X.astype(np.float64) @ beta + 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return X, y


def softmax_data(n, d, k, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32).astype(np.float64)
    Z = X @ (rng.standard_normal((d, k)) * 0.2)
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return X, y


def gaussian_data(n, d, seed=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32).astype(np.float64)
    y = X @ rng.standard_normal(d) + 1.0 + rng.standard_normal(n)
    return X, y


def poisson_data(n, d, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32).astype(np.float64)
    y = rng.poisson(np.exp(0.5 + X @ (rng.standard_normal(d) * 0.1))).astype(np.float64)
    return X, y


def _sklearn():
    try:
        import sklearn.linear_model as lm
    except ImportError:
        return None
    return lm


def _glum():
    try:
        import glum
    except ImportError:
        return None
    return glum


def cases(quick: bool):
    s = 10 if quick else 1
    lm, glum = _sklearn(), _glum()
    out = []

    X, y = logistic_data(1_000_000 // s, 50)
    X32 = X.astype(np.float32)
    c = {
        "name": f"LogisticRegression {X.shape[0]}x{X.shape[1]}",
        "fastmle float64": (lambda X=X, y=y: fm.LogisticRegression().fit(X, y), "coef_"),
        "fastmle float32": (lambda X32=X32, y=y: fm.LogisticRegression().fit(X32, y), "coef_"),
        "fastmle, no inference": (
            lambda X=X, y=y: fm.LogisticRegression(inference=False).fit(X, y),
            "coef_",
        ),
    }
    if lm:
        c["sklearn lbfgs float64"] = (
            lambda X=X, y=y: lm.LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, y),
            "coef_",
        )
    out.append(c)

    X, y = softmax_data(300_000 // s, 50, 10)
    c = {
        "name": f"SoftmaxRegression {X.shape[0]}x{X.shape[1]}, 10 classes",
        "fastmle float64": (lambda X=X, y=y: fm.SoftmaxRegression().fit(X, y), "coef_"),
        "fastmle, no inference": (
            lambda X=X, y=y: fm.SoftmaxRegression(inference=False).fit(X, y),
            "coef_",
        ),
    }
    if lm:
        c["sklearn lbfgs float64"] = (
            lambda X=X, y=y: lm.LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(X, y),
            "coef_",
        )
    out.append(c)

    X, y = gaussian_data(1_000_000 // s, 50)
    c = {
        "name": f"GaussianRegression {X.shape[0]}x{X.shape[1]} (with standard errors)",
        "fastmle float64": (lambda X=X, y=y: fm.GaussianRegression().fit(X, y), "coef_"),
    }
    if glum:
        c["glum IRLS + covariance"] = (
            lambda X=X, y=y: glum.GeneralizedLinearRegressor(family="normal", alpha=0).fit(
                X, y, store_covariance_matrix=True
            ),
            "coef_",
        )
        c["glum IRLS"] = (
            lambda X=X, y=y: glum.GeneralizedLinearRegressor(family="normal", alpha=0).fit(X, y),
            "coef_",
        )
    if lm:
        c["sklearn LinearRegression"] = (lambda X=X, y=y: lm.LinearRegression().fit(X, y), "coef_")
    out.append(c)

    X, y = poisson_data(1_000_000 // s, 50)
    c = {
        "name": f"PoissonRegression {X.shape[0]}x{X.shape[1]}",
        "fastmle float64": (lambda X=X, y=y: fm.PoissonRegression().fit(X, y), "coef_"),
        "fastmle, no inference": (
            lambda X=X, y=y: fm.PoissonRegression(inference=False).fit(X, y),
            "coef_",
        ),
    }
    if lm:
        c["sklearn lbfgs float64"] = (
            lambda X=X, y=y: lm.PoissonRegressor(
                alpha=0, solver="lbfgs", tol=1e-10, max_iter=1000
            ).fit(X, y),
            "coef_",
        )
    if glum:
        c["glum IRLS"] = (
            lambda X=X, y=y: glum.GeneralizedLinearRegressor(
                family="poisson", alpha=0, gradient_tol=1e-10
            ).fit(X, y),
            "coef_",
        )
        c["glum IRLS + covariance"] = (
            lambda X=X, y=y: glum.GeneralizedLinearRegressor(
                family="poisson", alpha=0, gradient_tol=1e-10
            ).fit(X, y, store_covariance_matrix=True),
            "coef_",
        )
    out.append(c)
    return out


def run(quick=False, repeat=3):
    rows = []
    for case in cases(quick):
        contenders = {k: v for k, v in case.items() if k != "name"}
        best = {k: np.inf for k in contenders}
        models = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(repeat):
                for k, (fit, _attr) in contenders.items():
                    t0 = time.perf_counter()
                    models[k] = fit()
                    best[k] = min(best[k], time.perf_counter() - t0)
        ref = np.ravel(models["fastmle float64"].coef_)
        base = best["fastmle float64"]
        for k, (_fit, attr) in contenders.items():
            coef = np.ravel(getattr(models[k], attr))
            if coef.size == ref.size:  # sklearn's binary coef_ is (1, d), ours too
                diff = float(np.max(np.abs(coef - ref)) / np.max(np.abs(ref)))
            else:
                diff = float("nan")
            rows.append(
                {
                    "case": case["name"],
                    "contender": k,
                    "seconds": best[k],
                    "vs_fastmle_float64": best[k] / base,
                    "coef_diff": diff,
                }
            )
    return rows


def table(rows) -> str:
    lines = [f"{'case':<52} {'contender':<24} {'time / fastmle f64':>18} {'coef diff':>10}"]
    for r in rows:
        lines.append(
            f"{r['case']:<52} {r['contender']:<24} {r['vs_fastmle_float64']:>17.2f}x "
            f"{r['coef_diff']:>10.1e}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10x fewer rows")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    fm.LogisticRegression().fit(*logistic_data(2000, 5))  # compile outside the timings
    fm.SoftmaxRegression().fit(*softmax_data(2000, 5, 3))
    fm.GaussianRegression().fit(*gaussian_data(2000, 5))
    fm.PoissonRegression().fit(*poisson_data(2000, 5))
    fm.LogisticRegression().fit(*logistic_data(2000, 5, dtype=np.float32))
    rows = run(a.quick, a.repeat)
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
