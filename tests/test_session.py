"""The fit session (:class:`daskem.em.session.FitSession`): one owner of every read of the data.

Checked by counting what happens, not by looking at the code:

* the data are persisted once per fit (cache=True), and never with cache=False, through
  initialisation, ``n_init > 1`` restarts and final passes (calls of ``dask.persist``);
* ``n_passes_`` is the exact number of full reads of the data: a source whose block
  reads are counted, for every estimator, and HMM ``score`` / ``decode`` / ``predict``
  passes are counted too;
* HMM predictions run as the engine's passes do: a lost pass is run again
  (``KilledWorker``) and BLAS is pinned to one thread, in every pass of a prediction;
* one threadpoolctl controller for a whole fit (a controller scans every loaded library).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import threadpoolctl
from sklearn.exceptions import ConvergenceWarning

from daskem import PPCA, GaussianHMM, GaussianMixture, KMeans
from daskem.em import FitSession, counting_passes, sample_rows
from daskem.em import session as session_module
from daskem.models.hmm import HMMModel
from daskem.testing import make_mixture_array

D = 3
LENGTHS = [700, 900, 600, 800]  # 3000 rows: sequences cross blocks of 750 rows

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.ascontiguousarray(make_mixture_array(3000, D, 3, seed=5, chunk_rows=3000)[0].compute())


def counted(X: np.ndarray, blocks: int, reads: list[int]) -> da.Array:
    """``X`` as a dask array of ``blocks`` blocks whose every read is appended to ``reads``."""
    rows = X.shape[0] // blocks

    def read(i: int) -> np.ndarray:
        reads.append(i)
        return X[i * rows : (i + 1) * rows]

    parts = [da.from_delayed(dask.delayed(read)(i), shape=(rows, D), dtype=X.dtype) for i in range(blocks)]
    return da.concatenate(parts)


ESTIMATORS: dict[str, Callable[[bool], Any]] = {
    "gmm-kmeans": lambda cache: GaussianMixture(3, n_init=2, max_iter=20, random_state=0, cache=cache),
    "gmm-random": lambda cache: GaussianMixture(3, init_params="random", max_iter=5, random_state=0, cache=cache),
    "kmeans": lambda cache: KMeans(3, n_init=2, random_state=0, cache=cache),
    "kmeans-k-means++": lambda cache: KMeans(3, init="k-means++", n_init=2, random_state=0, cache=cache),
    "ppca": lambda cache: PPCA(2, max_iter=30, n_init=2, cache=cache),
    "hmm-aligned": lambda cache: GaussianHMM(3, "full", n_iter=4, random_state=0, cache=cache),
    "hmm-carry": lambda cache: GaussianHMM(3, "full", n_iter=4, random_state=0, cache=cache),
}


def _fit(name: str, cache: bool, data: da.Array) -> Any:
    est = ESTIMATORS[name](cache)
    if name.startswith("hmm"):
        # Whole sequences fit blocks of 1000 rows (aligned); they cross blocks of 750 (carry).
        return est.fit(data.rechunk(1000 if name == "hmm-aligned" else 750), LENGTHS)
    return est.fit(data)


# -- persisted once, or never ----------------------------------------------------------------------


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_data_are_persisted_once_per_fit_and_never_uncached(X, monkeypatch, name, cache):
    calls: list[int] = []
    persist = dask.persist

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args))
        return persist(*args, **kwargs)

    monkeypatch.setattr(dask, "persist", counting)
    est = _fit(name, cache, da.from_array(X, chunks=(500, D)))
    assert est.n_passes_ >= est.n_iter_ > 0
    # One call persisting every block: 6 of 500 rows (HMMs: their 4 blocks of sequences).
    blocks = 4 if name.startswith("hmm") else 6
    assert calls == ([blocks] if cache else [])


# -- n_passes_ counts every read ---------------------------------------------------------------


@pytest.mark.parametrize("blocks", [1, 4])
@pytest.mark.parametrize("name", ["gmm-kmeans", "gmm-random", "kmeans", "kmeans-k-means++", "ppca"])
def test_n_passes_is_the_number_of_full_reads(X, name, blocks):
    reads: list[int] = []
    est = _fit(name, False, counted(X, blocks, reads))
    # A row sample or the first rows read one block of four (not a pass): one per start,
    # and the centring shift of "random" (the first 1,024 rows: two blocks of 750).
    partial = {
        "gmm-kmeans": 2,  # one row per start (k-means||)
        "gmm-random": 2,
        "kmeans": 2,
        "kmeans-k-means++": 0,  # the 100,000-row sample reads every block: a pass
        "ppca": 2,  # the first 1,024 rows
    }[name]
    assert len(reads) == blocks * est.n_passes_ + (partial if blocks > 1 else 0)
    assert est.n_passes_ >= est.n_iter_ > 0


def test_hmm_fit_score_and_predict_count_their_passes(X):
    reads: list[int] = []
    data = counted(X, 4, reads)  # 750-row blocks: sequences cross them (two reads a pass)
    est = GaussianHMM(3, "full", n_iter=4, random_state=0, cache=False).fit(data, LENGTHS)
    # k-means|| samples one row of one block (not a pass); every other read is a full pass.
    assert len(reads) == 4 * est.n_passes_ + 1
    assert est.n_passes_ > 2 * est.n_iter_  # two passes per iteration, and the initialisation's
    for call, passes in [
        (lambda: est.score(data, LENGTHS), 2),  # messages, then the forward pass
        (lambda: est.decode(data, LENGTHS), 1),  # the max-plus summaries (states: lazy)
        (lambda: est.predict(data, LENGTHS), 1),
        (lambda: est.predict_proba(data, LENGTHS), 1),  # the messages (posteriors: lazy)
    ]:
        del reads[:]
        with counting_passes() as count:
            call()
        assert count.passes == passes
        assert len(reads) == 4 * passes
    with counting_passes() as count:
        states = est.predict(X, LENGTHS)  # in memory: one block of whole sequences
    assert count.passes == 1
    assert states.shape == (X.shape[0],)


def test_sample_rows_reads_the_session_blocks(X):
    reads: list[int] = []
    session = FitSession(counted(X, 4, reads), cache=True)
    session.blocks()
    assert sorted(reads) == [0, 1, 2, 3]  # persisted once
    sample = sample_rows(session, 100, np.random.default_rng(0))
    assert sorted(reads) == [0, 1, 2, 3]  # taken from the persisted blocks
    assert sample.shape == (100, D)
    assert session.passes == 1  # a sample touching every block is a pass


# -- predictions run as the engine's passes ------------------------------------------------


def test_hmm_prediction_passes_are_run_again_when_their_tasks_are_lost(X, monkeypatch):
    from distributed import KilledWorker

    est = GaussianHMM(3, "full", n_iter=3, random_state=0).fit(X, LENGTHS)
    data = da.from_array(X, chunks=(750, D))
    expected = (est.score(data, LENGTHS), est.decode(data, LENGTHS)[0])
    compute = dask.compute
    failed: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(failed) < 2:
            failed.append(1)
            raise KilledWorker("lost-task", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
        return compute(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", flaky)
    assert est.score(data, LENGTHS) == expected[0]
    assert len(failed) == 2  # the message pass and the forward pass were each lost once
    del failed[:]
    assert est.decode(data, LENGTHS)[0] == expected[1]
    assert len(failed) == 2


def test_hmm_prediction_passes_run_with_blas_pinned(X, monkeypatch):
    threads: list[int] = []

    def blas_threads() -> None:
        blas = [i["num_threads"] for i in session_module.blas_controller().info() if i["user_api"] == "blas"]
        threads.append(min(blas))

    for method in ("summarize", "viterbi_summary", "decode", "log_likelihood_rows"):
        original = getattr(HMMModel, method)

        def wrapped(self: Any, *args: Any, _original: Any = original) -> Any:
            blas_threads()
            return _original(self, *args)

        monkeypatch.setattr(HMMModel, method, wrapped)
    est = GaussianHMM(3, "full", n_iter=2, random_state=0).fit(X, LENGTHS)
    data = da.from_array(X, chunks=(750, D))  # sequences cross blocks: message passes too
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        del threads[:]
        est.score(data, LENGTHS)
        est.decode(data, LENGTHS)
        est.predict(X, LENGTHS)
    # score: summaries and forward pass (4 blocks each); decode: the max-plus summaries; predict:
    # the one in-memory block.
    assert len(threads) == 4 + 4 + 4 + 1
    assert set(threads) == {1}


# -- one BLAS controller -------------------------------------------------------------------------


def test_one_blas_controller_for_a_whole_fit(X, monkeypatch):
    made: list[int] = []

    class Counting(threadpoolctl.ThreadpoolController):
        def __init__(self) -> None:
            made.append(1)
            super().__init__()

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Counting)
    session_module.blas_controller.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = GaussianMixture(3, max_iter=20, tol=0.0, random_state=0).fit(da.from_array(X, chunks=(500, D)))
        assert est.n_iter_ == 20
        assert len(made) == 1
    finally:
        session_module.blas_controller.cache_clear()


def test_one_numpy_block_runs_its_e_step_on_the_driver_with_the_graphs_bits(X):
    """One in-memory block on local threads: the pass makes no dask compute (its graph would
    cost more than the E-step), is counted, and gives the graph's statistics bit for bit."""
    from daskem.em.graph import stats_graph
    from daskem.models.gmm import GaussianMixtureModel

    model = GaussianMixtureModel(3, "full")
    params = model.params_from_responsibilities(X, np.eye(3)[np.arange(X.shape[0]) % 3])
    session = FitSession(X)
    assert session.driver_block() is not None  # the block's value, taken once
    computes: list[Any] = []
    with dask.callbacks.Callback(start=computes.append):
        stats = session.stats(model, params)
        session.stats(model, params)
    assert computes == []
    assert session.passes == 2
    (expected,) = dask.compute(stats_graph(model, params, session.blocks(), session.split_every))
    for name in ("shift", "resp_sum", "first", "second"):
        assert getattr(stats, name).tobytes() == getattr(expected, name).tobytes(), name
    assert stats.loglik == expected.loglik
    # Two blocks: the pass is a dask compute again.
    two = FitSession(da.from_array(X, chunks=(1500, D)))
    two.blocks()  # a dask array is persisted once (cache='auto'): not a pass
    computes.clear()
    with dask.callbacks.Callback(start=computes.append):
        two.stats(model, params)
    assert len(computes) == 1
    assert two.driver_block() is None
