"""daskem: Expectation-Maximization on data larger than memory, with Dask and Zarr."""

from importlib.metadata import PackageNotFoundError, version

from daskem.em import EMResult, RestartsResult, fit_em, fit_em_restarts, initial_params
from daskem.errors import DaskemError, DataError, NotFittedError, NumericalError, ParameterError, StoreError
from daskem.estimators import GaussianMixture, KMeans, load
from daskem.io import as_source
from daskem.models import GaussianMixtureModel, GaussianMixtureParams, KMeansModel, KMeansParams

try:
    __version__ = version("daskem")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DaskemError",
    "DataError",
    "EMResult",
    "GaussianMixture",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "KMeans",
    "KMeansModel",
    "KMeansParams",
    "NotFittedError",
    "NumericalError",
    "ParameterError",
    "RestartsResult",
    "StoreError",
    "__version__",
    "as_source",
    "fit_em",
    "fit_em_restarts",
    "initial_params",
    "load",
]
