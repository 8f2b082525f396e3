"""Linear models fitted by maximum likelihood on fastmle's fused kernels.

Each estimator is a likelihood family (Bernoulli, categorical, Gaussian, Poisson) over
linear predictors, one solver (Newton or L-BFGS, one pass over X per evaluation)
and one inference step (observed information -> covariance -> standard errors).
``fit`` also takes Dask arrays (``pip install 'fastmle[dask]'``): each pass over X is
then one task per chunk of rows on a ``dask.distributed`` cluster
(``_distributed`` tells how), and predictions on a Dask X are Dask arrays.
"""

from ._base import ConvergenceWarning, DataConversionWarning, NotFittedError
from ._estimators import (
    GaussianRegression,
    LogisticRegression,
    PoissonRegression,
    SoftmaxRegression,
)

__all__ = [
    "LogisticRegression",
    "SoftmaxRegression",
    "GaussianRegression",
    "PoissonRegression",
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
]
