"""scikit-learn style estimators on top of the EM engine."""

from daskem.estimators.gaussian_mixture import GaussianMixture, load

__all__ = ["GaussianMixture", "load"]
