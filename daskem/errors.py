"""Exceptions raised by daskem.

Every error daskem raises on bad input derives from :class:`DaskemError`, which is a
``ValueError`` so that code written against scikit-learn's conventions keeps working.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class DaskemError(ValueError):
    """Base class of every input or state error raised by daskem."""


class DataError(DaskemError):
    """The data cannot be fitted as given (shape, dtype, chunking, non-finite values)."""


class ParameterError(DaskemError):
    """A hyperparameter has an invalid value."""


class NotFittedError(DaskemError, _SklearnNotFittedError):
    """A method that needs a fitted model was called before ``fit``.

    It is also scikit-learn's ``NotFittedError``, so ``except`` clauses written for
    scikit-learn catch it.
    """


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
