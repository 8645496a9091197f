"""Data sources: whatever the user passes, as a 2-D dask array chunked by rows only.

Accepted: NumPy arrays (and anything scikit-learn's ``check_array`` accepts), dask arrays,
Zarr v3 arrays given open or by path / URL, and text corpora by path (sparse: a Zarr CSR
group or a UCI bag-of-words file, :mod:`daskem.io.corpus`). Every layout problem is
reported with the call that fixes it; nothing here reads the data (non-finite values are
counted by the E-step, not by an extra pass).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import zarr
from scipy import sparse

from daskem.errors import DataError, StoreError
from daskem.io.formats import detect_format, open_netcdf, read_hdf5, read_table, table_array, xarray_data

SourceKind = Literal["numpy", "dask", "zarr", "xarray", "parquet", "csv", "hdf5", "netcdf", "corpus", "docword"]


class ChunkSizeWarning(UserWarning):
    """The data's chunking costs time or memory; the message says which chunking to use."""


#: Blocks smaller than this many rows leave Dask's per-task overhead (~1-2 ms) dominant.
MIN_BLOCK_ROWS = 4096

#: Past this many blocks, small blocks are merged (cached data) or warned about (streamed).
MANY_BLOCKS = 64

#: The block size daskem aims for when it merges small blocks or suggests a chunking, in bytes.
TARGET_BLOCK_BYTES = 16 * 2**20


def target_block_rows(n_samples: int, n_features: int) -> int:
    """Rows of a block of about :data:`TARGET_BLOCK_BYTES` as float64 (at least MIN_BLOCK_ROWS)."""
    return int(min(max(TARGET_BLOCK_BYTES // (8 * n_features), MIN_BLOCK_ROWS), max(n_samples, 1)))


class _CheckedZarr:
    """A Zarr array whose reads raise :class:`StoreError` naming the rows and the store.

    A truncated or corrupt chunk file otherwise surfaces as a bare decoding error from
    deep inside a task.
    """

    def __init__(self, arr: zarr.Array) -> None:
        self.arr = arr
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.ndim = arr.ndim

    def __dask_tokenize__(self) -> Any:
        # The same array read twice gives the same task specs (distributed warns otherwise).
        return ("daskem-checked-zarr", str(self.arr.store_path), self.shape, self.dtype.str)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.arr[key])
        except Exception as err:
            rows = key[0] if isinstance(key, tuple) else key
            where = f"rows {rows.start}:{rows.stop}" if isinstance(rows, slice) else f"rows {rows!r}"
            raise StoreError(
                f"Reading {where} of the Zarr array at {str(self.arr.store_path).removeprefix('file://')!r} failed "
                f"({type(err).__name__}: {err}): a stored chunk is truncated or corrupt. Restore or rewrite "
                "the store and run again."
            ) from None


def zarr_dask(arr: zarr.Array) -> da.Array:
    """A Zarr array as dask, reading several small stored chunks per task.

    More than :data:`MANY_BLOCKS` stored chunks under :data:`MIN_BLOCK_ROWS` rows would make one task per chunk and
    leave Dask's per-task overhead dominant; a task then reads a whole multiple of them
    (one Zarr read of a contiguous row range). Reads that fail raise :class:`StoreError`.

    The (small, picklable) array handle is inlined in every block's task, so a block's
    task has no dependency and is the same in every graph. With a separate
    ``original-`` key, Dask fuses it into a block that is the only one a graph reads
    (one sampled row, the first rows), renaming that block's key to an alias: the same
    key with another dependency than in the graph of all blocks that a cached fit keeps
    persisted, which distributed reports ("Detected different `run_spec`").
    """
    rows = int(arr.chunks[0]) if arr.ndim else 1
    chunks: Any = arr.chunks
    if arr.ndim == 2 and 0 < rows < MIN_BLOCK_ROWS and arr.shape[0] > MANY_BLOCKS * rows:
        chunks = (rows * max(1, target_block_rows(arr.shape[0], arr.shape[1]) // rows), arr.shape[1])
    name = "from-zarr-" + dask.base.tokenize(str(arr.store_path), arr.shape, arr.dtype.str, chunks)
    return da.from_array(_CheckedZarr(arr), chunks=chunks, name=name, asarray=False, fancy=False, inline_array=True)


@dataclass(frozen=True)
class DataSource:
    """A validated data source.

    Attributes
    ----------
    array : dask.array.Array
        Shape (n_samples, n_features), floating dtype, one chunk along features.
    kind : {"numpy", "dask", "zarr", "xarray", "parquet", "csv", "hdf5", "netcdf", "corpus", "docword"}
        What the user passed: NumPy results are returned for ``"numpy"``, lazy dask
        arrays otherwise. ``"corpus"``: a Zarr CSR group, ``"docword"``: a UCI
        bag-of-words file (:mod:`daskem.io.corpus`), both sparse.
    location : str or None
        The path or URL the data came from, if any.
    options : dict
        The reading options that reopen the same data from ``location`` (``variable``,
        ``columns``, ``dataset``, ``chunk_rows``, ``sequence_ids``, ``lengths`` in the
        run-length form of :func:`encode_lengths`, ``vocabulary``), JSON-able.
    lengths : ndarray of int or None
        The lengths of the sequences the rows form, in order (hidden Markov models), or
        None for independent rows. Part of the data's description: fingerprinted, stored
        with a checkpoint and restored by ``daskem resume``.
    weights : dask.array.Array or None
        One weight per row (``sample_weight``), chunked as the rows, or None. Part of the
        data's description as ``lengths`` are; reopened from ``options["sample_weight"]``
        when they were given as a Zarr array's location. Their values are checked when a
        fit reads them (:func:`daskem.em.session.weighted_rows`), not here.
    sparse : bool
        Whether the blocks are scipy.sparse CSR matrices (or arrays) instead of NumPy
        arrays. Only models that declare sparse support read such sources
        (``as_source(..., accept_sparse=True)``).
    feature_names : tuple of str or None
        One name per feature (column), e.g. the words of a corpus's vocabulary, or None.
    nnz : int or None
        The stored values of sparse data when known from their metadata (a corpus), else
        None.
    memory : tuple of (dask.array.Array, array) or None
        In-memory rows of one block (``as_source(..., one_block=True)``): ``(array, the
        rows)``. The rows stand for ``array`` only while ``array`` is that array (a
        :func:`dataclasses.replace` of it leaves them behind), so a session on one block
        takes them without a Dask compute.
    """

    array: da.Array
    kind: SourceKind
    location: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    lengths: np.ndarray | None = field(default=None, compare=False)
    weights: da.Array | None = field(default=None, compare=False)
    sparse: bool = False
    feature_names: tuple[str, ...] | None = field(default=None, compare=False)
    nnz: int | None = field(default=None, compare=False)
    memory: tuple[da.Array, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def stored_nbytes(self) -> float:
        """Bytes the data take in memory: dense arrays their size; sparse CSR data their values,
        column indices and row pointers when ``nnz`` is known, else an unknown (infinite) size."""
        if not self.sparse:
            return float(self.array.nbytes)
        if self.nnz is None:
            return float("inf")
        return float(self.nnz * (self.array.dtype.itemsize + 4) + 8 * (self.n_samples + 1))

    def largest_block_nbytes(self) -> float:
        """Bytes of the largest row block as float64 (sparse: its share of the stored values, in
        proportion to its rows; infinite when unknown)."""
        rows = max((int(c) for c in self.array.chunks[0]), default=0)
        if not self.sparse:
            return float(rows * self.n_features * 8)
        if self.nnz is None:
            return float("inf")
        return float(rows * (self.nnz / max(self.n_samples, 1) * 12.0 + 8.0))

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
        (``n_sample_blocks`` spread evenly; of a sparse block, its CSR arrays), so it reads
        only those blocks.

        Returns
        -------
        dict
            JSON-able: ``shape``, ``dtype``, ``row_chunks`` (run-length encoded as
            ``[size, count]`` pairs), ``location`` and ``digest``; for sequences also
            ``sequences`` (their number) and ``lengths_digest`` (SHA-256 of the lengths).
            A fit reads weighted rows with their weights as a last column
            (:func:`daskem.em.session.weighted_rows`), so the digest covers them.
        """
        chunks = self.array.chunks[0]
        picks = sorted({round(i * (len(chunks) - 1) / max(1, n_sample_blocks - 1)) for i in range(n_sample_blocks)})
        blocks = dask.compute(*[self.array.blocks[i, 0] for i in picks])
        digest = hashlib.sha256()
        for i, block in zip(picks, blocks, strict=True):
            digest.update(f"{i}:{block.shape}:".encode())
            if sparse.issparse(block):
                csr = sparse.csr_matrix(block, copy=True)
                csr.sum_duplicates()
                for part in (csr.indptr.astype("<i8"), csr.indices.astype("<i8"), csr.data):
                    digest.update(np.ascontiguousarray(part).tobytes())
            else:
                digest.update(np.ascontiguousarray(block).tobytes())
        runs: list[list[int]] = []
        for size in chunks:
            if runs and runs[-1][0] == size:
                runs[-1][1] += 1
            else:
                runs.append([int(size), 1])
        found: dict[str, Any] = {
            "shape": [int(v) for v in self.array.shape],
            "dtype": str(self.array.dtype),
            "row_chunks": runs,
            "location": self.location,
            "digest": digest.hexdigest(),
        }
        if self.lengths is not None:
            found["sequences"] = int(self.lengths.size)
            found["lengths_digest"] = hashlib.sha256(self.lengths.astype("<i8").tobytes()).hexdigest()
        return found


def lengths_from_ids(ids: Any) -> np.ndarray:
    """Sequence lengths from a sequence-id column (a new sequence wherever the id changes).

    Parameters
    ----------
    ids : array-like or dask array of shape (n_samples,)
        One id per row; the rows of a sequence are consecutive.

    Returns
    -------
    ndarray of int
        The lengths, in row order, for the ``lengths`` argument of the HMM estimators.
    """
    values = ids.compute() if isinstance(ids, da.Array) else np.asarray(ids)
    values = values.ravel()
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return np.diff(np.append(starts, values.size)).astype(np.int64)


def encode_lengths(lengths: np.ndarray) -> dict[str, list[list[int]]]:
    """Sequence lengths as JSON: ``{"runs": [[length, count], ...]}`` (equal lengths in a row merged)."""
    runs: list[list[int]] = []
    for value in lengths.tolist():
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([int(value), 1])
    return {"runs": runs}


def check_lengths(lengths: Any, n_samples: int) -> np.ndarray:
    """``lengths`` as int64 after checking them against the data's ``n_samples`` rows.

    Also accepts the stored form of :func:`encode_lengths`.
    """
    if isinstance(lengths, dict) and set(lengths) == {"runs"}:
        runs = np.asarray(lengths["runs"], dtype=np.int64).reshape(-1, 2)
        lengths = np.repeat(runs[:, 0], runs[:, 1])
    values = np.asarray(lengths)
    if values.ndim != 1 or (
        values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(values == np.floor(values)))
    ):
        raise DataError(f"lengths must be a 1-D array of non-negative integers; got {lengths!r}.")
    values = values.astype(np.int64)
    if values.size and values.min() < 0:
        raise DataError(f"lengths must be non-negative; got {int(values.min())} among them.")
    if int(values.sum()) != n_samples:
        raise DataError(
            f"lengths sum to {int(values.sum())} but X has {n_samples} rows: the lengths of the sequences must "
            "add up to the number of rows."
        )
    return values


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


def _check_dask(array: da.Array, name: str, chunk_rows: int | None = None) -> da.Array:
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
        warnings.warn(
            f"{name} is split into {len(array.chunks[1])} chunks along its {array.shape[1]} features "
            f"(chunks={array.chunks[1]}); every block must hold whole rows, so daskem rechunks it on every "
            f"pass. Store it with one chunk along features, or pass {name}.rechunk({{1: {array.shape[1]}}}).",
            ChunkSizeWarning,
            stacklevel=3,
        )
        array = array.rechunk({1: array.shape[1]})
    if chunk_rows is not None:
        array = array.rechunk({0: chunk_rows})
    return array


def _reject_sparse(name: str) -> None:
    raise DataError(
        f"Sparse data was passed for {name}, but this model needs dense data: use {name}.toarray(), or a "
        "dask array of dense blocks for data larger than memory. (daskem.KMeans accepts sparse data.)"
    )


def _csr_block(block: Any, dtype: Any) -> Any:
    """A sparse block as CSR of ``dtype`` (the same container kind: matrix or array)."""
    return block.tocsr().astype(dtype, copy=False)


def _sparse_memory(X: Any, name: str, chunk_rows: int | None) -> DataSource:
    """In-memory scipy.sparse data as a dask array of CSR blocks (``kind="numpy"``)."""
    from sklearn.utils import check_array  # scikit-learn only where in-memory data are checked

    try:
        values = check_array(
            X, accept_sparse=["csr"], dtype=[np.float64, np.float32], ensure_all_finite=False, input_name=name
        )
    except ValueError as err:
        raise DataError(str(err)) from None
    values.sort_indices()
    rows = chunk_rows or default_chunk_rows(values.shape[0], values.shape[1])
    array = da.from_array(values, chunks=(rows, values.shape[1]), asarray=False)
    return DataSource(array, "numpy", sparse=True)


def _sparse_dask(X: da.Array, name: str, chunk_rows: int | None, options: dict[str, Any]) -> DataSource:
    """A dask array of scipy.sparse blocks, checked and made of CSR float blocks."""
    _check_ndim(X.shape)
    kind = X.dtype.kind
    if kind not in "iubf":
        _reject_dtype(X.dtype, name)
    dtype = X.dtype if kind == "f" and X.dtype.itemsize >= 4 else np.dtype(np.float64)
    meta = _csr_block(X._meta, dtype)
    array = da.map_blocks(_csr_block, X, dtype, dtype=dtype, meta=meta)
    return DataSource(_check_dask(array, name, chunk_rows), "dask", None, options, sparse=True)


def _as_dask(values: Any) -> da.Array:
    return values if isinstance(values, da.Array) else da.from_array(np.asarray(values))


def _local(location: str) -> str:
    return location if "://" in location else os.path.abspath(location)


def _open_location(
    loc: str, options: dict[str, Any], storage_options: dict[str, Any] | None, name: str
) -> tuple[da.Array, SourceKind, da.Array | None]:
    """The data at ``loc`` as dask, its kind, and its sequence-id column (tables only)."""
    fmt = detect_format(loc)
    if fmt in ("parquet", "csv"):
        array, ids = read_table(loc, fmt, options.get("columns"), storage_options, options.get("sequence_ids"))
        return array, fmt, ids  # type: ignore[return-value]
    if "sequence_ids" in options:
        raise DataError(
            f"sequence_ids={options['sequence_ids']!r} names a column of a table, but {loc!r} is read as {fmt} "
            "data: pass lengths=... (daskem fit --lengths FILE) instead."
        )
    if fmt == "hdf5":
        return read_hdf5(loc, options.get("dataset"), options.get("chunk_rows") or 65_536), "hdf5", None
    if fmt == "netcdf":
        return _as_dask(open_netcdf(loc, options.get("variable"))), "netcdf", None
    variable = options.get("variable")
    target = f"{loc.rstrip('/')}/{variable.strip('/')}" if variable else loc
    return zarr_dask(open_zarr_array(target, storage_options)), "zarr", None


def _open_corpus(
    loc: str, options: dict[str, Any], storage_options: dict[str, Any] | None
) -> tuple[da.Array, SourceKind, tuple[str, ...] | None] | None:
    """The text corpus at ``loc`` (Zarr CSR group or UCI docword file), its kind and words; None if none."""
    from daskem.io import corpus

    rows = options.get("chunk_rows")
    if detect_format(loc) == "docword":
        opened = corpus.read_docword(loc, chunk_rows=rows or corpus.DEFAULT_CHUNK_ROWS, storage_options=storage_options)
        return opened, "docword", corpus.resolve_vocabulary(None, loc, storage_options)
    if detect_format(loc) != "zarr" or "variable" in options:
        return None
    if corpus.corpus_attributes(loc, storage_options) is None:
        return None
    reader = corpus.CorpusRows(_local(loc), storage_options)
    return corpus.read_csr_zarr(loc, chunk_rows=rows, storage_options=storage_options), "corpus", reader.vocabulary()


def _with_vocabulary(source: DataSource, vocabulary: Any, storage_options: dict[str, Any] | None) -> DataSource:
    """``source`` with one name per feature (a file of one word a line, or the words)."""
    if vocabulary is None:
        return source
    from daskem.io.corpus import resolve_vocabulary

    words = resolve_vocabulary(vocabulary, None, storage_options)
    if words is None or len(words) != source.n_features:
        raise DataError(
            f"The vocabulary has {0 if words is None else len(words)} words but the data have {source.n_features} "
            "features (columns): pass one word per column."
        )
    options = dict(source.options)
    if isinstance(vocabulary, str | os.PathLike) and source.location is not None:
        options["vocabulary"] = _local(os.fspath(vocabulary))  # read again on resume
    return replace(source, options=options, feature_names=words)


def _with_lengths(source: DataSource, lengths: Any, ids: da.Array | None) -> DataSource:
    """``source`` with its sequence lengths (given, or from a sequence-id column) checked."""
    if ids is not None:
        if lengths is not None:
            raise DataError("Pass either lengths=... or sequence_ids=..., not both: both say where sequences begin.")
        lengths = lengths_from_ids(ids)
    if lengths is None:
        return source
    values = check_lengths(lengths, source.n_samples)
    if source.lengths is not None and not np.array_equal(values, source.lengths):
        raise DataError(
            "X already carries sequence lengths that differ from the lengths passed: pass them once, with X "
            "(as_source(X, lengths=...)) or to the estimator."
        )
    options = dict(source.options)
    if source.location is not None and ids is None:
        # Stored with the reading options, so the same sequences are read again on resume.
        options["lengths"] = encode_lengths(values)
    return replace(source, options=options, lengths=values)


def _read_npy(location: str, storage_options: dict[str, Any] | None) -> np.ndarray:
    """The array of a ``.npy`` file by path or URL (read whole; no pickled objects)."""
    import fsspec

    try:
        with fsspec.open(location, "rb", **(storage_options or {})) as file:
            return np.asarray(np.load(file, allow_pickle=False))
    except FileNotFoundError:
        raise StoreError(f"No file found at {location!r}: pass the path of an existing .npy file.") from None
    except ValueError as err:
        raise DataError(f"{location!r} is not a .npy file of numbers ({err}).") from None


def _with_weights(source: DataSource, sample_weight: Any, storage_options: dict[str, Any] | None) -> DataSource:
    """``source`` with one weight per row, chunked as its rows (values checked when read)."""
    options = dict(source.options)
    weights: da.Array | np.ndarray
    if isinstance(sample_weight, str | os.PathLike):
        location = _local(os.fspath(sample_weight))
        weights = (
            _read_npy(location, storage_options)
            if location.endswith(".npy")
            else zarr_dask(open_zarr_array(location, storage_options))
        )
        if source.location is not None:
            options["sample_weight"] = location
    elif isinstance(sample_weight, zarr.Array):
        weights = zarr_dask(sample_weight)
    elif isinstance(sample_weight, da.Array):
        weights = sample_weight
    else:
        weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (source.n_samples,):
        raise DataError(
            f"sample_weight.shape == {weights.shape}, expected ({source.n_samples},). Pass one weight per row."
        )
    if weights.dtype.kind not in "iuf":
        _reject_dtype(weights.dtype, "sample_weight")
    if source.weights is not None:
        raise DataError("X already carries sample weights: pass them once, with X or to the estimator.")
    lazy = da.from_array(weights, chunks=(source.array.chunks[0],)) if isinstance(weights, np.ndarray) else weights
    return replace(source, options=options, weights=lazy.astype(np.float64).rechunk((source.array.chunks[0],)))


def as_source(
    X: Any,
    *,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
    variable: str | None = None,
    columns: list[str] | None = None,
    dataset: str | None = None,
    lengths: Any = None,
    sequence_ids: str | None = None,
    sample_weight: Any = None,
    name: str = "X",
    accept_sparse: bool | None = None,
    vocabulary: Any = None,
    one_block: bool = False,
) -> DataSource:
    """Validate ``X`` and return it as a :class:`DataSource`.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, xarray object, dask DataFrame, str or os.PathLike
        The data, shape (n_samples, n_features). A string or path is a location (local
        path, fsspec URL or glob) read by its suffix: ``.parquet``/``.pq`` (or a
        directory of Parquet files), ``.csv``, ``.h5``/``.hdf5``, ``.nc``; anything else
        is a Zarr array (or, with ``variable``, an array inside a Zarr group). Text corpora
        open sparse: a Zarr CSR group (:func:`daskem.io.corpus.write_csr_zarr`) and a UCI
        bag-of-words file ``docword.NAME.txt`` or ``.txt.gz`` (any ``.txt``/``.txt.gz``;
        its vocabulary read from ``vocab.NAME.txt`` beside it, if there).
    chunk_rows : int, optional
        Rows per block. In-memory data default to :func:`default_chunk_rows`; other
        sources keep their own chunking unless this is given (UCI docword files: 16,384
        documents).
    storage_options : dict, optional
        fsspec options for a URL.
    variable : str, optional
        The variable of an xarray Dataset or NetCDF file, or the array inside a Zarr group.
    columns : list of str, optional
        Columns of Parquet/CSV data or a dask DataFrame (default: every numeric column).
    dataset : str, optional
        The dataset inside an HDF5 file.
    lengths : array-like of int, optional
        The lengths of the sequences the rows form, in order, summing to ``n_samples``
        (hidden Markov models). Also accepted in the stored form of :func:`encode_lengths`.
    sequence_ids : str, optional
        For Parquet/CSV data or a dask DataFrame: a column of sequence ids (a new sequence
        wherever the id changes), read instead of ``lengths`` and left out of the data.
    sample_weight : array-like, dask array, zarr.Array, str or os.PathLike, optional
        One weight per row (estimators that take ``sample_weight``). A location (a
        ``.npy`` file or a 1-D Zarr array, by path or URL) is kept in the reading options,
        so the same weights are read again on resume.
    name : str
        The name used for the data in error messages.
    accept_sparse : bool or None
        True: accept scipy.sparse matrices or arrays (CSR, CSC, ...: kept as CSR blocks)
        and dask arrays of scipy.sparse blocks; only models that compute with sparse
        blocks pass True (k-means). None (default): those raise :class:`DataError`, but a
        text corpus given by location opens sparse and a :class:`DataSource` is taken as
        it is (its reader decides). False: anything sparse raises :class:`DataError`.
    vocabulary : str, os.PathLike or sequence of str, optional
        One name per feature: a file of one word a line (kept in the reading options, read
        again on resume) or the words. Default: a corpus's own vocabulary, if any.

    one_block : bool, default=False
        In-memory data (NumPy, scipy.sparse) as one block, whatever ``chunk_rows``: a
        ``partial_fit`` batch, computed on the driver without Dask's overhead per task.
        Other sources keep their chunking.

    Returns
    -------
    DataSource
        The validated source; ``feature_names`` holds the vocabulary.
    """
    source = _as_source(
        X,
        chunk_rows=chunk_rows,
        storage_options=storage_options,
        variable=variable,
        columns=columns,
        dataset=dataset,
        lengths=lengths,
        sequence_ids=sequence_ids,
        sample_weight=sample_weight,
        name=name,
        accept_sparse=accept_sparse,
        one_block=one_block,
    )
    return _with_vocabulary(source, vocabulary, storage_options)


def _as_source(
    X: Any,
    *,
    chunk_rows: int | None,
    storage_options: dict[str, Any] | None,
    variable: str | None,
    columns: list[str] | None,
    dataset: str | None,
    lengths: Any,
    sequence_ids: str | None,
    sample_weight: Any,
    name: str,
    accept_sparse: bool | None,
    one_block: bool = False,
) -> DataSource:
    """:func:`as_source` but the vocabulary."""
    options = {
        k: v
        for k, v in (
            ("variable", variable),
            ("columns", columns),
            ("dataset", dataset),
            ("chunk_rows", chunk_rows),
            ("sequence_ids", sequence_ids),
        )
        if v is not None
    }
    if sample_weight is not None:
        source = as_source(
            X,
            chunk_rows=chunk_rows,
            storage_options=storage_options,
            variable=variable,
            columns=columns,
            dataset=dataset,
            lengths=lengths,
            sequence_ids=sequence_ids,
            name=name,
            accept_sparse=accept_sparse,
        )
        return _with_weights(source, sample_weight, storage_options)
    if isinstance(X, DataSource):  # validated already (a sparse one by a caller that accepts sparse data)
        if X.sparse and accept_sparse is False:
            _reject_sparse(name)
        return _with_lengths(X, lengths, None)
    if isinstance(X, str | os.PathLike):
        loc = os.fspath(X)
        corpus = _open_corpus(loc, options, storage_options)
        if corpus is not None:
            if accept_sparse is False:
                _reject_sparse(name)
            opened, kind, words = corpus
            from daskem.io.corpus import stored_values

            source = replace(
                _sparse_dask(opened, name, None, options),
                kind=kind,
                location=_local(loc),
                feature_names=words,
                nnz=stored_values(loc, storage_options),
            )
            return _with_lengths(source, lengths, None)
        array, kind, ids = _open_location(loc, options, storage_options, name)
        source = DataSource(_check_dask(array, name, chunk_rows), kind, _local(loc), options)
        return _with_lengths(source, lengths, ids)
    module = type(X).__module__
    if sequence_ids is not None and not (module.startswith("dask.dataframe") or module.startswith("dask_expr")):
        raise DataError(
            f"sequence_ids={sequence_ids!r} names a column of a table, but X is a {type(X).__name__}: pass "
            "lengths=... instead (daskem.lengths_from_ids turns a column of ids into lengths)."
        )
    if isinstance(X, zarr.Array):
        source = DataSource(_check_dask(zarr_dask(X), name, chunk_rows), "zarr", str(X.store_path), options)
        return _with_lengths(source, lengths, None)
    if isinstance(X, da.Array) and sparse.issparse(X._meta):
        if not accept_sparse:
            _reject_sparse(name)
        return _with_lengths(_sparse_dask(X, name, chunk_rows, options), lengths, None)
    if isinstance(X, da.Array):
        return _with_lengths(DataSource(_check_dask(X, name, chunk_rows), "dask", None, options), lengths, None)
    if module.startswith("xarray."):
        data = _as_dask(xarray_data(X, variable, name))
        return _with_lengths(DataSource(_check_dask(data, name, chunk_rows), "xarray", None, options), lengths, None)
    if module.startswith("dask.dataframe") or module.startswith("dask_expr"):
        data, ids = table_array(X, columns, name, sequence_ids)
        return _with_lengths(DataSource(_check_dask(data, name, chunk_rows), "dask", None, options), lengths, ids)
    if sparse.issparse(X):
        if not accept_sparse:
            _reject_sparse(name)
        return _with_lengths(_sparse_memory(X, name, max(X.shape[0], 1) if one_block else chunk_rows), lengths, None)
    values = np.asarray(X)
    _check_ndim(values.shape)
    if values.dtype.kind in "USMmcV":
        _reject_dtype(values.dtype, name)
    from sklearn.utils import check_array

    try:
        values = check_array(X, dtype=[np.float64, np.float32], ensure_all_finite=False, input_name=name)
    except ValueError as err:
        if values.dtype.kind == "O":
            _reject_dtype(values.dtype, name, f" ({err})")
        raise DataError(str(err)) from None
    if one_block:
        # A batch of its own, read once: a random name spares hashing its contents (~1 ms).
        array = da.from_array(values, chunks=(max(values.shape[0], 1), values.shape[1]), name=False)
        return _with_lengths(DataSource(array, "numpy", memory=(array, values)), lengths, None)
    rows = chunk_rows or default_chunk_rows(values.shape[0], values.shape[1])
    return _with_lengths(DataSource(da.from_array(values, chunks=(rows, values.shape[1])), "numpy"), lengths, None)
