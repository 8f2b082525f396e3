"""The argument rules of the public functions, stated once for every backend.

Numba does no bounds checking, so every shape, index and dtype is settled before a
kernel runs. The checks here read only metadata (shapes, dtypes, Python scalars),
so they serve NumPy, CUDA and Dask arguments alike; the backends check values
(class indices, probabilities, variances: ``_calls.ValueRule``). Conversions of
host data happen only when needed: a C-contiguous float32/float64 array is passed
through as it is (read-only arrays too: kernels never write to inputs unless asked
to with ``out=``).
"""

from __future__ import annotations

import math

import numpy as np

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(
            f"reduction={reduction!r} is not valid: use one of {', '.join(map(repr, allowed))}"
        )
    return reduction


def reject_non_numeric(a, name: str) -> None:
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


def as_array(a, name: str) -> np.ndarray:
    """Host data as a NumPy array. A masked array is refused: its masked elements would
    be computed as if they were data."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array: fastmle would compute its masked elements too; pass "
            f"{name}.compressed() or {name}.filled(value), or select the unmasked rows"
        )
    return np.asarray(a)


def as_float_array(a, name: str, dtype=None) -> np.ndarray:
    """Host data ``a`` as a C-contiguous float32/float64 NumPy array, copied only if it
    must be. ``dtype=None`` keeps float32/float64 and picks :func:`float_dtype`
    otherwise."""
    arr = as_array(a, name)
    reject_non_numeric(arr, name)
    dt = float_dtype(arr) if dtype is None else np.dtype(dtype)
    return np.asarray(arr, dtype=dt, order="C")  # keeps 0-d (ascontiguousarray would not)


def _same_view(a, b) -> bool:
    """Whether a and b are the same elements: data pointer, shape, strides, dtype."""
    ia, ib = a.__array_interface__, b.__array_interface__
    return (
        ia["data"][0] == ib["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


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
    return (
        co["data"][0] == ca["data"][0]
        and tuple(co["shape"]) == tuple(ca["shape"])
        and co["typestr"] == ca["typestr"]
        and co.get("strides") == ca.get("strides")
    )


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
                f"gradient, or a separate buffer"
            )
    for arg, a in operands.items():
        if a is not None and _overlap(out, a):
            raise ValueError(
                f"{name} shares memory with {arg}, which the kernel reads while writing "
                f"{name}: pass a separate buffer as {name} (only {name}=input may alias)"
            )


def as_real(value, name: str) -> float:
    """A Python real number as a float (inf and nan kept); an int beyond the float range
    (``10**400``) raises ValueError, a non-number TypeError."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} is beyond the float64 range (an int of {len(str(abs(int(value))))} digits)"
        ) from None
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None


def check_finite_scalar(value, name: str) -> float:
    v = as_real(value, name)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def check_broadcasts(a, name: str, shape: tuple[int, ...]):
    """An operand (target, weight, ...) must broadcast to the input's ``shape``
    without enlarging it (PyTorch would also let it enlarge the result)."""
    try:
        b = np.broadcast_shapes(tuple(a.shape), tuple(shape))
    except ValueError:
        b = None
    if b != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(a.shape)}, which does not broadcast to the input's "
            f"shape {tuple(shape)}"
        )
    return a


def check_same_shape(a, name: str, shape: tuple[int, ...]):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(a.shape)}; it must have the input's shape {tuple(shape)}"
        )
    return a


def is_real_scalar(v) -> bool:
    return isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, bool)


def var_shape(v_shape: tuple[int, ...], x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``var`` (an array) is read in, broadcasting to the input's shape, as
    PyTorch accepts it: the input's shape, the input's shape without its last axis (a
    trailing axis of 1 is added), or the input's shape with one axis of size 1."""
    v_shape, x_shape = tuple(v_shape), tuple(x_shape)
    shaped = v_shape
    if v_shape != x_shape:
        if x_shape and v_shape == x_shape[:-1]:
            shaped = v_shape + (1,)
        elif not (
            len(v_shape) == len(x_shape)
            and sum(vs for xs, vs in zip(x_shape, v_shape) if xs != vs) == 1
        ):
            raise ValueError(
                f"var has shape {v_shape}, which is not valid for input of shape {x_shape}: "
                "use the input's shape (heteroscedastic), the input's shape without its last "
                "axis, or the input's shape with one axis of size 1 (homoscedastic)"
            )
    try:
        np.broadcast_shapes(shaped, x_shape)
    except ValueError:
        raise ValueError(
            f"var has shape {v_shape}, which does not broadcast to the input's shape {x_shape}"
        ) from None
    return shaped


def check_positive(value, name: str) -> float:
    v = check_finite_scalar(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be positive, got {v}")
    return v


def check_axis(ndim: int, axis) -> int | None:
    """``axis`` as an int in [0, ndim) (None stays None: all elements)."""
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if ndim == 0:
        # one element along its only "axis", as in torch and NumPy (softmax(0-d, 0) == 1)
        if axis in (0, -1):
            return None
        raise ValueError(f"axis {axis} is out of bounds for a 0-d array: use 0, -1 or None")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {ndim}")
    return int(axis) % ndim


def check_class_weight(w, n_classes: int):
    if tuple(w.shape) != (n_classes,):
        raise ValueError(
            f"weight has shape {tuple(w.shape)}; it needs one entry per class: shape ({n_classes},)"
        )
    return w


def as_class_indices(t: np.ndarray) -> np.ndarray:
    """Host class indices as a C-contiguous int32/int64 array (other integer dtypes
    become int64; uint64 values beyond int64 are refused rather than wrapped)."""
    if t.dtype not in (np.int32, np.int64):
        if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
            raise ValueError("target holds class indices larger than int64")
        t = t.astype(np.int64)
    return np.ascontiguousarray(t)


def bad_labels_message(nbad: int, n_classes: int, ignore_index: int, index: int, value) -> str:
    """The error for class indices outside [0, C) (checked by each backend's kernel)."""
    return (
        f"target holds {nbad} class index(es) outside [0, {n_classes}) that are not "
        f"ignore_index={ignore_index}, e.g. target[{index}] = {value}"
    )


def target_is_probs(t, x_shape: tuple[int, ...], ignore_index: int) -> bool:
    """Cross-entropy's target: float class probabilities of the input's shape (True) or
    integer class indices of shape ``x_shape[:-1]`` (False); anything else raises."""
    x_shape, t_shape = tuple(x_shape), tuple(t.shape)
    kind = np.dtype(t.dtype).kind
    if kind == "f":
        if t_shape != x_shape:
            raise ValueError(
                f"target has floating dtype {t.dtype}, so it is read as class probabilities and "
                f"must have the input's shape {x_shape}; got {t_shape}. For class indices pass "
                "an integer array of shape (N,)"
            )
        if ignore_index >= 0:
            raise ValueError("ignore_index is not supported for class-probability targets")
        return True
    if kind in "iu":
        if t_shape != x_shape[:-1]:
            raise ValueError(
                f"target holds class indices and must have shape {x_shape[:-1]} "
                f"(one per row of input {x_shape}); got {t_shape}"
            )
        return False
    raise TypeError(
        f"target has dtype {t.dtype}: pass integer class indices of shape (N,) or float "
        "class probabilities of the input's shape"
    )


def check_class_args(
    shape: tuple[int, ...], ignore_index, label_smoothing
) -> tuple[int, int, float]:
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
        eps = as_real(label_smoothing, "label_smoothing")
    except TypeError:
        raise TypeError("label_smoothing must be a float in [0, 1]") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if not _INT64.min <= ignore_index <= _INT64.max:
        raise ValueError(
            f"ignore_index = {ignore_index} is outside the int64 range of class indices"
        )
    return shape[-1], int(ignore_index), eps


_INT64 = np.iinfo(np.int64)
