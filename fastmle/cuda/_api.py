"""The GPU path of the public functions: validation on the host (shapes, dtypes,
contiguity, arguments), then a fixed sequence of kernel launches on one stream,
with no host synchronization (unless strict checks are on).

Imported on the first call that receives a device array; importing it imports
``numba.cuda``.
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np
from numba import cuda

from .. import _elementwise as _ew
from .._validation import (
    as_float_array,
    check_class_args,
    check_finite_scalar,
    check_no_overlap,
    check_reduction,
)
from . import _kernels as K

_local = threading.local()
_strict = False
_errors: dict = {}
_ones: dict = {}

# --- streams, arrays, errors --------------------------------------------------


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


def _stream_for(x):
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


def _is_numba(a) -> bool:
    return hasattr(a, "copy_to_host") and hasattr(a, "is_c_contiguous")


def _as_numba(a, s):
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


def _contiguous(d, name):
    if d.size and not d.is_c_contiguous():
        raise ValueError(
            f"{name} must be C-contiguous on the GPU (the GPU path copies "
            "nothing); make a contiguous copy first"
        )


def _input(a, s, name="input"):
    d = _as_numba(a, s)
    if d.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{name} is a device array of dtype {d.dtype}: the GPU path "
            "computes in float32 or float64 and converts nothing"
        )
    _contiguous(d, name)
    return d


def _operand(a, name, dt, s):
    """A device operand in dtype ``dt``: a device array must already have it; host
    data (NumPy, scalars) is converted and copied to the device."""
    d = _as_numba(a, s)
    if d is None:
        return cuda.to_device(as_float_array(a, name, dt), stream=s)
    if d.dtype != dt:
        raise TypeError(
            f"{name} is a device array of dtype {d.dtype}; on the GPU it "
            f"must have the input's dtype {dt}"
        )
    _contiguous(d, name)
    return d


def _broadcast(d, name, shape):
    try:
        b = np.broadcast_shapes(tuple(d.shape), tuple(shape))
    except ValueError:
        b = None
    if b != tuple(shape):
        raise ValueError(
            f"{name} has shape {tuple(d.shape)}, which does not broadcast to "
            f"the input's shape {tuple(shape)}"
        )
    return d


def _out(out, shape, dt, s, input, operands):
    d = _as_numba(out, s)
    if d is None:
        raise TypeError(
            f"out must be a device array for a device input, got {type(out).__name__}"
        )
    if tuple(d.shape) != tuple(shape):
        raise ValueError(
            f"out has shape {tuple(d.shape)}, the gradient has shape {tuple(shape)}"
        )
    if d.dtype != dt:
        raise TypeError(
            f"out has dtype {d.dtype}, the gradient is {dt}: pass a {dt} array"
        )
    if d.size and not d.is_c_contiguous():
        raise ValueError("out must be C-contiguous")
    check_no_overlap(d, input, operands)
    return d


def _like(x, d):
    """Results in the input's array library where that is cheap (zero-copy)."""
    lib = _lib(x)
    if lib == "cupy":
        import cupy

        return cupy.asarray(d)
    if lib == "torch":
        import torch

        return torch.as_tensor(d, device=x.device)
    return d


def _device_key():
    dev = cuda.get_current_device()
    return getattr(dev, "id", 0)


def _err(s):
    key = _device_key()
    e = _errors.get(key)
    if e is None:
        h = np.zeros(K.ERR_SLOTS, np.int64)
        h[K.ERR_FIRST_LABEL] = K.NO_ROW
        e = _errors[key] = cuda.to_device(h, stream=s)
    return e


def _reset(e, s):
    K.reset_errors_kernel()[1, 32, s](e)


def _ones_like_classes(c, dt, s):
    """A cached device vector of ones (copied once per device, length, dtype)."""
    key = (_device_key(), c, np.dtype(dt).str)
    w = _ones.get(key)
    if w is None:
        w = _ones[key] = cuda.to_device(np.ones(c, dt), stream=s)
    return w


def set_strict(flag: bool = True) -> None:
    """Strict mode: every GPU call synchronizes and raises the CPU path's
    ValueError for invalid labels, probabilities or variances (debugging aid)."""
    global _strict
    _strict = bool(flag)


def check_errors() -> None:
    """Synchronize and raise ValueError if a GPU call since the last check met
    invalid data (the rows/elements concerned came out NaN); resets the record."""
    msgs = []
    for e in list(_errors.values()):
        h = e.copy_to_host()
        if h[K.ERR_LABELS] or h[K.ERR_PROBS] or h[K.ERR_VAR]:
            _reset(e, cuda.default_stream())
        if h[K.ERR_LABELS]:
            msgs.append(
                f"{h[K.ERR_LABELS]} target class index(es) outside [0, C) that are "
                f"not ignore_index (first at target[{h[K.ERR_FIRST_LABEL]}] of its "
                "call)"
            )
        if h[K.ERR_PROBS]:
            msgs.append(
                f"{h[K.ERR_PROBS]} binary_cross_entropy input value(s) outside [0, 1]"
            )
        if h[K.ERR_VAR]:
            msgs.append(
                f"{h[K.ERR_VAR]} gaussian_nll_loss element(s) with a negative var"
            )
    if msgs:
        raise ValueError(
            "GPU calls met invalid data (their rows/elements gave NaN): "
            + "; ".join(msgs)
        )


def _strict_check(e, s, labels=None):
    if not _strict:
        return
    s.synchronize()
    h = e.copy_to_host()
    if not (h[K.ERR_LABELS] or h[K.ERR_PROBS] or h[K.ERR_VAR]):
        return
    _reset(e, s)
    s.synchronize()
    if h[K.ERR_LABELS] and labels is not None:
        t2, c, ii = labels
        first = int(h[K.ERR_FIRST_LABEL])
        val = t2[first : first + 1].copy_to_host()[0]
        raise ValueError(
            f"target holds {h[K.ERR_LABELS]} class index(es) outside [0, {c}) that are "
            f"not ignore_index={ii}, e.g. target[{first}] = {val}"
        )
    if h[K.ERR_PROBS]:
        raise ValueError(
            f"input holds {h[K.ERR_PROBS]} value(s) outside [0, 1]: "
            "binary_cross_entropy "
            "takes probabilities (use binary_cross_entropy_with_logits for logits)"
        )
    if h[K.ERR_VAR]:
        raise ValueError("var has negative entry/entries: variances must be >= 0")
    raise ValueError("a GPU call met invalid data (see fastmle.cuda.check_errors)")


def _blocks(n):
    return min(K.MAX_BLOCKS, max(1, (n + K.THREADS - 1) // K.THREADS))


def _scalar_result(vals, dt, s, *, mean, denom=0.0, params=None):
    """0-d device array: sum(vals) in fixed order, / denominator for a mean."""
    out = cuda.device_array(1, dt, stream=s)
    dummy = params if params is not None else vals
    K.finish_kernel()[1, K.THREADS, s](
        vals, dummy, params is not None, float(denom), bool(mean), out
    )
    return out.reshape(())


def _cast(a, dt, s):
    out = cuda.device_array(a.size, dt, stream=s)
    if a.size:
        K.cast_kernel()[(a.size + 127) // 128, 128, s](a, out)
    return out


def _host_result(value, shape, dt, s):
    return cuda.to_device(np.full(shape, value, dt), stream=s)


# --- cross-entropy ------------------------------------------------------------


def cross_entropy_run(
    input,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    want_loss,
    want_grad,
    out=None,
):
    reduction = check_reduction(reduction)
    s = _stream_for(input)
    x = _input(input, s)
    dt = x.dtype
    xshape = tuple(x.shape)
    c, ignore_index, eps = check_class_args(xshape, ignore_index, label_smoothing)
    if weight is None:
        w = _ones_like_classes(c, dt, s)
    else:
        w = _operand(weight, "weight", dt, s)
        if tuple(w.shape) != (c,):
            raise ValueError(
                f"weight has shape {tuple(w.shape)}; it needs one entry per "
                f"class: shape ({c},)"
            )
    t = _as_numba(target, s)
    if t is None:
        th = np.asarray(target)
        if th.dtype.kind == "f":
            th = as_float_array(th, "target", dt)
        elif th.dtype.kind in "iu":
            th = np.asarray(th, dtype=np.int64, order="C")
        tshape = th.shape
        t = cuda.to_device(th.reshape(-1), stream=s) if th.dtype.kind in "fi" else th
    else:
        tshape = tuple(t.shape)
    kind = t.dtype.kind
    if kind == "f":
        if tshape != xshape:
            raise ValueError(
                f"target has floating dtype {t.dtype}, so it is read as class "
                "probabilities "
                f"and must have the input's shape {xshape}; got {tshape}. For class "
                "indices pass an integer array of shape (N,)"
            )
        if ignore_index >= 0:
            raise ValueError(
                "ignore_index is not supported for class-probability targets"
            )
        if t.dtype != dt:
            raise TypeError(
                f"target is a device array of dtype {t.dtype}; probability "
                f"targets must have the input's dtype {dt} on the GPU"
            )
        probs = True
    elif kind == "i" and t.dtype in (np.int32, np.int64):
        if tshape != xshape[:-1]:
            raise ValueError(
                "target holds class indices and must have shape "
                f"{xshape[:-1]} (one per "
                f"row of input {xshape}); got {tshape}"
            )
        probs = False
    else:
        raise TypeError(
            f"target has dtype {t.dtype}: pass integer class indices "
            "(int32/int64 on the "
            "GPU) of shape (N,) or float class probabilities of the input's shape"
        )
    _contiguous(t, "target")
    x2 = x.reshape(1, c) if x.ndim == 1 else x
    n = xshape[0] if x.ndim == 2 else 1
    t2 = t.reshape((n, c) if probs else (n,))
    e = _err(s)
    grad = None
    if want_grad:
        grad = (
            _out(out, xshape, dt, s, x, {"target": t, "weight": w})
            if out is not None
            else cuda.device_array(xshape, dt, stream=s)
        )
        grad2 = grad.reshape((n, c))
    else:
        grad2 = cuda.device_array((1, 1), dt, stream=s)
    rows = cuda.device_array(n, np.float64, stream=s)
    blocks, tpr, _, cached, shm = K.row_launch(n, c, dt.itemsize)
    if probs:
        params = None
        scale = (1.0 / n if n else math.nan) if reduction == "mean" else 1.0
        if n:
            K.ce_prob_kernel(dt)[blocks, K.THREADS, s, shm](
                x2, t2, w, eps, scale, grad2, want_grad, rows, tpr, cached
            )
    else:
        nb = _blocks(n)
        partial = cuda.device_array(nb, np.float64, stream=s)
        K.ce_labels_kernel()[nb, K.THREADS, s](t2, w, ignore_index, c, partial, e)
        params = cuda.device_array(3, np.float64, stream=s)
        K.ce_params_kernel()[1, K.THREADS, s](partial, w, reduction == "mean", params)
        if n:
            K.ce_index_kernel(dt)[blocks, K.THREADS, s, shm](
                x2,
                t2,
                w,
                ignore_index,
                eps,
                params,
                grad2,
                want_grad,
                rows,
                tpr,
                cached,
            )
    loss = None
    if want_loss:
        if reduction == "none":
            loss = _cast(rows, dt, s).reshape(xshape[:-1])
        else:
            loss = _scalar_result(
                rows, dt, s, mean=reduction == "mean", denom=float(n), params=params
            )
    _strict_check(e, s, None if probs else (t2, c, ignore_index))
    if loss is not None:
        loss = _like(input, loss)
    if grad is not None:
        grad = out if out is not None else _like(input, grad)
    return loss, grad


# --- logsumexp / softmax / log_softmax ----------------------------------------


def _softmax_run(a, axis, mode):
    s = _stream_for(a)
    x = _input(a, s, "a")
    dt = x.dtype
    shape = tuple(x.shape)
    if axis is not None and (
        not isinstance(axis, (int, np.integer)) or isinstance(axis, bool)
    ):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if x.ndim == 0 and axis not in (None, 0, -1):
        raise ValueError(f"axis {axis} is out of bounds for a 0-d array: use 0, -1 or None")
    if axis is None or x.ndim == 0:  # a 0-d array: one element along its only "axis"
        outer, c, inner, ax = 1, x.size, 1, None
    else:
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(
                f"axis {axis} is out of bounds for an array of dimension {x.ndim}"
            )
        ax = int(axis) % x.ndim
        outer, c, inner = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1 :])
    n_rows = outer * inner
    out = cuda.device_array(shape if mode != K.LSE else (0,), dt, stream=s)
    if n_rows and c:
        lse = cuda.device_array(n_rows, dt, stream=s)
        blocks, tpr, _, cached, shm = K.row_launch(n_rows, c, dt.itemsize)
        xf = x.reshape(x.size)
        of = out.reshape(out.size)
        K.softmax_kernel(dt)[blocks, K.THREADS, s, shm](
            xf, n_rows, c, inner, mode, of, lse, tpr, cached
        )
    else:
        lse = _host_result(-np.inf, n_rows, dt, s)
    return x, ax, lse, out


def logsumexp(a, axis=-1, keepdims=False):
    x, ax, lse, _ = _softmax_run(a, axis, K.LSE)
    shape = tuple(x.shape)
    if ax is None:
        res = lse.reshape((1,) * x.ndim if keepdims else ())
    else:
        res = lse.reshape(shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1 :])
    return _like(a, res)


def softmax(a, axis=-1):
    return _like(a, _softmax_run(a, axis, K.SOFTMAX)[3])


def log_softmax(a, axis=-1):
    return _like(a, _softmax_run(a, axis, K.LOG_SOFTMAX)[3])


# --- element-wise losses ------------------------------------------------------


def _split(shape, op_shapes):
    """(R, L, kinds) as in fastmle._elementwise.layout, from shapes only; None if
    an operand's broadcast pattern fits no split."""
    n = math.prod(shape)
    kinds = [_ew._kind(o, shape, len(shape)) for o in op_shapes]
    if all(kd in (_ew.FULL, _ew.SCALAR) for kd in kinds):
        return 1, n, kinds
    for k in range(1, len(shape)):
        kinds = [_ew._kind(o, shape, k) for o in op_shapes]
        if None not in kinds:
            r = math.prod(shape[:k])
            return r, n // r, kinds
    return None


def _ew_run(
    loss_id,
    input,
    x,
    ops,
    names,
    params,
    s,
    *,
    reduction,
    denom,
    want_loss,
    want_grad,
    out=None,
    dv_index=None,
):
    dt = x.dtype
    shape = tuple(x.shape)
    n = x.size
    e = _err(s)
    grad = None
    if want_grad:
        grad = (
            _out(out, shape, dt, s, x, dict(zip(names, ops)))
            if out is not None
            else cuda.device_array(shape, dt, stream=s)
        )
    want_none = want_loss and reduction == "none"
    mean = reduction == "mean"
    scale = 1.0 / denom if (mean and denom) else 1.0
    loss = dv = None
    if n == 0:
        if want_loss:
            loss = (
                cuda.device_array(shape, dt, stream=s)
                if want_none
                else _host_result(np.nan if mean else 0.0, (), dt, s)
            )
        if dv_index is not None:
            dv = _host_result(0.0, tuple(ops[dv_index].shape), dt, s)
    else:
        split = _split(shape, [tuple(o.shape) for o in ops])
        if split is None:
            bad = [
                nm
                for o, nm in zip(ops, names, strict=True)
                if _ew._kind(tuple(o.shape), shape, len(shape)) is None
            ]
            raise ValueError(
                f"{', '.join(bad)} broadcasts to the input's shape in a pattern "
                "the GPU path does not support (constant along inner axes between "
                "varying ones): "
                "pass it at the input's full shape"
            )
        r, l_, kinds = split
        flats = [o.reshape(o.size) for o in ops]
        while len(flats) < 3:
            flats.append(flats[0])
            kinds.append(_ew.SCALAR)
        xf = x.reshape(n)
        gf = grad.reshape(n) if want_grad else cuda.device_array(1, dt, stream=s)
        loss_el = cuda.device_array(shape if want_none else (1,), dt, stream=s)
        lf = loss_el.reshape(loss_el.size)
        want_dv = dv_index is not None
        dvf = cuda.device_array(n if want_dv else 1, dt, stream=s)
        nb = _blocks(n)
        partial = cuda.device_array(nb, np.float64, stream=s)
        K.elementwise_kernel(loss_id, dt)[nb, K.THREADS, s](
            xf,
            flats[0],
            kinds[0],
            flats[1],
            kinds[1],
            flats[2],
            kinds[2],
            l_,
            float(params[0]),
            float(params[1]),
            float(scale),
            gf,
            want_grad,
            lf,
            want_none,
            dvf,
            want_dv,
            partial,
            e,
        )
        if want_loss:
            loss = (
                loss_el
                if want_none
                else _scalar_result(partial, dt, s, mean=mean, denom=float(denom))
            )
        if want_dv:
            dv = _reduce_dv(kinds[dv_index], dvf, r, l_, ops[dv_index], dt, s)
    if loss is not None:
        loss = _like(input, loss)
    if grad is not None:
        grad = out if out is not None else _like(input, grad)
    return loss, grad, dv, e


def _reduce_dv(kind, dvf, r, l_, op, dt, s):
    if kind == _ew.FULL:
        return dvf.reshape(tuple(op.shape))
    if kind == _ew.ROW:
        res = cuda.device_array(r, dt, stream=s)
        K.row_sums_kernel()[r, K.THREADS, s](dvf, l_, res)
    elif kind == _ew.COL:
        res = cuda.device_array(l_, dt, stream=s)
        K.col_sums_kernel()[(l_ + 127) // 128, 128, s](dvf, r, l_, res)
    else:
        nb = _blocks(dvf.size)
        partial = cuda.device_array(nb, np.float64, stream=s)
        K.block_sums_kernel()[nb, K.THREADS, s](dvf, partial)
        res = _scalar_result(partial, dt, s, mean=False)
    return res.reshape(tuple(op.shape))


def _bce_inputs(input, target, weight, reduction):
    reduction = check_reduction(reduction)
    s = _stream_for(input)
    x = _input(input, s)
    y = _operand(target, "target", x.dtype, s)
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(
            f"target has shape {tuple(y.shape)}; it must have the input's "
            f"shape {tuple(x.shape)}"
        )
    w = (
        _ones_like_classes(1, x.dtype, s)
        if weight is None
        else _broadcast(_operand(weight, "weight", x.dtype, s), "weight", x.shape)
    )
    return reduction, s, x, y, w


def bce_with_logits_run(
    input, target, weight, reduction, pos_weight, want_loss, want_grad, out=None
):
    reduction, s, x, y, w = _bce_inputs(input, target, weight, reduction)
    pw = (
        _ones_like_classes(1, x.dtype, s)
        if pos_weight is None
        else _broadcast(
            _operand(pos_weight, "pos_weight", x.dtype, s), "pos_weight", x.shape
        )
    )
    loss, grad, _, _ = _ew_run(
        K.BCE_LOGITS,
        input,
        x,
        [y, w, pw],
        ["target", "weight", "pos_weight"],
        (0.0, 0.0),
        s,
        reduction=reduction,
        denom=x.size,
        want_loss=want_loss,
        want_grad=want_grad,
        out=out,
    )
    return loss, grad


def bce_run(input, target, weight, reduction, want_loss, want_grad, out=None):
    reduction, s, x, y, w = _bce_inputs(input, target, weight, reduction)
    loss, grad, _, e = _ew_run(
        K.BCE_PROBS,
        input,
        x,
        [y, w],
        ["target", "weight"],
        (0.0, 0.0),
        s,
        reduction=reduction,
        denom=x.size,
        want_loss=want_loss,
        want_grad=want_grad,
        out=out,
    )
    _strict_check(e, s)
    return loss, grad


def _var_operand(var, x, s):
    if isinstance(var, (float, int, np.floating, np.integer)) and not isinstance(
        var, bool
    ):
        v = cuda.to_device(np.full(1, var, x.dtype), stream=s)
        return v, v.reshape(()), True
    v = _operand(var, "var", x.dtype, s)
    shaped = v
    vs, xs = tuple(v.shape), tuple(x.shape)
    if vs != xs:
        if x.ndim and vs == xs[:-1]:
            shaped = v.reshape(vs + (1,))
        elif not (
            len(vs) == len(xs)
            and sum(b for a, b in zip(xs, vs, strict=True) if a != b) == 1
        ):
            raise ValueError(
                f"var has shape {vs}, which is not valid for input of shape {xs}: "
                "use the input's shape (heteroscedastic), the input's shape without "
                "its last axis, "
                "or the input's shape with one axis of size 1 (homoscedastic)"
            )
    _broadcast(shaped, "var", xs)
    return v, shaped, False


def gaussian_run(
    input, target, var, full, eps, reduction, want_loss, want_grad, out=None
):
    reduction = check_reduction(reduction)
    s = _stream_for(input)
    x = _input(input, s)
    t = _broadcast(_operand(target, "target", x.dtype, s), "target", x.shape)
    eps = check_finite_scalar(eps, "eps")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    v, shaped, is_float = _var_operand(var, x, s)
    const = 0.5 * math.log(2 * math.pi) if full else 0.0
    loss, grad, dvar, e = _ew_run(
        K.GAUSSIAN,
        input,
        x,
        [t, shaped],
        ["target", "var"],
        (eps, const),
        s,
        reduction=reduction,
        denom=x.size,
        want_loss=want_loss,
        want_grad=want_grad,
        out=out,
        dv_index=1 if want_grad else None,
    )
    _strict_check(e, s)
    if want_grad:
        dvar = dvar.reshape(()) if is_float else dvar.reshape(tuple(v.shape))
        grad = (grad, _like(input, dvar))
    return loss, grad


def mse_run(input, target, reduction, want_loss, want_grad, out=None):
    reduction = check_reduction(reduction)
    s = _stream_for(input)
    x = _input(input, s)
    t = _broadcast(_operand(target, "target", x.dtype, s), "target", x.shape)
    loss, grad, _, _ = _ew_run(
        K.MSE,
        input,
        x,
        [t],
        ["target"],
        (0.0, 0.0),
        s,
        reduction=reduction,
        denom=x.size,
        want_loss=want_loss,
        want_grad=want_grad,
        out=out,
    )
    return loss, grad


def kl_run(input, target, reduction, log_target, want_loss, want_grad, out=None):
    reduction = check_reduction(reduction, ("none", "batchmean", "sum", "mean"))
    s = _stream_for(input)
    x = _input(input, s)
    t = _broadcast(_operand(target, "target", x.dtype, s), "target", x.shape)
    if reduction == "batchmean":
        reduction, denom = "mean", (tuple(x.shape)[0] if x.ndim else 1)
    else:
        denom = x.size
    loss, grad, _, _ = _ew_run(
        K.KL,
        input,
        x,
        [t],
        ["target"],
        (1.0 if log_target else 0.0, 0.0),
        s,
        reduction=reduction,
        denom=denom,
        want_loss=want_loss,
        want_grad=want_grad,
        out=out,
    )
    return loss, grad


# --- the public functions' GPU twins (same signatures) ------------------------


def cross_entropy(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    return cross_entropy_run(
        input, target, weight, ignore_index, reduction, label_smoothing, True, False
    )[0]


def cross_entropy_grad(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    return cross_entropy_run(
        input, target, weight, ignore_index, reduction, label_smoothing, False, True
    )[1]


def cross_entropy_value_and_grad(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    out=None,
):
    return cross_entropy_run(
        input, target, weight, ignore_index, reduction, label_smoothing, True, True, out
    )


def binary_cross_entropy_with_logits(
    input, target, weight=None, reduction="mean", pos_weight=None
):
    return bce_with_logits_run(
        input, target, weight, reduction, pos_weight, True, False
    )[0]


def binary_cross_entropy_with_logits_grad(
    input, target, weight=None, reduction="mean", pos_weight=None
):
    return bce_with_logits_run(
        input, target, weight, reduction, pos_weight, False, True
    )[1]


def binary_cross_entropy_with_logits_value_and_grad(
    input, target, weight=None, reduction="mean", pos_weight=None, out=None
):
    return bce_with_logits_run(
        input, target, weight, reduction, pos_weight, True, True, out
    )


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    return bce_run(input, target, weight, reduction, True, False)[0]


def binary_cross_entropy_grad(input, target, weight=None, reduction="mean"):
    return bce_run(input, target, weight, reduction, False, True)[1]


def binary_cross_entropy_value_and_grad(
    input, target, weight=None, reduction="mean", out=None
):
    return bce_run(input, target, weight, reduction, True, True, out)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    return gaussian_run(input, target, var, full, eps, reduction, True, False)[0]


def gaussian_nll_loss_grad(input, target, var, full=False, eps=1e-6, reduction="mean"):
    return gaussian_run(input, target, var, full, eps, reduction, False, True)[1]


def gaussian_nll_loss_value_and_grad(
    input, target, var, full=False, eps=1e-6, reduction="mean", out=None
):
    return gaussian_run(input, target, var, full, eps, reduction, True, True, out)


def mse_loss(input, target, reduction="mean"):
    return mse_run(input, target, reduction, True, False)[0]


def mse_loss_grad(input, target, reduction="mean"):
    return mse_run(input, target, reduction, False, True)[1]


def mse_loss_value_and_grad(input, target, reduction="mean", out=None):
    return mse_run(input, target, reduction, True, True, out)


def kl_div(input, target, reduction="mean", log_target=False):
    return kl_run(input, target, reduction, log_target, True, False)[0]


def kl_div_grad(input, target, reduction="mean", log_target=False):
    return kl_run(input, target, reduction, log_target, False, True)[1]


def kl_div_value_and_grad(input, target, reduction="mean", log_target=False, out=None):
    return kl_run(input, target, reduction, log_target, True, True, out)
