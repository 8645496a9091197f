"""Worker memory limits: refused when unreadable or too small, and fits that stall end with a message.

A worker that has loaded daskem, numba and the E-step kernels holds ~275 MiB, and Dask
pauses a worker at 80% of its memory limit (its nanny restarts it at 95%). Before these
checks, ``--memory-limit 400MiB`` waited forever, ``100MiB`` restarted workers forever,
and ``lots`` / ``-2GiB`` ended in tracebacks. Every test here runs real processes (a
LocalCluster of worker processes, started by the ``daskem`` command or here) under a
timeout, so a regression fails instead of hanging: the command runs in this process
(Click's runner) under ``pytest.mark.timeout``.
"""

from __future__ import annotations

import functools
import re
import time

import click
import dask
import pytest
from distributed import Client

from daskem import worker_memory
from daskem.cli import MemoryLimit, local_cluster
from daskem.errors import WorkerMemoryError
from daskem.testing import write_mixture_zarr
from daskem.testing.cli import invoke_cli
from daskem.worker_memory import _stalled, memory_limit_needed, watch_worker_memory

pytestmark = pytest.mark.slow

#: Bound on a refused or stalled run: cluster start-up, measurement and shutdown on a
#: loaded 2-core machine take well under it; the old code never ended.
ENDS_WITHIN_SECONDS = 180

USE = re.compile(r"Use --memory-limit (\d+)MiB \(or more\)")

FIT = ["-k", "3", "--max-iter", "5", "--seed", "0", "--progress", "none"]

#: Workers that may neither spill to disk nor be restarted by their nanny: cached data
#: larger than the pause threshold can only pause them, whatever a worker's baseline.
PAUSE_ONLY = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.terminate": False,
}


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def small_zarr(tmp_path_factory) -> str:
    """A 6 MB dataset: 50,000 x 16 float64 in blocks of 10,000 rows."""
    path = tmp_path_factory.mktemp("memory") / "small.zarr"
    write_mixture_zarr(path, 50_000, 16, 3, seed=0, chunk_rows=10_000)
    return str(path)


# -- parse time ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["lots", "-2GiB", "0", "1e400"])
def test_unreadable_memory_limit_is_a_usage_error(value, small_zarr):
    result = invoke_cli("fit", small_zarr, *FIT, f"--memory-limit={value}")
    assert result.returncode == 2, result.stderr
    err = _words(result.stderr)
    assert f"Invalid value for '--memory-limit': '{value}' is not a memory size" in err
    assert "such as 2GiB or 512MiB" in err
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), ("AUTO", "auto"), ("2GiB", "2GiB"), (" 512 MiB", "512 MiB"), ("4e9", "4e9")],
)
def test_memory_limit_accepts_what_distributed_reads(value, expected):
    assert MemoryLimit().convert(value, None, None) == expected


def test_memory_limit_refuses_garbage_in_process():
    with pytest.raises(click.BadParameter, match="'nan' is not a memory size"):
        MemoryLimit().convert("nan", None, None)


# -- the start-up check ----------------------------------------------------------------


@pytest.mark.timeout(ENDS_WITHIN_SECONDS)
@pytest.mark.parametrize("limit", ["250MiB", "100MiB"])
def test_too_small_limit_ends_with_the_limit_to_use(limit, small_zarr):
    start = time.monotonic()
    # One worker: the check is per worker, and each worker started costs seconds of CPU.
    result = invoke_cli("fit", small_zarr, *FIT, "--workers", "1", "--memory-limit", limit)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    err = _words(result.stderr)
    assert f"Error: --memory-limit {limit} is too small for this fit" in err
    assert "once it has loaded daskem, numba and the E-step kernels" in err
    assert "(distributed.worker.memory.pause = 0.8)" in err
    baseline = int(re.search(r"a worker holds (\d+) MiB", err).group(1))
    assert 150 <= baseline <= 1000, err
    use = int(USE.search(err).group(1))
    assert use >= baseline / 0.8, err
    print(f"--memory-limit {limit}: refused after {elapsed:.0f} s; baseline {baseline} MiB, use {use} MiB")


@pytest.mark.timeout(2 * ENDS_WITHIN_SECONDS)
def test_the_limit_the_message_names_fits(small_zarr):
    # One worker (the limit is per worker): half the processes of the default two.
    refused = invoke_cli("fit", small_zarr, *FIT, "--workers", "1", "--memory-limit", "250MiB")
    assert refused.returncode == 1, refused.stderr
    use = USE.search(_words(refused.stderr))
    assert use is not None, refused.stderr
    fitted = invoke_cli("fit", small_zarr, *FIT, "--workers", "1", "--memory-limit", f"{use.group(1)}MiB")
    assert fitted.returncode == 0, fitted.stderr
    assert "converged" in fitted.stdout + fitted.stderr


# -- during the fit ----------------------------------------------------------------------


@pytest.mark.timeout(ENDS_WITHIN_SECONDS)
def test_fit_whose_workers_pause_ends_with_a_message(tmp_path, monkeypatch):
    """544 MiB passes the start-up check (2.6 MB blocks), but the cached data (410 MB on
    one worker that may not spill them to disk) take the worker over its pause threshold
    (435 MiB, whatever the worker's own baseline on the machine running the tests), and
    its nanny may not restart it: the fit used to wait forever.

    In this process: the workers' configuration is this process's (a nanny hands its
    own to its worker), and the stall is reported after 2 s of pause instead of the
    command's 30 s (``paused_seconds``, a tuning, not what is tested here)."""
    monkeypatch.setattr(worker_memory, "watch_worker_memory", functools.partial(watch_worker_memory, paused_seconds=2))
    path = tmp_path / "cached.zarr"
    write_mixture_zarr(path, 3_200_000, 16, 3, seed=0, chunk_rows=20_000)
    start = time.monotonic()
    with dask.config.set(PAUSE_ONLY):
        result = invoke_cli("fit", path, *FIT, "--workers", "1", "--cache", "yes", "--memory-limit", "544MiB")
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    err = _words(result.stderr)
    assert "Error: The worker has been paused for" in err
    assert "with tasks waiting and none running" in err
    assert "(distributed.worker.memory.pause = 0.8, 80% of the limit)" in err
    assert int(USE.search(err).group(1)) > 544
    print(f"paused fit ended after {elapsed:.0f} s")


def _make_hog():
    def hog() -> float:
        """Touch 1.6 GB: far over the test workers' 600 MiB limit."""
        import numpy as np

        return float(np.ones(200 * 2**20).sum())

    return hog  # a nested function: pickled by value, nothing for the worker to import


def test_watch_ends_a_fit_whose_workers_keep_being_restarted():
    hog = _make_hog()
    start = time.monotonic()
    with (
        local_cluster(1, 1, "600MiB") as cluster,
        Client(cluster) as client,
        pytest.raises(WorkerMemoryError, match=r"Workers were restarted \d+ time\(s\) during the fit") as info,
        watch_worker_memory(client, max_restarts=1, interval=0.2),
    ):
        client.submit(hog, pure=False).result(timeout=120)
    elapsed = time.monotonic() - start
    message = _words(str(info.value))
    assert "over 95% of their memory limit of 600 MiB" in message
    assert "Use --memory-limit 1200MiB (or more)" in message
    assert elapsed < 120


def test_killed_worker_becomes_the_memory_message():
    """distributed's own limit: a task whose workers died allowed-failures + 1 times."""
    hog = _make_hog()
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        local_cluster(1, 1, "600MiB") as cluster,
        Client(cluster) as client,
        pytest.raises(WorkerMemoryError, match="so distributed gave up on it") as info,
        watch_worker_memory(client, max_restarts=100, interval=0.2),
    ):
        client.submit(hog, pure=False).result(timeout=120)
    message = _words(str(info.value))
    assert "Workers died 2 times while running the task" in message
    assert "(KilledWorker; distributed.scheduler.allowed-failures = 1)" in message
    assert "Use --memory-limit 1200MiB (or more)" in message


# -- the rules, without a cluster --------------------------------------------------------


def test_memory_limit_needed_counts_every_thread_block():
    mib = 2**20
    one = memory_limit_needed(325 * mib, 10 * mib, 1, 0.8)
    four = memory_limit_needed(325 * mib, 10 * mib, 4, 0.8)
    assert one % (16 * mib) == 0
    assert one >= (325 + 2 * 10 + 16) * mib / 0.8
    assert four - one >= 3 * (2 * 10 + 16) * mib / 0.8


def _worker(status: str, **counts: int) -> dict:
    return {"status": status, "metrics": {"task_counts": counts, "memory": 0}}


def test_stalled_means_paused_with_work_waiting_and_nothing_running():
    paused_ready = _worker("paused", ready=5)
    running_idle = _worker("running", memory=3)
    running_busy = _worker("running", executing=1, ready=2)
    assert _stalled([paused_ready], [paused_ready])
    assert _stalled([paused_ready, running_idle], [paused_ready])  # the paused worker keeps its tasks
    assert not _stalled([paused_ready, running_busy], [paused_ready])  # progress elsewhere
    assert not _stalled([running_idle], [])
    idle_paused = _worker("paused", memory=3)
    assert _stalled([idle_paused], [idle_paused])  # every worker paused: nothing can run
    assert not _stalled([idle_paused, running_idle], [idle_paused])  # nothing waiting: not a stall


@pytest.mark.timeout(ENDS_WITHIN_SECONDS)
def test_python_fit_whose_workers_pause_raises_instead_of_hanging(tmp_path, monkeypatch):
    """The same stall through the Python API, on a cluster the user made: every pass of a
    fit is watched, so ``fit`` raises ``WorkerMemoryError`` naming the limit to use (it
    used to wait forever; only the ``daskem`` command watched)."""
    from distributed import LocalCluster

    from daskem import GaussianMixture
    from daskem.em import session as session_module

    monkeypatch.setattr(session_module, "watch_worker_memory", functools.partial(watch_worker_memory, paused_seconds=2))
    path = tmp_path / "cached.zarr"
    write_mixture_zarr(path, 3_200_000, 16, 3, seed=0, chunk_rows=20_000)
    with (
        dask.config.set(PAUSE_ONLY),
        LocalCluster(
            n_workers=1, threads_per_worker=1, memory_limit="544MiB", host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster),
        pytest.raises(WorkerMemoryError, match=r"The worker has been paused for \d+ s with tasks waiting") as raised,
    ):
        GaussianMixture(3, max_iter=5, random_state=0, cache=True).fit(str(path))
    assert int(USE.search(_words(str(raised.value))).group(1)) > 544
