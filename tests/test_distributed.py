"""The same fit on a distributed cluster of worker processes and on Dask's local threads.

Fixed chunking + fixed ``split_every`` + one BLAS thread per task make the fit bitwise
reproducible, so the parameters are compared with ``np.array_equal``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import FactorAnalysis, GaussianHMM, GaussianMixture, KMeans
from daskem.em.sequences import sequence_source
from daskem.em.session import current_client
from daskem.io import as_source

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


# -- one key, one task: no "Detected different `run_spec`" from the scheduler -------------

RUN_SPEC = "Detected different `run_spec`"
HMM_LENGTHS = [1000] * 8 + [192]  # 8192 rows; sequences cross the 512-row Zarr chunks
ESTIMATORS = {
    "gmm": (_estimator, ("weights_", "means_", "covariances_")),
    "kmeans": (lambda: KMeans(N_COMPONENTS, random_state=0, split_every=4), ("cluster_centers_", "inertia_")),
    "hmm": (
        lambda: GaussianHMM(N_COMPONENTS, random_state=0, n_iter=5, split_every=4),
        ("startprob_", "transmat_", "means_", "covars_"),
    ),
    "fa": (
        lambda: FactorAnalysis(2, random_state=0, max_iter=30, split_every=4),  # not to convergence: keys
        ("components_", "mean_", "noise_variance_"),
    ),
}


def _fit(name, X):
    est = ESTIMATORS[name][0]()
    return est.fit(X, HMM_LENGTHS) if name == "hmm" else est.fit(X)


@pytest.fixture(scope="module")
def local_estimator_fits(data):
    """Every estimator fitted on Dask's local threads (requested before any client exists)."""
    assert current_client() is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # factor analysis stops at max_iter
        return {(name, kind): _fit(name, X) for name in ESTIMATORS for kind, X in data.items()}


def _start_recording(dask_scheduler=None):
    # The scheduler reports a key submitted twice with different tasks by logging (its
    # `distributed.scheduler` logger, which does not propagate to the root logger), not
    # with `warnings`: record its WARNING records where it runs.
    class Recorder(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    recorder = Recorder()
    logger = logging.getLogger("distributed.scheduler")
    # A daskem command run in this process (CliRunner) quiets distributed's loggers.
    recorder.level_before = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(recorder)
    dask_scheduler._daskem_test_recorder = recorder


def _stop_recording(dask_scheduler=None):
    recorder = dask_scheduler.__dict__.pop("_daskem_test_recorder")
    logger = logging.getLogger("distributed.scheduler")
    logger.removeHandler(recorder)
    logger.setLevel(recorder.level_before)
    return recorder.messages


@contextlib.contextmanager
def scheduler_warnings(client) -> Iterator[list[str]]:
    """The messages the scheduler logs at WARNING or above meanwhile (filled on exit)."""
    messages: list[str] = []
    client.run_on_scheduler(_start_recording)
    try:
        yield messages
    finally:
        messages.extend(client.run_on_scheduler(_stop_recording))


def _identity(*args):
    return args


def test_scheduler_warnings_catch_a_key_collision(client):
    # The recorder sees the warning when one key is given two different tasks.
    held = client.persist(dask.delayed(_identity)(dask.delayed(_identity)(1, dask_key_name="a"), dask_key_name="k"))
    other = dask.delayed(_identity)(dask.delayed(_identity)(2, dask_key_name="b"), dask_key_name="k")
    with scheduler_warnings(client) as logged:
        client.compute(other).result()
    del held
    assert any(RUN_SPEC in m and "'k'" in m for m in logged), logged


@pytest.mark.parametrize("kind", ["numpy", "zarr"])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_cluster_fits_submit_one_task_per_key(client, data, local_estimator_fits, name, kind):
    # A cached fit persists its blocks; its initialisation (one sampled row, the first rows)
    # reads the same source meanwhile: the block keys must stand for the same tasks.
    with warnings.catch_warnings(record=True) as caught, scheduler_warnings(client) as logged:
        warnings.simplefilter("always")
        remote = _fit(name, data[kind])
    assert not [m for m in logged if RUN_SPEC in m], logged
    assert not [w for w in caught if RUN_SPEC in str(w.message)]
    local = local_estimator_fits[name, kind]
    for attr in ESTIMATORS[name][1]:
        assert np.array_equal(getattr(remote, attr), getattr(local, attr)), attr


@pytest.mark.parametrize("cache", [True, False])
def test_zarr_array_with_a_shared_handle_fits_without_a_key_collision(client, data, monkeypatch, cache):
    # da.from_zarr keeps the Zarr handle as one key that every block depends on
    # (inline_array=False). k-means|| starts from one sampled row per run: taken from the
    # fit's blocks (persisted, when cached), not from a graph that fuses the handle into
    # one block's task under the persisted block's key. The blocks are persisted once, or
    # never (cache=False).
    from distributed import Client

    persisted: list[int] = []
    persist = Client.persist

    def counting(self, collections, *args, **kwargs):
        persisted.append(len(collections))
        return persist(self, collections, *args, **kwargs)

    monkeypatch.setattr(Client, "persist", counting)
    with warnings.catch_warnings(record=True) as caught, scheduler_warnings(client) as logged:
        warnings.simplefilter("always")
        est = GaussianMixture(N_COMPONENTS, n_init=2, random_state=0, split_every=4, cache=cache)
        est.fit(da.from_zarr(data["zarr"]))
    assert not [m for m in logged if RUN_SPEC in m], logged
    assert not [w for w in caught if RUN_SPEC in str(w.message)]
    # Cached: the blocks persisted once, as leaf groups of split_every (4) blocks, a group
    # per task of a pass (FitSession.leaf_groups).
    assert persisted == ([N_SAMPLES // CHUNK_ROWS // 4] if cache else [])
    assert est.converged_


def test_start_flag_column_has_the_same_keys_every_time(data):
    # Built again (fit, then score or predict), the start-flag column must give the same
    # keys the same dependencies: no randomly named intermediate task under a fixed key.
    raw = as_source(data["zarr"])
    graphs = [dict(sequence_source(as_source(raw, lengths=HMM_LENGTHS))[0].array.__dask_graph__()) for _ in range(2)]
    assert graphs[0].keys() == graphs[1].keys()
    for key in graphs[0]:
        assert dask.core.get_dependencies(graphs[0], key) == dask.core.get_dependencies(graphs[1], key), key


def test_client_fixture_leaves_the_local_scheduler(cluster):
    # Runs after the tests above used the client fixture: its client is closed and no
    # longer the default, so daskem is back on Dask's local scheduler.
    assert current_client() is None
    assert cluster.status.name == "running"
