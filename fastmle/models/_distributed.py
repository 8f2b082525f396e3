"""Fitting on Dask arrays: every pass of the solver is one round of tasks on a cluster.

Design
------
- **One task per chunk and pass.** X is split in chunks of rows (its columns in one
  chunk). A pass of the solver (objective and gradient, plus the Hessian for Newton
  steps; the least-squares start) sends one task per chunk, which runs the same
  function of row blocks as an in-memory fit (``_solver.nll_sums``, ...) on its
  chunk and returns partial sums of O(k d) numbers (O(k^2 d^2) with the Hessian).
  The client adds them in chunk order, so the result does not depend on which
  worker answered first, and takes the solver's step. X never leaves the workers.
- **Persisted or streamed.** By default (dask config key ``fastmle.persist`` =
  ``"auto"``; ``True`` or ``False`` force either way), X is persisted on the workers
  once, at the start of the fit, when it takes at most half of their total
  ``memory_limit`` (or they have none), and released at the end of the fit. A
  larger X is streamed: each pass loads its chunks again from their source (a
  zarr- or memmap-backed array), and a worker holds a chunk or so per thread at a
  time (distributed queues root tasks), so X can be many times the workers'
  memory. y and sample_weight (1/d of X) are always persisted for the fit, chunk i
  of each in one key with chunk i of a persisted X, and the task of chunk i sent to
  the worker holding that key; with a streamed X, which any worker may load, they
  are copied to every worker when they take at most ``REPLICATE_FRACTION`` of its
  memory limit. Chunks of 32-128 MB work best: each task costs the
  scheduler a few ms, a pass is as slow as its slowest chunk.
- **Client.** The current ``distributed`` client (``Client(address)`` made the
  default, or ``with client.as_current():``); without one, an embedded
  ``LocalCluster`` with one single-threaded worker process per core, started on the
  first Dask fit, reused by later fits and closed at exit. Workers must be able to
  import fastmle.
- **Workers.** A task runs the Numba kernels on (cores / Dask threads on its host)
  threads, so Dask's threads and Numba's do not oversubscribe the cores, and raises
  glibc's mmap threshold once per worker process (see :func:`_prepare_worker`).
- **Failures.** Chunks lost with a worker (persisted ones included) are recomputed
  by Dask from their source; a task whose workers keep dying raises distributed's
  ``KilledWorker``. The partial sums of a pass are only added once every chunk has
  answered, so a fit either completes exactly or raises.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from ._chunks import (
    _bundle,
    _chunks,
    _host_threads,
    _prepare_worker,
    _replicable,
    _should_persist,
    get_client,
    reduce_chunks,
)
from ._solver import Problem, add_sums, row_blocks


def _chunk_pass(fn, rows, X, check, host_threads, *args):
    """One chunk's part of a pass, on a worker: ``fn`` over its row blocks. ``rows``:
    the chunk's (X or None, y, sample_weight) as persisted; ``X``: the chunk of X
    streamed for this pass, if it is not persisted."""
    _prepare_worker(host_threads)
    X0, y, sw, off, grp = rows
    return fn(row_blocks(X0 if X is None else X, y, sw, off, grp), check, *args)


class DaskProblem(Problem):
    """:class:`~fastmle.models._solver.Problem` on Dask arrays: each pass is one task
    per row chunk on the cluster, the partial sums added on the client in chunk order.
    X is persisted on the workers for the fit, or streamed each pass (see the module's
    docstring)."""

    def __init__(
        self, X, y, sw, family, mask, alpha, verbose=0, offset=None, groups=None, robust=None
    ):
        import dask

        self.client = get_client()
        self.persisted = _should_persist(X, self.client)
        self._threads = _host_threads(self.client)
        xs, ys = _chunks(X), _chunks(y)
        ss = [None] * len(xs) if sw is None else _chunks(sw)
        os_ = [None] * len(xs) if offset is None else _chunks(offset)
        gs = [None] * len(xs) if groups is None else _chunks(groups)
        # chunk i of X (if persisted), y and sample_weight in one key, and each pass's
        # task for chunk i sent to the worker holding it: the scheduler alone sometimes
        # swaps them, and each task then fetches the other's chunk
        bundle = dask.delayed(_bundle, pure=False)
        self._rows = self.client.compute(
            [
                bundle(x if self.persisted else None, yc, sc, oc, gc)
                for x, yc, sc, oc, gc in zip(xs, ys, ss, os_, gs)
            ],
            optimize_graph=False,
        )
        self._xs = None if self.persisted else xs
        self._where = [None] * len(xs)
        if self.persisted:
            import distributed

            with self.client.as_current():  # wait() takes the default client
                distributed.wait(self._rows)
            where = self.client.who_has(self._rows)
            self._where = [list(where.get(f.key, ())) or None for f in self._rows]
        elif _replicable(y, sw, self.client):
            # a streamed chunk of X is loaded by any worker: with y and the weights on
            # every worker, none has to fetch them (each pass, for each chunk)
            self.client.replicate(self._rows)
        super().__init__(X, y, sw, family, mask, alpha, verbose, offset, groups, robust)
        if verbose:
            print(
                f"fitting on {self.client}: X {'persisted' if self.persisted else 'streamed'}"
                f", {len(xs)} chunks",
                file=sys.stderr,
            )

    def __exit__(self, *exc):
        # dropping the references releases what was persisted for this fit
        self._rows = self._xs = None
        return False

    def _weight_sum(self) -> float:
        if self.sw is None:
            return float(self.X.shape[0])
        return float(sum(reduce_chunks(np.sum, self.sw)))

    def _pass(self, fn, *args) -> tuple:
        import dask

        check, client = not self.checked, self.client
        task = dask.delayed(_chunk_pass, pure=False)
        xs = [None] * len(self._rows) if self.persisted else self._xs
        tasks = []
        for rows, x, where in zip(self._rows, xs, self._where):
            pin = (
                dask.annotate(workers=where, allow_other_workers=True)
                if where
                else contextlib.nullcontext()
            )
            with pin:
                tasks.append(task(fn, rows, x, check, self._threads, *args))
        futures = client.compute(tasks, optimize_graph=False)
        parts = client.gather(futures)
        self.checked = True
        return add_sums(parts)
