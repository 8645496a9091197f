"""The same fit on a distributed cluster of worker processes and on Dask's local threads.

Fixed chunking + fixed ``split_every`` + one BLAS thread per task make the fit bitwise
reproducible, so the parameters are compared with ``np.array_equal``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

import daskem
from daskem import GaussianMixture
from daskem.em.engine import current_client

pytestmark = pytest.mark.slow

PARAM_ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
N_SAMPLES, N_FEATURES, N_COMPONENTS, CHUNK_ROWS = 8192, 3, 3, 512  # 16 blocks


def _estimator():
    return GaussianMixture(N_COMPONENTS, random_state=0, tol=1e-6, split_every=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory, request):
    seed = request.getfixturevalue("seed")
    path = str(tmp_path_factory.mktemp("distributed") / "X.zarr")
    daskem.testing.write_mixture_zarr(path, N_SAMPLES, N_FEATURES, N_COMPONENTS, seed=seed, chunk_rows=CHUNK_ROWS)
    return {"numpy": np.asarray(zarr.open_array(path, mode="r")[...]), "zarr": path}


@pytest.fixture(scope="module")
def local_fits(data):
    """Fits on Dask's local threaded scheduler (requested before any client exists)."""
    assert current_client() is None
    return {kind: _estimator().fit(X) for kind, X in data.items()}


@pytest.fixture(scope="module")
def local_predictions(data, local_fits):
    assert current_client() is None
    gm = local_fits["numpy"]
    out = {m: getattr(gm, m)(data["numpy"]) for m in ("predict", "predict_proba", "score_samples")}
    out["score"] = gm.score(data["numpy"])
    return out


def _e_step_workers(task_stream):
    return {t["worker"] for t in task_stream.data if "_e_step" in str(t["key"])}


def test_cluster_is_worker_processes_on_localhost(client):
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert all(address.startswith("tcp://127.0.0.1:") for address in workers)
    assert all(w["nthreads"] == 1 for w in workers.values())
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2
    assert os.getpid() not in pids.values()
    assert current_client() is client


@pytest.mark.parametrize("kind", ["numpy", "zarr"])
def test_cluster_fit_equals_local_fit(client, data, local_fits, kind):
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        remote = _estimator().fit(data[kind])
    # The E-steps really ran on both worker processes.
    assert len(_e_step_workers(stream)) == 2
    local = local_fits[kind]
    for attr in PARAM_ATTRS:
        assert np.array_equal(getattr(remote, attr), getattr(local, attr)), attr
    assert remote.n_iter_ == local.n_iter_ > 2
    assert remote.lower_bounds_ == local.lower_bounds_
    assert remote.converged_ is local.converged_ is True
    assert type(remote.means_) is np.ndarray


def test_numpy_data_fitted_on_cluster_twice(client, data, local_fits):
    # In-memory data is persisted on the workers for the fit; a second fit in the same
    # session must not find it released.
    first = _estimator().fit(data["numpy"])
    second = _estimator().fit(data["numpy"])
    assert np.array_equal(first.means_, second.means_)
    assert np.array_equal(second.means_, local_fits["numpy"].means_)


def test_predict_on_cluster_equals_local(client, data, local_fits, local_predictions):
    gm = local_fits["numpy"]
    labels = gm.predict(data["numpy"])  # NumPy in: computed on the cluster, NumPy out
    assert type(labels) is np.ndarray
    assert np.array_equal(labels, local_predictions["predict"])
    for method in ("predict", "predict_proba", "score_samples"):
        lazy = getattr(gm, method)(data["zarr"])
        assert np.array_equal(client.compute(lazy).result(), local_predictions[method]), method
    assert gm.score(data["zarr"]) == local_predictions["score"]


def test_client_fixture_leaves_the_local_scheduler(cluster):
    # Runs after the tests above used the client fixture: its client is closed and no
    # longer the default, so daskem is back on Dask's local scheduler.
    assert current_client() is None
    assert cluster.status.name == "running"
