"""daskem: Expectation-Maximization on data larger than memory, with Dask and Zarr."""

from importlib.metadata import PackageNotFoundError, version

from daskem.em import EMResult, fit_em, initial_params
from daskem.errors import DaskemError, DataError, NotFittedError, NumericalError, ParameterError, StoreError
from daskem.estimators import GaussianMixture, load
from daskem.io import as_source
from daskem.models import GaussianMixtureModel, GaussianMixtureParams

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
    "NotFittedError",
    "NumericalError",
    "ParameterError",
    "StoreError",
    "__version__",
    "as_source",
    "fit_em",
    "initial_params",
    "load",
]
