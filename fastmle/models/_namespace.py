"""Arrays of other libraries of the array API standard (CuPy, JAX, array_api_strict):
their namespace, host copies and the checks of an X the estimators fit where it
lives (``_arrays``). ``array_api_compat`` is imported on first use only."""

from __future__ import annotations

import numpy as np


def namespace(X):
    """The array API namespace of X (``array_api_compat``'s adapter for NumPy/CuPy)."""
    try:
        import array_api_compat
    except ImportError:
        raise ImportError(
            f"fitting a {type(X).__module__}.{type(X).__name__} needs array-api-compat: "
            'pip install "fastmle[cuda]" (or pip install array-api-compat)'
        ) from None
    return array_api_compat.array_namespace(X)


def to_host(a) -> np.ndarray:
    """``a`` as a NumPy array: itself if it is one, else a host copy (CuPy, torch: from
    their device; host memory through DLPack; others through ``__array__``)."""
    if isinstance(a, np.ndarray):
        return a
    import array_api_compat

    if array_api_compat.is_cupy_array(a) or array_api_compat.is_torch_array(a):
        a = array_api_compat.to_device(a, "cpu")
        return np.asarray(a.numpy() if hasattr(a, "numpy") else a)
    try:
        return np.array(np.from_dlpack(a))  # host memory (array_api_strict, JAX, ...)
    except (BufferError, RuntimeError, TypeError, ValueError):
        return np.asarray(a)


def check_X(X):
    """An array-API X checked as ``_base`` checks a NumPy one (real numbers; the
    shape is checked there)."""
    xp = namespace(X)
    if not xp.isdtype(X.dtype, ("real floating", "integral", "bool")):
        raise ValueError(
            f"X of dtype {X.dtype} is not supported ({type(X).__module__} array): pass "
            "real numbers (float32/float64, integers or bool)"
        )
    return X
