"""The CPU backend's entry points (the protocol is in ``fastmle._dispatch``): NumPy
arrays in, the Numba kernels of this folder, NumPy results out."""

from __future__ import annotations

import math

import numpy as np

from .._calls import LOSSES, LSE, CrossEntropy, Pointwise, Softmax, ValueRule
from .._reduction import grad_scale, reduce_total
from .._rules import as_array, as_float_array, check_no_overlap
from . import cross_entropy as _ce
from . import elementwise as _ew
from . import softmax as _sm


def input(a, name: str = "input") -> np.ndarray:
    return as_float_array(a, name)


def operand(a, name: str, dtype) -> np.ndarray:
    return as_float_array(a, name, dtype)


def array(a, name: str = "target") -> np.ndarray:
    return as_array(a, name)


def ones(n: int, dtype) -> np.ndarray:
    return np.ones(n, dtype)


def check_out(
    out, shape: tuple[int, ...], dtype: np.dtype, name: str = "out", *, input=None, operands=None
) -> np.ndarray:
    """Validate a caller's gradient buffer; it is written in place.

    ``input`` and ``operands`` (a dict name -> array: what the kernel reads) are
    checked by :func:`check_no_overlap`.
    """
    if type(out) not in (np.ndarray, np.memmap):
        raise TypeError(
            f"{name} must be a NumPy array (numpy.ndarray or numpy.memmap), got "
            f"{type(out).__module__}.{type(out).__name__}"
        )
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, the gradient has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {out.dtype}, the gradient is {dtype}: pass a {dtype} array"
        )
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray)")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    check_no_overlap(out, input, operands or {}, name)
    return out


def check_values(rule: ValueRule, a: np.ndarray) -> None:
    bad = _ew.count_outside(a, a.dtype.type(rule.lo), a.dtype.type(rule.hi))
    if bad:
        raise ValueError(rule.message.format(bad))


def pointwise(call: Pointwise):
    x, ops, loss = call.input, list(call.operands), LOSSES[call.loss]
    if loss.rule is not None:
        check_values(loss.rule, ([x] + ops)[loss.rule.position])
    out = call.out
    if out is not None:
        out = check_out(out, x.shape, x.dtype, input=x, operands=dict(zip(loss.operands, ops)))
    total, loss_el, grad, dv = _ew.run(
        call.loss,
        x,
        ops,
        call.params,
        scale=grad_scale(call.reduction, call.denom),
        want_loss=call.want_loss,
        want_none=call.want_loss and call.reduction == "none",
        want_grad=call.want_grad,
        out=out,
        dv_index=call.d_operand,
    )
    value = None
    if call.want_loss:
        value = (
            loss_el
            if call.reduction == "none"
            else reduce_total(total, call.denom, call.reduction, x.dtype)
        )
    if dv is not None:
        dv = x.dtype.type(dv.reshape(-1)[0]) if call.d_shape is None else dv.reshape(call.d_shape)
    return value, grad, dv


def cross_entropy(call: CrossEntropy):
    x, w = call.input, call.weight
    dt, c = x.dtype, x.shape[-1]
    x2 = x.reshape(1, c) if x.ndim == 1 else x
    if call.probs:
        t2, denom = call.target.reshape(x2.shape), float(x2.shape[0])
    else:  # weights are ones without a weight: the count of kept rows
        t2, denom = _ce.labels(call.target.reshape(x2.shape[0]), c, call.ignore_index, w)
    grad = grad2 = None
    if call.want_grad:
        grad = (
            np.empty(x.shape, dt)
            if call.out is None
            else check_out(call.out, x.shape, dt, input=x, operands={"target": t2, "weight": w})
        )
        grad2 = grad.reshape(x2.shape)
    want_rows = call.want_loss and call.reduction == "none"
    total, rows = _ce.compute(
        x2,
        t2,
        w,
        call.probs,
        call.label_smoothing,
        call.ignore_index,
        grad_scale(call.reduction, denom),
        want_rows,
        grad2,
    )
    loss = None
    if want_rows:
        loss = rows.astype(dt).reshape(x.shape[:-1])
    elif call.want_loss:
        loss = reduce_total(total, denom, call.reduction, dt)
    return loss, grad


def softmax(call: Softmax):
    x, ax = call.input, call.axis
    if ax is None:
        rows = x.reshape(1, -1)
    else:
        moved = np.ascontiguousarray(np.moveaxis(x, ax, -1))
        rows = moved.reshape(math.prod(moved.shape[:-1]), x.shape[ax])
    lse, out = _sm.run(rows, call.mode)
    if call.mode == LSE:
        res = lse.astype(x.dtype)
        if ax is None:
            return res.reshape((1,) * x.ndim) if call.keepdims else x.dtype.type(res[0])
        res = res.reshape(x.shape[:ax] + x.shape[ax + 1 :])
        return np.expand_dims(res, ax) if call.keepdims else res
    if ax is None:
        return out.reshape(x.shape)
    moved = x.shape[:ax] + x.shape[ax + 1 :] + (x.shape[ax],)
    return np.ascontiguousarray(np.moveaxis(out.reshape(moved), -1, ax))
