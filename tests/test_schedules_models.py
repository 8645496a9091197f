"""Incremental and online EM, and ``partial_fit``, for KMeans, PPCA, FactorAnalysis and the HMMs.

Oracles: batch EM itself (incremental with every block per step is batch EM bit for bit),
the batch fixed point (incremental with fewer blocks per step reaches it), ``fit`` with
``schedule="online", shuffle=False, max_iter=1`` (``partial_fit`` over the same blocks
in order is the same computation), scikit-learn's ``MiniBatchKMeans.partial_fit`` (the
count-weighted mean of the rows assigned to each centre), the batch estimate on data
drawn from a known model (online EM gets close to it), and the settings refused with the
fix named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans

from daskem import PPCA, CategoricalHMM, FactorAnalysis, GaussianHMM, GaussianImputer, KMeans
from daskem.errors import DataError, ParameterError

# -- data drawn from known models ---------------------------------------------------------------

KM_CENTRES = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
#: A deliberately poor start: Lloyd's iterations move the centres for several iterations.
KM_INIT = KM_CENTRES + np.array([[1.2, -0.8], [-0.9, 1.1], [0.9, -1.3]])


def _blobs(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return KM_CENTRES[rng.integers(0, 3, n)] + rng.normal(size=(n, 2))


def _factors(n: int = 2400, seed: int = 0, noise: Any = 2.0) -> np.ndarray:
    """Two factors of loadings 3 in 6 dimensions, noise variance ``noise`` (a scalar or per feature)."""
    rng = np.random.default_rng(seed)
    loadings = 3.0 * np.linalg.qr(rng.normal(size=(6, 6)))[0][:2]
    return rng.normal(size=(n, 2)) @ loadings + rng.normal(size=(n, 6)) * np.sqrt(noise) + 3.0


FA_NOISE = np.array([1.5, 2.0, 2.5, 3.0, 1.8, 2.2])

STARTPROB = np.array([0.6, 0.4])
TRANSMAT = np.array([[0.9, 0.1], [0.2, 0.8]])
MEANS = np.array([[0.0, 0.0], [3.0, 3.0]])
EMISSIONPROB = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])


def _gaussian_sequences(n: int = 4000) -> np.ndarray:
    gen = GaussianHMM(2, covariance_type="diag", random_state=1)
    gen.startprob_, gen.transmat_, gen.means_, gen.covars_ = STARTPROB, TRANSMAT, MEANS, np.ones((2, 2))
    return gen.sample(n)[0]


def _symbol_sequences(n: int = 4000) -> np.ndarray:
    gen = CategoricalHMM(2, n_features=3, random_state=1)
    gen.startprob_, gen.transmat_, gen.emissionprob_ = STARTPROB, TRANSMAT, EMISSIONPROB
    return gen.sample(n)[0]


def _gaussian_start(est: GaussianHMM) -> GaussianHMM:
    """An explicit start (hmmlearn's way: the parameters set, ``init_params=""``)."""
    est.startprob_ = np.array([0.5, 0.5])
    est.transmat_ = np.array([[0.7, 0.3], [0.3, 0.7]])
    est.means_ = np.array([[0.8, -0.5], [2.2, 2.6]])
    est.covars_ = np.full((2, 2), 2.0)
    return est


def _categorical_start(est: CategoricalHMM) -> CategoricalHMM:
    est.startprob_ = np.array([0.5, 0.5])
    est.transmat_ = np.array([[0.7, 0.3], [0.3, 0.7]])
    est.emissionprob_ = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    return est


# -- one case per estimator ---------------------------------------------------------------------


@dataclass
class Case:
    """An estimator: its data (``data()`` rows in dask chunks of ``chunk`` rows), how to build
    it from the same start (``make``), its fitted parameter attributes and, for the HMMs, the
    length of every sequence."""

    name: str
    data: Callable[[], np.ndarray]
    chunk: int
    make: Callable[..., Any]
    attrs: tuple[str, ...]
    sequence: int | None = None
    _cache: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return self.name

    @property
    def X(self) -> np.ndarray:
        if self._cache is None:
            self._cache = self.data()
        return self._cache

    def lengths(self, rows: int) -> list[int] | None:
        return None if self.sequence is None else [self.sequence] * (rows // self.sequence)

    def fit(self, est: Any, X: Any) -> Any:
        if self.sequence is None:
            return est.fit(X)
        return est.fit(X, self.lengths(X.shape[0]))

    def partial_fit(self, est: Any, X: np.ndarray) -> Any:
        if self.sequence is None:
            return est.partial_fit(X)
        return est.partial_fit(X, self.lengths(X.shape[0]))

    def blocks(self) -> Any:
        return da.from_array(self.X, chunks=self.chunk)


def _kmeans(**params: Any) -> KMeans:
    return KMeans(3, init=KM_INIT, **params)


def _ppca(**params: Any) -> PPCA:
    params.setdefault("random_state", 0)
    return PPCA(2, **params)


def _fa(**params: Any) -> FactorAnalysis:
    params.setdefault("random_state", 0)
    return FactorAnalysis(2, svd_method="lapack", **params)


def _max_iter(params: dict[str, Any]) -> dict[str, Any]:
    """hmmlearn's name of ``max_iter`` is ``n_iter``."""
    if "max_iter" in params:
        params["n_iter"] = params.pop("max_iter")
    return params


def _ghmm(**params: Any) -> GaussianHMM:
    return _gaussian_start(GaussianHMM(2, covariance_type="diag", init_params="", **_max_iter(params)))


def _chmm(**params: Any) -> CategoricalHMM:
    return _categorical_start(CategoricalHMM(2, n_features=3, init_params="", **_max_iter(params)))


KMEANS = Case("KMeans", _blobs, 300, _kmeans, ("cluster_centers_",))
# PPCA and FactorAnalysis start from the first 1,024 rows: blocks of 1,200 rows give
# partial_fit's first batch the same rows.
PPCA_CASE = Case("PPCA", _factors, 1200, _ppca, ("components_", "mean_", "noise_variance_"))
FA_CASE = Case(
    "FactorAnalysis", lambda: _factors(noise=FA_NOISE), 1200, _fa, ("components_", "mean_", "noise_variance_")
)
GHMM = Case(
    "GaussianHMM", _gaussian_sequences, 400, _ghmm, ("startprob_", "transmat_", "means_", "_covars_"), sequence=50
)
CHMM = Case("CategoricalHMM", _symbol_sequences, 400, _chmm, ("startprob_", "transmat_", "emissionprob_"), sequence=50)
CASES = [KMEANS, PPCA_CASE, FA_CASE, GHMM, CHMM]


def _equal(a: Any, b: Any, attrs: tuple[str, ...]) -> None:
    for attr in attrs:
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr


# -- incremental EM -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_incremental_with_every_block_per_step_is_batch_em_bitwise(case):
    data = case.blocks()
    n_blocks = data.numblocks[0]
    # tol=0: every iteration runs (KMeans stops at a strict fixed point, both alike).
    batch = case.fit(case.make(max_iter=6, tol=0.0, split_every=2), data)
    incremental = case.fit(
        case.make(max_iter=6, tol=0.0, split_every=2, schedule="incremental", step_blocks=n_blocks), data
    )
    _equal(batch, incremental, case.attrs)
    assert incremental.n_iter_ == batch.n_iter_
    assert incremental.lower_bounds_ == batch.lower_bounds_
    assert incremental.n_steps_ == incremental.n_iter_


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize(
    ("case", "chunk", "max_iter", "rtol"),
    [
        # Well-separated enough blobs from a poor start: both should reach the same partition,
        # whose centres are the means of the same rows summed in another order.
        pytest.param(KMEANS, 250, 100, 1e-12),
        # A fixed number of sweeps (tol=0) takes both to the maximum to rounding: batch EM,
        # the slower, gains about 0.5 (PPCA), 0.93 (FA), 0.85 (CategoricalHMM) of its distance
        # per iteration; the rtol is what max_iter leaves of it (measured 1e-10 and below).
        pytest.param(PPCA_CASE, 600, 80, 1e-9),
        pytest.param(FA_CASE, 800, 300, 1e-9),
        pytest.param(GHMM, 800, 30, 1e-12),
        pytest.param(CHMM, 800, 150, 1e-9),
    ],
    ids=["KMeans", "PPCA", "FactorAnalysis", "GaussianHMM", "CategoricalHMM"],
)
def test_incremental_with_fewer_blocks_per_step_reaches_the_batch_fixed_point(case, chunk, max_iter, rtol):
    data = da.from_array(case.X, chunks=chunk)
    tol = 1e-12 if case is KMEANS else 0.0
    batch = case.fit(case.make(max_iter=max_iter, tol=tol), data)
    incremental = case.fit(case.make(max_iter=max_iter, tol=tol, schedule="incremental", step_blocks=1), data)
    if case is KMEANS:
        assert batch.converged_
        assert incremental.converged_
        assert incremental.n_iter_ <= batch.n_iter_  # an M-step every block: no more sweeps
    if case in (PPCA_CASE, FA_CASE):
        # The loadings are defined up to a rotation: compare the model covariance.
        assert _relative(incremental.get_covariance(), batch.get_covariance()) < rtol
        assert _relative(incremental.noise_variance_, batch.noise_variance_) < rtol
        assert _relative(incremental.mean_, batch.mean_) < 1e-12
        return
    for attr in case.attrs:
        assert _relative(getattr(incremental, attr), getattr(batch, attr)) < rtol, attr


# -- partial_fit ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_partial_fit_over_the_blocks_in_order_is_an_online_epoch_bitwise(case):
    fitted = case.fit(case.make(schedule="online", shuffle=False, max_iter=1), case.blocks())
    online = case.make()
    rows = case.X.shape[0]
    for start in range(0, rows, case.chunk):
        case.partial_fit(online, case.X[start : start + case.chunk])
    _equal(online, fitted, case.attrs)
    assert online.n_steps_ == fitted.n_steps_ == rows // case.chunk
    assert online.n_samples_seen_ == fitted.n_samples_seen_ == rows
    assert online.n_features_in_ == fitted.n_features_in_ == case.X.shape[1]
    # The epoch's mean log-likelihood is the mean of its (equal-sized) steps'.
    assert np.mean(online.lower_bounds_) == pytest.approx(fitted.lower_bounds_[0], rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_partial_fit_continues_an_online_fit(case):
    half = case.X.shape[0] // 2
    whole = case.fit(case.make(schedule="online", shuffle=False, max_iter=1), case.blocks())
    part = case.fit(
        case.make(schedule="online", shuffle=False, max_iter=1), da.from_array(case.X[:half], chunks=case.chunk)
    )
    for start in range(half, case.X.shape[0], case.chunk):
        case.partial_fit(part, case.X[start : start + case.chunk])
    _equal(part, whole, case.attrs)


def test_partial_fit_refuses_other_features():
    est = KMeans(3, init=KM_INIT).partial_fit(_blobs(300))
    with pytest.raises(DataError, match="X has 3 features, but KMeans is expecting 2 features"):
        est.partial_fit(np.ones((10, 3)))
    assert est.n_features_in_ == 2
    hmm = _ghmm().partial_fit(_gaussian_sequences(400), [50] * 8)
    with pytest.raises(DataError, match="X has 3 features, but GaussianHMM is expecting 2 features"):
        hmm.partial_fit(np.ones((10, 3)))
    assert hmm.n_features_in_ == 2


def test_categorical_partial_fit_takes_the_symbols_of_its_first_batch():
    X = _symbol_sequences(1000)
    est = CategoricalHMM(2, random_state=0).partial_fit(X, [50] * 20)
    assert est.n_features == est.n_features_ == 3
    assert est.emissionprob_.shape == (2, 3)
    with pytest.raises(DataError, match=r"Symbol 5 is outside the range of symbols \[0, 3\)"):
        est.partial_fit(np.full((10, 1), 5))


def test_hmm_partial_fit_refuses_a_sequence_longer_than_a_block():
    X = da.from_array(_gaussian_sequences(800), chunks=100)
    with pytest.raises(ParameterError, match=r"a sequence of 400 rows is longer than a block \(100 rows\)"):
        GaussianHMM(2, random_state=0).partial_fit(X, [400, 400])


# -- KMeans: scikit-learn's MiniBatchKMeans ------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_partial_fit_is_minibatch_kmeans_partial_fit(weighted):
    """scikit-learn's update (``_mini_batch_step``, ``update_center_dense``) keeps per centre
    the weight of the rows assigned so far, ``c <- (c W + sum_batch w x) / (W + w_batch)``: the
    weighted mean of every row ever assigned to the centre. Online k-means with
    ``learning_decay=1`` on batches of equal size is that mean too (the running statistics
    are the mean of the batches' per-row statistics). Overlapping clusters from a poor start:
    assignments change from batch to batch, and every centre gets rows in the first batch."""
    X = _blobs(n=3000, seed=3) * 0.6  # overlapping clusters
    w = np.random.default_rng(4).uniform(0.2, 2.0, X.shape[0]) if weighted else None
    ours = KMeans(3, init=KM_INIT * 0.6)
    theirs = MiniBatchKMeans(3, init=KM_INIT * 0.6, n_init=1, reassignment_ratio=0.0, batch_size=300)
    moved = []
    for start in range(0, 3000, 300):
        weights = None if w is None else w[start : start + 300]
        ours.partial_fit(X[start : start + 300], sample_weight=weights)
        theirs.partial_fit(X[start : start + 300], sample_weight=weights)
        np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(ours.labels_, theirs.labels_)
        assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-10)
        moved.append(ours.cluster_centers_.copy())
    assert ours.n_steps_ == theirs.n_steps_ == 10
    assert ours.n_features_in_ == theirs.n_features_in_ == 2  # not counting the weight column
    # Not one batch's means: the centres keep moving as batches add up.
    assert np.abs(moved[-1] - moved[0]).max() > 0.01


def test_kmeans_first_partial_fit_needs_n_clusters_rows():
    with pytest.raises(DataError, match="n_samples=2 should be >= n_clusters=3: the first partial_fit"):
        KMeans(3).partial_fit(np.ones((2, 2)))


def test_kmeans_n_init_auto_is_one_initialisation_under_a_schedule():
    X = _blobs(600)
    est = KMeans(3, init="random", schedule="online", max_iter=2, random_state=0).fit(X)
    assert est._n_init == 1
    assert KMeans(3, init="random", random_state=0, max_iter=2).fit(X)._n_init == 10


# -- online EM near the batch estimate ---------------------------------------------------------


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def test_kmeans_online_is_near_lloyds_centres():
    X = _blobs(n=8000, seed=5)
    batch = KMeans(3, init=KM_INIT, tol=1e-10).fit(X)
    # Centres within 0.02 of Lloyd's (the centres' sampling error is about 1 / sqrt(2,700) = 0.02).
    online = KMeans(3, init=KM_INIT, schedule="online", max_iter=5, tol=0.0, random_state=0).fit(
        da.from_array(X, chunks=250)
    )
    np.testing.assert_allclose(online.cluster_centers_, batch.cluster_centers_, atol=0.02)
    assert online.inertia_ == pytest.approx(batch.inertia_, rel=1e-3)


@pytest.mark.parametrize("case", [PPCA_CASE, FA_CASE], ids=repr)
def test_linear_gaussian_online_is_near_the_batch_estimate(case):
    X = _factors(n=9600, seed=6) if case is PPCA_CASE else _factors(n=9600, seed=6, noise=FA_NOISE)
    batch = case.make(tol=1e-10, max_iter=500).fit(X)
    online = case.make(schedule="online", max_iter=5, tol=0.0, average=True).fit(da.from_array(X, chunks=300))
    assert _relative(online.get_covariance(), batch.get_covariance()) < 0.05
    assert _relative(online.mean_, batch.mean_) < 0.01
    assert online.score(X) == pytest.approx(batch.score(X), rel=2e-3)


@pytest.mark.parametrize("case", [GHMM, CHMM], ids=repr)
def test_hmm_online_is_near_the_batch_estimate(case):
    X = _gaussian_sequences(12000) if case is GHMM else _symbol_sequences(12000)
    lengths = [50] * 240
    batch = case.make(max_iter=200, tol=1e-6).fit(X, lengths)
    online = case.make(schedule="online", max_iter=5, tol=0.0, average=True, random_state=0)
    online.fit(da.from_array(X, chunks=400), lengths)
    for attr in case.attrs:
        # The start probabilities rest on 240 sequence starts (8 per step): 0.1; the rest 0.03.
        atol = 0.1 if attr == "startprob_" else 0.03
        np.testing.assert_allclose(getattr(online, attr), getattr(batch, attr), atol=atol, err_msg=attr)
    assert online.score(X, lengths) == pytest.approx(batch.score(X, lengths), rel=2e-3)


# -- the imputer ------------------------------------------------------------------------------


def test_imputer_partial_fit_is_an_online_epoch_and_sets_the_draw_seed():
    X = _blobs(3000)
    X[::7, 1] = np.nan
    params = {"means_init": KM_INIT, "weights_init": np.full(3, 1 / 3), "precisions_init": np.stack([np.eye(2)] * 3)}
    fitted = GaussianImputer(3, schedule="online", shuffle=False, max_iter=1, random_state=0, **params).fit(
        da.from_array(X, chunks=500)
    )
    online = GaussianImputer(3, random_state=0, **params)
    for start in range(0, 3000, 500):
        online.partial_fit(X[start : start + 500])
    _equal(online, fitted, ("weights_", "means_", "covariances_"))
    assert online.draw_seed_ == fitted.draw_seed_ == 0
    assert not np.isnan(online.transform(X[:20])).any()


# -- bad settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=repr)
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"schedule": "nope"}, r"'schedule' parameter of {name} must be a str among \['batch'"),
        ({"schedule": "online", "learning_decay": 0.3}, r"'learning_decay' parameter of {name} .* Got 0.3"),
        ({"schedule": "incremental", "step_blocks": 0}, r"'step_blocks' parameter of {name} .* Got 0"),
        ({"schedule": "stochastic"}, r"{name} has no stochastic E-step: .* Use schedule='batch', 'incremental'"),
        ({"schedule": "online", "accelerate": "squarem"}, r"{name}: accelerate='squarem' .* Use accelerate=None"),
    ],
    ids=["schedule", "learning_decay", "step_blocks", "stochastic", "accelerate"],
)
def test_bad_schedule_settings_are_refused_with_the_fix(case, settings, message):
    X = case.X[:400]
    with pytest.raises(ParameterError, match=message.format(name=case.name)):
        case.fit(case.make(max_iter=2, **settings), X)


@pytest.mark.parametrize("case", [KMEANS, PPCA_CASE, FA_CASE], ids=repr)
def test_several_initialisations_are_refused_under_a_schedule(case):
    # KMeans: an array init makes one initialisation whatever n_init (scikit-learn's rule).
    est = (
        KMeans(3, init="k-means++", n_init=3, schedule="online")
        if case is KMEANS
        else case.make(n_init=3, schedule="online")
    )
    with pytest.raises(ParameterError, match=rf"{case.name} fits n_init=3 .* Use n_init=1, or schedule='batch'"):
        est.fit(case.X[:400])


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_partial_fit_refuses_bad_online_settings(case):
    with pytest.raises(ParameterError, match=rf"'learning_decay' parameter of {case.name} .* Got 0.3"):
        case.partial_fit(case.make(learning_decay=0.3), case.X[:400])
    with pytest.raises(ParameterError, match=r"average=True.*average=100"):
        case.partial_fit(case.make(average=True), case.X[:400])
