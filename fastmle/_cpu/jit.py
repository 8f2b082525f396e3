"""How fastmle compiles: one place for Numba's options.

- Lazy compilation, no signatures: a kernel compiles on its first call for the
  dtypes it is given. The public functions only ever pass float32/float64 data and
  int32/int64 labels, so at most four variants of a kernel exist.
- ``cache=True``: compiled code is written to disk, so a new process loads it
  instead of compiling. It is never written into the installed package (pip does
  not know those files: they would survive ``pip uninstall`` and shadow a later
  editable install). The kernels of this package are cached in
  ``<cache>/fastmle/<version>/fastmle_<hash of the package path>``, where
  ``<cache>`` is ``NUMBA_CACHE_DIR`` when set, else the platform's per-user cache
  directory (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on
  macOS, ``%LOCALAPPDATA%`` on Windows); if that cannot be written, a per-user
  directory in the temporary directory, used only if it is private (Numba loads
  pickled code from its cache), else a directory for this process alone (see
  :func:`cache_root`). Other Numba functions in the process keep Numba's own cache
  locations.
- The cache of a kernel is invalidated when any source file of ``fastmle/_cpu``
  (the folder that holds every Numba CPU kernel, and only those) or the call
  records they import (``fastmle/_calls.py``) changes, not only the kernel's own
  file (Numba's default): kernels inline the helpers of ``numerics.py`` and
  ``rows.py``, and a stale copy of those would survive an edit or an upgrade
  otherwise (see :func:`_install_package_stamp`).
- Helpers that only compiled code calls are declared with :func:`inner`: no
  CPython or C entry point (unused, and ~30 ms of compilation each); called from
  Python they raise ``TypeError``. Drivers and the few functions Python calls keep
  ``numba.njit``.
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
import re
import stat
import sys
import tempfile

import numba
from numba.core import caching
from numba.core.registry import CPUDispatcher

JIT_OPTIONS = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)
# helpers built by factories (closures) are never cached themselves: Numba cannot
# find closures in its cache again. They are compiled into the cached kernels.
HELPER_OPTIONS = dict(JIT_OPTIONS, cache=False)
KERNEL_FASTMATH = {"reassoc", "contract"}
KERNEL_OPTIONS = dict(JIT_OPTIONS, fastmath=KERNEL_FASTMATH)
# point-wise formulas: no fast-math at all, so that a formula evaluates to the same
# bits in every loop that uses it (value-only and value-and-gradient agree exactly)
POINTWISE_OPTIONS = dict(JIT_OPTIONS)
# drivers (a range of chunks, run on fastmle's threads: ``threads.run_pieces``): no
# fast-math (LLVM inlines the helpers they call, and the drivers' flags would then
# reach the point-wise formulas)
DRIVER_OPTIONS = dict(JIT_OPTIONS)


class _InnerDispatcher(CPUDispatcher):
    """A helper without a Python entry point: called from Python, it raises (calling
    into the missing wrapper would crash the interpreter)."""

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.py_func.__module__}.{self.py_func.__qualname__} is a kernel helper "
            "that only compiled code can call; use its .py_func from Python"
        )


# Numba's CPython and C wrappers: a helper that only compiled code calls does without
NO_WRAPPERS = dict(no_cpython_wrapper=True, no_cfunc_wrapper=True)


def inner(**options):
    """``numba.njit(**options)`` for a helper that only compiled code calls: built
    without Numba's CPython and C wrappers, which cost ~30 ms of compilation per
    function and are never used (20 chained helpers: 2.06 s -> 1.46 s to compile;
    a LogisticRegression's first fit 3.9 -> 3.4 s CPU, measured)."""

    def decorate(fn):
        disp = numba.njit(**NO_WRAPPERS, **options)(fn)
        if isinstance(disp, CPUDispatcher):  # not under NUMBA_DISABLE_JIT
            disp.__class__ = _InnerDispatcher
        return disp

    return decorate


_KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))  # fastmle/_cpu
_PACKAGE_DIR = os.path.dirname(_KERNEL_DIR)
_KERNEL_INPUTS = ("_calls.py",)  # modules outside _cpu whose constants kernels compile in
_stamp: str | None = None
_roots: dict = {}  # (NUMBA_CACHE_DIR, platform cache dir) -> the cache root in use


def _version() -> str:
    """fastmle's version, read from ``__init__.py`` (this module runs while the
    package is still being imported, before ``__version__`` exists)."""
    try:
        with open(os.path.join(_PACKAGE_DIR, "__init__.py"), encoding="utf-8") as f:
            m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", f.read(), re.M)
    except OSError:
        m = None
    return re.sub(r"[^A-Za-z0-9._+-]", "_", m.group(1)) if m else "unknown"


def _user_cache_dir() -> str | None:
    """The platform's per-user cache directory (no ``fastmle`` part yet)."""
    home = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(home, "Library", "Caches")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(home, ".cache")
    return base if os.path.isabs(base) else None


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()  # what Numba checks before it saves
    except OSError:
        return False
    return True


def _private(path: str) -> bool:
    """A directory in a shared place (the temporary directory) is used only if this
    user made it and no one else can write to it: Numba loads pickled code from its
    cache, so a directory another user prepared could run their code."""
    if not hasattr(os, "getuid"):
        return True
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.getuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _user_id() -> str:
    if hasattr(os, "getuid"):
        return str(os.getuid())
    try:
        import getpass

        return re.sub(r"[^A-Za-z0-9._-]", "_", getpass.getuser())
    except Exception:  # no user name on this platform: one shared directory
        return "user"


def cache_root() -> str | None:
    """The directory this package's compiled kernels are cached in (below it, one
    folder per package location): NUMBA_CACHE_DIR or the user's cache directory, else
    a per-user directory in the temporary directory (if it is private), else a fresh
    directory for this process only; None if nothing can be written (Numba's own
    locators are then tried). Checked once per process and setting."""
    key = (
        numba.config.CACHE_DIR or "",
        os.environ.get("XDG_CACHE_HOME", ""),
        os.environ.get("LOCALAPPDATA", ""),
        os.path.expanduser("~"),
    )
    if key in _roots:
        return _roots[key]
    version = _version()
    shared = os.path.join(tempfile.gettempdir(), f"fastmle-numba-cache-{_user_id()}")
    candidates = [numba.config.CACHE_DIR or _user_cache_dir(), shared]
    root = None
    for base in candidates:
        if base == shared and not _private(shared):
            continue
        if base and _writable(os.path.join(base, "fastmle", version)):
            root = os.path.join(base, "fastmle", version)
            break
    if root is None:  # this process only: a fresh private directory, removed at exit
        try:
            root = tempfile.mkdtemp(prefix="fastmle-numba-cache-")
        except OSError:
            root = None  # nothing writable at all: Numba's own locators are tried
        else:
            import atexit
            import shutil

            atexit.register(shutil.rmtree, root, True)
    _roots[key] = root
    return root


def _package_stamp() -> str:
    """A hash of every module the kernels are built from: the files of ``_cpu`` and
    ``_KERNEL_INPUTS`` (computed once per process, about 1 ms)."""
    global _stamp
    if _stamp is None:
        h = hashlib.sha256()
        files = [os.path.join(_KERNEL_DIR, n) for n in sorted(os.listdir(_KERNEL_DIR))]
        files += [os.path.join(_PACKAGE_DIR, n) for n in _KERNEL_INPUTS]
        for path in files:
            if path.endswith(".py"):
                with open(path, "rb") as f:
                    h.update(os.path.basename(path).encode() + b"\0" + f.read())
        _stamp = h.hexdigest()
    return _stamp


class _PackageStampMixin:
    def get_source_stamp(self):
        return _package_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _KERNEL_DIR:
            return None  # not ours: Numba's own locators handle it
        return super().from_function(py_func, py_file)


class _PackageCacheLocator(_PackageStampMixin, caching._CacheLocator):
    """This package's kernels, cached under :func:`cache_root`, never in the package."""

    def __init__(self, py_func, py_file, root):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(root, self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    def get_disambiguator(self):
        return str(self._lineno)

    def ensure_cache_path(self):
        # the root was probed for writability once (cache_root): a makedirs is enough
        os.makedirs(self._cache_path, exist_ok=True)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _KERNEL_DIR:
            return None  # not ours: Numba's own locators handle it
        root = cache_root()
        if root is None:
            return None
        self = cls(py_func, py_file, root)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


def _install_package_stamp() -> None:
    """Put this package's locator first, then package-stamped twins of Numba's
    file-backed locators (used only if :func:`cache_root` finds nothing writable)."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    names = ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    bases = [getattr(caching, n, None) or getattr(caching, "_" + n, None) for n in names]
    if impl is None or None in bases or not hasattr(caching, "_CacheLocator"):
        return  # an unknown Numba layout: keep its per-file stamps
    if any(issubclass(c, _PackageStampMixin) for c in impl._locator_classes):
        return
    ours = [type("Package" + b.__name__.lstrip("_"), (_PackageStampMixin, b), {}) for b in bases]
    impl._locator_classes = [_PackageCacheLocator, *ours, *impl._locator_classes]


_install_package_stamp()
