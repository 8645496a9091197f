"""Text corpora as document-term matrices out of core: a Zarr CSR layout and the UCI bag-of-words files.

Both give a dask array of scipy.sparse CSR blocks, one block of documents (rows) per task,
each task reading only its documents.

The Zarr CSR layout (:func:`write_csr_zarr`, :func:`read_csr_zarr`) is a Zarr v3 group::

    CORPUS.zarr/   attrs: {"daskem_corpus": {"format": 1, "shape": [n_docs, n_words],
                                             "nnz": ..., "chunk_rows": ..., "dtype": ...,
                                             "vocabulary": true/false}}
      data        (nnz,) the stored values, row after row (chunks of ELEMENT_CHUNK values)
      indices     (nnz,) int32 (int64 past 2**31 - 1 words) column of every value
      indptr      (n_docs + 1,) int64, CSR's row pointers, in chunks of ``chunk_rows`` rows
      offsets     (n_chunks + 1,) int64: ``indptr`` at every row-chunk boundary
      vocabulary  (n_words,) strings, optional

Row chunk ``i`` is rows ``i * chunk_rows`` to ``(i + 1) * chunk_rows``: its task reads chunk
``i`` of ``indptr`` and the values ``offsets[i]:offsets[i + 1]`` of ``data`` and
``indices`` (the storage chunks overlapping them), nothing else. The ``daskem_corpus``
attribute is written last: a group without it (an interrupted write) is not read.

The UCI bag-of-words format (NYTimes, PubMed, ...: https://archive.ics.uci.edu/dataset/164)
is ``docword.NAME.txt`` (optionally gzip'ed): the lines D, W and NNZ, then one ``docID
wordID count`` triple a line (1-based, sorted by document), and ``vocab.NAME.txt``, one
word a line. :func:`scan_docword` finds the byte offset of every ``chunk_rows``-th document
(by bisection in a plain file; one sequential pass in a gzip'ed one) and
:func:`read_docword` parses one byte range per task. A gzip'ed file cannot be entered in
the middle: each task decompresses it from the start up to its range, so convert it once
with :func:`docword_to_zarr` (``daskem corpus``) to fit it repeatedly.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import dask.array as da
import fsspec
import numpy as np
import zarr
from scipy import sparse

from daskem.errors import DataError, DestinationExistsError, StoreError
from daskem.io.sources import _local

#: The group attribute of a corpus written by :func:`write_csr_zarr`.
CORPUS_ATTR = "daskem_corpus"
FORMAT_VERSION = 1

#: Documents per row chunk by default.
DEFAULT_CHUNK_ROWS = 16_384

#: Stored values (and column indices) per storage chunk of ``data`` and ``indices``.
ELEMENT_CHUNK = 2**20

#: Words per storage chunk of ``vocabulary``.
VOCABULARY_CHUNK = 65_536

#: Bytes of a docword file read at a time by the sequential readers.
READ_BYTES = 16 * 2**20


# -- shared: row ranges of a read ----------------------------------------------------------


def _read_rows(key: Any, n_rows: int, n_cols: int, read_range: Callable[[int, int], Any]) -> Any:
    """``matrix[key]`` for a reader of row ranges (``read_range(start, stop)`` gives CSR rows).

    Dask slices whole blocks (and fuses slices of them into the read), so a key is usually
    a row slice and a full column slice; anything else is read as the rows it spans, then
    indexed.
    """
    rows, cols = (*key, slice(None))[:2] if isinstance(key, tuple) else (key, slice(None))
    if isinstance(rows, slice) and rows.step in (None, 1):
        start, stop, _ = rows.indices(n_rows)
        block = read_range(start, max(start, stop))
    else:
        picked = np.arange(n_rows)[rows]
        lo, hi = (int(picked.min()), int(picked.max()) + 1) if np.size(picked) else (0, 0)
        block = read_range(lo, hi)[picked - lo]
    if not (isinstance(cols, slice) and cols.indices(n_cols) == (0, n_cols, 1)):
        block = block[:, cols]
    return block


def _csr_meta(dtype: Any) -> sparse.csr_matrix:
    return sparse.csr_matrix((0, 0), dtype=dtype)


def _dask_of(reader: Any, chunk_rows: int, name: str) -> da.Array:
    """A row-range reader as a dask array of CSR blocks, inlined in its tasks as zarr_dask does."""
    rows, cols = reader.shape
    return da.from_array(
        reader,
        chunks=(max(1, min(chunk_rows, rows)), cols),
        name=name,
        asarray=False,
        fancy=False,
        inline_array=True,
        meta=_csr_meta(reader.dtype),
    )


# -- the Zarr CSR layout -------------------------------------------------------------------


def _row_blocks(X: Any) -> Iterator[sparse.csr_matrix]:
    """CSR row blocks of a scipy.sparse matrix (or array), or of an iterable of blocks."""
    if sparse.issparse(X):
        matrix = sparse.csr_matrix(X)
        for start in range(0, max(matrix.shape[0], 1), DEFAULT_CHUNK_ROWS):
            yield matrix[start : start + DEFAULT_CHUNK_ROWS]
        return
    for block in X:
        if not sparse.issparse(block):
            raise DataError(
                f"write_csr_zarr takes a scipy.sparse matrix or an iterable of scipy.sparse row blocks; "
                f"got a block of type {type(block).__name__}."
            )
        yield sparse.csr_matrix(block)


def _regrouped(blocks: Iterable[sparse.csr_matrix], chunk_rows: int) -> Iterator[sparse.csr_matrix]:
    """The rows of ``blocks`` again, in blocks of exactly ``chunk_rows`` rows (the last one fewer).

    Holds at most one output block and one input block.
    """
    pending: list[sparse.csr_matrix] = []
    held = 0
    width = None
    for block in blocks:
        width = block.shape[1] if width is None else width
        if block.shape[1] != width:
            raise DataError(
                f"Row blocks of different widths: {block.shape[1]} columns after blocks of {width}; every "
                "block must hold all the words."
            )
        pending.append(block)
        held += block.shape[0]
        while held >= chunk_rows:
            rows = sparse.vstack(pending, format="csr") if len(pending) > 1 else pending[0]
            yield rows[:chunk_rows]
            rest = rows[chunk_rows:]
            pending, held = [rest], rest.shape[0]
    if held:
        yield sparse.vstack(pending, format="csr") if len(pending) > 1 else pending[0]


def refuse_existing(location: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise :class:`DestinationExistsError` naming ``location`` if anything is there."""
    from daskem.checkpoint.store import existing_content

    if storage_options:
        fs, root = fsspec.core.url_to_fs(location, **storage_options)
        found = ("", "data") if fs.exists(root) else None
    else:
        found = existing_content(location)
    if found is not None:
        raise DestinationExistsError(
            f"{location!r} already holds {found[1]}; a corpus is never written over anything. Choose another path."
        )


def write_csr_zarr(
    path: str | os.PathLike[str],
    X: Any,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    vocabulary: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Write a document-term matrix to the Zarr CSR layout (see the module), block by block.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write the Zarr v3 group (a path or fsspec URL); nothing may be there.
    X : scipy.sparse matrix or array, or iterable of them
        The documents (rows) by words (columns): one matrix, or row blocks in order
        (streamed: only one block and one row chunk are held at a time). Values keep
        their dtype.
    chunk_rows : int
        Documents per row chunk (the rows a task of :func:`read_csr_zarr` reads).
    vocabulary : sequence of str, optional
        One word per column, stored as the ``vocabulary`` array.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    (int, int)
        The shape written: documents, words.

    Raises
    ------
    DestinationExistsError
        Something is at ``path`` (it is left untouched).
    DataError
        No rows, blocks of different widths, or a vocabulary of another length.
    """
    loc = os.fspath(path)
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be >= 1; got {chunk_rows}.")
    refuse_existing(loc, storage_options)
    blocks = _regrouped(_row_blocks(X), chunk_rows)
    first = next(blocks, None)
    if first is None:
        raise DataError("write_csr_zarr got no row blocks: pass a matrix or at least one block of rows.")
    n_words = int(first.shape[1])
    words = None if vocabulary is None else [str(w) for w in vocabulary]
    if words is not None and len(words) != n_words:
        raise DataError(f"The vocabulary has {len(words)} words but the matrix has {n_words} columns.")
    dtype = np.dtype(first.dtype)
    if dtype.kind not in "iufb":
        raise DataError(f"A corpus holds numbers; the matrix has dtype {dtype}.")
    index_dtype = np.dtype(np.int32 if n_words < 2**31 else np.int64)
    group = zarr.open_group(store=loc, mode="w-", zarr_format=3, storage_options=storage_options)
    data = _Appender(group.create_array("data", shape=(0,), dtype=dtype, chunks=(ELEMENT_CHUNK,)))
    indices = _Appender(group.create_array("indices", shape=(0,), dtype=index_dtype, chunks=(ELEMENT_CHUNK,)))
    indptr = _Appender(group.create_array("indptr", shape=(0,), dtype=np.int64, chunks=(chunk_rows,)))
    indptr.add(np.zeros(1, dtype=np.int64))
    offsets = [0]
    n_docs = 0
    for block in _chain(first, blocks):
        block.sum_duplicates()
        block.sort_indices()
        data.add(block.data.astype(dtype, copy=False))
        indices.add(block.indices.astype(index_dtype, copy=False))
        indptr.add(offsets[-1] + block.indptr[1:].astype(np.int64))
        offsets.append(offsets[-1] + int(block.nnz))
        n_docs += int(block.shape[0])
    for column in (data, indices, indptr):
        column.flush(final=True)
    group.create_array("offsets", data=np.asarray(offsets, dtype=np.int64))
    if words is not None:
        stored = group.create_array(
            "vocabulary", shape=(n_words,), dtype=str, chunks=(max(1, min(VOCABULARY_CHUNK, n_words)),)
        )
        stored[:] = np.asarray(words, dtype=str)
    group.attrs[CORPUS_ATTR] = {
        "format": FORMAT_VERSION,
        "shape": [n_docs, n_words],
        "nnz": offsets[-1],
        "chunk_rows": chunk_rows,
        "dtype": dtype.str,
        "vocabulary": words is not None,
    }
    return n_docs, n_words


class _Appender:
    """Appends to a 1-D Zarr array in whole storage chunks (buffering the rest), then the remainder.

    Whole-chunk writes need no read-modify-write of a partial chunk and one metadata update
    per ``2**16`` values at least.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.unit = int(array.chunks[0])
        self.minimum = max(self.unit, 2**16)
        self.pending: list[np.ndarray] = []
        self.held = 0

    def add(self, values: np.ndarray) -> None:
        self.pending.append(values)
        self.held += values.size
        if self.held >= self.minimum:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if not self.held:
            return
        values = np.concatenate(self.pending)
        cut = values.size if final else values.size - values.size % self.unit
        self.array.append(values[:cut])
        self.pending = [values[cut:]]
        self.held = values.size - cut


def _chain(first: sparse.csr_matrix, rest: Iterator[sparse.csr_matrix]) -> Iterator[sparse.csr_matrix]:
    yield first
    yield from rest


def corpus_attributes(location: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``daskem_corpus`` attribute of the group at ``location``, or None if it is no corpus.

    None for a path that does not exist, a Zarr array, or a group without the attribute.
    """
    try:
        group = zarr.open_group(store=location, mode="r", storage_options=storage_options)
    except Exception:  # missing, an array, not Zarr at all: the Zarr array reader says which
        return None
    meta = group.attrs.get(CORPUS_ATTR)
    if not isinstance(meta, dict):
        return None
    if meta.get("format") != FORMAT_VERSION:
        raise StoreError(
            f"{location!r} is a corpus of format {meta.get('format')!r}; this daskem reads format {FORMAT_VERSION}. "
            "Upgrade daskem to read it."
        )
    return meta


class CorpusRows:
    """The corpus at a location, read by row ranges as CSR: picklable, reopened for every read.

    Parameters
    ----------
    location : str
        The corpus group (path or URL).
    storage_options : dict, optional
        fsspec options for a URL.
    """

    def __init__(self, location: str, storage_options: dict[str, Any] | None = None) -> None:
        meta = corpus_attributes(location, storage_options)
        if meta is None:
            raise StoreError(
                f"No corpus at {location!r}: write one with daskem.io.corpus.write_csr_zarr or `daskem corpus` "
                "(a group without its 'daskem_corpus' attribute is an interrupted write)."
            )
        self.location = location
        self.storage_options = storage_options
        self.shape = (int(meta["shape"][0]), int(meta["shape"][1]))
        self.dtype = np.dtype(meta["dtype"])
        self.chunk_rows = int(meta["chunk_rows"])
        self.nnz = int(meta["nnz"])
        self.has_vocabulary = bool(meta.get("vocabulary"))
        self.offsets = np.asarray(self._array("offsets")[:], dtype=np.int64)

    ndim = 2

    def _array(self, name: str, group: zarr.Group | None = None) -> zarr.Array:
        """The array ``name`` of the corpus group (opened again unless ``group`` is given)."""
        if group is None:
            group = zarr.open_group(store=self.location, mode="r", storage_options=self.storage_options)
        node = group[name]
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{name!r} in the corpus at {self.location!r} is a group, not an array.")
        return node

    def __dask_tokenize__(self) -> Any:
        return ("daskem-corpus", self.location, self.shape, self.nnz, self.chunk_rows, self.dtype.str)

    def read_range(self, start: int, stop: int) -> sparse.csr_matrix:
        """Rows ``start:stop`` as CSR, reading only the row chunks they span."""
        n_docs, n_words = self.shape
        try:
            group = zarr.open_group(store=self.location, mode="r", storage_options=self.storage_options)
            starts = np.asarray(self._array("indptr", group)[start:stop], dtype=np.int64)
            if stop % self.chunk_rows == 0 or stop == n_docs:
                end = int(self.offsets[-(-stop // self.chunk_rows)] if stop < n_docs else self.offsets[-1])
            else:
                end = int(np.asarray(self._array("indptr", group)[stop : stop + 1])[0])
            first = int(starts[0]) if starts.size else end
            data = np.asarray(self._array("data", group)[first:end])
            indices = np.asarray(self._array("indices", group)[first:end])
        except Exception as err:
            raise StoreError(
                f"Reading rows {start}:{stop} of the corpus at {self.location!r} failed ({type(err).__name__}: "
                f"{err}): a stored chunk is missing, truncated or corrupt. Restore or rewrite the corpus."
            ) from None
        pointers = np.append(starts, end) - first
        return sparse.csr_matrix((data, indices, pointers), shape=(stop - start, n_words))

    def __getitem__(self, key: Any) -> Any:
        return _read_rows(key, self.shape[0], self.shape[1], self.read_range)

    def vocabulary(self) -> tuple[str, ...] | None:
        """The stored vocabulary, or None."""
        if not self.has_vocabulary:
            return None
        return tuple(str(w) for w in np.asarray(self._array("vocabulary")[:]))


def read_csr_zarr(
    location: str | os.PathLike[str],
    *,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> da.Array:
    """A corpus written by :func:`write_csr_zarr` as a dask array of CSR blocks.

    Parameters
    ----------
    location : str or os.PathLike
        The corpus group (path or fsspec URL).
    chunk_rows : int, optional
        Documents per block (default: the stored row chunks, one task reading each).
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    dask.array.Array
        Shape (n_docs, n_words), known chunks, blocks ``scipy.sparse.csr_matrix`` of the
        stored dtype.
    """
    reader = CorpusRows(_local(os.fspath(location)), storage_options)
    rows = chunk_rows or reader.chunk_rows
    return _dask_of(reader, rows, "corpus-" + _token(reader, rows))


def _token(reader: Any, rows: int) -> str:
    import dask

    return str(dask.base.tokenize(reader, rows))


# -- the UCI bag-of-words format -----------------------------------------------------------


def _open_bytes(location: str, storage_options: dict[str, Any] | None) -> Any:
    compression = "gzip" if location.lower().endswith(".gz") else None
    return fsspec.open(location, mode="rb", compression=compression, **(storage_options or {}))


def _header(f: IO[bytes], location: str) -> tuple[int, int, int, int]:
    """D, W, NNZ and the byte offset where the triples begin."""
    values: list[int] = []
    while len(values) < 3:
        line = f.readline()
        if not line:
            break
        if line.strip():
            try:
                values.append(int(line))
            except ValueError:
                break
    if len(values) < 3:
        raise DataError(
            f"{location!r} does not begin with the three header lines of a UCI bag-of-words file (the numbers "
            "of documents, of words and of nonzero counts)."
        )
    return values[0], values[1], values[2], f.tell()


def _parse_triples(raw: bytes, where: str) -> np.ndarray:
    """``docID wordID count`` lines as an (n, 3) int64 array."""
    if not raw.strip():  # NumPy reads whitespace alone as one zero
        return np.zeros((0, 3), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            values = np.fromstring(raw, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    if values is None or values.size % 3:
        raise DataError(f"{where}: a line is not 'docID wordID count' (three integers).")
    return values.reshape(-1, 3)


def _csr_from_triples(triples: np.ndarray, start: int, stop: int, n_words: int, where: str) -> sparse.csr_matrix:
    """Documents ``start:stop`` (0-based) from their 1-based triples, duplicates summed."""
    docs, words, counts = triples[:, 0] - 1, triples[:, 1] - 1, triples[:, 2]
    if docs.size:
        if docs.min() < start or docs.max() >= stop or np.any(np.diff(docs) < 0):
            raise DataError(
                f"{where}: document ids out of order or outside documents {start + 1}..{stop}; a UCI "
                "bag-of-words file lists its triples sorted by document (sort -n -k1,1 -k2,2 fixes it)."
            )
        if words.min() < 0 or words.max() >= n_words:
            raise DataError(f"{where}: a word id is outside 1..{n_words} (the header's W).")
    matrix = sparse.csr_matrix(
        (counts.astype(np.float64), (docs - start, words)), shape=(stop - start, n_words), dtype=np.float64
    )
    matrix.sum_duplicates()
    return matrix


@dataclass(frozen=True)
class DocwordLayout:
    """Where the row chunks of a UCI docword file lie.

    Attributes
    ----------
    location : str
        The file (path or URL; ``.gz``: gzip'ed).
    shape : (int, int)
        Documents and words (the header's D and W).
    nnz : int
        The header's NNZ.
    chunk_rows : int
        Documents per chunk.
    byte_bounds : tuple of int
        The byte offset (in the decompressed text) of the first line of every chunk, then
        the end of the triples: chunk ``i`` is ``byte_bounds[i]:byte_bounds[i + 1]``.
    """

    location: str
    shape: tuple[int, int]
    nnz: int
    chunk_rows: int
    byte_bounds: tuple[int, ...]


def _first_line_at(f: IO[bytes], pos: int, end: int) -> tuple[int, float]:
    """The first non-blank line starting at or after ``pos``: its offset and document id."""
    f.seek(pos - 1)
    f.readline()
    while True:
        start = f.tell()
        if start >= end:
            return end, float("inf")
        line = f.readline()
        if not line:
            return end, float("inf")
        if line.strip():
            return start, float(line.split(None, 1)[0])


def _bisect_bounds(f: IO[bytes], head: int, end: int, targets: list[int]) -> list[int]:
    """The offset of the first line of document ``t`` or later, for every target (a sorted file)."""
    found = []
    lo_start = head
    for target in targets:
        lo, hi = lo_start, end
        while lo < hi:
            mid = (lo + hi) // 2
            if _first_line_at(f, mid, end)[1] >= target:
                hi = mid
            else:
                lo = mid + 1
        lo_start = _first_line_at(f, lo, end)[0]
        found.append(lo_start)
    return found


def _pieces(f: IO[bytes], base: int, location: str) -> Iterator[tuple[int, bytes, np.ndarray]]:
    """The triples in order, as (offset, whole lines, (n, 3) triples) pieces of about READ_BYTES."""
    carry = b""
    while True:
        chunk = f.read(READ_BYTES)
        text = carry + chunk
        if not chunk:
            text = text.rstrip()
            if not text:
                return
            text += b"\n"
            cut = len(text)
        else:
            cut = text.rfind(b"\n") + 1
        lines, carry = text[:cut], text[cut:]
        if lines:
            where = f"{location!r} (bytes {base}:{base + len(lines)})"
            triples = _parse_triples(lines, where)
            if len(triples) != lines.count(b"\n"):
                raise DataError(f"{where}: blank or malformed lines; every line is 'docID wordID count'.")
            yield base, lines, triples
            base += len(lines)
        if not chunk:
            return


def _scan_bounds(f: IO[bytes], head: int, targets: list[int], location: str) -> tuple[list[int], int, int]:
    """Byte offsets of the first line of every target document, in one sequential pass.

    Also the end of the triples and their number.
    """
    found: list[int] = []
    last, end, count = 0, head, 0
    for base, lines, triples in _pieces(f, head, location):
        docs = triples[:, 0]
        if docs[0] < last or np.any(np.diff(docs) < 0):
            raise DataError(
                f"{location!r} is not sorted by document id near byte {base}: sort it (sort -n -k1,1 -k2,2) "
                "or convert it with daskem.io.corpus.docword_to_zarr."
            )
        last = int(docs[-1])
        starts = None
        while len(found) < len(targets):
            index = int(np.searchsorted(docs, targets[len(found)], side="left"))
            if index == len(docs):
                break
            if starts is None:
                starts = np.concatenate([[0], np.flatnonzero(np.frombuffer(lines, dtype=np.uint8) == 10)[:-1] + 1])
            found.append(base + int(starts[index]))
        end, count = base + len(lines), count + len(triples)
    return found + [end] * (len(targets) - len(found)), end, count


def scan_docword(
    location: str | os.PathLike[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    storage_options: dict[str, Any] | None = None,
) -> DocwordLayout:
    """Find the byte range of every ``chunk_rows`` documents of a UCI docword file.

    A plain file is bisected (a few reads per chunk); a gzip'ed one is read once,
    sequentially, and its triples are counted against the header's NNZ.

    Parameters
    ----------
    location : str or os.PathLike
        ``docword.NAME.txt`` or ``docword.NAME.txt.gz`` (path or fsspec URL).
    chunk_rows : int
        Documents per chunk.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    DocwordLayout
    """
    loc = os.fspath(location)
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be >= 1; got {chunk_rows}.")
    try:
        with _open_bytes(loc, storage_options) as f:
            n_docs, n_words, nnz, head = _header(f, loc)
            targets = [1 + i for i in range(chunk_rows, n_docs, chunk_rows)]
            if loc.lower().endswith(".gz"):
                found, end, count = _scan_bounds(f, head, targets, loc)
                if count != nnz:
                    raise DataError(f"{loc!r} holds {count:,} triples but its header says NNZ = {nnz:,}.")
            else:
                end = f.seek(0, os.SEEK_END)
                found = _bisect_bounds(f, head, end, targets)
    except FileNotFoundError:
        raise DataError(f"No UCI docword file at {loc!r}.") from None
    if n_docs < 1 or n_words < 1:
        raise DataError(f"{loc!r} has D = {n_docs} documents and W = {n_words} words; both must be >= 1.")
    return DocwordLayout(_local(loc), (n_docs, n_words), nnz, chunk_rows, (head, *found, end))


class DocwordRows:
    """A UCI docword file read by row ranges as CSR (float64): picklable, reopened for every read.

    Parameters
    ----------
    layout : DocwordLayout
        From :func:`scan_docword`.
    storage_options : dict, optional
        fsspec options for a URL.
    """

    def __init__(self, layout: DocwordLayout, storage_options: dict[str, Any] | None = None) -> None:
        self.layout = layout
        self.storage_options = storage_options
        self.shape = layout.shape
        self.dtype = np.dtype(np.float64)

    ndim = 2

    def __dask_tokenize__(self) -> Any:
        return ("daskem-docword", self.layout)

    def read_range(self, start: int, stop: int) -> sparse.csr_matrix:
        """Documents ``start:stop`` as CSR, parsing only the byte ranges of their chunks."""
        c = self.layout.chunk_rows
        first, last = start // c, -(-stop // c)
        lo, hi = self.layout.byte_bounds[first], self.layout.byte_bounds[min(last, len(self.layout.byte_bounds) - 1)]
        loc = self.layout.location
        with _open_bytes(loc, self.storage_options) as f:
            f.seek(lo)
            raw = f.read(hi - lo)
        where = f"{loc!r} (documents {first * c + 1}..{min(last * c, self.shape[0])}, bytes {lo}:{hi})"
        rows = _csr_from_triples(
            _parse_triples(raw, where), first * c, min(last * c, self.shape[0]), self.shape[1], where
        )
        return rows[start - first * c : stop - first * c]

    def __getitem__(self, key: Any) -> Any:
        return _read_rows(key, self.shape[0], self.shape[1], self.read_range)


def stored_values(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> int | None:
    """The number of stored (non-zero) values of a corpus, from its metadata alone; None if unknown.

    A Zarr CSR group records it in its attributes, a UCI docword file in its header
    (NNZ); nothing else is read.
    """
    loc = os.fspath(location)
    from daskem.io.formats import detect_format

    if detect_format(loc) == "docword":
        with _open_bytes(loc, storage_options) as f:
            return _header(f, loc)[2]
    meta = corpus_attributes(loc, storage_options)
    return None if meta is None else int(meta["nnz"])


def read_docword(
    location: str | os.PathLike[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    storage_options: dict[str, Any] | None = None,
) -> da.Array:
    """A UCI docword file as a dask array of CSR blocks (float64 counts), one task per chunk.

    Parameters
    ----------
    location : str or os.PathLike
        ``docword.NAME.txt`` or ``docword.NAME.txt.gz`` (path or fsspec URL).
    chunk_rows : int
        Documents per block.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    dask.array.Array
        Shape (D, W), known chunks, blocks ``scipy.sparse.csr_matrix``.
    """
    layout = scan_docword(location, chunk_rows=chunk_rows, storage_options=storage_options)
    reader = DocwordRows(layout, storage_options)
    return _dask_of(reader, chunk_rows, "docword-" + _token(reader, chunk_rows))


def iter_docword(
    location: str | os.PathLike[str],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[sparse.csr_matrix]:
    """The documents of a UCI docword file as CSR blocks of ``chunk_rows`` rows, in one sequential pass.

    Holds one block's triples and one read at a time; gzip'ed files are decompressed once.

    Parameters
    ----------
    location : str or os.PathLike
        ``docword.NAME.txt`` or ``docword.NAME.txt.gz`` (path or fsspec URL).
    chunk_rows : int
        Documents per block (the last block may have fewer).
    storage_options : dict, optional
        fsspec options for a URL.

    Yields
    ------
    scipy.sparse.csr_matrix
        The next ``chunk_rows`` documents (float64 counts, duplicates summed), empty
        documents included.
    """
    loc = os.fspath(location)
    with _open_bytes(loc, storage_options) as f:
        n_docs, n_words, _, head = _header(f, loc)
        done = 0
        pending: list[np.ndarray] = []
        for base, _lines, triples in _pieces(f, head, loc):
            where = f"{loc!r} (bytes from {base})"
            while done < n_docs:
                stop = min(done + chunk_rows, n_docs)
                cut = int(np.searchsorted(triples[:, 0], stop, side="right"))
                if cut == len(triples):
                    pending.append(triples)
                    break
                yield _csr_from_triples(np.concatenate([*pending, triples[:cut]]), done, stop, n_words, where)
                pending, triples, done = [], triples[cut:], stop
            else:
                if len(triples):
                    _csr_from_triples(triples, n_docs, n_docs, n_words, where)  # raises: beyond D
        while done < n_docs:
            stop = min(done + chunk_rows, n_docs)
            rest = np.concatenate(pending) if pending else np.zeros((0, 3), dtype=np.int64)
            yield _csr_from_triples(rest, done, stop, n_words, f"{loc!r} (end)")
            pending, done = [], stop


def vocabulary_path(docword: str) -> str | None:
    """The ``vocab.NAME.txt`` beside ``docword.NAME.txt(.gz)``, if it exists (local files)."""
    folder, name = os.path.split(docword)
    match = re.fullmatch(r"docword\.(.+)\.txt(\.gz)?", name, flags=re.IGNORECASE)
    if match is None or "://" in docword:
        return None
    for candidate in (f"vocab.{match.group(1)}.txt", f"vocab.{match.group(1)}.txt.gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def read_vocabulary(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The words of a vocabulary file, one a line (UTF-8; ``.gz``: gzip'ed); trailing blank lines dropped."""
    loc = os.fspath(location)
    try:
        with _open_bytes(loc, storage_options) as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"No vocabulary file at {loc!r}.") from None
    return tuple(line.rstrip("\r") for line in text.rstrip("\r\n").split("\n")) if text.strip() else ()


def docword_to_zarr(
    docword: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    vocabulary: str | os.PathLike[str] | Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    storage_options: dict[str, Any] | None = None,
) -> tuple[int, int]:
    """Convert a UCI docword file (and its vocabulary) to the Zarr CSR layout, streaming.

    Parameters
    ----------
    docword : str or os.PathLike
        ``docword.NAME.txt`` or ``docword.NAME.txt.gz``, read once, sequentially.
    out : str or os.PathLike
        The corpus group to write; nothing may be there.
    vocabulary : str, os.PathLike or sequence of str, optional
        A vocabulary file (one word a line) or the words. Default: ``vocab.NAME.txt``
        beside ``docword``, if there.
    chunk_rows : int
        Documents per row chunk.
    storage_options : dict, optional
        fsspec options for URLs (both locations).

    Returns
    -------
    (int, int)
        The shape written: documents, words.
    """
    loc = os.fspath(docword)
    refuse_existing(os.fspath(out), storage_options)
    words = resolve_vocabulary(vocabulary, loc, storage_options)
    blocks = iter_docword(loc, chunk_rows=chunk_rows, storage_options=storage_options)
    return write_csr_zarr(out, blocks, chunk_rows=chunk_rows, vocabulary=words, storage_options=storage_options)


def resolve_vocabulary(
    vocabulary: str | os.PathLike[str] | Sequence[str] | None,
    docword: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[str, ...] | None:
    """The words given (a file or a sequence), else those of the vocab file beside ``docword``, else None."""
    if isinstance(vocabulary, str | os.PathLike):
        return read_vocabulary(vocabulary, storage_options)
    if vocabulary is not None:
        return tuple(str(w) for w in vocabulary)
    found = vocabulary_path(docword) if docword is not None else None
    return None if found is None else read_vocabulary(found)


def source_vocabulary(
    location: str, options: dict[str, Any] | None = None, storage_options: dict[str, Any] | None = None
) -> tuple[str, ...] | None:
    """The vocabulary of the data recorded at ``location`` with reading ``options``, without reading the data.

    The ``vocabulary`` option (a file) first; else a corpus group's stored vocabulary or
    the ``vocab.NAME.txt`` beside a docword file; else None.
    """
    given = (options or {}).get("vocabulary")
    if given is not None:
        return resolve_vocabulary(given, None, storage_options)
    from daskem.io.formats import detect_format

    if detect_format(location) == "docword":
        return resolve_vocabulary(None, location, storage_options)
    if corpus_attributes(location, storage_options) is not None:
        return CorpusRows(location, storage_options).vocabulary()
    return None
