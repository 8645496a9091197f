"""Data sources: whatever the user passes, as a 2-D dask array chunked by rows only.

Accepted: NumPy arrays (and anything scikit-learn's ``check_array`` accepts), dask arrays,
Zarr v3 arrays given open or by path / URL. Every layout problem is reported with the
call that fixes it; nothing here reads the data (non-finite values are counted by the
E-step, not by an extra pass).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import zarr
from scipy import sparse
from sklearn.utils import check_array

from daskem.errors import DataError, StoreError

SourceKind = Literal["numpy", "dask", "zarr"]


@dataclass(frozen=True)
class DataSource:
    """A validated data source.

    Attributes
    ----------
    array : dask.array.Array
        Shape (n_samples, n_features), floating dtype, one chunk along features.
    kind : {"numpy", "dask", "zarr"}
        What the user passed: NumPy results are returned for ``"numpy"``, lazy dask
        arrays otherwise.
    location : str or None
        The Zarr path or URL the data came from, if any.
    """

    array: da.Array
    kind: SourceKind
    location: str | None = None

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.array.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features (columns)."""
        return int(self.array.shape[1])

    def fingerprint(self, n_sample_blocks: int = 3) -> dict[str, Any]:
        """What identifies these data for a checkpoint: layout plus a digest of sampled blocks.

        The digest is SHA-256 over the raw bytes of the first, middle and last row blocks
        (``n_sample_blocks`` spread evenly), so it reads only those blocks.

        Returns
        -------
        dict
            JSON-able: ``shape``, ``dtype``, ``row_chunks`` (run-length encoded as
            ``[size, count]`` pairs), ``location`` and ``digest``.
        """
        chunks = self.array.chunks[0]
        picks = sorted({round(i * (len(chunks) - 1) / max(1, n_sample_blocks - 1)) for i in range(n_sample_blocks)})
        blocks = dask.compute(*[self.array.blocks[i, 0] for i in picks])
        digest = hashlib.sha256()
        for i, block in zip(picks, blocks, strict=True):
            digest.update(f"{i}:{block.shape}:".encode())
            digest.update(np.ascontiguousarray(block).tobytes())
        runs: list[list[int]] = []
        for size in chunks:
            if runs and runs[-1][0] == size:
                runs[-1][1] += 1
            else:
                runs.append([int(size), 1])
        return {
            "shape": [int(v) for v in self.array.shape],
            "dtype": str(self.array.dtype),
            "row_chunks": runs,
            "location": self.location,
            "digest": digest.hexdigest(),
        }


def default_chunk_rows(n_samples: int, n_features: int) -> int:
    """Rows per block for in-memory data: about 16 blocks, each 4,096 to 262,144 rows."""
    rows = math.ceil(n_samples / 16)
    return int(min(max(rows, 4096), 262_144, max(n_samples, 1)))


def open_zarr_array(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> zarr.Array:
    """Open a Zarr array read-only by path or URL, with errors that say what to pass."""
    loc = os.fspath(location)
    try:
        node = zarr.open_array(store=loc, mode="r", storage_options=storage_options)
    except FileNotFoundError:
        raise StoreError(
            f"No Zarr array found at {loc!r}: the path does not exist. "
            "Pass the path of an existing Zarr array (e.g. one written by `daskem make-data`)."
        ) from None
    except zarr.errors.NodeTypeValidationError:
        raise StoreError(
            f"{loc!r} is a Zarr group, not an array. Pass the path of an array inside it, "
            f"e.g. {loc.rstrip('/') + '/<array-name>'!r}."
        ) from None
    return node


def _reject_dtype(dtype: np.dtype[Any], name: str, detail: str = "") -> None:
    what = "Complex data not supported" if dtype.kind == "c" else "Non-numeric data not supported"
    raise DataError(
        f"{what}: {name} has dtype {dtype}{detail}. daskem fits real-valued data: "
        f"convert it first, e.g. {name}.astype('float64')."
    )


def _check_ndim(shape: tuple[Any, ...]) -> None:
    if len(shape) != 2:
        raise DataError(
            f"Expected 2D array, got {len(shape)}D array instead (shape={shape}). Reshape your data "
            "either using array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
            "if it contains a single sample."
        )


def _check_dask(array: da.Array, name: str) -> da.Array:
    _check_ndim(array.shape)
    kind = array.dtype.kind
    if kind in "iub":
        array = array.astype(np.float64)
    elif kind != "f":
        _reject_dtype(array.dtype, name)
    if any(math.isnan(c) for c in array.chunks[0]) or math.isnan(array.shape[0]):
        raise DataError(
            f"{name} has unknown chunk sizes along its rows (shape={array.shape}). "
            f"Call {name} = {name}.compute_chunk_sizes() before fitting."
        )
    if array.shape[0] < 1:
        raise DataError(f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 is required.")
    if array.shape[1] < 1:
        raise DataError(f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 is required.")
    if len(array.chunks[1]) > 1:
        raise DataError(
            f"{name} is split into {len(array.chunks[1])} chunks along its {array.shape[1]} features "
            f"(chunks={array.chunks[1]}); every block must hold whole rows. "
            f"Use {name} = {name}.rechunk({{1: {array.shape[1]}}})."
        )
    return array


def as_source(
    X: Any,
    *,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
    name: str = "X",
) -> DataSource:
    """Validate ``X`` and return it as a :class:`DataSource`.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str or os.PathLike
        The data, shape (n_samples, n_features). A string or path is a Zarr array
        location (local path or fsspec URL).
    chunk_rows : int, optional
        Rows per block for in-memory data (default: :func:`default_chunk_rows`).
    storage_options : dict, optional
        fsspec options for a Zarr URL.
    name : str
        The name used for the data in error messages.

    Returns
    -------
    DataSource
        The validated source.
    """
    if isinstance(X, DataSource):
        return X
    if isinstance(X, str | os.PathLike):
        arr = open_zarr_array(X, storage_options)
        loc = os.fspath(X)
        return DataSource(_check_dask(da.from_zarr(arr), name), "zarr", loc if "://" in loc else os.path.abspath(loc))
    if isinstance(X, zarr.Array):
        return DataSource(_check_dask(da.from_zarr(X), name), "zarr", str(X.store_path))
    if isinstance(X, da.Array):
        return DataSource(_check_dask(X, name), "dask")
    if sparse.issparse(X):
        raise DataError(
            f"Sparse data was passed for {name}, but daskem needs dense data: use {name}.toarray(), or a "
            "dask array of dense blocks for data larger than memory."
        )
    values = np.asarray(X)
    _check_ndim(values.shape)
    if values.dtype.kind in "USMmcV":
        _reject_dtype(values.dtype, name)
    try:
        values = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False, input_name=name)
    except ValueError as err:
        if values.dtype.kind == "O":
            _reject_dtype(values.dtype, name, f" ({err})")
        raise DataError(str(err)) from None
    rows = chunk_rows or default_chunk_rows(values.shape[0], values.shape[1])
    return DataSource(da.from_array(values, chunks=(rows, values.shape[1])), "numpy")
