"""scikit-learn's shared estimator checks on daskem.GaussianMixture,
daskem.BayesianGaussianMixture (its ``sample_weight`` included), daskem.FastICA and
daskem.IndependentFactorAnalysis."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from daskem import BayesianGaussianMixture, FastICA, GaussianMixture, IndependentFactorAnalysis

#: Checks that cannot pass, with the reason.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [
        GaussianMixture(random_state=0),
        BayesianGaussianMixture(random_state=0),
        FastICA(random_state=0),
        IndependentFactorAnalysis(n_components=1, n_source_components=2, max_iter=20, tol=1e-3),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
