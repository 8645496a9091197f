"""The EM driver loop: one dask compute per iteration, M-step on the driver.

This package is the only code in daskem that builds Dask graphs. One iteration is::

    params (one key) ──┐
    block_0 ── e_step ─┤
    block_1 ── e_step ─┼─ tree of combine tasks, fan-in split_every ─► total Stats
    ...                │
    block_B ── e_step ─┘
                                  driver: loglik / n ─► monitor ─► m_step ─► new params
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import psutil
from dask.delayed import Delayed
from threadpoolctl import threadpool_limits

from daskem.checkpoint.checkpoint import Checkpoint, CheckpointRun, CheckpointState
from daskem.em.monitor import ConvergenceMonitor, IterationRecord
from daskem.errors import DataError, NumericalError
from daskem.io.sources import MANY_BLOCKS, MIN_BLOCK_ROWS, ChunkSizeWarning, DataSource, as_source, target_block_rows
from daskem.models.base import Model

logger = logging.getLogger("daskem")

IterationCallback = Callable[[IterationRecord, Any], None]


@dataclass(frozen=True)
class EMResult:
    """The outcome of :func:`fit_em`.

    Attributes
    ----------
    params : Params
        Parameters after the last M-step.
    converged : bool
        Whether the change of the per-sample log-likelihood fell below ``tol``.
    n_iter : int
        Iterations run.
    lower_bound : float
        Per-sample log-likelihood of the parameters the last iteration started from
        (scikit-learn's ``lower_bound_``).
    history : tuple of IterationRecord
        One record per iteration.
    n_samples : int
        Rows in the data.
    resumed_from : int
        Iterations read back from a checkpoint (0 for a fresh fit).
    """

    params: Any
    converged: bool
    n_iter: int
    lower_bound: float
    history: tuple[IterationRecord, ...]
    n_samples: int
    resumed_from: int = 0


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
    if cache is not True and cache is not False and cache != "auto":
        raise ValueError(f"cache must be 'auto', True or False; got {cache!r}.")
    if cache != "auto":
        return bool(cache)
    if source.kind == "numpy":
        return current_client() is not None
    resources = resources or compute_resources()
    return bool(source.array.nbytes <= CACHE_FRACTION * resources.memory)


def _many_small_blocks(source: DataSource) -> bool:
    rows = sorted(c for c in source.array.chunks[0] if c) or [0]
    return rows[len(rows) // 2] < MIN_BLOCK_ROWS and len(rows) > MANY_BLOCKS


def data_blocks(source: DataSource, cache: Cache = "auto", resources: ComputeResources | None = None) -> list[Delayed]:
    """The row blocks of ``source`` as delayed objects, one per chunk, cached or streamed.

    See :func:`should_cache`; the choice is logged. Streamed data are read from their
    store on every pass, so worker memory is bounded by the blocks in flight. Cached data
    in many small blocks are merged into blocks of ~16 MiB before they are persisted, so
    each pass runs a few tasks instead of one per tiny block. ``resources`` defaults to
    :func:`compute_resources`.
    """
    resources = resources or compute_resources()
    cached = should_cache(source, cache, resources)
    array = source.array
    if cached and _many_small_blocks(source):
        array = array.rechunk({0: target_block_rows(source.n_samples, source.n_features)})
    blocks = list(array.to_delayed().ravel())
    logger.info(
        "data %s (%.3g GiB, %d blocks): %s (memory available to hold them: %.3g GiB)",
        source.location or source.kind,
        source.array.nbytes / 2**30,
        len(blocks),
        "cached once" if cached else "streamed from the source on every pass",
        resources.memory / 2**30,
    )
    if not cached or (source.kind == "numpy" and current_client() is None):
        return blocks
    client = current_client()
    if client is None:
        return list(dask.persist(*blocks))
    # Persist the blocks, not the array: a persisted array's to_delayed() drops its
    # futures, so the data would be released ("lost dependencies") on return.
    with warnings.catch_warnings():
        # The one-time upload of in-memory data is the point here, not a mistake.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return list(client.persist(blocks))


def check_chunking(source: DataSource, resources: ComputeResources, name: str = "X", cached: bool = False) -> None:
    """Warn (:class:`ChunkSizeWarning`) when blocks are too small or too large, with the fix.

    Small blocks of cached data are not warned about: :func:`data_blocks` merges them.
    """
    rows = sorted(c for c in source.array.chunks[0] if c) or [0]
    median = rows[len(rows) // 2]
    row_bytes = 8 * source.n_features  # the E-step works in float64 or float32: budget float64
    suggest = target_block_rows(source.n_samples, source.n_features)
    fix = (
        f"Use about {suggest:,} rows per block: {name}.rechunk({{0: {suggest}}}), or daskem fit --chunk-rows {suggest}."
    )
    if not cached and _many_small_blocks(source) and len(rows) > 4 * resources.threads:
        warnings.warn(
            f"{name} has {len(rows):,} blocks of about {median:,} rows: Dask's overhead per task (~1 ms) is a "
            f"large share of each block's E-step. {fix}",
            ChunkSizeWarning,
            stacklevel=3,
        )
    # A task holds its block, the float64 tile buffers and its statistics: keep the block
    # well inside the memory of one task thread.
    if rows[-1] * row_bytes > resources.thread_memory / 4:
        limit = max(int(resources.thread_memory / 8 // row_bytes), 1)
        warnings.warn(
            f"{name} has blocks of up to {rows[-1]:,} rows ({rows[-1] * row_bytes / 2**20:.0f} MiB as float64) but "
            f"a task thread has about {resources.thread_memory / 2**20:.0f} MiB: workers may spill or be killed. "
            f"Use at most {limit:,} rows per block: {name}.rechunk({{0: {limit}}}), or "
            f"daskem fit --chunk-rows {limit}.",
            ChunkSizeWarning,
            stacklevel=3,
        )


def _combine_all(model: Model[Any, Any], *parts: Any) -> Any:
    return functools.reduce(model.combine, parts)


def tree_reduce(model: Any, parts: Sequence[Any], split_every: int) -> Any:
    """Combine delayed statistics in a tree whose fan-in never exceeds ``split_every``."""
    level = list(parts)
    while len(level) > 1:
        groups = [level[i : i + split_every] for i in range(0, len(level), split_every)]
        # A lone leftover moves up a level as it is: no single-input combine task.
        level = [g[0] if len(g) == 1 else dask.delayed(_combine_all, pure=True)(model, *g) for g in groups]
    return level[0]


def stats_graph(
    model: Any,
    params: Any,
    blocks: Sequence[Delayed],
    split_every: int,
    block_fn: Callable[..., Any] | None = None,
    block_args: Sequence[Any] | None = None,
) -> Delayed:
    """The graph of one pass: a statistic per block, tree-reduced to one.

    Parameters
    ----------
    model : Model
        The model; enters the graph once, as one key.
    params : Params
        Parameters; enter the graph once, as one key every task references.
    blocks : sequence of Delayed
        Row blocks (:func:`data_blocks`).
    split_every : int
        Fan-in of the reduction.
    block_fn : callable, optional
        ``block_fn(model, params, block, *args)`` computing a block's statistics
        (default: ``model.e_step``); ``block_args[i]`` are the extra args of block ``i``.

    Returns
    -------
    Delayed
        The combined statistics.
    """
    model_key = dask.delayed(model, pure=True, traverse=False)
    params_key = dask.delayed(params, pure=True, traverse=False)
    fn = block_fn or _e_step
    parts = [
        dask.delayed(fn, pure=True)(model_key, params_key, block, *(block_args[i] if block_args else ()))
        for i, block in enumerate(blocks)
    ]
    return tree_reduce(model_key, parts, split_every)


def _e_step(model: Model[Any, Any], params: Any, block: Any) -> Any:
    return model.e_step(params, block)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Pin BLAS to one thread in this process while a fit runs.

    Dask's local threads then run one single-threaded BLAS call each (no
    oversubscription), and the driver's small d x d factorisations skip the thread
    start-up that dominates them. Distributed workers already start with
    ``OPENBLAS_NUM_THREADS=1`` and friends.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def compute_stats(
    model: Any,
    params: Any,
    blocks: Sequence[Delayed],
    split_every: int,
    block_fn: Callable[..., Any] | None = None,
    block_args: Sequence[Any] | None = None,
) -> Any:
    """Run one pass over the data: the total statistics, one ``dask.compute``.

    The arguments are those of :func:`stats_graph`.
    """
    with single_threaded_blas():
        (total,) = dask.compute(stats_graph(model, params, blocks, split_every, block_fn, block_args))
    return total


def nonfinite_error(count: int, n_rows: int, name: str = "X", where: str = "") -> DataError:
    """The error for data holding ``count`` NaN or infinite values among ``n_rows`` rows."""
    return DataError(
        f"Input {name} contains {count} NaN or infinite value(s) among {n_rows} rows{where}. "
        f"Remove or impute them before fitting, e.g. {name} = {name}[da.isfinite({name}).all(axis=1)] "
        f"for a dask array (then {name}.compute_chunk_sizes())."
    )


def check_stats(stats: Any, n_samples: int, name: str = "X") -> None:
    """Raise a clear error if a pass saw non-finite data or produced a non-finite likelihood."""
    if stats.n_nonfinite:
        raise nonfinite_error(stats.n_nonfinite, n_samples, name)
    if not np.isfinite(stats.loglik):
        raise NumericalError(
            f"The log-likelihood is {stats.loglik!r}: some rows have zero probability under every "
            "component. Scale the features or increase reg_covar."
        )


def _apply_rows(model: Any, params: Any, method: str, block: Any) -> Any:
    bad = block.size - np.count_nonzero(np.isfinite(block))
    if bad:
        raise DataError(
            f"Input X contains {bad} NaN or infinite value(s) in a block of {block.shape[0]} rows. "
            "Remove or impute them before predicting."
        )
    return getattr(model, method)(params, block)


def map_rows(
    model: Any, params: Any, source: DataSource, method: str, *, dtype: Any, columns: int | None = None
) -> Any:
    """Apply ``model.<method>(params, block)`` to every row block, lazily.

    Parameters
    ----------
    model : Model
        The model.
    params : Params
        Fitted parameters.
    source : DataSource
        The rows.
    method : str
        A per-block method of the model returning one value per row (``columns=None``)
        or a ``(rows, columns)`` array.
    dtype : numpy dtype
        Output dtype.
    columns : int, optional
        Output columns, if the result is 2-D.

    Returns
    -------
    dask.array.Array
        Chunked by rows like ``source``.
    """
    fn = functools.partial(_apply_rows, model, params, method)
    array = source.array
    if columns is None:
        return da.map_blocks(fn, array, drop_axis=1, dtype=dtype)
    return da.map_blocks(fn, array, chunks=(array.chunks[0], (columns,)), dtype=dtype)


def checkpoint_run(
    checkpoint: str | os.PathLike[str] | Checkpoint | CheckpointRun,
    model: Any,
    source: DataSource,
    split_every: int,
    overwrite: bool,
) -> CheckpointRun:
    """The run to checkpoint a :func:`fit_em` call into, created or checked as needed.

    A path or :class:`Checkpoint` is prepared with this fit's model spec, data
    fingerprint and ``split_every`` (resuming requires all three to match) and its run 0
    is used; a :class:`CheckpointRun` is used as given (its owner checked it).
    """
    if isinstance(checkpoint, CheckpointRun):
        return checkpoint
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
    ckpt.prepare(fit_metadata(model, source, split_every), compare=COMPARED_SECTIONS, overwrite=overwrite)
    return ckpt.run(0)


#: Root sections that must match for a fit to resume from a checkpoint.
COMPARED_SECTIONS = ("model", "data", "config")


def fit_metadata(model: Any, source: DataSource, split_every: int, **config: Any) -> dict[str, Any]:
    """Root attributes of a checkpoint of this fit (see :class:`daskem.checkpoint.Checkpoint`)."""
    from daskem import __version__

    data = source.fingerprint()
    location = data.pop("location")
    return {
        "daskem_version": __version__,
        "model": model.spec(),
        "data": data,
        "source": {"location": location, "kind": source.kind, "options": source.options},
        "config": {"split_every": split_every, **config},
    }


def fit_em(
    model: Any,
    X: Any,
    init: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    split_every: int | None = None,
    callback: IterationCallback | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | CheckpointRun | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    overwrite: bool = False,
    cache: Cache = "auto",
) -> EMResult:
    """Fit ``model`` to ``X`` by Expectation-Maximization.

    Each iteration is exactly one pass over the data (one ``dask.compute``): the E-step
    runs per block on the workers, the statistics are combined in a tree with fan-in
    ``split_every`` and the M-step runs here, on the driver. The default Dask scheduler
    is used: the current ``distributed.Client`` if there is one, else local threads.

    Parameters
    ----------
    model : Model
        Any object implementing :class:`daskem.models.Model`.
    X : array-like, dask array, zarr.Array, str or DataSource
        The data (see :func:`daskem.io.as_source`).
    init : Params or callable
        Initial parameters (see :func:`daskem.em.initial_params`), or a function of no
        arguments returning them, called only when there is no checkpoint to resume.
    max_iter : int
        Most iterations to run (in total, counting those of a resumed checkpoint).
    tol : float
        Stop when the per-sample log-likelihood changes by less than ``tol``.
    split_every : int, optional
        Fan-in of the reduction tree (default: ``dask.config`` ``split_every``, else 8).
    callback : callable, optional
        Called as ``callback(record, params)`` after every iteration with its
        :class:`IterationRecord` and the new parameters.
    checkpoint : str, os.PathLike, Checkpoint or CheckpointRun, optional
        Zarr location (path or fsspec URL) to checkpoint into after iterations. If it
        holds a checkpoint of the same model, data and ``split_every``, the fit resumes
        from its newest committed iteration and reaches bitwise the same result as an
        uninterrupted fit.
    checkpoint_every : int
        Commit every ``checkpoint_every`` iterations (and always the last one).
    keep_last : int
        Committed iterations kept; older ones are deleted after each commit.
    overwrite : bool
        Discard an existing checkpoint at ``checkpoint`` and start afresh.
    cache : {"auto", True, False}
        Persist the data once in (cluster) memory, or stream them from their source on
        every pass; ``"auto"`` caches what fits comfortably (see :func:`should_cache`).

    Returns
    -------
    EMResult
        Final parameters, convergence state and per-iteration history.
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an int >= 1; got {checkpoint_every!r}.")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last must be an int >= 1; got {keep_last!r}.")
    source = as_source(X)
    fan_in = resolve_split_every(split_every)
    run = None if checkpoint is None else checkpoint_run(checkpoint, model, source, fan_in, overwrite)
    state = run.latest() if run is not None else None
    # float32 data run a float32 E-step: allow its rounding before calling a change a decrease.
    decrease_rtol = 1e-10 if source.array.dtype == np.float64 else 1e-5
    monitor = ConvergenceMonitor(tol=tol, max_iter=max_iter, decrease_rtol=decrease_rtol)
    if state is not None:
        params = model.params_from_arrays(state.params)
        monitor.restore(state.history)
        logger.info("resuming from iteration %d of %r", state.iteration, run)
    else:
        params = init() if callable(init) else init
    blocks: list[Delayed] = []
    if not monitor.done:
        resources = compute_resources()
        cached = should_cache(source, cache, resources)
        check_chunking(source, resources, cached=cached)
        blocks = data_blocks(source, cached, resources)
    with single_threaded_blas():
        while not monitor.done:
            start = time.perf_counter()
            stats = compute_stats(model, params, blocks, fan_in)
            check_stats(stats, source.n_samples)
            params = model.m_step(stats, params)
            record = monitor.update(model.log_likelihood(stats) / stats.n, time.perf_counter() - start)
            if run is not None and (record.iteration % checkpoint_every == 0 or monitor.done):
                run.commit(
                    CheckpointState(
                        record.iteration, params.to_arrays(), monitor.as_arrays(), monitor.converged, monitor.done
                    ),
                    keep_last,
                )
            if callback is not None:
                callback(record, params)
    last = monitor.history[-1] if monitor.history else None
    return EMResult(
        params=params,
        converged=monitor.converged,
        n_iter=len(monitor.history),
        lower_bound=last.log_likelihood if last else -np.inf,
        history=tuple(monitor.history),
        n_samples=source.n_samples,
        resumed_from=state.iteration if state is not None else 0,
    )
