"""Fitting on Dask arrays (fastmle.models._distributed) against the in-memory fits.

One ``LocalCluster`` of two single-threaded worker processes (800 MB each) serves the
module. Every Dask fit is compared with the in-memory fit of the same data:
coefficients, standard errors and log-likelihood to 1e-6 (relative).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastmle as fm  # noqa: E402
from fastmle.models import _chunks, _distributed  # noqa: E402

WORKER_MEMORY = 800e6  # a worker with fastmle's kernels loaded takes ~230 MB; at 600 MB
# a CI run crossed distributed's 70% process-memory spill threshold (433 MB peak)


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "port in use": a random one is taken
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=WORKER_MEMORY,
            silence_logs=50,
        )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _data(kind, n=4000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    z = X @ rng.uniform(-1, 1, d) + 0.3
    if kind == "binary":
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    elif kind == "classes":
        y = np.array(["a", "b", "c"])[np.digitize(z + rng.logistic(size=n), [-0.5, 0.8])]
    else:
        y = z + rng.standard_normal(n) * np.exp(0.3 * X[:, 0])
    return X, y


CASES = {
    "logistic": (lambda: fm.LogisticRegression(), "binary"),
    "logistic lbfgs alpha": (lambda: fm.LogisticRegression(solver="lbfgs", alpha=2.0), "binary"),
    "logistic balanced": (lambda: fm.LogisticRegression(class_weight="balanced"), "binary"),
    "softmax newton": (lambda: fm.SoftmaxRegression(solver="newton"), "classes"),
    "softmax lbfgs": (lambda: fm.SoftmaxRegression(solver="lbfgs"), "classes"),
    "gaussian": (lambda: fm.GaussianRegression(), "real"),
    "gaussian heteroscedastic": (lambda: fm.GaussianRegression(heteroscedastic=True), "real"),
}


def _rows(n, sizes):
    """Uneven chunks of rows (sizes, the rest in a last chunk)."""
    return tuple(sizes) + (n - sum(sizes),)


def assert_same_fit(a, b, rtol=1e-6):
    for name in ("params_", "bse_", "coef_", "intercept_"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max(), err_msg=name)
    assert a.loglik_ == pytest.approx(b.loglik_, rel=rtol)
    assert a.nobs_ == b.nobs_ and a.bic_ == pytest.approx(b.bic_, rel=rtol)
    assert a.param_names_ == b.param_names_


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_same_fit_as_in_memory(client, case, weights):
    make, kind = CASES[case]
    X, y = _data(kind)
    sw = np.random.default_rng(1).uniform(0.2, 2.0, X.shape[0]) if weights else None
    ref = make().fit(X, y, sample_weight=sw)
    chunks = _rows(X.shape[0], (1500, 700))
    Xd = da.from_array(X, chunks=(chunks, -1))
    yd = da.from_array(y, chunks=(chunks,))
    swd = None if sw is None else da.from_array(sw, chunks=(chunks,))
    got = make().fit(Xd, yd, sample_weight=swd)
    assert_same_fit(got, ref)
    assert got.n_iter_ == ref.n_iter_
    if hasattr(ref, "classes_"):
        np.testing.assert_array_equal(got.classes_, ref.classes_)


def test_float32_mixed_inputs_and_chunk_layouts(client):
    """float32 X chunked along columns too, NumPy y and weights, y chunked otherwise."""
    X, y = _data("binary", n=3000, d=6)
    X32 = X.astype(np.float32)
    sw = np.linspace(0.5, 1.5, X.shape[0])
    ref = fm.LogisticRegression().fit(X32, y, sample_weight=sw)
    Xd = da.from_array(X32, chunks=(1000, 2))
    assert_same_fit(fm.LogisticRegression().fit(Xd, y, sample_weight=sw), ref)
    yd = da.from_array(y, chunks=700)
    assert_same_fit(fm.LogisticRegression().fit(Xd, yd, sample_weight=sw), ref)
    with pytest.warns(UserWarning, match="column-vector y"):
        got = fm.LogisticRegression().fit(Xd, yd.reshape(-1, 1).rechunk((500, 1)), sample_weight=sw)
    assert_same_fit(got, ref)


def test_streamed_and_persisted_give_the_same_fit(client):
    X, y = _data("classes")
    ref = fm.SoftmaxRegression().fit(X, y)
    Xd, yd = da.from_array(X, chunks=(1000, -1)), da.from_array(y, chunks=1000)
    for persist in (True, False):
        with dask.config.set({"fastmle.persist": persist}):
            assert_same_fit(fm.SoftmaxRegression().fit(Xd, yd), ref)
    with dask.config.set({"fastmle.persist": "sometimes"}):
        with pytest.raises(ValueError, match="fastmle.persist"):
            fm.SoftmaxRegression().fit(Xd, yd)


EMBEDDED = textwrap.dedent("""
    import dask.array as da
    import distributed
    import numpy as np

    import fastmle as fm
    from fastmle.models import _chunks

    if __name__ == "__main__":
        rng = np.random.default_rng(0)
        X = rng.standard_normal((4000, 3))
        y = (X[:, 0] + rng.logistic(size=4000) > 0).astype(int)
        a = fm.LogisticRegression().fit(da.from_array(X, chunks=(1000, 3)), y)
        first = _chunks._embedded
        fm.GaussianRegression().fit(da.from_array(X, chunks=(1000, 3)), X[:, 1] + y)
        assert _chunks._embedded is first  # reused
        try:
            distributed.get_client()
            raise AssertionError("the embedded client became the default")
        except ValueError:
            pass
        b = fm.LogisticRegression().fit(X, y)
        print(len(first.scheduler_info()["workers"]), np.abs(a.params_ - b.params_).max())
""")


def test_embedded_cluster_without_a_client(tmp_path):
    """Without a client, a fit starts a local cluster, reuses it, and the process exits
    cleanly (run in a child process: this module's client is the default here)."""
    script = tmp_path / "fit.py"
    script.write_text(EMBEDDED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    workers, diff = out.stdout.split()
    assert int(workers) == _chunks._cores() and float(diff) < 1e-8


def test_persist_rule(client):
    small = da.zeros((1000, 10), chunks=(500, 10))
    big = da.zeros((int(1.1 * WORKER_MEMORY / 8), 2), chunks=(10**6, 2))  # > half of 2 x 800 MB
    assert _chunks._should_persist(small, client)
    assert not _chunks._should_persist(big, client)


def test_results_travel_but_X_is_never_gathered(client, monkeypatch):
    """No computation of X on the client, and every result the client gathers is of
    size O(p^2) (p parameters), whatever n."""
    X, y = _data("binary", n=20000, d=4)
    Xd, yd = da.from_array(X, chunks=(5000, -1)), da.from_array(y, chunks=5000)
    ref = fm.LogisticRegression().fit(X, y)
    biggest = []
    gather = distributed.Client.gather

    def checked_gather(self, futures, *args, **kwargs):
        out = gather(self, futures, *args, **kwargs)
        parts = out if isinstance(out, list) else [out]
        biggest.append(
            max(
                sum(np.asarray(v).nbytes for v in p if v is not None)
                if isinstance(p, tuple)
                else np.asarray(p).nbytes
                for p in parts
            )
        )
        return out

    def refuse(*args, **kwargs):
        raise AssertionError("X was computed on the client")

    monkeypatch.setattr(distributed.Client, "gather", checked_gather)
    monkeypatch.setattr(da.Array, "__array__", refuse)
    monkeypatch.setattr(da.Array, "compute", refuse)
    got = fm.LogisticRegression().fit(Xd, yd)
    monkeypatch.undo()
    assert_same_fit(got, ref)
    assert biggest and max(biggest) <= 8 * (1 + 2 * 5 * 5) + 64  # loss, G, H: p = 5


def test_predictions_are_dask_arrays(client):
    X, y = _data("classes")
    Xd = da.from_array(X, chunks=(1500, -1))
    soft = fm.SoftmaxRegression().fit(X, y)
    for name in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        out = getattr(soft, name)(Xd)
        assert isinstance(out, da.Array), name
        np.testing.assert_allclose(
            out.compute(), getattr(soft, name)(X), rtol=1e-12, err_msg=name
        ) if out.dtype.kind == "f" else np.testing.assert_array_equal(
            out.compute(), getattr(soft, name)(X)
        )
    Xb, yb = _data("binary")
    logit = fm.LogisticRegression().fit(Xb, yb)
    out = logit.decision_function(da.from_array(Xb, chunks=(1000, -1)))
    assert out.shape == (Xb.shape[0],) and out.chunks[0] == (1000,) * 4
    np.testing.assert_allclose(out.compute(), logit.decision_function(Xb), rtol=1e-12)
    Xg, yg = _data("real")
    gauss = fm.GaussianRegression(heteroscedastic=True).fit(Xg, yg)
    np.testing.assert_allclose(
        gauss.predict_var(da.from_array(Xg, chunks=(999, -1))).compute(),
        gauss.predict_var(Xg),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="features"):
        gauss.predict(da.zeros((10, 3), chunks=5))


def test_bad_dask_inputs(client):
    X, y = _data("binary", n=2000)
    Xd, yd = da.from_array(X, chunks=(500, -1)), da.from_array(y, chunks=500)
    model = fm.LogisticRegression()
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        model.fit(Xd[Xd[:, 0] > 0], yd[Xd[:, 0] > 0])
    bad = X.copy()
    bad[1777, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinity"):
        model.fit(da.from_array(bad, chunks=(500, -1)), yd)
    with pytest.raises(ValueError, match="y contains NaN"):
        model.fit(Xd, da.from_array(np.where(np.arange(2000) == 3, np.nan, y), chunks=500))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        model.fit(Xd, yd + 0.5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        model.fit(Xd, yd * 0)
    with pytest.raises(ValueError, match="negative"):
        model.fit(Xd, yd, sample_weight=da.from_array(-np.ones(2000), chunks=700))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        model.fit(Xd, yd[:-1])
    with pytest.raises(ValueError, match="y contains NaN"):
        fm.GaussianRegression().fit(Xd, da.full(2000, np.inf, chunks=500))
    with pytest.raises(ValueError, match="Complex"):
        model.fit(Xd.astype(np.complex128), yd)


def _npy_rows(path, start, stop):
    return np.load(path, mmap_mode="r")[start:stop]


def _npy_dask(path, rows):
    """A Dask array of an .npy file whose chunks are read by their tasks (a memmap is
    never put in the graph: pickling one copies its data)."""
    m = np.load(path, mmap_mode="r")
    n = m.shape[0]
    return da.concatenate(
        [
            da.from_delayed(
                dask.delayed(_npy_rows)(path, s, min(n, s + rows)),
                (min(n, s + rows) - s,) + m.shape[1:],
                m.dtype,
            )
            for s in range(0, n, rows)
        ]
    )


def test_out_of_core(client, tmp_path):
    """X of 1.8 GB, 2.25 times a worker's 800 MB (more than both together): streamed
    from an .npy memmap each pass, never persisted nor spilled, the same fit as in
    memory."""
    n, d, step = 4_500_000, 50, 500_000
    xpath, ypath = str(tmp_path / "X.npy"), str(tmp_path / "y.npy")
    X = np.lib.format.open_memmap(xpath, mode="w+", dtype=np.float64, shape=(n, d))
    rng = np.random.default_rng(0)
    beta = rng.uniform(-0.3, 0.3, d)
    y = np.empty(n)
    for s in range(0, n, step):
        block = rng.standard_normal((step, d), dtype=np.float32).astype(np.float64)
        X[s : s + step] = block
        y[s : s + step] = rng.random(step) < 1 / (1 + np.exp(-block @ beta))
    X.flush()
    np.save(ypath, y)
    del X
    Xd, yd = _npy_dask(xpath, 75_000), _npy_dask(ypath, 75_000)  # 30 MB chunks of X
    assert not _chunks._should_persist(Xd, client)
    rss = _Peak()
    with rss:
        got = fm.LogisticRegression().fit(Xd, yd)
    ref = fm.LogisticRegression().fit(np.load(xpath, mmap_mode="r"), y)
    assert_same_fit(got, ref)
    assert rss.peak - rss.start < Xd.nbytes / 10, "X came to the client"
    for w in client.run(_worker_memory).values():
        assert w["spilled"] == 0 and w["peak"] < 0.8 * WORKER_MEMORY, w


class _Peak:
    """The client's resident memory, sampled every 10 ms while in the block."""

    def __enter__(self):
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _worker_memory(dask_worker):
    return {
        "spilled": len(getattr(dask_worker.data, "slow", ())),
        "peak": max(dask_worker.monitor.quantities["memory"]),
    }


def test_a_worker_killed_mid_fit(client, monkeypatch):
    """SIGKILL one worker process after the second pass: Dask recomputes its chunks (the
    nanny restarts it) and the fit ends with the in-memory answer, or raises; it never
    returns other coefficients."""
    X, y = _data("classes", n=60000, d=8)
    ref = fm.SoftmaxRegression(solver="lbfgs").fit(X, y)
    Xd = client.persist(da.from_array(X, chunks=(15000, -1)))
    yd = da.from_array(y, chunks=15000)
    pids = client.run(os.getpid)
    passes, killed = [], []
    run_pass = _distributed.DaskProblem._pass

    def pass_and_kill(self, fn, *args):
        passes.append(fn.__name__)
        if len(passes) == 3:
            victim = next(iter(pids.values()))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        return run_pass(self, fn, *args)

    monkeypatch.setattr(_distributed.DaskProblem, "_pass", pass_and_kill)
    try:
        got = fm.SoftmaxRegression(solver="lbfgs").fit(Xd, yd)
    except (distributed.KilledWorker, OSError) as exc:  # a clear error is acceptable
        got = exc
    finally:
        monkeypatch.undo()
    client.wait_for_workers(2, timeout=60)
    assert killed and len(passes) > 3, "the kill did not happen mid-fit"
    deadline = time.monotonic() + 30
    while killed[0] in client.run(os.getpid).values() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert killed[0] not in client.run(os.getpid).values(), "the worker survived"
    if not isinstance(got, Exception):
        assert_same_fit(got, ref)
