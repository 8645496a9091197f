"""daskem: Expectation-Maximization on data larger than memory, with Dask and Zarr."""

from importlib.metadata import PackageNotFoundError, version

from daskem.em import EMResult, RestartsResult, fit_em, fit_em_restarts, initial_params
from daskem.errors import DaskemError, DataError, NotFittedError, NumericalError, ParameterError, StoreError
from daskem.estimators import (
    PPCA,
    CategoricalHMM,
    FactorAnalysis,
    GaussianHMM,
    GaussianMixture,
    KMeans,
    lengths_from_ids,
    load,
)
from daskem.io import as_source
from daskem.models import GaussianMixtureModel, GaussianMixtureParams, KMeansModel, KMeansParams

try:
    __version__ = version("daskem")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CategoricalHMM",
    "DaskemError",
    "DataError",
    "EMResult",
    "FactorAnalysis",
    "GaussianHMM",
    "GaussianMixture",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "KMeans",
    "KMeansModel",
    "KMeansParams",
    "NotFittedError",
    "NumericalError",
    "PPCA",
    "ParameterError",
    "RestartsResult",
    "StoreError",
    "__version__",
    "as_source",
    "fit_em",
    "fit_em_restarts",
    "initial_params",
    "lengths_from_ids",
    "load",
]
