"""Binary cross-entropy (the Bernoulli negative log-likelihood), from logits and
from probabilities, with gradients."""

from __future__ import annotations

from ._calls import BCE_LOGITS, BCE_PROBS, Pointwise
from ._dispatch import backend, broadcast_operand
from ._docs import triple
from ._rules import check_reduction, check_same_shape

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy_with_logits_value_and_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_value_and_grad",
]


def _bce(loss, input, target, weight, reduction, want_loss, want_grad, out=None, pos_weight=None):
    be = backend(input, target, weight, pos_weight)
    reduction = check_reduction(reduction)
    x = be.input(input)
    y = check_same_shape(be.operand(target, "target", x.dtype), "target", x.shape)
    ops = (y, broadcast_operand(be, weight, "weight", x))
    params = (0.0, 0.0)
    if loss == BCE_LOGITS:
        ops += (broadcast_operand(be, pos_weight, "pos_weight", x),)
        params = (0.0, 1.0 if weight is None and pos_weight is None else 0.0)
    return be.pointwise(
        Pointwise(loss, x, ops, params, reduction, x.size, want_loss, want_grad, out)
    )[:2]


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


def binary_cross_entropy_with_logits(
    input, target, weight=None, reduction: str = "mean", pos_weight=None
):
    return _bce(BCE_LOGITS, input, target, weight, reduction, True, False, None, pos_weight)[0]


def binary_cross_entropy_with_logits_grad(
    input, target, weight=None, reduction: str = "mean", pos_weight=None
):
    return _bce(BCE_LOGITS, input, target, weight, reduction, False, True, None, pos_weight)[1]


def binary_cross_entropy_with_logits_value_and_grad(
    input, target, weight=None, reduction: str = "mean", pos_weight=None, out=None
):
    return _bce(BCE_LOGITS, input, target, weight, reduction, True, True, out, pos_weight)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    return _bce(BCE_PROBS, input, target, weight, reduction, True, False)[0]


def binary_cross_entropy_grad(input, target, weight=None, reduction: str = "mean"):
    return _bce(BCE_PROBS, input, target, weight, reduction, False, True)[1]


def binary_cross_entropy_value_and_grad(
    input, target, weight=None, reduction: str = "mean", out=None
):
    return _bce(BCE_PROBS, input, target, weight, reduction, True, True, out)


triple(
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    binary_cross_entropy_with_logits_value_and_grad,
    _LOGITS_DOC,
    "Binary cross-entropy between logits and targets (the Bernoulli NLL).",
)
triple(
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_value_and_grad,
    _PROBS_DOC,
    "Binary cross-entropy between probabilities and targets.",
)
