"""daskem's ``NotFittedError``, apart from :mod:`daskem.errors` because it imports scikit-learn."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

from daskem.errors import DaskemError


class NotFittedError(DaskemError, _SklearnNotFittedError):
    """A method that needs a fitted model was called before ``fit``.

    It is also scikit-learn's ``NotFittedError``, so ``except`` clauses written for
    scikit-learn catch it.
    """
