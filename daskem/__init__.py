"""daskem: Expectation-Maximization on data larger than memory, with Dask and Zarr.

The public names are imported lazily (PEP 562): ``import daskem`` imports neither dask,
distributed, numba nor matplotlib; ``from daskem import GaussianMixture`` imports the
estimators (and Dask) on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daskem.em import EMResult, RestartsResult, fit_em, fit_em_restarts, initial_params
    from daskem.errors import DaskemError, DataError, NotFittedError, NumericalError, ParameterError, StoreError
    from daskem.estimators import (
        PPCA,
        BayesianGaussianMixture,
        CategoricalHMM,
        FactorAnalysis,
        FastICA,
        GaussianHMM,
        GaussianImputer,
        GaussianMixture,
        IndependentFactorAnalysis,
        KMeans,
        LatentDirichletAllocation,
        fastica,
        lengths_from_ids,
        load,
    )
    from daskem.io import as_source
    from daskem.models import GaussianMixtureModel, GaussianMixtureParams, KMeansModel, KMeansParams

    __version__: str

# public name -> the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    "EMResult": "daskem.em",
    "RestartsResult": "daskem.em",
    "fit_em": "daskem.em",
    "fit_em_restarts": "daskem.em",
    "initial_params": "daskem.em",
    "DaskemError": "daskem.errors",
    "DataError": "daskem.errors",
    "NotFittedError": "daskem.errors",
    "NumericalError": "daskem.errors",
    "ParameterError": "daskem.errors",
    "StoreError": "daskem.errors",
    "PPCA": "daskem.estimators",
    "BayesianGaussianMixture": "daskem.estimators",
    "CategoricalHMM": "daskem.estimators",
    "FactorAnalysis": "daskem.estimators",
    "FastICA": "daskem.estimators",
    "GaussianHMM": "daskem.estimators",
    "GaussianImputer": "daskem.estimators",
    "GaussianMixture": "daskem.estimators",
    "IndependentFactorAnalysis": "daskem.estimators",
    "KMeans": "daskem.estimators",
    "LatentDirichletAllocation": "daskem.estimators",
    "fastica": "daskem.estimators",
    "lengths_from_ids": "daskem.estimators",
    "load": "daskem.estimators",
    "as_source": "daskem.io",
    "GaussianMixtureModel": "daskem.models",
    "GaussianMixtureParams": "daskem.models",
    "KMeansModel": "daskem.models",
    "KMeansParams": "daskem.models",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("daskem")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BayesianGaussianMixture",
    "CategoricalHMM",
    "DaskemError",
    "DataError",
    "EMResult",
    "FactorAnalysis",
    "FastICA",
    "GaussianHMM",
    "GaussianImputer",
    "GaussianMixture",
    "GaussianMixtureModel",
    "GaussianMixtureParams",
    "IndependentFactorAnalysis",
    "KMeans",
    "KMeansModel",
    "KMeansParams",
    "LatentDirichletAllocation",
    "NotFittedError",
    "NumericalError",
    "PPCA",
    "ParameterError",
    "RestartsResult",
    "StoreError",
    "__version__",
    "as_source",
    "fastica",
    "fit_em",
    "fit_em_restarts",
    "initial_params",
    "lengths_from_ids",
    "load",
]
