"""Gaussian mixtures on data with missing values (``missing="marginalize"``), against oracles.

Oracles: the complete-data fit (bitwise, when nothing is missing), brute-force conditional
Gaussians per row (scipy), the closed-form maximum-likelihood estimates of one Gaussian
under a monotone pattern (Anderson 1957), the observed-data log-likelihood maximised
directly with scipy.optimize, and exact identities (chunking, resume).
"""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from scipy import optimize
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import GaussianMixture
from daskem.em.session import FitSession, MissingRowsWarning
from daskem.errors import DataError, ParameterError
from daskem.models.gaussian import covariance_type
from daskem.models.gmm import GaussianMixtureModel

TYPES = ("full", "tied", "diag", "spherical")
ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _data(n=600, d=4, seed=0, fraction=0.25):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [4.0] * d, [0.0, 5.0] + [-3.0] * (d - 2)])
    X = np.concatenate([rng.normal(size=(n // 3, d)) @ rng.normal(size=(d, d)) * 0.6 + c for c in centres])
    X = X[rng.permutation(len(X))]
    holed = X.copy()
    holed[rng.random(X.shape) < fraction] = np.nan
    return X, holed


def _observed_loglik(X, weights, means, covs):
    """Observed-data log-likelihood, row by row with scipy (the brute-force oracle)."""
    total = 0.0
    for row in X:
        seen = ~np.isnan(row)
        if not seen.any():
            continue
        parts = [
            np.log(w) + multivariate_normal(m[seen], c[np.ix_(seen, seen)]).logpdf(row[seen])
            for w, m, c in zip(weights, means, covs, strict=True)
        ]
        total += logsumexp(parts)
    return total


def _brute_stats(X, weights, means, covs):
    """Expected complete-data statistics around each component's mean, row by row."""
    k, d = means.shape
    resp_sum, first, second = np.zeros(k), np.zeros((k, d)), np.zeros((k, d, d))
    for row in X:
        seen = ~np.isnan(row)
        hole = ~seen
        if not seen.any():
            continue
        logs = np.array(
            [
                np.log(w) + multivariate_normal(m[seen], c[np.ix_(seen, seen)]).logpdf(row[seen])
                for w, m, c in zip(weights, means, covs, strict=True)
            ]
        )
        r = np.exp(logs - logsumexp(logs))
        resp_sum += r
        for j in range(k):
            filled, extra = row.copy(), np.zeros((d, d))
            if hole.any():
                gain = covs[j][np.ix_(hole, seen)] @ np.linalg.inv(covs[j][np.ix_(seen, seen)])
                filled[hole] = means[j][hole] + gain @ (row[seen] - means[j][seen])
                extra[np.ix_(hole, hole)] = covs[j][np.ix_(hole, hole)] - gain @ covs[j][np.ix_(seen, hole)]
            y = filled - means[j]
            first[j] += r[j] * y
            second[j] += r[j] * (np.outer(y, y) + extra)
    return resp_sum, first, second


@pytest.mark.parametrize("kind", TYPES)
def test_no_missing_value_gives_the_complete_data_statistics_and_fit_bitwise(kind):
    X, _ = _data()
    model = GaussianMixtureModel(3, kind)
    params = model.params_from_responsibilities(X, np.random.default_rng(1).dirichlet(np.ones(3), size=len(X)))
    plain, marg = model.e_step(params, X), GaussianMixtureModel(3, kind, missing="marginalize").e_step(params, X)
    for name in ("resp_sum", "first", "second"):
        assert getattr(plain, name).tobytes() == getattr(marg, name).tobytes()
    assert plain.loglik == marg.loglik
    a = GaussianMixture(3, covariance_type=kind, random_state=0).fit(X)
    b = GaussianMixture(3, covariance_type=kind, random_state=0, missing="marginalize").fit(X)
    for attr in ATTRS:
        assert getattr(a, attr).tobytes() == getattr(b, attr).tobytes()
    assert a.lower_bounds_ == b.lower_bounds_


@pytest.mark.parametrize("kind", TYPES)
def test_e_step_equals_the_row_by_row_conditional_gaussians(kind):
    _, X = _data(n=150, fraction=0.35)
    X[3] = np.nan  # a row with nothing observed: skipped
    model = GaussianMixtureModel(3, kind, missing="marginalize")
    rng = np.random.default_rng(2)
    params = model.params_from_responsibilities(np.nan_to_num(X, nan=0.5), rng.dirichlet(np.ones(3), size=len(X)))
    k, d = params.means.shape
    covs = covariance_type(kind).to_full(params.covariances, k, d)
    stats = model.e_step(params, X)
    resp_sum, first, second = _brute_stats(X, params.weights, params.means, covs)
    assert stats.n == np.count_nonzero(~np.isnan(X).all(axis=1))
    np.testing.assert_allclose(stats.loglik, _observed_loglik(X, params.weights, params.means, covs), rtol=1e-12)
    np.testing.assert_allclose(stats.resp_sum, resp_sum, rtol=1e-11)
    np.testing.assert_allclose(stats.first, first, rtol=1e-10, atol=1e-10)
    expected = {
        "full": second,
        "tied": second.sum(axis=0),
        "diag": np.diagonal(second, axis1=1, axis2=2),
        "spherical": np.diagonal(second, axis1=1, axis2=2),
    }[kind]
    np.testing.assert_allclose(stats.second, expected, rtol=1e-10, atol=1e-10)
    # Per-row scores: the observed coordinates' log-density.
    scores = model.score_samples(params, X)
    assert scores[3] == 0.0
    np.testing.assert_allclose(scores.sum(), stats.loglik, rtol=1e-12)


def test_one_gaussian_monotone_pattern_reaches_the_closed_form_estimates():
    rng = np.random.default_rng(3)
    n, n_b = 400, 260
    cov = np.array([[2.0, 0.6, 0.8], [0.6, 1.0, 0.3], [0.8, 0.3, 1.5]])
    X = rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=n)
    X[n_b:, 2] = np.nan  # x_B = column 2 observed in the first n_b rows only
    a, b = X[:, :2], X[:n_b]
    mu_a, s_aa = a.mean(axis=0), np.cov(a.T, bias=True)
    # Anderson (1957): the regression of x_B on x_A from the rows observing both.
    sub = np.cov(b.T, bias=True)
    beta = sub[2, :2] @ np.linalg.inv(sub[:2, :2])
    alpha = b[:, 2].mean() - beta @ b[:, :2].mean(axis=0)
    resid = sub[2, 2] - beta @ sub[:2, 2]
    mean = np.r_[mu_a, alpha + beta @ mu_a]
    expected = np.zeros((3, 3))
    expected[:2, :2] = s_aa
    expected[2, :2] = expected[:2, 2] = beta @ s_aa
    expected[2, 2] = resid + beta @ s_aa @ beta
    gm = GaussianMixture(1, reg_covar=0.0, tol=1e-15, max_iter=400, missing="marginalize").fit(X)
    np.testing.assert_allclose(gm.means_[0], mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.covariances_[0], expected, rtol=1e-10, atol=1e-10)


def _unpack(vector, k, d):
    logits = np.r_[0.0, vector[: k - 1]]
    weights = np.exp(logits - logsumexp(logits))
    means = vector[k - 1 : k - 1 + k * d].reshape(k, d)
    rows, cols = np.tril_indices(d)
    covs = []
    for i in range(k):
        factor = np.zeros((d, d))
        chunk = vector[k - 1 + k * d + i * rows.size : k - 1 + k * d + (i + 1) * rows.size]
        factor[rows, cols] = chunk
        factor[np.diag_indices(d)] = np.exp(np.diag(factor))
        covs.append(factor @ factor.T)
    return weights, means, np.array(covs)


def _pack(weights, means, covs):
    factors = []
    for c in covs:
        factor = np.linalg.cholesky(c)
        factor[np.diag_indices(len(c))] = np.log(np.diag(factor))
        factors.append(factor[np.tril_indices(len(c))])
    return np.r_[np.log(weights[1:] / weights[0]), means.ravel(), np.concatenate(factors)]


def test_fixed_point_maximises_the_observed_data_likelihood_directly():
    _, X = _data(n=150, d=2, seed=4, fraction=0.2)
    gm = GaussianMixture(2, reg_covar=0.0, tol=1e-15, max_iter=3000, random_state=0, missing="marginalize").fit(X)
    k, d = gm.means_.shape
    em_value = gm.score(X) * len(X)
    # The objective: the observed-data log-likelihood, brute force (scipy, row by row) at the
    # EM result, then by the model's E-step (checked against it here) for the optimiser.
    np.testing.assert_allclose(em_value, _observed_loglik(X, gm.weights_, gm.means_, gm.covariances_), rtol=1e-12)
    model = GaussianMixtureModel(k, reg_covar=0.0, missing="marginalize")

    def negative(vector):
        weights, means, covs = _unpack(vector, k, d)
        return -model.e_step(model.with_given(None, weights, means, np.linalg.inv(covs)), X).loglik

    start = _pack(gm.weights_, gm.means_, gm.covariances_)
    np.testing.assert_allclose(-negative(start), em_value, rtol=1e-12)
    # The EM fixed point has zero gradient (central differences)...
    step = 1e-5
    gradient = [(negative(start + step * e) - negative(start - step * e)) / (2 * step) for e in np.eye(start.size)]
    assert np.abs(gradient).max() < 1e-5
    # ...and a direct maximisation from a perturbed start reaches the same value.
    perturbed = start + np.random.default_rng(5).normal(scale=0.02, size=start.size)
    found = optimize.minimize(negative, perturbed, method="BFGS", options={"gtol": 1e-7, "maxiter": 2000})
    np.testing.assert_allclose(-found.fun, em_value, rtol=1e-8)


@pytest.mark.parametrize("kind", TYPES)
def test_log_likelihood_never_decreases_and_chunking_does_not_matter(kind):
    _, X = _data(n=900, seed=6, fraction=0.3)
    settings = {"covariance_type": kind, "random_state": 0, "tol": 1e-9, "max_iter": 60, "missing": "marginalize"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        base = GaussianMixture(**settings).fit(X)
        chunked = GaussianMixture(**settings, split_every=3).fit(da.from_array(X, chunks=(97, -1)))
    assert np.all(np.diff(base.lower_bounds_) >= -1e-12 * abs(base.lower_bounds_[-1]))
    for attr in ATTRS:
        np.testing.assert_allclose(getattr(chunked, attr), getattr(base, attr), rtol=1e-12, atol=1e-12)


def test_predictions_and_bic_on_rows_with_missing_values():
    _, X = _data(n=300, seed=7)
    gm = GaussianMixture(3, random_state=0, missing="marginalize").fit(X)
    k, d = gm.means_.shape
    covs = gm.covariances_
    expected = np.array([_observed_loglik(row[None], gm.weights_, gm.means_, covs) for row in X])
    np.testing.assert_allclose(gm.score_samples(X), expected, rtol=1e-11)
    proba = gm.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(gm.predict(X), proba.argmax(axis=1))
    n_params = k * d * (d + 1) / 2 + k * d + k - 1
    np.testing.assert_allclose(gm.bic(X), -2 * expected.sum() + n_params * np.log(len(X)), rtol=1e-12)
    lazy = gm.score_samples(da.from_array(X, chunks=(70, -1))).compute()
    np.testing.assert_allclose(lazy, expected, rtol=1e-11)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
def test_initialisers_read_the_complete_rows(init):
    _, holed = _data(n=600, seed=8, fraction=0.1)
    complete = holed[~np.isnan(holed).any(axis=1)]
    model = GaussianMixtureModel(3, missing="marginalize")
    session = FitSession(holed).complete_rows()
    assert session.source.n_samples == len(complete)
    assert np.array_equal(np.asarray(session.source.array), complete)
    gm = GaussianMixture(3, init_params=init, random_state=0, missing="marginalize", max_iter=200).fit(holed)
    assert gm.converged_
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-12 * abs(gm.lower_bounds_[-1]))
    # The fit finds the three true groups (their means are 0, 4 and (0, 5, -3, -3)).
    assert sorted(np.round(gm.means_[:, 0]).tolist()) == pytest.approx([0.0, 0.0, 4.0], abs=0.6)
    assert model.n_components == 3


def test_squarem_and_restarts_reach_the_plain_em_maximum():
    _, X = _data(n=600, seed=9, fraction=0.25)
    settings = {"random_state": 0, "tol": 1e-10, "max_iter": 500, "missing": "marginalize"}
    plain = GaussianMixture(3, **settings).fit(X)
    fast = GaussianMixture(3, accelerate="squarem", **settings).fit(X)
    restarts = GaussianMixture(3, n_init=3, **settings).fit(X)
    assert fast.n_passes_ < plain.n_passes_
    np.testing.assert_allclose(fast.lower_bound_, plain.lower_bound_, rtol=1e-7)
    assert restarts.lower_bound_ >= plain.lower_bound_ - 1e-9


class _Stop(Exception):
    pass


def test_checkpointed_fit_resumes_bitwise(tmp_path):
    _, X = _data(n=600, seed=10)
    store = str(tmp_path / "data.zarr")
    zarr.create_array(store, shape=X.shape, chunks=(150, X.shape[1]), dtype="float64")[:] = X
    settings = {"random_state": 0, "tol": 1e-8, "max_iter": 30, "missing": "marginalize", "cache": False}
    expected = GaussianMixture(3, **settings).fit(store)
    ckpt = str(tmp_path / "run.zarr")
    calls = {"n": 0}

    def stop(record, params):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Stop

    with pytest.raises(_Stop):
        GaussianMixture(3, checkpoint=ckpt, **settings).fit(store, callback=stop)
    resumed = GaussianMixture(3, checkpoint=ckpt, **settings).fit(store)
    for attr in ATTRS:
        assert getattr(resumed, attr).tobytes() == getattr(expected, attr).tobytes()
    assert resumed.lower_bounds_ == expected.lower_bounds_
    loaded = daskem.load(ckpt)
    assert loaded.missing == "marginalize"
    assert loaded.score_samples(X).tobytes() == expected.score_samples(X).tobytes()


def test_parquet_nulls_and_csv_empty_cells_are_missing_values(tmp_path):
    _, X = _data(n=300, d=3, seed=11)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame.to_parquet(tmp_path / "rows.parquet")
    frame.to_csv(tmp_path / "rows.csv", index=False)  # NaN written as empty cells
    assert ",," in (tmp_path / "rows.csv").read_text() or ",\n" in (tmp_path / "rows.csv").read_text()
    settings = {"random_state": 0, "missing": "marginalize"}
    expected = GaussianMixture(3, **settings).fit(X)
    for path in (tmp_path / "rows.parquet", tmp_path / "rows.csv"):
        got = GaussianMixture(3, **settings).fit(str(path))
        for attr in ATTRS:
            np.testing.assert_allclose(getattr(got, attr), getattr(expected, attr), rtol=1e-12, atol=1e-12)


def test_bad_input_is_refused_with_clear_messages():
    _, X = _data(n=120, seed=12)
    with pytest.raises(ValueError, match=r"Input X contains [0-9]+ NaN"):
        GaussianMixture(2).fit(X)
    with pytest.raises(ParameterError, match=re.escape("must be one of ['error', 'marginalize']; got 'drop'")):
        GaussianMixture(2, missing="drop").fit(X)
    never = X.copy()
    never[:, 2] = np.nan
    with pytest.raises(DataError, match=r"Feature 2 of X .* missing \(NaN\) in every one of its 120 rows"):
        GaussianMixture(2, missing="marginalize").fit(never)
    infinite = X.copy()
    infinite[5, 1] = np.inf
    with pytest.raises(DataError, match="infinite"):
        GaussianMixture(2, missing="marginalize", random_state=0).fit(infinite)
    holes = X.copy()
    holes[:, 0][::2] = np.nan
    holes[:, 1][1::2] = np.nan
    with pytest.raises(DataError, match="Every one of the 120 rows of X has a missing"):
        FitSession(holes).complete_rows()
    # No complete row: the initialisers read the rows filled with the features' observed means.
    filled = FitSession(holes).mean_filled_rows()
    means = np.nanmean(holes, axis=0)
    np.testing.assert_allclose(filled.rows(np.arange(120)), np.where(np.isnan(holes), means, holes), rtol=1e-15)
    gm = GaussianMixture(2, missing="marginalize", random_state=0, max_iter=300).fit(holes)
    assert gm.converged_
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-12 * abs(gm.lower_bounds_[-1]))
    # Given initial parameters need no pass over whole rows.
    gm = GaussianMixture(
        2,
        missing="marginalize",
        weights_init=[0.5, 0.5],
        means_init=np.nanmean(holes, axis=0) + np.array([[-1.0], [1.0]]),
        precisions_init=np.array([np.eye(4)] * 2),
    ).fit(holes)
    assert np.all(np.isfinite(gm.means_))
    empty = X.copy()
    empty[[4, 9]] = np.nan
    with pytest.warns(MissingRowsWarning, match="2 row\\(s\\) with every feature missing"):
        GaussianMixture(2, missing="marginalize", random_state=0).fit(empty)


@pytest.mark.parametrize(
    ("name", "estimator"), [("gmm", GaussianMixture), ("ppca", daskem.PPCA), ("fa", daskem.FactorAnalysis)]
)
def test_command_line_fit_with_missing_values_equals_the_python_fit(tmp_path, name, estimator):
    from daskem.checkpoint.store import read_arrays_group
    from daskem.testing.cli import invoke_cli

    _, X = _data(n=400, seed=13, fraction=0.15)
    store = str(tmp_path / "holes.zarr")
    zarr.create_array(store, shape=X.shape, chunks=(100, X.shape[1]), dtype="float64")[:] = X
    out = tmp_path / "model.zarr"
    done = invoke_cli(
        "fit",
        store,
        "--model",
        name,
        "-k",
        "2",
        "--missing",
        "marginalize",
        "--seed",
        "0",
        "--max-iter",
        "40",
        "--workers",
        "0",
        "-o",
        out,
    )
    assert done.returncode == 0, done.stderr
    settings = {"random_state": 0, "missing": "marginalize", "max_iter": 40}
    expected = estimator(2, **settings).fit(store)
    expected.save(tmp_path / "expected.zarr")
    got, want = read_arrays_group(out)[0], read_arrays_group(tmp_path / "expected.zarr")[0]
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].tobytes() == want[key].tobytes(), key
    loaded = daskem.load(out)
    assert loaded.score_samples(X).tobytes() == expected.score_samples(X).tobytes()


@pytest.mark.slow
def test_fit_on_worker_processes_equals_the_threaded_fit(client, tmp_path):
    _, X = _data(n=900, seed=14, fraction=0.2)
    store = str(tmp_path / "holes.zarr")
    zarr.create_array(store, shape=X.shape, chunks=(150, X.shape[1]), dtype="float64")[:] = X
    settings = {"random_state": 0, "tol": 1e-6, "missing": "marginalize", "split_every": 2}
    with client.as_current():
        on_cluster = GaussianMixture(3, **settings).fit(store)
        streamed = GaussianMixture(3, cache=False, **settings).fit(store)
    threaded = GaussianMixture(3, **settings).fit(store)
    for attr in ATTRS:
        assert getattr(on_cluster, attr).tobytes() == getattr(threaded, attr).tobytes()
        assert getattr(streamed, attr).tobytes() == getattr(threaded, attr).tobytes()
    assert on_cluster.lower_bounds_ == threaded.lower_bounds_
