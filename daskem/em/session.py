"""One fit's access to its data: :class:`FitSession`.

A session owns everything about reading the data that a fit (or a prediction) needs,
decided or built once:

* the row blocks (``to_delayed()`` once; persisted once when the cache policy says so,
  see :func:`should_cache`), and their row counts;
* the client (the current ``distributed.Client``, or Dask's local threads), the
  reduction fan-in ``split_every`` and the memory and threads of the scheduler;
* how a pass runs: one ``dask.compute``, run again when its tasks were lost with their
  workers (``KilledWorker``), with BLAS pinned to one thread (one threadpoolctl
  controller per process, :func:`single_threaded_blas`);
* the pass counter: every read of the data goes through the session — statistics passes
  (:meth:`FitSession.stats`), the message pass of models whose blocks depend on their
  neighbours (:meth:`FitSession.messages`), per-block and per-row maps
  (:meth:`FitSession.block_results`, :meth:`FitSession.map_rows`) and row samples
  (:meth:`FitSession.rows`) — and each pass is counted once (and reported to
  :mod:`daskem.em.progress`).

Initialisation, restarts, the EM iterations, final passes and predictions all take the
session's blocks, so the data are read or uploaded as the policy says and no two graphs
give one block key two different tasks (distributed's "Detected different `run_spec`").
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import logging
import operator
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
import psutil
import scipy.sparse
import threadpoolctl
from dask.delayed import Delayed

from daskem.em.graph import (
    block_e_step,
    block_tasks,
    leading_columns,
    message_stats_graph,
    rows_array,
    stats_graph,
    take_rows,
)
from daskem.em.progress import count_pass
from daskem.errors import DataError
from daskem.io.sources import MANY_BLOCKS, MIN_BLOCK_ROWS, ChunkSizeWarning, DataSource, as_source, target_block_rows
from daskem.models.base import carries_messages
from daskem.worker_memory import watch_worker_memory

logger = logging.getLogger("daskem")


def current_client() -> Any | None:
    """The current ``distributed.Client``, or ``None`` when Dask's local scheduler is used."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def resolve_split_every(split_every: int | None) -> int:
    """The reduction fan-in: the argument, else ``dask.config`` ``split_every``, else 8."""
    value = split_every if split_every is not None else dask.config.get("split_every", None) or 8
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 2:
        raise ValueError(f"split_every must be an int >= 2; got {value!r}.")
    return int(value)


#: Cache the data when they take at most this share of the memory available to hold them.
CACHE_FRACTION = 0.5

Cache = str | bool


def check_cache(cache: Any) -> Cache:
    """``cache`` itself if it is ``"auto"``, True or False; else ValueError."""
    if cache is not True and cache is not False and cache != "auto":
        raise ValueError(f"cache must be 'auto', True or False; got {cache!r}.")
    return bool(cache) if cache is True or cache is False else "auto"


@dataclass(frozen=True)
class ComputeResources:
    """What the current scheduler has: memory to hold data and threads running tasks.

    Attributes
    ----------
    memory : float
        Bytes: the sum of the workers' memory limits on a distributed cluster (their
        total memory where a worker has no limit), else this machine's available memory.
    threads : int
        Task threads in total.
    thread_memory : float
        The smallest memory a single task thread can count on.
    """

    memory: float
    threads: int
    thread_memory: float


def compute_resources() -> ComputeResources:
    """Memory and threads of the current scheduler (see :class:`ComputeResources`)."""
    client = current_client()
    if client is None:
        available = float(psutil.virtual_memory().available)
        threads = os.cpu_count() or 1
        return ComputeResources(available, threads, available / threads)
    workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
    total = float(psutil.virtual_memory().total)
    limits = [float(w.get("memory_limit") or total) for w in workers]
    per_thread = [lim / max(1, int(w.get("nthreads", 1))) for lim, w in zip(limits, workers, strict=True)]
    return ComputeResources(
        sum(limits), sum(int(w.get("nthreads", 1)) for w in workers), min(per_thread, default=total)
    )


def should_cache(source: DataSource, cache: Cache, resources: ComputeResources | None = None) -> bool:
    """Whether to persist the data once instead of reading them from their store every pass.

    ``cache="auto"``: in-memory NumPy data are sent to a distributed cluster once (and
    need nothing on local threads); other data are cached when they take at most
    :data:`CACHE_FRACTION` of the memory available (:func:`compute_resources`).
    """
    cache = check_cache(cache)
    if cache != "auto":
        return bool(cache)
    if source.kind == "numpy":
        return current_client() is not None
    resources = resources or compute_resources()
    return bool(source.stored_nbytes <= CACHE_FRACTION * resources.memory)


def _many_small_blocks(source: DataSource) -> bool:
    rows = sorted(c for c in source.array.chunks[0] if c) or [0]
    return rows[len(rows) // 2] < MIN_BLOCK_ROWS and len(rows) > MANY_BLOCKS


def check_chunking(source: DataSource, resources: ComputeResources, name: str = "X", cached: bool = False) -> None:
    """Warn (:class:`ChunkSizeWarning`) when blocks are too small or too large, with the fix.

    Small blocks of cached data are not warned about: a session merges them.
    """
    rows = sorted(c for c in source.array.chunks[0] if c) or [0]
    median = rows[len(rows) // 2]
    # The E-step works in float64 or float32: budget float64 (sparse rows: their stored values).
    row_bytes = source.largest_block_nbytes() / max(rows[-1], 1)
    suggest = target_block_rows(source.n_samples, source.n_features)
    fix = (
        f"Use about {suggest:,} rows per block: {name}.rechunk({{0: {suggest}}}), or daskem fit --chunk-rows {suggest}."
    )
    if not cached and _many_small_blocks(source) and len(rows) > 4 * resources.threads:
        warnings.warn(
            f"{name} has {len(rows):,} blocks of about {median:,} rows: Dask's overhead per task (~1 ms) is a "
            f"large share of each block's E-step. {fix}",
            ChunkSizeWarning,
            stacklevel=4,
        )
    # A task holds its block, the float64 tile buffers and its statistics: keep the block
    # well inside the memory of one task thread.
    if row_bytes != float("inf") and rows[-1] * row_bytes > resources.thread_memory / 4:
        limit = max(int(resources.thread_memory / 8 // row_bytes), 1)
        warnings.warn(
            f"{name} has blocks of up to {rows[-1]:,} rows ({rows[-1] * row_bytes / 2**20:.0f} MiB as float64) but "
            f"a task thread has about {resources.thread_memory / 2**20:.0f} MiB: workers may spill or be killed. "
            f"Use at most {limit:,} rows per block: {name}.rechunk({{0: {limit}}}), or "
            f"daskem fit --chunk-rows {limit}.",
            ChunkSizeWarning,
            stacklevel=4,
        )


@functools.cache
def blas_controller() -> threadpoolctl.ThreadpoolController:
    """The process's threadpoolctl controller, made on first use (a scan of the loaded libraries).

    Made once: a new controller scans every loaded library again, which costs more than
    a small pass. The BLAS libraries daskem's models use (NumPy's and SciPy's) are loaded
    with the models, before any pass runs.
    """
    return threadpoolctl.ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Pin BLAS to one thread in this process while a fit or a pass runs.

    Dask's local threads then run one single-threaded BLAS call each (no
    oversubscription), and the driver's small d x d factorisations skip the thread
    start-up that dominates them. Distributed workers already start with
    ``OPENBLAS_NUM_THREADS=1`` and friends.
    """
    if _BLAS_PINNED.get():  # already pinned here (a pass inside a fit): nothing to change
        yield
        return
    token = _BLAS_PINNED.set(True)
    try:
        with blas_controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        _BLAS_PINNED.reset(token)


#: Whether :func:`single_threaded_blas` holds the pinning in this context (it nests for free).
_BLAS_PINNED: contextvars.ContextVar[bool] = contextvars.ContextVar("daskem_blas_pinned", default=False)


#: Times a pass is attempted when its tasks are lost with their workers (KilledWorker).
PASS_ATTEMPTS = 3


def weighted_rows(source: DataSource) -> DataSource:
    """The rows of ``source`` with its checked weights (``source.weights``) as one more, last column.

    ``source`` itself when it has no weights. The weights are checked in one pass over
    them alone (1 / n_features of the data): finite, non-negative, with a positive sum.
    The result keeps the source's location and reading options (which reopen the same
    weights), so a weighted fit can be resumed from its checkpoint.

    Raises
    ------
    DataError
        Weights negative, non-finite or all zero.
    """
    weights = source.weights
    if weights is None:
        return source
    finite, low, total = da.compute(da.isfinite(weights).all(), weights.min(), weights.sum())
    if not finite or low < 0.0:
        raise DataError(
            f"sample_weight must be finite and non-negative; got minimum {float(low)!r}"
            f"{'' if finite else ' and NaN or infinite values'}. Fix or drop those weights."
        )
    if total <= 0.0:
        raise DataError("sample_weight must have a positive sum; got all zeros. Give some rows positive weight.")
    if source.sparse:
        # Sparse blocks keep their weights as a last (dense-valued) sparse column.
        rows = da.map_blocks(
            _sparse_with_weights,
            source.array,
            weights[:, None],
            dtype=np.float64,
            chunks=(source.array.chunks[0], (source.n_features + 1,)),
            meta=_sparse_with_weights(source.array._meta, np.zeros((0, 1))),
        )
        return replace(source, array=rows, weights=None)
    rows = da.concatenate([source.array.astype(np.float64), weights[:, None]], axis=1).rechunk({1: -1})
    return replace(source, array=rows, weights=None)


def _sparse_with_weights(block: Any, weights: np.ndarray) -> Any:
    """A CSR block with its rows' weights as one more, last column (float64, same container kind)."""
    stacked = scipy.sparse.hstack([block, weights.astype(np.float64)], format="csr", dtype=np.float64)
    return type(block)(stacked) if type(block) is not type(stacked) else stacked


class MissingRowsWarning(UserWarning):
    """Rows with every feature missing (NaN), skipped by a fit that marginalises missing values."""


@dataclass(frozen=True)
class MissingSummary:
    """Where the missing (NaN) entries of a session's data are (:meth:`FitSession.missing_summary`).

    Attributes
    ----------
    n_samples : int
        Rows.
    n_empty : int
        Rows with every feature missing.
    observed : ndarray of shape (n_features,)
        Rows in which each feature is observed (not NaN).
    sums : ndarray of shape (n_features,)
        The sum of each feature's observed values.
    block_complete : tuple of int
        Rows without a missing entry, per block.
    """

    n_samples: int
    n_empty: int
    observed: np.ndarray
    sums: np.ndarray
    block_complete: tuple[int, ...]

    @property
    def n_complete(self) -> int:
        """Rows without a missing entry."""
        return sum(self.block_complete)

    @property
    def means(self) -> np.ndarray:
        """Each feature's mean over the rows that observe it."""
        return np.asarray(self.sums / np.maximum(self.observed, 1), dtype=np.float64)


def _missing_counts(block: Any) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(complete rows, rows with every entry missing, observed count and sum per feature) of a block."""
    block = np.asarray(block)
    mask = np.isnan(block)
    per_row = mask.sum(axis=1)
    return (
        int(np.count_nonzero(per_row == 0)),
        int(np.count_nonzero(per_row == block.shape[1])) if block.shape[1] else 0,
        block.shape[0] - mask.sum(axis=0),
        np.where(mask, 0.0, block).sum(axis=0, dtype=np.float64),
    )


def _mean_filled_block(block: Any, means: np.ndarray) -> Any:
    """A block with every NaN entry replaced by its feature's mean."""
    block = np.asarray(block)
    return np.where(np.isnan(block), means.astype(block.dtype), block)


def _complete_block(block: Any) -> Any:
    """The rows of a block without NaN entries."""
    block = np.asarray(block)
    return block[~np.isnan(block).any(axis=1)]


def _fold_step(scan: Any, method: str, state: Any, block: Any) -> Any:
    """One step of :meth:`FitSession.fold`."""
    return getattr(scan, method)(state, block)


def _as_list(*blocks: Any) -> list[Any]:
    return list(blocks)


@dataclass
class _Counter:
    passes: int = 0
    blocks: int = 0  # blocks read by per-block passes since the last whole pass (block_stats)


class FitSession:
    """One fit's (or one prediction's) access to its data; see the module docstring.

    Parameters
    ----------
    data : array-like, dask array, zarr.Array, str or DataSource
        The data (see :func:`daskem.io.as_source`).
    cache : {"auto", True, False}
        Persist the data once in (cluster) memory, or stream them from their source on
        every pass; ``"auto"`` caches what fits comfortably (:func:`should_cache`).
    split_every : int, optional
        Fan-in of the reduction tree (default: ``dask.config`` ``split_every``, else 8).

    Attributes
    ----------
    source : DataSource
        The data.
    cache : {"auto", True, False}
        The cache policy.
    split_every : int
        The reduction fan-in.
    client : distributed.Client or None
        The client current when the session was made (None: Dask's local threads).
    """

    def __init__(self, data: Any, *, cache: Cache = "auto", split_every: int | None = None) -> None:
        self.source = as_source(data)
        self.cache = check_cache(cache)
        self.split_every = resolve_split_every(split_every)
        self.client = current_client()
        self._counter = _Counter()
        self._resources: ComputeResources | None = None
        self._cached: bool | None = None
        self._blocks: list[Delayed] | None = None
        self._group_leaves = False
        self._groups: list[Delayed] | None = None
        self._rows: tuple[int, ...] = ()
        self._chunking_checked = False
        self._missing: MissingSummary | None = None
        self._driver_block: tuple[Delayed, Any] | None = None  # (block, its value): see driver_block
        self._own_blocks: list[Delayed] | None = None  # what _make_blocks made (views have others)

    def __repr__(self) -> str:
        where = self.source.location or self.source.kind
        return f"FitSession({where!r}, cache={self.cache!r}, split_every={self.split_every}, passes={self.passes})"

    # -- decisions, made once ----------------------------------------------------------------

    @property
    def resources(self) -> ComputeResources:
        """Memory and threads of the scheduler (:func:`compute_resources`, asked once)."""
        if self._resources is None:
            self._resources = compute_resources()
        return self._resources

    @property
    def cached(self) -> bool:
        """Whether the blocks are persisted once (:func:`should_cache`, decided once)."""
        if self._cached is None:
            self._cached = should_cache(self.source, self.cache, self.resources)
        return self._cached

    @property
    def in_memory(self) -> bool:
        """Whether the data were given as NumPy (per-row results are then NumPy, not lazy)."""
        return self.source.kind == "numpy"

    @property
    def passes(self) -> int:
        """Passes over the data made so far (with those of a resumed fit, :meth:`resume_from`)."""
        return self._counter.passes

    def resume_from(self, passes: int) -> None:
        """Continue the count from a checkpointed fit that had made ``passes`` passes."""
        self._counter.passes = max(self._counter.passes, int(passes))

    def leaf_groups(self) -> list[Any] | None:
        """The leaf groups a pass runs as one task each, or None for a task per block.

        When the blocks are in memory (persisted, or NumPy on local threads) and there are
        at least as many leaf groups (``split_every`` consecutive blocks) as threads, a
        group's E-steps and combine run as one task: fewer tasks, the same bits
        (:func:`daskem.em.graph.stats_graph`). On a cluster each group is persisted as one
        value, so it lives on one worker and its task moves no data.
        """
        blocks = self.blocks()
        if not self._group_leaves:
            return None
        if self._groups is not None:
            return self._groups
        every = self.split_every
        return [blocks[i : i + every] for i in range(0, len(blocks), every)]

    def driver_block(self) -> Any:
        """The one block of one-block NumPy data on local threads, as a value; else None.

        Such a pass runs its one task on the driver (:meth:`stats`). The value is computed
        once per block list (a view of this session, :meth:`leading_columns` and the like,
        has its own blocks).
        """
        if not (self.in_memory and self.client is None):
            return None
        memory = self.source.memory
        if memory is not None and memory[0] is self.source.array and self._blocks is self._own_blocks:
            return memory[1]  # the rows as given (as_source(..., one_block=True)): no compute
        blocks = self.blocks()
        if len(blocks) != 1:
            return None
        if self._driver_block is None or self._driver_block[0] is not blocks[0]:
            # One task's value: the synchronous scheduler skips the thread pool (~2 ms).
            self._driver_block = (blocks[0], dask.compute(blocks[0], scheduler="sync")[0])
        return self._driver_block[1]

    def check_chunking(self, name: str = "X") -> None:
        """Warn once about blocks too small or too large for a fit (:func:`check_chunking`)."""
        if not self._chunking_checked:
            self._chunking_checked = True
            check_chunking(self.source, self.resources, name, self.cached)

    # -- the blocks --------------------------------------------------------------------------

    def blocks(self) -> list[Delayed]:
        """The row blocks as delayed objects, one per chunk: built, and persisted, once.

        Streamed data are read from their store on every pass, so worker memory is bounded
        by the blocks in flight. Cached data in many small blocks are merged into blocks of
        ~16 MiB before they are persisted, so each pass runs a few tasks instead of one per
        tiny block. In-memory NumPy data on local threads are used as they are.
        """
        if self._blocks is None:
            self._blocks = self._own_blocks = self._make_blocks()
        return self._blocks

    @property
    def block_rows(self) -> tuple[int, ...]:
        """Rows of every block of :meth:`blocks`."""
        self.blocks()
        return self._rows

    def _make_blocks(self) -> list[Delayed]:
        source, cached = self.source, self.cached
        array = source.array
        if cached and _many_small_blocks(source):
            array = array.rechunk({0: target_block_rows(source.n_samples, source.n_features)})
        self._rows = tuple(int(c) for c in array.chunks[0])
        n_groups = -(-len(self._rows) // self.split_every)
        resident = cached or (self.in_memory and self.client is None)
        self._group_leaves = resident and n_groups >= self.resources.threads
        blocks = list(array.to_delayed().ravel())
        logger.info(
            "data %s (%.3g GiB, %d blocks): %s (memory available to hold them: %.3g GiB)",
            source.location or source.kind,
            source.array.nbytes / 2**30,
            len(blocks),
            "cached once" if cached else "streamed from the source on every pass",
            self.resources.memory / 2**30,
        )
        if not cached or (self.in_memory and self.client is None):
            return blocks
        if self.client is None:
            return list(dask.persist(*blocks))
        # Persist the blocks, not the array: a persisted array's to_delayed() drops its
        # futures, so the data would be released ("lost dependencies") on return. Grouped
        # leaves (leaf_groups) are persisted a group as one value, so a group lives on one
        # worker; its blocks are then items of it.
        with warnings.catch_warnings():
            # The one-time upload of in-memory data is the point here, not a mistake.
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            if not self._group_leaves:
                return list(self.client.persist(blocks))
            every = self.split_every
            groups = [dask.delayed(_as_list, pure=True)(*blocks[i : i + every]) for i in range(0, len(blocks), every)]
            self._groups = list(self.client.persist(groups))
        return [
            dask.delayed(operator.getitem, pure=True)(group, j)
            for group, i in zip(self._groups, range(0, len(blocks), every), strict=True)
            for j in range(len(blocks[i : i + every]))
        ]

    def missing_summary(self, name: str = "X") -> MissingSummary:
        """Where the data's NaN entries are, per block and per feature: one pass, made once.

        For fits that marginalise missing values (``missing="marginalize"``). Warns
        (:class:`MissingRowsWarning`) when rows have every feature missing (the E-steps
        skip them) and raises :class:`DataError` naming the feature when a feature is
        missing in every row (nothing can be estimated about it).
        """
        if self._missing is None:
            parts = self.compute(*[dask.delayed(_missing_counts, pure=True)(b) for b in self.blocks()])
            observed = np.sum([p[2] for p in parts], axis=0)
            summary = MissingSummary(
                n_samples=self.source.n_samples,
                n_empty=int(sum(p[1] for p in parts)),
                observed=observed,
                sums=np.sum([p[3] for p in parts], axis=0),
                block_complete=tuple(int(p[0]) for p in parts),
            )
            never = np.flatnonzero(observed == 0)
            if never.size:
                raise DataError(
                    f"Feature {int(never[0])} of {name} (column {int(never[0])}, counting from 0) is missing (NaN) in "
                    f"every one of its {summary.n_samples} rows"
                    + (f", as are features {never[1:].tolist()}" if never.size > 1 else "")
                    + ": nothing about it can be estimated. Drop the column(s) before fitting."
                )
            if summary.n_empty:
                warnings.warn(
                    f"{name} has {summary.n_empty} row(s) with every feature missing (NaN): they carry no information "
                    "about the model and are skipped.",
                    MissingRowsWarning,
                    stacklevel=3,
                )
            self._missing = summary
        return self._missing

    def complete_rows(self) -> FitSession:
        """A session over the rows of this one's data that have no missing (NaN) entry.

        Initialisers that need whole rows (k-means||, k-means++, random starts) read it
        when a fit marginalises missing values. It reads this session's blocks (each
        filtered by one small task), counts its passes as this session's, and knows its
        block sizes from :meth:`missing_summary` (one pass, made once).

        Raises
        ------
        DataError
            No row of the data is complete.
        """
        summary = self.missing_summary()
        rows = summary.block_complete
        if sum(rows) == 0:
            raise DataError(
                f"Every one of the {summary.n_samples} rows of X has a missing (NaN) entry, and the initialisation "
                "needs some complete rows. Give the initial parameters (means_init with weights_init and "
                "precisions_init), or fit on data with some complete rows."
            )
        source = self.source
        parts = [
            da.from_delayed(
                dask.delayed(_complete_block, pure=True)(b), (r, source.n_features), dtype=source.array.dtype
            )
            for b, r in zip(self.blocks(), rows, strict=True)
        ]
        view = copy.copy(self)  # the same counter, client, resources and cache decision
        view.source = dataclasses.replace(source, array=da.concatenate(parts, axis=0))
        view._blocks, view._rows, view._groups = [p.to_delayed()[0, 0] for p in parts], rows, None
        view._chunking_checked = True
        view._missing = None
        return view

    def mean_filled_rows(self) -> FitSession:
        """A session over this one's rows with every NaN entry replaced by its feature's mean.

        The observed means come from :meth:`missing_summary` (one pass, made once); each
        block is filled by one small task, and passes count as this session's.
        """
        means = self.missing_summary().means
        view = copy.copy(self)  # the same counter, client, resources and cache decision
        filled = [dask.delayed(_mean_filled_block, pure=True)(b, means) for b in self.blocks()]
        view._blocks, view._groups, view._missing = filled, None, None
        view._chunking_checked = True
        return view

    def leading_columns(self, count: int) -> FitSession:
        """A session over the first ``count`` columns of this one's data.

        It reads this session's blocks (each sliced by one small task, so the data are
        persisted or streamed once, as this session says) and counts its passes as this
        session's (an HMM's initialisation reads its data without the start flags).
        """
        blocks, rows = self.blocks(), self.block_rows
        view = copy.copy(self)  # the same counter, client, resources and cache decision
        view.source = dataclasses.replace(self.source, array=self.source.array[:, :count])
        view._blocks, view._rows, view._groups = leading_columns(blocks, count), rows, None
        view._chunking_checked = True
        return view

    # -- passes ------------------------------------------------------------------------------

    def _count(self) -> None:
        self._counter.passes += 1
        count_pass()

    def _run(self, graphs: Sequence[Any]) -> tuple[Any, ...]:
        """``dask.compute`` of ``graphs`` with BLAS pinned, run again if its tasks were lost.

        On a distributed cluster the pass is watched (:func:`daskem.worker_memory.watch_worker_memory`,
        one watch for the whole fit when the caller watches already, as the ``daskem`` command
        does): workers paused for memory or restarted in a loop end it with a
        :class:`~daskem.errors.WorkerMemoryError` naming the limit to use, never a silent hang.
        """
        with single_threaded_blas(), watch_worker_memory(self.client):
            for attempt in range(PASS_ATTEMPTS):
                try:
                    return tuple(dask.compute(*graphs))
                except Exception as err:
                    # A task killed with too many workers (heavy worker churn): the pass is
                    # a pure function of its inputs, so running it again gives the same result.
                    if type(err).__name__ != "KilledWorker" or attempt == PASS_ATTEMPTS - 1:
                        raise
                    logger.warning("pass failed (%s); running it again (attempt %d)", err, attempt + 2)
        raise AssertionError("unreachable")  # pragma: no cover

    def compute(self, *graphs: Any) -> tuple[Any, ...]:
        """Compute graphs built on this session's blocks: one pass over the data, counted."""
        out = self._run(graphs)
        self._count()
        return out

    def stats(
        self,
        model: Any,
        params: Any,
        block_fn: Callable[..., Any] | None = None,
        block_args: Sequence[Any] | None = None,
    ) -> Any:
        """The total statistics of one pass (see :func:`daskem.em.graph.stats_graph`).

        A model whose blocks depend on their neighbours
        (:class:`daskem.models.base.MessagePassing`) first takes its messages in a pass of
        its own (:meth:`messages`): two passes.
        """
        if self.driver_block() is not None and not carries_messages(model):
            # One in-memory block on local threads: its E-step runs here, as its one task
            # would (:meth:`block_stats`; the same bits). Dask's graph machinery costs
            # ~1.5 ms a pass, more than the E-step of a small block.
            return self.block_stats(model, params, None, block_fn, block_args)[0]
        blocks, groups = self.blocks(), self.leaf_groups()
        if block_fn is None and carries_messages(model):
            messages = self.messages(model, params)
            top = message_stats_graph(model, params, blocks, self.split_every, messages, groups, root=False)
        else:
            top = stats_graph(model, params, blocks, self.split_every, block_fn, block_args, groups, root=False)
        # The root's combine here, as its task would do it: the same bits, a task fewer.
        return functools.reduce(model.combine, self.compute(*top))

    def block_stats(
        self,
        model: Any,
        params: Any,
        indices: Sequence[int] | None = None,
        block_fn: Callable[..., Any] | None = None,
        block_args: Sequence[Any] | None = None,
    ) -> list[Any]:
        """The statistics of each block ``indices`` (default: every block), computed.

        One task per block (``block_fn(model, params, block, *block_args[i])``, default
        the E-step), in one compute; the blocks read count towards the passes: every
        ``len(blocks)`` blocks read make one pass (the incremental and online schedules,
        :mod:`daskem.em.schedules`, read a few blocks per step).
        """
        fn = block_fn or block_e_step
        block = self.driver_block()
        if block is not None and not carries_messages(model):
            with single_threaded_blas():  # the one task's bits, here (BLAS pinned as in a task)
                out = [fn(model, params, block, *(tuple(block_args[0]) if block_args else ()))]
            self._count()
            return out
        blocks = self.blocks()
        chosen = list(range(len(blocks))) if indices is None else [int(i) for i in indices]
        extra = [tuple(block_args[i]) if block_args else () for i in chosen]
        model_key = dask.delayed(model, pure=True, traverse=False)
        params_key = dask.delayed(params, pure=True, traverse=False)
        tasks = [
            dask.delayed(fn, pure=True)(model_key, params_key, blocks[i], *a)
            for i, a in zip(chosen, extra, strict=True)
        ]
        out = list(self._run(tasks))
        self._counter.blocks += len(chosen)
        while self._counter.blocks >= len(blocks):
            self._counter.blocks -= len(blocks)
            self._count()
        return out

    def block_results(self, model: Any, method: str, params: Any, messages: Sequence[Any] | None = None) -> list[Any]:
        """``model.<method>(params, block[, message])`` of every block, computed: one pass."""
        block = self.driver_block()
        if block is not None and messages is None:
            # One in-memory block on local threads: here, as its one task would (see stats).
            with single_threaded_blas():
                out = [getattr(model, method)(params, block)]
            self._count()
            return out
        return list(self.compute(*block_tasks(model, method, params, self.blocks(), messages)))

    def messages(self, model: Any, params: Any) -> list[Any]:
        """The messages of a model whose blocks depend on their neighbours: one pass.

        Every block is summarised in parallel (``model.summarize``); the driver chains the
        summaries into one message per block (``model.messages``), which the block's
        E-step then takes (see :func:`daskem.models.base.block_stats`).
        """
        return list(model.messages(params, self.block_results(model, "summarize", params)))

    def map_rows(
        self,
        model: Any,
        method: str,
        params: Any,
        *,
        dtype: Any,
        columns: int | None = None,
        messages: Sequence[Any] | None = None,
        item: int | None = None,
        check_finite: bool = True,
    ) -> Any:
        """``model.<method>(params, block[, message])`` of every block, one result per row.

        Parameters
        ----------
        model : Model
            The model.
        method : str
            A per-block method returning one value per row (``columns=None``) or a
            ``(rows, columns)`` array; or a tuple whose element ``item`` is that.
        params : Params
            Parameters.
        dtype : numpy dtype
            Output dtype.
        columns : int, optional
            Output columns, if the result is 2-D.
        messages : sequence, optional
            One message per block.
        item : int, optional
            The element of the method's tuple that holds the rows.
        check_finite : bool
            Refuse blocks holding NaN or infinite values (the model does not check them).

        Returns
        -------
        ndarray or dask.array.Array
            NumPy for in-memory data (computed now: one pass), else a lazy dask array
            chunked like the blocks (no pass now).
        """
        parts = block_tasks(model, method, params, self.blocks(), messages, check_finite)
        rows = rows_array(parts, self.block_rows, dtype, columns, item)
        return self.compute(rows)[0] if self.in_memory else rows

    def mean_rows(self, model: Any, method: str, params: Any) -> float:
        """The mean over all rows of :meth:`map_rows` ``(model, method, params)``: one pass."""
        rows = self.map_rows(model, method, params, dtype=np.float64)
        return float(rows.mean() if self.in_memory else self.compute(rows.mean())[0])

    def fold(self, scan: Any, method: str, state: Any) -> Any:
        """``state = scan.<method>(state, block)`` over the blocks in order: one pass, counted.

        A sequential scan (online learning's mini-batches, each update starting from the
        previous one's result). Each block is one compute of one task taking the block and
        the previous state, run where the block is (only the states move), so no block is
        read before its turn: streamed data never pile up in memory. Counted as one pass.

        Parameters
        ----------
        scan : object
            Has the method ``method(state, block) -> state`` (pure: a function of its
            arguments, as a model's methods).
        method : str
            The name of that method.
        state : object
            The state before the first block.

        Returns
        -------
        object
            The state after the last block.
        """
        scan_key = dask.delayed(scan, pure=True, traverse=False)
        for block in self.blocks():
            current = dask.delayed(state, pure=True, traverse=False)
            (state,) = self._run([dask.delayed(_fold_step, pure=True)(scan_key, method, current, block)])
        self._count()
        return state

    def rows(self, index: np.ndarray, reduce: Callable[[da.Array], Any] | None = None) -> np.ndarray:
        """The rows ``index`` (sorted) as NumPy, taken from this session's blocks.

        Only the blocks holding them are read (persisted blocks are not read again); a
        read touching more than half of the blocks counts as a pass over the data.
        ``reduce``, a function of the rows as a dask array (one chunk per block read),
        gives what is computed instead of the rows (e.g. their mean).
        """
        source = self.source
        rows, touched = take_rows(
            self.blocks(), self.block_rows, np.asarray(index, dtype=np.int64), source.n_features, source.array.dtype
        )
        (out,) = self._run([rows if reduce is None else reduce(rows)])
        if 2 * touched > len(self.block_rows):
            self._count()
        return np.asarray(out)


def as_session(data: Any, *, cache: Cache = "auto", split_every: int | None = None) -> FitSession:
    """``data`` itself if it is a :class:`FitSession`, else a new session over it.

    A session brings its own cache policy and fan-in: a different ``split_every`` or
    ``cache`` given with one is refused.
    """
    if not isinstance(data, FitSession):
        return FitSession(data, cache=cache, split_every=split_every)
    if split_every is not None and resolve_split_every(split_every) != data.split_every:
        raise ValueError(f"split_every={split_every!r} was given with a FitSession of split_every={data.split_every}.")
    if check_cache(cache) not in ("auto", data.cache):
        raise ValueError(f"cache={cache!r} was given with a FitSession of cache={data.cache!r}.")
    return data
