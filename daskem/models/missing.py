"""Rows with missing coordinates: finding them in a block and grouping them by pattern.

A model that marginalises missing values (``missing="marginalize"``: Gaussian mixtures,
PPCA, factor analysis) treats every NaN of a block as a coordinate missing at random;
infinite values stay errors (they are counted, as every model counts non-finite data).
:func:`missing_layout` splits a block into its complete rows, which take the model's
complete-data path unchanged (so a block without NaN gives the complete-data statistics
bit for bit), and its incomplete rows, grouped by their number ``m`` of missing
coordinates (one array of missing indices per group, ``(rows, m)``) and, within a group,
by pattern (the distinct sets of missing coordinates), so that what depends on the
pattern alone (the factorisation of an ``m x m`` block) is computed once per pattern.
Rows with every coordinate missing carry no information about any parameter (their
likelihood is 1 whatever the parameters) and are skipped; they are counted.

Pure NumPy: nothing here imports dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daskem.errors import ParameterError

IntArray = NDArray[np.intp]

#: The values of a model's ``missing`` hyperparameter: refuse NaN (scikit-learn's behaviour),
#: or treat NaN entries as missing at random and marginalise them.
MISSING_POLICIES = ("error", "marginalize")


def check_missing_policy(value: Any, owner: str) -> str:
    """``value`` if it is one of :data:`MISSING_POLICIES`, else :class:`ParameterError` naming it."""
    if not isinstance(value, str) or value not in MISSING_POLICIES:
        raise ParameterError(
            f"The 'missing' parameter of {owner} must be one of {list(MISSING_POLICIES)}; got {value!r}. "
            "Use missing='marginalize' to fit data with NaN entries (treated as missing at random)."
        )
    return value


@dataclass(frozen=True)
class MissingGroup:
    """The incomplete rows of a block that miss the same number ``m`` of coordinates.

    Attributes
    ----------
    rows : ndarray of shape (n,)
        Their indices in the block, ascending.
    missing : ndarray of shape (n, m)
        The missing coordinates of each row, ascending.
    patterns : ndarray of shape (p, m)
        The distinct rows of ``missing``.
    inverse : ndarray of shape (n,)
        The pattern of each row: ``missing == patterns[inverse]``.
    """

    rows: IntArray
    missing: IntArray
    patterns: IntArray
    inverse: IntArray

    @property
    def width(self) -> int:
        """``m``: the missing coordinates per row."""
        return int(self.missing.shape[1])


@dataclass(frozen=True)
class MissingLayout:
    """Where a block's missing values are (see :func:`missing_layout`).

    Attributes
    ----------
    complete : ndarray of shape (c,)
        Indices of the rows with no NaN (infinite values included: they are errors the
        complete-data path counts).
    groups : tuple of MissingGroup
        The rows with some but not all coordinates missing, by number missing.
    n_empty : int
        Rows with every coordinate missing (skipped).
    n_infinite : int
        Infinite values among the incomplete rows (the complete rows' are counted by the
        complete-data path).
    """

    complete: IntArray
    groups: tuple[MissingGroup, ...]
    n_empty: int
    n_infinite: int


def _patterns(missing: IntArray, mask: NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
    """The distinct rows of ``missing`` and each row's index among them."""
    d = mask.shape[1]
    if d <= 62:
        # One integer key per row (bit j: coordinate j missing): a 1-D unique, much faster.
        keys = mask.astype(np.int64) @ (np.int64(1) << np.arange(d, dtype=np.int64))
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return missing[first], inverse.reshape(-1).astype(np.intp)
    patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
    return patterns.astype(np.intp), inverse.reshape(-1).astype(np.intp)


def missing_layout(block: NDArray[Any]) -> MissingLayout | None:
    """Where the NaN of ``block`` are, or None when it holds none.

    A BLAS product of the block with a vector of ones finds the candidate rows (a NaN
    makes its row's sum NaN), so a block without NaN costs one cheap pass; only the
    candidate rows are then examined value by value.

    Parameters
    ----------
    block : ndarray of shape (n, d)
        Rows.

    Returns
    -------
    MissingLayout or None
    """
    n, d = block.shape
    if n == 0 or d == 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        sums = block @ np.ones(d, dtype=block.dtype)
    candidates = np.flatnonzero(np.isnan(sums))
    if candidates.size == 0:
        return None
    # Masks of the whole block (a byte per value) rather than copies of its candidate rows.
    holes = np.isnan(block)
    mask = holes[candidates]
    counts = mask.sum(axis=1)
    holed = counts > 0
    if not holed.any():  # NaN sums from inf - inf alone: the complete path counts them
        return None
    is_complete = np.ones(n, dtype=bool)
    is_complete[candidates[holed]] = False
    complete = np.flatnonzero(is_complete).astype(np.intp)
    n_empty = int(np.count_nonzero(counts == d))
    partial = holed & (counts < d)
    rows_all, mask_all, counts_all = candidates[partial], mask[partial], counts[partial]
    del holes
    n_infinite = int(np.count_nonzero(np.isinf(block)[rows_all]))
    groups = []
    for m in np.unique(counts_all):
        chosen = counts_all == m
        sub = mask_all[chosen]
        missing = np.nonzero(sub)[1].reshape(-1, int(m)).astype(np.intp)
        patterns, inverse = _patterns(missing, sub)
        groups.append(MissingGroup(rows_all[chosen].astype(np.intp), missing, patterns, inverse))
    return MissingLayout(complete, tuple(groups), n_empty, n_infinite)
