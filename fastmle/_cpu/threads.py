"""fastmle's threads: serial Numba kernels over ranges of fixed chunks, run in parallel.

Every CPU kernel is a serial ``nogil`` Numba function over a range of chunks
``[c0, c1)`` that writes each chunk's results (partial sums included) to that
chunk's own place; :func:`run_pieces` deals contiguous pieces of the chunks to a
small pool of Python threads, the caller being one of them, and the GIL is
released inside each kernel. The partial sums are then added in chunk order, so
the results do not depend on the number of threads or on which thread ran what.

Why not Numba's ``parallel=True``: compiling a parallel loop added ~3 s per
kernel (the first call of an element-wise loss took 13 s cold, of the logistic
fit 10 s; 5 s and 5 s without it, measured), and its threading layers differ in
what they survive (``workqueue`` aborts when two Python threads enter a parallel
kernel at once, GNU OpenMP kills forked children; ``shared/NOTES.md``). The pool
needs no threading layer: the same speed whatever ``NUMBA_THREADING_LAYER`` says,
many calling threads and forked workers by construction (a forked child starts a
new pool). The thread count is Numba's: ``NUMBA_NUM_THREADS``, or
``numba.set_num_threads`` in the calling thread.
"""

from __future__ import annotations

import itertools
import os
import threading

import numba

__all__ = ["map_threads", "n_threads", "run_pieces"]

PIECES_PER_THREAD = 4  # claimed one at a time: a slow (shared) core holds up less work

_pool = None
_pool_size = 0
_pool_lock = threading.Lock()
_in_pool = threading.local()


def n_threads() -> int:
    """Numba's thread count (``NUMBA_NUM_THREADS``, or ``numba.set_num_threads`` in
    this thread), without starting Numba's own threads when nothing has."""
    from numba.np.ufunc import parallel

    if parallel._is_initialized:
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS


def _mark_pool_thread() -> None:
    _in_pool.active = True


def _get_pool(workers: int):
    global _pool, _pool_size
    with _pool_lock:  # callers in several threads at first use make one pool
        if _pool is None or _pool_size < workers:
            from concurrent.futures import ThreadPoolExecutor

            old = _pool
            _pool_size = max(workers, numba.config.NUMBA_NUM_THREADS - 1)
            _pool = ThreadPoolExecutor(
                _pool_size, thread_name_prefix="fastmle", initializer=_mark_pool_thread
            )
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _forget_pool() -> None:
    global _pool, _pool_size, _pool_lock
    # a forked child has none of the parent's threads, and maybe a held lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def run_pieces(fn, n: int, *args, threads: int | None = None) -> None:
    """Call ``fn(i0, i1, *args)`` on contiguous pieces that cover ``range(n)``, on up
    to :func:`n_threads` threads (the caller is one of them).

    Which thread runs which piece varies from call to call, so ``fn`` must write
    each index's results to its own place. Runs inline, on the calling thread, for
    one piece, one thread, or when called from one of the pool's threads.
    """
    t = min(n, n_threads() if threads is None else threads)
    if t <= 1 or getattr(_in_pool, "active", False):
        if n:
            fn(0, n, *args)
        return
    # one piece per thread for small calls: each extra piece costs a GIL hand-off,
    # ~0.05 ms on these VMs (as much as a piece of 1000 rows x 50)
    pieces = t if n < 16 * t else PIECES_PER_THREAD * t
    bounds = [n * k // pieces for k in range(pieces + 1)]
    claim = itertools.count()  # next() is atomic under the GIL

    def work():
        k = next(claim)
        while k < pieces:
            fn(bounds[k], bounds[k + 1], *args)
            k = next(claim)

    try:
        futures = [_get_pool(t - 1).submit(work) for _ in range(t - 1)]
    except RuntimeError:  # the interpreter is shutting down: no new threads
        futures = []
    work()
    for f in futures:
        if not f.cancel():  # a helper that has not started finds nothing left to do
            f.result()


def map_threads(fn, *iterables) -> list:
    """``list(map(fn, *iterables))``, the calls spread over fastmle's threads (for
    functions that release the GIL, such as BLAS products)."""
    items = list(zip(*iterables))
    results = [None] * len(items)

    def piece(i0, i1):
        for i in range(i0, i1):
            results[i] = fn(*items[i])

    run_pieces(piece, len(items))
    return results
