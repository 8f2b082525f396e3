"""Plain float64 NumPy/SciPy reference implementations of the element-wise losses
(binary cross-entropy from logits and from probabilities, Gaussian NLL, MSE, KL
divergence, Poisson NLL), written straight from their definitions and independent of fastmle.

Every ``*_ref`` function takes the arguments of its fastmle counterpart and returns
``(loss, grad)`` in float64, where ``grad`` is the gradient of the returned loss
with respect to ``input`` (for ``reduction='none'``: of the sum of the element
losses). ``gaussian_nll_loss_ref`` returns ``(loss, (d_input, d_var))`` with
``d_var`` shaped like ``var`` (a float for a float ``var``).

They are meant for finite inputs; limits at +-inf are tested with explicit values.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, xlogy

__all__ = [
    "bce_with_logits_ref",
    "bce_ref",
    "gaussian_nll_loss_ref",
    "mse_loss_ref",
    "kl_div_ref",
    "poisson_nll_loss_ref",
    "sum_to_shape",
]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _operand(a, shape, default=1.0):
    """``a`` (or ``default`` when None) as float64, broadcast to ``shape``."""
    if a is None:
        a = default
    return np.broadcast_to(_f64(a), shape)


def _reduce(loss_el, grads, reduction, denom):
    """Apply a reduction to per-element losses and to the gradients of their sum."""
    if reduction == "none":
        return loss_el, grads
    total = float(np.sum(loss_el, dtype=np.float64))
    if reduction == "sum":
        return total, grads
    if denom == 0:
        # mean of nothing is nan; the gradient is a sum over no element: zero
        return math.nan, grads
    return total / denom, [g / denom for g in grads]


def sum_to_shape(a, shape):
    """Sum ``a`` over the axes along which ``shape`` was broadcast to ``a.shape``."""
    a = np.asarray(a, dtype=np.float64)
    shape = tuple(shape)
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1
    )
    return a.sum(axis=axes).reshape(shape) if axes else a.reshape(shape)


# --- binary cross-entropy --------------------------------------------------------


def bce_with_logits_ref(input, target, weight=None, reduction="mean", pos_weight=None):
    """l = w * (y * pw * softplus(-x) + (1 - y) * softplus(x)),
    dl/dx = w * ((1 - y) * sigmoid(x) - y * pw * sigmoid(-x))."""
    x = _f64(input)
    y = _f64(target)
    w = _operand(weight, x.shape)
    pw = _operand(pos_weight, x.shape)
    softplus_pos = np.logaddexp(0.0, x)  # -log(1 - sigmoid(x))
    softplus_neg = np.logaddexp(0.0, -x)  # -log(sigmoid(x))
    loss = w * (y * pw * softplus_neg + (1.0 - y) * softplus_pos)
    grad = w * ((1.0 - y) * expit(x) - y * pw * expit(-x))
    loss, (grad,) = _reduce(loss, [grad], reduction, x.size)
    return loss, grad


def bce_ref(input, target, weight=None, reduction="mean"):
    """l = -w * (y * max(log p, -100) + (1 - y) * max(log(1 - p), -100)) (PyTorch's
    clamp), dl/dp = w * (p - y) / max(p * (1 - p), 1e-12f) (PyTorch's backward;
    its floor is the float32 1e-12)."""
    p = _f64(input)
    y = _f64(target)
    w = _operand(weight, p.shape)
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log1p(-p), -100.0)
    loss = -w * (y * log_p + (1.0 - y) * log_q)
    grad = w * (p - y) / np.maximum(p * (1.0 - p), float(np.float32(1e-12)))
    loss, (grad,) = _reduce(loss, [grad], reduction, p.size)
    return loss, grad


# --- Gaussian NLL and MSE ----------------------------------------------------------


def gaussian_nll_loss_ref(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """l = 0.5 * (log(v) + (x - t)**2 / v) [+ 0.5 * log(2 pi)] with v = max(var, eps);
    dl/dx = (x - t) / v, dl/dvar = 0.5 * (1 / v - (x - t)**2 / v**2) (the clamp is
    not differentiated, as in PyTorch), summed over elements sharing a variance."""
    x = _f64(input)
    t = _operand(target, x.shape)
    is_float = isinstance(var, float)
    v_in = _f64(var)
    v = v_in
    if v.shape != x.shape and x.ndim and v.shape == x.shape[:-1]:
        v = v[..., None]  # one variance per row of the last axis
    vb = np.broadcast_to(np.maximum(v, eps), x.shape)
    d = x - t
    loss = 0.5 * (np.log(vb) + d * d / vb)
    if full:
        loss = loss + 0.5 * math.log(2.0 * math.pi)
    dx = d / vb
    dv_el = 0.5 * (1.0 / vb - d * d / (vb * vb))
    loss, (dx, dv_el) = _reduce(loss, [dx, dv_el], reduction, x.size)
    dvar = sum_to_shape(dv_el, v.shape).reshape(v_in.shape)
    if is_float:
        dvar = float(dvar)
    return loss, (dx, dvar)


def mse_loss_ref(input, target, reduction="mean"):
    """l = (x - t)**2, dl/dx = 2 (x - t)."""
    x = _f64(input)
    d = x - _operand(target, x.shape)
    loss, (grad,) = _reduce(d * d, [2.0 * d], reduction, x.size)
    return loss, grad


# --- KL divergence -------------------------------------------------------------------


def kl_div_ref(input, target, reduction="mean", log_target=False):
    """l = t * (log t - x) (0 where t == 0), dl/dx = -t; with log_target,
    l = exp(t) * (t - x), dl/dx = -exp(t). 'batchmean' divides by len(input)."""
    x = _f64(input)
    t = _operand(target, x.shape)
    if log_target:
        loss = np.exp(t) * (t - x)
        grad = -np.exp(t)
    else:
        with np.errstate(invalid="ignore"):
            loss = np.where(t == 0.0, 0.0, xlogy(t, t) - t * x)
        grad = -t + np.zeros(x.shape)
    if reduction == "batchmean":
        loss, (grad,) = _reduce(loss, [grad], "mean", x.shape[0] if x.ndim else 1)
    else:
        loss, (grad,) = _reduce(loss, [grad], reduction, x.size)
    return loss, grad


# --- Poisson NLL ---------------------------------------------------------------------


def poisson_nll_loss_ref(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    """l = exp(x) - t x (log_input) or x - t log(x + eps); dl/dx = exp(x) - t or
    1 - t / (x + eps). ``full`` adds log(t!) ~ t log t - t + log(2 pi t) / 2 where t > 1
    (the Stirling term, written with scipy's xlogy)."""
    x = _f64(input)
    t = _operand(target, x.shape)
    if log_input:
        loss, grad = np.exp(x) - t * x, np.exp(x) - t
    else:
        loss, grad = x - t * np.log(x + eps), 1.0 - t / (x + eps)
    if full:
        with np.errstate(divide="ignore", invalid="ignore"):
            stirling = xlogy(t, t) - t + 0.5 * np.log(2.0 * math.pi * t)
        loss = loss + np.where(t > 1.0, stirling, 0.0)
    loss, (grad,) = _reduce(loss, [grad], reduction, x.size)
    return loss, grad
