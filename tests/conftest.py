"""Shared fixtures: a seed, small data, a Zarr array on disk, a real distributed cluster.

The seed comes from the ``DASKEM_TEST_SEED`` environment variable (default 0) and is
printed in the pytest header, so a failure can be replayed with the same data.

Fixtures
--------
seed
    The session's data seed (int).
blobs
    ``(2000, 3)`` float64 NumPy array drawn from 3 well-separated Gaussians.
blobs_spec
    The :class:`daskem.testing.MixtureSpec` the blobs were drawn from.
zarr_factory
    ``zarr_factory(n_samples=4000, n_features=3, n_components=3, chunk_rows=500, seed=None)``
    writes a Zarr v3 array under ``tmp_path`` and returns its path (str).
mixture_zarr
    Path (str) of a ``(4000, 3)`` Zarr v3 array in chunks of 500 rows (``zarr_factory()``).
cluster
    Session-scoped ``distributed.LocalCluster``: 2 worker processes x 1 thread on 127.0.0.1.
client
    A ``distributed.Client`` to ``cluster``, closed after the test, so that other tests run
    on Dask's local scheduler again.

Hypothesis runs derandomised in CI (``CI`` set, as ``.ci/run`` runs the suite): the
``ci`` profile, a fixed sequence of examples, so that a CI run is reproducible and a
failure is not a matter of luck. Elsewhere the default profile explores freely; select
the CI one with ``--hypothesis-profile=ci``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

# Every Dask process the tests start (clusters here, the ``daskem`` command's local clusters,
# the deployment scripts' workers) inherits these through the environment: no statistical
# profiler sampling every thread's stack each 10 ms, and event-loop ticks (a diagnostic of a
# blocked loop) every second instead of every 20 ms. An idle 2-worker cluster then costs
# ~0.03 of a core instead of ~0.12; the suite keeps clusters alive for minutes on 2 cores.
# Nothing here tests the dashboard's profiles or the tick warnings.
os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "False")
os.environ.setdefault("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", "1s")

import dask  # after the environment above: dask reads it at import

dask.config.refresh()  # in case a plugin imported dask before this file

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from daskem.testing import MixtureSpec, make_mixture_array, write_mixture_zarr  # noqa: E402

SEED = int(os.environ.get("DASKEM_TEST_SEED", "0"))

# Registered and loaded here, before the test modules build their own settings on top of
# the loaded profile.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

BLOBS_SHAPE = (2000, 3)
BLOBS_COMPONENTS = 3
BLOBS_CHUNK_ROWS = 500


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the test files with the most ``slow`` tests first, each file's tests in their order.

    pytest-xdist (``--dist loadfile``, ``--no-loadscope-reorder`` in pyproject.toml) hands
    the files to its two processes in this order, as each finishes one: the long files
    (clusters, subprocesses, kills) start at once and the many short ones fill in at the
    end, so neither process is left alone with a long file while the other idles.
    """
    slow: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        path = item.nodeid.split("::", 1)[0]
        first.setdefault(path, index)
        slow[path] = slow.get(path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: (-slow[path := item.nodeid.split("::", 1)[0]], first[path]))


def pytest_report_header(config: pytest.Config) -> str:
    return f"daskem test seed: DASKEM_TEST_SEED={SEED}"


@pytest.fixture(scope="session")
def seed() -> int:
    """The data seed of this session (printed in the header and here)."""
    print(f"DASKEM_TEST_SEED={SEED}")
    return SEED


@pytest.fixture(scope="session")
def _blobs_session(seed: int) -> tuple[np.ndarray, MixtureSpec]:
    X, spec = make_mixture_array(*BLOBS_SHAPE, BLOBS_COMPONENTS, seed=seed, chunk_rows=BLOBS_CHUNK_ROWS)
    return np.asarray(X.compute()), spec


@pytest.fixture
def blobs(_blobs_session: tuple[np.ndarray, MixtureSpec]) -> np.ndarray:
    """A fresh copy of the (2000, 3) blobs: tests may modify it."""
    return _blobs_session[0].copy()


@pytest.fixture
def blobs_spec(_blobs_session: tuple[np.ndarray, MixtureSpec]) -> MixtureSpec:
    """True parameters of ``blobs``."""
    return _blobs_session[1]


@pytest.fixture
def zarr_factory(tmp_path, seed: int) -> Callable[..., str]:
    """Write a synthetic mixture to a Zarr v3 array in ``tmp_path``; returns its path."""
    counter = iter(range(1_000_000))

    def make(
        n_samples: int = 4000,
        n_features: int = 3,
        n_components: int = 3,
        *,
        chunk_rows: int = 500,
        seed: int | None = None,
        dtype: str = "float64",
    ) -> str:
        path = tmp_path / f"data-{next(counter)}.zarr"
        data_seed = SEED if seed is None else seed
        write_mixture_zarr(
            path, n_samples, n_features, n_components, seed=data_seed, chunk_rows=chunk_rows, dtype=dtype
        )
        return str(path)

    return make


@pytest.fixture
def mixture_zarr(zarr_factory: Callable[..., str]) -> str:
    """Path of a (4000, 3) float64 Zarr v3 array, 500 rows per chunk."""
    return zarr_factory()


@pytest.fixture(scope="session")
def cluster() -> Iterator[object]:
    """A LocalCluster of 2 worker processes x 1 thread, listening on 127.0.0.1 only."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="1GiB",
    ) as local_cluster:
        yield local_cluster


@pytest.fixture
def client(cluster) -> Iterator[object]:
    """A Client to the session cluster, the default scheduler for this test only."""
    from distributed import Client

    with Client(cluster) as c:
        yield c
