"""Fits on Dask arrays side by side: fastmle on Dask, fastmle in memory, dask-ml.

    python benchmarks/dask_fits.py [--quick] [--repeat R] [--rows N] [--chunks C]
        [--json FILE]

The same data for all: X (N x 50 float64) in memory, and the same X as a Dask array
of C chunks of rows persisted on a LocalCluster of 2 single-threaded worker
processes (before any timing, as a Dask user holds data: loading it is not part of
a fit). Contenders: fastmle on the Dask array, fastmle on the NumPy array (2 Numba
threads), and dask-ml (the Dask peer, on the same persisted array) with its
``newton`` and ``lbfgs`` solvers. Every fit seeks the same optimum: no penalty
(dask-ml: C=1e12 for lbfgs; its newton ignores the penalty), tolerance 1e-8 as
fastmle's default. Each round fits every contender once, in turn, so that a noisy
machine slows them alike; the table shows the best round, the time relative to the
in-memory fastmle fit and how far the coefficients are from it
(max |a - b| / max |b|). fastmle's times include its standard errors.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import fastmle as fm

try:
    from fits import gaussian_data, logistic_data, softmax_data
except ImportError:  # imported as benchmarks.dask_fits
    from .fits import gaussian_data, logistic_data, softmax_data

FEATURES = 50


def _dask_ml():
    try:
        import dask_ml.linear_model as dl
    except ImportError:
        return None
    return dl


def cases(n: int):
    """(name, X, y, fastmle estimator maker, {dask-ml contender: maker})."""
    dl = _dask_ml()
    X, y = logistic_data(n, FEATURES)
    peers = {}
    if dl:
        peers["dask-ml newton"] = lambda: dl.LogisticRegression(
            solver="newton", tol=1e-8, max_iter=100
        )
        peers["dask-ml lbfgs"] = lambda: dl.LogisticRegression(
            solver="lbfgs", C=1e12, tol=1e-8, max_iter=1000
        )
    out = [(f"LogisticRegression {n}x{FEATURES}", X, y, fm.LogisticRegression, peers)]
    X, y = softmax_data(n // 4, FEATURES, 10)
    out.append(
        (f"SoftmaxRegression {n // 4}x{FEATURES}, 10 classes", X, y, fm.SoftmaxRegression, {})
    )
    X, y = gaussian_data(n, FEATURES)
    peers = {}
    if dl:
        peers["dask-ml newton"] = lambda: dl.LinearRegression(
            solver="newton", tol=1e-8, max_iter=100
        )
    out.append((f"GaussianRegression {n}x{FEATURES}", X, y, fm.GaussianRegression, peers))
    return out


def _coef(model) -> np.ndarray:
    return np.ravel(model.coef_)


def run(client, n: int, chunks: int, repeat: int):
    import dask.array as da

    rows = []
    for name, X, y, make, peers in cases(n):
        step = -(-X.shape[0] // chunks)
        with warnings.catch_warnings():  # shipping in-memory data to the workers, once
            warnings.filterwarnings("ignore", message="Sending large graph")
            Xd = client.persist(da.from_array(X, chunks=(step, -1)))
            yd = client.persist(da.from_array(y, chunks=(step,)))
        contenders = {
            "fastmle Dask": lambda make=make, Xd=Xd, yd=yd: make().fit(Xd, yd),
            "fastmle in memory": lambda make=make, X=X, y=y: make().fit(X, y),
        }
        for peer, build in peers.items():
            contenders[peer] = lambda build=build, Xd=Xd, yd=yd: build().fit(Xd, yd)
        best = {k: np.inf for k in contenders}
        models = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(repeat):
                for k, fit in contenders.items():
                    t0 = time.perf_counter()
                    models[k] = fit()
                    best[k] = min(best[k], time.perf_counter() - t0)
        ref = models["fastmle in memory"]
        for k in contenders:
            coef = _coef(models[k])
            diff = (
                float(np.max(np.abs(coef - _coef(ref))) / np.max(np.abs(_coef(ref))))
                if coef.size == _coef(ref).size
                else float("nan")
            )
            rows.append(
                {
                    "case": name,
                    "contender": k,
                    "seconds": best[k],
                    "vs_in_memory": best[k] / best["fastmle in memory"],
                    "coef_diff": diff,
                    "passes": getattr(models[k], "n_iter_", None),
                }
            )
        del Xd, yd
    return rows


def table(rows) -> str:
    lines = [
        f"{'case':<44} {'contender':<18} {'seconds':>8} {'vs in-memory':>12} {'coef diff':>10}"
    ]
    for r in rows:
        lines.append(
            f"{r['case']:<44} {r['contender']:<18} {r['seconds']:>8.3f} "
            f"{r['vs_in_memory']:>11.2f}x {r['coef_diff']:>10.1e}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10x fewer rows")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--chunks", type=int, default=2, help="chunks of rows of the Dask array")
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    import dask.array as da
    import distributed

    n = a.rows // 10 if a.quick else a.rows
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as client:
        # compile / load the kernels here and on the workers, outside the timings
        for data, make in (
            (logistic_data(4000, 5), fm.LogisticRegression),
            (softmax_data(4000, 5, 3), fm.SoftmaxRegression),
            (gaussian_data(4000, 5), fm.GaussianRegression),
        ):
            make().fit(*data)
            make().fit(
                da.from_array(data[0], chunks=(2000, -1)), da.from_array(data[1], chunks=2000)
            )
        rows = run(client, n, a.chunks, a.repeat)
    cluster.close()
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
