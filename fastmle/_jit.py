"""How fastmle compiles: one place for Numba's options.

- Lazy compilation, no signatures: a kernel compiles on its first call for the
  dtypes it is given. The public functions only ever pass float32/float64 data and
  int32/int64 labels, so at most four variants of a kernel exist.
- ``cache=True``: compiled code is written to disk, so a new process loads it
  instead of compiling. If the package directory is read-only, Numba falls back
  to a per-user cache directory; if that is unusable too, a temporary directory
  is used (see :func:`_ensure_cache_dir`).
- ``error_model="numpy"``: division by zero gives inf/nan like NumPy instead of
  raising, which also keeps divisions in loops vectorizable.
- ``boundscheck=False``: every index is validated in Python before a kernel runs.
- Fast-math: only kernels, and only ``KERNEL_FASTMATH`` = {"reassoc", "contract"}
  so that float64 sums vectorize and multiply-adds fuse (point-wise loss formulas
  get "contract" alone: reassociation could round one formula differently in two
  loops); never ``nnan``/``ninf``
  (NaN must propagate) and never in ``_math`` (its range reductions need exact
  IEEE rounding). Results still do not depend on the thread count: sums run over
  fixed chunks whose order is fixed.
"""

from __future__ import annotations

import os
import tempfile

import numba

JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)
# helpers built by factories (closures) are never cached themselves: Numba cannot
# find closures in its cache again. They are compiled into the cached kernels.
HELPER_OPTIONS = dict(JIT_OPTIONS, cache=False)
KERNEL_FASTMATH = {"reassoc", "contract"}
KERNEL_OPTIONS = dict(JIT_OPTIONS, fastmath=KERNEL_FASTMATH)
# point-wise formulas: contraction only, so that a formula evaluates to the same
# bits in every loop that uses it (value-only and value-and-gradient agree exactly)
POINTWISE_OPTIONS = dict(JIT_OPTIONS, fastmath={"contract"})
PARALLEL_OPTIONS = dict(KERNEL_OPTIONS, parallel=True)


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _ensure_cache_dir() -> None:
    """Give Numba a writable cache directory when neither of its defaults is one."""
    if numba.config.CACHE_DIR:
        return
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    if _writable(here):
        return
    from numba.misc.appdirs import AppDirs

    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    if _writable(user):
        return
    fallback = os.path.join(tempfile.gettempdir(), f"fastmle-numba-cache-{os.getuid()}")
    if _writable(fallback):
        numba.config.CACHE_DIR = fallback


_ensure_cache_dir()
