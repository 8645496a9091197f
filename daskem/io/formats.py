"""Readers for the file formats daskem fits besides Zarr: Parquet, CSV, HDF5, NetCDF/xarray.

(Text corpora, UCI bag-of-words ``.txt``/``.txt.gz`` files and the Zarr CSR layout, are
read by :mod:`daskem.io.corpus`.)

Each returns a lazy 2-D dask array chunked by rows; nothing is read here except what a
format needs to know its row counts (Parquet footers; for CSV one counting pass, as
Dask's ``to_dask_array(lengths=True)`` does). The optional libraries (pandas/pyarrow,
h5py, xarray) are imported only when their format is used, with an install hint if
missing.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import dask.array as da
import numpy as np

from daskem.errors import DataError

#: File suffixes and the format they select.
SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".nc": "netcdf",
    ".nc4": "netcdf",
    ".txt": "docword",
    ".txt.gz": "docword",
}


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise DataError(f"Reading {extra} files needs the {module!r} package: pip install 'daskem[formats]'.") from None


def detect_format(location: str) -> str:
    """The format of a path, URL or glob by its suffix (a directory of Parquet files too)."""
    base = location.rstrip("/")
    for suffix, fmt in SUFFIXES.items():
        if base.lower().endswith(suffix):
            return fmt
    if "://" not in location and os.path.isdir(location) and glob.glob(os.path.join(location, "*.parquet")):
        return "parquet"
    return "zarr"


def table_array(
    df: Any, columns: list[str] | None, location: str, sequence_ids: str | None = None
) -> tuple[da.Array, da.Array | None]:
    """The selected (default: numeric) columns of a dask DataFrame as a float64 dask array.

    With ``sequence_ids``, that column is returned apart (as a dask array, any dtype) and
    left out of the default column selection. Row counts per partition are computed
    (Parquet footers; one pass for CSV).
    """
    ids = None
    if sequence_ids is not None:
        if sequence_ids not in df.columns:
            raise DataError(
                f"The sequence-id column {sequence_ids!r} is not in {location!r}; its columns are "
                f"{list(df.columns)}. Pass sequence_ids=... (daskem fit --sequence-ids NAME) naming an existing one."
            )
        if columns is not None and sequence_ids in columns:
            raise DataError(
                f"The sequence-id column {sequence_ids!r} is also among the data columns {columns}: leave it out "
                "of columns=... (daskem fit --columns)."
            )
        ids = df[sequence_ids].to_dask_array(lengths=True)
        df = df.drop(columns=[sequence_ids])
    # lengths=True can disagree with the partitions once a column selection lets dask merge
    # small partitions; measuring the blocks of the array itself is always consistent.
    array = _select_columns(df, columns, location).to_dask_array().compute_chunk_sizes().astype(np.float64)
    return array, ids


def _select_columns(df: Any, columns: list[str] | None, location: str) -> Any:
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DataError(
                f"Columns {missing} are not in {location!r}; its columns are {list(df.columns)}. "
                "Pass columns=[...] (daskem fit --columns a,b,...) naming existing ones."
            )
        df = df[columns]
        # As select_dtypes(include="number"): pandas extension dtypes too (StringDtype is not
        # a NumPy dtype), booleans excluded.
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        bad = [c for c, t in df.dtypes.items() if not is_numeric_dtype(t) or is_bool_dtype(t)]
        if bad:
            raise DataError(f"Columns {bad} of {location!r} are not numeric; select numeric columns only.")
        return df
    numeric = df.select_dtypes(include="number")
    if len(numeric.columns) == 0:
        raise DataError(f"{location!r} has no numeric columns; its columns are {list(df.columns)}.")
    return numeric


def read_table(
    location: str,
    fmt: str,
    columns: list[str] | None,
    storage_options: dict[str, Any] | None,
    sequence_ids: str | None = None,
) -> tuple[da.Array, da.Array | None]:
    """Numeric columns of Parquet or CSV files (a path, directory or glob) as a dask array.

    Also the ``sequence_ids`` column apart, if named (see :func:`table_array`).
    """
    _require("pandas", fmt)
    import dask.dataframe as dd

    opts = {"storage_options": storage_options} if storage_options else {}
    try:
        # Columns are selected by _select_columns (which names the missing ones); Dask pushes
        # the selection down to the reader.
        df = dd.read_parquet(location, **opts) if fmt == "parquet" else dd.read_csv(location, **opts)
    except (FileNotFoundError, OSError) as err:
        raise DataError(f"Cannot read {fmt} data at {location!r}: {err}") from None
    return table_array(df, columns, location, sequence_ids)


class HDF5Rows:
    """A lazily opened HDF5 dataset: picklable (path + name), reopened for every read.

    ``da.from_array`` slices it per block, so worker processes read only their rows.
    """

    def __init__(self, path: str, dataset: str) -> None:
        h5py = _require("h5py", "HDF5")
        self.path = path
        self.dataset = dataset
        try:
            with h5py.File(path, "r") as f:
                if dataset not in f:
                    names: list[str] = []
                    f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None)
                    raise DataError(
                        f"{path!r} has no dataset {dataset!r}; its datasets are {names}. "
                        "Pass dataset=... (daskem fit --dataset NAME)."
                    )
                node = f[dataset]
                self.shape = tuple(node.shape)
                self.dtype = node.dtype
                self.mtime = os.path.getmtime(path)
        except FileNotFoundError:
            raise DataError(f"No HDF5 file at {path!r}.") from None

    @property
    def ndim(self) -> int:
        """Number of dimensions of the dataset."""
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.dataset][key])

    def __dask_tokenize__(self) -> tuple[str, str, float]:
        return (self.path, self.dataset, self.mtime)


def read_hdf5(location: str, dataset: str | None, chunk_rows: int) -> da.Array:
    """An HDF5 dataset as a dask array of ``chunk_rows``-row blocks."""
    if dataset is None:
        raise DataError(f"{location!r} is an HDF5 file: name the dataset, dataset='/x' (daskem fit --dataset /x).")
    rows = HDF5Rows(location, dataset)
    # Inlined (see daskem.io.sources.zarr_dask): every block's task is the same in every graph.
    return da.from_array(rows, chunks=(chunk_rows, *rows.shape[1:]), lock=True, inline_array=True)


def xarray_data(obj: Any, variable: str | None, where: str) -> Any:
    """The data of an xarray DataArray, or of variable ``variable`` of a Dataset."""
    xr = _require("xarray", "xarray")
    if isinstance(obj, xr.Dataset):
        if variable is None:
            raise DataError(
                f"{where} is an xarray Dataset: name the variable to fit, variable=... "
                f"(daskem fit --variable NAME); its variables are {list(obj.data_vars)}."
            )
        if variable not in obj.data_vars:
            raise DataError(f"{where} has no variable {variable!r}; its variables are {list(obj.data_vars)}.")
        obj = obj[variable]
    return obj.data


def open_netcdf(location: str, variable: str | None) -> Any:
    """A variable of a NetCDF file, opened lazily with xarray (dask chunks)."""
    xr = _require("xarray", "NetCDF")
    try:
        # Inlined (see daskem.io.sources.zarr_dask): every block's task is the same in every graph.
        dataset = xr.open_dataset(location, chunks={}, inline_array=True)
    except FileNotFoundError:
        raise DataError(f"No NetCDF file at {location!r}.") from None
    return xarray_data(dataset, variable, repr(location))
