"""What kind of array an argument is (NumPy, CUDA device, Dask), without importing
Dask or ``numba.cuda``: the bottom of the package, imported by every layer."""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["is_array_api", "is_dask", "is_device"]


def is_device(a) -> bool:
    """Whether ``a`` lives on a CUDA device: anything exposing
    ``__cuda_array_interface__`` (numba device arrays, CuPy, torch CUDA tensors), or a
    device array of Numba's CUDA simulator."""
    return hasattr(a, "__cuda_array_interface__") or type(a).__module__.startswith(
        "numba.cuda.simulator"
    )


def is_dask(a) -> bool:
    """Whether ``a`` is a Dask array. No Dask array can exist unless ``dask.array`` was
    imported, so a look into ``sys.modules`` answers without importing it."""
    cls = getattr(sys.modules.get("dask.array"), "Array", None)
    return cls is not None and isinstance(a, cls)


def is_array_api(a) -> bool:
    """Whether ``a`` is an array of another library of the array API standard than
    NumPy and Dask (CuPy, ``array_api_strict``, JAX, ...): one with
    ``__array_namespace__``, which the estimators fit where it lives."""
    return hasattr(a, "__array_namespace__") and not isinstance(a, np.ndarray) and not is_dask(a)
