"""Gaussian negative log-likelihood and mean squared error, with gradients.

With the variance fixed, the Gaussian NLL is 0.5 * (x - t)**2 / var plus a constant:
minimising it is minimising the MSE.
"""

from __future__ import annotations

import math

import numpy as np

from . import _elementwise as ew
from ._docs import triple
from ._validation import as_float_array, broadcast_operand, check_finite_scalar, check_reduction
from .cuda import gpu_twin
from .dask import dask_twin

__all__ = [
    "gaussian_nll_loss",
    "gaussian_nll_loss_grad",
    "gaussian_nll_loss_value_and_grad",
    "mse_loss",
    "mse_loss_grad",
    "mse_loss_value_and_grad",
]


def _var_operand(var, x):
    """var as PyTorch accepts it: a float, the input's shape, the input's shape
    without its last axis, or the input's shape with one axis of size 1."""
    if isinstance(var, (float, int, np.floating, np.integer)) and not isinstance(var, bool):
        v = np.full(1, var, x.dtype)  # negative values are rejected with the arrays'
        return v, v.reshape(()), True
    v = as_float_array(var, "var", x.dtype)
    shaped = v
    if v.shape != x.shape:
        if x.ndim and v.shape == x.shape[:-1]:
            shaped = v.reshape(v.shape + (1,))
        elif not (v.ndim == x.ndim and sum(
                vs for xs, vs in zip(x.shape, v.shape) if xs != vs) == 1):
            raise ValueError(
                f"var has shape {v.shape}, which is not valid for input of shape {x.shape}: "
                "use the input's shape (heteroscedastic), the input's shape without its last "
                "axis, or the input's shape with one axis of size 1 (homoscedastic)"
            )
    try:
        np.broadcast_shapes(shaped.shape, x.shape)
    except ValueError:
        raise ValueError(f"var has shape {v.shape}, which does not broadcast to the input's "
                         f"shape {x.shape}") from None
    return v, shaped, False


def _check_var(v):
    if ew.launch(ew.count_outside, v.reshape(-1), v.dtype.type(0), v.dtype.type(np.inf)):
        raise ValueError("var has negative entry/entries: variances must be >= 0")


def _gaussian_inputs(input, target, var, full, eps, reduction):
    """(reduction, x, target, var as given, var shaped to broadcast, whether var is
    a float, kernel parameters); var's values are not checked here."""
    reduction = check_reduction(reduction)
    x = as_float_array(input, "input")
    t = broadcast_operand(target, "target", x.shape, x.dtype)
    eps = check_finite_scalar(eps, "eps")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    v, shaped, is_float = _var_operand(var, x)
    const = 0.5 * math.log(2 * math.pi) if full else 0.0
    return reduction, x, t, v, shaped, is_float, (eps, const)


@dask_twin("gaussian_run")
@gpu_twin("gaussian_run")
def _gaussian(input, target, var, full, eps, reduction, want_loss, want_grad, out=None):
    reduction, x, t, v, shaped, is_float, params = _gaussian_inputs(
        input, target, var, full, eps, reduction)
    _check_var(v)
    loss, grad, dvar = ew.evaluate(
        ew.GAUSSIAN, x, [t, shaped], params, reduction=reduction, denom=x.size,
        want_loss=want_loss, want_grad=want_grad, out=out, dv_index=1 if want_grad else None)
    if want_grad:
        dvar = x.dtype.type(dvar.reshape(-1)[0]) if is_float else dvar.reshape(v.shape)
        grad = (grad, dvar)
    return loss, grad


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


def gaussian_nll_loss(input, target, var, full: bool = False, eps: float = 1e-6,
                      reduction: str = "mean"):
    return _gaussian(input, target, var, full, eps, reduction, True, False)[0]


def gaussian_nll_loss_grad(input, target, var, full: bool = False, eps: float = 1e-6,
                           reduction: str = "mean"):
    return _gaussian(input, target, var, full, eps, reduction, False, True)[1]


def gaussian_nll_loss_value_and_grad(input, target, var, full: bool = False, eps: float = 1e-6,
                                     reduction: str = "mean", out=None):
    return _gaussian(input, target, var, full, eps, reduction, True, True, out)


triple(gaussian_nll_loss, gaussian_nll_loss_grad, gaussian_nll_loss_value_and_grad, _GAUSS_DOC,
       "Gaussian negative log-likelihood.",
       grad_returns="(d_input, d_var) : d_input of the input's shape, d_var of var's shape")


def _mse_inputs(input, target, reduction):
    reduction = check_reduction(reduction)
    x = as_float_array(input, "input")
    return reduction, x, broadcast_operand(target, "target", x.shape, x.dtype)


@dask_twin("mse_run")
@gpu_twin("mse_run")
def _mse(input, target, reduction, want_loss, want_grad, out=None):
    reduction, x, t = _mse_inputs(input, target, reduction)
    loss, grad, _ = ew.evaluate(ew.MSE, x, [t], reduction=reduction, denom=x.size,
                                want_loss=want_loss, want_grad=want_grad, out=out)
    return loss, grad


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
