"""Pure NumPy models: no dask import here, so they run anywhere and test in isolation."""

from daskem.models.base import Model, Params, Stats
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams, GaussianMixtureStats
from daskem.models.kmeans import KMeansModel, KMeansParams, KMeansStats

__all__ = [
    "COVARIANCE_TYPES",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "GaussianMixtureStats",
    "KMeansModel",
    "KMeansParams",
    "KMeansStats",
    "Model",
    "Params",
    "Stats",
    "covariance_type",
]
