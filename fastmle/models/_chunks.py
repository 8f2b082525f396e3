"""Where the rows live when they are a Dask array: the client (current or embedded),
the workers' thread budget, the checks of a Dask X, and chunk-wise maps and
reductions. Imports nothing of the solver, so the scikit-learn layer (``_base``) and
the estimators can use it; the solver's passes on a cluster are ``_distributed``.
"""

from __future__ import annotations

import atexit
import contextlib
import os

import numpy as np

from .._kinds import is_dask

PERSIST_FRACTION = 0.5  # persist X when it takes at most this part of the workers' memory
REPLICATE_FRACTION = 0.2  # a streamed fit copies y to every worker if it takes at most this


# -- the client ----------------------------------------------------------------------

_embedded = None


def get_client():
    """The current ``distributed`` client, else the embedded local cluster's."""
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "fitting Dask arrays needs dask.distributed: pip install 'fastmle[dask]'"
        ) from None
    try:
        return distributed.get_client()
    except ValueError:
        pass
    global _embedded
    if _embedded is None or _embedded.status != "running":
        cluster = distributed.LocalCluster(
            n_workers=_cores(), threads_per_worker=1, processes=True, dashboard_address=None
        )
        # not the default client: the user's own dask computations stay where they were
        _embedded = distributed.Client(cluster, set_as_default=False)
        atexit.register(_close_embedded)
    return _embedded


def _close_embedded() -> None:
    global _embedded
    if _embedded is not None:
        cluster = _embedded.cluster
        _embedded.close()
        cluster.close()
        _embedded = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _host_threads(client) -> dict:
    """The number of Dask threads on each host of the cluster."""
    from distributed.comm import get_address_host

    out: dict = {}
    for addr, w in client.scheduler_info(n_workers=-1)["workers"].items():
        host = get_address_host(addr)
        out[host] = out.get(host, 0) + w["nthreads"]
    return out


def _prepare_worker(host_threads: dict) -> None:
    """Set up the worker running this task: Numba threads (cores / Dask threads on the
    host) and, once per process, malloc's mmap threshold.

    distributed's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which also
    freezes glibc's mmap threshold at 128 KiB: every temporary of a block of rows (a few
    MB) is then an mmap, page faults and an munmap, and fits ran 1.3-3x slower on the
    workers than in memory. Raising the threshold to 64 MiB gives them back the heap;
    trimming, which returns freed memory to the system, is unchanged.
    """
    import numba
    from distributed import get_worker
    from distributed.comm import get_address_host

    global _malloc_set
    try:
        busy = host_threads.get(get_address_host(get_worker().address), 1)
    except ValueError:  # not on a worker (a synchronous scheduler)
        return
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, _cores() // busy)))
    if not _malloc_set:
        _malloc_set = True
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6").mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD (glibc)


_malloc_set = False


# -- checks and conversions of Dask inputs --------------------------------------------


def check_X(X):
    """A Dask X as the fit takes it: 2-D, numeric, known chunk sizes, chunked by rows
    only (the columns are joined into one chunk)."""
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: pass real values")
    if X.ndim == 2 and any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError(
            "X has unknown chunk sizes (from a Dask DataFrame or a boolean mask): "
            "call X.compute_chunk_sizes() or to_dask_array(lengths=True) first"
        )
    if X.dtype.kind not in "biuf":
        X = X.astype(np.float64)
    if X.ndim == 2 and len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def rows_like(X, *arrays):
    """``arrays`` (y, sample_weight: NumPy, Dask, a scalar or None) as Dask arrays
    chunked like the rows of X, persisted for the fit. One of another length is
    returned as it is, for the usual checks to report."""
    import dask.array as da

    n = X.shape[0]
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        if not is_dask(a):
            a = np.asarray(a)
            a = np.full(n, a, dtype=np.float64) if a.ndim == 0 else a
        if a.ndim == 0 or a.shape[0] != n:
            out.append(a)
            continue
        chunks = (X.chunks[0],) + tuple((s,) for s in a.shape[1:])
        out.append(a.rechunk(chunks) if is_dask(a) else da.from_array(a, chunks=chunks))
    held = [a for a in out if is_dask(a)]
    persisted = iter(get_client().persist(held, optimize_graph=False) if held else [])
    return [next(persisted) if is_dask(a) else a for a in out]


def _chunks(a) -> list:
    """The row chunks of a Dask array as Delayed objects, in order."""
    return list(a.to_delayed(optimize_graph=False).ravel())


def reduce_chunks(fn, *arrays) -> list:
    """``fn`` on each row chunk of the aligned arrays (None is passed as None), computed
    on the cluster: the list of results, in chunk order."""
    import dask

    cols = [_chunks(a) if a is not None else None for a in arrays]
    m = len(next(c for c in cols if c is not None))
    task = dask.delayed(fn, pure=False)
    tasks = [task(*[None if c is None else c[i] for c in cols]) for i in range(m)]
    client = get_client()
    return client.gather(client.compute(tasks, optimize_graph=False))


def map_chunks(fn, *arrays, dtype, **kwargs):
    """``fn(*row chunks, **kwargs)`` as a Dask array of ``dtype``, chunked as the arrays."""
    import dask.array as da

    return da.map_blocks(fn, *arrays, dtype=dtype, meta=np.empty((0,), dtype), **kwargs)


def map_rows_2d(fn, X, probe, token: str):
    """``fn`` over the row chunks of X (2-D) as a Dask array named after ``token``, the
    output of each chunk shaped and typed like ``probe`` (fn's output on one row)."""
    tail = probe.shape[1:]
    kw = dict(
        dtype=probe.dtype,
        meta=np.empty((0,) + tail, probe.dtype),
        token=token,
        chunks=(X.chunks[0],) + tuple((s,) for s in tail),
    )
    return X.map_blocks(fn, **kw) if tail else X.map_blocks(fn, drop_axis=1, **kw)


# -- the problem ----------------------------------------------------------------------


def _memory_limits(client) -> list:
    """Each worker's memory limit in bytes (0: none)."""
    return [
        w.get("memory_limit") or 0 for w in client.scheduler_info(n_workers=-1)["workers"].values()
    ]


def _should_persist(X, client) -> bool:
    import dask

    setting = dask.config.get("fastmle.persist", "auto")
    if setting != "auto":
        if not isinstance(setting, bool):
            raise ValueError(
                f"dask config fastmle.persist must be 'auto', True or False, got {setting!r}"
            )
        return setting
    limits = _memory_limits(client)
    if not limits or not all(limits):
        return True  # no memory limit
    return X.nbytes <= PERSIST_FRACTION * sum(limits)


def _replicable(y, sw, client) -> bool:
    """Whether y and sample_weight take at most REPLICATE_FRACTION of every worker's
    memory limit (or the workers have none)."""
    size = y.nbytes + (0 if sw is None else sw.nbytes)
    return all(size <= REPLICATE_FRACTION * m for m in _memory_limits(client) if m)


def _bundle(*arrays) -> tuple:
    return arrays
