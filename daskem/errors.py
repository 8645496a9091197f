"""Exceptions raised by daskem.

Every error daskem raises on bad input derives from :class:`DaskemError`, which is a
``ValueError`` so that code written against scikit-learn's conventions keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daskem._not_fitted import NotFittedError as NotFittedError


class DaskemError(ValueError):
    """Base class of every input or state error raised by daskem."""


class DataError(DaskemError):
    """The data cannot be fitted as given (shape, dtype, chunking, non-finite values)."""


class ParameterError(DaskemError):
    """A hyperparameter has an invalid value."""


class NumericalError(DaskemError):
    """The EM iteration reached a numerically invalid state (e.g. a singular covariance)."""


class StoreError(DaskemError):
    """A Zarr store or model file is missing, malformed or of an unsupported version."""


class DestinationExistsError(StoreError, FileExistsError):
    """Something is already where a model file would be written, and daskem will not replace it.

    It is also ``FileExistsError``, so ``except`` clauses written for file APIs catch it.
    """


class WorkerMemoryError(DaskemError):
    """The cluster's workers have too little memory to run the fit (see :mod:`daskem.worker_memory`)."""


def __getattr__(name: str) -> Any:
    # NotFittedError derives from scikit-learn's, whose import costs ~1.4 s: imported on
    # first use, so the models, the engine and the worker processes never import scikit-learn.
    if name == "NotFittedError":
        from daskem._not_fitted import NotFittedError as NotFittedError

        return NotFittedError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
