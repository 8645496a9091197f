"""The checks of a pass's statistics: non-finite data and a non-finite likelihood.

The E-step counts the non-finite values it meets (``Stats.n_nonfinite``), so finding bad
data costs no extra pass; these functions turn the counts into one clear error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskem.errors import DataError, NumericalError
from daskem.models.base import count_infinite, count_nonfinite


def nonfinite_error(count: int, n_rows: int, name: str = "X", where: str = "") -> DataError:
    """The error for data holding ``count`` NaN or infinite values among ``n_rows`` rows."""
    return DataError(
        f"Input {name} contains {count} NaN or infinite value(s) among {n_rows} rows{where}. "
        f"Remove or impute them before fitting, e.g. {name} = {name}[da.isfinite({name}).all(axis=1)] "
        f"for a dask array (then {name}.compute_chunk_sizes())."
    )


def check_stats(stats: Any, n_samples: int, name: str = "X", model: Any = None) -> None:
    """Raise a clear error if a pass saw non-finite data or produced a non-finite likelihood.

    The advice for a non-finite likelihood is the model's ``numerical_advice`` when it has one.
    """
    if stats.n_nonfinite:
        raise nonfinite_error(stats.n_nonfinite, n_samples, name)
    check_log_likelihood(stats.loglik, model)


def check_log_likelihood(loglik: float, model: Any = None) -> None:
    """Raise :class:`NumericalError` with the model's ``numerical_advice`` if ``loglik`` is not finite."""
    if not np.isfinite(loglik):
        advice = getattr(model, "numerical_advice", "Scale the features.")
        raise NumericalError(f"The log-likelihood is {loglik!r}: {advice}")


def check_rows(block: Any, allow_nan: bool = False) -> None:
    """Raise :class:`DataError` if a block to predict on holds NaN or infinite values.

    With ``allow_nan`` (a model that marginalises missing values) only infinite values are refused.
    """
    if allow_nan:
        bad = count_infinite(block)
        if bad:
            raise DataError(
                f"Input X contains {bad} infinite value(s) in a block of {block.shape[0]} rows (NaN entries are "
                "taken as missing, infinite ones are not). Replace them with NaN or finite values."
            )
        return
    bad = count_nonfinite(block)
    if bad:
        raise DataError(
            f"Input X contains {bad} NaN or infinite value(s) in a block of {block.shape[0]} rows. "
            "Remove or impute them before predicting."
        )
