"""Linear models fitted by maximum likelihood on fastmle's fused kernels.

Each estimator is a likelihood family (Bernoulli, categorical, Gaussian) over
linear predictors, one solver (Newton or L-BFGS, one pass over X per evaluation)
and one inference step (observed information -> covariance -> standard errors).
"""

from ._base import ConvergenceWarning, DataConversionWarning, NotFittedError
from ._estimators import GaussianRegression, LogisticRegression, SoftmaxRegression

__all__ = [
    "LogisticRegression",
    "SoftmaxRegression",
    "GaussianRegression",
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
]
