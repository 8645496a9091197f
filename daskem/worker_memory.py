"""Worker memory on a Dask cluster: refuse limits that cannot run a fit, stop fits that stall.

A Dask worker pauses (runs no task) above ``distributed.worker.memory.pause`` (80%) of
its memory limit, and its nanny restarts it above ``distributed.worker.memory.terminate``
(95%). A worker that has imported daskem, numba and the E-step kernels already holds
about 275 MiB, so a small ``--memory-limit`` either pauses every worker for good (the
fit waits forever) or restarts them in a loop. Two guards turn both into messages:

* :func:`check_worker_memory`, once the cluster is up and the data are opened, loads
  the E-step code in every worker, measures the workers' resident memory and refuses a
  limit that cannot hold it plus one block per worker thread, naming the limit to use;
* :func:`watch_worker_memory`, around the fit, ends it when paused workers hold it up
  (a worker paused, tasks waiting and none running, for 30 s), when nannies keep
  restarting workers for memory, or when distributed gives up on a task whose workers
  kept dying (``KilledWorker``, after ``distributed.scheduler.allowed-failures`` + 1
  deaths).

Both raise :class:`~daskem.errors.WorkerMemoryError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np

from daskem.errors import WorkerMemoryError

logger = logging.getLogger("daskem")

MiB = 2**20

#: Working memory of an E-step task besides its block: the tile buffers (the (k, d, t)
#: work buffer alone is ~4 MiB for k=8, d=16) and the statistics.
TASK_OVERHEAD_BYTES = 16 * MiB

#: Copies of its block a task can hold at once (the block as read and its float64 or
#: centred working copy).
BLOCK_COPIES = 2

#: Margin on top of the computed need, for the unmanaged memory a fit accumulates
#: (allocator fragmentation, Zarr decoding buffers, the graph).
HEADROOM = 1.15

#: Suggested limits are rounded up to a multiple of this.
ROUND_TO = 16 * MiB

#: Seconds to wait for the workers' measurements before measuring in a local process.
MEASURE_TIMEOUT_SECONDS = 120.0

#: Seconds paused workers may hold the fit up (see :func:`_stalled`) before
#: :func:`watch_worker_memory` ends it.
PAUSED_SECONDS = 30.0

#: Memory restarts (by the nannies) a fit survives; one more ends it.
MAX_MEMORY_RESTARTS = 4

#: The event topic a nanny logs when it restarts its worker for memory.
RESTART_TOPIC = "worker-restart-memory"


def load_e_step_code() -> int:
    """Import and run daskem's E-step code once in this process; return its resident memory.

    Imports daskem, numba, what a pass's tasks import (the engine's graph functions and the
    sources' readers) and the kernel modules of the Gaussian mixture and k-means E-steps,
    runs each on a 64-row block (so numba loads or compiles the kernels, as
    the first E-step of a fit would), collects garbage and reads the process's RSS.
    Run in every worker by :func:`check_worker_memory`.

    Returns
    -------
    int
        Resident set size of this process in bytes.
    """
    import numba  # noqa: F401  # the kernels' runtime, ~70 MiB resident
    import psutil

    import daskem
    import daskem.em.graph  # the engine's tasks (dask.array)
    import daskem.io.sources  # noqa: F401  # the sources' readers (zarr)
    from daskem.models import gaussian_kernels, kmeans_kernels  # noqa: F401
    from daskem.models.gaussian import COVARIANCE_TYPES
    from daskem.models.gmm import GaussianMixtureModel
    from daskem.models.kmeans import KMeansModel, KMeansParams

    block = np.random.default_rng(0).normal(size=(64, 2))
    resp = np.zeros((64, 2))
    resp[::2, 0] = resp[1::2, 1] = 1.0
    for covariance_type in COVARIANCE_TYPES:
        model = GaussianMixtureModel(2, covariance_type=covariance_type)
        model.e_step(model.params_from_responsibilities(block, resp), block)
    KMeansModel(2).e_step(KMeansParams.from_centers(block[:2]), block)
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _worker_like_process_baseline(timeout: float = MEASURE_TIMEOUT_SECONDS) -> int | None:
    """:func:`load_e_step_code` in a fresh Python process that has imported what a worker has.

    The fallback when the workers die while they are measured (a limit below their
    resident memory): distributed's worker and nanny and the ``daskem`` command, which a
    LocalCluster's spawned workers import as their main module.
    """
    script = (
        "import distributed.nanny, distributed.worker, daskem.cli\n"
        "from daskem.worker_memory import load_e_step_code\n"
        "print(load_e_step_code())\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, check=True
        )
        return int(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def pause_fraction() -> float:
    """The share of its memory limit at which a worker stops running tasks.

    ``distributed.worker.memory.pause`` (0.8 by default); where pausing is disabled,
    ``distributed.worker.memory.terminate`` (the nanny's restart, 0.95), else 1.
    """
    for key in ("distributed.worker.memory.pause", "distributed.worker.memory.terminate"):
        value = dask.config.get(key, False)
        if value is not False and value is not None and 0 < float(value) <= 1:
            return float(value)
    return 1.0


def _terminate_fraction() -> float:
    value = dask.config.get("distributed.worker.memory.terminate", False)
    return float(value) if value not in (False, None) and 0 < float(value) <= 1 else 1.0


def _round_up(nbytes: float) -> int:
    return int(math.ceil(nbytes / ROUND_TO) * ROUND_TO)


def _mib(nbytes: float) -> str:
    return f"{nbytes / MiB:.0f} MiB"


def memory_limit_needed(baseline: int, block_bytes: int, threads: int, pause: float | None = None) -> int:
    """The smallest worker memory limit that runs a fit without pausing, in bytes.

    ``(baseline + threads x (BLOCK_COPIES x block_bytes + TASK_OVERHEAD_BYTES)) x HEADROOM
    / pause``, rounded up to a multiple of 16 MiB: every thread of a worker runs an E-step
    task on a block at the same time, and all of it must stay below the pause threshold.

    Parameters
    ----------
    baseline : int
        Resident memory of a worker with the E-step code loaded (bytes).
    block_bytes : int
        The data's largest block, as float64 (bytes).
    threads : int
        Task threads per worker.
    pause : float, optional
        Dask's pause fraction (default: :func:`pause_fraction`).

    Returns
    -------
    int
        Bytes.
    """
    pause = pause_fraction() if pause is None else pause
    tasks = max(1, threads) * (BLOCK_COPIES * max(0, block_bytes) + TASK_OVERHEAD_BYTES)
    return _round_up((baseline + tasks) * HEADROOM / pause)


def largest_block_bytes(source: Any) -> int:
    """The largest row block of a :class:`~daskem.io.sources.DataSource` as float64, in bytes.

    The E-step budgets float64 whatever the stored dtype (float32 blocks are worked on in
    float32 tiles, but their statistics and some buffers are float64). Sparse blocks
    count their stored values (:meth:`~daskem.io.sources.DataSource.largest_block_nbytes`);
    0 (nothing to check) when their size is unknown.
    """
    size = source.largest_block_nbytes()
    return int(size) if size != float("inf") else 0


def _is_local_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a cluster this process started (its --memory-limit applies)."""
    return getattr(client, "cluster", None) is not None


def _use(client: Any, nbytes: int) -> str:
    size = f"{nbytes // MiB}MiB"
    if _is_local_cluster(client):
        return f"Use --memory-limit {size} (or more)"
    return f"Start the workers with --memory-limit {size} (or more)"


def _memory_events(client: Any, since: float) -> list[dict[str, Any]]:
    """The nannies' memory restarts logged on the scheduler at or after ``since`` (a time.time())."""
    try:
        events = client.get_events(RESTART_TOPIC)
    except Exception:  # a closing client: nothing more to learn
        return []
    return [msg for stamp, msg in events if stamp >= since and isinstance(msg, dict)]


def _workers(client: Any, wait: float = 0.0) -> list[dict[str, Any]]:
    """The scheduler's workers, waiting up to ``wait`` seconds for one (workers restarting in a loop)."""
    deadline = time.monotonic() + wait
    while True:
        workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
        if workers or time.monotonic() >= deadline:
            return workers
        time.sleep(0.25)


@dataclass(frozen=True)
class WorkerMemoryCheck:
    """What :func:`check_worker_memory` measured (all sizes in bytes).

    Attributes
    ----------
    baseline : int
        The largest resident memory of a worker with daskem's E-step code loaded.
    measured_in : str
        ``"workers"``, or ``"a local process"`` where the workers died while measured.
    limit : int
        The smallest memory limit among the workers.
    threads : int
        The most task threads of a worker.
    block_bytes : int
        The data's largest block (float64).
    pause : float
        Dask's pause fraction.
    needed : int
        :func:`memory_limit_needed` of the above.
    """

    baseline: int
    measured_in: str
    limit: int
    threads: int
    block_bytes: int
    pause: float
    needed: int


def check_worker_memory(
    client: Any, block_bytes: int, *, timeout: float = MEASURE_TIMEOUT_SECONDS
) -> WorkerMemoryCheck | None:
    """Refuse a worker memory limit that cannot hold a worker's code plus its blocks.

    Call it once the cluster is up and the data source is opened, before the fit: it
    runs :func:`load_e_step_code` in every worker (``client.run``; the kernels stay
    loaded for the fit), takes the largest resident memory as the baseline and compares
    the smallest worker memory limit with :func:`memory_limit_needed` (baseline plus, per
    worker thread, the largest block twice and the tile buffers, below Dask's pause
    fraction). Workers that die while they load the code (their nanny restarts them
    above ``distributed.worker.memory.terminate``), or that were restarted for memory
    since this process started their cluster, fail the check too; the baseline is then
    measured in a fresh local Python process that imports what a worker imports.

    Parameters
    ----------
    client : distributed.Client or None
        The fit's client; ``None`` (local threads) checks nothing.
    block_bytes : int
        The data's largest block in bytes (:func:`largest_block_bytes`).
    timeout : float
        Seconds to wait for the workers' measurements.

    Returns
    -------
    WorkerMemoryCheck or None
        The measurement, or ``None`` where nothing was checked (no client, no worker, or
        workers without a memory limit).

    Raises
    ------
    WorkerMemoryError
        The limit is too small; the message names the measured baseline, the block
        size, the pause fraction and the ``--memory-limit`` to use.
    """
    if client is None:
        return None
    started = time.time()
    # Memory restarts before this call count only on a cluster this process started.
    since = 0.0 if _is_local_cluster(client) else started
    workers = _workers(client, wait=min(timeout, 60.0))
    logger.debug("check_worker_memory: %d worker(s) after %.1f s", len(workers), time.time() - started)
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    if not workers and not _memory_events(client, since):
        return None
    if workers and not any(limits):
        return None
    try:
        results = client.sync(client._run, load_e_step_code, on_error="return", callback_timeout=timeout)
    except Exception as err:  # the broadcast itself failed or timed out
        logger.info("measuring the workers' memory failed (%s: %s)", type(err).__name__, err)
        results = {}
    logger.debug("check_worker_memory: measured %r after %.1f s", results, time.time() - started)
    values = [int(v) for v in results.values() if isinstance(v, int | np.integer)]
    failures = [v for v in results.values() if isinstance(v, BaseException)]
    if failures and not any(isinstance(f, OSError | TimeoutError) for f in failures):
        # The code itself failed on a worker (not a lost connection): the fit will say why.
        logger.info("measuring the workers' memory failed: %r", failures[0])
        return None
    restarts = _memory_events(client, since)
    died = not values or bool(failures)
    baseline, measured_in = max(values, default=0), "the workers"
    if died:
        local = _worker_like_process_baseline(timeout)
        if local is not None and local > baseline:
            baseline, measured_in = local, "a fresh local process, as the workers died while measured"
        logger.debug("check_worker_memory: local process %r after %.1f s", local, time.time() - started)
    limit = min((lim for lim in limits if lim > 0), default=0)
    if not limit:  # no worker was up at the start: wait for one (they restart in a loop)
        workers = _workers(client, wait=10.0) or workers
        limit = min((int(w.get("memory_limit") or 0) for w in workers if w.get("memory_limit")), default=0)
    threads = max((int(w.get("nthreads", 1)) for w in workers), default=1)
    pause = pause_fraction()
    needed = memory_limit_needed(baseline, block_bytes, threads, pause)
    check = WorkerMemoryCheck(baseline, measured_in, limit, threads, block_bytes, pause, needed)
    logger.info(
        "worker memory: baseline %s (measured in %s), limit %s, %d thread(s) x block %s, pause at %.0f%%: needs %s",
        _mib(baseline),
        measured_in,
        _mib(limit),
        threads,
        _mib(block_bytes),
        100 * pause,
        _mib(needed),
    )
    if not restarts and not (limit and limit < needed):
        return check
    head = (
        f"--memory-limit {_mib(limit).replace(' ', '')} is too small for this fit"
        if _is_local_cluster(client) and limit
        else f"The workers' memory limit ({_mib(limit) if limit else 'unknown'}) is too small for this fit"
    )
    restarted = (
        f" The workers were restarted {len(restarts)} time(s) for going over {100 * _terminate_fraction():.0f}% "
        "of it (distributed.worker.memory.terminate)."
        if restarts
        else ""
    )
    blocks = threads * (BLOCK_COPIES * block_bytes)
    smaller = ", or use smaller blocks (--chunk-rows)" if blocks > 0.1 * needed else ""
    raise WorkerMemoryError(
        f"{head}: a worker holds {_mib(baseline)} once it has loaded daskem, numba and the E-step kernels "
        f"(measured in {measured_in}), and each of its {threads} thread(s) needs room for its block "
        f"({_mib(block_bytes)}, the data's largest, as float64) twice plus ~{_mib(TASK_OVERHEAD_BYTES)} of "
        f"buffers. Dask pauses a worker, which then runs no task, at {100 * pause:.0f}% of its limit "
        f"(distributed.worker.memory.pause = {pause:g}).{restarted} {_use(client, needed)}{smaller}."
    )


#: Worker task states that mean work is waiting on the worker.
_WAITING_STATES = ("ready", "waiting", "constrained", "fetch", "flight")


def _stalled(workers: list[dict[str, Any]], paused: list[dict[str, Any]]) -> bool:
    """Whether paused workers hold the fit up: a worker is paused and no task is running,
    while every worker is paused or some worker has tasks waiting (a paused worker keeps
    the tasks it was given, and the running ones may have nothing to do)."""
    if not paused:
        return False
    counts = [(w.get("metrics") or {}).get("task_counts") or {} for w in workers]
    executing = sum(int(c.get("executing", 0)) + int(c.get("long-running", 0)) for c in counts)
    waiting = sum(int(c.get(state, 0)) for c in counts for state in _WAITING_STATES)
    return executing == 0 and (len(paused) == len(workers) or waiting > 0)


#: The reason given to the scheduler for the tasks :class:`MemoryWatch` cancels.
CANCEL_REASON = "daskem: workers out of memory"


def _cancel_results(client_id: str, reason: str, msg: str | None, dask_scheduler: Any = None) -> int:
    """On the scheduler: cancel ``client_id``'s wanted tasks that no task depends on; return how many."""
    cs = dask_scheduler.clients.get(client_id)
    if cs is None:
        return 0
    keys = [ts.key for ts in cs.wants_what if not ts.dependents]
    if keys:
        dask_scheduler.stimulus_cancel(keys, client_id, False, reason, msg)
    return len(keys)


class MemoryWatch:
    """The state of a :func:`watch_worker_memory` block, polled by its thread.

    Attributes
    ----------
    reason : str or None
        Why the fit was stopped; ``None`` while it may go on.
    restarts : int
        Memory restarts of workers (by their nannies) since the watch started.
    """

    def __init__(
        self, client: Any, *, paused_seconds: float, max_restarts: int, interval: float, since: float | None = None
    ) -> None:
        self.client = client
        self.paused_seconds = paused_seconds
        self.max_restarts = max_restarts
        self.interval = interval
        self.since = time.time() if since is None else since
        self.reason: str | None = None
        self.restarts = 0
        self.limit = 0
        self.last_rss = 0
        self._paused_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daskem-memory-watch", daemon=True)

    def start(self) -> None:
        """Start polling in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10 * self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as err:  # a closing client; the fit's own error tells the rest
                logger.debug("memory watch: %s: %s", type(err).__name__, err)

    def poll(self, now: float | None = None) -> None:
        """Look at the cluster once; record a reason and cancel the fit's tasks when it stalls.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` of the observation (tests pass their own clock).
        """
        now = time.monotonic() if now is None else now
        events = _memory_events(self.client, self.since)
        self.restarts = len(events)
        if events:
            self.last_rss = max(int(events[-1].get("rss", 0) or 0), self.last_rss)
        workers = list(self.client.scheduler_info(n_workers=-1)["workers"].values())
        limits = [int(w.get("memory_limit") or 0) for w in workers]
        self.limit = min((lim for lim in limits if lim > 0), default=self.limit)
        if self.reason is None and self.restarts > self.max_restarts:
            self.reason = self._restart_message()
        paused = [w for w in workers if w.get("status") == "paused"]
        if not _stalled(workers, paused):
            self._paused_since = None
        elif self._paused_since is None:
            self._paused_since = now
        elif self.reason is None and now - self._paused_since > self.paused_seconds:
            memory = max(int((w.get("metrics") or {}).get("memory", 0) or 0) for w in paused)
            self.reason = self._pause_message(now - self._paused_since, memory, len(paused), len(workers))
        if self.reason is not None:
            self.cancel()

    def cancel(self) -> None:
        """Cancel the results the fit waits for, so that its compute returns (with an error).

        The scheduler cancels, in one step of its event loop, the client's tasks that no
        other task depends on (:func:`_cancel_results`). ``Client.cancel`` on every future
        of the client is not safe: cancelling a persisted block recurses into the E-step
        tasks that depend on it, which no client wants, and distributed's scheduler fails
        an assertion on them. Where the scheduler cannot run daskem's function, the
        client is closed instead.
        """
        try:
            self.client.run_on_scheduler(_cancel_results, self.client.id, CANCEL_REASON, self.reason)
        except Exception as err:
            logger.debug("cancelling on the scheduler failed (%s: %s); closing the client", type(err).__name__, err)
            self.client.close()

    def _suggest(self, factor: float, at_least: float = 0.0) -> str:
        if not self.limit:
            return "Use a larger --memory-limit"
        return _use(self.client, _round_up(max(factor * self.limit, at_least)))

    def _restart_message(self) -> str:
        rss = f" (the last at {_mib(self.last_rss)})" if self.last_rss else ""
        limit = f" of {_mib(self.limit)}" if self.limit else ""
        return (
            f"Workers were restarted {self.restarts} time(s) during the fit for going over "
            f"{100 * _terminate_fraction():.0f}% of their memory limit{limit}{rss} (the nannies' "
            f"distributed.worker.memory.terminate), so the fit could not make progress. {self._suggest(2.0)}, "
            "fewer --threads-per-worker or smaller blocks (--chunk-rows)."
        )

    def _pause_message(self, seconds: float, memory: int, n_paused: int, n_workers: int) -> str:
        pause = pause_fraction()
        if n_workers == 1:
            who, their = "The worker has", "its memory"
        elif n_paused == n_workers:
            who, their = f"All {n_workers} workers have", "their memory (the highest)"
        else:
            who, their = f"{n_paused} of {n_workers} workers have", "their memory (the highest)"
        return (
            f"{who} been paused for {seconds:.0f} s with tasks waiting and none running: {their}, "
            f"{_mib(memory)} of a {_mib(self.limit)} limit, is above Dask's pause threshold "
            f"(distributed.worker.memory.pause = {pause:g}, {100 * pause:.0f}% of the limit), where a worker "
            f"runs no task. {self._suggest(1.5, memory / pause * HEADROOM)}, fewer --threads-per-worker or "
            "smaller blocks (--chunk-rows)."
        )

    def killed_worker_message(self, err: BaseException) -> str | None:
        """The message for a fit ended by ``err``, if a ``KilledWorker`` is in its chain.

        distributed marks a task as failed (``KilledWorker``) once the workers running it
        died ``distributed.scheduler.allowed-failures`` + 1 times.
        """
        from distributed.scheduler import KilledWorker

        seen: set[int] = set()
        cause: BaseException | None = err
        while cause is not None and id(cause) not in seen and not isinstance(cause, KilledWorker):
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        if not isinstance(cause, KilledWorker):
            return None
        failures = getattr(cause, "allowed_failures", dask.config.get("distributed.scheduler.allowed-failures", 3))
        head = (
            f"Workers died {int(failures) + 1} times while running the task {cause.task!r}, so distributed gave "
            f"up on it (KilledWorker; distributed.scheduler.allowed-failures = {failures})."
        )
        if self.restarts:
            return f"{head} {self._restart_message()}"
        return (
            f"{head} The usual cause is memory: a worker killed by the operating system for using too much. "
            f"{self._suggest(2.0)}, fewer --threads-per-worker or smaller blocks (--chunk-rows)."
        )


#: The watch of the enclosing :func:`watch_worker_memory` block, if any (per thread/context).
_WATCHING: contextvars.ContextVar[MemoryWatch | None] = contextvars.ContextVar("daskem_memory_watch", default=None)


@contextlib.contextmanager
def watch_worker_memory(
    client: Any,
    *,
    paused_seconds: float = PAUSED_SECONDS,
    max_restarts: int = MAX_MEMORY_RESTARTS,
    interval: float = 1.0,
) -> Iterator[MemoryWatch | None]:
    """End a fit with a message, never a hang, when its workers run out of memory.

    A thread polls the scheduler every ``interval`` seconds while the block runs. When
    paused workers (``distributed.worker.memory.pause``) have held the fit up for more
    than ``paused_seconds`` (a worker paused, no task running on any worker, and every
    worker paused or tasks waiting on one), or the nannies restarted workers for memory
    (``distributed.worker.memory.terminate``, the ``worker-restart-memory`` events) more
    than ``max_restarts`` times, it records the reason and cancels the results the
    client waits for (:meth:`MemoryWatch.cancel`), so the fit's ``dask.compute`` returns
    with an error. On leaving the block,
    that reason is raised as :class:`~daskem.errors.WorkerMemoryError` whatever the
    block raised or returned; a ``KilledWorker`` raised in the block (distributed's own
    limit, ``distributed.scheduler.allowed-failures``) becomes one too. Other exceptions
    pass unchanged.

    Parameters
    ----------
    client : distributed.Client or None
        The fit's client; ``None`` (local threads) watches nothing.
    paused_seconds : float
        How long paused workers may hold the fit up.
    max_restarts : int
        Memory restarts the fit survives.
    interval : float
        Seconds between polls.

    Yields
    ------
    MemoryWatch or None
        The watch's state (``None`` without a client).

    Raises
    ------
    WorkerMemoryError
        The fit was stopped, or failed with ``KilledWorker``.

    Examples
    --------
    >>> with watch_worker_memory(client):  # doctest: +SKIP
    ...     GaussianMixture(8).fit("data.zarr")
    """
    if client is None:
        yield None
        return
    outer = _WATCHING.get()
    if outer is not None and outer.client is client:
        yield outer  # a block inside a watched one (a pass of a watched fit): one watch
        return
    watch = MemoryWatch(client, paused_seconds=paused_seconds, max_restarts=max_restarts, interval=interval)
    watch.start()
    token = _WATCHING.set(watch)
    try:
        yield watch
    except WorkerMemoryError:
        raise
    except Exception as err:
        watch.stop()
        with contextlib.suppress(Exception):
            watch.poll()  # the last restarts may have been logged after the last poll
        reason = watch.reason or watch.killed_worker_message(err)
        if reason is None:
            raise
        raise WorkerMemoryError(reason) from None
    finally:
        _WATCHING.reset(token)
        watch.stop()
    if watch.reason is not None:
        raise WorkerMemoryError(watch.reason)
