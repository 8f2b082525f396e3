"""Plain float64 NumPy reference implementations for the tests.

Written independently of ``fastmle`` and kept deliberately simple: textbook
formulas, evaluated in float64, with no numerical tricks beyond subtracting the
max before exponentiating. Every function takes array_like inputs, converts them
to float64 and returns float64 results. Add new references (BCE, Gaussian NLL,
KL, MSE, ...) as further plain functions below.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "logsumexp_ref",
    "softmax_ref",
    "log_softmax_ref",
    "cross_entropy_ref",
]


# --- logsumexp / softmax / log_softmax ----------------------------------------------


def _shift(x, axis):
    """max of x along axis (keepdims), replaced by 0 where it is not finite
    (so all -inf gives -inf, any +inf gives +inf, NaN propagates)."""
    m = np.max(x, axis=axis, keepdims=True)
    return np.where(np.isfinite(m), m, 0.0)


def logsumexp_ref(a, axis=-1, keepdims=False):
    """log(sum(exp(a))) along ``axis`` (None: all elements), in float64."""
    x = np.asarray(a, dtype=np.float64)
    if axis is None:
        x = x.reshape(-1)
        res = logsumexp_ref(x, axis=0)
        return np.full((1,) * np.ndim(a), res) if keepdims else res
    m = _shift(x, axis)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        res = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return res if keepdims else np.squeeze(res, axis=axis)


def log_softmax_ref(a, axis=-1):
    """a - logsumexp(a) along ``axis`` (None: all elements), in float64.

    A slice whose max is not finite gives NaN (as in PyTorch)."""
    x = np.asarray(a, dtype=np.float64)
    if axis is None:
        return log_softmax_ref(x.reshape(-1), axis=0).reshape(x.shape)
    m = np.max(x, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = x - m
        return d - np.log(np.sum(np.exp(d), axis=axis, keepdims=True))


def softmax_ref(a, axis=-1):
    """exp(a) / sum(exp(a)) along ``axis`` (None: all elements), in float64.

    A slice whose max is not finite gives NaN (as in PyTorch)."""
    x = np.asarray(a, dtype=np.float64)
    if axis is None:
        return softmax_ref(x.reshape(-1), axis=0).reshape(x.shape)
    m = np.max(x, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.exp(x - m)
        return e / np.sum(e, axis=axis, keepdims=True)


# --- softmax cross-entropy ----------------------------------------------------------


def cross_entropy_ref(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy and its gradient with PyTorch semantics, in float64.

    x: logits (N, C) or (C,). t: integer class indices (N,) (0-d for 1-D x), or
    float class probabilities of x's shape. Returns (loss, grad): loss is a float
    for 'mean'/'sum' and an (N,) array (0-d for 1-D x) for 'none'; grad has x's
    shape and is the gradient of the loss ('none': of the sum of row losses).

    Index targets, with eps = label_smoothing and w = weight (ones if None):
        loss_i = (1-eps) w[t_i] (-logp_i[t_i]) + eps/C sum_j w_j (-logp_ij)
    (0 and zero gradient for rows with t_i == ignore_index); 'mean' divides by
    sum_i w[t_i] over the non-ignored rows (nan when that is 0; ignored rows
    then keep a zero gradient, like PyTorch's autograd).
    Probability targets y: q = (1-eps) y + eps/C,
        loss_i = sum_j w_j q_ij (-logp_ij)
    where a term with w_j q_ij == 0 counts as 0 even if logp_ij = -inf (the
    convention fastmle documents); 'mean' divides by N.
    The gradient of loss_i is  p_i * sum_j w_j q_ij - w * q_i  (p = softmax).
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t)
    one_d = x.ndim == 1
    if one_d:
        x = x[None, :]
        t = t[None, ...]
    n, c = x.shape
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    logp = log_softmax_ref(x, axis=1)
    p = softmax_ref(x, axis=1)
    rows = np.zeros(n)
    grad = np.zeros((n, c))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if t.dtype.kind == "f":
            q = (1.0 - eps) * np.asarray(t, dtype=np.float64) + eps / c
            wq = w * q
            rows = np.sum(np.where(wq == 0, 0.0, wq * -logp), axis=1)
            grad = p * np.sum(wq, axis=1, keepdims=True) - wq
            denom = float(n)
        else:
            denom = 0.0
            for i in range(n):
                ti = int(t[i])
                if ti == ignore_index:
                    continue
                li = (1.0 - eps) * w[ti] * -logp[i, ti]
                wq = (1.0 - eps) * w[ti] * (np.arange(c) == ti)
                if eps > 0:
                    li += eps / c * np.sum(w * -logp[i])
                    wq = wq + eps / c * w
                rows[i] = li
                grad[i] = p[i] * np.sum(wq) - wq
                denom += w[ti]
        if reduction == "none":
            loss = rows[0].copy() if one_d else rows
            loss = np.asarray(loss)
        elif reduction == "sum":
            loss = float(np.sum(rows))
        elif reduction == "mean":
            if denom == 0:
                loss = np.nan
                if t.dtype.kind != "f":
                    kept = t != ignore_index
                    grad[kept] = np.nan
            else:
                loss = float(np.sum(rows)) / denom
                grad = grad / denom
        else:
            raise ValueError(reduction)
    if one_d:
        grad = grad[0]
    return loss, grad
