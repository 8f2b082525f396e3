"""asv benchmarks of fits on Dask arrays: time, and the ratio to the in-memory fit.

Skipped (``setup`` raises NotImplementedError) without dask.distributed or for
builds whose estimators do not take Dask arrays. The cluster is a LocalCluster of
2 single-threaded workers as threads of the benchmark process (worker processes
would need the benchmark runner to be importable by spawned children), with X
persisted on it before timing (sizes of ``bench_estimators``, tiny with
FASTMLE_BENCH_SMOKE=1); ``benchmarks/dask_fits.py`` measures the same with
worker processes and against dask-ml.
"""

from __future__ import annotations

import time
import warnings

from .bench_estimators import MODELS, _fastmle, _problem

CHUNKS = 2  # one per worker thread


def _dask_ready():
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise NotImplementedError("dask.distributed is not installed") from None
    try:
        from fastmle.models import _distributed  # noqa: F401
    except ImportError:
        raise NotImplementedError("this build does not fit Dask arrays") from None


def _best(fit, runs=3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fit()
        best = min(best, time.perf_counter() - t0)
    return best


class DaskFit:
    """Fit time on a persisted Dask array, and its ratio to the in-memory fit."""

    params = (list(MODELS),)
    param_names = ("model",)
    timeout = 300

    def setup(self, model):
        _dask_ready()
        _fastmle(model)
        import dask.array as da
        import distributed

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.cluster = distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
            )
        self.client = distributed.Client(self.cluster)
        self.X, self.y = _problem(model)
        step = -(-self.X.shape[0] // CHUNKS)
        self.Xd = self.client.persist(da.from_array(self.X, chunks=(step, -1)))
        self.yd = self.client.persist(da.from_array(self.y, chunks=step))
        _fastmle(model).fit(self.Xd[:1000], self.yd[:1000])  # compile / load

    def teardown(self, model):
        self.client.close()
        self.cluster.close()

    def time_fit(self, model):
        _fastmle(model).fit(self.Xd, self.yd)

    def track_ratio_to_in_memory(self, model):
        dask_s = _best(lambda: _fastmle(model).fit(self.Xd, self.yd))
        memory_s = _best(lambda: _fastmle(model).fit(self.X, self.y))
        return dask_s / memory_s

    track_ratio_to_in_memory.unit = "x the in-memory fit time"
