"""Fitted models as Zarr v3 groups: named float arrays plus JSON attributes, no pickle.

Layout of a model group::

    MODEL.zarr/            attrs: {"daskem": {"format": 1, "version": ..., "kind": ...,
                                              "estimator": {hyperparameters},
                                              "fit": {fitted scalars and history}}}
      weights, means, ...  float64 arrays, one per parameter

Reading refuses an unknown format version, a non-float array and a group that is not a
daskem model, each with a message saying what was found.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from daskem.errors import StoreError

FORMAT_VERSION = 1
ATTR_KEY = "daskem"


def write_float_array(group: zarr.Group, name: str, value: np.ndarray) -> None:
    """Write ``value`` as one uncompressed float64 chunk ``name`` of ``group``."""
    data = np.ascontiguousarray(value, dtype=np.float64)
    array = group.create_array(
        name, shape=data.shape, dtype="float64", chunks=tuple(max(1, s) for s in data.shape), compressors=None
    )
    array[...] = data


def read_float_arrays(group: zarr.Group, where: str) -> dict[str, np.ndarray]:
    """Read every array of ``group``, refusing any dtype but float64 (nothing else is trusted)."""
    arrays: dict[str, np.ndarray] = {}
    for name, array in group.arrays():
        if np.dtype(array.dtype) != np.float64:
            raise StoreError(f"{where}: array {name!r} has dtype {array.dtype}; daskem stores float64 only.")
        arrays[name] = np.asarray(array[...])
    return arrays


def write_arrays_group(
    location: str | os.PathLike[str],
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
    *,
    overwrite: bool = True,
) -> None:
    """Write ``arrays`` and JSON ``attrs`` as a Zarr v3 group at ``location``."""
    group = zarr.open_group(store=os.fspath(location), mode="w" if overwrite else "w-", zarr_format=3)
    for name, value in arrays.items():
        write_float_array(group, name, value)
    group.attrs[ATTR_KEY] = {"format": FORMAT_VERSION, **attrs}


def read_arrays_group(location: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a group written by :func:`write_arrays_group`: its arrays and attributes."""
    loc = os.fspath(location)
    try:
        group = zarr.open_group(store=loc, mode="r")
    except FileNotFoundError:
        raise StoreError(f"No daskem model found at {loc!r}: the path does not exist.") from None
    except (zarr.errors.NodeTypeValidationError, zarr.errors.ContainsArrayError):
        raise StoreError(f"{loc!r} is a Zarr array, not a daskem model group.") from None
    meta = group.attrs.get(ATTR_KEY)
    if not isinstance(meta, dict) or "format" not in meta:
        raise StoreError(f"{loc!r} is a Zarr group but not a daskem model (no '{ATTR_KEY}' attribute).")
    if meta["format"] != FORMAT_VERSION:
        raise StoreError(
            f"{loc!r} uses daskem model format {meta['format']!r}; this daskem reads format "
            f"{FORMAT_VERSION}. Upgrade daskem to read it."
        )
    return read_float_arrays(group, repr(loc)), meta
