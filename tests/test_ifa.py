"""Independent factor analysis (model and estimator) against oracles.

Oracles: factor analysis (daskem's and scikit-learn's) for one Gaussian per source; a
brute-force E-step looping over the joint states with scipy's multivariate normal; the
gradient of a brute-force expected complete-data log-likelihood at the M-step's maximiser
(central differences); the mixing matrix of synthetic non-Gaussian sources (Amari index);
exact identities (chunkings and fan-ins, a resumed checkpointed fit). The model passes the
shared contract suite (:class:`daskem.testing.ModelContract`: additivity, combine laws,
chunking invariance, monotone log-likelihood, vector form, row scores).
"""

from __future__ import annotations

import itertools
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem.errors import ParameterError
from daskem.models.ifa import MAX_JOINT_STATES, IFAModel, IFAParams
from daskem.testing import ModelContract
from daskem.testing.contract import relative_difference

silence_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def assert_rel(actual: Any, desired: Any, rtol: float, name: str = "") -> None:
    diff = relative_difference(actual, desired)
    assert diff <= rtol, f"{name}: relative difference {diff:.3e} > {rtol:g}"


def sources(n: int, rng: np.random.Generator) -> np.ndarray:
    """Laplace, uniform and bimodal sources of unit variance: (n, 3)."""
    laplace = rng.laplace(size=n) / np.sqrt(2.0)
    uniform = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size=n)
    bimodal = np.where(rng.random(n) < 0.5, -0.9, 0.9) + np.sqrt(1 - 0.81) * rng.normal(size=n)
    return np.c_[laplace, uniform, bimodal]


def mixed(n: int, seed: int, noise: float = 0.1, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``A s + 3 + noise`` of the three sources in ``d`` features, and ``A``."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, 3))
    return sources(n, rng) @ mixing.T + noise * rng.normal(size=(n, d)) + 3.0, mixing


def amari(unmixing: np.ndarray, mixing: np.ndarray) -> float:
    """The Amari index of ``P = unmixing @ mixing`` in [0, 1]: 0 iff ``P`` is a scaled permutation."""
    p = np.abs(unmixing @ mixing)
    k = p.shape[0]
    rows = (p / p.max(axis=1, keepdims=True)).sum(axis=1) - 1.0
    cols = (p / p.max(axis=0, keepdims=True)).sum(axis=0) - 1.0
    return float((rows.sum() + cols.sum()) / (2.0 * k * (k - 1)))


# -- (1) one Gaussian per source: factor analysis ------------------------------------------------


@pytest.fixture(scope="module")
def fa_X() -> np.ndarray:
    """1500 rows, 5 features, 2 Gaussian factors, a different noise variance per feature."""
    rng = np.random.default_rng(1)
    loadings = 1.5 * rng.normal(size=(2, 5))
    return rng.normal(size=(1500, 2)) @ loadings + rng.uniform(0.2, 2.0, 5) ** 0.5 * rng.normal(size=(1500, 5)) + 3.0


@silence_convergence
def test_one_gaussian_per_source_is_factor_analysis(fa_X: np.ndarray) -> None:
    kw = {"tol": 0.0, "accelerate": "squarem", "max_iter": 300}
    ifa = daskem.IndependentFactorAnalysis(2, n_source_components=1, **kw).fit(fa_X)
    fa = daskem.FactorAnalysis(2, **kw).fit(fa_X)
    # tol=0: until the log-likelihood stops rising in floating point.
    sk = SklearnFactorAnalysis(2, tol=0.0, max_iter=5_000, svd_method="lapack").fit(fa_X)
    # Every source is N(0, 1) after the normalisation: the model is factor analysis.
    np.testing.assert_allclose(ifa.source_weights_, 1.0, rtol=1e-14)
    np.testing.assert_allclose(ifa.source_means_, 0.0, atol=1e-14)
    np.testing.assert_allclose(ifa.source_variances_, 1.0, rtol=1e-12)
    assert_rel(ifa.get_covariance(), fa.get_covariance(), 1e-10, "covariance")
    assert_rel(ifa.mean_, fa.mean_, 1e-12, "mean")
    assert_rel(ifa.mean_, sk.mean_, 1e-12, "mean")
    for other in (fa.score(fa_X), sk.score(fa_X)):
        assert ifa.score(fa_X) == pytest.approx(other, rel=1e-12)
    # scikit-learn's parameters converge linearly and its loop stops once the float
    # log-likelihood stops rising: they are ~5e-8 from the maximum (as daskem's FactorAnalysis
    # finds, tests/test_ppca_fa.py), where the likelihood is flat to 1e-14.
    assert_rel(ifa.get_covariance(), sk.get_covariance(), 1e-6, "covariance")
    # So the fixed point itself: scikit-learn's iteration started from IFA's noise stays there.
    for max_iter in (1, 3):
        at = SklearnFactorAnalysis(
            2, tol=0.0, max_iter=max_iter, svd_method="lapack", noise_variance_init=ifa.noise_variance_
        ).fit(fa_X)
        assert_rel(ifa.get_covariance(), at.get_covariance(), 1e-10, "covariance at scikit-learn's fixed point")
        assert_rel(ifa.noise_variance_, at.noise_variance_, 1e-10, "noise at scikit-learn's fixed point")


# -- (2) E-step and M-step against brute force -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[IFAModel, IFAParams, np.ndarray]:
    """Two sources of 2 and 3 Gaussians in 4 features, arbitrary parameters, 60 rows."""
    rng = np.random.default_rng(0)
    model = IFAModel(2, (2, 3))
    params = model.make_params(
        rng.normal(size=(4, 2)),
        rng.normal(size=4),
        rng.uniform(0.2, 1.0, 4),
        np.r_[rng.dirichlet([1.0, 1.0]), rng.dirichlet([1.0, 1.0, 1.0])],
        rng.normal(size=5),
        rng.uniform(0.3, 1.5, 5),
    )
    return model, params, 2.0 * rng.normal(size=(60, 4))


def joint_posteriors(model: IFAModel, params: IFAParams, X: np.ndarray) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """By a loop over the joint states: per row the log-likelihood, the states' (Gaussians,
    responsibility, posterior mean, posterior covariance), and the responsibilities."""
    a, m, psi = params.mixing, params.mean, params.noise_variance
    offsets = model.source_offsets()
    states = []
    for q in itertools.product(*(range(k) for k in model.n_source_components)):
        index = [int(offsets[i]) + j for i, j in enumerate(q)]
        mu, v = params.source_means[index], np.diag(params.source_variances[index])
        covariance = np.linalg.inv(a.T @ np.diag(1 / psi) @ a + np.linalg.inv(v))
        log_prior = np.log(params.source_weights[index]).sum()
        states.append((index, mu, v, covariance, log_prior))
    log_joint = np.array(
        [
            [lp + multivariate_normal(a @ mu + m, a @ v @ a.T + np.diag(psi)).logpdf(x) for x in X]
            for _, mu, v, _, lp in states
        ]
    )
    loglik = logsumexp(log_joint, axis=0)
    resp = np.exp(log_joint - loglik)
    posts = [
        (index, cov, [cov @ (a.T @ ((x - m) / psi) + np.linalg.solve(v, mu)) for x in X])
        for index, mu, v, cov, _ in states
    ]
    return loglik, posts, resp


def test_e_step_equals_the_brute_force_sum_over_states(tiny: Any) -> None:
    model, params, X = tiny
    loglik, posts, resp = joint_posteriors(model, params, X)
    k = params.source_means.shape[0]
    counts, first, second = np.zeros(k), np.zeros(k), np.zeros(k)
    latent = np.zeros((X.shape[0], 2))
    latent_second = np.zeros((2, 2))
    for (index, cov, means), r in zip(posts, resp, strict=True):
        for row, mean in enumerate(means):
            latent[row] += r[row] * mean
            latent_second += r[row] * (cov + np.outer(mean, mean))
            for i, g in enumerate(index):
                offset = mean[i] - params.source_means[g]
                counts[g] += r[row]
                first[g] += r[row] * offset
                second[g] += r[row] * (offset**2 + cov[i, i])
    stats = model.e_step(params, X)
    y = X - params.mean
    assert stats.loglik == pytest.approx(loglik.sum(), rel=1e-12)
    for name, got, want in [
        ("counts", stats.counts, counts),
        ("source_first", stats.source_first, first),
        ("source_second", stats.source_second, second),
        ("latent_sum", stats.latent_sum, latent.sum(axis=0)),
        ("latent_second", stats.latent_second, latent_second),
        ("cross", stats.cross, latent.T @ y),
        ("first", stats.first, y.sum(axis=0)),
        ("square", stats.square, (y * y).sum(axis=0)),
        ("transform", model.transform(params, X), latent),
        ("score_samples", model.score_samples(params, X), loglik),
    ]:
        assert_rel(got, want, 1e-10, name)


def expected_complete_loglik(new: IFAParams, posts: list[Any], resp: np.ndarray, X: np.ndarray) -> float:
    """Q(new | old): E[log p(x, s, q | new)] under the posteriors of ``old`` (``joint_posteriors``)."""
    a, m, psi = new.mixing, new.mean, new.noise_variance
    total = 0.0
    for (index, cov, means), r in zip(posts, resp, strict=True):
        w, mu, nu = new.source_weights[index], new.source_means[index], new.source_variances[index]
        mean = np.asarray(means)
        observed = (X - m - mean @ a.T) ** 2 + np.einsum("da,ab,db->d", a, cov, a)
        sources = (mean - mu) ** 2 + np.diag(cov)
        per_row = -0.5 * (np.log(2 * np.pi * psi) + observed / psi).sum(axis=1) + (
            np.log(w) - 0.5 * np.log(2 * np.pi * nu) - 0.5 * sources / nu
        ).sum(axis=1)
        total += float(r @ per_row)
    return total


def test_m_step_maximises_the_expected_complete_data_log_likelihood(tiny: Any) -> None:
    model, params, X = tiny
    best = model.maximize(model.e_step(params, X))
    vector = model.to_vector(best)
    _, posts, resp = joint_posteriors(model, params, X)

    def q(v: np.ndarray) -> float:
        return expected_complete_loglik(model.from_vector(v, best), posts, resp, X)

    top = q(vector)
    h = 1e-5
    gradient = np.array([(q(vector + h * e) - q(vector - h * e)) / (2 * h) for e in np.eye(vector.size)])
    assert np.abs(gradient).max() < 1e-5 * abs(top), gradient
    # ... and a maximum: random nearby parameters are no better.
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert q(vector + 1e-3 * rng.normal(size=vector.size)) < top
    # The normalisation leaves the observed-data likelihood unchanged.
    normalised = model.normalize(best)
    assert model.e_step(normalised, X).loglik == pytest.approx(model.e_step(best, X).loglik, rel=1e-12)
    centre, variance = model.source_moments(normalised)
    np.testing.assert_allclose(centre, 0.0, atol=1e-14)
    np.testing.assert_allclose(variance, 1.0, rtol=1e-14)


# -- (3) recovery of non-Gaussian sources ------------------------------------------------------------


@silence_convergence
def test_recovers_the_mixing_matrix_of_non_gaussian_sources() -> None:
    X, mixing = mixed(100_000, seed=1)
    start = daskem.IndependentFactorAnalysis(3, max_iter=0).fit(X)
    ifa = daskem.IndependentFactorAnalysis(3, n_source_components=3, max_iter=6, tol=0.0).fit(X)
    assert amari(ifa.components_, mixing) < 0.05
    assert amari(ifa.components_, mixing) < amari(start.components_, mixing)
    np.testing.assert_allclose(ifa.components_ @ ifa.mixing_, np.eye(3), atol=1e-12)
    assert np.all(np.diff(ifa.lower_bounds_) >= -1e-13 * np.abs(ifa.lower_bounds_[1:]))
    # The noise (0.1^2 on every feature) is small against the features' variances (~1).
    assert np.all(ifa.noise_variance_ < 0.03)
    latent = ifa.transform(X[:2000])
    np.testing.assert_allclose(ifa.inverse_transform(latent), X[:2000], atol=0.5)


# -- (5) chunking, split_every, inputs; (6) resume ---------------------------------------------------


@pytest.fixture(scope="module")
def small_X() -> np.ndarray:
    return mixed(3000, seed=2, noise=0.3, d=4)[0]


@pytest.fixture(scope="module")
def small_zarr(tmp_path_factory: pytest.TempPathFactory, small_X: np.ndarray) -> str:
    path = str(tmp_path_factory.mktemp("ifa") / "X.zarr")
    zarr.create_array(store=path, shape=small_X.shape, chunks=(700, small_X.shape[1]), dtype="float64")[...] = small_X
    return path


KW = {"n_components": 2, "n_source_components": [2, 3], "tol": 0.0, "max_iter": 8}


@silence_convergence
def test_chunking_and_split_every(small_X: np.ndarray, small_zarr: str) -> None:
    on_disk = daskem.IndependentFactorAnalysis(**KW, split_every=2).fit(small_zarr)
    lazy = daskem.IndependentFactorAnalysis(**KW, split_every=2).fit(da.from_array(small_X, chunks=(700, 4)))
    fan_in = daskem.IndependentFactorAnalysis(**KW, split_every=3).fit(small_zarr)
    rechunked = daskem.IndependentFactorAnalysis(**KW, split_every=2).fit(da.from_array(small_X, chunks=(450, 4)))
    in_memory = daskem.IndependentFactorAnalysis(**KW).fit(small_X)
    names = ("mixing_", "mean_", "noise_variance_", "source_weights_", "source_means_", "source_variances_")
    for name in names:
        # The same blocks and fan-in: bitwise. Other blocks or fan-ins sum the blocks'
        # statistics in another order (and BLAS sums a block's rows in tiles), so the fits
        # agree to rounding, amplified by 8 iterations.
        assert getattr(on_disk, name).tobytes() == getattr(lazy, name).tobytes(), name
        for other in (fan_in, rechunked, in_memory):
            assert_rel(getattr(other, name), getattr(on_disk, name), 1e-11, name)
    assert on_disk.lower_bounds_ == lazy.lower_bounds_
    np.testing.assert_allclose(rechunked.lower_bounds_, on_disk.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(fan_in.lower_bounds_, on_disk.lower_bounds_, rtol=1e-12)
    assert isinstance(on_disk.transform(small_zarr), da.Array)
    assert_rel(on_disk.transform(small_zarr).compute(), on_disk.transform(small_X), 1e-12, "transform")
    assert on_disk.score(small_zarr) == pytest.approx(in_memory.score(small_X), rel=1e-10)


class Interrupted(Exception):
    """Raised by a callback to stop a fit after a committed iteration."""


def stop_after(n: int) -> Any:
    def callback(record: Any, params: Any) -> None:
        if record.iteration == n:
            raise Interrupted

    return callback


@silence_convergence
@pytest.mark.parametrize("accelerate", [None, "squarem"])
def test_resumed_fit_equals_the_uninterrupted_fit_bitwise(
    accelerate: str | None, small_zarr: str, tmp_path: Any
) -> None:
    kw = {**KW, "split_every": 2, "accelerate": accelerate, "n_init": 2 if accelerate is None else 1}
    expected = daskem.IndependentFactorAnalysis(**kw).fit(small_zarr)
    path = str(tmp_path / "fit.zarr")
    with pytest.raises(Interrupted):
        daskem.IndependentFactorAnalysis(**kw, checkpoint=path).fit(small_zarr, callback=stop_after(4))
    resumed = daskem.IndependentFactorAnalysis(**kw, checkpoint=path).fit(small_zarr)
    loaded = daskem.load(path)
    for fitted in (resumed, loaded):
        for name in ("mixing_", "components_", "mean_", "noise_variance_", "source_weights_", "source_means_"):
            assert getattr(fitted, name).tobytes() == getattr(expected, name).tobytes(), name
        assert fitted.lower_bounds_ == expected.lower_bounds_
        assert fitted.n_iter_ == expected.n_iter_ == KW["max_iter"]
    assert loaded.get_params() == expected.get_params()


def test_saved_model_round_trip(small_X: np.ndarray, tmp_path: Any) -> None:
    est = daskem.IndependentFactorAnalysis(n_source_components=2, max_iter=3, tol=0.0)
    with pytest.warns(ConvergenceWarning):
        est.fit(small_X)  # n_components=None: every feature
    assert est.mixing_.shape == (4, 4)
    est.save(tmp_path / "model.zarr")
    loaded = daskem.load(tmp_path / "model.zarr")
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(loaded.transform(small_X), est.transform(small_X))
    np.testing.assert_array_equal(loaded.score_samples(small_X), est.score_samples(small_X))


# -- (7) the joint-state limit and other refusals ---------------------------------------------------


def test_too_many_joint_states_are_refused(small_X: np.ndarray) -> None:
    assert MAX_JOINT_STATES == 4096
    IFAModel(12, (2,) * 12)  # 4096 states: allowed
    message = r"n_source_components=\[3, 3, 3, 3, 3, 3, 3, 3\] gives 6561 joint source states .* more than the 4096"
    with pytest.raises(ParameterError, match=message):
        IFAModel(8, (3,) * 8)
    with pytest.raises(ParameterError, match=r"gives 717897987691852588770249 joint source states"):
        IFAModel(50, (3,) * 50)  # beyond int64: counted exactly
    with pytest.raises(ParameterError, match=message):
        daskem.IndependentFactorAnalysis(8).fit(np.random.default_rng(0).normal(size=(50, 10)))
    with pytest.raises(ParameterError, match=r"gives 5000 joint source states"):
        daskem.IndependentFactorAnalysis(2, n_source_components=[50, 100]).fit(small_X)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 5}, "n_components=5 must be <= n_features=4"),
        ({"n_components": 2, "n_source_components": [2]}, "one int >= 1 per source"),
        ({"n_components": 2, "n_source_components": [2, 2.5]}, "one int >= 1 per source"),
        ({"n_components": 2, "n_source_components": 0}, "n_source_components"),
        ({"n_components": 2, "n_init": 0}, "n_init"),
    ],
)
def test_bad_parameters(params: dict[str, Any], message: str, small_X: np.ndarray) -> None:
    with pytest.raises(ParameterError, match=message):
        daskem.IndependentFactorAnalysis(**params).fit(small_X)


# -- the model contract ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> IFAModel:
    return IFAModel(2, (2, 3))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """400 rows of two non-Gaussian sources in 4 features, offset from the origin."""
    return mixed(400, seed=5, noise=0.3, d=4)[0][:, :4]


@pytest.fixture(scope="module")
def params(model: IFAModel, data: np.ndarray) -> IFAParams:
    rng = np.random.default_rng(3)
    return model.init_params(rng.normal(size=(2, 4)), data[:50].mean(axis=0), data.var(axis=0) / 2, rng)


class TestIFAContract(ModelContract):
    """Every law of the contract, and those of the vector form and row scores."""
