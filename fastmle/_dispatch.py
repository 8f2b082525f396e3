"""Which backend runs a call, and what a backend is.

The backend is chosen from the arguments: a CUDA device array as ``input`` runs on
the GPU (``fastmle.cuda``), a Dask array among the arguments runs lazily on Dask
(``fastmle.dask``), everything else runs on the CPU (``fastmle._cpu``). A backend is
imported on the first call that needs it (``import fastmle`` imports neither Dask
nor ``numba.cuda``).

Adding a backend
----------------
A backend is a module with these functions (the CPU one, ``fastmle._cpu.backend``,
is the reference; ``fastmle.cuda._backend`` and ``fastmle.dask._backend`` are the
others), registered in :func:`backend`:

``input(a, name)``
    ``a`` as the backend's array in the computation dtype (float32 stays float32,
    float16 becomes float32, float64/integers/bool become float64; a backend may
    refuse what it cannot convert, naming ``name``).
``operand(a, name, dtype)``
    An auxiliary argument (host data or the backend's array) in ``dtype``.
``array(a)``
    A class-index target as given (its dtype decides what it is), as an array with
    ``shape`` and ``dtype``.
``ones(n, dtype)``
    The implicit all-ones weight of length ``n``.
``pointwise(call)``, ``cross_entropy(call)``, ``softmax(call)``
    Run the records of ``fastmle._calls``; what they return is documented there.

The argument rules (``fastmle._rules``) are applied by the public functions to the
adopted arrays, once, for every backend; a backend checks only what depends on its
memory (contiguity, ``out=``) and the values (``_calls.ValueRule``, class indices).
"""

from __future__ import annotations

from ._kinds import is_dask, is_device
from ._rules import check_broadcasts

__all__ = ["backend", "broadcast_operand"]


def backend(input, *others):
    """The backend module for a call with these array arguments."""
    if is_device(input):
        from .cuda import _backend
    elif is_dask(input) or any(is_dask(a) for a in others):
        from .dask import _backend
    else:
        from ._cpu import backend as _backend
    return _backend


def broadcast_operand(be, a, name: str, x):
    """Optional operand ``a`` (weight, pos_weight, target) in ``x``'s dtype, broadcasting
    to ``x``'s shape; absent (None): a single one."""
    if a is None:
        return be.ones(1, x.dtype)
    return check_broadcasts(be.operand(a, name, x.dtype), name, x.shape)
