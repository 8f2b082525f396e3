"""Threading-layer set-up, so kernels survive Python threads and forked workers.

Numba fixes its threading layer at the first parallel launch. Measured on these
machines (``shared/NOTES.md``): ``workqueue`` aborts the process when two Python
threads enter a parallel kernel at once, GNU ``omp`` kills a forked child that
calls one, ``tbb`` handles both. So:

1. If the user chose a layer (``NUMBA_THREADING_LAYER``), it is respected.
2. Otherwise, if Intel TBB is installed (``pip install fastmle[tbb]``; the
   ``tbb`` wheel puts ``libtbb.so.12`` in ``<prefix>/lib``, which is not on the
   loader path of a virtual environment), the library is loaded by absolute path
   and Numba is told to use ``tbb``; without TBB, ``workqueue``.
3. Whatever layer ends up active, calls are serialized through a lock when it is
   ``workqueue`` (the only layer that is not thread-safe), so concurrent callers
   wait instead of crashing.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading

import numba

__all__ = ["launch", "threading_layer"]


def _load_tbb() -> bool:
    prefixes = dict.fromkeys([sys.prefix, sys.exec_prefix, sys.base_prefix])
    for prefix in prefixes:
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            return True
    return False


def _configure() -> None:
    if "NUMBA_THREADING_LAYER" in os.environ:
        return
    if numba.config.THREADING_LAYER != "default":
        return
    # without TBB, choose workqueue (made thread-safe by the lock below) over
    # GNU OpenMP, which kills forked children
    numba.config.THREADING_LAYER = "tbb" if _load_tbb() else "workqueue"


_configure()

_lock = threading.Lock()
_serialize: bool | None = None  # None until the first launch tells us the layer


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a lock held by a parent thread would deadlock the child


os.register_at_fork(after_in_child=_reset_after_fork)


def launch(kernel, *args):
    """Call a ``parallel=True`` kernel, serialized if the threading layer needs it."""
    global _serialize
    if _serialize is False:
        return kernel(*args)
    with _lock:
        result = kernel(*args)
        if _serialize is None:
            _serialize = numba.threading_layer() == "workqueue"
    return result


def threading_layer() -> str:
    """The Numba threading layer in use ('tbb', 'omp', 'workqueue'), or 'unset'."""
    try:
        return numba.threading_layer()
    except ValueError:
        return "unset"
