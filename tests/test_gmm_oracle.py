"""Numerical correctness of the Gaussian mixture against scikit-learn as the oracle.

Every test starts both implementations from the same parameters (or copies daskem's
fitted parameters into scikit-learn) and compares numbers: one EM iteration, converged
fits, data far from the origin, the graph of one pass, the initialisers and every
prediction method. Seeds are pinned; the data are small so the module runs in seconds.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from dask.core import get_dependencies
from dask.utils import key_split
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import daskem
from daskem.em import FitSession, sample_rows, stats_graph
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.testing import make_mixture_array
from daskem.testing.contract import relative_difference

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
K = 3
D = 3
N = 1200
CHUNK_ROWS = 250

silence_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def assert_rel(actual: Any, desired: Any, rtol: float, name: str = "") -> None:
    """Assert ``max|actual - desired| <= rtol * max|.|`` (relative to the array's scale)."""
    diff = relative_difference(actual, desired)
    assert diff <= rtol, f"{name}: relative difference {diff:.3e} > {rtol:g}"


def assert_same_fit(ours: Any, theirs: Any, rtol: float) -> None:
    """Compare the fitted attributes of two GaussianMixture-like estimators."""
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        assert_rel(getattr(ours, attr), getattr(theirs, attr), rtol, attr)
    assert_rel(ours.lower_bound_, theirs.lower_bound_, rtol, "lower_bound_")


def precisions_for(covariance_type: str, covariances: np.ndarray) -> np.ndarray:
    """Precisions shaped for ``covariance_type`` from full (k, d, d) covariances."""
    if covariance_type == "full":
        return np.linalg.inv(covariances)
    if covariance_type == "tied":
        return np.linalg.inv(covariances.mean(axis=0))
    variances = np.diagonal(covariances, axis1=1, axis2=2)
    return 1.0 / variances if covariance_type == "diag" else 1.0 / variances.mean(axis=1)


def params_for(
    covariance_type: str, weights: np.ndarray, means: np.ndarray, precisions: np.ndarray
) -> GaussianMixtureParams:
    """GaussianMixtureParams built with NumPy only (not with daskem's converters)."""
    if covariance_type in ("full", "tied"):
        return GaussianMixtureParams(weights, means, np.linalg.inv(precisions), np.linalg.cholesky(precisions))
    return GaussianMixtureParams(weights, means, 1.0 / precisions, np.sqrt(precisions))


@pytest.fixture(scope="module")
def mixture() -> tuple[np.ndarray, Any]:
    X, spec = make_mixture_array(N, D, K, seed=7, chunk_rows=N, separation=3.0)
    return np.asarray(X.compute()), spec


@pytest.fixture(scope="module")
def X(mixture: tuple[np.ndarray, Any]) -> np.ndarray:
    return mixture[0]


@pytest.fixture(scope="module")
def X_new() -> np.ndarray:
    """Rows to predict on, other than the training rows, some of them far in the tails."""
    rows = np.random.default_rng(21).normal(scale=4.0, size=(300, D))
    rows[:5] *= 6.0
    return rows


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def inits(covariance_type: str, mixture: tuple[np.ndarray, Any]) -> dict[str, np.ndarray]:
    """Initial weights, means and precisions near (not at) the truth."""
    _, spec = mixture
    rng = np.random.default_rng(3)
    means = spec.means + rng.normal(scale=0.5, size=spec.means.shape)
    covariances = spec.covariances * rng.uniform(0.7, 1.5, size=(K, 1, 1))
    return {
        "weights_init": np.array([0.2, 0.3, 0.5]),
        "means_init": means,
        "precisions_init": precisions_for(covariance_type, covariances),
    }


def chunked(X: np.ndarray, rows: int = CHUNK_ROWS) -> da.Array:
    return da.from_array(X, chunks=(rows, X.shape[1]))


# -- one iteration ----------------------------------------------------------------------


@silence_convergence
def test_one_iteration_model_matches_sklearn(covariance_type: str, X: np.ndarray, inits: dict[str, np.ndarray]) -> None:
    sk = SklearnGaussianMixture(K, covariance_type=covariance_type, max_iter=1, random_state=0, **inits).fit(X)
    model = GaussianMixtureModel(K, covariance_type)
    start = params_for(covariance_type, inits["weights_init"], inits["means_init"], inits["precisions_init"])
    stats = model.e_step(start, X)
    new = model.m_step(stats, start)
    assert_rel(new.weights, sk.weights_, 1e-10, "weights")
    assert_rel(new.means, sk.means_, 1e-10, "means")
    assert_rel(new.covariances, sk.covariances_, 1e-10, "covariances")
    assert_rel(new.precisions_cholesky, sk.precisions_cholesky_, 1e-10, "precisions_cholesky")
    # scikit-learn's lower bound is the log-likelihood of the parameters the iteration started from.
    assert_rel(model.log_likelihood(stats) / stats.n, sk.lower_bound_, 1e-10, "lower_bound")


@silence_convergence
def test_one_iteration_estimator_matches_sklearn(
    covariance_type: str, X: np.ndarray, inits: dict[str, np.ndarray]
) -> None:
    sk = SklearnGaussianMixture(K, covariance_type=covariance_type, max_iter=1, random_state=0, **inits).fit(X)
    ours = daskem.GaussianMixture(K, covariance_type=covariance_type, max_iter=1, random_state=0, **inits)
    ours.fit(chunked(X))
    assert_same_fit(ours, sk, 1e-10)
    assert ours.n_iter_ == sk.n_iter_ == 1
    assert_rel(ours.lower_bounds_, sk.lower_bounds_, 1e-10, "lower_bounds_")


# -- converged fits ---------------------------------------------------------------------


def test_converged_fit_matches_sklearn(covariance_type: str, X: np.ndarray, inits: dict[str, np.ndarray]) -> None:
    kwargs = {"covariance_type": covariance_type, "tol": 1e-10, "max_iter": 1000, "random_state": 0, **inits}
    sk = SklearnGaussianMixture(K, **kwargs).fit(X)
    ours = daskem.GaussianMixture(K, **kwargs).fit(chunked(X))
    assert sk.converged_
    assert ours.converged_
    assert ours.n_iter_ == sk.n_iter_
    assert ours.n_iter_ > 2, "the start is too good for this test to compare anything"
    assert_same_fit(ours, sk, 1e-8)


def test_fit_far_from_origin_matches_centred_fit(
    covariance_type: str, X: np.ndarray, inits: dict[str, np.ndarray]
) -> None:
    shift = 1e6
    kwargs = {"covariance_type": covariance_type, "tol": 1e-10, "max_iter": 1000, "random_state": 0}
    centred = daskem.GaussianMixture(K, **kwargs, **inits).fit(chunked(X))
    far = daskem.GaussianMixture(K, **kwargs, **{**inits, "means_init": inits["means_init"] + shift})
    far.fit(chunked(X + shift))
    assert far.converged_
    assert centred.converged_
    assert far.n_iter_ == centred.n_iter_
    assert_rel(far.means_ - shift, centred.means_, 1e-8, "means_")
    for attr in ("weights_", "covariances_", "precisions_cholesky_"):
        assert_rel(getattr(far, attr), getattr(centred, attr), 1e-8, attr)
    assert_rel(far.lower_bound_, centred.lower_bound_, 1e-8, "lower_bound_")


# -- the graph of one pass ----------------------------------------------------------------


def _holds(node: Any, target: object) -> bool:
    """Whether a task spec (or a literal inside one) holds ``target`` itself."""
    if node is target:
        return True
    if isinstance(node, tuple | list):
        return any(_holds(x, target) for x in node)
    if isinstance(node, dict):
        return any(_holds(x, target) for x in node.values())
    if hasattr(node, "value") and not isinstance(node, np.ndarray | np.generic):  # a data node
        return _holds(node.value, target)
    if hasattr(node, "args") and hasattr(node, "kwargs"):  # a task
        return _holds(tuple(node.args), target) or _holds(dict(node.kwargs), target)
    return False


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_reduction_fan_in_never_exceeds_split_every(X: np.ndarray, split_every: int) -> None:
    model = GaussianMixtureModel(K, "diag")
    params = model.params_from_responsibilities(X, np.eye(K)[np.arange(N) % K])
    blocks = FitSession(chunked(X, 60)).blocks()
    assert len(blocks) == 20
    graph = stats_graph(model, params, blocks, split_every)
    dsk = dict(graph.__dask_graph__())
    deps = {key: get_dependencies(dsk, key) for key in dsk}
    kinds = {key: key_split(key) for key in dsk}
    e_steps = [key for key in dsk if kinds[key] == "block_e_step"]
    combines = [key for key in dsk if kinds[key] == "combine_all"]
    assert len(e_steps) == 20

    # Fan-in: the statistics entering each combine task (the model key aside).
    fan_ins = [sum(kinds[d] in ("block_e_step", "combine_all") for d in deps[key]) for key in combines]
    assert max(fan_ins) <= split_every
    assert min(fan_ins) >= 1
    # A tree: every statistic feeds exactly one combine, one root, depth ceil(log_s(20)).
    consumers = [sum(key in deps[c] for c in combines) for key in e_steps + combines]
    assert consumers.count(0) == 1
    assert set(consumers) <= {0, 1}
    assert graph.key in combines

    def depth(key: Any) -> int:
        below = [depth(d) for d in deps[key] if kinds[d] == "combine_all"]
        return 1 + max(below, default=0)

    assert depth(graph.key) == math.ceil(math.log(20) / math.log(split_every))

    # The parameters are one key of the graph, and every E-step depends on that key.
    holders = [key for key, task in dsk.items() if _holds(task, params)]
    assert len(holders) == 1
    assert all(holders[0] in deps[key] for key in e_steps)

    # And the graph computes the statistics of all rows.
    (total,) = dask.compute(graph)
    whole = model.e_step(params, X)
    assert total.n == N
    for field in ("loglik", "resp_sum", "first", "second"):
        assert_rel(getattr(total, field), getattr(whole, field), 1e-12, field)


# -- initialisation -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """1500 rows around three well-separated centres in 2 features, and the centres."""
    centres = np.array([[-8.0, 0.0], [0.0, 8.0], [8.0, 0.0]])
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, size=1500)
    return centres[labels] + rng.normal(size=(1500, 2)), centres


@pytest.mark.parametrize("init_params", INIT_METHODS)
def test_init_methods_reach_the_sklearn_optimum(init_params: str, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    data, centres = blobs
    sk = SklearnGaussianMixture(3, tol=1e-8, max_iter=500, n_init=3, random_state=0).fit(data)
    ours = daskem.GaussianMixture(3, init_params=init_params, tol=1e-8, max_iter=500, random_state=0)
    ours.fit(chunked(data, 300))
    assert ours.converged_
    assert np.isfinite(ours.lower_bound_)
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-6)
    order = np.lexsort(ours.means_.T[::-1])
    np.testing.assert_allclose(ours.means_[order], centres[np.lexsort(centres.T[::-1])], atol=0.1)


def test_kmeans_init_recovers_true_means(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    data, centres = blobs
    ours = daskem.GaussianMixture(3, init_params="kmeans", max_iter=0, random_state=1).fit(chunked(data, 300))
    # max_iter=0: the attributes are the initial parameters themselves.
    assert ours.n_iter_ == 0
    found = ours.means_[np.argsort(ours.means_[:, 0] + 0.01 * ours.means_[:, 1])]
    truth = centres[np.argsort(centres[:, 0] + 0.01 * centres[:, 1])]
    np.testing.assert_allclose(found, truth, atol=0.1)


def test_sample_rows_returns_distinct_rows_of_the_data_reading_each_block_once() -> None:
    data = np.random.default_rng(4).normal(size=(1000, 3))
    reads: list[int] = []

    def block(i: int) -> np.ndarray:
        reads.append(i)
        return data[100 * i : 100 * (i + 1)]

    array = da.concatenate(
        [da.from_delayed(dask.delayed(block, pure=False)(i), shape=(100, 3), dtype=np.float64) for i in range(10)]
    )
    sample = sample_rows(daskem.as_source(array), 50, np.random.default_rng(0))
    assert sample.shape == (50, 3)
    assert np.unique(sample, axis=0).shape[0] == 50
    index = [int(np.flatnonzero((data == row).all(axis=1))[0]) for row in sample]
    assert np.array_equal(data[index], sample)
    assert index == sorted(index), "sampled rows should come back in data order"
    assert len(reads) == len(set(reads)) <= 10


# -- prediction ---------------------------------------------------------------------------


@pytest.fixture
def fitted(covariance_type: str, X: np.ndarray) -> tuple[daskem.GaussianMixture, SklearnGaussianMixture]:
    """A daskem fit, and an unfitted scikit-learn estimator given its parameters."""
    ours = daskem.GaussianMixture(K, covariance_type=covariance_type, random_state=7).fit(chunked(X))
    sk = SklearnGaussianMixture(K, covariance_type=covariance_type, random_state=7)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_", "n_features_in_"):
        setattr(sk, attr, getattr(ours, attr))
    return ours, sk


def test_predictions_match_sklearn(
    fitted: tuple[daskem.GaussianMixture, SklearnGaussianMixture], X_new: np.ndarray
) -> None:
    ours, sk = fitted
    np.testing.assert_array_equal(ours.predict(X_new), sk.predict(X_new))
    assert_rel(ours.predict_proba(X_new), sk.predict_proba(X_new), 1e-10, "predict_proba")
    assert_rel(ours.score_samples(X_new), sk.score_samples(X_new), 1e-10, "score_samples")
    assert_rel(ours.score(X_new), sk.score(X_new), 1e-10, "score")
    assert_rel(ours.bic(X_new), sk.bic(X_new), 1e-10, "bic")
    assert_rel(ours.aic(X_new), sk.aic(X_new), 1e-10, "aic")


def test_predictions_on_dask_input_are_lazy_and_equal(
    fitted: tuple[daskem.GaussianMixture, SklearnGaussianMixture], X_new: np.ndarray
) -> None:
    ours, sk = fitted
    lazy = chunked(X_new, 70)
    for method, rtol in (("predict", 0.0), ("predict_proba", 1e-10), ("score_samples", 1e-10)):
        result = getattr(ours, method)(lazy)
        assert isinstance(result, da.Array), method
        assert result.chunks[0] == lazy.chunks[0], method
        assert_rel(result.compute(), getattr(sk, method)(X_new), rtol, method)
    for method in ("score", "bic", "aic"):
        assert_rel(getattr(ours, method)(lazy), getattr(sk, method)(X_new), 1e-10, method)


def test_sample_draws_match_sklearn(fitted: tuple[daskem.GaussianMixture, SklearnGaussianMixture]) -> None:
    ours, sk = fitted
    X_ours, y_ours = ours.sample(500)
    X_sk, y_sk = sk.sample(500)
    np.testing.assert_array_equal(y_ours, y_sk)
    np.testing.assert_array_equal(X_ours, X_sk)
    assert X_ours.shape == (500, D)


# -- the model's own statistics agree with the per-row predictions -------------------------


def test_e_step_log_likelihood_is_sum_of_score_samples(covariance_type: str, X: np.ndarray) -> None:
    model = GaussianMixtureModel(K, covariance_type)
    params = model.params_from_responsibilities(X, np.eye(K)[np.arange(N) % K])
    pieces = [model.e_step(params, X[i : i + 100]) for i in range(0, N, 100)]
    total = functools.reduce(model.combine, pieces)
    assert_rel(total.loglik, model.score_samples(params, X).sum(), 1e-12, "loglik")
    assert_rel(total.resp_sum, model.predict_proba(params, X).sum(axis=0), 1e-12, "resp_sum")


def _direct_statistics(X: np.ndarray, params: GaussianMixtureParams, covariance_type: str) -> dict[str, Any]:
    """The E-step's statistics by their definitions, in float64: responsibilities from
    scipy's Gaussian log-densities, every moment taken around the component's own mean."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    k, d = params.means.shape
    cov = np.asarray(params.covariances, dtype=np.float64)
    full = {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([c * np.eye(d) for c in cov]),
    }[covariance_type]()
    X = np.asarray(X, dtype=np.float64)
    components = zip(params.weights, params.means, full, strict=True)
    log_prob = np.stack([np.log(w) + multivariate_normal(m, c).logpdf(X) for w, m, c in components], axis=1)
    lse = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - lse[:, None])
    centred = X[None, :, :] - params.means[:, None, :]  # (k, n, d)
    scatter = np.einsum("nk,kni,knj->kij", resp, centred, centred)
    second = {
        "full": scatter,
        "tied": scatter.sum(axis=0),
        "diag": np.diagonal(scatter, axis1=1, axis2=2),
        "spherical": np.diagonal(scatter, axis1=1, axis2=2),
    }[covariance_type]
    return {
        "loglik": lse.sum(),
        "resp_sum": resp.sum(axis=0),
        "first": np.einsum("nk,knd->kd", resp, centred),
        "second": second,
    }


@pytest.mark.parametrize(
    ("dtype", "origin", "spread", "rtol"),
    [
        (np.float64, 0.0, 4.0, 1e-12),
        # Components 1e4 standard deviations apart, 1e6 from the origin: nothing may cancel.
        (np.float64, 1e6, 1e4, 1e-10),
        (np.float32, 10.0, 4.0, 1e-5),
    ],
    ids=["centred", "far-apart-far-from-origin", "float32"],
)
def test_e_step_statistics_equal_their_definitions(
    covariance_type: str, dtype: type, origin: float, spread: float, rtol: float
) -> None:
    """The compiled tile passes (weighted residuals, one product for the scatter) give the
    moments around each component's own mean exactly as their definitions, in several
    blocks and tiles (4,096 rows each at k=3, d=3: 9,000 rows span three tiles)."""
    rng = np.random.default_rng(3)
    centres = origin + spread * rng.standard_normal((K, D))
    X = (centres[rng.integers(K, size=9000)] + rng.standard_normal((9000, D))).astype(dtype)
    model = GaussianMixtureModel(K, covariance_type)
    # Current means a little off the clusters' centres, so the moments are not at their minima.
    resp = np.eye(K)[((X[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)]
    params = model.params_from_responsibilities(np.asarray(X, dtype=np.float64), resp)
    params = GaussianMixtureParams(**{**params.to_arrays(), "means": params.means + 0.25})
    expected = _direct_statistics(X, params, covariance_type)
    stats = functools.reduce(model.combine, [model.e_step(params, X[i : i + 5000]) for i in (0, 5000)])
    np.testing.assert_array_equal(stats.shift, params.means)
    for name, value in expected.items():
        assert_rel(getattr(stats, name), value, rtol, name)


# -- scikit-learn's behaviours its own tests pin (tests/peers) -----------------------------------


def _peer_blobs(dtype: Any = np.float64) -> np.ndarray:
    rng = np.random.RandomState(0)
    return np.r_[rng.randn(150, 2), rng.randn(150, 2) * 0.5 + 4.0].astype(dtype)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_float32_data_give_float32_attributes_near_sklearn(covariance_type: str) -> None:
    X = _peer_blobs(np.float32)
    kw = {"n_components": 2, "covariance_type": covariance_type, "means_init": [[0.0, 0.0], [4.0, 4.0]], "max_iter": 20}
    ours = daskem.GaussianMixture(**kw).fit(X)
    theirs = SklearnGaussianMixture(**kw).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(ours, name).dtype == np.float32, name
        # float32 E-steps on both sides: agreement to float32 rounding grown over the iterations.
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-3, atol=1e-4, err_msg=name)


def test_float32_weights_init_use_sklearns_tolerance() -> None:
    weights = np.full(3, 1.0 / 3.0, dtype=np.float32)  # sums to 1 within float32 rounding only
    assert abs(1.0 - weights.astype(np.float64).sum()) > 1e-8
    X = np.r_[_peer_blobs(), np.random.RandomState(1).randn(50, 2) - 4.0]
    ours = daskem.GaussianMixture(3, weights_init=weights, random_state=0, max_iter=5).fit(X)
    theirs = SklearnGaussianMixture(3, weights_init=weights, random_state=0, max_iter=5).fit(X)
    assert ours.weights_.shape == theirs.weights_.shape == (3,)


def test_warm_start_first_change_is_from_the_previous_lower_bound() -> None:
    X = _peer_blobs()
    kw = {"n_components": 2, "warm_start": True, "max_iter": 1, "tol": 1e-3, "means_init": [[0.0, 0.0], [4.0, 4.0]]}
    ours = daskem.GaussianMixture(**kw)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        ours.fit(X)
    for _ in range(50):
        if ours.converged_:
            break
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours.fit(X)
        assert ours.n_iter_ == 1
    assert ours.converged_  # without the carried-over lower bound it never would


def test_underflow_is_harmless_under_a_raising_error_state() -> None:
    X = _peer_blobs() * 30.0  # far-apart components: responsibilities underflow to 0
    with np.errstate(all="raise"):
        gm = daskem.GaussianMixture(2, random_state=0).fit(X)
        proba = gm.predict_proba(X)
    theirs = SklearnGaussianMixture(2, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), np.sort(theirs.means_[:, 0]), rtol=1e-8)
    assert np.all(np.isfinite(proba))


def test_regularised_m_step_decrease_is_within_its_gap_and_does_not_warn() -> None:
    # reg_covar large against the data's variance: the regularised M-step is not an exact
    # maximiser and scikit-learn's lower bound falls too (same start, same numbers).
    X = np.random.RandomState(0).rand(10, 2)
    kw = {"n_components": 2, "tol": 1e-4, "max_iter": 30, "reg_covar": 0.1, "init_params": "random", "random_state": 1}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", daskem.em.monitor.LikelihoodDecreaseWarning)
        warnings.simplefilter("ignore", UserWarning)
        ours = daskem.GaussianMixture(**kw).fit(X)
    assert np.diff(ours.lower_bounds_).min() < -1e-4  # a real decrease, tolerated
    model = GaussianMixtureModel(2, "full", 0.1)
    stats = model.e_step(ours._params(), X)
    assert model.m_step_gap(stats) > 0.0
    assert GaussianMixtureModel(2, "full", 0.0).m_step_gap(stats) == 0.0


def test_singleton_collapse_with_reg_covar_0_finishes_like_sklearn() -> None:
    # scikit-learn's issue #18216: one iteration from these parameters collapses two components.
    X = np.random.RandomState(0).uniform(size=(30, 3))
    kw = {
        "n_components": 6,
        "covariance_type": "spherical",
        "reg_covar": 0,
        "weights_init": [1 / 30, 1 / 30, 2 / 30, 2 / 30, 0.7, 0.1],
        "means_init": [
            [0.670637869618158, 0.21038256107384043, 0.12892629765485303],
            [0.09394051075844147, 0.5759464955561779, 0.929296197576212],
            [0.5033230372781258, 0.9569852381759425, 0.08654043447295741],
            [0.18578301420435747, 0.5531158970919143, 0.19388943970532435],
            [0.4548589928173794, 0.35182513658825276, 0.568146063202464],
            [0.609279894978321, 0.7929063819678847, 0.9620097270828052],
        ],
        "precisions_init": np.array([999999.999604483, 999999.9990869573, 553.76, 204.79, 15.87, 85.46]),
        "max_iter": 1,
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = daskem.GaussianMixture(**kw).fit(X)
        theirs = SklearnGaussianMixture(**kw).fit(X)
    assert not ours.converged_
    assert not theirs.converged_
    assert abs(ours.lower_bound_ - theirs.lower_bound_) <= 1e-10 * abs(theirs.lower_bound_)
    assert np.all(ours.covariances_ > 0.0)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_partial_initial_parameters_pair_by_fit_not_by_index(covariance_type: str) -> None:
    # The order of the k-means components is arbitrary: given precisions (and weights)
    # are paired with the components they fit, given means set the order themselves.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(300, 2) + 20.0, rng.randn(300, 2) @ np.array([[0.0, -0.7], [3.5, 0.7]])])
    kw = {"n_components": 2, "covariance_type": covariance_type, "random_state": 0}
    start = daskem.GaussianMixture(**kw, max_iter=0).fit(X)
    plain = daskem.GaussianMixture(**kw).fit(X)
    reverse = slice(None, None, -1)
    given = daskem.GaussianMixture(**kw, precisions_init=start.precisions_[reverse]).fit(X)
    assert given.n_iter_ == plain.n_iter_
    np.testing.assert_allclose(given.means_, plain.means_, rtol=1e-10)
    np.testing.assert_allclose(given.precisions_, plain.precisions_, rtol=1e-8)
    # Means given in the other order: the fit follows them (the base is reordered to them).
    follow = daskem.GaussianMixture(**kw, means_init=start.means_[reverse]).fit(X)
    np.testing.assert_allclose(follow.means_, plain.means_[reverse], rtol=1e-8)
    np.testing.assert_allclose(follow.weights_, plain.weights_[reverse], rtol=1e-8)
    # scikit-learn pairs by index: the same reversed precisions there start from a mismatched model.
    theirs = [
        SklearnGaussianMixture(**kw, means_init=start.means_, precisions_init=start.precisions_[order]).fit(X)
        for order in (slice(None), reverse)
    ]
    assert theirs[1].n_iter_ > theirs[0].n_iter_
