"""What a public function hands a backend: one record per kind of kernel, the one
table of element-wise losses, and the one broadcast-layout rule.

A public function checks its arguments (``_rules``), adopts them into the backend's
arrays (``backend.input`` / ``backend.operand``) and passes one of these records to
the backend's entry point (``pointwise``, ``cross_entropy``, ``softmax``). Every
backend (``fastmle._cpu``, ``fastmle.cuda``, ``fastmle.dask``) reads the same record,
so the rules are stated once, here and in ``_rules``. Nothing here imports a backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

# --- element-wise losses: the one id table ------------------------------------------


class ValueRule(NamedTuple):
    """A bound on the values of one argument, checked by every backend (the CPU before
    the kernel runs, Dask per task, CUDA inside the kernel: NaN and an error record)."""

    position: int  # 0: the input, k: operands[k - 1]
    lo: float
    hi: float
    message: str  # formatted with the count of values outside [lo, hi]


class Loss(NamedTuple):
    name: str  # the public function
    operands: tuple[str, ...]  # argument names, in the kernel's order (at most 3)
    rule: ValueRule | None = None


BCE_LOGITS, BCE_PROBS, GAUSSIAN, MSE, KL, POISSON = range(6)
LOSSES = {
    BCE_LOGITS: Loss("binary_cross_entropy_with_logits", ("target", "weight", "pos_weight")),
    BCE_PROBS: Loss(
        "binary_cross_entropy",
        ("target", "weight"),
        ValueRule(
            0,
            0.0,
            1.0,
            "input holds {} value(s) outside [0, 1]: binary_cross_entropy takes "
            "probabilities (use binary_cross_entropy_with_logits for logits)",
        ),
    ),
    GAUSSIAN: Loss(
        "gaussian_nll_loss",
        ("target", "var"),
        ValueRule(2, 0.0, math.inf, "var has {} negative entry/entries: variances must be >= 0"),
    ),
    MSE: Loss("mse_loss", ("target",)),
    KL: Loss("kl_div", ("target",)),
    POISSON: Loss("poisson_nll_loss", ("target",)),
}


@dataclass(frozen=True)
class Pointwise:
    """An element-wise loss over ``input`` (any shape) and its operands.

    ``operands`` are the backend's arrays in the input's dtype, in the order of
    ``LOSSES[loss].operands``, each broadcasting to the input's shape (the layout of
    :func:`split`). ``params``: two floats whose meaning the loss defines. The
    backend returns ``(loss, grad, d_operand)``: the loss ('none': per element;
    else a scalar of the input's dtype, the float64 total divided by ``denom`` for
    'mean'), the gradient (scaled by 1/denom for 'mean'; into ``out`` when given),
    and, when ``d_operand`` is an index, the derivative with respect to that operand,
    summed over the elements that share each of its entries and shaped ``d_shape``
    (None: a scalar of the input's dtype, 0-d on devices).
    """

    loss: int
    input: Any
    operands: tuple
    params: tuple[float, float]
    reduction: str  # 'none', 'sum' or 'mean'
    denom: float  # the mean's denominator
    want_loss: bool
    want_grad: bool
    out: Any = None
    d_operand: int | None = None
    d_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CrossEntropy:
    """Softmax cross-entropy over the last axis of ``input`` ((N, C) or (C,)).

    ``target``: class probabilities of the input's shape and dtype (``probs``), or
    class indices of shape ``input.shape[:-1]`` in any integer dtype, as given (the
    backend checks their range, ignoring ``ignore_index``). ``weight``: (C,) in the
    input's dtype (``backend.ones`` when the caller gave none). Returns ``(loss,
    grad)``; the mean's denominator is the summed weight of the kept rows (class
    indices) or N (probabilities).
    """

    input: Any
    target: Any
    probs: bool
    weight: Any
    ignore_index: int
    label_smoothing: float
    reduction: str
    want_loss: bool
    want_grad: bool
    out: Any = None


LSE, SOFTMAX, LOG_SOFTMAX = range(3)


@dataclass(frozen=True)
class Softmax:
    """logsumexp, softmax or log_softmax (``mode``) of ``input`` along ``axis`` (an int
    in [0, ndim), or None: all elements). Returns one array: the input's shape, or
    for LSE the reduced shape (``keepdims``: a length-1 axis; a scalar for axis=None
    without keepdims)."""

    input: Any
    axis: int | None
    mode: int
    keepdims: bool = False


# --- the broadcast-layout rule -------------------------------------------------------

FULL, COL, ROW, SCALAR = range(4)


def operand_kind(op_shape: tuple[int, ...], shape: tuple[int, ...], k: int) -> int | None:
    """How an operand of ``op_shape`` broadcasts to ``shape`` seen as a 2-D (R, L) view
    split after axis ``k``: FULL (the input's shape), COL (constant along the leading
    axes: a length-L vector), ROW (constant along the trailing axes: a length-R
    vector), SCALAR (one value), or None (no such description at this split)."""
    if len(op_shape) > len(shape):  # a filler of length 1 for a 0-d input
        return SCALAR
    b = (1,) * (len(shape) - len(op_shape)) + tuple(op_shape)
    lead_vary = all(bd == sd for bd, sd in zip(b[:k], shape[:k]))
    lead_const = all(bd == 1 for bd in b[:k])
    trail_vary = all(bd == sd for bd, sd in zip(b[k:], shape[k:]))
    trail_const = all(bd == 1 for bd in b[k:])
    if lead_vary and trail_vary:
        return FULL
    if lead_const and trail_const:
        return SCALAR
    if lead_const and trail_vary:
        return COL
    if lead_vary and trail_const:
        return ROW
    return None


def split(shape: tuple[int, ...], op_shapes) -> tuple[int, int, list[int], int] | None:
    """(R, L, kinds, k): the first 2-D view (R, L) of ``shape``, split after axis ``k``,
    in which every operand is FULL, COL, ROW or SCALAR (a flat view, k = ndim, when
    all are FULL or SCALAR); None when an operand's pattern fits no split (e.g.
    varying in the first and last axes but not in the middle one)."""
    shape = tuple(shape)
    n = math.prod(shape)
    if n == 0:  # nothing is read
        return 1, 0, [SCALAR] * len(op_shapes), len(shape)
    kinds = [operand_kind(tuple(o), shape, len(shape)) for o in op_shapes]
    if all(kd in (FULL, SCALAR) for kd in kinds):
        return 1, n, kinds, len(shape)
    for k in range(1, len(shape)):
        kinds = [operand_kind(tuple(o), shape, k) for o in op_shapes]
        if None not in kinds:
            r = math.prod(shape[:k])
            return r, n // r, kinds, k
    return None
