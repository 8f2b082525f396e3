"""fastmle: fused, numerically stable maximum-likelihood losses and their gradients."""

from . import _threading  # noqa: F401  (threading layer set-up before any kernel runs)
from .cross_entropy import cross_entropy, cross_entropy_grad, cross_entropy_value_and_grad

__version__ = "0.1.0"
__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_value_and_grad"]
