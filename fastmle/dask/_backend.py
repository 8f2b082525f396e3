"""The Dask backend's entry points (the protocol is in ``fastmle._dispatch``; the
semantics are documented in ``fastmle.dask``): generic runners that map the CPU
kernels (``fastmle._cpu``) over the input's row chunks.

A task runs a kernel on its rows and returns a tuple (gradient block, loss block,
float64 partial sums, ...); small getter tasks split the tuples into Dask arrays,
so that the loss and the gradient of ``L_value_and_grad`` share the kernel tasks.
Nothing here knows a particular element-wise loss: ``pointwise`` runs every entry
of ``_calls.LOSSES`` from its record and its ``ValueRule``.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from .._calls import LOSSES, LSE, CrossEntropy, Pointwise, Softmax
from .._kinds import is_dask
from .._reduction import grad_scale, reduce_total
from .._rules import as_array, as_float_array, float_dtype, reject_non_numeric
from .._cpu import backend as _cpu
from .._cpu import cross_entropy as _ce
from .._cpu import elementwise as _ew

_AXES = "abcdefghijklmnopqrstuvwxyz"

# --- adopting arguments -----------------------------------------------------------


def _check_chunks(a, name: str) -> None:
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


def _as_float(a, name: str, dtype=None):
    """Dask ``a`` converted lazily to the computation dtype (``_rules.float_dtype``)."""
    _check_chunks(a, name)
    reject_non_numeric(a, name)
    return a.astype(float_dtype(a) if dtype is None else np.dtype(dtype))


def input(a, name: str = "input"):
    if not is_dask(a):
        raise TypeError(
            f"{name} is not a Dask array ({type(a).__name__}) but another argument is: "
            f"pass {name} as a Dask array chunked along its first axis, e.g. "
            f"dask.array.from_array({name}, chunks=(rows, -1)), or compute the other argument"
        )
    if a.ndim == 0:
        raise ValueError(
            f"{name} is a 0-d Dask array: the Dask path needs a batch axis to "
            f"chunk; compute it ({name}.compute()) and pass the NumPy value"
        )
    return _as_float(a, name)


def operand(a, name: str, dtype):
    return _as_float(a, name, dtype) if is_dask(a) else as_float_array(a, name, dtype)


def array(a, name: str = "target"):
    if is_dask(a):
        _check_chunks(a, name)
        return a
    return as_array(a, name)


def ones(n: int, dtype) -> np.ndarray:
    return np.ones(n, dtype)


def _no_out(out) -> None:
    if out is not None:
        raise TypeError(
            "out= is not supported with Dask arrays: the gradient is a new Dask array "
            "(store it with dask.array.store if it must go to a buffer)"
        )


# --- chunks and partial sums --------------------------------------------------------


def _spans(a, x) -> bool:
    """Whether operand ``a`` runs along x's batch (first) axis."""
    return a.ndim == x.ndim and a.shape[0] == x.shape[0]


def _row_chunked(a, x):
    """Operand ``a`` (NumPy or Dask, broadcasting to x's shape) as a Dask array in
    x's row chunks if it spans x's rows, in one chunk if it is broadcast along them."""
    chunks = ((x.chunks[0] if _spans(a, x) else -1),) + (-1,) * (a.ndim - 1) if a.ndim else ()
    return a.rechunk(chunks) if is_dask(a) else da.from_array(a, chunks=chunks)


def _map_rows(task, x, operands, *args, **kwargs):
    """task(x_rows, *operand_blocks, *args, **kwargs) per row chunk of ``x``, whose
    other axes are one chunk. The blocks of the result are the tasks' tuples."""
    x = x.rechunk({k: -1 for k in range(1, x.ndim)})
    blocks = [_row_chunked(a, x) for a in operands]
    return da.map_blocks(
        task, x, *blocks, *args, dtype=object, meta=np.empty((0,) * x.ndim, object), **kwargs
    )


def _item(block, i):
    return block[i]


def _part(tuples, i, chunks, dtype):
    """Item ``i`` of every task's tuple, as a Dask array of the given chunks."""
    return tuples.map_blocks(
        _item, i, chunks=chunks, dtype=dtype, meta=np.empty((0,) * len(chunks), dtype)
    )


def _exact_sum(parts, shape):
    # math.fsum is exact, so the total does not depend on how the chunks are ordered
    cols = parts.reshape(parts.shape[0], -1).T
    return np.array([math.fsum(c) for c in cols]).reshape(shape)[()]  # 0-d: a NumPy scalar


def _total(tuples, i, shape=()):
    """The sum over the row chunks of item ``i`` of the tasks' tuples: float64 partial
    sums of ``shape`` (0-d, or of the tuples' ndim with a batch axis of length 1, as
    the derivative for an operand broadcast along the batch), padded with ones to the
    tuples' ndim. Returns a float64 Dask array of ``shape``."""
    nd = tuples.ndim
    pad = (1,) * (nd - len(shape)) + tuple(shape)
    parts = _part(
        tuples, i, ((1,) * tuples.numblocks[0],) + tuple((s,) for s in pad[1:]), np.float64
    )
    out = _AXES[1:nd] if shape else ""  # "": one 0-d block holding a NumPy scalar
    total = da.blockwise(
        _exact_sum,
        out,
        parts,
        _AXES[:nd],
        pad[1:] if shape else (),
        None,
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0,) * len(out)),
    )
    return total.reshape(shape)


def _finish(total, denom, reduction, dtype):
    return reduce_total(float(total), float(denom), reduction, dtype)  # a NumPy scalar


def _reduce(total, denom, reduction, dtype):
    """The reduced loss from its float64 total and the mean's denominator (a number
    or a 0-d Dask array), as a 0-d Dask array of ``dtype``."""
    return da.blockwise(
        _finish,
        "",
        total,
        "",
        denom,
        "" if is_dask(denom) else None,
        reduction,
        None,
        dtype,
        None,
        dtype=dtype,
        meta=np.empty((), dtype),
    )


# --- element-wise losses: one runner for every entry of LOSSES ---------------------


def _pointwise_task(x, *ops, loss, params, scale, want_none, want_grad, d_operand, d_summed, rule):
    x = np.ascontiguousarray(x)
    ops = [np.ascontiguousarray(o) for o in ops]
    if rule is not None:
        _cpu.check_values(rule, ([x] + ops)[rule.position])
    total, loss_el, grad, dv = _ew.run(
        loss,
        x,
        ops,
        params,
        scale=scale,
        want_loss=True,
        want_none=want_none,
        want_grad=want_grad,
        dv_index=d_operand,
        dv_dtype=np.float64 if d_summed else None,
    )
    if d_summed:  # a partial sum: padded to x's ndim with the batch axis first
        dv = dv.reshape((1,) * (x.ndim - dv.ndim) + dv.shape)
    return grad, loss_el, np.full((1,) * x.ndim, total), dv


def pointwise(call: Pointwise):
    _no_out(call.out)
    x, ops = call.input, list(call.operands)
    rule = LOSSES[call.loss].rule
    if rule is not None and not is_dask(([x] + ops)[rule.position]):
        _cpu.check_values(rule, ([x] + ops)[rule.position])  # host data: now
        rule = None
    op = None if call.d_operand is None else ops[call.d_operand]
    summed = op is not None and not _spans(op, x)
    reduction = call.reduction
    tuples = _map_rows(
        _pointwise_task,
        x,
        ops,
        loss=call.loss,
        params=call.params,
        scale=grad_scale(reduction, call.denom),
        want_none=call.want_loss and reduction == "none",
        want_grad=call.want_grad,
        d_operand=call.d_operand,
        d_summed=summed,
        rule=rule,
    )
    loss = grad = dv = None
    if call.want_grad:
        grad = _part(tuples, 0, tuples.chunks, x.dtype)
    if call.want_loss:
        loss = (
            _part(tuples, 1, tuples.chunks, x.dtype)
            if reduction == "none"
            else _reduce(_total(tuples, 2), call.denom, reduction, x.dtype)
        )
    if summed:
        dv = _total(tuples, 3, op.shape).astype(x.dtype)
    elif op is not None:
        dv = _part(tuples, 3, (tuples.chunks[0],) + tuple((s,) for s in op.shape[1:]), x.dtype)
    if dv is not None:
        dv = dv.reshape(() if call.d_shape is None else call.d_shape)
    return loss, grad, dv


# --- cross-entropy ----------------------------------------------------------------


def _label_task(t, w, *, n_classes, ignore_index, block_info=None):
    row0 = block_info[None]["array-location"][0][0]
    return (np.full((1, 1), _ce.labels(t[:, 0], n_classes, ignore_index, w[0], row0)[1]),)


def _ce_task(
    x, t, w, denom, *, probs, eps, ignore_index, reduction, want_rows, want_grad, block_info=None
):
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w[0])
    if probs:
        t, wsum = np.ascontiguousarray(t), float(x.shape[0])
    else:
        row0 = block_info[None]["array-location"][0][0]
        t, wsum = _ce.labels(t[:, 0], x.shape[1], ignore_index, w, row0)
    scale = grad_scale(reduction, wsum if denom is None else float(denom))
    grad = np.empty(x.shape, x.dtype) if want_grad else None
    total, rows = _ce.compute(x, t, w, probs, eps, ignore_index, scale, want_rows, grad)
    return grad, rows.astype(x.dtype)[:, None], np.full((1, 1), total), np.full((1, 1), wsum)


def cross_entropy(call: CrossEntropy):
    _no_out(call.out)
    x, reduction = call.input, call.reduction
    if x.ndim != 2:
        raise ValueError(
            f"a Dask input to cross_entropy must be 2-D logits (N, C) chunked "
            f"along N; got shape {x.shape}"
        )
    n_classes, probs = x.shape[1], call.probs
    w = call.weight[None, :]
    # class indices as a column: (N, 1) broadcasts to (N, C)
    t = _row_chunked(call.target if probs else call.target[:, None], x)
    denom = None  # the mean's denominator: each task's own label sum, unless known first
    if probs:
        denom = float(x.shape[0])
    elif reduction == "mean" and call.want_grad:  # a first pass over the targets:
        labels = _map_rows(
            _label_task,
            t,
            [w],
            n_classes=n_classes,  # gradient tasks
            ignore_index=call.ignore_index,
        )  # need the global sum
        denom = _total(labels, 0)
    tuples = _map_rows(
        _ce_task,
        x,
        [t, w],
        denom,
        probs=probs,
        eps=call.label_smoothing,
        ignore_index=call.ignore_index,
        reduction=reduction,
        want_rows=call.want_loss and reduction == "none",
        want_grad=call.want_grad,
    )
    loss = grad = None
    if call.want_grad:
        grad = _part(tuples, 0, tuples.chunks, x.dtype)
    if call.want_loss and reduction == "none":
        loss = _part(tuples, 1, (x.chunks[0], (1,)), x.dtype)[:, 0]
    elif call.want_loss:
        loss = _reduce(
            _total(tuples, 2), _total(tuples, 3) if denom is None else denom, reduction, x.dtype
        )
    return loss, grad


# --- logsumexp, softmax, log_softmax ------------------------------------------------


def _softmax_task(block, *, axis, mode, keepdims):
    return _cpu.softmax(Softmax(np.ascontiguousarray(block), axis, mode, keepdims))


def softmax(call: Softmax):
    x, ax = call.input, call.axis
    if ax is None:
        raise ValueError(
            "axis=None is not supported for Dask arrays: pass an int axis "
            "(for all elements, a.reshape(-1) with axis=0)"
        )
    x = x.rechunk({ax: -1})
    meta = np.empty((0,) * x.ndim, x.dtype)
    if call.mode != LSE:
        return x.map_blocks(
            _softmax_task, axis=ax, mode=call.mode, keepdims=False, dtype=x.dtype, meta=meta
        )
    chunks = x.chunks[:ax] + ((1,),) + x.chunks[ax + 1 :]
    lse = x.map_blocks(
        _softmax_task, axis=ax, mode=LSE, keepdims=True, chunks=chunks, dtype=x.dtype, meta=meta
    )
    return lse if call.keepdims else lse.squeeze(axis=ax)
