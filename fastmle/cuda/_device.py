"""Device interop of the GPU backend: streams, foreign device arrays (CuPy, torch) as
numba views and back, the checks that depend on device memory (dtype, contiguity,
``out=``), and the per-device error record that the kernels fill with the invalid
data they meet (read by :func:`check_errors`, or after every call in strict mode).

Imported on the first call that receives a device array; importing it imports
``numba.cuda``.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
from numba import cuda

from .._calls import LOSSES
from .._rules import as_float_array, bad_labels_message, check_no_overlap
from . import _kernels as K

_local = threading.local()
_strict = False
_errors: dict = {}
_ones: dict = {}

# --- streams ------------------------------------------------------------------


@contextlib.contextmanager
def stream(s):
    """Run the GPU calls of this thread inside the block on numba stream ``s``."""
    prev = getattr(_local, "stream", None)
    _local.stream = s
    try:
        yield s
    finally:
        _local.stream = prev


def _lib(x) -> str:
    return type(x).__module__.split(".")[0]


def stream_for(x):
    """The stream a call on input ``x`` runs on: this thread's :func:`stream`, else
    CuPy's or torch's current stream for their arrays, else numba's default."""
    s = getattr(_local, "stream", None)
    if s is not None:
        return s
    lib = _lib(x)
    ptr = 0
    if lib == "cupy":
        import cupy

        ptr = cupy.cuda.get_current_stream().ptr
    elif lib == "torch":
        import torch

        ptr = torch.cuda.current_stream(x.device).cuda_stream
    return cuda.external_stream(ptr) if ptr else cuda.default_stream()


def _handle(s) -> int:
    h = getattr(s, "handle", None)
    v = getattr(h, "value", h)
    return int(v or 0) if isinstance(v, (int, type(None))) else 0


# --- arrays ---------------------------------------------------------------------


def _is_numba(a) -> bool:
    return hasattr(a, "copy_to_host") and hasattr(a, "is_c_contiguous")


def as_numba(a, s):
    """A numba view of device array ``a`` (None for host data). No synchronization
    when the producer's stream (``__cuda_array_interface__['stream']``) is the one
    the kernels run on, or absent; otherwise numba synchronizes that stream."""
    if _is_numba(a):
        return a
    desc = getattr(a, "__cuda_array_interface__", None)
    if desc is None:
        return None
    ps = desc.get("stream")
    ours = _handle(s)
    sync = ps is not None and not (ps == ours or (ps == 1 and ours == 0))
    return cuda.from_cuda_array_interface(desc, owner=a, sync=sync)


def contiguous(d, name: str):
    if d.size and not d.is_c_contiguous():
        raise ValueError(
            f"{name} must be C-contiguous on the GPU (the GPU path copies nothing); make a "
            "contiguous copy first"
        )
    return d


def device_input(a, s, name: str = "input"):
    """Device array ``a`` as a numba view; the GPU computes in its dtype, which must be
    float32 or float64 (nothing is converted on the device)."""
    d = as_numba(a, s)
    if d.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{name} is a device array of dtype {d.dtype}: the GPU path computes in float32 "
            "or float64 and converts nothing"
        )
    return contiguous(d, name)


def device_operand(a, name: str, dt, s):
    """A device operand in dtype ``dt``: a device array must already have it; host
    data (NumPy, scalars) is converted and copied to the device."""
    d = as_numba(a, s)
    if d is None:
        return cuda.to_device(as_float_array(a, name, dt), stream=s)
    if d.dtype != dt:
        raise TypeError(
            f"{name} is a device array of dtype {d.dtype}; on the GPU it must have the "
            f"input's dtype {dt}"
        )
    return contiguous(d, name)


def device_out(out, shape, dt, s, input, operands: dict):
    """The caller's gradient buffer, checked: a device array of the gradient's shape
    and dtype, C-contiguous, overlapping nothing the kernel reads but ``input`` itself
    (``_rules.check_no_overlap``)."""
    d = as_numba(out, s)
    if d is None:
        raise TypeError(f"out must be a device array for a device input, got {type(out).__name__}")
    if tuple(d.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(d.shape)}, the gradient has shape {tuple(shape)}")
    if d.dtype != dt:
        raise TypeError(f"out has dtype {d.dtype}, the gradient is {dt}: pass a {dt} array")
    if d.size and not d.is_c_contiguous():
        raise ValueError("out must be C-contiguous")
    check_no_overlap(d, input, operands)
    return d


def origin(x):
    """What :func:`like` needs of an input: its array library and (torch) device. No
    reference to ``x`` is kept, so a call's bookkeeping never holds device memory."""
    lib = _lib(x)
    return lib, (x.device if lib == "torch" else None)


def like(org, d):
    """Results in the input's array library (``org``: :func:`origin`) where that is
    cheap (zero-copy)."""
    lib, device = org
    if lib == "cupy":
        import cupy

        return cupy.asarray(d)
    if lib == "torch":
        import torch

        return torch.as_tensor(d, device=device)
    return d


def _device_key():
    dev = cuda.get_current_device()
    return getattr(dev, "id", 0)


def ones(n: int, dt, s):
    """A cached device vector of ones (copied once per device, length and dtype)."""
    key = (_device_key(), n, np.dtype(dt).str)
    w = _ones.get(key)
    if w is None:
        w = _ones[key] = cuda.to_device(np.ones(n, dt), stream=s)
    return w


# --- the error record -------------------------------------------------------------


def error_record(s):
    """This device's error record (``_kernels.ERR_*`` slots), created on first use."""
    key = _device_key()
    e = _errors.get(key)
    if e is None:
        h = np.zeros(K.ERR_SLOTS, np.int64)
        h[K.ERR_FIRST_LABEL] = K.NO_ROW
        e = _errors[key] = cuda.to_device(h, stream=s)
    return e


def _reset(e, s):
    K.reset_errors_kernel()[1, 32, s](e)


def _bad_values(h):
    """(loss id, count) of each element-wise loss whose ValueRule the record reports."""
    return [
        (i, int(h[K.ERR_VALUES + i]))
        for i in sorted(LOSSES)
        if LOSSES[i].rule is not None and h[K.ERR_VALUES + i]
    ]


def _any(h) -> bool:
    return bool(h[K.ERR_LABELS]) or bool(_bad_values(h))


def set_strict(flag: bool = True) -> None:
    """Strict mode: every GPU call synchronizes and raises the CPU path's ValueError
    for invalid labels, probabilities or variances (debugging aid)."""
    global _strict
    _strict = bool(flag)


def check_errors() -> None:
    """Synchronize and raise ValueError if a GPU call since the last check met invalid
    data (the rows/elements concerned came out NaN); resets the record."""
    msgs = []
    for e in list(_errors.values()):
        h = e.copy_to_host()
        if _any(h):
            _reset(e, cuda.default_stream())
        if h[K.ERR_LABELS]:
            msgs.append(
                f"{h[K.ERR_LABELS]} target class index(es) outside [0, C) that are not "
                f"ignore_index (first at target[{h[K.ERR_FIRST_LABEL]}] of its call)"
            )
        msgs += [LOSSES[i].rule.message.format(n) for i, n in _bad_values(h)]
    if msgs:
        raise ValueError(
            "GPU calls met invalid data (their rows/elements gave NaN): " + "; ".join(msgs)
        )


def strict_check(e, s, labels=None) -> None:
    """In strict mode: synchronize and raise the CPU path's ValueError for what the
    record reports. ``labels``: (class indices on the device, C, ignore_index)."""
    if not _strict:
        return
    s.synchronize()
    h = e.copy_to_host()
    if not _any(h):
        return
    _reset(e, s)
    s.synchronize()
    if h[K.ERR_LABELS] and labels is not None:
        t2, c, ii = labels
        first = int(h[K.ERR_FIRST_LABEL])
        val = t2[first : first + 1].copy_to_host()[0]
        raise ValueError(bad_labels_message(int(h[K.ERR_LABELS]), c, ii, first, val))
    bad = _bad_values(h)
    if bad:
        i, n = bad[0]
        raise ValueError(LOSSES[i].rule.message.format(n))
    raise ValueError("a GPU call met invalid data (see fastmle.cuda.check_errors)")
