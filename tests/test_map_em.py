"""MAP-EM under mclust's conjugate prior, and scikit-learn's random initialisations.

The M-step with a prior is checked against a direct numerical maximisation of the
complete-data log posterior (scipy.stats densities, scipy.optimize), the monitored log
posterior against monotonicity, the weak-prior limit against maximum likelihood, and a
BIC sweep on scikit-learn's digits with ``reg_covar=0`` against singular covariances.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask.array as da
import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from daskem import GaussianMixture
from daskem.em.init import data_moments, sklearn_responsibilities
from daskem.em.progress import counting_passes
from daskem.errors import NumericalError, ParameterError
from daskem.models.gaussian_prior import GaussianPrior, default_prior, prior_count, resolve_prior
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.select import select_mixture

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TYPES = ("full", "tied", "diag", "spherical")
PARAMS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.r_[rng.normal(size=(150, 3)), rng.normal(3.0, 1.0, (150, 3)), rng.normal(-3.0, 0.5, (100, 3))]


def _prior(kind: str, d: int, k: int) -> GaussianPrior:
    """A prior strong enough to move the estimates: non-default values of every kind."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(d, d))
    scale: Any = a @ a.T + d * np.eye(d)
    if kind == "diag":
        scale = np.linspace(0.5, 2.0, d)
    elif kind == "spherical":
        scale = 1.7
    spec = {"shrinkage": 0.7, "mean": rng.normal(size=d), "dof": d + 3.5, "scale": scale}
    prior = resolve_prior(spec, kind, k, d)
    assert prior is not None
    return prior


# -- the M-step is the posterior mode ------------------------------------------------------------


def _unpack(theta: np.ndarray, kind: str, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Means and (k, d, d) covariances from unconstrained coordinates (log-Cholesky)."""
    means = theta[: k * d].reshape(k, d)
    rest = theta[k * d :]
    if kind in ("full", "tied"):
        m = 1 if kind == "tied" else k
        rows, cols = np.tril_indices(d)
        covs = []
        for entries in rest.reshape(m, -1):
            factor = np.zeros((d, d))
            factor[rows, cols] = entries
            factor[np.diag_indices(d)] = np.exp(np.diag(factor))
            covs.append(factor @ factor.T)
        return means, np.stack(covs * (k if kind == "tied" else 1))
    if kind == "diag":
        return means, np.stack([np.diag(np.exp(v)) for v in rest.reshape(k, d)])
    return means, np.stack([np.exp(v) * np.eye(d) for v in rest])


def _log_posterior(theta: np.ndarray, kind: str, X: np.ndarray, resp: np.ndarray, prior: GaussianPrior) -> float:
    """Complete-data log-likelihood plus the log prior density, from scipy's densities."""
    k, d = resp.shape[1], X.shape[1]
    means, covs = _unpack(theta, kind, k, d)
    value = sum(float(resp[:, j] @ stats.multivariate_normal(means[j], covs[j]).logpdf(X)) for j in range(k))
    kappa, mu, nu, scale = prior.shrinkage, prior.mean_array, prior.dof, prior.scale_array
    if kind in ("full", "tied"):
        wishart = stats.invwishart(df=nu, scale=scale)
        value += sum(wishart.logpdf(covs[j]) for j in range(1 if kind == "tied" else k))
        value += sum(stats.multivariate_normal(mu, covs[j] / kappa).logpdf(means[j]) for j in range(k))
    elif kind == "diag":
        for j in range(k):
            variances = np.diag(covs[j])
            value += stats.invgamma(nu / 2.0, scale=scale / 2.0).logpdf(variances).sum()
            value += stats.norm(mu, np.sqrt(variances / kappa)).logpdf(means[j]).sum()
    else:
        for j in range(k):
            variance = covs[j][0, 0]
            value += stats.invgamma(nu / 2.0, scale=scale[0] / 2.0).logpdf(variance)
            value += stats.multivariate_normal(mu, variance / kappa * np.eye(d)).logpdf(means[j])
    return float(value)


@pytest.mark.parametrize("kind", TYPES)
def test_m_step_is_the_posterior_mode(kind: str) -> None:
    rng = np.random.default_rng(2)
    k, d = 2, 2
    X = np.r_[rng.normal(size=(12, d)), rng.normal(2.0, 0.7, (9, d))]
    resp = rng.dirichlet(np.ones(k), size=X.shape[0])
    prior = _prior(kind, d, k)
    model = GaussianMixtureModel(k, kind, 0.0, prior=prior)
    # Statistics around per-component centres away from the means (the M-step's own path).
    ml = GaussianMixtureModel(k, kind, 0.0).params_from_responsibilities(X, resp)
    centred = GaussianMixtureParams(ml.weights, ml.means + 0.3, ml.covariances, ml.precisions_cholesky)
    stats_ = model.moments(centred, X, resp)
    ours = model.m_step(stats_, None)

    m = 1 if kind == "tied" else k
    start_cov: list[np.ndarray] = []
    full = model_full_covariances(kind, ml.covariances, k, d)
    if kind in ("full", "tied"):
        rows, cols = np.tril_indices(d)
        for c in full[:m]:
            factor = np.linalg.cholesky(c)
            factor[np.diag_indices(d)] = np.log(np.diag(factor))
            start_cov.append(factor[rows, cols])
    elif kind == "diag":
        start_cov = [np.log(np.diag(c)) for c in full]
    else:
        start_cov = [np.array([np.log(c[0, 0])]) for c in full]
    theta0 = np.concatenate([ml.means.ravel(), *start_cov])
    best = optimize.minimize(
        lambda t: -_log_posterior(t, kind, X, resp, prior), theta0, method="BFGS", options={"gtol": 1e-10}
    )
    means, covs = _unpack(best.x, kind, k, d)
    np.testing.assert_allclose(ours.means, means, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model_full_covariances(kind, ours.covariances, k, d), covs, rtol=1e-6, atol=1e-7)
    # Our objective is that log posterior up to a constant: equal differences between two points.
    ours_theta = np.concatenate([ours.means.ravel(), *_coordinates(kind, ours.covariances, k, d)])
    drop = _log_posterior(ours_theta, kind, X, resp, prior) - _log_posterior(theta0, kind, X, resp, prior)
    ours_drop = _q_map(model, ours, X, resp) - _q_map(model, ml, X, resp)
    assert ours_drop == pytest.approx(drop, rel=1e-9)


def model_full_covariances(kind: str, covariances: np.ndarray, k: int, d: int) -> np.ndarray:
    from daskem.models.gaussian import covariance_type

    return covariance_type(kind).to_full(covariances, k, d)


def _coordinates(kind: str, covariances: np.ndarray, k: int, d: int) -> list[np.ndarray]:
    full = model_full_covariances(kind, covariances, k, d)
    if kind in ("full", "tied"):
        rows, cols = np.tril_indices(d)
        out = []
        for c in full[: 1 if kind == "tied" else k]:
            factor = np.linalg.cholesky(c)
            factor[np.diag_indices(d)] = np.log(np.diag(factor))
            out.append(factor[rows, cols])
        return out
    if kind == "diag":
        return [np.log(np.diag(c)) for c in full]
    return [np.array([np.log(c[0, 0])]) for c in full]


def _q_map(model: GaussianMixtureModel, params: GaussianMixtureParams, X: np.ndarray, resp: np.ndarray) -> float:
    """The model's own complete-data log posterior (weights excluded), up to a constant."""
    log_prob = model.weighted_log_prob(params, X) - np.log(params.weights)
    return float((resp * log_prob).sum()) + model.log_prior(params)


# -- the monitored log posterior -----------------------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_log_posterior_never_decreases(kind: str, blobs: np.ndarray) -> None:
    gm = GaussianMixture(
        4,
        covariance_type=kind,
        reg_covar=0.0,
        prior="default",
        init_params="random",
        random_state=3,
        tol=0.0,
        max_iter=60,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no LikelihoodDecreaseWarning
        warnings.simplefilter("ignore", category=UserWarning)
        gm.fit(blobs)
    bounds = np.array(gm.lower_bounds_)
    assert len(bounds) == 60
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[1:]))
    # lower_bound_ is the log posterior; score() the log-likelihood at the MAP estimate.
    model = gm._model()
    st = model.e_step(gm._params(), blobs)
    assert gm.score(blobs) == pytest.approx(st.loglik / len(blobs), rel=1e-12)
    assert model.log_likelihood(st) == pytest.approx(st.loglik + model.log_prior(gm._params()), rel=1e-12)
    assert gm.prior_ is not None
    assert set(gm.prior_) == {"shrinkage", "mean", "dof", "scale"}


def test_regularised_map_step_gap_bounds_the_decrease(blobs: np.ndarray) -> None:
    """reg_covar on top of the posterior mode: the decrease of one step is within the MAP gap."""
    for kind in TYPES:
        prior = resolve_prior("default", kind, 3, 3, lambda: (blobs.mean(0), np.cov(blobs.T)))
        model = GaussianMixtureModel(3, kind, 0.5, prior=prior)
        params = model.params_from_responsibilities(blobs, np.eye(3)[np.arange(len(blobs)) % 3])
        for _ in range(5):
            st = model.e_step(params, blobs)
            new = model.m_step(st, params)
            after = model.log_likelihood(model.e_step(new, blobs))
            assert after >= model.log_likelihood(st) - model.m_step_gap(st) - 1e-9
            assert model.m_step_gap(st) > 0.0
            params = new


def test_weak_prior_approaches_maximum_likelihood(blobs: np.ndarray) -> None:
    """shrinkage -> 0, scale -> 0, dof -> -prior_count: the MAP fit tends to the ML fit."""
    kw: dict[str, Any] = {"init_params": "random", "random_state": 0, "max_iter": 40, "tol": 0.0}
    for kind in TYPES:
        ml = GaussianMixture(3, covariance_type=kind, **kw).fit(blobs)
        gaps = []
        for strength in (1e-1, 1e-3, 1e-5):
            d = blobs.shape[1]
            scale: Any = strength * np.eye(d) if kind in ("full", "tied") else strength
            prior = {
                "shrinkage": strength,
                "mean": np.zeros(d),
                "dof": -prior_count(kind, d, 3) + strength,
                "scale": scale,
            }
            gm = GaussianMixture(3, covariance_type=kind, prior=prior, **kw).fit(blobs)
            gaps.append(max(np.abs(getattr(gm, a) - getattr(ml, a)).max() for a in PARAMS[:3]))
        assert gaps[0] > gaps[1] > gaps[2]
        assert gaps[2] < 1e-4, (kind, gaps)


# -- the default prior ---------------------------------------------------------------------------


def test_default_prior_is_mclusts(blobs: np.ndarray) -> None:
    d = blobs.shape[1]
    with counting_passes() as count:
        mean, cov = data_moments(blobs)
    assert count.passes == 1
    np.testing.assert_allclose(mean, blobs.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(blobs.T), rtol=1e-10)  # R's var: n - 1
    for kind in TYPES:
        for g in (1, 4):
            values = default_prior(mean, cov, g, kind)
            assert values["shrinkage"] == 0.01
            assert values["dof"] == d + 2
            factor = (1.0 / g) ** (2.0 / d)
            expected = factor * cov if kind in ("full", "tied") else factor * np.trace(cov) / d
            np.testing.assert_allclose(values["scale"], expected, rtol=1e-12)
    # A partial dict takes the rest from the default.
    prior = resolve_prior({"shrinkage": 0.5}, "full", 2, d, lambda: (mean, cov))
    assert prior is not None
    assert prior.shrinkage == 0.5
    assert prior.dof == d + 2
    np.testing.assert_allclose(prior.scale_array, 0.5 ** (2.0 / d) * cov, rtol=1e-12)
    # The fit reads the moments in one more counted pass.
    given = {"means_init": blobs[:3], "weights_init": np.ones(3) / 3, "precisions_init": np.stack([np.eye(d)] * 3)}
    plain = GaussianMixture(3, max_iter=2, tol=0.0, **given).fit(blobs)
    with_prior = GaussianMixture(3, max_iter=2, tol=0.0, prior="default", **given).fit(blobs)
    assert with_prior.n_passes_ == plain.n_passes_ + 1
    explicit = GaussianMixture(3, max_iter=2, tol=0.0, prior=with_prior.prior_, **given).fit(blobs)
    assert explicit.n_passes_ == plain.n_passes_
    np.testing.assert_array_equal(explicit.means_, with_prior.means_)


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        ("mclust", "must be None, 'default' or a dict"),
        ({"shrink": 1.0}, "unknown keys"),
        ({"shrinkage": -1.0}, "shrinkage must be"),
        ({"dof": -10.0}, "dof must be >"),
        ({"scale": np.ones((2, 2))}, "scale must be a symmetric 3 x 3"),
        ({"mean": [0.0, 1.0]}, "mean must be 3 finite numbers"),
    ],
)
def test_bad_priors_are_refused(blobs: np.ndarray, prior: Any, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        GaussianMixture(2, prior=prior, max_iter=1).fit(blobs)


# -- digits: BIC over k with reg_covar=0 ---------------------------------------------------------


def test_digits_bic_sweep_needs_the_prior_not_reg_covar() -> None:
    """scikit-learn's digits (1797 rows; the 61 pixels that are not constant: a constant
    feature has variance 0 in mclust's default scale too) with ``reg_covar=0``: maximum
    likelihood collapses a covariance, the default prior keeps every candidate regular."""
    X = load_digits().data
    X = X[:, X.std(axis=0) > 0]
    grid = [1, 2, 4, 6, 8, 10]
    with pytest.raises(NumericalError, match="ill-defined empirical covariance"):
        select_mixture(X, grid, ["full"], reg_covar=0.0, max_iter=100)
    selection = select_mixture(X, grid, ["full"], reg_covar=0.0, prior="default", max_iter=100)
    assert all(np.isfinite(c.bic) for c in selection.candidates)
    for c in selection.candidates:
        assert np.linalg.eigvalsh(c.params.covariances).min() > 0.0
        # Scored by the log-likelihood at the MAP estimate (mclust's BIC).
        assert c.bic == pytest.approx(-2.0 * c.log_likelihood + c.n_parameters * np.log(X.shape[0]))
    # Each candidate's own prior (mclust's default depends on k), given in full to its estimator.
    priors = [c.hyperparameters["prior"] for c in selection.candidates]
    assert all(p["dof"] == X.shape[1] + 2 and p["shrinkage"] == 0.01 for p in priors)
    assert priors[0]["scale"] != priors[1]["scale"]


# -- chunking invariance and bitwise resume ------------------------------------------------------


def _given(X: np.ndarray, k: int) -> dict[str, Any]:
    d = X.shape[1]
    return {
        "means_init": X[:: len(X) // k][:k],
        "weights_init": np.ones(k) / k,
        "precisions_init": np.stack([np.eye(d)] * k),
    }


@pytest.mark.parametrize("kind", ["full", "diag"])
def test_map_fit_does_not_depend_on_chunking(kind: str, blobs: np.ndarray) -> None:
    init = _given(blobs, 3)
    if kind == "diag":
        init["precisions_init"] = np.ones((3, blobs.shape[1]))
    fits = [
        GaussianMixture(3, covariance_type=kind, prior="default", reg_covar=0.0, tol=1e-10, max_iter=50, **init).fit(
            da.from_array(blobs, chunks=(rows, -1))
        )
        for rows in (400, 97, 33)
    ]
    for other in fits[1:]:
        for attr in PARAMS:
            np.testing.assert_allclose(getattr(other, attr), getattr(fits[0], attr), rtol=1e-9, atol=1e-12)
        assert other.n_iter_ == fits[0].n_iter_


class _Stop(Exception):
    pass


def test_map_fit_resumes_bitwise(blobs: np.ndarray, tmp_path: Any) -> None:
    kw: dict[str, Any] = {"prior": "default", "init_params": "random_from_data", "random_state": 4, "tol": 0.0}
    data = da.from_array(blobs, chunks=(100, -1))
    whole = GaussianMixture(3, max_iter=12, **kw).fit(data)
    path = tmp_path / "map.zarr"

    def stop(record: Any, params: Any) -> None:
        if record.iteration == 5:
            raise _Stop

    with pytest.raises(_Stop):
        GaussianMixture(3, max_iter=12, checkpoint=path, **kw).fit(data, callback=stop)
    resumed = GaussianMixture(3, max_iter=12, checkpoint=path, **kw).fit(data)
    for attr in PARAMS:
        assert getattr(resumed, attr).tobytes() == getattr(whole, attr).tobytes(), attr
    assert resumed.lower_bounds_ == whole.lower_bounds_
    # A checkpoint of another prior is not resumed as this one.
    from daskem.checkpoint.checkpoint import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError):
        GaussianMixture(3, max_iter=12, checkpoint=path, **{**kw, "prior": {"shrinkage": 0.5}}).fit(data)


# -- scikit-learn's random initialisations -------------------------------------------------------


@pytest.mark.parametrize("init_params", ["random", "random_from_data"])
@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("n_init", [1, 3])
def test_random_inits_fit_as_sklearn(init_params: str, kind: str, n_init: int, blobs: np.ndarray) -> None:
    kw = {
        "n_components": 3,
        "covariance_type": kind,
        "init_params": init_params,
        "random_state": 0,
        "max_iter": 15,
        "n_init": n_init,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SklearnGaussianMixture(**kw).fit(blobs)
        ours = GaussianMixture(**kw).fit(blobs)
    for attr in (*PARAMS, "precisions_"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(sk, attr), rtol=0, atol=1e-10, err_msg=attr)
    assert ours.n_iter_ == sk.n_iter_
    assert ours.converged_ == sk.converged_
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, abs=1e-10)
    # The first bound of random_from_data, under variances of reg_covar, is ~-7e6: rounding at 1e-9.
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-8)


@pytest.mark.parametrize("init_params", ["random", "random_from_data"])
def test_sklearn_responsibilities_are_sklearns(init_params: str, blobs: np.ndarray) -> None:
    seen: list[np.ndarray] = []

    class Spy(SklearnGaussianMixture):
        def _initialize(self, X: Any, resp: Any) -> None:  # type: ignore[override]
            seen.append(np.array(resp))
            super()._initialize(X, resp)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Spy(3, init_params=init_params, n_init=3, max_iter=1, random_state=7).fit(blobs)
    state = np.random.RandomState(7)
    for resp in seen:
        assert sklearn_responsibilities(init_params, len(blobs), 3, state).tobytes() == resp.tobytes()


def test_random_init_on_dask_data_keeps_per_block_draws(blobs: np.ndarray) -> None:
    """Out-of-memory data keep daskem's per-block draws (scikit-learn's are one sequential stream)."""
    kw: dict[str, Any] = {"init_params": "random", "random_state": 0, "max_iter": 0}
    a = GaussianMixture(3, **kw).fit(da.from_array(blobs, chunks=(100, -1)))
    b = GaussianMixture(3, **kw).fit(blobs)
    assert not np.allclose(a.means_, b.means_)


# -- the command line ----------------------------------------------------------------------------


def test_cli_fit_and_select_take_prior(tmp_path: Any) -> None:
    import json

    import daskem
    from daskem.testing import write_mixture_zarr
    from daskem.testing.cli import invoke_cli

    store = tmp_path / "d.zarr"
    write_mixture_zarr(store, 2000, 3, 2, chunk_rows=500)
    model = tmp_path / "m.zarr"
    fit = invoke_cli("fit", store, "--model", "gmm", "-k", "2", "--prior", "default", "--workers", "0", "-o", model)
    assert fit.returncode == 0, fit.stderr
    assert daskem.load(model).prior == "default"
    given = invoke_cli(
        "fit", store, "--model", "gmm", "-k", "2", "--prior", json.dumps({"shrinkage": 0.5}), "--workers", "0"
    )
    assert given.returncode == 0, given.stderr
    bad = invoke_cli("fit", store, "--model", "gmm", "--prior", "strong", "--workers", "0")
    assert bad.returncode != 0
    assert "give 'default' or a JSON object" in bad.stderr
    # k-means takes no prior: Lloyd's hard assignments have no covariances to keep regular.
    refused = invoke_cli("fit", store, "--model", "kmeans", "--prior", "default", "--workers", "0")
    assert refused.returncode == 2
    assert "--prior does not apply to --model kmeans" in refused.stderr
    selected = invoke_cli("select", store, "-k", "1-3", "--prior", "default", "--json", "--workers", "0")
    assert selected.returncode == 0, selected.stderr
    bad_select = invoke_cli("select", store, "-k", "1-2", "--prior", "{", "--workers", "0")
    assert bad_select.returncode != 0
    assert "give 'default' or a JSON object" in bad_select.stderr
