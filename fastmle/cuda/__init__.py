"""The GPU (CUDA) backend of fastmle's public functions, on numba-cuda.

``fastmle.cross_entropy(x, ...)`` and its siblings run here when ``input`` is a
CUDA device array (anything exposing ``__cuda_array_interface__``: numba device
arrays, CuPy arrays, torch CUDA tensors; ``fastmle._dispatch`` picks the backend).
This package is imported by fastmle but imports nothing heavy: ``numba.cuda`` is
imported, and CUDA initialised, only by the first call that receives a device
array. ``_backend`` holds the entry points, ``_device`` the device interop and the
error record, ``_kernels`` the kernels.

Public helpers (each imports the GPU machinery on first use):

- ``check_errors()``: synchronize and raise ValueError if a GPU call met invalid
  data (class indices outside [0, C), probabilities outside [0, 1], negative
  variances); such rows/elements come out NaN without a host synchronization.
- ``set_strict(True)``: synchronize after each call and raise the CPU path's
  ValueError instead (debugging).
- ``stream(s)``: a context manager running this thread's GPU calls on numba
  stream ``s`` (CuPy's and torch's current streams are picked up by default).
"""

from __future__ import annotations

__all__ = ["check_errors", "set_strict", "stream"]


def check_errors() -> None:
    from . import _device

    _device.check_errors()


def set_strict(flag: bool = True) -> None:
    from . import _device

    _device.set_strict(flag)


def stream(s):
    from . import _device

    return _device.stream(s)
