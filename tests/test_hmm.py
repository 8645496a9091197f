"""Hidden Markov models (``daskem.GaussianHMM``, ``daskem.CategoricalHMM``) against oracles.

Oracles: hmmlearn started from the same parameters (one Baum-Welch iteration, whole
fits, log-likelihoods, Viterbi paths, posteriors, with several sequences), the unsplit
sequence (a sequence split across blocks gives the statistics, fits, posteriors and
Viterbi path of the whole one), hmmlearn's scaled and log-space recursions on a sequence
long enough to underflow unscaled probabilities, and exact identities between data
sources (NumPy, dask, Zarr on disk), schedulers (local threads, a 2-process
``LocalCluster``), interrupted-and-resumed fits and saved models. The models pass the
shared contract suite (:class:`daskem.testing.ModelContract`) with sequences split
across blocks.

Seeds are pinned; the data are small so the module runs in about a minute on two cores
(the numba kernels compile once and are cached).
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import functools
import re
import warnings
from typing import Any, ClassVar

import dask.array as da
import numpy as np
import pytest
import zarr
from hmmlearn import hmm as hmmlearn_hmm
from scipy.special import gammaln

import daskem
from daskem import CategoricalHMM, GaussianHMM, lengths_from_ids
from daskem.errors import DataError, NotFittedError, ParameterError
from daskem.models.base import block_stats
from daskem.models.hmm import CategoricalHMMModel, GaussianHMMModel, HMMModel
from daskem.testing import ModelContract
from daskem.testing.contract import relative_difference

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")
K, D = 3, 2

# The generating model of the Gaussian data.
START = np.array([0.5, 0.3, 0.2])
TRANS = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])
COVARS = np.array([[[0.5, 0.0], [0.0, 0.5]], [[1.0, 0.3], [0.3, 0.8]], [[1.0, 0.0], [0.0, 1.0]]])
LENGTHS = [1000, 700, 1300]

# A start that Baum-Welch still has to move, shared by hmmlearn and daskem.
START0 = np.array([0.4, 0.3, 0.3])
TRANS0 = 0.4 * np.full((K, K), 1.0 / K) + 0.6 * np.eye(K)
MEANS0 = MEANS + 0.8
COVARS0 = {
    "full": np.tile(np.eye(D), (K, 1, 1)),
    "diag": np.ones((K, D)),
    "tied": np.eye(D),
    "spherical": np.ones(K),
}

# The generating model of the categorical data.
EMISSION = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.05, 0.05, 0.3, 0.6]])
EMISSION0 = np.array([[0.4, 0.2, 0.2, 0.2], [0.2, 0.4, 0.2, 0.2], [0.2, 0.2, 0.3, 0.3]])
N_SYMBOLS = EMISSION.shape[1]

GAUSSIAN_ATTRS = ("startprob_", "transmat_", "means_", "_covars_")
CATEGORICAL_ATTRS = ("startprob_", "transmat_", "emissionprob_")


def assert_rel(actual: Any, desired: Any, rtol: float, name: str = "") -> None:
    """Assert ``max|actual - desired| <= rtol * max|.|`` (relative to the array's scale)."""
    diff = relative_difference(actual, desired)
    assert diff <= rtol, f"{name}: relative difference {diff:.3e} > {rtol:g}"


def assert_bitwise(a: Any, b: Any, name: str = "") -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, name
    assert a.shape == b.shape, name
    assert a.tobytes() == b.tobytes(), name


def learn_covars(h: Any) -> np.ndarray:
    """hmmlearn's covariances in daskem's ``_covars_`` shape.

    hmmlearn's spherical M-step stores its variances tiled to (k, d), and its ``covars_``
    then ravels them into k*d matrices: take one column instead.
    """
    return h._covars_[:, 0] if h.covariance_type == "spherical" and h._covars_.ndim == 2 else h._covars_


def flagged(X: np.ndarray, lengths: Any) -> np.ndarray:
    """The rows with the start-flag column the HMM models read."""
    flags = np.zeros((X.shape[0], 1))
    flags[np.cumsum([0, *lengths[:-1]])] = 1.0
    return np.concatenate([np.asarray(X, dtype=np.float64), flags], axis=1)


def split_at(block: np.ndarray, rows: int) -> list[np.ndarray]:
    return [block[i : i + rows] for i in range(0, block.shape[0], rows)] or [block]


def stats_fields(stats: Any) -> dict[str, Any]:
    """Every field of HMM statistics, the emission statistics' fields flattened in."""
    out = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"emission.{g.name}": getattr(value, g.name) for g in dataclasses.fields(value)})
        else:
            out[f.name] = value
    return out


def assert_stats_rel(a: Any, b: Any, rtol: float) -> None:
    fa, fb = stats_fields(a), stats_fields(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert_rel(fa[name], fb[name], rtol, name)


class LearnGaussianHMM(hmmlearn_hmm.GaussianHMM):
    """hmmlearn's GaussianHMM, accumulating the state occupancies whenever it fits anything.

    hmmlearn 0.3.3 gathers ``stats["post"]`` only when ``"m"`` is in ``params``, yet its
    covariance update divides by it: ``params="sc"`` divides by zero there. With the
    occupancies gathered its M-step is the intended one (unchanged for any ``params``
    with ``"m"``).
    """

    def _needs_sufficient_statistics_for_mean(self) -> bool:
        return True


def gaussian_pair(covariance_type: str, **kwargs: Any) -> tuple[Any, GaussianHMM]:
    """hmmlearn's and daskem's GaussianHMM, both set to the same start (``init_params=""``)."""
    kwargs = {"init_params": "", **kwargs}
    ref = LearnGaussianHMM(K, covariance_type, **kwargs)
    ours = GaussianHMM(K, covariance_type, **kwargs)
    for est in (ref, ours):
        est.startprob_ = START0.copy()
        est.transmat_ = TRANS0.copy()
        est.means_ = MEANS0.copy()
        est.covars_ = COVARS0[covariance_type].copy()
    return ref, ours


def categorical_pair(**kwargs: Any) -> tuple[Any, CategoricalHMM]:
    kwargs = {"init_params": "", **kwargs}
    ref = hmmlearn_hmm.CategoricalHMM(K, **kwargs)
    ours = CategoricalHMM(K, **kwargs)
    for est in (ref, ours):
        est.startprob_ = START0.copy()
        est.transmat_ = TRANS0.copy()
        est.emissionprob_ = EMISSION0.copy()
    return ref, ours


def assert_same_gaussian(ours: GaussianHMM, ref: Any, rtol: float) -> None:
    for attr in ("startprob_", "transmat_", "means_"):
        assert_rel(getattr(ours, attr), getattr(ref, attr), rtol, attr)
    assert_rel(ours._covars_, learn_covars(ref), rtol, "_covars_")


def assert_same_categorical(ours: CategoricalHMM, ref: Any, rtol: float) -> None:
    for attr in CATEGORICAL_ATTRS:
        assert_rel(getattr(ours, attr), getattr(ref, attr), rtol, attr)


def sample_states(n: int, startprob: np.ndarray, transmat: np.ndarray, seed: int) -> np.ndarray:
    """A state path of a Markov chain (hmmlearn's ``sample`` is too slow for long sequences)."""
    u = np.random.default_rng(seed).random(n).tolist()
    cum_start = np.cumsum(startprob).tolist()
    cum_trans = np.cumsum(transmat, axis=1).tolist()
    last = len(cum_start) - 1
    states = [min(bisect.bisect_right(cum_start, u[0]), last)]
    for x in u[1:]:
        states.append(min(bisect.bisect_right(cum_trans[states[-1]], x), last))
    return np.array(states, dtype=np.int64)


def sample_gaussian(
    n: int, transmat: np.ndarray, means: np.ndarray, covars: np.ndarray, seed: int, startprob: np.ndarray = START
) -> np.ndarray:
    """Rows of a Gaussian HMM (``covars``: full matrices, or diagonals)."""
    states = sample_states(n, startprob, transmat, seed)
    rng = np.random.default_rng(seed + 1000)
    X = np.empty((n, means.shape[1]))
    for j in range(means.shape[0]):
        rows = np.flatnonzero(states == j)
        cov = covars[j] if covars.ndim == 3 else np.diag(covars[j])
        X[rows] = rng.multivariate_normal(means[j], cov, size=rows.size)
    return X


def sample_categorical(n: int, transmat: np.ndarray, seed: int) -> np.ndarray:
    """One column of symbols of a categorical HMM with emissions EMISSION."""
    states = sample_states(n, START, transmat, seed)
    u = np.random.default_rng(seed + 1000).random(n)
    return (np.cumsum(EMISSION, axis=1)[states] > u[:, None]).argmax(axis=1)[:, None].astype(np.int64)


# -- data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian_X() -> np.ndarray:
    """3000 rows (three sequences: LENGTHS) of a 3-state HMM with full-covariance emissions."""
    return sample_gaussian(sum(LENGTHS), TRANS, MEANS, COVARS, seed=1)


@pytest.fixture(scope="module")
def categorical_X() -> np.ndarray:
    return sample_categorical(sum(LENGTHS), TRANS, seed=1)


#: A slowly switching 3-state model for long sequences (diagonal covariances).
LONG_TRANS = np.array([[0.95, 0.03, 0.02], [0.05, 0.9, 0.05], [0.02, 0.08, 0.9]])
LONG_MEANS = np.array([[0.0, 0.0], [2.0, 1.0], [-1.0, 2.0]])
LONG_COVARS = np.array([[1.0, 1.0], [0.8, 1.2], [1.0, 0.7]])
LONG_ROWS = 12_000


@pytest.fixture(scope="module")
def long_X() -> np.ndarray:
    """12,000 rows of one sequence."""
    return sample_gaussian(LONG_ROWS, LONG_TRANS, LONG_MEANS, LONG_COVARS, seed=3)


@pytest.fixture(scope="module")
def many_lengths() -> np.ndarray:
    """Lengths of sequences covering LONG_ROWS rows: 30 to 400 rows each, some of 0 and 1 row."""
    rng = np.random.default_rng(7)
    lengths = list(rng.integers(30, 400, size=200))
    lengths[3:3] = [0, 1]
    total = np.cumsum(lengths)
    cut = int(np.searchsorted(total, LONG_ROWS))
    lengths = lengths[:cut]
    lengths.append(LONG_ROWS - sum(lengths))
    assert sum(lengths) == LONG_ROWS
    assert min(lengths) >= 0
    return np.array(lengths)


def long_estimator(**kwargs: Any) -> GaussianHMM:
    est = GaussianHMM(K, "diag", init_params="", tol=0.0, **kwargs)
    est.startprob_ = START0.copy()
    est.transmat_ = TRANS0.copy()
    est.means_ = LONG_MEANS + 0.3
    est.covars_ = np.ones((K, D))
    return est


def long_model_params(carry: bool = True) -> tuple[HMMModel, Any]:
    model = GaussianHMMModel(K, "stmc", carry=carry, covariance_type="diag")
    return model, model.make_params(START0, TRANS0, model.emission.make_params(K, LONG_MEANS + 0.3, np.ones((K, D))))


# -- 1. one Baum-Welch iteration equals hmmlearn's -----------------------------------------------


@pytest.mark.parametrize(
    ("params", "chunks"),
    [("stmc", None), ("stmc", 500), ("mc", None), ("st", 500), ("sc", None)],
    ids=["stmc-numpy", "stmc-dask-500", "mc-numpy", "st-dask-500", "sc-numpy"],
)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_iteration_equals_hmmlearn(
    gaussian_X: np.ndarray, covariance_type: str, params: str, chunks: int | None
) -> None:
    ref, ours = gaussian_pair(covariance_type, n_iter=1, params=params)
    ref.fit(gaussian_X, LENGTHS)
    X = gaussian_X if chunks is None else da.from_array(gaussian_X, chunks=(chunks, D))
    ours.fit(X, LENGTHS)
    assert_same_gaussian(ours, ref, 1e-10)
    if "s" not in params:
        assert_bitwise(ours.startprob_, START0, "startprob_")
    if "t" not in params:
        assert_bitwise(ours.transmat_, TRANS0, "transmat_")
    if "m" not in params:
        assert_bitwise(ours.means_, MEANS0, "means_")
    if "c" not in params:
        assert_bitwise(ours._covars_, COVARS0[covariance_type], "_covars_")
    # The log-likelihood of the start, and of the parameters after the iteration.
    assert ours.monitor_.iter == ref.monitor_.iter == 1
    np.testing.assert_allclose(ours.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    np.testing.assert_allclose(ours.score(gaussian_X, LENGTHS), ref.score(gaussian_X, LENGTHS), rtol=1e-12)


@pytest.mark.parametrize("params", ["ste", "e", "st"])
@pytest.mark.parametrize("chunks", [None, 500], ids=["numpy", "dask-500"])
def test_categorical_one_iteration_equals_hmmlearn(categorical_X: np.ndarray, params: str, chunks: int | None) -> None:
    ref, ours = categorical_pair(n_iter=1, params=params)
    ref.fit(categorical_X, LENGTHS)
    X = categorical_X if chunks is None else da.from_array(categorical_X, chunks=(chunks, 1))
    ours.fit(X, LENGTHS)
    assert_same_categorical(ours, ref, 1e-10)
    if "e" not in params:
        assert_bitwise(ours.emissionprob_, EMISSION0, "emissionprob_")
    if "s" not in params:
        assert_bitwise(ours.startprob_, START0, "startprob_")
    assert ours.n_features_ == ref.n_features == N_SYMBOLS
    np.testing.assert_allclose(ours.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    np.testing.assert_allclose(ours.score(categorical_X, LENGTHS), ref.score(categorical_X, LENGTHS), rtol=1e-12)


def test_priors_equal_hmmlearn(gaussian_X: np.ndarray, categorical_X: np.ndarray) -> None:
    """hmmlearn's MAP M-steps: Dirichlet and normal-inverse-Wishart-style priors."""
    priors = {
        "startprob_prior": np.array([2.0, 3.0, 1.5]),
        "transmat_prior": 1.0 + np.arange(9.0).reshape(3, 3) / 4,
        "means_prior": np.array([[0.5, -0.5], [1.0, 0.0], [0.0, 1.0]]),
        "means_weight": 3.0,
        "covars_prior": 0.5,
        "covars_weight": 4.0,
    }
    for covariance_type in COVARIANCE_TYPES:
        ref, ours = gaussian_pair(covariance_type, n_iter=2, **priors)
        ref.fit(gaussian_X, LENGTHS)
        ours.fit(gaussian_X, LENGTHS)
        assert_same_gaussian(ours, ref, 1e-10)
    ref, ours = categorical_pair(n_iter=2, emissionprob_prior=np.full((K, N_SYMBOLS), 3.0), transmat_prior=2.0)
    ref.fit(categorical_X, LENGTHS)
    ours.fit(categorical_X, LENGTHS)
    assert_same_categorical(ours, ref, 1e-10)


# -- 2. whole fits, Viterbi, posteriors ------------------------------------------------------------


@pytest.fixture(scope="module", params=COVARIANCE_TYPES)
def gaussian_fits(request: pytest.FixtureRequest, gaussian_X: np.ndarray) -> tuple[Any, GaussianHMM]:
    ref, ours = gaussian_pair(request.param, n_iter=50, tol=1e-6)
    ref.fit(gaussian_X, LENGTHS)
    ours.fit(gaussian_X, LENGTHS)
    return ref, ours


def test_full_fit_equals_hmmlearn(gaussian_fits: tuple[Any, GaussianHMM]) -> None:
    ref, ours = gaussian_fits
    history = np.array(ref.monitor_.history)
    # Converged well before n_iter, and not at a knife edge of tol.
    assert 5 < ref.monitor_.iter < 50
    assert abs(np.diff(history)[-1] - 1e-6) > 1e-9
    assert ours.monitor_.iter == ref.monitor_.iter == ours.n_iter_
    assert ours.monitor_.converged
    assert ref.monitor_.converged
    assert ours.converged_
    np.testing.assert_allclose(ours.monitor_.history, history, rtol=1e-12)
    assert_same_gaussian(ours, ref, 1e-9)


def test_covars_are_full_matrices_like_hmmlearn(gaussian_fits: tuple[Any, GaussianHMM]) -> None:
    ref, ours = gaussian_fits
    assert ours.covars_.shape == (K, D, D)
    cov = learn_covars(ref)
    if ref.covariance_type == "full":
        expected = cov
    elif ref.covariance_type == "tied":
        expected = np.tile(cov, (K, 1, 1))
    elif ref.covariance_type == "diag":
        expected = np.stack([np.diag(v) for v in cov])
    else:
        expected = cov[:, None, None] * np.eye(D)
    if ref.covariance_type != "spherical":  # hmmlearn's spherical covars_ has k*d matrices
        assert_rel(ref.covars_, expected, 0.0, "hmmlearn covars_")
    assert_rel(ours.covars_, expected, 1e-9, "covars_")


def test_viterbi_and_posteriors_equal_hmmlearn(gaussian_X: np.ndarray, gaussian_fits: tuple[Any, GaussianHMM]) -> None:
    ref, ours = gaussian_fits
    log_prob, states = ours.decode(gaussian_X, LENGTHS)
    ref_log_prob, ref_states = ref.decode(gaussian_X, LENGTHS)
    assert type(states) is np.ndarray
    np.testing.assert_array_equal(states, ref_states)
    np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(gaussian_X, LENGTHS), ref.predict(gaussian_X, LENGTHS))
    proba = ours.predict_proba(gaussian_X, LENGTHS)
    np.testing.assert_allclose(proba, ref.predict_proba(gaussian_X, LENGTHS), rtol=0, atol=1e-8)
    score, posteriors = ours.score_samples(gaussian_X, LENGTHS)
    ref_score, ref_posteriors = ref.score_samples(gaussian_X, LENGTHS)
    np.testing.assert_allclose(score, ref_score, rtol=1e-12)
    np.testing.assert_allclose(posteriors, ref_posteriors, rtol=0, atol=1e-8)


def test_map_decoding(gaussian_X: np.ndarray, gaussian_fits: tuple[Any, GaussianHMM]) -> None:
    """algorithm="map": hmmlearn's states; the log-probability is the documented sum of logs.

    hmmlearn 0.3.3 returns the sum of the largest posteriors themselves (not their logs)
    as the MAP "log_prob"; daskem documents the sum of their logs.
    """
    ref, ours = gaussian_fits
    ref_log_prob, ref_states = ref.decode(gaussian_X, LENGTHS, algorithm="map")
    log_prob, states = ours.decode(gaussian_X, LENGTHS, algorithm="map")
    np.testing.assert_array_equal(states, ref_states)
    posteriors = ref.predict_proba(gaussian_X, LENGTHS)
    np.testing.assert_allclose(ref_log_prob, posteriors.max(axis=1).sum(), rtol=1e-12)
    np.testing.assert_allclose(log_prob, np.log(posteriors.max(axis=1)).sum(), rtol=1e-8)
    map_est = copy.deepcopy(ours).set_params(algorithm="map")
    np.testing.assert_array_equal(map_est.predict(gaussian_X, LENGTHS), ref_states)
    np.testing.assert_allclose(map_est.decode(gaussian_X, LENGTHS)[0], log_prob, rtol=1e-12)


def test_categorical_full_fit_equals_hmmlearn(categorical_X: np.ndarray) -> None:
    ref, ours = categorical_pair(n_iter=40, tol=1e-6)
    ref.fit(categorical_X, LENGTHS)
    ours.fit(categorical_X, LENGTHS)
    assert ours.monitor_.iter == ref.monitor_.iter
    np.testing.assert_allclose(ours.monitor_.history, list(ref.monitor_.history), rtol=1e-12)
    assert_same_categorical(ours, ref, 1e-9)
    log_prob, states = ours.decode(categorical_X, LENGTHS)
    ref_log_prob, ref_states = ref.decode(categorical_X, LENGTHS)
    np.testing.assert_array_equal(states, ref_states)
    np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-10)
    np.testing.assert_allclose(
        ours.predict_proba(categorical_X, LENGTHS), ref.predict_proba(categorical_X, LENGTHS), rtol=0, atol=1e-8
    )
    np.testing.assert_array_equal(
        ours.decode(categorical_X, LENGTHS, algorithm="map")[1], ref.decode(categorical_X, LENGTHS, algorithm="map")[1]
    )
    np.testing.assert_allclose(ours.score(categorical_X, LENGTHS), ref.score(categorical_X, LENGTHS), rtol=1e-12)


@pytest.mark.parametrize("chunks", [None, 97, 350], ids=["numpy", "dask-97", "dask-350"])
def test_left_right_model_keeps_structural_zeros(chunks: int | None) -> None:
    """Zero start and transition probabilities stay zero, as in hmmlearn (log(0) = -inf in Viterbi)."""
    startprob = np.array([1.0, 0.0, 0.0])
    transmat = np.array([[0.9, 0.1, 0.0], [0.0, 0.95, 0.05], [0.0, 0.0, 1.0]])
    lengths = [200] * 30
    X = np.concatenate(
        [sample_gaussian(200, transmat, MEANS, COVARS, seed=100 + i, startprob=startprob) for i in range(30)]
    )
    start0 = {
        "startprob_": startprob,
        "transmat_": np.array([[0.8, 0.2, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 1.0]]),
        "means_": MEANS + 0.5,
        "covars_": np.tile(np.eye(D), (K, 1, 1)),
    }
    ref = LearnGaussianHMM(K, "full", init_params="", n_iter=20, tol=1e-6)
    ours = GaussianHMM(K, "full", init_params="", n_iter=20, tol=1e-6)
    for est in (ref, ours):
        for attr, value in start0.items():
            setattr(est, attr, value.copy())
    with np.errstate(divide="ignore"):  # hmmlearn takes log(0)
        ref.fit(X, lengths)
    data = X if chunks is None else da.from_array(X, chunks=(chunks, D))
    ours.fit(data, lengths)
    assert ours.monitor_.iter == ref.monitor_.iter
    assert_same_gaussian(ours, ref, 1e-10)
    assert np.all(ours.transmat_[start0["transmat_"] == 0] == 0)
    assert np.all(ours.startprob_[1:] == 0)
    with np.errstate(divide="ignore"):
        ref_log_prob, ref_states = ref.decode(X, lengths)
        ref_proba = ref.predict_proba(X, lengths)
    log_prob, states = ours.decode(data, lengths)
    np.testing.assert_array_equal(np.asarray(states), ref_states)
    np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(ours.predict_proba(data, lengths)), ref_proba, rtol=0, atol=1e-10)


# -- 3. sequences split across blocks equal the unsplit sequences ---------------------------------

SPLITS = [97, 1000, 4096, LONG_ROWS]


@pytest.mark.parametrize("rows", SPLITS)
@pytest.mark.parametrize("sequences", ["one", "many"])
def test_split_statistics_equal_unsplit(
    long_X: np.ndarray, many_lengths: np.ndarray, rows: int, sequences: str
) -> None:
    """block_stats of consecutive blocks (with messages) combine to the whole block's E-step."""
    lengths = [LONG_ROWS] if sequences == "one" else many_lengths
    block = flagged(long_X, lengths)
    model, params = long_model_params()
    whole = model.e_step(params, block)
    assert whole.n == LONG_ROWS
    assert np.isfinite(whole.loglik)
    np.testing.assert_allclose(whole.start.sum(), np.count_nonzero(np.asarray(lengths)), rtol=1e-12)
    np.testing.assert_allclose(whole.trans.sum(), LONG_ROWS - np.count_nonzero(np.asarray(lengths)), rtol=1e-12)
    parts = block_stats(model, params, split_at(block, rows))
    combined = functools.reduce(model.combine, parts)
    assert combined.n == whole.n
    assert_stats_rel(combined, whole, 1e-10)
    new, expected = model.m_step(combined, params), model.m_step(whole, params)
    for name, value in expected.to_arrays().items():
        assert_rel(new.to_arrays()[name], value, 1e-10, name)


def test_split_statistics_categorical(many_lengths: np.ndarray) -> None:
    X = sample_categorical(LONG_ROWS, LONG_TRANS, seed=4)
    model = CategoricalHMMModel(K, "ste", carry=True, n_features=N_SYMBOLS)
    params = model.params_from_arrays({"startprob": START0, "transmat": TRANS0, "emissionprob": EMISSION0})
    for lengths in ([LONG_ROWS], many_lengths):
        block = flagged(X, lengths)
        whole = model.e_step(params, block)
        for rows in (97, 1000):
            combined = functools.reduce(model.combine, block_stats(model, params, split_at(block, rows)))
            assert_stats_rel(combined, whole, 1e-10)
        # The statistics are hmmlearn's: one iteration from the same start.
        ref = hmmlearn_hmm.CategoricalHMM(K, n_iter=1, init_params="")
        ref.startprob_, ref.transmat_, ref.emissionprob_ = START0, TRANS0, EMISSION0
        ref.fit(X, [n for n in lengths if n])  # hmmlearn fails on empty sequences
        new = model.m_step(whole, params)
        assert_rel(new.startprob, ref.startprob_, 1e-10, "startprob")
        assert_rel(new.transmat, ref.transmat_, 1e-10, "transmat")
        assert_rel(new.emission.emissionprob, ref.emissionprob_, 1e-10, "emissionprob")


@pytest.fixture(scope="module")
def long_reference(long_X: np.ndarray, many_lengths: np.ndarray) -> dict[str, GaussianHMM]:
    """Fits of 3 iterations on blocks that hold whole sequences (no messages)."""
    out = {}
    for name, lengths in (("one", None), ("many", many_lengths)):
        est = long_estimator(n_iter=3).fit(da.from_array(long_X, chunks=(LONG_ROWS, D)), lengths)
        assert est.n_passes_ == 3  # one pass per iteration: blocks of whole sequences
        out[name] = est
    return out


@pytest.mark.parametrize("rows", SPLITS[:-1])
@pytest.mark.parametrize("sequences", ["one", "many"])
def test_split_fit_equals_unsplit(
    long_X: np.ndarray,
    many_lengths: np.ndarray,
    long_reference: dict[str, GaussianHMM],
    rows: int,
    sequences: str,
) -> None:
    lengths = None if sequences == "one" else many_lengths
    reference = long_reference[sequences]
    X = da.from_array(long_X, chunks=(rows, D))
    est = long_estimator(n_iter=3).fit(X, lengths)
    carried = sequences == "one" or rows < int(many_lengths.max())
    assert est.n_passes_ == (6 if carried else 3)
    for attr in GAUSSIAN_ATTRS:
        assert_rel(getattr(est, attr), getattr(reference, attr), 1e-10, attr)
    np.testing.assert_allclose(est.monitor_.history, reference.monitor_.history, rtol=1e-12)

    # Viterbi and posteriors across blocks equal the unsplit ones.
    log_prob, states = est.decode(X, lengths)
    ref_log_prob, ref_states = reference.decode(long_X, lengths)
    assert isinstance(states, da.Array)
    np.testing.assert_array_equal(states.compute(), ref_states)
    np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-10)
    proba = reference.predict_proba(long_X, lengths)
    np.testing.assert_allclose(est.predict_proba(X, lengths).compute(), proba, rtol=0, atol=1e-10)
    np.testing.assert_allclose(est.score(X, lengths), reference.score(long_X, lengths), rtol=1e-12)


def test_split_viterbi_equals_hmmlearn(long_X: np.ndarray, many_lengths: np.ndarray) -> None:
    ref = hmmlearn_hmm.GaussianHMM(K, "diag", init_params="")
    est = long_estimator(n_iter=0)
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = est.startprob_, est.transmat_, est.means_, est._covars_
    est.fit(long_X[:10])  # n_iter=0: the given parameters, fitted
    for lengths in (None, many_lengths):
        ref_log_prob, ref_states = ref.decode(long_X, None if lengths is None else lengths[lengths > 0])
        for rows in (97, 4096):
            log_prob, states = est.decode(da.from_array(long_X, chunks=(rows, D)), lengths)
            np.testing.assert_array_equal(np.asarray(states), ref_states)
            np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-10)


# -- 4. no underflow on long sequences ------------------------------------------------------------

UNDERFLOW_ROWS = 150_000


def test_long_sequence_log_likelihood_equals_hmmlearn() -> None:
    """150,000 rows of one sequence: the unscaled forward probabilities would underflow."""
    X = sample_gaussian(UNDERFLOW_ROWS, LONG_TRANS, LONG_MEANS, LONG_COVARS, seed=5)
    est = long_estimator(n_iter=1)
    refs = {}
    for implementation in ("scaling", "log"):
        ref = hmmlearn_hmm.GaussianHMM(K, "diag", implementation=implementation, init_params="")
        ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = est.startprob_, est.transmat_, est.means_, est._covars_
        refs[implementation] = ref.score(X)
    assert np.isfinite(refs["log"])
    assert refs["log"] < -1e5
    est.fit(X)  # NumPy input: blocks of the default size, the sequence split across them
    assert est.n_passes_ == 2
    (ll,) = est.monitor_.history
    assert np.isfinite(ll)
    for implementation, expected in refs.items():
        np.testing.assert_allclose(ll, expected, rtol=1e-9, err_msg=implementation)
    fitted = hmmlearn_hmm.GaussianHMM(K, "diag", implementation="scaling", init_params="", n_iter=1)
    fitted.startprob_, fitted.transmat_, fitted.means_ = START0, TRANS0, LONG_MEANS + 0.3
    fitted.covars_ = np.ones((K, D))
    fitted.fit(X)
    assert_same_gaussian(est, fitted, 1e-9)
    np.testing.assert_allclose(est.score(X), fitted.score(X), rtol=1e-9)


def test_long_categorical_sequence_log_likelihood_equals_hmmlearn() -> None:
    X = sample_categorical(UNDERFLOW_ROWS, LONG_TRANS, seed=6)
    ref, ours = categorical_pair(n_iter=1)
    ref.set_params(implementation="scaling")
    ours.set_params(n_features=N_SYMBOLS)
    expected = ref.score(X)
    assert np.isfinite(expected)
    ours.fit(da.from_array(X, chunks=(25_000, 1)))
    np.testing.assert_allclose(ours.monitor_.history, [expected], rtol=1e-9)


# -- 5. the contract suite ---------------------------------------------------------------------

CONTRACT_LENGTHS = [120, 80, 150, 50]


def contract_gaussian_params(model: HMMModel) -> Any:
    """Parameters near the generating ones, in the model's covariance type."""
    rough = MEANS + np.random.default_rng(5).normal(scale=0.3, size=MEANS.shape)
    covariances = {
        "full": COVARS,
        "diag": np.stack([np.diag(c) for c in COVARS]),
        "tied": COVARS.mean(axis=0),
        "spherical": np.array([np.diag(c).mean() for c in COVARS]),
    }[model.emission.covariance_type]
    return model.make_params(START0, TRANS0, model.emission.make_params(K, rough, covariances))


@pytest.fixture(scope="module", params=COVARIANCE_TYPES)
def contract_gaussian(request: pytest.FixtureRequest) -> tuple[HMMModel, Any, np.ndarray]:
    """Model (carry=True), parameters near the generating ones and four flagged sequences.

    ``covars_prior=0``: hmmlearn's default ``covars_prior=1e-2`` makes the covariance
    update a MAP one, under which the log-likelihood alone may fall by ~1e-10 relative
    near convergence (the posterior does not), and the contract's "never decreases" and
    its fits (which fail on a :class:`LikelihoodDecreaseWarning`) are about the
    likelihood. The priors are checked against hmmlearn in ``test_priors_equal_hmmlearn``.
    """
    model = GaussianHMMModel(K, "stmc", carry=True, covariance_type=request.param, covars_prior=0.0)
    X = sample_gaussian(sum(CONTRACT_LENGTHS), TRANS, MEANS, COVARS, seed=8)
    block = flagged(X, CONTRACT_LENGTHS)
    assert block[:, -1].sum() == len(CONTRACT_LENGTHS)
    assert block[0, -1] == 1
    return model, contract_gaussian_params(model), block


@pytest.fixture(scope="module")
def contract_categorical() -> tuple[HMMModel, Any, np.ndarray]:
    model = CategoricalHMMModel(K, "ste", carry=True, n_features=N_SYMBOLS)
    noisy = EMISSION + 0.1
    params = model.params_from_arrays(
        {"startprob": START0, "transmat": TRANS0, "emissionprob": noisy / noisy.sum(axis=1, keepdims=True)}
    )
    return model, params, flagged(sample_categorical(sum(CONTRACT_LENGTHS), TRANS, seed=8), CONTRACT_LENGTHS)


class TestGaussianHMMContract(ModelContract):
    """Every law of the contract with four sequences split across blocks (carry=True)."""

    # Two passes per iteration with messages: fewer iterations keep the module fast.
    fit_iter = 8
    monotone_iter = 30
    split_everys = (2, 8)

    @pytest.fixture
    def model(self, contract_gaussian: tuple[HMMModel, Any, np.ndarray]) -> HMMModel:
        return contract_gaussian[0]

    @pytest.fixture
    def params(self, contract_gaussian: tuple[HMMModel, Any, np.ndarray]) -> Any:
        return contract_gaussian[1]

    @pytest.fixture
    def data(self, contract_gaussian: tuple[HMMModel, Any, np.ndarray]) -> np.ndarray:
        return contract_gaussian[2]

    def stats_close(self, a: Any, b: Any, rtol: float) -> bool:
        """The generic comparison, with the nested Gaussian moments compared field by field.

        ``HMMStats.emission`` is a ``GaussianMixtureStats`` (a dataclass, not an array):
        the generic :meth:`ModelContract.stats_close` cannot take its relative difference.
        """
        if a.n != b.n or a.n_nonfinite != b.n_nonfinite:
            return False
        fa, fb = stats_fields(a), stats_fields(b)
        return fa.keys() == fb.keys() and all(relative_difference(fa[k], fb[k]) <= rtol for k in fa)

    def assert_stats_close(self, a: Any, b: Any, rtol: float) -> None:
        if not self.stats_close(a, b, rtol):
            fa, fb = stats_fields(a), stats_fields(b)
            diffs = {k: relative_difference(fa[k], fb[k]) for k in fa}
            raise AssertionError(f"statistics differ beyond rtol={rtol:g}: relative differences {diffs}")


class TestCategoricalHMMContract(ModelContract):
    """The contract for symbols, sequences split across blocks."""

    fit_iter = 8
    monotone_iter = 30
    split_everys = (2, 8)

    @pytest.fixture
    def model(self, contract_categorical: tuple[HMMModel, Any, np.ndarray]) -> HMMModel:
        return contract_categorical[0]

    @pytest.fixture
    def params(self, contract_categorical: tuple[HMMModel, Any, np.ndarray]) -> Any:
        return contract_categorical[1]

    @pytest.fixture
    def data(self, contract_categorical: tuple[HMMModel, Any, np.ndarray]) -> np.ndarray:
        return contract_categorical[2]


@dataclasses.dataclass(frozen=True)
class PoissonRates:
    rates: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"rates": self.rates}


@dataclasses.dataclass(frozen=True)
class PoissonEmission:
    """Counts with a Poisson rate per state: an emission written here, outside daskem.

    It implements the :class:`daskem.models.hmm.Emission` protocol and nothing else: an
    HMM with it passes the contract, so a new emission plugs in without touching HMMModel.
    """

    kind: ClassVar[str] = "poisson_hmm"

    def spec(self) -> dict[str, Any]:
        return {}

    def params_from_arrays(self, arrays: dict[str, np.ndarray], n_components: int) -> PoissonRates:
        return PoissonRates(np.asarray(arrays["rates"], dtype=np.float64).reshape(n_components))

    def log_prob(self, params: PoissonRates, X: np.ndarray) -> np.ndarray:
        return np.asarray(X[:, :1] * np.log(params.rates) - params.rates - gammaln(X[:, :1] + 1.0))

    def stats(self, params: PoissonRates, X: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        return np.stack([gamma.sum(axis=0), gamma.T @ X[:, 0]])

    def zero_stats(self, params: PoissonRates) -> np.ndarray:
        return np.zeros((2, params.rates.size))

    def combine(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a + b

    def recentre(self, stats: np.ndarray, like: np.ndarray) -> np.ndarray:
        return stats  # counts have no reference point

    def scale(self, stats: np.ndarray, factor: float) -> np.ndarray:
        return stats * factor

    def m_step(self, stats: np.ndarray, params: PoissonRates, update: str) -> PoissonRates:
        return PoissonRates(stats[1] / stats[0]) if "r" in update else params

    def to_vector(self, params: PoissonRates) -> np.ndarray:
        return np.log(params.rates)

    def from_vector(self, vector: np.ndarray, like: PoissonRates) -> PoissonRates:
        return PoissonRates(np.exp(vector))


class TestPoissonHMMContract(ModelContract):
    """The contract for an emission defined outside daskem (sequences split across blocks)."""

    fit_iter = 8
    monotone_iter = 30
    split_everys = (2,)

    @pytest.fixture
    def model(self) -> HMMModel:
        return HMMModel(K, PoissonEmission(), "str", carry=True)

    @pytest.fixture
    def params(self, model: HMMModel) -> Any:
        return model.make_params(START0, TRANS0, PoissonRates(np.array([1.5, 4.0, 8.0])))

    @pytest.fixture
    def data(self) -> np.ndarray:
        states = sample_states(sum(CONTRACT_LENGTHS), START, TRANS, seed=9)
        counts = np.random.default_rng(10).poisson(np.array([1.0, 5.0, 10.0])[states])
        return flagged(counts[:, None].astype(np.float64), CONTRACT_LENGTHS)


# -- 6. data sources, schedulers, checkpoints, files ------------------------------------------------

SOURCE_CHUNKS = 500  # splits the 1000-, 700- and 1300-row sequences


def source_estimator(**kwargs: Any) -> GaussianHMM:
    return GaussianHMM(K, "full", n_iter=6, tol=0.0, random_state=0, split_every=2, **kwargs)


@pytest.fixture(scope="module")
def source_fits(gaussian_X: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, GaussianHMM]:
    """The default fit (k-means|| means, data covariance) from NumPy, dask and Zarr on disk."""
    from daskem.em.session import current_client

    assert current_client() is None  # local threads (requested before any client exists)
    path = str(tmp_path_factory.mktemp("hmm") / "X.zarr")
    z = zarr.create_array(store=path, shape=gaussian_X.shape, chunks=(SOURCE_CHUNKS, D), dtype="float64")
    z[...] = gaussian_X
    inputs = {
        "numpy": gaussian_X,
        "dask": da.from_array(gaussian_X, chunks=(SOURCE_CHUNKS, D)),
        "zarr": path,
        "zarr-array": zarr.open_array(path, mode="r"),
    }
    return {kind: source_estimator().fit(X, LENGTHS) for kind, X in inputs.items()}


@pytest.mark.parametrize("kind", ["zarr", "zarr-array"])
def test_zarr_fit_equals_dask_fit_bitwise(source_fits: dict[str, GaussianHMM], kind: str) -> None:
    ref, other = source_fits["dask"], source_fits[kind]
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(other, attr), getattr(ref, attr), attr)
    assert other.monitor_.history == ref.monitor_.history
    assert other.n_passes_ == ref.n_passes_


def test_numpy_fit_equals_dask_fit_with_its_blocks(source_fits: dict[str, GaussianHMM], gaussian_X: np.ndarray) -> None:
    """NumPy rows are blocked by their own rule: the same fit as a dask array so blocked."""
    chunks = daskem.as_source(gaussian_X).array.chunks
    same = source_estimator().fit(da.from_array(gaussian_X, chunks=chunks), LENGTHS)
    ref = source_fits["numpy"]
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(same, attr), getattr(ref, attr), attr)
    assert same.monitor_.history == ref.monitor_.history


@pytest.mark.parametrize("chunks", [SOURCE_CHUNKS, 97])
def test_numpy_fit_equals_dask_fit_from_the_same_start(gaussian_X: np.ndarray, chunks: int) -> None:
    """Other blocks (sequences split, two passes per iteration): the same fit to rounding."""
    _, ref = gaussian_pair("full", n_iter=6, tol=0.0)
    _, other = gaussian_pair("full", n_iter=6, tol=0.0)
    ref.fit(gaussian_X, LENGTHS)
    other.fit(da.from_array(gaussian_X, chunks=(chunks, D)), LENGTHS)
    assert other.n_passes_ == 2 * ref.n_passes_ == 12
    for attr in GAUSSIAN_ATTRS:
        assert_rel(getattr(other, attr), getattr(ref, attr), 1e-10, attr)
    np.testing.assert_allclose(other.monitor_.history, ref.monitor_.history, rtol=1e-12)
    assert np.all(np.diff(ref.monitor_.history) > 0)


@pytest.mark.slow
def test_distributed_fit_equals_threaded_fit(
    source_fits: dict[str, GaussianHMM], gaussian_X: np.ndarray, client: Any
) -> None:
    from daskem.em.session import current_client

    assert current_client() is client
    X = da.from_array(gaussian_X, chunks=(SOURCE_CHUNKS, D))
    remote = source_estimator().fit(X, LENGTHS)
    local = source_fits["dask"]
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(remote, attr), getattr(local, attr), attr)
    assert remote.monitor_.history == local.monitor_.history
    assert remote.n_passes_ == local.n_passes_
    log_prob, states = remote.decode(X, LENGTHS)
    local_log_prob, local_states = local.decode(X, LENGTHS)
    np.testing.assert_array_equal(states.compute(), local_states.compute())
    assert log_prob == local_log_prob
    np.testing.assert_array_equal(remote.predict_proba(X, LENGTHS).compute(), local.predict_proba(X, LENGTHS).compute())


class Interrupted(Exception):
    """Raised by a callback to stop a fit after a committed iteration."""


def stop_after(n: int) -> Any:
    def callback(record: Any, params: Any) -> None:
        if record.iteration == n:
            raise Interrupted

    return callback


@pytest.mark.parametrize("after", [1, 3])
def test_checkpoint_resume_is_bitwise_equal(gaussian_X: np.ndarray, tmp_path: Any, after: int) -> None:
    X = da.from_array(gaussian_X, chunks=(SOURCE_CHUNKS, D))
    expected = source_estimator().fit(X, LENGTHS)
    ckpt = str(tmp_path / "ck.zarr")
    with pytest.raises(Interrupted):
        source_estimator(checkpoint=ckpt).fit(X, LENGTHS, callback=stop_after(after))
    seen: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = source_estimator(checkpoint=ckpt).fit(
            X, LENGTHS, callback=lambda record, params: seen.append(record.iteration)
        )
    assert seen == list(range(after + 1, 7))
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(resumed, attr), getattr(expected, attr), attr)
    assert resumed.monitor_.history == expected.monitor_.history
    assert resumed.monitor_.iter == expected.monitor_.iter == 6
    loaded = daskem.load(ckpt)
    assert type(loaded) is GaussianHMM
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(loaded, attr), getattr(expected, attr), attr)


def test_categorical_checkpoint_resume_is_bitwise_equal(categorical_X: np.ndarray, tmp_path: Any) -> None:
    X = da.from_array(categorical_X, chunks=(SOURCE_CHUNKS, 1))

    def make(**kwargs: Any) -> CategoricalHMM:
        return CategoricalHMM(K, n_iter=5, tol=0.0, random_state=3, **kwargs)

    expected = make().fit(X, LENGTHS)
    ckpt = str(tmp_path / "ck.zarr")
    with pytest.raises(Interrupted):
        make(checkpoint=ckpt).fit(X, LENGTHS, callback=stop_after(2))
    resumed = make(checkpoint=ckpt).fit(X, LENGTHS)
    for attr in CATEGORICAL_ATTRS:
        assert_bitwise(getattr(resumed, attr), getattr(expected, attr), attr)
    assert resumed.monitor_.history == expected.monitor_.history


def test_save_load_round_trip(
    source_fits: dict[str, GaussianHMM], gaussian_X: np.ndarray, categorical_X: np.ndarray, tmp_path: Any
) -> None:
    est = source_fits["numpy"]
    est.save(tmp_path / "gaussian.zarr")
    loaded = daskem.load(tmp_path / "gaussian.zarr")
    assert type(loaded) is GaussianHMM
    assert loaded.get_params() == est.get_params()
    for attr in (*GAUSSIAN_ATTRS, "covars_"):
        assert_bitwise(getattr(loaded, attr), getattr(est, attr), attr)
    np.testing.assert_array_equal(loaded.predict(gaussian_X, LENGTHS), est.predict(gaussian_X, LENGTHS))
    assert loaded.score(gaussian_X, LENGTHS) == est.score(gaussian_X, LENGTHS)
    np.testing.assert_array_equal(loaded.predict_proba(gaussian_X, LENGTHS), est.predict_proba(gaussian_X, LENGTHS))
    # hmmlearn's monitor_ comes back too (total log-likelihoods, its converged meaning).
    assert loaded.monitor_ == est.monitor_

    cat = CategoricalHMM(K, n_iter=3, random_state=0).fit(categorical_X, LENGTHS)
    cat.save(tmp_path / "categorical.zarr")
    loaded_cat = daskem.load(tmp_path / "categorical.zarr")
    assert type(loaded_cat) is CategoricalHMM
    for attr in CATEGORICAL_ATTRS:
        assert_bitwise(getattr(loaded_cat, attr), getattr(cat, attr), attr)
    np.testing.assert_array_equal(loaded_cat.predict(categorical_X, LENGTHS), cat.predict(categorical_X, LENGTHS))
    assert loaded_cat.score(categorical_X) == cat.score(categorical_X)


def test_monitor_converged_at_n_iter_as_hmmlearn(gaussian_X: np.ndarray) -> None:
    ref, ours = gaussian_pair("diag", n_iter=2)
    ref.fit(gaussian_X, LENGTHS)
    ours.fit(gaussian_X, LENGTHS)
    # hmmlearn counts reaching n_iter as converged; converged_ keeps the tolerance's verdict.
    assert ref.monitor_.converged
    assert ours.monitor_.converged
    assert not ours.converged_
    assert ours.monitor_.iter == ref.monitor_.iter == 2
    np.testing.assert_allclose(ours.monitor_.history, list(ref.monitor_.history), rtol=1e-12)


# -- 7. bad input ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_gaussian(gaussian_X: np.ndarray) -> GaussianHMM:
    return gaussian_pair("diag", n_iter=2)[1].fit(gaussian_X, LENGTHS)


@pytest.fixture(scope="module")
def fitted_categorical(categorical_X: np.ndarray) -> CategoricalHMM:
    return categorical_pair(n_iter=2)[1].fit(categorical_X, LENGTHS)


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ([1000, 700, 1299], "lengths sum to 2999 but X has 3000 rows"),
        ([1000, 700, 1301], "lengths sum to 3001 but X has 3000 rows"),
        ([1000, -700, 2700], "lengths must be non-negative; got -700"),
        ([1000.5, 699.5, 1300], "1000.5"),
        ([[1000, 700, 1300]], "1-D array"),
    ],
)
def test_bad_lengths(gaussian_X: np.ndarray, fitted_gaussian: GaussianHMM, lengths: Any, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        gaussian_pair("diag", n_iter=1)[1].fit(gaussian_X, lengths)
    with pytest.raises(DataError, match=re.escape(message)):
        fitted_gaussian.predict(gaussian_X, lengths)


@pytest.mark.parametrize(
    ("symbols", "n_features", "shown"),
    [([0, 1, 7, 2], 4, "7"), ([0, 1.5, 1, 2], None, "1.5"), ([0, -1, 1, 2], None, "-1")],
    ids=["too-large", "non-integer", "negative"],
)
def test_bad_symbols(symbols: list[float], n_features: int | None, shown: str) -> None:
    X = np.array(symbols, dtype=np.float64)[:, None]
    pattern = rf"^Symbol {re.escape(shown)} is outside the range of symbols \[0, \d\)"
    with pytest.raises(DataError, match=pattern):
        CategoricalHMM(2, n_features=n_features, n_iter=1, random_state=0).fit(X)


def test_predict_with_symbols_beyond_the_fitted_ones(fitted_categorical: CategoricalHMM) -> None:
    with pytest.raises(DataError, match=r"^Symbol 5 is outside the range of symbols \[0, 4\)"):
        fitted_categorical.predict(np.array([[0], [5], [1]]))


def test_categorical_takes_one_column() -> None:
    with pytest.raises(DataError, match="X has 2 columns"):
        CategoricalHMM(2).fit(np.zeros((10, 2), dtype=np.int64))


def test_predict_with_other_number_of_features(fitted_gaussian: GaussianHMM) -> None:
    with pytest.raises(DataError, match="X has 3 features, but GaussianHMM is expecting 2 features"):
        fitted_gaussian.predict(np.zeros((5, 3)))


def test_probabilities_must_sum_to_one(gaussian_X: np.ndarray, categorical_X: np.ndarray) -> None:
    _, est = gaussian_pair("diag", n_iter=1)
    est.transmat_ = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.0], [0.1, 0.2, 0.7]])
    with pytest.raises(ParameterError, match=r"row 1 of transmat_ .* sums to 0\.(9|8999)"):
        est.fit(gaussian_X, LENGTHS)
    _, est = gaussian_pair("diag", n_iter=1)
    est.startprob_ = np.array([0.5, 0.3, 0.1])
    with pytest.raises(ParameterError, match=r"startprob_ .* sums to 0\.(9|8999)"):
        est.fit(gaussian_X, LENGTHS)
    _, est = gaussian_pair("diag", n_iter=1)
    est.transmat_ = np.array([[1.2, -0.1, -0.1], [0.3, 0.6, 0.1], [0.1, 0.2, 0.7]])
    with pytest.raises(ParameterError, match=r"row 0 of transmat_ must hold non-negative"):
        est.fit(gaussian_X, LENGTHS)
    _, cat = categorical_pair(n_iter=1)
    cat.emissionprob_ = np.full((K, N_SYMBOLS), 0.3)
    with pytest.raises(ParameterError, match=r"row 0 of emissionprob_? .* sums to 1\.2"):
        cat.fit(categorical_X, LENGTHS)


@pytest.mark.parametrize("what", ["params", "init_params"])
def test_unknown_parameter_letters(gaussian_X: np.ndarray, categorical_X: np.ndarray, what: str) -> None:
    with pytest.raises(ParameterError, match=rf"'{what}' parameter of GaussianHMM .* among 'stmc'; got 'stx'"):
        GaussianHMM(K, **{what: "stx"}).fit(gaussian_X)
    with pytest.raises(ParameterError, match=rf"'{what}' parameter of CategoricalHMM .* among 'ste'; got 'stm'"):
        CategoricalHMM(K, **{what: "stm"}).fit(categorical_X)


# -- hmmlearn's initialisation rules, hyperparameters and criteria ---------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied"])
def test_parameters_not_set_are_initialised_as_hmmlearn(gaussian_X: np.ndarray, covariance_type: str) -> None:
    """init_params="" on an unfitted model initialises what is not set (hmmlearn's ``_needs_init``):
    here the covariances, hmmlearn's np.cov(X.T) + min_covar * I; what is set stays."""
    ref = hmmlearn_hmm.GaussianHMM(K, covariance_type, init_params="", min_covar=0.05)
    ours = GaussianHMM(K, covariance_type, init_params="", min_covar=0.05, n_iter=0)
    for est in (ref, ours):
        est.startprob_, est.transmat_, est.means_ = START0.copy(), TRANS0.copy(), MEANS0.copy()
    ref._init(gaussian_X, LENGTHS)
    ours.fit(gaussian_X, LENGTHS)
    assert_rel(ours._covars_, ref._covars_, 1e-12, "_covars_")
    for attr in ("startprob_", "transmat_", "means_"):
        assert_bitwise(getattr(ours, attr), getattr(ref, attr), attr)
    # Nothing set: everything is initialised (the chain uniformly, daskem's rule).
    fresh = GaussianHMM(K, covariance_type, init_params="", n_iter=0, random_state=0).fit(gaussian_X, LENGTHS)
    np.testing.assert_array_equal(fresh.startprob_, np.full(K, 1.0 / K))
    assert fresh.means_.shape == (K, D)


def test_categorical_symbols_inferred_when_emissions_not_set(categorical_X: np.ndarray) -> None:
    """init_params="" and no emissionprob_: the symbols are the data's and ``n_features`` is set,
    as hmmlearn sets it."""
    ref = hmmlearn_hmm.CategoricalHMM(K, init_params="", n_iter=1, random_state=0).fit(categorical_X, LENGTHS)
    ours = CategoricalHMM(K, init_params="", n_iter=1, random_state=0).fit(categorical_X, LENGTHS)
    assert ours.n_features == ref.n_features == N_SYMBOLS
    assert ours.emissionprob_.shape == ref.emissionprob_.shape
    # The inferred count is kept: symbols beyond it are refused, as hmmlearn refuses them.
    with pytest.raises(DataError, match=r"Symbol 4 is outside the range of symbols \[0, 4\)"):
        ours.fit(np.array([[0], [4], [1]]))


def test_overwritten_parameter_is_logged_as_hmmlearn(gaussian_X: np.ndarray, caplog: Any) -> None:
    """A parameter set and named in init_params is overwritten with hmmlearn's logged warning."""
    messages = []
    for cls in (hmmlearn_hmm.GaussianHMM, GaussianHMM):
        est = cls(K, "diag", n_iter=1, random_state=0)
        est.startprob_ = START0.copy()
        caplog.clear()
        with caplog.at_level("WARNING"):
            est.fit(gaussian_X, LENGTHS)
        messages.append([r.getMessage() for r in caplog.records if "overwritten" in r.getMessage()])
    assert messages[1] == messages[0] != []


def test_too_little_data_is_logged_as_hmmlearn(caplog: Any) -> None:
    X = np.random.default_rng(0).normal(size=(5, D))
    messages = []
    for cls in (hmmlearn_hmm.GaussianHMM, GaussianHMM):
        est = cls(K, "full", init_params="")
        est.startprob_, est.transmat_, est.means_, est.covars_ = START0, TRANS0, MEANS0, COVARS0["full"]
        caplog.clear()
        with caplog.at_level("WARNING"):
            est._init(X, [5])
        messages.append([r.getMessage() for r in caplog.records])
    assert messages[1] == messages[0]
    assert len(messages[0]) == 1
    assert "degenerate solution" in messages[0][0]


def test_init_is_the_start_of_fit(gaussian_X: np.ndarray, categorical_X: np.ndarray) -> None:
    """``_init`` (hmmlearn's) sets the start a fit of ``n_iter=0`` ends with, bitwise."""
    by_init = GaussianHMM(K, "full", random_state=3)
    by_init._init(gaussian_X, LENGTHS)
    by_fit = GaussianHMM(K, "full", random_state=3, n_iter=0).fit(gaussian_X, LENGTHS)
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(by_init, attr), getattr(by_fit, attr), attr)
    cat = CategoricalHMM(K, random_state=3)
    cat._init(categorical_X, LENGTHS)
    cat_fit = CategoricalHMM(K, random_state=3, n_iter=0).fit(categorical_X, LENGTHS)
    assert cat.n_features == cat_fit.n_features == N_SYMBOLS
    for attr in CATEGORICAL_ATTRS:
        assert_bitwise(getattr(cat, attr), getattr(cat_fit, attr), attr)


def test_check_validates_parameters() -> None:
    _, est = gaussian_pair("diag")
    est._check()
    est.means_ = MEANS0[:2]
    with pytest.raises(ValueError, match="means"):
        est._check()
    _, cat = categorical_pair()
    cat._check()
    cat.emissionprob_ = np.zeros((1, N_SYMBOLS))
    with pytest.raises(ValueError, match="emissionprob"):
        cat._check()


def test_constant_feature_fits_as_hmmlearn() -> None:
    """A constant feature: the data covariance has min_covar on its diagonal before anything is
    factorised (hmmlearn's ``np.cov(X.T) + min_covar * I``), and the fit runs as hmmlearn's."""
    rng = np.random.default_rng(1)
    X = np.column_stack([np.full(300, 7.0), rng.normal(size=300), rng.normal(size=300)])
    X[150:, 1:] += 4.0
    ref = LearnGaussianHMM(2, "diag", init_params="", n_iter=5, tol=0.0)
    ours = GaussianHMM(2, "diag", init_params="", n_iter=5, tol=0.0)
    means = np.array([[7.0, 0.0, 0.0], [7.0, 4.0, 4.0]])
    for est in (ref, ours):
        est.startprob_, est.transmat_, est.means_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5), means.copy()
    ref._init(X)
    ref.fit(X)
    ours.fit(X)
    assert_same_gaussian(ours, ref, 1e-10)
    # Under the default init_params too (k-means|| means): it fits.
    default = GaussianHMM(2, "full", random_state=0).fit(X)
    assert np.isfinite(default.monitor_.history).all()


def test_singular_full_covariance_falls_back_as_hmmlearn() -> None:
    """A full covariance that is not positive definite (a state collapsed onto a few rows) is
    kept and its density taken from covariance + 1e-7 * I, as hmmlearn's density does."""
    rng = np.random.default_rng(2)
    on_line = rng.normal(0.8, 0.3, size=30)
    X = np.concatenate(
        [rng.normal(3.0, 1.0, size=(100, D)), np.column_stack([on_line, on_line]), rng.normal(size=(100, D))]
    )
    # State 0 sits on the rows of the line x1 = x2: its covariance is singular before and after
    # every M-step (the scatter of those rows plus hmmlearn's scalar covars_prior, both rank one).
    singular = np.array([[[0.09, 0.09], [0.09, 0.09]], [[1.0, 0.2], [0.2, 1.0]], [[2.0, 0.0], [0.0, 0.5]]])
    # One iteration: its E-step reads the singular start in both (whether a later M-step's
    # covariance factorises or falls back depends on rounding, and its likelihood with it).
    ref = LearnGaussianHMM(K, "full", init_params="", n_iter=1)
    ours = GaussianHMM(K, "full", init_params="", n_iter=1)
    for est in (ref, ours):
        est.startprob_, est.transmat_, est.means_ = START0.copy(), TRANS0.copy(), MEANS0.copy()
    ref._covars_ = singular.copy()  # hmmlearn's setter refuses it; its density falls back
    ours.covars_ = singular.copy()
    assert relative_difference(ours.score(X), ref.score(X)) <= 1e-9
    ref.fit(X)
    ours.fit(X)
    assert ours.covariance_type == "full"
    assert np.linalg.eigvalsh(ours._covars_[0]).min() < 1e-12  # (nearly) singular: kept as estimated
    # covariance + 1e-7 * I has a condition number of ~1e7: the two factorisations round apart by that much.
    assert_same_gaussian(ours, ref, 1e-6)
    np.testing.assert_allclose(ours.monitor_.history, ref.monitor_.history, rtol=1e-8)


@pytest.mark.parametrize("shape", [(K,), (K, 1), (K, 1, 1, 1)])
def test_spherical_covars_shapes_as_hmmlearn(gaussian_X: np.ndarray, shape: tuple[int, ...]) -> None:
    """hmmlearn takes spherical variances in any shape of n_components values."""
    ref, ours = gaussian_pair("spherical")
    ref.covars_ = np.array([0.5, 1.0, 2.0])
    ours.covars_ = np.array([0.5, 1.0, 2.0]).reshape(shape)
    assert relative_difference(ours.score(gaussian_X, LENGTHS), ref.score(gaussian_X, LENGTHS)) <= 1e-12
    assert_rel(ours.covars_, ref.covars_, 0.0, "covars_")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_aic_bic_equal_hmmlearn(gaussian_X: np.ndarray, covariance_type: str) -> None:
    ref, ours = gaussian_pair(covariance_type, n_iter=2, params="stm")
    ours.fit(gaussian_X, LENGTHS)
    ref.startprob_, ref.transmat_, ref.means_ = ours.startprob_, ours.transmat_, ours.means_
    ref._check()  # sets hmmlearn's n_features, which its parameter count reads
    for criterion in ("aic", "bic"):
        expected = getattr(ref, criterion)(gaussian_X, LENGTHS)
        assert relative_difference(getattr(ours, criterion)(gaussian_X, LENGTHS), expected) <= 1e-12, criterion


def test_categorical_aic_bic_equal_hmmlearn(categorical_X: np.ndarray) -> None:
    ref, ours = categorical_pair()
    ref._check()
    for criterion in ("aic", "bic"):
        expected = getattr(ref, criterion)(categorical_X, LENGTHS)
        assert relative_difference(getattr(ours, criterion)(categorical_X, LENGTHS), expected) <= 1e-12, criterion


def _underflow_data() -> np.ndarray:
    """hmmlearn's test_underflow_from_scaling: an outlier whose densities underflow to zero."""
    rng = np.random.default_rng(4)
    data = np.concatenate([rng.normal(0, 1, 100), rng.normal(5, 1, 100), rng.normal(0, 1, 100), rng.normal(5, 1, 100)])
    data[40] = 10_000.0
    return data[:, None]


def _underflow_pair(implementation: str) -> tuple[Any, GaussianHMM]:
    kwargs = {"init_params": "", "n_iter": 5, "tol": 0.0, "implementation": implementation}
    ref = LearnGaussianHMM(2, "spherical", **kwargs)
    ours = GaussianHMM(2, "spherical", **kwargs)
    for est in (ref, ours):
        est.startprob_, est.transmat_ = np.array([0.0, 1.0]), np.array([[0.4, 0.6], [0.6, 0.4]])
        est.means_, est.covars_ = np.array([[0.0], [5.0]]), np.array([1.0, 1.0])
    return ref, ours


def test_implementation_is_a_parameter() -> None:
    """``implementation`` is a real scikit-learn parameter, validated; both values compute the same."""
    from sklearn.base import clone

    est = GaussianHMM(K, implementation="scaling")
    assert est.get_params()["implementation"] == "scaling"
    assert clone(est).implementation == "scaling"
    assert est.set_params(implementation="log").implementation == "log"
    assert CategoricalHMM(K, implementation="scaling").get_params()["implementation"] == "scaling"
    for cls in (GaussianHMM, CategoricalHMM):
        with pytest.raises(ValueError, match=r"'implementation' parameter of .*'fast'"):
            cls(K, implementation="fast").fit(np.zeros((4, 1), dtype=np.int64))
    X = np.random.default_rng(5).normal(size=(300, D))
    fits = []
    for implementation in ("scaling", "log"):
        _, ours = gaussian_pair("full", n_iter=3, implementation=implementation)
        fits.append(ours.fit(X, [100, 200]))
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(fits[0], attr), getattr(fits[1], attr), attr)


def test_scaling_refuses_underflow_log_fits_as_hmmlearn() -> None:
    """hmmlearn's test_underflow_from_scaling: "scaling" raises, as hmmlearn's scaled forward pass
    does; "log" fits, with hmmlearn's log-space numbers."""
    data = _underflow_data()
    ref, ours = _underflow_pair("scaling")
    with pytest.raises(ValueError, match="underflow"):
        ref.fit(data)
    with pytest.raises(ValueError, match=r"^Forward pass failed with underflow .* consider using implementation='log'"):
        ours.fit(data)
    ref, ours = _underflow_pair("log")
    ref.fit(data)
    ours.fit(data)
    # hmmlearn's variances come from raw moments: the outlier's square (1e8) costs it ~1e-8.
    assert_same_gaussian(ours, ref, 1e-6)
    assert relative_difference(ours.score(data), ref.score(data)) <= 1e-8


def test_not_fitted_and_other_hyperparameters(gaussian_X: np.ndarray, fitted_gaussian: GaussianHMM) -> None:
    with pytest.raises(NotFittedError):
        GaussianHMM(K).predict(gaussian_X)
    with pytest.raises(NotFittedError):
        CategoricalHMM(K).sample(3)
    with pytest.raises(ParameterError, match="'covariance_type' parameter of GaussianHMM"):
        GaussianHMM(K, "round").fit(gaussian_X)
    with pytest.raises(ParameterError, match=r"'algorithm' .* Got 'bar'"):
        fitted_gaussian.decode(gaussian_X, algorithm="bar")
    with pytest.raises(ParameterError, match=r"'n_components' .* Got 0"):
        GaussianHMM(0).fit(gaussian_X)
    _, est = gaussian_pair("diag", n_iter=1)
    est.means_ = np.zeros((2, D))
    with pytest.raises(ParameterError, match=re.escape("'means' should have shape (3, n_features), but got (2, 2)")):
        est.fit(gaussian_X)


def test_nonfinite_values_in_fit(gaussian_X: np.ndarray) -> None:
    X = gaussian_X.copy()
    X[5, 1] = np.nan
    X[2500, 0] = np.inf
    with pytest.raises(DataError, match="2 NaN or infinite value"):
        gaussian_pair("diag", n_iter=2)[1].fit(da.from_array(X, chunks=(SOURCE_CHUNKS, D)), LENGTHS)


@pytest.mark.parametrize("method", ["score", "predict", "predict_proba", "decode"])
def test_nonfinite_values_after_fit(gaussian_X: np.ndarray, fitted_gaussian: GaussianHMM, method: str) -> None:
    X = gaussian_X.copy()
    X[5, 1] = np.nan
    with pytest.raises(DataError, match="1 NaN or infinite value"):
        getattr(fitted_gaussian, method)(X, LENGTHS)


# -- 8. helpers, sampling, the default initialisation -------------------------------------------------


def test_lengths_from_ids() -> None:
    ids = np.array([5, 5, 5, 2, 2, 7, 5, 5])
    expected = [3, 2, 1, 2]  # a new sequence wherever the id changes
    out = lengths_from_ids(ids)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(lengths_from_ids(da.from_array(ids, chunks=3)), expected)
    np.testing.assert_array_equal(lengths_from_ids(ids[:, None]), expected)
    np.testing.assert_array_equal(lengths_from_ids(np.array(["a", "a", "b"])), [2, 1])
    np.testing.assert_array_equal(lengths_from_ids(np.array([1])), [1])
    assert lengths_from_ids(np.array([])).tolist() == []


def test_lengths_from_ids_fits_like_lengths(gaussian_X: np.ndarray) -> None:
    ids = np.repeat([10, 11, 12], LENGTHS)
    by_ids = gaussian_pair("diag", n_iter=2)[1].fit(gaussian_X, lengths_from_ids(ids))
    by_lengths = gaussian_pair("diag", n_iter=2)[1].fit(gaussian_X, LENGTHS)
    for attr in GAUSSIAN_ATTRS:
        assert_bitwise(getattr(by_ids, attr), getattr(by_lengths, attr), attr)


@pytest.fixture(scope="module")
def generator() -> GaussianHMM:
    """A GaussianHMM holding the generating parameters (n_iter=0: no EM step)."""
    gen = GaussianHMM(K, "full", init_params="", n_iter=0, random_state=0)
    gen.startprob_, gen.transmat_, gen.means_, gen.covars_ = START, TRANS, MEANS, COVARS
    gen.fit(np.zeros((2, D)))
    for attr, value in (("startprob_", START), ("transmat_", TRANS), ("means_", MEANS), ("covars_", COVARS)):
        assert_bitwise(getattr(gen, attr), value, attr)
    return gen


def test_sample(generator: GaussianHMM, fitted_categorical: CategoricalHMM) -> None:
    X, states = generator.sample(500)
    assert X.shape == (500, D)
    assert X.dtype == np.float64
    assert states.shape == (500,)
    assert set(np.unique(states)) <= set(range(K))
    again, again_states = generator.sample(500)
    np.testing.assert_array_equal(again, X)  # the estimator's random_state
    np.testing.assert_array_equal(again_states, states)
    _, other = generator.sample(500, random_state=1)
    assert not np.array_equal(other, states)
    _, start_in_2 = generator.sample(5, random_state=1, currstate=2)
    assert start_in_2[0] == 2
    symbols, cat_states = fitted_categorical.sample(300, random_state=0)
    assert symbols.shape == (300, 1)
    assert cat_states.shape == (300,)
    assert np.issubdtype(symbols.dtype, np.integer)
    assert symbols.min() >= 0
    assert symbols.max() < N_SYMBOLS


def test_fit_on_a_long_sample_recovers_the_generating_parameters(generator: GaussianHMM) -> None:
    X, states = generator.sample(20_000, random_state=2)
    est = GaussianHMM(K, "full", n_iter=100, tol=1e-4, random_state=0).fit(X, [500] * 40)
    assert est.converged_
    assert est.monitor_.converged
    order = [int(np.argmin(((est.means_ - m) ** 2).sum(axis=1))) for m in MEANS]
    assert sorted(order) == list(range(K))
    np.testing.assert_allclose(est.means_[order], MEANS, atol=0.05)
    np.testing.assert_allclose(est.transmat_[np.ix_(order, order)], TRANS, atol=0.05)
    np.testing.assert_allclose(est.covars_[order], COVARS, atol=0.05)
    # The Viterbi path finds the true states almost everywhere.
    agreement = np.mean(np.asarray(order)[states] == est.predict(X, [500] * 40))
    assert agreement > 0.95


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_default_initialisation_climbs(gaussian_X: np.ndarray, covariance_type: str) -> None:
    """init_params="stmc": k-means|| means and the data covariance, then EM climbs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = GaussianHMM(K, covariance_type, n_iter=40, tol=1e-4, random_state=0).fit(gaussian_X, LENGTHS)
    history = np.array(est.monitor_.history)
    assert len(history) == est.monitor_.iter == est.n_iter_ > 3
    assert np.all(np.isfinite(history))
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[1:]))
    assert history[-1] > history[0]
    # hmmlearn started from the same means and covariances agrees (1 iteration).
    ref = LearnGaussianHMM(K, covariance_type, init_params="", n_iter=1)
    again = GaussianHMM(K, covariance_type, n_iter=1, random_state=0).fit(gaussian_X, LENGTHS)
    first = GaussianHMM(K, covariance_type, n_iter=0, random_state=0).fit(gaussian_X, LENGTHS)
    np.testing.assert_array_equal(first.startprob_, np.full(K, 1.0 / K))  # hmmlearn's uniform start
    np.testing.assert_array_equal(first.transmat_, np.full((K, K), 1.0 / K))
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = (
        first.startprob_,
        first.transmat_,
        first.means_,
        first._covars_,
    )
    ref.fit(gaussian_X, LENGTHS)
    assert_same_gaussian(again, ref, 1e-10)
    np.testing.assert_allclose(again.monitor_.history[0], history[0], rtol=1e-12)


def test_categorical_default_initialisation(categorical_X: np.ndarray) -> None:
    est = CategoricalHMM(K, n_iter=30, tol=1e-4, random_state=0).fit(categorical_X, LENGTHS)
    assert est.n_features_ == N_SYMBOLS  # the largest symbol plus one
    history = np.array(est.monitor_.history)
    assert np.all(np.diff(history) >= -1e-8 * np.abs(history[1:]))
    assert history[-1] > history[0]
    np.testing.assert_allclose(est.emissionprob_.sum(axis=1), 1.0, rtol=1e-12)


def test_symbol_count_is_read_through_the_fit_session(categorical_X: np.ndarray) -> None:
    """n_features unset: the largest symbol is one pass of the fit's session (counted in
    n_passes_); given, or taken from emissionprob_, it costs no pass."""
    X = da.from_array(categorical_X, chunks=(SOURCE_CHUNKS, 1))
    inferred = CategoricalHMM(K, n_iter=2, tol=0.0, random_state=0).fit(X, LENGTHS)
    given = CategoricalHMM(K, n_iter=2, tol=0.0, random_state=0, n_features=N_SYMBOLS).fit(X, LENGTHS)
    assert inferred.n_features_ == given.n_features_ == N_SYMBOLS
    assert inferred.n_passes_ == given.n_passes_ + 1 == 2 * 2 + 1  # sequences split: two passes per iteration
    for attr in CATEGORICAL_ATTRS:
        assert_bitwise(getattr(inferred, attr), getattr(given, attr), attr)
    _, start_given = categorical_pair(n_iter=2, tol=0.0)
    assert start_given.fit(X, LENGTHS).n_passes_ == 4
    # Parameters set by hand give the symbols, even where the data use fewer of them.
    few = np.minimum(categorical_X, N_SYMBOLS - 2)
    _, by_hand = categorical_pair()
    ref = hmmlearn_hmm.CategoricalHMM(K, n_features=N_SYMBOLS)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = START0, TRANS0, EMISSION0
    assert relative_difference(by_hand.score(few, LENGTHS), ref.score(few, LENGTHS)) <= 1e-12


# -- parameters set by hand, no fit (hmmlearn's tutorial) -------------------------------------


def test_parameters_set_by_hand_score_decode_and_predict_as_hmmlearn() -> None:
    """hmmlearn's tutorial sets startprob_, transmat_, means_ and covars_ by hand and then
    samples, scores and decodes without a fit: daskem does the same, with hmmlearn's numbers."""
    startprob = np.array([0.6, 0.3, 0.1])
    transmat = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.3, 0.3, 0.4]])
    means = np.array([[0.0, 0.0], [3.0, -3.0], [5.0, 10.0]])
    covars = np.tile(np.identity(2), (3, 1, 1))
    ours = GaussianHMM(n_components=3, covariance_type="full")
    ref = hmmlearn_hmm.GaussianHMM(n_components=3, covariance_type="full")
    for model in (ours, ref):
        model.startprob_, model.transmat_, model.means_, model.covars_ = startprob, transmat, means, covars
    X, _ = ref.sample(300, random_state=np.random.RandomState(4))
    lengths = [100, 200]
    assert relative_difference(ours.score(X, lengths), ref.score(X, lengths)) <= 1e-12
    log_prob, states = ours.decode(X, lengths)
    ref_log_prob, ref_states = ref.decode(X, lengths)
    np.testing.assert_array_equal(states, ref_states)
    assert relative_difference(log_prob, ref_log_prob) <= 1e-12
    np.testing.assert_allclose(ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), rtol=1e-8, atol=1e-12)
    with pytest.raises(DataError, match="X has 3 features, but GaussianHMM is expecting 2"):
        ours.score(np.zeros((5, 3)))


def test_categorical_parameters_set_by_hand_score_as_hmmlearn() -> None:
    emissionprob = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    ours = CategoricalHMM(n_components=2)
    ref = hmmlearn_hmm.CategoricalHMM(n_components=2)
    for model in (ours, ref):
        model.startprob_ = np.array([0.5, 0.5])
        model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
        model.emissionprob_ = emissionprob
    ref.n_features = 3
    X = np.random.default_rng(2).integers(0, 3, size=(400, 1))
    assert relative_difference(ours.score(X, [150, 250]), ref.score(X, [150, 250])) <= 1e-12
    np.testing.assert_array_equal(ours.predict(X, [150, 250]), ref.predict(X, [150, 250]))
