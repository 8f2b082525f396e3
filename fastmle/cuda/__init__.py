"""GPU (CUDA) path of fastmle's public functions, on numba-cuda.

``fastmle.cross_entropy(x, ...)`` and its siblings run here when ``input`` is a
CUDA device array (anything exposing ``__cuda_array_interface__``: numba device
arrays, CuPy arrays, torch CUDA tensors). This module is imported by fastmle but
imports nothing heavy: ``numba.cuda`` is imported, and CUDA initialised, only by
the first call that receives a device array.

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

__all__ = ["is_device", "on_device", "check_errors", "set_strict", "stream"]


def is_device(x) -> bool:
    """Whether ``x`` lives on a CUDA device (checked without importing numba.cuda)."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__module__.startswith(
        "numba.cuda.simulator"
    )


def on_device(name, *args, **kwargs):
    """Run public function ``name`` on the GPU."""
    from . import _api

    return getattr(_api, name)(*args, **kwargs)


def check_errors() -> None:
    from . import _api

    _api.check_errors()


def set_strict(flag: bool = True) -> None:
    from . import _api

    _api.set_strict(flag)


def stream(s):
    from . import _api

    return _api.stream(s)


def gpu_twin(name):
    """Decorator: calls whose first argument is a device array go to the GPU
    function ``name`` (same arguments); everything else runs the CPU function."""
    import functools

    def wrap(cpu):
        @functools.wraps(cpu)
        def dispatch(*args, **kwargs):
            if args and is_device(args[0]):
                return on_device(name, *args, **kwargs)
            return cpu(*args, **kwargs)

        return dispatch

    return wrap
