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
import math
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
from daskem.em.accelerate import Squarem, check_accelerate
from daskem.em.monitor import ConvergenceMonitor, IterationRecord
from daskem.em.progress import FitEvent, count_pass, counting_passes, notify, phase
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
    n_passes : int
        Full passes over the data made, initialisation included (shared passes of
        restarts fitted together count once).
    pruned : bool
        Whether the run was dropped by restart pruning before it converged.
    """

    params: Any
    converged: bool
    n_iter: int
    lower_bound: float
    history: tuple[IterationRecord, ...]
    n_samples: int
    resumed_from: int = 0
    n_passes: int = 0
    pruned: bool = False


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


#: Times a pass is attempted when its tasks are lost with their workers (KilledWorker).
PASS_ATTEMPTS = 3


def _compute(graphs: Sequence[Any]) -> tuple[Any, ...]:
    """``dask.compute`` of one pass's graphs, run again if its tasks were lost (KilledWorker)."""
    for attempt in range(PASS_ATTEMPTS):
        try:
            return tuple(dask.compute(*graphs))
        except Exception as err:
            # A task killed with too many workers (heavy worker churn): the pass is a pure
            # function of the parameters, so running it again gives the same result.
            if type(err).__name__ != "KilledWorker" or attempt == PASS_ATTEMPTS - 1:
                raise
            logger.warning("pass failed (%s); running it again (attempt %d)", err, attempt + 2)
    raise AssertionError("unreachable")  # pragma: no cover


def _summarize(model: Any, params: Any, block: Any) -> Any:
    return model.summarize(params, block)


def _e_step_with_message(model: Any, params: Any, block: Any, message: Any) -> Any:
    return model.e_step(params, block, message)


def block_messages(model: Any, params: Any, blocks: Sequence[Delayed]) -> list[Any]:
    """The messages of a model whose blocks depend on their neighbours: one pass.

    Every block is summarised in parallel (``model.summarize``); the driver chains the
    summaries into one message per block (``model.messages``), which the block's
    E-step then takes (see :func:`daskem.models.base.block_stats`).
    """
    model_key = dask.delayed(model, pure=True, traverse=False)
    params_key = dask.delayed(params, pure=True, traverse=False)
    summaries = _compute([dask.delayed(_summarize, pure=True)(model_key, params_key, b) for b in blocks])
    count_pass()
    return list(model.messages(params, list(summaries)))


def compute_stats(
    model: Any,
    params: Any,
    blocks: Sequence[Delayed],
    split_every: int,
    block_fn: Callable[..., Any] | None = None,
    block_args: Sequence[Any] | None = None,
) -> Any:
    """Run one pass over the data: the total statistics, one ``dask.compute``.

    The arguments are those of :func:`stats_graph`. A model whose blocks depend on their
    neighbours (``model.carries_messages``) first takes its messages in a pass of its own
    (:func:`block_messages`).
    """
    with single_threaded_blas():
        if block_fn is None and getattr(model, "carries_messages", False):
            block_fn = _e_step_with_message
            block_args = [(m,) for m in block_messages(model, params, blocks)]
        (total,) = _compute([stats_graph(model, params, blocks, split_every, block_fn, block_args)])
    count_pass()
    return total


def nonfinite_error(count: int, n_rows: int, name: str = "X", where: str = "") -> DataError:
    """The error for data holding ``count`` NaN or infinite values among ``n_rows`` rows."""
    return DataError(
        f"Input {name} contains {count} NaN or infinite value(s) among {n_rows} rows{where}. "
        f"Remove or impute them before fitting, e.g. {name} = {name}[da.isfinite({name}).all(axis=1)] "
        f"for a dask array (then {name}.compute_chunk_sizes())."
    )


def check_stats(stats: Any, n_samples: int, name: str = "X", model: Any = None) -> None:
    """Raise a clear error if a pass saw non-finite data or produced a non-finite likelihood.

    The advice for a non-finite likelihood is the model's ``numerical_advice`` when it has one.
    """
    if stats.n_nonfinite:
        raise nonfinite_error(stats.n_nonfinite, n_samples, name)
    check_log_likelihood(stats.loglik, model)


def check_log_likelihood(loglik: float, model: Any = None) -> None:
    """Raise :class:`NumericalError` with the model's ``numerical_advice`` if ``loglik`` is not finite."""
    if not np.isfinite(loglik):
        advice = getattr(model, "numerical_advice", "Scale the features.")
        raise NumericalError(f"The log-likelihood is {loglik!r}: {advice}")


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


#: Root sections that must match for a fit to resume from a checkpoint.
COMPARED_SECTIONS = ("model", "data", "config")


def fit_metadata(model: Any, source: DataSource, split_every: int, **config: Any) -> dict[str, Any]:
    """Root attributes of a checkpoint of this fit (see :class:`daskem.checkpoint.Checkpoint`)."""
    from daskem import __version__

    data = source.fingerprint()
    location = data.pop("location")
    return {
        "daskem_version": __version__,
        "model": [m.spec() for m in model] if isinstance(model, list | tuple) else model.spec(),
        "data": data,
        "source": {"location": location, "kind": source.kind, "options": source.options},
        "config": {"split_every": split_every, **config},
    }


@dataclass(frozen=True)
class BatchedModel:
    """Several parameter sets evaluated in the same pass over each block.

    ``params`` are tuples of parameters and statistics tuples of statistics; each block
    is read once and every parameter set's E-step runs on it. The sets belong to one
    ``model``, or to ``models[i]`` each (a model-selection grid).

    Parameters
    ----------
    model : Model
        The model (of every set when ``models`` is None).
    models : tuple of Model, optional
        One model per parameter set.
    """

    model: Any
    models: tuple[Any, ...] | None = None

    def _models(self, count: int) -> tuple[Any, ...]:
        return self.models if self.models is not None else (self.model,) * count

    @property
    def carries_messages(self) -> bool:
        """Whether the model's blocks take messages from their neighbours (one model only)."""
        return self.models is None and bool(getattr(self.model, "carries_messages", False))

    def summarize(self, params: tuple[Any, ...], block: Any) -> tuple[Any, ...]:
        """The block's summary under every parameter set."""
        return tuple(self.model.summarize(p, block) for p in params)

    def messages(self, params: tuple[Any, ...], summaries: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Every block's messages, one per parameter set."""
        per_set = [self.model.messages(p, [s[i] for s in summaries]) for i, p in enumerate(params)]
        return [tuple(m[b] for m in per_set) for b in range(len(summaries))]

    def e_step(self, params: tuple[Any, ...], block: Any, message: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
        """The statistics of ``block`` under every parameter set.

        A single model with ``e_step_batch(params, block)`` computes them together
        (sharing work between the sets); otherwise each set's ``e_step`` runs in turn
        (with its message, for a model that carries messages).
        """
        if message is not None:
            return tuple(self.model.e_step(p, block, m) for p, m in zip(params, message, strict=True))
        batch = getattr(self.model, "e_step_batch", None)
        if batch is not None and self.models is None:
            return tuple(batch(params, block))
        return tuple(m.e_step(p, block) for m, p in zip(self._models(len(params)), params, strict=True))

    def combine(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        """Combine two statistics tuples element by element."""
        return tuple(m.combine(x, y) for m, x, y in zip(self._models(len(a)), a, b, strict=True))


def _model_verdict(model: Any, stats: Any, params: Any, new_params: Any, tol: float) -> bool | None:
    """The model's own convergence test (``model.converged``), or None to use the likelihood rule."""
    test = getattr(model, "converged", None)
    return None if test is None else bool(test(stats, params, new_params, tol))


class _Run:
    """One EM run (one initialisation) advancing pass by pass; plain or SQUAREM-accelerated."""

    def __init__(self, index: int, model: Any, monitor: ConvergenceMonitor, run: CheckpointRun | None) -> None:
        self.index = index
        self.model = model
        self.monitor = monitor
        self.run = run
        self.squarem: Squarem | None = None
        self.pending: Any = None  # parameters the next pass evaluates
        self.params: Any = None  # M(last recorded point): the run's current answer
        self.pruned = False
        self.resumed_from = 0
        self.resumed_passes = 0
        self.rules: tuple[tuple[int, float, int], ...] = ((0, monitor.tol, monitor.max_iter),)
        self.started = time.perf_counter()

    @property
    def active(self) -> bool:
        return not (self.pruned or self.monitor.done)

    def start(self, params: Any, accelerate: str | None) -> None:
        self.pending = self.params = params
        if accelerate == "squarem":
            self.squarem = Squarem(self.model)

    def resume(self, state: CheckpointState, accelerate: str | None) -> str | None:
        """Continue from ``state``; return a note when it continues under a new stopping rule."""
        self.params = self.model.params_from_arrays(state.params)
        self.monitor.restore(state.history, state.converged)
        self.pruned = state.pruned
        self.resumed_from = state.iteration
        self.resumed_passes = state.passes
        self.pending = self.params
        if accelerate == "squarem":
            self.squarem = Squarem(self.model)
            if "squarem_state" in state.params:  # iteration 0 has no accelerator state yet
                self.pending = self.squarem.restore(state.params, self.params)
        return self._apply_rule(state)

    def _apply_rule(self, state: CheckpointState) -> str | None:
        """Take this fit's ``tol`` and ``max_iter`` as the rule from the checkpointed iteration on.

        A run that converged under a larger ``tol`` than this fit's is reopened (its next
        pass decides again, under the new ``tol``; with the likelihood rule and no
        acceleration its last change decides at once); a run that ran out of iterations
        continues when ``max_iter`` is now larger. The change is recorded in ``rules``.
        """
        tol, max_iter = self.monitor.tol, self.monitor.max_iter
        self.rules = state.rules or ((0, tol, max_iter),)
        _, old_tol, old_max = self.rules[-1]
        if (old_tol, old_max) == (tol, max_iter):
            return None
        self.rules = (*self.rules, (state.iteration, tol, max_iter))
        if self.pruned or not state.finished:
            return None
        history = self.monitor.history
        if state.converged and tol < old_tol:
            plain = getattr(self.model, "converged", None) is None and self.squarem is None
            if not (plain and history and abs(history[-1].change) < tol):
                self.monitor.converged = False
        if not self.active:
            return None
        before = f"converged under tol={old_tol:g}" if state.converged else f"stopped at max_iter={old_max}"
        return (
            f"run {self.index}: the fit {before} at iteration {state.iteration} continues under "
            f"tol={tol:g}, max_iter={max_iter}"
        )

    def advance(self, stats: Any, n_samples: int, passes: int, tol: float) -> IterationRecord | None:
        """Take the statistics of ``pending``; return the new record, or None for a rejected step."""
        point = self.pending
        if self.squarem is not None and self.squarem.jumping:
            if stats.n_nonfinite:
                check_stats(stats, n_samples, model=self.model)
            loglik = self.model.log_likelihood(stats)
            result = None
            if np.isfinite(loglik) and loglik >= self.squarem.reference:
                with contextlib.suppress(NumericalError):
                    result = self.model.m_step(stats, point)
            if result is None:
                self.pending = self.squarem.rejected()
                return None
        else:
            check_stats(stats, n_samples, model=self.model)
            result = self.model.m_step(stats, point)
        verdict = _model_verdict(self.model, stats, point, result, tol)
        mean_loglik = self.model.log_likelihood(stats) / stats.n
        history = self.monitor.history
        if verdict is None and self.squarem is not None and history:
            # An EM step right after an accepted jump can gain little although the fit is
            # still moving: an accelerated run stops after two small changes in a row.
            verdict = abs(mean_loglik - history[-1].log_likelihood) < tol and abs(history[-1].change) < tol
        now = time.perf_counter()
        record = self.monitor.update(mean_loglik, now - self.started, passes, verdict)
        self.started = now
        self.params = result
        if self.squarem is not None:
            self.pending = self.squarem.accepted(point, result, self.model.log_likelihood(stats))
        else:
            self.pending = result
        return record

    def commit(self, keep_last: int, passes: int = 0) -> None:
        if self.run is None:
            return
        arrays = dict(self.params.to_arrays())
        if self.squarem is not None and self.squarem.base is not None:
            arrays.update(self.squarem.to_arrays())
        self.run.commit(
            CheckpointState(
                len(self.monitor.history),
                arrays,
                self.monitor.as_arrays(),
                self.monitor.converged,
                not self.active,
                self.pruned,
                max(self.monitor.passes, passes),
                self.rules,
            ),
            keep_last,
        )

    def result(self, n_samples: int, passes: int) -> EMResult:
        history = tuple(self.monitor.history)
        return EMResult(
            params=self.params,
            converged=self.monitor.converged,
            n_iter=len(history),
            lower_bound=history[-1].log_likelihood if history else -np.inf,
            history=history,
            n_samples=n_samples,
            resumed_from=self.resumed_from,
            n_passes=passes,
            pruned=self.pruned,
        )


#: Records a run needs before pruning may judge it.
PRUNE_MIN_RECORDS = 3


def _remaining_gain(history: Sequence[IterationRecord]) -> float:
    """An estimate of the log-likelihood a run still gains, from its geometric convergence rate.

    Infinite (never prune) unless the last two changes are positive and shrinking.
    """
    last, before = history[-1].change, history[-2].change
    if not (0.0 < last < before):
        return math.inf
    rate = last / before
    return last * rate / (1.0 - rate)


def _prune(runs: Sequence[_Run], tol: float) -> list[int]:
    """Mark as pruned the active runs that clearly fall behind the best; return their indices.

    A run is clearly behind when its log-likelihood plus twice its estimated remaining gain
    (:func:`_remaining_gain`) plus ``tol`` is still below the best run's log-likelihood.
    """
    recorded = [r for r in runs if r.monitor.history]
    if not recorded:
        return []
    best = max(r.monitor.history[-1].log_likelihood for r in recorded)
    dropped = []
    for r in recorded:
        history = r.monitor.history
        if not r.active or len(history) < PRUNE_MIN_RECORDS:
            continue
        if history[-1].log_likelihood + 2.0 * _remaining_gain(history) + tol < best:
            r.pruned = True
            dropped.append(r.index)
    return dropped


@dataclass(frozen=True)
class RestartsResult:
    """The outcome of :func:`fit_em_restarts`.

    Attributes
    ----------
    best : int
        Index of the run with the highest final lower bound (the first of equals).
    results : tuple of EMResult
        One per initialisation, in order.
    pruned : tuple of int
        Indices of the runs dropped by pruning.
    n_passes : int
        Passes over the data made in all (shared by the runs), initialisation included.
    """

    best: int
    results: tuple[EMResult, ...]
    pruned: tuple[int, ...]
    n_passes: int


def fit_em_restarts(
    model: Any,
    X: Any,
    inits: Sequence[Any] | Callable[[], Sequence[Any]],
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    split_every: int | None = None,
    accelerate: str | None = None,
    prune: bool = False,
    callback: Callable[[int, IterationRecord, Any], None] | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | Sequence[CheckpointRun] | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    overwrite: bool = False,
    cache: Cache = "auto",
    max_init_passes: int | None = None,
    pass_callback: Callable[[int, tuple[EMResult, ...]], None] | None = None,
) -> RestartsResult:
    """Fit ``model`` from several initialisations at once, sharing every pass over the data.

    Each pass reads every block once and runs the E-step of every active run on it
    (:class:`BatchedModel`), so ``R`` restarts cost ``R`` times the compute but one
    read of the data per iteration. Runs are independent: each reaches bitwise the
    parameters a fit of its initialisation alone (:func:`fit_em`) reaches.

    Parameters
    ----------
    model : Model or sequence of Model
        Any object implementing :class:`daskem.models.Model`, or one per initialisation
        (candidates of a model-selection grid fitted in shared passes).
    X : array-like, dask array, zarr.Array, str or DataSource
        The data (see :func:`daskem.io.as_source`).
    inits : sequence of Params, or callable
        One initial parameter set per run, or a function of no arguments returning them
        (called only when a run has no checkpoint to resume, or to count the runs when
        ``checkpoint`` is a location; its passes are counted).
    max_iter, tol, split_every, checkpoint_every, keep_last, overwrite, cache
        As for :func:`fit_em` (``max_iter`` and ``tol`` apply to every run).
    accelerate : {None, "squarem"}
        SQUAREM acceleration of every run (:mod:`daskem.em.accelerate`); the model must
        provide ``to_vector`` / ``from_vector``.
    prune : bool
        Drop runs that clearly fall behind the best (see :func:`_prune`); each dropped run
        is logged and reported in :attr:`RestartsResult.pruned`.
    callback : callable, optional
        Called as ``callback(run_index, record, params)`` after every record of every run.
    checkpoint : str, os.PathLike, Checkpoint or sequence of CheckpointRun, optional
        Where to checkpoint: a location (prepared like :func:`fit_em`'s, run ``r`` for
        initialisation ``r``) or the runs themselves, one per initialisation. The
        initial parameters are committed as iteration 0 as soon as they exist.
    max_init_passes : int, optional
        The most passes ``inits`` makes, for progress displays
        (:func:`daskem.em.progress.reporting_progress`: "initialising, pass i of n").
    pass_callback : callable, optional
        Called as ``pass_callback(passes, results)`` after every pass over the data, once
        its records are committed: ``passes`` made so far and every run's
        :class:`EMResult` so far, in run order (progress of a whole grid of runs).

    Returns
    -------
    RestartsResult
    """
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an int >= 1; got {checkpoint_every!r}.")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last must be an int >= 1; got {keep_last!r}.")
    models = tuple(model) if isinstance(model, list | tuple) else None
    for each in models or (model,):
        check_accelerate(each, accelerate)
    source = as_source(X)
    fan_in = resolve_split_every(split_every)
    init_passes = 0
    starts: Sequence[Any] = ()

    def initialise() -> Sequence[Any]:
        nonlocal init_passes
        with phase("initialising", max_init_passes), counting_passes() as count:
            made = inits() if callable(inits) else inits
        init_passes = count.passes
        return made

    if callable(inits) and isinstance(checkpoint, str | os.PathLike | Checkpoint):
        # The number of runs to look for in the checkpoint is the number of starts: with a
        # location (not runs) and a callable, the initialiser must run to tell it.
        starts = initialise()
    n_runs = len(starts) if starts else None if callable(inits) else len(inits)
    targets = _checkpoint_runs(checkpoint, model, source, fan_in, overwrite, accelerate, n_runs)
    # float32 data run a float32 E-step: allow its rounding before calling a change a decrease.
    decrease_rtol = 1e-10 if source.array.dtype == np.float64 else 1e-5
    run_models = models or (model,) * len(targets)
    states = [t.latest(validate=m.params_from_arrays) for t, m in zip(targets, run_models, strict=False)]
    if not starts and (not states or any(s is None for s in states)):
        starts = initialise()
    n_runs = len(starts) if starts else len(states)
    if models is not None and len(models) != n_runs:
        raise ValueError(f"{len(models)} models were given for {n_runs} initialisations.")
    if targets and len(targets) != n_runs:
        raise ValueError(f"{len(targets)} checkpoint runs were given for {n_runs} initialisations.")
    runs = []
    for i in range(n_runs):
        monitor = ConvergenceMonitor(tol=tol, max_iter=max_iter, decrease_rtol=decrease_rtol, run=i)
        run = _Run(i, models[i] if models else model, monitor, targets[i] if targets else None)
        state = states[i] if states else None
        if state is not None:
            note = run.resume(state, accelerate)
            logger.info("run %d: resuming from iteration %d of %r", i, state.iteration, targets[i])
            notify(FitEvent("resumed", run=i, iteration=state.iteration))
            if note:
                logger.info(note)
                notify(FitEvent("note", message=note, run=i))
        else:
            run.start(starts[i], accelerate)
        runs.append(run)
    passes = max([init_passes] + [max(r.monitor.passes, r.resumed_passes) for r in runs])
    for run, state in zip(runs, states or [None] * len(runs), strict=True):
        if state is None:
            # The initial parameters are committed at once (iteration 0): a fit killed
            # before its first iteration does not initialise again. (A new stopping rule
            # is written with the next iteration: a committed one is never rewritten.)
            run.commit(keep_last, passes)
    pruned: list[int] = [r.index for r in runs if r.pruned]
    blocks: list[Delayed] = []
    with phase("fitting"), single_threaded_blas():
        if any(r.active for r in runs):
            resources = compute_resources()
            cached = should_cache(source, cache, resources)
            check_chunking(source, resources, cached=cached)
            blocks = data_blocks(source, cached, resources)
        while active := [r for r in runs if r.active]:
            if len(active) == 1:
                all_stats = (compute_stats(active[0].model, active[0].pending, blocks, fan_in),)
            else:
                batched = BatchedModel(model, None if models is None else tuple(r.model for r in active))
                all_stats = compute_stats(batched, tuple(r.pending for r in active), blocks, fan_in)
            # A model that carries messages between blocks reads the data twice per pass.
            passes += 2 if getattr(active[0].model, "carries_messages", False) else 1
            recorded = {}
            for run, stats in zip(active, all_stats, strict=True):
                record = run.advance(stats, source.n_samples, passes, tol)
                if record is not None:
                    recorded[run.index] = record
            dropped = _prune(runs, tol) if prune else []
            for index in dropped:
                logger.info("run %d pruned: it falls clearly behind the best run", index)
            pruned.extend(dropped)
            for run in runs:
                record = recorded.get(run.index)
                due = record is not None and (record.iteration % checkpoint_every == 0 or not run.active)
                if due or run.index in dropped:
                    run.commit(keep_last, passes)
                if record is not None and callback is not None:
                    callback(run.index, record, run.params)
            if pass_callback is not None:
                pass_callback(passes, tuple(r.result(source.n_samples, passes) for r in runs))
    results = tuple(r.result(source.n_samples, passes) for r in runs)
    best = max(range(len(results)), key=lambda i: (results[i].lower_bound, -i))
    return RestartsResult(best=best, results=results, pruned=tuple(pruned), n_passes=passes)


def _checkpoint_runs(
    checkpoint: str | os.PathLike[str] | Checkpoint | Sequence[CheckpointRun] | None,
    model: Any,
    source: DataSource,
    split_every: int,
    overwrite: bool,
    accelerate: str | None,
    n_runs: int | None,
) -> list[CheckpointRun]:
    if checkpoint is None:
        return []
    if isinstance(checkpoint, str | os.PathLike | Checkpoint):
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
        meta = fit_metadata(model, source, split_every, accelerate=accelerate)
        ckpt.prepare(meta, compare=COMPARED_SECTIONS, overwrite=overwrite)
        count = n_runs if n_runs is not None else max(len(ckpt.runs()), 1)
        return [ckpt.run(i) for i in range(count)]
    return list(checkpoint)


def fit_em(
    model: Any,
    X: Any,
    init: Any,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    split_every: int | None = None,
    accelerate: str | None = None,
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
        Any object implementing :class:`daskem.models.Model`. A model with a
        ``converged(stats, params, new_params, tol)`` method decides convergence itself
        (k-means: the centre shift); otherwise the fit stops when the per-sample
        log-likelihood changes by less than ``tol``.
    X : array-like, dask array, zarr.Array, str or DataSource
        The data (see :func:`daskem.io.as_source`).
    init : Params or callable
        Initial parameters (see :func:`daskem.em.initial_params`), or a function of no
        arguments returning them, called only when there is no checkpoint to resume.
    max_iter : int
        Most iterations (records) to run, in total, counting those of a resumed checkpoint.
    tol : float
        Convergence threshold (see ``model``).
    split_every : int, optional
        Fan-in of the reduction tree (default: ``dask.config`` ``split_every``, else 8).
    accelerate : {None, "squarem"}
        ``"squarem"`` extrapolates along the EM path (:mod:`daskem.em.accelerate`) with a
        safeguard that keeps the log-likelihood from decreasing; an iteration is then an
        accepted point, rejected extrapolations cost a pass without a record, and the
        likelihood rule needs two consecutive changes below ``tol``.
    callback : callable, optional
        Called as ``callback(record, params)`` after every iteration with its
        :class:`IterationRecord` and the new parameters.
    checkpoint : str, os.PathLike, Checkpoint or CheckpointRun, optional
        Zarr location (path or fsspec URL) to checkpoint into after iterations. If it
        holds a checkpoint of the same model, data, ``split_every`` and ``accelerate``,
        the fit resumes from its newest committed iteration and reaches bitwise the same
        result as an uninterrupted fit.
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
        Final parameters, convergence state, per-iteration history and passes made.
    """
    source = as_source(X)
    check_accelerate(model, accelerate)
    target: Any = [checkpoint] if isinstance(checkpoint, CheckpointRun) else checkpoint
    if isinstance(checkpoint, str | os.PathLike | Checkpoint):
        # One run: prepare the location here so the initialiser is not called to count runs.
        target = _checkpoint_runs(checkpoint, model, source, resolve_split_every(split_every), overwrite, accelerate, 1)
    outcome = fit_em_restarts(
        model,
        source,
        (lambda: [init()]) if callable(init) else [init],
        max_iter=max_iter,
        tol=tol,
        split_every=split_every,
        accelerate=accelerate,
        callback=None if callback is None else (lambda _, record, params: callback(record, params)),
        checkpoint=target,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        overwrite=overwrite,
        cache=cache,
    )
    return outcome.results[0]
