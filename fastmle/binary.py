"""Binary cross-entropy (the Bernoulli negative log-likelihood), from logits and
from probabilities, with gradients."""

from __future__ import annotations

import numpy as np

from . import _elementwise as ew
from ._docs import triple
from ._validation import as_float_array, broadcast_operand, check_reduction
from .cuda import gpu_twin
from .dask import dask_twin

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy_with_logits_value_and_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_value_and_grad",
]


def _inputs(input, target, weight, reduction):
    reduction = check_reduction(reduction)
    x = as_float_array(input, "input")
    y = as_float_array(target, "target", x.dtype)
    if y.shape != x.shape:
        raise ValueError(
            f"target has shape {y.shape}; it must have the input's shape {x.shape}"
        )
    w = np.ones(1, x.dtype) if weight is None else broadcast_operand(
        weight, "weight", x.shape, x.dtype)
    return reduction, x, y, w


def _run(loss_id, x, ops, reduction, want_loss, want_grad, out, params=(0.0, 0.0)):
    loss, grad, _ = ew.evaluate(loss_id, x, ops, params, reduction=reduction, denom=x.size,
                                want_loss=want_loss, want_grad=want_grad, out=out)
    return loss, grad


def _logits_inputs(input, target, weight, reduction, pos_weight):
    """(reduction, x, operands, kernel parameters) of BCE with logits."""
    reduction, x, y, w = _inputs(input, target, weight, reduction)
    pw = np.ones(1, x.dtype) if pos_weight is None else broadcast_operand(
        pos_weight, "pos_weight", x.shape, x.dtype)
    unit = 1.0 if weight is None and pos_weight is None else 0.0
    return reduction, x, [y, w, pw], (0.0, unit)


@dask_twin("bce_with_logits_run")
@gpu_twin("bce_with_logits_run")
def _with_logits(input, target, weight, reduction, pos_weight, want_loss, want_grad, out=None):
    reduction, x, ops, params = _logits_inputs(input, target, weight, reduction, pos_weight)
    return _run(ew.BCE_LOGITS, x, ops, reduction, want_loss, want_grad, out, params)


def _check_probabilities(p):
    bad = ew.launch(ew.count_outside, p.reshape(-1), p.dtype.type(0), p.dtype.type(1))
    if bad:
        raise ValueError(
            f"input holds {bad} value(s) outside [0, 1]: binary_cross_entropy takes "
            "probabilities (use binary_cross_entropy_with_logits for logits)"
        )


@dask_twin("bce_run")
@gpu_twin("bce_run")
def _on_probs(input, target, weight, reduction, want_loss, want_grad, out=None):
    reduction, x, y, w = _inputs(input, target, weight, reduction)
    _check_probabilities(x)
    return _run(ew.BCE_PROBS, x, [y, w], reduction, want_loss, want_grad, out)


_LOGITS_DOC = """
    Parameters
    ----------
    input : array_like
        Logits, any shape. float32/float64 are computed in their own dtype, float16
        in float32, integers and bool in float64.
    target : array_like
        Targets of the input's shape (usually in [0, 1]; soft labels allowed).
    weight : array_like, optional
        Rescaling weight, broadcast to the input's shape.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    pos_weight : array_like, optional
        Weight of the positive term, broadcast to the input's shape (typically one
        per class along the last axis).

    Notes
    -----
    Mirrors ``torch.nn.functional.binary_cross_entropy_with_logits``. The loss is
    computed as ``w * (y * pw * softplus(-x) + (1 - y) * softplus(x))``, whose two
    terms are non-negative, so it keeps full relative accuracy where PyTorch's
    formula cancels (target 0, input -20 in float32: 2.06e-9 here, 0 in PyTorch).
    Infinite logits give the limit (loss 0 and gradient 0 for a correct
    prediction at +-inf, inf otherwise). NaN propagates. ``weight`` and
    ``pos_weight`` must broadcast to the input's shape (PyTorch would also let
    them enlarge the result). Sums are accumulated in float64.
"""

_PROBS_DOC = """
    Parameters
    ----------
    input : array_like
        Probabilities in [0, 1], any shape (a value outside raises ValueError;
        NaN propagates).
    target : array_like
        Targets of the input's shape.
    weight : array_like, optional
        Rescaling weight, broadcast to the input's shape.
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Notes
    -----
    Mirrors ``torch.nn.functional.binary_cross_entropy``: each log term is clamped
    at -100, and the gradient is PyTorch's ``w * (p - y) / max(p * (1 - p), 1e-12)``.
    ``log(1 - p)`` is computed as ``log1p(-p)``, which is more accurate than
    PyTorch for small p.
"""

def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",
                                     pos_weight=None):
    return _with_logits(input, target, weight, reduction, pos_weight, True, False)[0]


def binary_cross_entropy_with_logits_grad(input, target, weight=None, reduction: str = "mean",
                                          pos_weight=None):
    return _with_logits(input, target, weight, reduction, pos_weight, False, True)[1]


def binary_cross_entropy_with_logits_value_and_grad(input, target, weight=None,
                                                    reduction: str = "mean", pos_weight=None,
                                                    out=None):
    return _with_logits(input, target, weight, reduction, pos_weight, True, True, out)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    return _on_probs(input, target, weight, reduction, True, False)[0]


def binary_cross_entropy_grad(input, target, weight=None, reduction: str = "mean"):
    return _on_probs(input, target, weight, reduction, False, True)[1]


def binary_cross_entropy_value_and_grad(input, target, weight=None, reduction: str = "mean",
                                        out=None):
    return _on_probs(input, target, weight, reduction, True, True, out)


triple(binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_grad,
       binary_cross_entropy_with_logits_value_and_grad, _LOGITS_DOC,
       "Binary cross-entropy between logits and targets (the Bernoulli NLL).")
triple(binary_cross_entropy, binary_cross_entropy_grad, binary_cross_entropy_value_and_grad,
       _PROBS_DOC, "Binary cross-entropy between probabilities and targets.")
