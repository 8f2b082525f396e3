"""Gaussian negative log-likelihood and mean squared error, with gradients.

With the variance fixed, the Gaussian NLL is 0.5 * (x - t)**2 / var plus a constant:
minimising it is minimising the MSE.
"""

from __future__ import annotations

import math

import numpy as np

from ._calls import GAUSSIAN, MSE, Pointwise
from ._dispatch import backend, broadcast_operand
from ._docs import triple
from ._rules import as_real, check_positive, check_reduction, is_real_scalar, var_shape

__all__ = [
    "gaussian_nll_loss",
    "gaussian_nll_loss_grad",
    "gaussian_nll_loss_value_and_grad",
    "mse_loss",
    "mse_loss_grad",
    "mse_loss_value_and_grad",
]


def _gaussian(input, target, var, full, eps, reduction, want_loss, want_grad, out=None):
    be = backend(input, target, var)
    reduction = check_reduction(reduction)
    x = be.input(input)
    t = broadcast_operand(be, target, "target", x)
    eps = check_positive(eps, "eps")
    if is_real_scalar(var):  # one variance; negative values are rejected with the arrays'
        v = be.operand(np.full(1, as_real(var, "var"), x.dtype), "var", x.dtype)
        shaped, d_shape = v.reshape(()), None
    else:
        v = be.operand(var, "var", x.dtype)
        shaped, d_shape = v.reshape(var_shape(v.shape, x.shape)), tuple(v.shape)
    const = 0.5 * math.log(2 * math.pi) if full else 0.0
    loss, grad, dvar = be.pointwise(
        Pointwise(
            GAUSSIAN,
            x,
            (t, shaped),
            (eps, const),
            reduction,
            x.size,
            want_loss,
            want_grad,
            out,
            d_operand=1 if want_grad else None,
            d_shape=d_shape,
        )
    )
    return loss, (grad, dvar) if want_grad else None


_GAUSS_DOC = """
    Parameters
    ----------
    input : array_like
        Predicted means, any shape; float32/float64 computed in their own dtype.
    target : array_like
        Observations, broadcast to the input's shape.
    var : array_like or float
        Variances (>= 0; a negative entry raises ValueError): the input's shape
        (heteroscedastic), the input's shape without its last axis or with one
        axis of size 1 (homoscedastic), or a float.
    full : bool, default False
        Add the constant 0.5 * log(2 * pi).
    eps : float, default 1e-6
        var is clamped from below at eps.
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Notes
    -----
    Mirrors ``torch.nn.functional.gaussian_nll_loss``: loss = 0.5 * (log(max(var,
    eps)) + (input - target)**2 / max(var, eps)). Like PyTorch, the clamp is not
    differentiated: the gradient with respect to var is that of the formula at
    the clamped value even where var < eps. Gradients: ``(d_input, d_var)`` with
    ``d_var`` shaped like ``var`` (summed over the elements that share a
    variance; a float for a float ``var``); with ``reduction='none'`` both are the
    gradients of the summed element losses.
"""


def gaussian_nll_loss(
    input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean"
):
    return _gaussian(input, target, var, full, eps, reduction, True, False)[0]


def gaussian_nll_loss_grad(
    input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean"
):
    return _gaussian(input, target, var, full, eps, reduction, False, True)[1]


def gaussian_nll_loss_value_and_grad(
    input, target, var, full: bool = False, eps: float = 1e-6, reduction: str = "mean", out=None
):
    return _gaussian(input, target, var, full, eps, reduction, True, True, out)


triple(
    gaussian_nll_loss,
    gaussian_nll_loss_grad,
    gaussian_nll_loss_value_and_grad,
    _GAUSS_DOC,
    "Gaussian negative log-likelihood.",
    grad_returns="(d_input, d_var) : d_input of the input's shape, d_var of var's shape",
)


def _mse(input, target, reduction, want_loss, want_grad, out=None):
    be = backend(input, target)
    reduction = check_reduction(reduction)
    x = be.input(input)
    t = broadcast_operand(be, target, "target", x)
    return be.pointwise(
        Pointwise(MSE, x, (t,), (0.0, 0.0), reduction, x.size, want_loss, want_grad, out)
    )[:2]


_MSE_DOC = """
    Parameters
    ----------
    input : array_like
    target : array_like
        Broadcast to the input's shape (PyTorch would also let it enlarge the
        result; here that raises ValueError).
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Notes
    -----
    Mirrors ``torch.nn.functional.mse_loss``: (input - target)**2, summed in float64.
"""


def mse_loss(input, target, reduction: str = "mean"):
    return _mse(input, target, reduction, True, False)[0]


def mse_loss_grad(input, target, reduction: str = "mean"):
    return _mse(input, target, reduction, False, True)[1]


def mse_loss_value_and_grad(input, target, reduction: str = "mean", out=None):
    return _mse(input, target, reduction, True, True, out)


triple(mse_loss, mse_loss_grad, mse_loss_value_and_grad, _MSE_DOC, "Mean squared error.")
