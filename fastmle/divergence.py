"""Kullback-Leibler divergence KL(target || model) on log-probabilities.

Minimising KL(p_data || p_model) over the model is minimising the cross-entropy
of p_model under p_data: they differ by the entropy of p_data, a constant.
"""

from __future__ import annotations

from . import _elementwise as ew
from ._docs import triple
from ._validation import as_float_array, broadcast_operand, check_reduction
from .cuda import gpu_twin
from .dask import dask_twin

__all__ = ["kl_div", "kl_div_grad", "kl_div_value_and_grad"]

_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def _kl_inputs(input, target, reduction, log_target):
    """(reduction as 'none'/'sum'/'mean', the mean's denominator, x, operands, parameters)."""
    reduction = check_reduction(reduction, _REDUCTIONS)
    x = as_float_array(input, "input")
    t = broadcast_operand(target, "target", x.shape, x.dtype)
    if reduction == "batchmean":  # the sum over the first axis' length
        reduction, denom = "mean", (x.shape[0] if x.ndim else 1)
    else:
        denom = x.size
    return reduction, denom, x, [t], (1.0 if log_target else 0.0, 0.0)


@dask_twin("kl_run")
@gpu_twin("kl_run")
def _kl(input, target, reduction, log_target, want_loss, want_grad, out=None):
    reduction, denom, x, ops, params = _kl_inputs(input, target, reduction, log_target)
    loss, grad, _ = ew.evaluate(ew.KL, x, ops, params,
                                reduction=reduction, denom=denom, want_loss=want_loss,
                                want_grad=want_grad, out=out)
    return loss, grad


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


def kl_div_value_and_grad(input, target, reduction: str = "mean", log_target: bool = False,
                          out=None):
    return _kl(input, target, reduction, log_target, True, True, out)


triple(kl_div, kl_div_grad, kl_div_value_and_grad, _KL_DOC,
       "Kullback-Leibler divergence KL(target || model) from log-probabilities ``input``.")
