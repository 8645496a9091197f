"""scikit-learn's shared estimator checks on daskem.GaussianMixture."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from daskem import GaussianMixture

#: Checks that cannot pass, with the reason.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [GaussianMixture(random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
