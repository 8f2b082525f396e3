"""fastmle: fused, numerically stable maximum-likelihood losses and their gradients.

Every loss ``L`` comes as ``L`` (the value), ``L_grad`` (its gradient with respect
to ``input``) and ``L_value_and_grad`` (both, in one pass over the data). Names,
arguments and results mirror ``torch.nn.functional``; deviations are listed in
each docstring. Every loss and softmax function also accepts Dask arrays
chunked along the batch and returns lazy results (``fastmle.dask``).
``LogisticRegression``, ``SoftmaxRegression`` and
``GaussianRegression`` fit linear models by maximum likelihood on these kernels
(scikit-learn's API, statsmodels' inference; loaded on first use).
"""

from .bernoulli import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_value_and_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    binary_cross_entropy_with_logits_value_and_grad,
)
from .poisson import poisson_nll_loss, poisson_nll_loss_grad, poisson_nll_loss_value_and_grad
from .categorical import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_value_and_grad,
    kl_div,
    kl_div_grad,
    kl_div_value_and_grad,
    log_softmax,
    logsumexp,
    softmax,
)
from .gaussian import (
    gaussian_nll_loss,
    gaussian_nll_loss_grad,
    gaussian_nll_loss_value_and_grad,
    mse_loss,
    mse_loss_grad,
    mse_loss_value_and_grad,
)

__version__ = "0.1.0"

_MODELS = (
    "LogisticRegression",
    "SoftmaxRegression",
    "GaussianRegression",
    "PoissonRegression",
    "ConvergenceWarning",
    "DataConversionWarning",
)


def __getattr__(name):
    # The estimators load on first use: ``import fastmle`` stays as light as the kernels.
    if name in _MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'fastmle' has no attribute {name!r}")


__all__ = [
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_value_and_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy_with_logits_value_and_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_value_and_grad",
    "gaussian_nll_loss",
    "gaussian_nll_loss_grad",
    "gaussian_nll_loss_value_and_grad",
    "mse_loss",
    "mse_loss_grad",
    "mse_loss_value_and_grad",
    "poisson_nll_loss",
    "poisson_nll_loss_grad",
    "poisson_nll_loss_value_and_grad",
    "kl_div",
    "kl_div_grad",
    "kl_div_value_and_grad",
    "logsumexp",
    "log_softmax",
    "softmax",
    "LogisticRegression",
    "SoftmaxRegression",
    "GaussianRegression",
    "PoissonRegression",
    "ConvergenceWarning",
    "DataConversionWarning",
]
