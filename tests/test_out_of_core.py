"""A fit on a Zarr store several times larger than the workers' total memory limit.

A real LocalCluster of worker processes, each with a memory limit and Dask's default
memory thresholds, fits a GaussianMixture on a float64 Zarr store over three times
the sum of the limits. ``cache="auto"`` must stream the data, and while the fit runs
a background thread samples every worker's resident memory and status. The fit must
complete without any worker being restarted, paused or spilling, and each worker's
peak resident memory (the kernel's high-water mark, ``VmHWM``, and the samples) must
stay below its limit.

A worker process holds about 240 MiB before it reads any data (NumPy, SciPy,
scikit-learn, Zarr and the libraries ``dask.array`` imports), so the limit is 512 MiB
per worker: the working set of a streamed fit (a few blocks of 8 MiB and the E-step's
tile buffers) has to fit between that floor and the pause threshold.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import dask
import numpy as np
import psutil
import pytest
import zarr

import daskem
from daskem.cli import WORKER_ENVIRON
from daskem.testing import make_mixture_array

pytestmark = pytest.mark.slow

N_WORKERS = 2
# Bytes per worker: a worker holds ~180 MiB of imports (dask, zarr, pandas and xarray when
# installed) plus ~90 MiB of numba and the kernels once the initialisation runs.
MEMORY_LIMIT = 512 * 2**20
N_FEATURES, N_COMPONENTS = 16, 4
CHUNK_ROWS = 65_536  # 8 MiB blocks
N_SAMPLES = 400 * CHUNK_ROWS  # 3.13 GiB of float64: 3.1x the workers' total limit
MIN_RATIO = 3.0

#: Dask's default memory thresholds, set explicitly so that a user config cannot change them.
MEMORY_CONFIG = {
    "distributed.worker.memory.target": 0.6,
    "distributed.worker.memory.spill": 0.7,
    "distributed.worker.memory.pause": 0.8,
    "distributed.worker.memory.terminate": 0.95,
    "distributed.worker.memory.monitor-interval": "100ms",
}

#: Worker and nanny log lines that mean memory pressure: spilling, pausing, killing.
PRESSURE_MARKERS = ("Pausing worker", "Unpausing", "spill", "exceeded", "Restarting", "memory budget")

POLL_SECONDS = 0.1


def _peak_rss() -> int:
    """This process's peak resident memory so far (``VmHWM``), else its current RSS."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return int(psutil.Process().memory_info().rss)


def _probe(dask_worker: Any) -> dict[str, Any]:
    """Run on a worker: its process id, memory now and at peak, status and spilled data."""
    spilled = getattr(dask_worker.data, "slow", None)
    return {
        "pid": os.getpid(),
        "rss": int(psutil.Process().memory_info().rss),
        "peak": _peak_rss(),
        "status": dask_worker.status.name,
        "spilled": len(spilled) if spilled is not None else 0,
        "memory_limit": dask_worker.memory_manager.memory_limit,
        "pause": dask.config.get("distributed.worker.memory.pause"),
    }


class WorkerSampler:
    """Samples :func:`_probe` on every worker every :data:`POLL_SECONDS` in a thread."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.samples: list[dict[str, dict[str, Any]]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.client.run(_probe))
            except BaseException as err:  # reported by the test
                self.errors.append(err)
                return
            self._stop.wait(POLL_SECONDS)

    def __enter__(self) -> WorkerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.samples.append(self.client.run(_probe))  # a last sample, for the final high-water marks


#: Distinct blocks of the store: a mixture sample of this many blocks, written over and over.
DISTINCT_BLOCKS = 8


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory, seed: int) -> str:
    """The store: ``DISTINCT_BLOCKS`` blocks of a mixture sample (64 MiB), repeated to
    ``N_SAMPLES`` rows. Generating all 400 blocks takes minutes on a small machine, and
    what the rows are does not matter here: every block is a chunk file of its own, read
    on every pass. The repeated chunk files are hard links to the written ones (writing
    3.1 GiB took twenty seconds; the readers open and decode every chunk all the same)."""
    path = str(tmp_path_factory.mktemp("out_of_core") / "X.zarr")
    sample, _ = make_mixture_array(
        DISTINCT_BLOCKS * CHUNK_ROWS, N_FEATURES, N_COMPONENTS, seed=seed, chunk_rows=CHUNK_ROWS
    )
    blocks = np.asarray(sample.compute()).reshape(DISTINCT_BLOCKS, CHUNK_ROWS, N_FEATURES)
    target = zarr.create_array(
        store=path,
        shape=(N_SAMPLES, N_FEATURES),
        chunks=(CHUNK_ROWS, N_FEATURES),
        dtype=np.float64,
        compressors=None,  # random floats do not compress (as write_mixture_zarr writes them)
    )
    for i in range(DISTINCT_BLOCKS):  # before any cluster exists
        target[i * CHUNK_ROWS : (i + 1) * CHUNK_ROWS] = blocks[i]
    chunks = Path(path) / "c"  # Zarr v3's default chunk keys: c/<row block>/<column block>
    for i in range(DISTINCT_BLOCKS, N_SAMPLES // CHUNK_ROWS):
        (chunks / str(i)).mkdir()
        os.link(chunks / str(i % DISTINCT_BLOCKS) / "0", chunks / str(i) / "0")
    assert np.array_equal(
        zarr.open_array(path, mode="r")[-CHUNK_ROWS:], blocks[(N_SAMPLES // CHUNK_ROWS - 1) % DISTINCT_BLOCKS]
    )
    return path


@pytest.fixture
def limited_client() -> Any:
    """A Client to a LocalCluster of 2 worker processes x 1 thread, each limited to MEMORY_LIMIT."""
    from distributed import Client, LocalCluster

    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRON}
    with (
        dask.config.set({**MEMORY_CONFIG, "distributed.nanny.pre-spawn-environ": environ}),
        LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=MEMORY_LIMIT,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(N_WORKERS)
        yield client


def _nanny_pids(client: Any) -> dict[str, int]:
    return {name: nanny.process.pid for name, nanny in client.cluster.workers.items()}


def _pressure_lines(logs: dict[str, Any]) -> list[str]:
    return [
        f"{address}: {message}"
        for address, entries in logs.items()
        for _level, message in entries
        if any(marker.lower() in message.lower() for marker in PRESSURE_MARKERS)
    ]


def test_fit_streams_store_larger_than_cluster_memory(limited_client, big_store, caplog) -> None:
    client = limited_client
    store = zarr.open_array(big_store, mode="r")
    assert store.shape == (N_SAMPLES, N_FEATURES)
    assert store.dtype == np.float64
    workers_before = client.scheduler_info(n_workers=-1)["workers"]
    limits = [w["memory_limit"] for w in workers_before.values()]
    assert limits == [MEMORY_LIMIT] * N_WORKERS
    assert store.nbytes >= MIN_RATIO * sum(limits), "the store must be several times the total memory limit"

    first = client.run(_probe)
    for info in first.values():
        assert info["memory_limit"] == MEMORY_LIMIT
        assert info["pause"] == 0.8  # the thresholds reached the worker processes
        assert info["status"] == "running"
    # Headroom the fit may use before the pause threshold.
    assert max(info["rss"] for info in first.values()) < 0.6 * MEMORY_LIMIT
    nannies_before = _nanny_pids(client)

    # Means drawn from the data (a read of k rows), not k-means||: the ~17 initialisation
    # passes over the store would only repeat the passes whose memory this test watches.
    gm = daskem.GaussianMixture(
        N_COMPONENTS, covariance_type="full", max_iter=2, tol=0.0, random_state=0, init_params="random_from_data"
    )
    start = time.perf_counter()
    with (
        caplog.at_level(logging.INFO, logger="daskem"),
        WorkerSampler(client) as sampler,
        pytest.warns(Warning, match="did not converge"),  # max_iter=2, tol=0: by design
    ):
        gm.fit(big_store)
    seconds = time.perf_counter() - start

    # The fit completed, on the streamed data: every iteration a pass over the whole store.
    assert gm.n_iter_ == 2
    assert gm.n_passes_ >= 2
    assert np.isfinite(gm.lower_bound_)
    assert np.all(np.isfinite(gm.means_))
    messages = [r.getMessage() for r in caplog.records if r.name == "daskem"]
    assert any("streamed from the source on every pass" in m for m in messages), messages
    assert not any("cached once" in m for m in messages), messages

    # No worker was restarted: same addresses, same worker and nanny processes.
    assert not sampler.errors, sampler.errors
    workers_after = client.scheduler_info(n_workers=-1)["workers"]
    assert set(workers_after) == set(workers_before)
    assert {a: s["pid"] for a, s in sampler.samples[-1].items()} == {a: s["pid"] for a, s in first.items()}
    assert _nanny_pids(client) == nannies_before
    assert all(w["status"] == "running" for w in workers_after.values())

    # No worker was ever paused or spilled, and none logged memory pressure.
    assert len(sampler.samples) >= 10, "the sampler must have watched the fit"
    statuses = {s["status"] for sample in sampler.samples for s in sample.values()}
    assert statuses == {"running"}, statuses
    assert max(s["spilled"] for sample in sampler.samples for s in sample.values()) == 0
    pressure = _pressure_lines(client.get_worker_logs()) + _pressure_lines(client.get_worker_logs(nanny=True))
    assert not pressure, pressure

    # Peak resident memory of every worker stayed below its limit.
    peaks = {
        address: max(max(sample[address]["rss"], sample[address]["peak"]) for sample in sampler.samples)
        for address in first
    }
    report = ", ".join(f"{p / 2**20:.0f} MiB" for p in peaks.values())
    print(
        f"\nstore {store.nbytes / 2**30:.2f} GiB = {store.nbytes / sum(limits):.1f}x the total limit "
        f"({N_WORKERS} x {MEMORY_LIMIT / 2**20:.0f} MiB); fit {seconds:.1f}s, {len(sampler.samples)} samples; "
        f"peak worker RSS: {report}"
    )
    for address, peak in peaks.items():
        assert peak < MEMORY_LIMIT, f"{address} peaked at {peak / 2**20:.0f} MiB"
