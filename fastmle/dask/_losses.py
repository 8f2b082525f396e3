"""The Dask twins of the loss runners and softmax functions (rules: ``fastmle.dask``).

Each loss maps one task over the input's row chunks. A task runs the NumPy path's
kernel on its rows and returns a tuple (gradient block, loss block, float64
partial sums); small getter tasks split the tuples into Dask arrays, so that the
loss and the gradient of ``L_value_and_grad`` share the kernel tasks.
"""

from __future__ import annotations

import importlib
import math

import dask.array as da
import numpy as np

from .. import _elementwise as ew
from .. import binary, divergence, gaussian
from .._reduction import grad_scale, reduce_total
from .._validation import as_float_array, check_class_args, check_reduction
from . import is_dask_array

# fastmle.cross_entropy and fastmle.softmax are also names of functions in fastmle
ce = importlib.import_module("..cross_entropy", __package__)
sm = importlib.import_module("..softmax", __package__)

_AXES = "abcdefghijklmnopqrstuvwxyz"

# --- chunks and partial sums ----------------------------------------------------


def _input(input, out, name="input"):
    """The checks every Dask twin starts with."""
    if out is not None:
        raise TypeError(
            "out= is not supported with Dask arrays: the gradient is a new Dask array "
            "(store it with dask.array.store if it must go to a buffer)"
        )
    if not is_dask_array(input):
        raise TypeError(
            f"{name} is not a Dask array ({type(input).__name__}) but another argument is: "
            f"pass {name} as a Dask array chunked along its first axis, e.g. "
            f"dask.array.from_array({name}, chunks=(rows, -1)), or compute the other argument"
        )
    if input.ndim == 0:
        raise ValueError(f"{name} is a 0-d Dask array: the Dask path needs a batch axis to "
                         f"chunk; compute it ({name}.compute()) and pass the NumPy value")
    return input


def _row_chunked(a, x):
    """Operand ``a`` (NumPy or Dask, broadcasting to x's shape) as a Dask array in
    x's row chunks if it spans x's rows, in one chunk if it is broadcast along them."""
    spans = a.ndim == x.ndim and a.shape[0] == x.shape[0]
    chunks = ((x.chunks[0] if spans else -1),) + (-1,) * (a.ndim - 1) if a.ndim else ()
    return a.rechunk(chunks) if is_dask_array(a) else da.from_array(a, chunks=chunks)


def _map_rows(task, x, operands, *args, **kwargs):
    """task(x_rows, *operand_blocks, *args, **kwargs) per row chunk of ``x``, whose
    other axes are one chunk. The blocks of the result are the tasks' tuples."""
    x = x.rechunk({k: -1 for k in range(1, x.ndim)})
    blocks = [_row_chunked(a, x) for a in operands]
    return da.map_blocks(task, x, *blocks, *args, dtype=object,
                         meta=np.empty((0,) * x.ndim, object), **kwargs)


def _item(block, i):
    return block[i]


def _part(tuples, i, chunks, dtype):
    """Item ``i`` of every task's tuple, as a Dask array of the given chunks."""
    return tuples.map_blocks(_item, i, chunks=chunks, dtype=dtype,
                             meta=np.empty((0,) * len(chunks), dtype))


def _exact_sum(parts, shape):
    # math.fsum is exact, so the total does not depend on how the chunks are ordered
    cols = parts.reshape(parts.shape[0], -1).T
    return np.array([math.fsum(c) for c in cols]).reshape(shape)[()]  # 0-d: a NumPy scalar


def _total(tuples, i, shape=()):
    """The sum over the row chunks of item ``i`` of the tasks' tuples: float64 partial
    sums of ``shape`` (0-d or of the tuples' ndim with a batch axis of length 1, as
    the d_var of a var broadcast along the batch), padded with ones to the tuples'
    ndim. Returns a float64 Dask array of ``shape``."""
    nd = tuples.ndim
    pad = (1,) * (nd - len(shape)) + tuple(shape)
    parts = _part(tuples, i, ((1,) * tuples.numblocks[0],) + tuple((s,) for s in pad[1:]),
                  np.float64)
    out = _AXES[1:nd] if shape else ""  # "": one 0-d block holding a NumPy scalar
    total = da.blockwise(_exact_sum, out, parts, _AXES[:nd], pad[1:] if shape else (), None,
                         concatenate=True, dtype=np.float64, meta=np.empty((0,) * len(out)))
    return total.reshape(shape)


def _finish(total, denom, reduction, dtype):
    return reduce_total(float(total), float(denom), reduction, dtype)  # a NumPy scalar, as on NumPy


def _reduce(total, denom, reduction, dtype):
    """The reduced loss from its float64 total and the mean's denominator (a number
    or a 0-d Dask array), as a 0-d Dask array of ``dtype``."""
    return da.blockwise(_finish, "", total, "", denom, "" if is_dask_array(denom) else None,
                        reduction, None, dtype, None, dtype=dtype, meta=np.empty((), dtype))


# --- cross-entropy ----------------------------------------------------------------


def _label_task(t, w, *, n_classes, ignore_index, block_info=None):
    row0 = block_info[None]["array-location"][0][0]
    return (np.full((1, 1), ce._labels(t[:, 0], n_classes, ignore_index, w[0], row0)[1]),)


def _ce_task(x, t, w, denom, *, probs, eps, ignore_index, reduction, want_rows, want_grad,
             block_info=None):
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w[0])
    if probs:
        t, wsum = np.ascontiguousarray(t), float(x.shape[0])
    else:
        row0 = block_info[None]["array-location"][0][0]
        t, wsum = ce._labels(t[:, 0], x.shape[1], ignore_index, w, row0)
    scale = grad_scale(reduction, wsum if denom is None else float(denom))
    grad = np.empty(x.shape, x.dtype) if want_grad else None
    total, rows = ce._compute(x, t, w, probs, eps, ignore_index, scale, want_rows, grad)
    return grad, rows.astype(x.dtype)[:, None], np.full((1, 1), total), np.full((1, 1), wsum)


def cross_entropy_run(input, target, weight, ignore_index, reduction, label_smoothing,
                      want_loss, want_grad, out=None):
    reduction = check_reduction(reduction)
    x = as_float_array(_input(input, out), "input")
    n_classes, ignore_index, eps = check_class_args(x.shape, ignore_index, label_smoothing)
    if x.ndim != 2:
        raise ValueError(f"a Dask input to cross_entropy must be 2-D logits (N, C) chunked "
                         f"along N; got shape {x.shape}")
    w = ce._weights(weight, n_classes, x.dtype)[None, :]
    t, probs = ce._targets(target, x.shape, ignore_index, x.dtype)
    # class indices as a column: (N, 1) broadcasts to (N, C)
    t = _row_chunked(t if probs else t[:, None], x)
    mean_grad = reduction == "mean" and want_grad
    denom = None  # the mean's denominator: each task's own label sum, unless known first
    if probs:
        denom = float(x.shape[0])
    elif mean_grad:  # a first pass over the targets: gradient tasks need the global sum
        labels = _map_rows(_label_task, t, [w], n_classes=n_classes,
                           ignore_index=ignore_index)
        denom = _total(labels, 0)
    tuples = _map_rows(_ce_task, x, [t, w], denom, probs=probs, eps=eps,
                       ignore_index=ignore_index, reduction=reduction,
                       want_rows=want_loss and reduction == "none", want_grad=want_grad)
    loss = grad = None
    if want_grad:
        grad = _part(tuples, 0, tuples.chunks, x.dtype)
    if want_loss and reduction == "none":
        loss = _part(tuples, 1, (x.chunks[0], (1,)), x.dtype)[:, 0]
    elif want_loss:
        loss = _reduce(_total(tuples, 2), _total(tuples, 3) if denom is None else denom,
                       reduction, x.dtype)
    return loss, grad


# --- element-wise losses ----------------------------------------------------------


def _ew_task(x, *ops, loss_id, params, scale, want_none, want_grad, dv_index, dv_summed,
             check):
    x = np.ascontiguousarray(x)
    ops = [np.ascontiguousarray(o) for o in ops]
    if check is not None:
        check[0](([x] + ops)[check[1]])
    total, loss_el, grad, dv = ew.run(
        loss_id, x, ops, params, scale=scale, want_loss=True, want_none=want_none,
        want_grad=want_grad, dv_index=dv_index, dv_dtype=np.float64 if dv_summed else None)
    if dv_summed:  # a partial sum: padded to x's ndim with the batch axis first
        dv = dv.reshape((1,) * (x.ndim - dv.ndim) + dv.shape)
    return grad, loss_el, np.full((1,) * x.ndim, total), dv


def _elementwise(loss_id, x, ops, params, reduction, denom, want_loss, want_grad, *,
                 check=None, dv_index=None):
    """(loss, grad, d/d ops[dv_index]) of an element-wise loss of Dask ``x``.
    ``check``: (function, position in [x, *ops]) checking that array's values;
    a NumPy array is checked now, a Dask array in each task."""
    if check is not None and not is_dask_array(([x] + ops)[check[1]]):
        check[0](([x] + ops)[check[1]])
        check = None
    op = None if dv_index is None else ops[dv_index]
    summed = op is not None and not (op.ndim == x.ndim and op.shape[0] == x.shape[0])
    tuples = _map_rows(_ew_task, x, ops, loss_id=loss_id, params=params,
                       scale=grad_scale(reduction, denom),
                       want_none=want_loss and reduction == "none", want_grad=want_grad,
                       dv_index=dv_index, dv_summed=summed, check=check)
    loss = grad = dv = None
    if want_grad:
        grad = _part(tuples, 0, tuples.chunks, x.dtype)
    if want_loss:
        loss = (_part(tuples, 1, tuples.chunks, x.dtype) if reduction == "none"
                else _reduce(_total(tuples, 2), denom, reduction, x.dtype))
    if summed:
        dv = _total(tuples, 3, op.shape).astype(x.dtype)
    elif op is not None:
        dv = _part(tuples, 3, (tuples.chunks[0],) + tuple((s,) for s in op.shape[1:]), x.dtype)
    return loss, grad, dv


def bce_with_logits_run(input, target, weight, reduction, pos_weight, want_loss, want_grad,
                        out=None):
    reduction, x, ops, params = binary._logits_inputs(_input(input, out), target, weight,
                                                      reduction, pos_weight)
    return _elementwise(ew.BCE_LOGITS, x, ops, params, reduction, x.size, want_loss,
                        want_grad)[:2]


def bce_run(input, target, weight, reduction, want_loss, want_grad, out=None):
    reduction, x, y, w = binary._inputs(_input(input, out), target, weight, reduction)
    return _elementwise(ew.BCE_PROBS, x, [y, w], (0.0, 0.0), reduction, x.size, want_loss,
                        want_grad, check=(binary._check_probabilities, 0))[:2]


def gaussian_run(input, target, var, full, eps, reduction, want_loss, want_grad, out=None):
    reduction, x, t, v, shaped, is_float, params = gaussian._gaussian_inputs(
        _input(input, out), target, var, full, eps, reduction)
    loss, grad, dvar = _elementwise(ew.GAUSSIAN, x, [t, shaped], params, reduction, x.size,
                                    want_loss, want_grad, check=(gaussian._check_var, 2),
                                    dv_index=1 if want_grad else None)
    if want_grad:
        grad = (grad, dvar.reshape(() if is_float else v.shape))
    return loss, grad


def mse_run(input, target, reduction, want_loss, want_grad, out=None):
    reduction, x, t = gaussian._mse_inputs(_input(input, out), target, reduction)
    return _elementwise(ew.MSE, x, [t], (0.0, 0.0), reduction, x.size, want_loss,
                        want_grad)[:2]


def kl_run(input, target, reduction, log_target, want_loss, want_grad, out=None):
    reduction, denom, x, ops, params = divergence._kl_inputs(_input(input, out), target,
                                                             reduction, log_target)
    return _elementwise(ew.KL, x, ops, params, reduction, denom, want_loss, want_grad)[:2]


# --- logsumexp, softmax, log_softmax ------------------------------------------------


def _along(a, axis):
    """Dask ``a`` in float, with ``axis`` (an int) in one chunk."""
    x = as_float_array(_input(a, None, "a"), "a")
    if axis is None:
        raise ValueError("axis=None is not supported for Dask arrays: pass an int axis "
                         "(for all elements, a.reshape(-1) with axis=0)")
    ax = sm._check_axis(x.ndim, axis)
    return x.rechunk({ax: -1}), ax


def logsumexp(a, axis=-1, keepdims=False):
    x, ax = _along(a, axis)
    chunks = x.chunks[:ax] + ((1,),) + x.chunks[ax + 1:]
    lse = x.map_blocks(sm.logsumexp, axis=ax, keepdims=True, chunks=chunks, dtype=x.dtype,
                       meta=np.empty((0,) * x.ndim, x.dtype))
    return lse if keepdims else lse.squeeze(axis=ax)


def softmax(a, axis=-1):
    x, ax = _along(a, axis)
    return x.map_blocks(sm.softmax, axis=ax, dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype))


def log_softmax(a, axis=-1):
    x, ax = _along(a, axis)
    return x.map_blocks(sm.log_softmax, axis=ax, dtype=x.dtype,
                        meta=np.empty((0,) * x.ndim, x.dtype))
