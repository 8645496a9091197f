"""LatentDirichletAllocation (issue 16): scikit-learn as the oracle, chunking, out of core, checkpoints.

scikit-learn's fits draw every document's starting ``gamma`` at random; daskem starts every
document from 1, scikit-learn's start when it draws nothing (its ``transform``, ``score``
and ``perplexity``). The comparisons align scikit-learn to it by setting ``random_state_``
to None after ``_init_latent_vars`` (its E-step then takes the constant start), with the
same ``components_``.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import LatentDirichletAllocation as SklearnLDA
from sklearn.decomposition._online_lda_fast import _dirichlet_expectation_2d

import daskem
from daskem import LatentDirichletAllocation
from daskem.errors import DataError, ParameterError
from daskem.models.lda import LDAModel
from daskem.testing import ModelContract

K, V, N = 4, 40, 300


def relative(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def lda_corpus(n_docs: int, seed: int = 0) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Documents drawn from an LDA model with K known topics (each mostly on its own words)."""
    rng = np.random.default_rng(seed)
    topics = rng.dirichlet(np.full(V, 0.05), size=K)
    theta = rng.dirichlet(np.full(K, 0.3), size=n_docs)
    lengths = rng.poisson(60, size=n_docs) + 1
    counts = np.array([rng.multinomial(n, p) for n, p in zip(lengths, theta @ topics, strict=True)])
    return sparse.csr_matrix(counts.astype(np.float64)), topics


@pytest.fixture(scope="module")
def corpus() -> tuple[sparse.csr_matrix, np.ndarray]:
    return lda_corpus(N)


@pytest.fixture(scope="module")
def X(corpus: tuple[sparse.csr_matrix, np.ndarray]) -> sparse.csr_matrix:
    return corpus[0]


def dask_csr(X: sparse.csr_matrix, rows: Any) -> da.Array:
    return da.from_array(X, chunks=(rows, X.shape[1]), asarray=False)


def constant_start_sklearn(n_components: int = K, **params: Any) -> SklearnLDA:
    """scikit-learn's LDA whose E-steps start every document from 1 (``random_state_`` None
    after its own initial draw of ``components_``)."""
    sk = SklearnLDA(n_components=n_components, **params)
    draw = sk._init_latent_vars

    def init(n_features: int, dtype: Any = np.float64) -> None:
        draw(n_features, dtype)
        sk.random_state_ = None

    sk._init_latent_vars = init
    return sk


# -- scikit-learn as the oracle ------------------------------------------------------------


def test_initial_components_are_sklearns_draw(X: sparse.csr_matrix) -> None:
    for seed in (0, 7):
        ours = LatentDirichletAllocation(K, max_iter=0, random_state=seed).fit(X)
        sk = SklearnLDA(K, random_state=seed)
        sk._init_latent_vars(V)
        np.testing.assert_array_equal(ours.components_, sk.components_)
    # A RandomState instance: scikit-learn's draw is its first one.
    ours = LatentDirichletAllocation(K, max_iter=0, random_state=np.random.RandomState(3)).fit(X)
    np.testing.assert_array_equal(ours.components_, np.random.RandomState(3).gamma(100.0, 0.01, (K, V)))


def test_batch_iterations_match_sklearn(X: sparse.csr_matrix) -> None:
    sk = SklearnLDA(K, random_state=0)
    sk._init_latent_vars(V)
    sk.random_state_ = None  # the constant start of every document
    start = sk.components_.copy()
    for iteration in (1, 2, 3):
        sk._em_step(X, total_samples=N, batch_update=True)
        ours = LatentDirichletAllocation(K, max_iter=iteration, components_init=start).fit(X)
        assert relative(ours.components_, sk.components_) <= 1e-10
        assert relative(ours.exp_dirichlet_component_, sk.exp_dirichlet_component_) <= 1e-10
    assert ours.n_iter_ == 3
    assert ours.n_batch_iter_ == sk.n_batch_iter_ == 4


def test_whole_batch_fit_matches_sklearn(X: sparse.csr_matrix) -> None:
    ours = LatentDirichletAllocation(K, max_iter=5, random_state=0).fit(X)
    sk = constant_start_sklearn(max_iter=5, random_state=0).fit(X)
    assert relative(ours.components_, sk.components_) <= 1e-10
    assert abs(ours.bound_ - sk.bound_) <= 1e-10 * sk.bound_


def test_bound_and_perplexity_are_sklearns(X: sparse.csr_matrix) -> None:
    ours = LatentDirichletAllocation(K, max_iter=4, random_state=1).fit(X)
    sk = SklearnLDA(K, random_state=1)
    sk._init_latent_vars(V)
    sk.components_ = ours.components_.copy()
    sk.exp_dirichlet_component_ = ours.exp_dirichlet_component_.copy()
    gamma = sk._unnormalized_transform(X)
    bound = sk._approx_bound(X, gamma, sub_sampling=False)
    assert abs(ours.score(X) - bound) <= 1e-10 * abs(bound)
    assert abs(ours.score(X) - sk.score(X)) <= 1e-10 * abs(bound)
    for sub in (False, True):
        ours.set_params(total_samples=5_000)
        sk.set_params(total_samples=5_000)
        assert abs(ours.perplexity(X, sub_sampling=sub) - sk.perplexity(X, sub_sampling=sub)) <= 1e-10 * sk.perplexity(
            X, sub_sampling=sub
        )
    np.testing.assert_allclose(ours.transform(X), sk.transform(X), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ours.transform(X, normalize=False), gamma, rtol=1e-10)


def test_fit_statistics_give_the_bound_of_each_iteration(X: sparse.csr_matrix) -> None:
    # lower_bounds_[i] is the ELBO per document of the topics iteration i started from,
    # read from that iteration's pass: scikit-learn's _approx_bound at those topics.
    sk = SklearnLDA(K, random_state=2)
    sk._init_latent_vars(V)
    sk.random_state_ = None
    ours = LatentDirichletAllocation(K, max_iter=3, random_state=2).fit(X)
    for value in ours.lower_bounds_:
        bound = sk._approx_bound(X, sk._unnormalized_transform(X), sub_sampling=False)
        assert abs(value * N - bound) <= 1e-10 * abs(bound)
        sk._em_step(X, total_samples=N, batch_update=True)


def test_partial_fit_matches_sklearn_after_each_call(X: sparse.csr_matrix) -> None:
    # Aligned: the same components_ (scikit-learn's draw, passed as components_init) and
    # scikit-learn's random_state_ set to None (constant start); mini-batches of 64 rows that
    # straddle daskem's blocks of 70.
    sk = SklearnLDA(K, batch_size=64, total_samples=10_000, learning_offset=5.0, random_state=0)
    sk._init_latent_vars(V)
    sk.random_state_ = None
    ours = LatentDirichletAllocation(
        K, batch_size=64, total_samples=10_000, learning_offset=5.0, components_init=sk.components_.copy()
    )
    for start in (0, 150):
        part = X[start : start + 150]
        sk.partial_fit(part)
        ours.partial_fit(dask_csr(part, 70))
        assert relative(ours.components_, sk.components_) <= 1e-8
        assert ours.n_batch_iter_ == sk.n_batch_iter_


def test_online_fit_matches_sklearn(X: sparse.csr_matrix) -> None:
    sk = constant_start_sklearn(learning_method="online", batch_size=50, max_iter=2, random_state=0).fit(X)
    ours = LatentDirichletAllocation(K, learning_method="online", batch_size=50, max_iter=2, random_state=0)
    ours.fit(dask_csr(X, 80))
    assert relative(ours.components_, sk.components_) <= 1e-8
    assert ours.n_batch_iter_ == sk.n_batch_iter_
    assert ours.n_iter_ == sk.n_iter_ == 2
    assert abs(ours.bound_ - sk.bound_) <= 1e-8 * sk.bound_


def test_digamma_is_sklearns() -> None:
    from daskem.models.lda_kernels import dirichlet_expectation_2d

    x = np.random.default_rng(0).gamma(0.3, 2.0, size=(20, 50)) + 1e-9
    np.testing.assert_array_equal(dirichlet_expectation_2d(x), _dirichlet_expectation_2d(x))


# -- the engine: chunking, out of core, monotone bound, checkpoints -----------------------------


def test_chunking_and_split_every_invariance(X: sparse.csr_matrix) -> None:
    reference = LatentDirichletAllocation(K, max_iter=5, random_state=0).fit(X)
    for rows, split_every in ((37, 2), (100, 3), (13, 8)):
        fit = LatentDirichletAllocation(K, max_iter=5, random_state=0, split_every=split_every)
        fit.fit(dask_csr(X, rows))
        assert relative(fit.components_, reference.components_) <= 1e-12
        np.testing.assert_allclose(fit.lower_bounds_, reference.lower_bounds_, rtol=1e-12)
    online = [
        LatentDirichletAllocation(K, learning_method="online", batch_size=32, max_iter=2, random_state=0).fit(
            dask_csr(X, rows)
        )
        for rows in (300, 45, 64)
    ]
    for fit in online[1:]:
        assert relative(fit.components_, online[0].components_) <= 1e-12


def test_batch_bound_never_decreases_on_an_lda_corpus(X: sparse.csr_matrix) -> None:
    fit = LatentDirichletAllocation(K, max_iter=30, random_state=0).fit(X)
    bounds = np.asarray(fit.lower_bounds_)
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))


def test_small_decreases_of_the_bound_are_not_warned_about() -> None:
    # Not a guarantee: each document's updates stop at mean_change_tol, and near convergence
    # the bound can fall a little (here by ~8e-7 per document at iterations 8-10, on
    # scikit-learn's test_lda_numerical_consistency data); scikit-learn does not warn.
    X = np.random.RandomState(42).uniform(size=(20, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = LatentDirichletAllocation(5, random_state=42, max_iter=10).fit(X)
    assert np.diff(fit.lower_bounds_).min() < 0


def test_recovers_known_topics() -> None:
    X, topics = lda_corpus(2_000, seed=1)
    fit = LatentDirichletAllocation(K, max_iter=60, evaluate_every=1, perp_tol=1e-3, random_state=0)
    fit.fit(dask_csr(X, 500))
    found = fit.components_ / fit.components_.sum(axis=1, keepdims=True)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    cosine = unit(topics) @ unit(found).T
    rows, cols = linear_sum_assignment(-cosine)
    assert cosine[rows, cols].min() > 0.95


def test_zarr_and_dask_sparse_inputs_fit_as_in_memory(X: sparse.csr_matrix, tmp_path: Any) -> None:
    path = str(tmp_path / "counts.zarr")
    store = zarr.create_array(store=path, shape=X.shape, chunks=(100, V), dtype="float64")
    store[...] = X.toarray()
    in_memory = LatentDirichletAllocation(K, max_iter=4, random_state=0, split_every=2).fit(dask_csr(X, 100))
    for data in (path, dask_csr(X, 100)):
        fit = LatentDirichletAllocation(K, max_iter=4, random_state=0, split_every=2).fit(data)
        np.testing.assert_array_equal(fit.components_, in_memory.components_)
        assert fit.bound_ == in_memory.bound_
    np.testing.assert_array_equal(in_memory.transform(path), in_memory.transform(X.toarray()))


def test_checkpoint_resume_is_bitwise(X: sparse.csr_matrix, tmp_path: Any) -> None:
    data = dask_csr(X, 100)
    whole = LatentDirichletAllocation(K, max_iter=6, random_state=0).fit(data)
    path = str(tmp_path / "lda.zarr")
    LatentDirichletAllocation(K, max_iter=3, random_state=0, checkpoint=path).fit(data)
    resumed = LatentDirichletAllocation(K, max_iter=6, random_state=0, checkpoint=path).fit(data)
    np.testing.assert_array_equal(resumed.components_, whole.components_)
    assert resumed.lower_bounds_ == whole.lower_bounds_
    assert resumed.n_iter_ == 6
    loaded = daskem.load(path)
    np.testing.assert_array_equal(loaded.components_, whole.components_)
    model_file = str(tmp_path / "model.zarr")
    whole.save(model_file)
    again = daskem.load(model_file)
    np.testing.assert_array_equal(again.components_, whole.components_)
    assert again.bound_ == whole.bound_
    assert again.n_batch_iter_ == whole.n_batch_iter_
    # The perplexity rule across a resume: the parameters carry the perplexity it compares.
    rule = {"evaluate_every": 1, "perp_tol": 1e-3, "random_state": 0}
    whole = LatentDirichletAllocation(K, max_iter=200, **rule).fit(data)
    path = str(tmp_path / "rule.zarr")
    LatentDirichletAllocation(K, max_iter=3, checkpoint=path, **rule).fit(data)
    resumed = LatentDirichletAllocation(K, max_iter=200, checkpoint=path, **rule).fit(data)
    assert whole.converged_
    assert resumed.n_iter_ == whole.n_iter_ < 200
    np.testing.assert_array_equal(resumed.components_, whole.components_)


def test_perplexity_rule_stops_and_passes_are_counted(X: sparse.csr_matrix) -> None:
    fit = LatentDirichletAllocation(K, max_iter=200, evaluate_every=1, perp_tol=1e-2, random_state=0).fit(X)
    assert fit.converged_
    assert fit.n_iter_ < 200
    assert fit.n_passes_ == fit.n_iter_ + 1  # one per iteration, one for bound_


def test_errors(X: sparse.csr_matrix) -> None:
    with pytest.raises(DataError, match=r"^Negative values in data passed"):
        LatentDirichletAllocation(K).fit(dask_csr(-X, 100))
    with pytest.raises(ParameterError, match="components_init must be an array-like of shape"):
        LatentDirichletAllocation(K, components_init=np.ones((K + 1, V))).fit(X)
    with pytest.raises(ParameterError, match="checkpoints batch learning only"):
        LatentDirichletAllocation(K, learning_method="online", checkpoint="x.zarr").fit(X)
    with pytest.raises(ParameterError, match="'learning_method' parameter"):
        LatentDirichletAllocation(K, learning_method="stochastic").fit(X)


def test_registry_entry_and_feature_names(X: sparse.csr_matrix) -> None:
    from daskem import registry

    entry = registry.get("lda")
    assert entry.estimator is LatentDirichletAllocation
    assert entry.param("tol") == "perp_tol"
    fit = LatentDirichletAllocation(K, max_iter=2, random_state=0).fit(X)
    summary = entry.summary(fit)
    assert len(summary.rows) == K
    assert len(summary.values["top_features"][0]) == 8
    assert list(fit.get_feature_names_out()) == [f"latentdirichletallocation{i}" for i in range(K)]


# -- the model contract ----------------------------------------------------------------------


class TestLDAContract(ModelContract):
    fit_iter = 8
    monotone_iter = 15
    hypothesis_examples = 10
    split_everys = (2, 3)

    @pytest.fixture
    def model(self) -> LDAModel:
        return LDAModel(3, 1 / 3, 1 / 3)

    @pytest.fixture
    def data(self) -> np.ndarray:
        return np.asarray(lda_corpus(200, seed=4)[0][:, :30].toarray())

    @pytest.fixture
    def params(self, model: LDAModel) -> Any:
        return model.make_params(np.random.RandomState(0).gamma(100.0, 0.01, (3, 30)))

    def test_e_step_of_no_rows_is_zero_stats(self, model: Any, params: Any, data: np.ndarray) -> None:
        # The contract's law, except that the bound of no documents is the topics' own part
        # (E[log p(beta) - log q(beta)], a function of the parameters alone), not 0: the
        # documents' part is 0.
        empty = model.e_step(params, data[:0])
        self.assert_stats_close(empty, model.zero_stats(params), 0.0)
        assert empty.n == 0
        assert empty.doc_bound == 0.0
        assert empty.loglik == params.topic_word_bound


def test_reuters_converged_fit_has_sklearns_held_out_perplexity_and_topics() -> None:
    """Real text: the Reuters sample the ``lda`` package ships (395 headlines' articles,
    4,258 words). From the same start, a batch fit converged by scikit-learn's perplexity
    rule reaches the held-out perplexity of scikit-learn's converged fit (its run from the
    constant document start) within 0.5%, and its topics are scikit-learn's (matched one
    to one, cosine > 0.99). The fits stop an iteration or two apart: daskem's rule reads
    the perplexity of the topics an iteration starts from (docs/differences.md)."""
    datasets = pytest.importorskip("lda.datasets")
    counts = sparse.csr_matrix(datasets.load_reuters().astype(np.float64))
    words = np.asarray(datasets.load_reuters_vocab())
    train, held_out = counts[:320], counts[320:]
    settings = {"max_iter": 200, "evaluate_every": 1, "perp_tol": 2.0, "random_state": 1}
    sk = constant_start_sklearn(6, **settings).fit(train)
    ours = LatentDirichletAllocation(6, **settings).fit(dask_csr(train, 100))
    assert ours.converged_
    assert sk.n_iter_ < 200
    ours_perplexity, sk_perplexity = ours.perplexity(held_out), sk.perplexity(held_out)
    assert abs(ours_perplexity - sk_perplexity) <= 0.005 * sk_perplexity
    a = ours.components_ / np.linalg.norm(ours.components_, axis=1, keepdims=True)
    b = sk.components_ / np.linalg.norm(sk.components_, axis=1, keepdims=True)
    rows, cols = linear_sum_assignment(-(a @ b.T))
    assert float((a @ b.T)[rows, cols].min()) > 0.99
    # The topics read as Reuters' (e.g. a topic of the church and the pope).
    top = {w for t in ours.components_ for w in words[np.argsort(-t)[:10]]}
    assert {"pope", "church"} <= top


# -- MAP-EM (Spark's EM optimizer) ---------------------------------------------------------------


def _map_corpus() -> sparse.csr_matrix:
    rng = np.random.default_rng(5)
    topics = rng.dirichlet(np.full(8, 0.3), size=2)
    theta = rng.dirichlet(np.full(2, 0.5), size=30)
    return sparse.csr_matrix(np.array([rng.multinomial(25, p) for p in theta @ topics], dtype=np.float64))


def _posterior(beta: np.ndarray, theta: np.ndarray, X: sparse.csr_matrix, alpha: float, eta: float) -> float:
    """The MAP objective of Spark's EM optimizer, without constants."""
    counts = X.toarray()
    return float(
        (counts * np.log(theta @ beta)).sum() + (alpha - 1) * np.log(theta).sum() + (eta - 1) * np.log(beta).sum()
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_map_em_reaches_a_maximum_of_sparks_map_objective() -> None:
    from scipy import optimize

    X = _map_corpus()
    settings = {"learning_method": "map", "mean_change_tol": 1e-13, "max_doc_update_iter": 5000}
    est = LatentDirichletAllocation(2, max_iter=400, random_state=0, **settings).fit(X)
    alpha, eta = est.doc_topic_prior_, est.topic_word_prior_
    assert (alpha, eta) == (26.0, 1.1)  # Spark's defaults: 50 / k + 1 and 1.1
    assert np.all(np.diff(est.lower_bounds_) >= -1e-9 * abs(est.lower_bounds_[-1]))
    beta, theta = est.exp_dirichlet_component_, est.transform(X)
    # The reported bound is the objective at (beta, theta) (per document in lower_bounds_).
    np.testing.assert_allclose(est.score(X), _posterior(beta, theta, X, alpha, eta), rtol=1e-10)
    # Each document's proportions maximise its objective given beta (scipy on the simplex).
    for d in (0, 7):
        row = X[d].toarray()[0]

        def negative_doc(z: np.ndarray, row: np.ndarray = row) -> float:
            t = _softmax(z)
            return -float(row @ np.log(t @ beta) + (alpha - 1) * np.log(t).sum())

        found = optimize.minimize(negative_doc, np.zeros(2), method="BFGS", options={"gtol": 1e-10})
        np.testing.assert_allclose(_softmax(found.x), theta[d], atol=1e-6)
    # The joint objective over (beta, theta): a direct maximisation from a perturbed EM
    # result reaches EM's value, and EM's point has zero gradient.
    k, v, n = 2, X.shape[1], X.shape[0]

    def unpack(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _softmax(z[: k * v].reshape(k, v)), _softmax(z[k * v :].reshape(n, k))

    def negative(z: np.ndarray) -> float:
        return -_posterior(*unpack(z), X, alpha, eta)

    start = np.concatenate([np.log(beta).ravel(), np.log(theta).ravel()])
    step = 1e-6
    gradient = [(negative(start + step * e) - negative(start - step * e)) / (2 * step) for e in np.eye(start.size)]
    assert np.abs(gradient).max() < 1e-4
    perturbed = start + np.random.default_rng(1).normal(scale=0.05, size=start.size)
    found = optimize.minimize(negative, perturbed, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15})
    np.testing.assert_allclose(-found.fun, _posterior(beta, theta, X, alpha, eta), rtol=1e-8)


def test_map_em_through_the_engine_and_its_errors(tmp_path: Any) -> None:
    X = _map_corpus()
    est = LatentDirichletAllocation(2, learning_method="map", max_iter=20, random_state=0).fit(X)
    chunked = LatentDirichletAllocation(2, learning_method="map", max_iter=20, random_state=0, split_every=2)
    np.testing.assert_allclose(chunked.fit(dask_csr(X, 7)).components_, est.components_, rtol=1e-12)
    ckpt = str(tmp_path / "map.zarr")
    first = LatentDirichletAllocation(2, learning_method="map", max_iter=8, random_state=0, checkpoint=ckpt).fit(X)
    assert first.n_iter_ == 8
    resumed = LatentDirichletAllocation(2, learning_method="map", max_iter=20, random_state=0, checkpoint=ckpt)
    assert resumed.fit(X).components_.tobytes() == est.components_.tobytes()
    with pytest.raises(ParameterError, match="doc_topic_prior >= 1 and topic_word_prior > 1"):
        LatentDirichletAllocation(2, learning_method="map", topic_word_prior=0.5).fit(X)
    with pytest.raises(ParameterError, match="MAP-EM"):
        LatentDirichletAllocation(2, learning_method="map").partial_fit(X)


def test_the_topic_matrix_is_one_key_of_a_pass(X: sparse.csr_matrix) -> None:
    """The k x V topics go to the workers once per pass: one key every block's task reads,
    not a copy embedded in each block's task."""
    from daskem.em.graph import stats_graph

    est = LatentDirichletAllocation(K, max_iter=1, random_state=0).fit(X)
    model, params = est._model(), est._params()
    blocks = list(dask_csr(X, 30).to_delayed().ravel())
    graph = dict(stats_graph(model, params, blocks, 4).__dask_graph__())
    holding = [key for key, value in graph.items() if value is params or getattr(value, "value", None) is params]
    assert len(blocks) == 10
    assert len(holding) == 1
