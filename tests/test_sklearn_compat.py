"""scikit-learn's own estimator checks, run on the four estimators."""

import pytest

import fastmle as fm

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks

# Every check passes, including the sample-weight equivalence on 15 samples with 30
# features where no unpenalised MLE exists: weighted and repeated rows give the same
# objective, so the solver takes the same path and stops (separable classes) at the
# same iterate.


@parametrize_with_checks(
    [
        fm.LogisticRegression(),
        fm.SoftmaxRegression(),
        fm.GaussianRegression(),
        fm.GaussianRegression(heteroscedastic=True),
        fm.LogisticRegression(alpha=1.0),
        fm.SoftmaxRegression(alpha=1.0),
        fm.GaussianRegression(alpha=1.0),
        fm.PoissonRegression(),
        fm.PoissonRegression(alpha=1.0),
        fm.LogisticRegression(cov_type="HC1"),
        fm.PoissonRegression(cov_type="HC0"),
    ],
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
