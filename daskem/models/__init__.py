"""Pure NumPy models: no dask import here, so they run anywhere and test in isolation."""

from daskem.models.base import Model, Params, Stats
from daskem.models.bayesian_gmm import (
    BayesianGaussianMixtureModel,
    BayesianGaussianMixtureParams,
    BayesianGaussianMixtureStats,
)
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams, GaussianMixtureStats
from daskem.models.hmm import (
    CategoricalEmission,
    CategoricalEmissionParams,
    CategoricalHMMModel,
    Emission,
    GaussianEmission,
    GaussianEmissionParams,
    GaussianHMMModel,
    HMMModel,
    HMMParams,
    HMMStats,
)
from daskem.models.kmeans import KMeansModel, KMeansParams, KMeansStats
from daskem.models.linear_gaussian import (
    FactorAnalysisModel,
    FactorAnalysisParams,
    LinearGaussianStats,
    PPCAModel,
    PPCAParams,
)

__all__ = [
    "BayesianGaussianMixtureModel",
    "BayesianGaussianMixtureParams",
    "BayesianGaussianMixtureStats",
    "COVARIANCE_TYPES",
    "CategoricalEmission",
    "CategoricalEmissionParams",
    "CategoricalHMMModel",
    "Emission",
    "FactorAnalysisModel",
    "FactorAnalysisParams",
    "GaussianEmission",
    "GaussianEmissionParams",
    "GaussianHMMModel",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "GaussianMixtureStats",
    "HMMModel",
    "HMMParams",
    "HMMStats",
    "KMeansModel",
    "KMeansParams",
    "KMeansStats",
    "LinearGaussianStats",
    "Model",
    "PPCAModel",
    "PPCAParams",
    "Params",
    "Stats",
    "covariance_type",
]
