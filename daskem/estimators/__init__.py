"""scikit-learn style estimators on top of the EM engine."""

from daskem.estimators._base import EMEstimator, load
from daskem.estimators.gaussian_mixture import GaussianMixture
from daskem.estimators.kmeans import KMeans

__all__ = ["EMEstimator", "GaussianMixture", "KMeans", "load"]
