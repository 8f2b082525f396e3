"""The Poisson negative log-likelihood (counts), with gradients."""

from __future__ import annotations

from ._calls import POISSON, Pointwise
from ._dispatch import backend, broadcast_operand
from ._docs import triple
from ._rules import check_positive, check_reduction

__all__ = ["poisson_nll_loss", "poisson_nll_loss_grad", "poisson_nll_loss_value_and_grad"]


def _poisson(input, target, log_input, full, eps, reduction, want_loss, want_grad, out=None):
    be = backend(input, target)
    reduction = check_reduction(reduction)
    x = be.input(input)
    t = broadcast_operand(be, target, "target", x)
    flags = (1.0 if log_input else 0.0) + (2.0 if full else 0.0)
    params = (flags, check_positive(eps, "eps"))
    return be.pointwise(
        Pointwise(POISSON, x, (t,), params, reduction, x.size, want_loss, want_grad, out)
    )[:2]


_DOC = """
    Parameters
    ----------
    input : array_like
        The log of the Poisson rate (``log_input=True``) or the rate itself, any
        shape; float32/float64 computed in their own dtype, float16 in float32,
        integers and bool in float64.
    target : array_like
        Observed counts, broadcast to the input's shape.
    log_input : bool, default True
        loss = exp(input) - target * input; else input - target * log(input + eps).
    full : bool, default False
        Add the Stirling approximation of log(target!), target * log(target) -
        target + 0.5 * log(2 * pi * target), where target > 1 (0 elsewhere).
    eps : float, default 1e-8
        Added to the rate inside the log when ``log_input=False`` (> 0).
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Notes
    -----
    Mirrors ``torch.nn.functional.poisson_nll_loss``. With ``log_input=True``
    (the log link of Poisson regression) exp(input) is positive and overflows
    only where the loss itself does (input above about 88.7 in float32, 709.8 in
    float64), where the loss is +inf, as in PyTorch. The gradient with respect to
    input is exp(input) - target, or 1 - target / (input + eps). ``target`` must
    broadcast to the input's shape without enlarging it (PyTorch would broadcast
    both ways). Sums are accumulated in float64.
"""


def poisson_nll_loss(
    input,
    target,
    log_input: bool = True,
    full: bool = False,
    eps: float = 1e-8,
    reduction: str = "mean",
):
    return _poisson(input, target, log_input, full, eps, reduction, True, False)[0]


def poisson_nll_loss_grad(
    input,
    target,
    log_input: bool = True,
    full: bool = False,
    eps: float = 1e-8,
    reduction: str = "mean",
):
    return _poisson(input, target, log_input, full, eps, reduction, False, True)[1]


def poisson_nll_loss_value_and_grad(
    input,
    target,
    log_input: bool = True,
    full: bool = False,
    eps: float = 1e-8,
    reduction: str = "mean",
    out=None,
):
    return _poisson(input, target, log_input, full, eps, reduction, True, True, out)


triple(
    poisson_nll_loss,
    poisson_nll_loss_grad,
    poisson_nll_loss_value_and_grad,
    _DOC,
    "Poisson negative log-likelihood of counts ``target`` given the rate ``input``.",
)
