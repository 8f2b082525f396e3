"""The one place where inputs are checked and converted before a kernel runs.

Numba does no bounds checking, so every shape, index and dtype is settled here.
Conversions happen only when needed: a C-contiguous float32/float64 array is
passed through as it is (read-only arrays too, kernels never write to inputs
unless asked to with ``out=``). A Dask array (reaching here only on the Dask
path, ``fastmle.dask``) is checked on its metadata and converted lazily.
"""

from __future__ import annotations

import math

import numpy as np

from .dask import is_dask_array

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"reduction={reduction!r} is not valid: use one of {', '.join(map(repr, allowed))}"
        )
    return reduction


def _reject_non_numeric(a: np.ndarray, name: str) -> None:
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} has complex dtype {a.dtype}: pass real values (e.g. {name}.real)")
    if kind not in "biuf":
        raise TypeError(
            f"{name} has dtype {a.dtype}, which is not numeric: pass a float32 or float64 array"
        )


def float_dtype(a: np.ndarray) -> np.dtype:
    """The dtype a kernel computes in for ``a``: float32 stays float32, float16
    is computed in float32, everything else (float64, ints, bool) in float64."""
    if a.dtype == np.float32 or a.dtype == np.float16:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_float_array(a, name: str, dtype=None) -> np.ndarray:
    """``a`` as a C-contiguous float32/float64 array, copied only if it must be.

    ``dtype=None`` keeps float32/float64 and picks :func:`float_dtype` otherwise.
    A Dask array stays one (``astype``, lazy) after :func:`check_dask_array`.
    """
    if is_dask_array(a):
        check_dask_array(a, name)
        _reject_non_numeric(a, name)
        return a.astype(float_dtype(a) if dtype is None else np.dtype(dtype))
    arr = np.asarray(a)
    _reject_non_numeric(arr, name)
    dt = float_dtype(arr) if dtype is None else np.dtype(dtype)
    return np.asarray(arr, dtype=dt, order="C")  # keeps 0-d (ascontiguousarray would not)


def check_dask_array(a, name: str) -> None:
    """A Dask argument must have NumPy chunks of known sizes (they fix which rows
    each task reads and the mean's denominator)."""
    if any(math.isnan(s) for s in a.shape):
        raise ValueError(
            f"{name} is a Dask array with unknown chunk sizes (shape {a.shape}): call "
            f"{name}.compute_chunk_sizes() first"
        )
    if not isinstance(getattr(a, "_meta", None), np.ndarray):
        raise TypeError(
            f"{name} is a Dask array of {type(getattr(a, '_meta', None)).__name__} chunks: "
            "fastmle runs on NumPy chunks (map_blocks(numpy.asarray) first)"
        )


def check_out(out, shape: tuple[int, ...], dtype: np.dtype, name: str = "out", *,
              input=None, operands=None) -> np.ndarray:
    """Validate a caller's gradient buffer; it is written in place.

    ``input`` and ``operands`` (a dict name -> array: what the kernel reads) are
    checked by :func:`check_no_overlap`.
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, the gradient has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {out.dtype}, the gradient is {dtype}: pass a {dtype} array")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray)")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    check_no_overlap(out, input, operands or {}, name)
    return out


def _same_view(a, b) -> bool:
    """Whether a and b are the same elements: data pointer, shape, strides, dtype."""
    ia, ib = a.__array_interface__, b.__array_interface__
    return (ia["data"][0] == ib["data"][0] and a.shape == b.shape and a.strides == b.strides
            and a.dtype == b.dtype)


def _device_span(a):
    """[start, end) device address of a (C-contiguous) CUDA array, or None."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None:
        return None
    start = cai["data"][0]
    return start, start + math.prod(cai["shape"]) * np.dtype(cai["typestr"]).itemsize


def _numpy(a):
    """a if it is a NumPy array; also the array that a device array of the CUDA
    simulator wraps (its ``_ary``), so that the GPU path's rule is tested without
    a GPU. None otherwise."""
    if isinstance(a, np.ndarray):
        return a
    ary = None if hasattr(a, "__cuda_array_interface__") else getattr(a, "_ary", None)
    return ary if isinstance(ary, np.ndarray) else None


def _overlap(out, a) -> bool:
    ho, ha = _numpy(out), _numpy(a)
    if ho is not None and ha is not None:
        # may_share_memory compares bounds (cheap); shares_memory is exact
        return np.may_share_memory(ho, ha) and np.shares_memory(ho, ha)
    so, sa = _device_span(out), _device_span(a)
    # device arrays here are C-contiguous, so overlapping spans share elements
    return so is not None and sa is not None and so[0] < sa[1] and sa[0] < so[1]


def _same(out, a) -> bool:
    ho, ha = _numpy(out), _numpy(a)
    if ho is not None and ha is not None:
        return _same_view(ho, ha)
    co, ca = out.__cuda_array_interface__, a.__cuda_array_interface__
    return (co["data"][0] == ca["data"][0] and tuple(co["shape"]) == tuple(ca["shape"])
            and co["typestr"] == ca["typestr"] and co.get("strides") == ca.get("strides"))


def check_no_overlap(out, input, operands: dict, name: str = "out") -> None:
    """The one rule for a gradient buffer ``out`` on every device: it may be exactly
    ``input`` (the documented in-place use: the kernels read each element or row of
    the input before writing its gradient there), and may share no memory with
    ``input`` in any other way or with any operand. Another overlap would let one
    thread write what another still has to read: results that change from run to
    run, or (class indices overwritten by gradient values) reads out of bounds."""
    if input is not None and _overlap(out, input):
        if not _same(out, input):
            raise ValueError(
                f"{name} overlaps the memory of input without being input itself (same "
                f"data, shape, strides and dtype): pass {name}=input for an in-place "
                f"gradient, or a separate buffer")
    for arg, a in operands.items():
        if a is not None and _overlap(out, a):
            raise ValueError(
                f"{name} shares memory with {arg}, which the kernel reads while writing "
                f"{name}: pass a separate buffer as {name} (only {name}=input may alias)")


def check_finite_scalar(value, name: str) -> float:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def broadcast_operand(a, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An auxiliary operand (target, weight, ...) that must broadcast to ``shape``."""
    arr = as_float_array(a, name, dtype)
    try:
        b = np.broadcast_shapes(arr.shape, shape)
    except ValueError:
        b = None
    if b != tuple(shape):
        raise ValueError(
            f"{name} has shape {arr.shape}, which does not broadcast to the input's shape "
            f"{tuple(shape)}"
        )
    return arr


def check_class_args(shape: tuple[int, ...], ignore_index,
                     label_smoothing) -> tuple[int, int, float]:
    """Cross-entropy's shape and scalar arguments, the same on every device.

    Returns (number of classes, ignore_index as an int, label smoothing as a float).
    """
    shape = tuple(shape)
    if len(shape) not in (1, 2):
        raise ValueError(
            f"input must be logits of shape (N, C) or (C,), got {len(shape)}-D shape {shape}; "
            "for (N, C, d1, ...) move the class axis last and reshape to (-1, C)"
        )
    if shape[-1] == 0:
        raise ValueError("input has no classes (C = 0)")
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise TypeError("label_smoothing must be a float in [0, 1]") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    return shape[-1], int(ignore_index), eps
