"""How fastmle compiles: one place for Numba's options.

- Lazy compilation, no signatures: a kernel compiles on its first call for the
  dtypes it is given. The public functions only ever pass float32/float64 data and
  int32/int64 labels, so at most four variants of a kernel exist.
- ``cache=True``: compiled code is written to disk, so a new process loads it
  instead of compiling. If the package directory is read-only, Numba falls back
  to a per-user cache directory; if that is unusable too, a temporary directory
  is used (see :func:`_ensure_cache_dir`).
- The cache of a kernel is invalidated when any source file of the package
  changes, not only the kernel's own file (Numba's default): kernels inline the
  helpers of ``_math.py`` and ``_rows.py``, and a stale copy of those would
  survive an edit or an upgrade otherwise (see :func:`_install_package_stamp`).
- ``error_model="numpy"``: division by zero gives inf/nan like NumPy instead of
  raising, which also keeps divisions in loops vectorizable.
- ``boundscheck=False``: every index is validated in Python before a kernel runs.
- Fast-math: none for the scalar math helpers (``_math``: its range reductions
  need exact IEEE rounding) and the point-wise loss formulas. Not even
  "contract": whether the backend fuses a multiply-add depends on how the product
  is used, so one formula rounded differently in the loss-only and the
  loss-and-gradient loops (measured on 18% of Gaussian NLL elements). The other
  kernels get ``KERNEL_FASTMATH`` = {"reassoc", "contract"} so that float64 sums
  vectorize. Never ``nnan``/``ninf``: NaN must propagate. Results do not depend
  on the thread count: sums run over fixed chunks, added in a fixed order.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import numba
from numba.core import caching

JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)
# helpers built by factories (closures) are never cached themselves: Numba cannot
# find closures in its cache again. They are compiled into the cached kernels.
HELPER_OPTIONS = dict(JIT_OPTIONS, cache=False)
KERNEL_FASTMATH = {"reassoc", "contract"}
KERNEL_OPTIONS = dict(JIT_OPTIONS, fastmath=KERNEL_FASTMATH)
# point-wise formulas: no fast-math at all, so that a formula evaluates to the same
# bits in every loop that uses it (value-only and value-and-gradient agree exactly)
POINTWISE_OPTIONS = dict(JIT_OPTIONS)
# parallel drivers: no fast-math (LLVM inlines the helpers they call, and the
# drivers' flags would then reach the point-wise formulas)
PARALLEL_OPTIONS = dict(JIT_OPTIONS, parallel=True)


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

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_stamp: str | None = None


_NO_KERNELS = {"__main__.py", "bench.py"}  # editing these must not recompile the kernels


def _package_stamp() -> str:
    """A hash of every module of the package that kernels are built from (computed
    once per process)."""
    global _stamp
    if _stamp is None:
        h = hashlib.sha256()
        for name in sorted(os.listdir(_PACKAGE_DIR)):
            if name.endswith(".py") and name not in _NO_KERNELS:
                with open(os.path.join(_PACKAGE_DIR, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read())
        _stamp = h.hexdigest()
    return _stamp


class _PackageStampMixin:
    def get_source_stamp(self):
        return _package_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _PACKAGE_DIR:
            return None  # not ours: Numba's own locators handle it
        return super().from_function(py_func, py_file)


def _install_package_stamp() -> None:
    """Put package-stamped twins of Numba's file-backed cache locators first."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    names = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    bases = [getattr(caching, n, None) or getattr(caching, "_" + n, None) for n in names]
    if impl is None or None in bases:
        return  # an unknown Numba layout: keep its per-file stamps
    if any(issubclass(c, _PackageStampMixin) for c in impl._locator_classes):
        return
    ours = [type("Package" + b.__name__.lstrip("_"), (_PackageStampMixin, b), {}) for b in bases]
    impl._locator_classes = ours + list(impl._locator_classes)


_install_package_stamp()
