"""The categorical likelihood: softmax cross-entropy (its negative log-likelihood) and
its gradient, the KL divergence, and logsumexp / softmax / log_softmax.

For logits x (N, C), targets t and class weights w, with q the target
distribution (one-hot at t, or given probabilities) smoothed as
q' = (1 - eps) q + eps / C, the loss of row i is

    loss_i = sum_j w_j q'_ij (lse_i - x_ij),   lse_i = log sum_j exp(x_ij)

and its gradient is  d loss_i / d x_ij = p_ij * sum_k w_k q'_ik - w_j q'_ij,
p = softmax(x). Minimising the mean of loss_i over data drawn from p_data is
minimising KL(p_data || p_model): cross-entropy minus the (constant) data entropy.

The kernels and their numerics (a log-sum-exp that keeps full relative accuracy for
tiny losses, float64 row sums) are in ``fastmle._cpu.cross_entropy``.
"""

from __future__ import annotations

from ._calls import KL, LOG_SOFTMAX, LSE, SOFTMAX, CrossEntropy, Pointwise, Softmax
from ._dispatch import backend, broadcast_operand
from ._docs import triple
from ._rules import (
    check_axis,
    check_class_args,
    check_class_weight,
    check_reduction,
    target_is_probs,
)

__all__ = [
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_value_and_grad",
    "kl_div",
    "kl_div_grad",
    "kl_div_value_and_grad",
    "logsumexp",
    "log_softmax",
    "softmax",
]


def _run(
    input, target, weight, ignore_index, reduction, label_smoothing, want_loss, want_grad, out=None
):
    be = backend(input, target, weight)
    reduction = check_reduction(reduction)
    x = be.input(input)
    n_classes, ignore_index, eps = check_class_args(x.shape, ignore_index, label_smoothing)
    w = (
        be.ones(n_classes, x.dtype)
        if weight is None
        else check_class_weight(be.operand(weight, "weight", x.dtype), n_classes)
    )
    t = be.array(target)
    probs = target_is_probs(t, x.shape, ignore_index)
    if probs:
        t = be.operand(t, "target", x.dtype)
    return be.cross_entropy(
        CrossEntropy(x, t, probs, w, ignore_index, eps, reduction, want_loss, want_grad, out)
    )


_COMMON = """
    Parameters
    ----------
    input : array_like, shape (N, C) or (C,)
        Unnormalized logits. float32 and float64 are computed in their own dtype;
        float16 is computed in float32, integers and bool in float64.
    target : array_like
        Either integer class indices of shape (N,) (or () for 1-D input), or float
        class probabilities of the input's shape.
    weight : array_like of shape (C,), optional
        A rescaling weight for each class.
    ignore_index : int, default -100
        Class-index targets equal to it contribute nothing, to the loss, to the
        ``mean`` denominator, or to the gradient. Not allowed (must stay negative)
        with probability targets.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``mean`` divides by the summed weights of the non-ignored targets (by N for
        probability targets), as PyTorch does; an empty or fully ignored batch
        gives nan for ``mean`` and 0 for ``sum``.
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution, as PyTorch does, weights
        and ignore_index included.
"""

_NOTES = """
    Notes
    -----
    Mirrors ``torch.nn.functional.cross_entropy`` for 1-D and 2-D logits.
    Deviations: (N, C, d1, ...) inputs are not accepted (move the class axis
    last and reshape); a row containing NaN, +inf, or only -inf gives NaN (as in
    PyTorch) but never raises; with probability targets a class whose target
    probability is 0 contributes 0 even if its logit is -inf (PyTorch gives NaN);
    losses are summed in float64 and returned in the input's dtype.
"""


def cross_entropy(
    input,
    target,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
):
    return _run(input, target, weight, ignore_index, reduction, label_smoothing, True, False)[0]


def cross_entropy_grad(
    input,
    target,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
):
    return _run(input, target, weight, ignore_index, reduction, label_smoothing, False, True)[1]


def cross_entropy_value_and_grad(
    input,
    target,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    out=None,
):
    return _run(input, target, weight, ignore_index, reduction, label_smoothing, True, True, out)


triple(
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_value_and_grad,
    _COMMON + _NOTES,
    "Softmax cross-entropy between logits and targets (the categorical NLL).",
    grad_returns="grad : ndarray of the input's shape; with reduction='none' row i holds "
    "d loss_i / d input_i",
)


# --- KL divergence ----------------------------------------------------------------

_KL_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def _kl(input, target, reduction, log_target, want_loss, want_grad, out=None):
    be = backend(input, target)
    reduction = check_reduction(reduction, _KL_REDUCTIONS)
    x = be.input(input)
    t = broadcast_operand(be, target, "target", x)
    if reduction == "batchmean":  # the sum over the first axis' length
        reduction, denom = "mean", (x.shape[0] if x.ndim else 1)
    else:
        denom = x.size
    return be.pointwise(
        Pointwise(
            KL,
            x,
            (t,),
            (1.0 if log_target else 0.0, 0.0),
            reduction,
            denom,
            want_loss,
            want_grad,
            out,
        )
    )[:2]


_KL_DOC = """
    Parameters
    ----------
    input : array_like
        Log-probabilities of the model.
    target : array_like
        Probabilities (or log-probabilities with ``log_target=True``) of the data,
        broadcast to the input's shape.
    reduction : {'mean', 'batchmean', 'sum', 'none'}, default 'mean'
        As in PyTorch, 'mean' averages over all elements; 'batchmean' (sum over
        the first axis' length) is the true KL divergence.
    log_target : bool, default False

    Notes
    -----
    Mirrors ``torch.nn.functional.kl_div``: pointwise target * (log(target) -
    input), or exp(target) * (target - input) with ``log_target``. Deviation: a
    zero target contributes exactly 0 even where input is -inf (PyTorch gives
    NaN there); a NaN input gives NaN, as in PyTorch. The gradient with respect to
    input is -target (times the reduction's scale).
"""


def kl_div(input, target, reduction: str = "mean", log_target: bool = False):
    return _kl(input, target, reduction, log_target, True, False)[0]


def kl_div_grad(input, target, reduction: str = "mean", log_target: bool = False):
    return _kl(input, target, reduction, log_target, False, True)[1]


def kl_div_value_and_grad(
    input, target, reduction: str = "mean", log_target: bool = False, out=None
):
    return _kl(input, target, reduction, log_target, True, True, out)


triple(
    kl_div,
    kl_div_grad,
    kl_div_value_and_grad,
    _KL_DOC,
    "Kullback-Leibler divergence KL(target || model) from log-probabilities ``input``.",
)


# --- logsumexp, softmax, log_softmax ----------------------------------------------


def _softmax(a, axis, mode, keepdims=False):
    be = backend(a)
    x = be.input(a, "a")
    return be.softmax(Softmax(x, check_axis(x.ndim, axis), mode, keepdims))


def logsumexp(a, axis: int | None = -1, keepdims: bool = False):
    """log(sum(exp(a))) along ``axis``, without overflow.

    Parameters
    ----------
    a : array_like
        float32/float64 are computed in their own dtype; float16 in float32,
        integers and bool in float64.
    axis : int or None, default -1
        The axis to reduce; None reduces over all elements. A 0-d ``a`` takes 0,
        -1 or None (its one element).
    keepdims : bool, default False
        Keep the reduced axis with length 1.

    Returns
    -------
    ndarray or scalar of the computation dtype.

    Notes
    -----
    Like ``torch.logsumexp``: a slice whose max is +inf gives +inf, one of only
    -inf gives -inf, an empty slice gives -inf, NaN propagates.
    """
    return _softmax(a, axis, LSE, keepdims)


def softmax(a, axis: int | None = -1):
    """exp(a) / sum(exp(a)) along ``axis`` (``torch.softmax``, ``scipy.special.softmax``).

    A slice holding NaN, +inf, or only -inf gives NaN, as in PyTorch. Other
    arguments as in :func:`logsumexp`; the result has ``a``'s shape.
    """
    return _softmax(a, axis, SOFTMAX)


def log_softmax(a, axis: int | None = -1):
    """a - logsumexp(a) along ``axis``, computed as (a - max) - log(sum exp(a - max)).

    Edge cases and arguments as in :func:`softmax`.
    """
    return _softmax(a, axis, LOG_SOFTMAX)
