"""daskem.BayesianGaussianMixture against scikit-learn's, and the engine's guarantees for it."""

from __future__ import annotations

import copy
import re
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SklearnBGM

from daskem import BayesianGaussianMixture, load
from daskem.checkpoint.checkpoint import Checkpoint, CheckpointMismatchError
from daskem.em.progress import reporting_progress
from daskem.em.session import weighted_rows
from daskem.errors import DataError
from daskem.io.sources import as_source
from daskem.models.bayesian_gmm import BayesianGaussianMixtureModel, BayesianPriors
from daskem.testing import ModelContract, make_mixture_array

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
PARAMETERS = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "mean_precision_",
    "degrees_of_freedom_",
    "mean_prior_",
    "covariance_prior_",
    "degrees_of_freedom_prior_",
    "mean_precision_prior_",
    "weight_concentration_prior_",
)


def _data(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    parts = [
        rng.randn(n // 2, 3),
        rng.randn(n // 3, 3) * 0.5 + [4.0, 4.0, 1.0],
        rng.randn(n - n // 2 - n // 3, 3) * [1.0, 2.0, 0.5] + [-3.0, 2.0, 5.0],
    ]
    return np.vstack(parts)


def _fits(X: np.ndarray, **settings):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of max_iter=1, in both
        theirs = SklearnBGM(**settings).fit(X)
        ours = BayesianGaussianMixture(**settings).fit(X)
    return theirs, ours


def _assert_close(theirs, ours, rtol: float) -> None:  # type: ignore[no-untyped-def]
    for name in PARAMETERS:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol, atol=rtol, err_msg=name)
    np.testing.assert_allclose(
        np.asarray(ours.weight_concentration_), np.asarray(theirs.weight_concentration_), rtol=rtol
    )
    assert isinstance(ours.weight_concentration_, tuple) == isinstance(theirs.weight_concentration_, tuple)
    np.testing.assert_allclose(ours.lower_bound_, float(np.squeeze(theirs.lower_bound_)), rtol=rtol)
    np.testing.assert_allclose(
        ours.lower_bounds_, [float(np.squeeze(v)) for v in theirs.lower_bounds_], rtol=rtol, atol=0.0
    )
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["random", "random_from_data"])
def test_one_iteration_is_scikit_learns(covariance_type, prior_type, init_params):
    """From scikit-learn's own initial responsibilities, one variational iteration gives its numbers.

    Except tied covariances from "random_from_data": scikit-learn's tied covariance
    (``X^T X - sum_k nk m_k m_k^T``) assumes every row's responsibilities sum to one, and its
    one-hot start on ``n_components`` rows leaves the others at zero, so its first
    covariance holds the uncentred second moment of all the other rows (it changes when the
    data are translated). daskem's is the scatter of the chosen rows (``reg_covar``).
    """
    if covariance_type == "tied" and init_params == "random_from_data":
        pytest.skip("scikit-learn's tied covariance of a partial one-hot start is not translation invariant")
    X = _data()
    settings = {
        "n_components": 5,
        "covariance_type": covariance_type,
        "weight_concentration_prior_type": prior_type,
        "init_params": init_params,
        "random_state": 3,
        "max_iter": 1,
    }
    theirs, ours = _fits(X, **settings)
    _assert_close(theirs, ours, 1e-10)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9, atol=1e-12)
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-10)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_converged_fit_is_scikit_learns(covariance_type, prior_type):
    """Fitted to convergence (tol 1e-10), the same fit to 1e-8."""
    X = _data(450, seed=1)
    settings = {
        "n_components": 3,
        "covariance_type": covariance_type,
        "weight_concentration_prior_type": prior_type,
        "init_params": "random",
        "random_state": 7,
        "max_iter": 1000,
        "tol": 1e-10,
    }
    theirs, ours = _fits(X, **settings)
    assert theirs.converged_
    _assert_close(theirs, ours, 1e-8)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_the_initialisations_draw_in_order_from_one_random_state():
    """n_init runs take scikit-learn's successive draws: the kept run is scikit-learn's."""
    X = _data(300, seed=2)
    theirs, ours = _fits(X, n_components=4, init_params="random", random_state=11, n_init=4, max_iter=3)
    _assert_close(theirs, ours, 1e-10)


def test_covariance_types_after_the_first_m_step_relate_as_scikit_learns():
    """scikit-learn's test_compare_covar_type through the public API (max_iter=0: the initial M-step)."""
    X = _data(300, seed=3)
    fitted = {}
    for ct in COVARIANCE_TYPES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted[ct] = BayesianGaussianMixture(
                n_components=4, covariance_type=ct, init_params="random", random_state=0, max_iter=0
            ).fit(X)
    full = fitted["full"].covariances_ * fitted["full"].degrees_of_freedom_[:, None, None]
    tied = fitted["tied"].covariances_ * fitted["tied"].degrees_of_freedom_
    np.testing.assert_allclose(tied, full.mean(axis=0), rtol=1e-10)
    diag = fitted["diag"].covariances_ * fitted["diag"].degrees_of_freedom_[:, None]
    np.testing.assert_allclose(diag, np.array([np.diag(c) for c in full]), rtol=1e-10)
    spherical = fitted["spherical"].covariances_ * fitted["spherical"].degrees_of_freedom_
    np.testing.assert_allclose(spherical, diag.mean(axis=1), rtol=1e-10)


def test_priors_are_scikit_learns_and_cost_one_pass():
    X = _data(400, seed=4)
    settings = {"n_components": 3, "init_params": "random", "random_state": 0, "max_iter": 2}
    for ct in COVARIANCE_TYPES:
        theirs, ours = _fits(X, covariance_type=ct, **settings)
        np.testing.assert_allclose(ours.mean_prior_, theirs.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(ours.covariance_prior_, theirs.covariance_prior_, rtol=1e-12)
    # scikit-learn's draws on NumPy data read nothing: the priors' pass and two iterations.
    assert ours.n_passes_ == 3
    given = {"mean_prior": np.zeros(3), "covariance_prior": 2.0}
    theirs, ours = _fits(X, covariance_type="spherical", **given, **settings)
    assert ours.n_passes_ == 2
    _assert_close(theirs, ours, 1e-10)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_chunking_and_split_every_do_not_matter(covariance_type):
    X = _data(700, seed=5)
    settings = {"n_components": 4, "covariance_type": covariance_type, "init_params": "k-means++", "random_state": 0}
    settings.update(max_iter=30, tol=0.0)
    fits = []
    for chunks, split_every in [(700, None), (64, 2), (101, 4), ((1, 0, 13, 300, 386), 3)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(
                BayesianGaussianMixture(split_every=split_every, **settings).fit(da.from_array(X, chunks=(chunks, 3)))
            )
    for other in fits[1:]:
        for name in PARAMETERS:
            np.testing.assert_allclose(getattr(other, name), getattr(fits[0], name), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-11)


class _Stop(Exception):
    pass


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_an_interrupted_fit_resumes_bitwise(tmp_path, prior_type):
    X = _data(900, seed=6)
    data = da.from_array(X, chunks=200)
    settings = {
        "n_components": 4,
        "weight_concentration_prior_type": prior_type,
        "random_state": 0,
        "max_iter": 15,
        "tol": 0.0,
        "n_init": 2,
    }
    expected = BayesianGaussianMixture(**settings).fit(data)
    ckpt = str(tmp_path / "run.zarr")
    seen = {"n": 0}

    def listener(event):  # type: ignore[no-untyped-def]
        if event.phase == "fitting" and event.passes:
            seen["n"] += 1
            if seen["n"] == 6:
                raise _Stop

    with pytest.raises(_Stop), reporting_progress(listener):
        BayesianGaussianMixture(checkpoint=ckpt, **settings).fit(data)
    state = Checkpoint(ckpt).run(0).latest()
    assert state is not None
    assert state.iteration > 0
    resumed = BayesianGaussianMixture(checkpoint=ckpt, **settings).fit(data)
    for name in (*PARAMETERS, "weight_concentration_"):
        assert np.array_equal(getattr(resumed, name), getattr(expected, name)), name
    assert resumed.lower_bounds_ == expected.lower_bounds_
    # A checkpoint loads as the fitted estimator, priors included.
    loaded = load(ckpt)
    assert np.array_equal(loaded.means_, expected.means_)
    assert np.array_equal(loaded.covariance_prior_, expected.covariance_prior_)


def test_save_and_load_round_trip(tmp_path):
    X = _data(300, seed=7)
    fitted = BayesianGaussianMixture(n_components=3, covariance_type="tied", random_state=0).fit(X)
    fitted.save(tmp_path / "m.zarr")
    loaded = load(tmp_path / "m.zarr")
    for name in (*PARAMETERS, "weight_concentration_"):
        assert np.array_equal(np.asarray(getattr(loaded, name)), np.asarray(getattr(fitted, name))), name
    assert isinstance(loaded.degrees_of_freedom_, float)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_array_equal(loaded.score_samples(X), fitted.score_samples(X))


def test_sample_and_fit_predict():
    X = _data(300, seed=8)
    est = BayesianGaussianMixture(n_components=3, random_state=0)
    labels = est.fit_predict(X)
    np.testing.assert_array_equal(labels, est.predict(X))
    drawn, components = est.sample(50)
    assert drawn.shape == (50, 3)
    assert components.shape == (50,)


def test_bad_priors_are_refused():
    X = _data(100, seed=9)
    with pytest.raises(ValueError, match="degrees_of_freedom_prior' should be greater than 2"):
        BayesianGaussianMixture(n_components=2, degrees_of_freedom_prior=1.5).fit(X)
    with pytest.raises(ValueError, match="symmetric, positive-definite"):
        BayesianGaussianMixture(n_components=2, covariance_prior=-np.eye(3)).fit(X)
    with pytest.raises(ValueError, match="mean_precision_prior"):
        BayesianGaussianMixture(n_components=2, mean_precision_prior=0.0).fit(X)


# -- sample weights ---------------------------------------------------------------------------------


def _weights(n: int, seed: int = 0) -> np.ndarray:
    """Integer weights 0..3 (every fourth row, on average, weighs nothing)."""
    return np.random.RandomState(seed).randint(0, 4, size=n).astype(np.float64)


def _same_fit(a, b) -> bool:  # type: ignore[no-untyped-def]
    """Every fitted parameter and the history bitwise equal."""
    names = (*PARAMETERS, "weight_concentration_")
    same = all(np.array_equal(np.asarray(getattr(a, n)), np.asarray(getattr(b, n))) for n in names)
    return same and a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_fit_as_the_rows_repeated(covariance_type, prior_type):
    """From the same start, weights w give the fit (priors, iterations, lower bounds) of each row repeated w times."""
    X = _data(240, seed=10)
    w = _weights(X.shape[0])
    settings = {"n_components": 4, "covariance_type": covariance_type, "weight_concentration_prior_type": prior_type}
    continued = {"warm_start": True, "max_iter": 4, "tol": 0.0}
    with warnings.catch_warnings():
        # max_iter=1 does not converge; the warm starts' first bounds are of other data than the start's.
        warnings.simplefilter("ignore")
        start = BayesianGaussianMixture(init_params="random", random_state=0, max_iter=1, **settings).fit(X)
        weighted = copy.deepcopy(start).set_params(**continued).fit(X, sample_weight=w)
        repeated = copy.deepcopy(start).set_params(**continued).fit(np.repeat(X, w.astype(int), axis=0))
    for name in (*PARAMETERS, "weight_concentration_"):
        np.testing.assert_allclose(
            np.asarray(getattr(weighted, name)), np.asarray(getattr(repeated, name)), rtol=1e-10, err_msg=name
        )
    np.testing.assert_allclose(weighted.lower_bounds_, repeated.lower_bounds_, rtol=1e-10)
    assert weighted.n_features_in_ == 3
    np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random"])
def test_unit_weights_are_no_weights_bitwise(init_params):
    """``random_from_data`` is left out: with weights it draws its rows in proportion to them."""
    data = da.from_array(_data(400, seed=11), chunks=150)
    settings = {"n_components": 3, "init_params": init_params, "random_state": 0, "max_iter": 5, "tol": 0.0}
    plain = BayesianGaussianMixture(**settings).fit(data)
    ones = BayesianGaussianMixture(**settings).fit(data, sample_weight=np.ones(400))
    assert _same_fit(ones, plain)
    assert ones.n_passes_ == plain.n_passes_


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_the_initialisations_never_take_the_weights_as_a_feature(init_params):
    """Rows of weight 0 far away draw no component; a weighted fit has the data's features."""
    X = _data(300, seed=12)
    far = np.vstack([X, np.full((30, 3), 1e3)])
    w = np.concatenate([np.ones(300), np.zeros(30)])
    fitted = BayesianGaussianMixture(n_components=3, init_params=init_params, random_state=1, max_iter=3, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted.fit(far, sample_weight=w)
    assert fitted.means_.shape == (3, 3)
    assert np.abs(fitted.means_).max() < 20.0
    np.testing.assert_allclose(fitted.mean_prior_, X.mean(axis=0), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_weighted_fits_do_not_depend_on_chunking():
    X = _data(500, seed=13)
    w = _weights(500, seed=1) + 0.5
    settings = {"n_components": 3, "covariance_type": "full", "init_params": "k-means++", "random_state": 0}
    fits = [
        BayesianGaussianMixture(split_every=split_every, max_iter=8, tol=0.0, **settings).fit(
            da.from_array(X, chunks=(chunks, 3)), sample_weight=da.from_array(w, chunks=97)
        )
        for chunks, split_every in [(500, None), (64, 2), ((1, 0, 13, 200, 286), 3)]
    ]
    for other in fits[1:]:
        for name in PARAMETERS:
            np.testing.assert_allclose(getattr(other, name), getattr(fits[0], name), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(other.lower_bounds_, fits[0].lower_bounds_, rtol=1e-12)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.r_[-1.5, np.ones(99)], r"sample_weight must be finite and non-negative; got minimum -1\.5"),
        (np.r_[np.nan, np.ones(99)], r"non-negative; got minimum nan and NaN or infinite values"),
        (np.ones(99), re.escape("sample_weight.shape == (99,), expected (100,)")),
        (np.zeros(100), "sample_weight must have a positive sum; got all zeros"),
    ],
)
def test_bad_sample_weights_are_refused(weights, message):
    with pytest.raises(DataError, match=message):
        BayesianGaussianMixture(n_components=2).fit(_data(100, seed=9), sample_weight=weights)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_interrupted_weighted_fit_resumes_bitwise(tmp_path):
    data = da.from_array(_data(600, seed=14), chunks=150)
    w = _weights(600, seed=2)
    settings = {"n_components": 3, "init_params": "k-means++", "random_state": 0, "max_iter": 5, "tol": 0.0}
    expected = BayesianGaussianMixture(**settings).fit(data, sample_weight=w)
    ckpt = str(tmp_path / "run.zarr")
    seen = {"n": 0}

    def listener(event):  # type: ignore[no-untyped-def]
        if event.phase == "fitting" and event.passes:
            seen["n"] += 1
            if seen["n"] == 3:
                raise _Stop

    with pytest.raises(_Stop), reporting_progress(listener):
        BayesianGaussianMixture(checkpoint=ckpt, **settings).fit(data, sample_weight=w)
    state = Checkpoint(ckpt).run(0).latest()
    assert state is not None
    assert 0 < state.iteration < 5
    resumed = BayesianGaussianMixture(checkpoint=ckpt, **settings).fit(data, sample_weight=w)
    assert _same_fit(resumed, expected)
    # The weights are part of the data the checkpoint describes (their fingerprint): others are not resumed.
    digests = {weighted_rows(as_source(data, sample_weight=v)).fingerprint()["digest"] for v in (w, w + 1.0)}
    assert len(digests) == 2
    with pytest.raises(CheckpointMismatchError, match="was written for"):
        BayesianGaussianMixture(checkpoint=ckpt, **settings).fit(data, sample_weight=w + 1.0)


# -- the model contract ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixture() -> np.ndarray:
    X, _ = make_mixture_array(500, 3, 3, seed=11, chunk_rows=500, separation=3.0)
    return np.asarray(X.compute())


@pytest.fixture(scope="module", params=[(ct, pt) for ct in COVARIANCE_TYPES for pt in PRIOR_TYPES])
def model(request: pytest.FixtureRequest, mixture: np.ndarray) -> BayesianGaussianMixtureModel:
    ct, pt = request.param
    cov = np.cov(mixture.T)
    prior_cov = {"full": cov, "tied": cov, "diag": np.diag(cov), "spherical": np.asarray(np.diag(cov).mean())}[ct]
    priors = BayesianPriors(1.0 / 3, 1.0, mixture.mean(axis=0), 3.0, prior_cov)
    return BayesianGaussianMixtureModel.with_priors(3, ct, 1e-6, pt, priors)


@pytest.fixture(scope="module")
def data(mixture: np.ndarray) -> np.ndarray:
    return mixture


@pytest.fixture(scope="module")
def params(model: BayesianGaussianMixtureModel, mixture: np.ndarray):  # type: ignore[no-untyped-def]
    resp = np.random.default_rng(5).uniform(size=(mixture.shape[0], 3))
    return model.params_from_responsibilities(mixture, resp / resp.sum(axis=1, keepdims=True))


class TestBayesianGaussianMixtureContract(ModelContract):
    """Every law of the contract, for each covariance type and weight prior."""

    def test_e_step_counts_rows(self, model, params, data) -> None:  # type: ignore[no-untyped-def]
        """The contract's law less ``log_likelihood(stats) == stats.loglik``: a variational model's
        objective is its lower bound (scikit-learn's ``lower_bound_``), while ``loglik`` is the
        rows' summed log-normalisers, which ``score_samples`` split per row (the RowScores law)."""
        stats = model.e_step(params, data)
        assert stats.n == data.shape[0]
        assert stats.n_nonfinite == 0
        assert np.isfinite(model.log_likelihood(stats))
        assert np.isfinite(stats.loglik)
