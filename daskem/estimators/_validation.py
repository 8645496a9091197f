"""Hyperparameter validation with scikit-learn's wording.

scikit-learn's own validation helpers are private (``sklearn.utils._param_validation``),
so daskem states its constraints here and words the errors the same way:
"The 'n_components' parameter of GaussianMixture must be an int in the range [1, inf).
Got 0 instead."
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from daskem.errors import ParameterError


def _fail(owner: str, name: str, constraint: str, value: Any) -> ParameterError:
    return ParameterError(f"The {name!r} parameter of {owner} must be {constraint}. Got {value!r} instead.")


def check_int(owner: str, name: str, value: Any, low: int, *, none_ok: bool = False) -> None:
    """Require an int in ``[low, inf)`` (or ``None`` when ``none_ok``)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        extra = " or None" if none_ok else ""
        raise _fail(owner, name, f"an int in the range [{low}, inf){extra}", value)


def check_real(owner: str, name: str, value: Any, low: float) -> None:
    """Require a real number in ``[low, inf)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) < np.inf:
        raise _fail(owner, name, f"a float in the range [{low}, inf)", value)


def check_option(owner: str, name: str, value: Any, options: Iterable[str]) -> None:
    """Require one of ``options``."""
    opts = sorted(options)
    if not isinstance(value, str) or value not in opts:
        shown = "{" + ", ".join(repr(o) for o in opts) + "}"
        raise _fail(owner, name, f"a str among {shown}", value)


def check_random_state_param(owner: str, value: Any) -> None:
    """Require an int seed in [0, 2**32 - 1], a ``numpy.random.RandomState`` or ``None``."""
    if value is None or isinstance(value, np.random.RandomState):
        return
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= int(value) <= 2**32 - 1:
        return
    raise _fail(
        owner,
        "random_state",
        "an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand.RandomState' or None",
        value,
    )
