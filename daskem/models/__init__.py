"""Pure NumPy models: no dask import here, so they run anywhere and test in isolation."""

from daskem.models.base import Model, Params, Stats
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams, GaussianMixtureStats

__all__ = [
    "COVARIANCE_TYPES",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "GaussianMixtureStats",
    "Model",
    "Params",
    "Stats",
    "covariance_type",
]
