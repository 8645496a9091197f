"""The rows of sequence models (HMMs): the start-flag column, the block layout, the symbols.

Sequences are rows of one array; their lengths are part of the data's description
(``DataSource.lengths``). :func:`sequence_source` adds the column of start flags the
HMM models read and chooses the blocks: whole sequences per block where every sequence
fits in one, else the source's blocks with messages carried between them.
:func:`largest_value` reads the largest symbol of a categorical HMM's data through the
fit's session (one counted pass).
"""

from __future__ import annotations

from dataclasses import replace

import dask
import dask.array as da
import numpy as np

from daskem.em.session import FitSession
from daskem.io.sources import DataSource


def _aligned_chunks(lengths: np.ndarray, max_rows: int) -> tuple[int, ...]:
    """Blocks of whole sequences, each at most ``max_rows`` rows (every sequence fits one)."""
    ends = np.cumsum(lengths)
    chunks = []
    start = 0
    total = int(ends[-1]) if ends.size else 0
    while start < total:
        end = int(ends[np.searchsorted(ends, start + max_rows, side="right") - 1])
        chunks.append(end - start)
        start = end
    return tuple(chunks) or (0,)


def _add_start_flags(block: np.ndarray, local_starts: np.ndarray) -> np.ndarray:
    flags = np.zeros((block.shape[0], 1), dtype=block.dtype)
    flags[local_starts, 0] = 1
    return np.concatenate([block, flags], axis=1)


def sequence_source(source: DataSource) -> tuple[DataSource, bool]:
    """The rows with a start-flag column, and whether blocks split sequences.

    The sequences are ``source.lengths`` (one sequence if None). When every sequence
    fits in the source's largest block, the rows are re-chunked into blocks of whole
    sequences; otherwise the source's blocks are kept and the model must carry messages
    between them. The flags are one small task per block (no copy of the data).

    Parameters
    ----------
    source : DataSource
        The rows of the sequences, with their ``lengths``.

    Returns
    -------
    flagged : DataSource
        The rows with one more, last column: 1 where a sequence begins.
    carry : bool
        Whether a sequence is split across blocks.
    """
    sizes = source.lengths if source.lengths is not None else np.array([source.n_samples], dtype=np.int64)
    array = source.array
    max_rows = max(max(array.chunks[0]), 1)
    carry = bool(sizes.size and int(sizes.max()) > max_rows)
    if not carry and source.n_samples:
        array = array.rechunk({0: _aligned_chunks(sizes, max_rows)})
    starts = np.cumsum(np.concatenate([[0], sizes[:-1]]))[sizes > 0] if sizes.size else np.zeros(0, np.int64)
    d = source.n_features
    # The blocks as delayed objects, not array.blocks[i]: a dask array passed to a delayed
    # function is finalized under a random key, so every call would give the same piece
    # key another dependency (distributed: "Detected different `run_spec`").
    blocks = array.to_delayed().ravel()
    pieces, lo = [], 0
    for i, rows in enumerate(array.chunks[0]):
        local = starts[(starts >= lo) & (starts < lo + rows)] - lo
        piece = dask.delayed(_add_start_flags, pure=True)(blocks[i], local)
        pieces.append(da.from_delayed(piece, shape=(rows, d + 1), dtype=array.dtype))
        lo += rows
    flagged = da.concatenate(pieces, axis=0) if pieces else da.zeros((0, d + 1), dtype=array.dtype)
    return replace(source, array=flagged, lengths=sizes), carry


def _largest(block: np.ndarray, column: int) -> float:
    values = block[:, column]
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else -np.inf


def largest_value(session: FitSession, column: int = 0) -> float:
    """The largest finite value of one column of the session's rows: one pass, counted.

    Non-finite values are skipped (the E-step reports them); ``-inf`` when no row has a
    finite value.

    Parameters
    ----------
    session : FitSession
        The fit's session (its blocks, persisted or streamed as it says).
    column : int
        The column.

    Returns
    -------
    float
    """
    parts = [dask.delayed(_largest, pure=True)(block, column) for block in session.blocks()]
    return float(max(session.compute(*parts), default=-np.inf))
