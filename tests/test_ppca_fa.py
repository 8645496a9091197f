"""Probabilistic PCA and factor analysis (models and estimators) against oracles.

Oracles: the closed-form maximum-likelihood PPCA solution (eigen-decomposition of the
sample covariance, Tipping & Bishop 1999) and scikit-learn's ``PCA``; scikit-learn's
``FactorAnalysis`` (likelihood, covariance, precision, noise, posterior means up to a
rotation); one textbook EM step written here in plain NumPy, in memory, and scipy's
multivariate normal density for the log-likelihood; exact identities (NumPy, dask and
Zarr inputs; a resumed checkpointed fit; a fit on worker processes). Both models also
pass the shared contract suite (:class:`daskem.testing.ModelContract`), and both
estimators scikit-learn's estimator checks.

Seeds are pinned and the data small: the module runs in well under a minute on two cores.
"""

from __future__ import annotations

import re
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import daskem
from daskem.em import current_client, fit_em
from daskem.errors import DataError, ParameterError
from daskem.models import FactorAnalysisModel, FactorAnalysisParams, PPCAModel, PPCAParams
from daskem.models.linear_gaussian import ortho_rotation
from daskem.testing import ModelContract
from daskem.testing.contract import relative_difference

Q = 2
CHUNK_ROWS = 300

silence_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def assert_rel(actual: Any, desired: Any, rtol: float, name: str = "") -> None:
    """Assert ``max|actual - desired| <= rtol * max|.|`` (relative to the array's scale)."""
    diff = relative_difference(actual, desired)
    assert diff <= rtol, f"{name}: relative difference {diff:.3e} > {rtol:g}"


def chunked(X: np.ndarray, rows: int = CHUNK_ROWS) -> da.Array:
    return da.from_array(X, chunks=(rows, X.shape[1]))


def factor_data(n: int, loadings: np.ndarray, noise: np.ndarray, offset: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, loadings.shape[0])) @ loadings + rng.normal(size=(n, noise.size)) * np.sqrt(noise) + offset
    )


@pytest.fixture(scope="module")
def ppca_X() -> np.ndarray:
    """1500 rows, 6 features, 2 factors, unit isotropic noise, far from the origin."""
    loadings = np.array([[2.0, 1.0, 0.5, 0.0, -0.5, 1.0], [0.0, -1.0, 1.0, 1.5, 0.5, 0.0]])
    return factor_data(1500, loadings, np.ones(6), 10.0, seed=7)


@pytest.fixture(scope="module")
def fa_X() -> np.ndarray:
    """2000 rows, 8 features, 2 factors, a different noise variance for every feature."""
    rng = np.random.default_rng(1)
    return factor_data(2000, 1.5 * rng.normal(size=(Q, 8)), rng.uniform(0.2, 2.0, size=8), 3.0, seed=2)


# -- (a) PPCA reaches the closed-form maximum-likelihood solution ------------------------------


def ppca_closed_form(X: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The ML covariance ``W^T W + sigma^2 I``, the principal-subspace projector and ``sigma^2``."""
    eigenvalues, vectors = np.linalg.eigh(np.cov(X.T, bias=True))
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    sigma2 = float(eigenvalues[q:].mean())
    loadings = vectors[:, :q] * np.sqrt(eigenvalues[:q] - sigma2)
    covariance = loadings @ loadings.T + sigma2 * np.eye(X.shape[1])
    return covariance, vectors[:, :q] @ vectors[:, :q].T, sigma2


def row_space_projector(components: np.ndarray) -> np.ndarray:
    basis, _ = np.linalg.qr(components.T)
    return np.asarray(basis @ basis.T)


@pytest.mark.parametrize("accelerate", [None, "squarem"])
def test_ppca_reaches_the_closed_form_ml_solution(accelerate: str | None, ppca_X: np.ndarray) -> None:
    n, d = ppca_X.shape
    est = daskem.PPCA(Q, tol=1e-14, max_iter=500, accelerate=accelerate).fit(ppca_X)
    assert est.converged_
    covariance, projector, sigma2 = ppca_closed_form(ppca_X, Q)
    W = est.components_
    assert W.shape == (Q, d)
    assert_rel(W.T @ W + est.noise_variance_ * np.eye(d), covariance, 1e-6, "W^T W + sigma^2 I")
    assert np.abs(row_space_projector(W) - projector).max() <= 1e-6
    assert est.noise_variance_ == pytest.approx(sigma2, rel=1e-6)
    assert_rel(est.mean_, ppca_X.mean(axis=0), 1e-12, "mean_")
    assert_rel(est.get_covariance(), covariance, 1e-6, "get_covariance")
    # scikit-learn's PCA: the same subspace, and its noise variance with the n - 1 divisor.
    pca = PCA(Q).fit(ppca_X)
    assert np.abs(row_space_projector(pca.components_) - projector).max() <= 1e-10
    assert est.noise_variance_ == pytest.approx(pca.noise_variance_ * (n - 1) / n, rel=1e-6)
    # Log-likelihoods never decrease, and the last one is the closed form's.
    assert np.all(np.diff(est.lower_bounds_) >= -1e-12)
    best = multivariate_normal(ppca_X.mean(axis=0), covariance).logpdf(ppca_X).mean()
    assert est.score(ppca_X) == pytest.approx(best, rel=1e-12)


# -- (b) FactorAnalysis reaches scikit-learn's FactorAnalysis ----------------------------------


@pytest.fixture(scope="module")
def sklearn_fa(fa_X: np.ndarray) -> SklearnFactorAnalysis:
    return SklearnFactorAnalysis(Q, tol=1e-10, max_iter=10_000, svd_method="lapack").fit(fa_X)


@pytest.mark.parametrize("accelerate", [None, "squarem"])
def test_factor_analysis_reaches_sklearns_fit(
    accelerate: str | None, fa_X: np.ndarray, sklearn_fa: SklearnFactorAnalysis
) -> None:
    n = fa_X.shape[0]
    est = daskem.FactorAnalysis(Q, tol=1e-12, max_iter=2000, accelerate=accelerate).fit(fa_X)
    assert est.converged_
    assert est.score(fa_X) == pytest.approx(sklearn_fa.score(fa_X), abs=1e-6)
    assert_rel(est.score_samples(fa_X), sklearn_fa.score_samples(fa_X), 1e-6, "score_samples")
    # scikit-learn's own fit is converged to about 1e-6 (linear convergence at tol=1e-10).
    assert_rel(est.get_covariance(), sklearn_fa.get_covariance(), 1e-5, "get_covariance")
    assert_rel(est.get_precision(), sklearn_fa.get_precision(), 1e-5, "get_precision")
    assert_rel(est.noise_variance_, sklearn_fa.noise_variance_, 1e-5, "noise_variance_")
    assert_rel(est.mean_, sklearn_fa.mean_, 1e-12, "mean_")
    # Posterior means agree up to a rotation of the latent space, which E[z|x]^T W removes.
    assert_rel(est.transform(fa_X) @ est.components_, sklearn_fa.transform(fa_X) @ sklearn_fa.components_, 1e-5)
    # loglike_ is scikit-learn's: total log-likelihoods after each iteration, never
    # decreasing, the last one that of the returned model (lower_bounds_ are those each
    # iteration started from, one behind).
    assert len(est.loglike_) == est.n_iter_
    assert np.all(np.diff(est.loglike_) >= -1e-9 * n)
    assert est.loglike_[:-1] == pytest.approx([n * v for v in est.lower_bounds_[1:]], rel=1e-15)
    assert est.loglike_[-1] == pytest.approx(est.score_samples(fa_X).sum(), rel=1e-12)
    assert est.loglike_[-1] >= n * est.lower_bound_ - 1e-9 * n
    assert est.loglike_[-1] == pytest.approx(sklearn_fa.loglike_[-1], abs=1e-6 * n)


# -- (b2) scikit-learn's FactorAnalysis parameters: each against scikit-learn's numbers ---------


@pytest.mark.parametrize("svd_method", ["lapack", "randomized"])
def test_svd_start_is_sklearns_first_iteration(svd_method: str, fa_X: np.ndarray) -> None:
    # On at most INIT_ROWS rows the start is scikit-learn's first SVD step: its loadings
    # for the given noise (scikit-learn's max_iter=1 returns them), whatever the SVD method.
    X = fa_X[:500]
    noise = np.linspace(0.5, 2.0, X.shape[1])
    ours = FactorAnalysisModel(Q).svd_init_params(X, noise, svd_method=svd_method, iterated_power=3, random_state=0)
    with pytest.warns(ConvergenceWarning):
        theirs = SklearnFactorAnalysis(Q, max_iter=1, noise_variance_init=noise, svd_method=svd_method).fit(X)
    # Singular vectors are defined up to sign; the randomized SVD is exact here (Q + 10 > 8 columns).
    assert_rel(np.abs(ours.components), np.abs(theirs.components_), 1e-10, "components")
    assert_rel(ours.mean, X.mean(axis=0), 1e-14, "mean")
    assert np.array_equal(ours.noise_variance, noise)
    # The estimator starts there: one EM iteration from it is what the fit's first M-step gives.
    est = daskem.FactorAnalysis(Q, max_iter=1, noise_variance_init=noise, svd_method=svd_method)
    with pytest.warns(ConvergenceWarning):
        est.fit(X)
    W, _, psi = numpy_em_step(X, ours.components, noise, isotropic=False)
    assert_rel(est.components_.T @ est.components_, W.T @ W, 1e-10, "W^T W after one iteration")
    assert_rel(est.noise_variance_, psi, 1e-10, "noise after one iteration")


def test_randomized_svd_with_fewer_power_iterations_differs(fa_X: np.ndarray) -> None:
    # iterated_power is used: with 0 power iterations a randomized SVD of a wide matrix
    # is not exact, with 3 it is nearer the LAPACK one (as scikit-learn's randomized_svd).
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 60)) + rng.normal(size=(200, 60))
    model = FactorAnalysisModel(1)
    exact = model.svd_init_params(X, svd_method="lapack").components
    errors = [
        relative_difference(
            np.abs(model.svd_init_params(X, svd_method="randomized", iterated_power=p, random_state=0).components),
            np.abs(exact),
        )
        for p in (0, 3)
    ]
    assert errors[1] < errors[0]
    assert errors[1] < 1e-3


def test_svd_methods_reach_the_same_fit(fa_X: np.ndarray) -> None:
    fits = [daskem.FactorAnalysis(Q, tol=1e-10, svd_method=m).fit(fa_X) for m in ("lapack", "randomized")]
    assert fits[0].n_iter_ == fits[1].n_iter_
    np.testing.assert_allclose(fits[0].loglike_, fits[1].loglike_, rtol=1e-10)
    assert_rel(fits[0].get_covariance(), fits[1].get_covariance(), 1e-8)


@pytest.mark.parametrize("rotation", ["varimax", "quartimax"])
def test_rotation_is_sklearns(rotation: str, fa_X: np.ndarray) -> None:
    from sklearn.decomposition._factor_analysis import _ortho_rotation  # the oracle (private)

    plain = daskem.FactorAnalysis(Q, tol=1e-10).fit(fa_X)
    rotated = daskem.FactorAnalysis(Q, tol=1e-10, rotation=rotation).fit(fa_X)
    expected = _ortho_rotation(plain.components_.T, method=rotation, tol=1e-6)
    np.testing.assert_array_equal(rotated.components_, expected)
    np.testing.assert_array_equal(ortho_rotation(plain.components_, rotation), expected)
    # A rotation changes the factors, not the model: same covariance and likelihood.
    assert_rel(rotated.get_covariance(), plain.get_covariance(), 1e-12, "covariance")
    assert rotated.loglike_ == plain.loglike_
    assert not np.allclose(rotated.transform(fa_X), plain.transform(fa_X))
    np.testing.assert_allclose(rotated.transform(fa_X) @ rotated.components_, plain.transform(fa_X) @ plain.components_)
    # scikit-learn's rotated fit: the same loadings up to sign and its convergence.
    theirs = SklearnFactorAnalysis(Q, tol=1e-10, max_iter=10_000, rotation=rotation, svd_method="lapack").fit(fa_X)
    assert_rel(np.abs(rotated.components_), np.abs(theirs.components_), 1e-4, "rotated components")


def test_noise_variance_init(fa_X: np.ndarray) -> None:
    noise = np.full(fa_X.shape[1], 3.0)
    est = daskem.FactorAnalysis(Q, noise_variance_init=noise, max_iter=0).fit(fa_X)
    assert np.array_equal(est.noise_variance_, noise)  # max_iter=0: the start itself
    fitted = daskem.FactorAnalysis(Q, tol=1e-12, max_iter=5000, noise_variance_init=noise).fit(fa_X)
    theirs = SklearnFactorAnalysis(Q, tol=1e-10, max_iter=10_000, noise_variance_init=noise).fit(fa_X)
    assert fitted.score(fa_X) == pytest.approx(theirs.score(fa_X), abs=1e-6)
    assert_rel(fitted.noise_variance_, theirs.noise_variance_, 1e-4, "noise_variance_")
    with pytest.raises(ValueError, match=re.escape("noise_variance_init has 8 values but X has 3 features")):
        daskem.FactorAnalysis(2, noise_variance_init=noise).fit(fa_X[:, :3])
    message = "The 'noise_variance_init' parameter of FactorAnalysis must be an array-like of shape (n_features,)"
    for bad in ([1.0, -1.0], [[1.0]], [np.nan], "x"):
        with pytest.raises(ParameterError, match=re.escape(message)):
            daskem.FactorAnalysis(1, noise_variance_init=bad).fit(fa_X[:, :2])


def test_n_components_zero_is_sklearns_diagonal_gaussian(fa_X: np.ndarray) -> None:
    n, d = fa_X.shape
    est = daskem.FactorAnalysis(0).fit(fa_X)
    theirs = SklearnFactorAnalysis(0).fit(fa_X)
    assert est.components_.shape == theirs.components_.shape == (0, d)
    assert_rel(est.noise_variance_, theirs.noise_variance_, 1e-12, "noise_variance_")
    assert est.loglike_[-1] == pytest.approx(theirs.loglike_[-1], rel=1e-12)
    assert est.score(fa_X) == pytest.approx(theirs.score(fa_X), rel=1e-12)
    assert_rel(est.get_precision(), theirs.get_precision(), 1e-12, "precision")
    assert est.transform(fa_X).shape == (n, 0)
    assert est.converged_


def test_loglike_ends_with_the_returned_models_likelihood(fa_X: np.ndarray) -> None:
    # scikit-learn's meaning: one total log-likelihood per iteration, the last that of
    # the returned model (its loglike_[-1] is its own model's score too).
    theirs = SklearnFactorAnalysis(Q, svd_method="lapack").fit(fa_X)
    assert theirs.loglike_[-1] == pytest.approx(theirs.score_samples(fa_X).sum(), rel=1e-9)
    est = daskem.FactorAnalysis(Q, tol=1e-4).fit(fa_X)
    assert len(est.loglike_) == est.n_iter_
    assert est.loglike_[-1] == pytest.approx(est.score_samples(fa_X).sum(), rel=1e-13)
    # One block: reading the first rows is a pass, then one per iteration and one scoring the returned model.
    assert est.n_passes_ == 1 + est.n_iter_ + 1


@silence_convergence
def test_copy_is_accepted_and_x_is_never_modified(fa_X: np.ndarray) -> None:
    X = fa_X.copy()
    for copy in (True, False):
        daskem.FactorAnalysis(Q, copy=copy, max_iter=3).fit(X)
        assert np.array_equal(X, fa_X)
    with pytest.raises(ParameterError, match="The 'copy' parameter of FactorAnalysis must be an instance of 'bool'"):
        daskem.FactorAnalysis(Q, copy="yes").fit(X)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"svd_method": "arpack"}, "The 'svd_method' parameter of FactorAnalysis must be a str among"),
        ({"iterated_power": -1}, "The 'iterated_power' parameter of FactorAnalysis must be an int in the range [0"),
        ({"rotation": "promax"}, "The 'rotation' parameter of FactorAnalysis must be a str among"),
    ],
)
def test_bad_factor_analysis_parameters(params: dict[str, Any], message: str, fa_X: np.ndarray) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        daskem.FactorAnalysis(Q, **params).fit(fa_X)


# -- (c) one EM step against a plain in-memory NumPy EM step ------------------------------------


def numpy_em_step(
    X: np.ndarray, W: np.ndarray, noise: np.ndarray, isotropic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One textbook EM step from the sample mean (Tipping & Bishop 1999; Ghahramani & Hinton 1996).

    ``W`` is (q, d) as in scikit-learn; ``A = W^T`` is the textbook (d, q) loading matrix.
    Every row's posterior is formed explicitly; the scatter matrix is the full d x d one.
    """
    n, d = X.shape
    xbar = X.mean(axis=0)
    Y = X - xbar
    A = W.T
    psi_inv = np.diag(1.0 / noise)
    G = np.linalg.inv(np.eye(W.shape[0]) + A.T @ psi_inv @ A)  # posterior covariance
    Ez = Y @ psi_inv @ A @ G
    Ezz = n * G + Ez.T @ Ez
    A_new = (Y.T @ Ez) @ np.linalg.inv(Ezz)
    if isotropic:
        total = sum(y @ y - 2.0 * ez @ A_new.T @ y for y, ez in zip(Y, Ez, strict=True)) + np.trace(
            Ezz @ A_new.T @ A_new
        )
        new_noise = np.array(total / (n * d))
    else:
        new_noise = np.diag(Y.T @ Y - A_new @ Ez.T @ Y) / n
    return A_new.T, xbar, new_noise


def given_params(model: PPCAModel | FactorAnalysisModel, X: np.ndarray) -> PPCAParams | FactorAnalysisParams:
    """Parameters away from the fit, with a mean well off the sample mean (the shift correction)."""
    rng = np.random.default_rng(11)
    d = X.shape[1]
    mean = X.mean(axis=0) + 0.5 * X.std(axis=0) * rng.normal(size=d)
    noise = rng.uniform(0.5, 2.0, size=d)
    return model.make_params(rng.normal(size=(Q, d)), mean, noise.mean() if isinstance(model, PPCAModel) else noise)


MODELS = [PPCAModel(Q), FactorAnalysisModel(Q)]
MODEL_IDS = ["ppca", "factor_analysis"]


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_one_em_step_equals_the_numpy_oracle(model: PPCAModel | FactorAnalysisModel, fa_X: np.ndarray) -> None:
    n = fa_X.shape[0]
    params = given_params(model, fa_X)
    W, mean, noise = numpy_em_step(fa_X, params.components, params.noise, isinstance(model, PPCAModel))
    density = multivariate_normal(params.mean, params.components.T @ params.components + np.diag(params.noise))
    loglik = float(density.logpdf(fa_X).sum())
    stats = model.e_step(params, fa_X)
    assert stats.loglik == pytest.approx(loglik, rel=1e-12)
    step = model.m_step(stats, params)
    assert_rel(step.components, W, 1e-12, "components")
    assert_rel(step.mean, mean, 1e-12, "mean")
    assert_rel(step.noise_variance, noise, 1e-12, "noise_variance")
    # The same step through the engine, on blocks reduced in a tree.
    result = fit_em(model, chunked(fa_X), params, max_iter=1, tol=0.0, split_every=2)
    assert_rel(result.params.components, W, 1e-12, "components (engine)")
    assert_rel(result.params.noise_variance, noise, 1e-12, "noise_variance (engine)")
    assert result.history[0].log_likelihood == pytest.approx(loglik / n, rel=1e-12)


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_per_row_methods_and_matrices_equal_the_oracle(
    model: PPCAModel | FactorAnalysisModel, fa_X: np.ndarray
) -> None:
    params = given_params(model, fa_X)
    covariance = params.components.T @ params.components + np.diag(params.noise)
    density = multivariate_normal(params.mean, covariance)
    assert_rel(model.score_samples(params, fa_X), density.logpdf(fa_X), 1e-12, "score_samples")
    A, psi_inv = params.components.T, np.diag(1.0 / params.noise)
    posterior_mean = (fa_X - params.mean) @ psi_inv @ A @ np.linalg.inv(np.eye(Q) + A.T @ psi_inv @ A)
    assert_rel(model.transform(params, fa_X), posterior_mean, 1e-12, "transform")
    assert_rel(model.covariance(params), covariance, 1e-15, "covariance")
    assert_rel(model.precision(params), np.linalg.inv(covariance), 1e-12, "precision")


# -- (d) the model contract -------------------------------------------------------------------


@pytest.fixture(scope="module", params=[PPCAModel, FactorAnalysisModel], ids=MODEL_IDS)
def model(request: pytest.FixtureRequest) -> PPCAModel | FactorAnalysisModel:
    return request.param(Q)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """400 rows of a 2-factor model in 5 features with distinct noise."""
    rng = np.random.default_rng(4)
    return factor_data(400, rng.normal(size=(Q, 5)), rng.uniform(0.3, 1.5, size=5), 2.0, seed=5)


@pytest.fixture(scope="module")
def params(model: PPCAModel | FactorAnalysisModel, data: np.ndarray) -> PPCAParams | FactorAnalysisParams:
    return model.init_params(data[:50], np.random.default_rng(3))


class TestLinearGaussianContract(ModelContract):
    """Every law of the contract, for PPCA and for factor analysis (the ``model`` fixture)."""


# -- (e) NumPy, dask and Zarr inputs; checkpoint and resume -------------------------------------


@pytest.fixture(scope="module")
def fa_zarr(tmp_path_factory: pytest.TempPathFactory, fa_X: np.ndarray) -> str:
    path = str(tmp_path_factory.mktemp("factor") / "X.zarr")
    target = zarr.create_array(store=path, shape=fa_X.shape, chunks=(CHUNK_ROWS, fa_X.shape[1]), dtype="float64")
    target[...] = fa_X
    return path


ESTIMATORS = [daskem.PPCA, daskem.FactorAnalysis]


@silence_convergence
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_numpy_dask_and_zarr_inputs_give_the_same_fit(estimator: type, fa_X: np.ndarray, fa_zarr: str) -> None:
    kw = {"n_components": Q, "tol": 0.0, "max_iter": 15, "split_every": 3}
    in_memory = estimator(**kw).fit(fa_X)
    lazy = estimator(**kw).fit(chunked(fa_X))
    on_disk = estimator(**kw).fit(fa_zarr)
    for name in ("components_", "mean_", "noise_variance_"):
        # Same blocks and fan-in: bitwise; one in-memory block instead: the same up to rounding.
        assert np.array_equal(getattr(on_disk, name), getattr(lazy, name)), name
        assert_rel(getattr(in_memory, name), getattr(lazy, name), 1e-10, name)
    assert on_disk.lower_bounds_ == lazy.lower_bounds_
    assert in_memory.n_iter_ == lazy.n_iter_ == on_disk.n_iter_ == 15
    latent = on_disk.transform(fa_zarr)
    assert isinstance(latent, da.Array)
    assert_rel(latent.compute(), in_memory.transform(fa_X), 1e-10, "transform")
    assert isinstance(in_memory.score_samples(fa_X), np.ndarray)
    assert on_disk.score(fa_zarr) == pytest.approx(in_memory.score(fa_X), rel=1e-12)


class Interrupted(Exception):
    """Raised by a callback to stop a fit after a committed iteration."""


def stop_after(n: int) -> Any:
    def callback(record: Any, params: Any) -> None:
        if record.iteration == n:
            raise Interrupted

    return callback


@silence_convergence
@pytest.mark.parametrize("accelerate", [None, "squarem"])
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_resumed_fit_equals_the_uninterrupted_fit_bitwise(
    estimator: type, accelerate: str | None, fa_zarr: str, tmp_path: Any
) -> None:
    kw = {"n_components": Q, "tol": 0.0, "max_iter": 12, "split_every": 2, "accelerate": accelerate}
    expected = estimator(**kw).fit(fa_zarr)
    path = str(tmp_path / "fit.zarr")
    with pytest.raises(Interrupted):
        estimator(**kw, checkpoint=path).fit(fa_zarr, callback=stop_after(5))
    resumed = estimator(**kw, checkpoint=path).fit(fa_zarr)
    loaded = daskem.load(path)
    for fitted in (resumed, loaded):
        for name in ("components_", "mean_", "noise_variance_"):
            assert np.asarray(getattr(fitted, name)).tobytes() == np.asarray(getattr(expected, name)).tobytes(), name
        assert fitted.lower_bounds_ == expected.lower_bounds_
        # A checkpoint holds the engine's records: the last pass scoring the returned
        # parameters (loglike_[-1]) is the fit's, not the checkpoint's.
        assert fitted.loglike_ == (expected.loglike_ if fitted is resumed else expected.loglike_[:-1])
        assert fitted.n_iter_ == expected.n_iter_ == 12


def test_saved_model_round_trip_with_every_feature(fa_X: np.ndarray, tmp_path: Any) -> None:
    est = daskem.FactorAnalysis(tol=1e-3).fit(fa_X)  # n_components=None: every feature
    assert est.components_.shape == (fa_X.shape[1], fa_X.shape[1])
    est.save(tmp_path / "model.zarr")
    loaded = daskem.load(tmp_path / "model.zarr")
    assert loaded.get_params() == est.get_params()
    assert np.array_equal(loaded.components_, est.components_)
    assert loaded.loglike_ == est.loglike_
    assert loaded.score(fa_X) == est.score(fa_X)
    assert list(loaded.get_feature_names_out()) == [f"factoranalysis{i}" for i in range(fa_X.shape[1])]


# -- (f) bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_more_components_than_features(estimator: type, fa_X: np.ndarray) -> None:
    message = "n_components=9 must be <= n_features=8: there cannot be more latent factors than features. Reduce"
    with pytest.raises(ParameterError, match=re.escape(message)):
        estimator(n_components=9).fit(fa_X)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_bad_n_components(estimator: type, fa_X: np.ndarray) -> None:
    message = (
        f"The 'n_components' parameter of {estimator.__name__} must be an int in the range [0, inf) or None. "
        "Got -1 instead."
    )
    with pytest.raises(ParameterError, match=re.escape(message)):
        estimator(n_components=-1).fit(fa_X)


@pytest.mark.parametrize("model_type", [PPCAModel, FactorAnalysisModel], ids=MODEL_IDS)
def test_bad_model_n_components(model_type: type) -> None:
    message = f"The 'n_components' parameter of {model_type.__name__} must be an int in the range [0, inf). Got -1"
    with pytest.raises(ParameterError, match=re.escape(message)):
        model_type(-1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: PPCAParams(np.ones((2, 3)), np.zeros(3), 0.0),
            "The parameter 'noise_variance' must be positive and finite, but got 0.0.",
        ),
        (
            lambda: FactorAnalysisParams(np.ones((2, 3)), np.zeros(3), np.array([1.0, -0.5, 2.0])),
            "The parameter 'noise_variance' must be positive and finite, but got a minimum of -0.5.",
        ),
        (
            lambda: FactorAnalysisParams(np.ones((2, 3)), np.zeros(3), np.ones(4)),
            "The parameter 'noise_variance' should have the shape of (3,), but got (4,).",
        ),
        (
            lambda: PPCAParams(np.ones((2, 3)), np.zeros(3), np.ones(3)),
            "The parameter 'noise_variance' should have the shape of (), but got (3,).",
        ),
        (
            lambda: PPCAParams(np.ones((2, 3)), np.zeros(4), 1.0),
            "The parameter 'mean' should have the shape of (3,), but got (4,).",
        ),
        (
            lambda: PPCAParams(np.ones(3), np.zeros(3), 1.0),
            "The parameter 'components' should be 2-D (n_components, n_features), but got shape (3,).",
        ),
        (
            lambda: FactorAnalysisParams(np.ones((4, 3)), np.zeros(3), np.ones(3)),
            "n_components=4 must be <= n_features=3",
        ),
        (
            lambda: FactorAnalysisModel(3).params_from_arrays(
                {"components": np.ones((2, 3)), "mean": np.zeros(3), "noise_variance": np.ones(3)}
            ),
            "The parameter 'components' should have the shape of (3, 3), but got (2, 3).",
        ),
    ],
    ids=[
        "zero-noise",
        "negative-noise",
        "fa-noise-shape",
        "ppca-noise-shape",
        "mean-shape",
        "components-1d",
        "too-many-components",
        "from-arrays",
    ],
)
def test_bad_parameters(make: Any, message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        make()


def test_block_of_the_wrong_width() -> None:
    params = PPCAParams(np.ones((2, 3)), np.zeros(3), 1.0)
    message = "X has shape (5, 4), but the parameters describe 3 features. Pass rows of 3 features."
    with pytest.raises(DataError, match=re.escape(message)):
        PPCAModel(2).e_step(params, np.zeros((5, 4)))


@pytest.mark.parametrize("row", [1500, 3], ids=["past-the-first-rows", "in-the-first-rows"])
def test_nonfinite_data(row: int, fa_X: np.ndarray) -> None:
    X = fa_X.copy()
    X[row, 2] = np.nan
    X[row + 1, 0] = np.inf
    stats = FactorAnalysisModel(Q).e_step(given_params(FactorAnalysisModel(Q), fa_X), X)
    assert stats.n_nonfinite == 2
    message = "Input X contains 2 NaN or infinite value(s) among"
    with pytest.raises(DataError, match=re.escape(message)):
        daskem.FactorAnalysis(Q).fit(X)


def test_not_fitted_and_wrong_features(fa_X: np.ndarray) -> None:
    est = daskem.PPCA(Q)
    for method in ("transform", "score", "score_samples"):
        with pytest.raises(NotFittedError, match="This PPCA instance is not fitted yet"):
            getattr(est, method)(fa_X)
    est.fit(fa_X)
    message = "X has 7 features, but PPCA is expecting 8 features as input."
    with pytest.raises(DataError, match=re.escape(message)):
        est.transform(fa_X[:, :7])


# -- (g) worker processes ----------------------------------------------------------------------


def _cluster_estimator() -> daskem.FactorAnalysis:
    # tol 1e-4: 15 iterations (1e-8 took 71), each a round trip to the workers.
    return daskem.FactorAnalysis(Q, tol=1e-4, split_every=3)


@pytest.fixture(scope="module")
def threaded_fit(fa_X: np.ndarray) -> daskem.FactorAnalysis:
    """A fit on Dask's local threads (module-scoped: set up before any client exists)."""
    assert current_client() is None
    return _cluster_estimator().fit(chunked(fa_X))


@pytest.mark.slow
def test_fit_on_worker_processes_equals_the_threaded_fit(
    threaded_fit: daskem.FactorAnalysis, client: Any, fa_X: np.ndarray
) -> None:
    assert current_client() is client
    remote = _cluster_estimator().fit(chunked(fa_X))
    for name in ("components_", "mean_", "noise_variance_"):
        assert np.array_equal(getattr(remote, name), getattr(threaded_fit, name)), name
    assert remote.lower_bounds_ == threaded_fit.lower_bounds_
    assert remote.n_iter_ == threaded_fit.n_iter_
    np.testing.assert_array_equal(remote.transform(chunked(fa_X)).compute(), threaded_fit.transform(fa_X))


# -- scikit-learn's estimator checks -------------------------------------------------------------


@silence_convergence
@parametrize_with_checks(
    [
        daskem.PPCA(n_components=1, tol=1e-3, max_iter=20),
        daskem.FactorAnalysis(n_components=1, tol=1e-3, max_iter=20),
    ]
)
def test_sklearn_compatible_estimator(estimator: Any, check: Any) -> None:
    check(estimator)
