"""The GPU backend's entry points (the protocol is in ``fastmle._dispatch``; the CPU's,
``fastmle._cpu.backend``, is the reference): device arrays in, a fixed sequence of
kernel launches on one stream with no host synchronization (unless strict mode is
on), device arrays out, in the input's array library where that is zero-copy.

The public functions have applied the argument rules (``fastmle._rules``); this
module checks what depends on device memory (dtype, contiguity, ``out=``) and the
values, inside the kernels: those outside a loss's ``_calls.ValueRule`` and class
indices outside [0, C) give NaN and are counted in the error record
(``_device.check_errors``, or an immediate ValueError in strict mode).

Imported on the first call that receives a device array; importing it imports
``numba.cuda``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import cuda

from .._calls import (
    COL,
    FULL,
    LOSSES,
    LSE,
    ROW,
    SCALAR,
    CrossEntropy,
    Pointwise,
    Softmax,
    operand_kind,
    split,
)
from .._reduction import grad_scale
from .._rules import as_array, as_class_indices
from . import _kernels as K
from ._device import (
    as_numba,
    contiguous,
    device_input,
    device_operand,
    device_out,
    error_record,
    like,
    origin,
    stream_for,
    strict_check,
)
from ._device import ones as _device_ones

# The call in progress on this thread: ``input`` records the id of the numba view it
# returns, the stream and the input's library (results go back as CuPy/torch arrays);
# ``operand``, ``array``, ``ones`` and the entry points of the same call read them, so
# that every copy and kernel of one call runs on one stream. No array is referenced.
_call = threading.local()


def _context(x=None):
    """(stream, origin) of the call whose input view is ``x`` (any call: None)."""
    c = getattr(_call, "ctx", None)
    if c is not None and (x is None or c[0] == id(x)):
        return c[1], c[2]
    return stream_for(x), origin(x)


# --- the protocol's adoption functions ------------------------------------------


def input(a, name: str = "input"):
    s = stream_for(a)
    d = device_input(a, s, name)
    _call.ctx = (id(d), s, origin(a))
    return d


def operand(a, name: str, dtype):
    return device_operand(a, name, np.dtype(dtype), _context()[0])


def array(a, name: str = "target"):
    d = as_numba(a, _context()[0])
    return as_array(a, name) if d is None else d


def ones(n: int, dtype):
    return _device_ones(n, np.dtype(dtype), _context()[0])


# --- helpers ----------------------------------------------------------------------


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


# --- element-wise losses ------------------------------------------------------------


def pointwise(call: Pointwise):
    x, ops, loss = call.input, list(call.operands), LOSSES[call.loss]
    s, org = _context(x)
    dt, shape, n = x.dtype, tuple(x.shape), x.size
    e = error_record(s)
    grad = None
    if call.want_grad:
        grad = (
            cuda.device_array(shape, dt, stream=s)
            if call.out is None
            else device_out(call.out, shape, dt, s, x, dict(zip(loss.operands, ops)))
        )
    want_none = call.want_loss and call.reduction == "none"
    mean = call.reduction == "mean"
    value = dv = None
    want_dv = call.d_operand is not None
    if n == 0:
        if call.want_loss:
            value = (
                cuda.device_array(shape, dt, stream=s)
                if want_none
                else _host_result(np.nan if mean else 0.0, (), dt, s)
            )
        if want_dv:
            dv = _host_result(0.0, tuple(ops[call.d_operand].shape), dt, s)
    else:
        lay = split(shape, [tuple(o.shape) for o in ops])
        if lay is None:
            bad = [
                nm
                for o, nm in zip(ops, loss.operands)
                if operand_kind(tuple(o.shape), shape, len(shape)) is None
            ]
            raise ValueError(
                f"{', '.join(bad)} broadcasts to the input's shape in a pattern the GPU path "
                "does not support (constant along inner axes between varying ones): pass it "
                "at the input's full shape"
            )
        r, l_, kinds, _ = lay
        flats = [o.reshape(o.size) for o in ops]
        while len(flats) < 3:  # unread fillers
            flats.append(flats[0])
            kinds.append(SCALAR)
        xf = x.reshape(n)
        gf = grad.reshape(n) if call.want_grad else cuda.device_array(1, dt, stream=s)
        loss_el = cuda.device_array(shape if want_none else (1,), dt, stream=s)
        dvf = cuda.device_array(n if want_dv else 1, dt, stream=s)
        nb = _blocks(n)
        partial = cuda.device_array(nb, np.float64, stream=s)
        params = tuple(float(p) for p in call.params)
        K.elementwise_kernel(call.loss, dt)[nb, K.THREADS, s](
            xf,
            flats[0],
            kinds[0],
            flats[1],
            kinds[1],
            flats[2],
            kinds[2],
            l_,
            params,
            grad_scale(call.reduction, call.denom),
            gf,
            call.want_grad,
            loss_el.reshape(loss_el.size),
            want_none,
            dvf,
            want_dv,
            partial,
            e,
        )
        if call.want_loss:
            value = (
                loss_el
                if want_none
                else _scalar_result(partial, dt, s, mean=mean, denom=float(call.denom))
            )
        if want_dv:
            dv = _reduce_dv(kinds[call.d_operand], dvf, r, l_, ops[call.d_operand], dt, s)
    if loss.rule is not None:
        strict_check(e, s)
    if dv is not None:
        dv = like(org, dv.reshape(() if call.d_shape is None else call.d_shape))
    if grad is not None:
        grad = call.out if call.out is not None else like(org, grad)
    return (None if value is None else like(org, value)), grad, dv


def _reduce_dv(kind, dvf, r, l_, op, dt, s):
    """The derivative summed over the elements that share each entry of ``op``."""
    if kind == FULL:
        return dvf.reshape(tuple(op.shape))
    if kind == ROW:
        res = cuda.device_array(r, dt, stream=s)
        K.row_sums_kernel()[r, K.THREADS, s](dvf, l_, res)
    elif kind == COL:
        res = cuda.device_array(l_, dt, stream=s)
        K.col_sums_kernel()[(l_ + 127) // 128, 128, s](dvf, r, l_, res)
    else:
        nb = _blocks(dvf.size)
        partial = cuda.device_array(nb, np.float64, stream=s)
        K.block_sums_kernel()[nb, K.THREADS, s](dvf, partial)
        res = _scalar_result(partial, dt, s, mean=False)
    return res.reshape(tuple(op.shape))


# --- cross-entropy ------------------------------------------------------------------


def _class_indices(target, s):
    """Class indices on the device as int32/int64 (host data as ``_rules.as_class_indices``
    makes it)."""
    t = as_numba(target, s)
    if t is None:
        return cuda.to_device(as_class_indices(np.asarray(target)).reshape(-1), stream=s)
    if t.dtype not in (np.int32, np.int64):
        raise TypeError(
            f"target has dtype {t.dtype}: pass integer class indices (int32/int64 on the "
            "GPU) of shape (N,) or float class probabilities of the input's shape"
        )
    return contiguous(t, "target")


def cross_entropy(call: CrossEntropy):
    x, w, probs = call.input, call.weight, call.probs
    s, org = _context(x)
    dt, xshape = x.dtype, tuple(x.shape)
    c = xshape[-1]
    n = xshape[0] if x.ndim == 2 else 1
    t = call.target if probs else _class_indices(call.target, s)
    x2 = x.reshape(1, c) if x.ndim == 1 else x
    t2 = t.reshape((n, c) if probs else (n,))
    e = error_record(s)
    grad = None
    if call.want_grad:
        grad = (
            cuda.device_array(xshape, dt, stream=s)
            if call.out is None
            else device_out(call.out, xshape, dt, s, x, {"target": t, "weight": w})
        )
        grad2 = grad.reshape((n, c))
    else:
        grad2 = cuda.device_array((1, 1), dt, stream=s)
    rows = cuda.device_array(n, np.float64, stream=s)
    blocks, tpr, _, cached, shm = K.row_launch(n, c, dt.itemsize)
    eps = call.label_smoothing
    if probs:
        params = None
        if n:
            K.ce_prob_kernel(dt)[blocks, K.THREADS, s, shm](
                x2,
                t2,
                w,
                eps,
                grad_scale(call.reduction, n),
                grad2,
                call.want_grad,
                rows,
                tpr,
                cached,
            )
    else:
        nb = _blocks(n)
        partial = cuda.device_array(nb, np.float64, stream=s)
        K.ce_labels_kernel()[nb, K.THREADS, s](t2, w, call.ignore_index, c, partial, e)
        params = cuda.device_array(3, np.float64, stream=s)
        K.ce_params_kernel()[1, K.THREADS, s](partial, w, call.reduction == "mean", params)
        if n:
            K.ce_index_kernel(dt)[blocks, K.THREADS, s, shm](
                x2, t2, w, call.ignore_index, eps, params, grad2, call.want_grad, rows, tpr, cached
            )
    loss = None
    if call.want_loss:
        if call.reduction == "none":
            loss = _cast(rows, dt, s).reshape(xshape[:-1])
        else:
            loss = _scalar_result(
                rows, dt, s, mean=call.reduction == "mean", denom=float(n), params=params
            )
    strict_check(e, s, None if probs else (t2, c, call.ignore_index))
    if loss is not None:
        loss = like(org, loss)
    if grad is not None:
        grad = call.out if call.out is not None else like(org, grad)
    return loss, grad


# --- logsumexp / softmax / log_softmax ------------------------------------------------


def softmax(call: Softmax):
    x, ax, mode = call.input, call.axis, call.mode
    s, org = _context(x)
    dt, shape = x.dtype, tuple(x.shape)
    if ax is None:  # all elements (and a 0-d array: one element along its only "axis")
        outer, c, inner = 1, x.size, 1
    else:
        outer, c, inner = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1 :])
    n_rows = outer * inner
    out = cuda.device_array(shape if mode != LSE else (0,), dt, stream=s)
    if n_rows and c:
        lse = cuda.device_array(n_rows, dt, stream=s)
        blocks, tpr, _, cached, shm = K.row_launch(n_rows, c, dt.itemsize)
        K.softmax_kernel(dt)[blocks, K.THREADS, s, shm](
            x.reshape(x.size), n_rows, c, inner, mode, out.reshape(out.size), lse, tpr, cached
        )
    else:
        lse = _host_result(-np.inf, n_rows, dt, s)
    if mode != LSE:
        return like(org, out)
    if ax is None:
        res = lse.reshape((1,) * x.ndim if call.keepdims else ())
    else:
        res = lse.reshape(shape[:ax] + ((1,) if call.keepdims else ()) + shape[ax + 1 :])
    return like(org, res)
