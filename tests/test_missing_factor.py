"""Missing values (NaN, missing at random) in PPCA and factor analysis, against oracles.

The oracles are written from the joint Gaussian of a row's ``y = x - m`` and its latent
``z``: ``Cov(y) = W^T W + Psi``, ``Cov(y, z) = W^T``, ``Cov(z) = I``; conditioning on the
observed coordinates by the textbook formulas (explicit solves with the observed block of
the covariance) gives every expectation of the E-step, the observed-data log-density and
``E[z | x_O]``. The fitted maximum is checked against a direct numerical maximisation of
the observed-data log-likelihood (scipy.optimize).
"""

from __future__ import annotations

import warnings
from typing import Any

import dask.array as da
import numpy as np
import pytest
from scipy import optimize
from sklearn.exceptions import ConvergenceWarning

import daskem.models.linear_gaussian as lg
from daskem import PPCA, FactorAnalysis
from daskem.em.session import MissingRowsWarning
from daskem.errors import DataError, ParameterError
from daskem.models.linear_gaussian import FactorAnalysisModel, PPCAModel
from daskem.registry import MISSING, get
from daskem.testing import ModelContract

MODELS = [PPCAModel, FactorAnalysisModel]
ESTIMATORS = [PPCA, FactorAnalysis]
FIELDS = ("n", "loglik", "n_nonfinite", "shift", "first", "latent_sum", "cross", "latent_second", "square")


def _data(n: int = 200, d: int = 5, q: int = 2, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Factor-model rows far from the origin, with a ``fraction`` of entries NaN completely at random."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, q)) @ rng.normal(size=(q, d)) + rng.uniform(0.3, 1.0, d) * rng.normal(size=(n, d))
    x += rng.uniform(-5.0, 5.0, d)
    if fraction:
        x[rng.random((n, d)) < fraction] = np.nan
    return x


def _holed(seed: int = 1) -> np.ndarray:
    """Rows of every kind: complete, one to four coordinates missing, all missing."""
    x = _data(n=60, fraction=0.3, seed=seed)
    x[3, :4] = np.nan
    x[4, 1:] = np.nan
    x[5] = np.nan
    x[6:9] = x[10]  # complete rows
    return x


def _params(model, x: np.ndarray, seed: int = 2):  # type: ignore[no-untyped-def]
    return model.init_params(x, np.random.default_rng(seed))


# -- brute-force oracle ---------------------------------------------------------------------------


def _joint(params) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The covariance of ``(y, z)``: shape (d + q, d + q)."""
    w, psi = params.components, params.noise
    q = w.shape[0]
    return np.block([[w.T @ w + np.diag(psi), w.T], [w, np.eye(q)]])


def _conditional(params, row: np.ndarray):  # type: ignore[no-untyped-def]
    """Mean (d + q) and covariance of ``(y, z)`` given the row's observed coordinates, and their log-density."""
    d = row.shape[0]
    joint = _joint(params)
    observed = np.flatnonzero(~np.isnan(row))
    hidden = np.concatenate([np.flatnonzero(np.isnan(row)), d + np.arange(joint.shape[0] - d)])
    y = row[observed] - params.mean[observed]
    c_oo = joint[np.ix_(observed, observed)]
    c_ho = joint[np.ix_(hidden, observed)]
    mean = np.zeros(joint.shape[0])
    mean[observed] = y
    mean[hidden] = c_ho @ np.linalg.solve(c_oo, y)
    cov = np.zeros_like(joint)
    cov[np.ix_(hidden, hidden)] = joint[np.ix_(hidden, hidden)] - c_ho @ np.linalg.solve(c_oo, c_ho.T)
    _, log_det = np.linalg.slogdet(c_oo)
    log_density = -0.5 * (observed.size * np.log(2 * np.pi) + log_det + y @ np.linalg.solve(c_oo, y))
    return mean, cov, log_density


def _oracle_stats(params, x: np.ndarray) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The E-step's sums, row by row from :func:`_conditional`."""
    q, d = params.components.shape
    rows, loglik = 0.0, 0.0
    first, latent_sum, square = np.zeros(d), np.zeros(q), np.zeros(d)
    cross, latent_second = np.zeros((q, d)), np.zeros((q, q))
    for row in x:
        if np.isnan(row).all():
            continue
        mean, cov, log_density = _conditional(params, row)
        second = cov + np.outer(mean, mean)
        rows += 1.0
        loglik += log_density
        first += mean[:d]
        latent_sum += mean[d:]
        cross += second[d:, :d]
        latent_second += second[d:, d:]
        square += np.diag(second)[:d]
    return {
        "n": rows,
        "loglik": loglik,
        "first": first,
        "latent_sum": latent_sum,
        "cross": cross,
        "latent_second": latent_second,
        "square": square,
    }


def _close(a: object, b: object, rtol: float) -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    assert float(np.max(np.abs(a - b), initial=0.0)) <= rtol * scale


def _by_pattern(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(observed coordinates, their values)`` per missing pattern of ``x`` (rows with none observed left out)."""
    observed = ~np.isnan(x)
    return [
        (pattern, x[(observed == pattern).all(axis=1)][:, pattern])
        for pattern in np.unique(observed, axis=0)
        if pattern.any()
    ]


def _observed_loglik(
    components: np.ndarray, mean: np.ndarray, noise: np.ndarray, groups: list[tuple[np.ndarray, np.ndarray]]
) -> float:
    """Observed-data log-likelihood: the marginal Gaussian of each pattern's observed coordinates."""
    cov = components.T @ components + np.diag(noise)
    total = 0.0
    for pattern, values in groups:
        rows = values - mean[pattern]
        c = cov[np.ix_(pattern, pattern)]
        _, log_det = np.linalg.slogdet(c)
        quad = np.einsum("ij,ij->i", rows, np.linalg.solve(c, rows.T).T)
        total += float(np.sum(-0.5 * (pattern.sum() * np.log(2 * np.pi) + log_det + quad)))
    return total


def _fit_arrays(est) -> tuple[np.ndarray, ...]:  # type: ignore[no-untyped-def]
    return est.components_, est.mean_, np.atleast_1d(est.noise_variance_)


# -- without NaN: bit for bit the complete-data path -----------------------------------------------


@pytest.mark.parametrize("model_type", MODELS)
def test_no_nan_e_step_and_m_step_bitwise(model_type) -> None:  # type: ignore[no-untyped-def]
    x = _data(fraction=0.0)
    plain, marginal = model_type(2), model_type(2, missing="marginalize")
    params = _params(plain, x)
    a, b = plain.e_step(params, x), marginal.e_step(params, x)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert b.n_incomplete == 0.0
    pa, pb = plain.m_step(a, params), marginal.m_step(b, params)
    for u, v in zip(pa.to_arrays().values(), pb.to_arrays().values(), strict=True):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(plain.score_samples(params, x), marginal.score_samples(params, x))
    np.testing.assert_array_equal(plain.transform(params, x), marginal.transform(params, x))
    assert "missing" not in plain.spec()
    assert marginal.spec()["missing"] == "marginalize"


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_no_nan_fit_bitwise(estimator) -> None:  # type: ignore[no-untyped-def]
    x = _data(fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = estimator(2, max_iter=15).fit(x)
        b = estimator(2, max_iter=15, missing="marginalize").fit(x)
    for u, v in zip(_fit_arrays(a), _fit_arrays(b), strict=True):
        np.testing.assert_array_equal(u, v)
    assert a.lower_bounds_ == b.lower_bounds_
    assert a.loglike_ == b.loglike_


# -- the E-step against the conditional-Gaussian oracle ----------------------------------------


@pytest.mark.parametrize("tile", [None, 7])
@pytest.mark.parametrize("model_type", MODELS)
def test_stats_match_brute_force(model_type, tile, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if tile is not None:  # tiles that split patterns between them
        monkeypatch.setattr(lg, "tile_rows", lambda k, d: tile)
    x = _holed()
    model = model_type(2, missing="marginalize")
    params = _params(model, x)
    stats = model.e_step(params, x)
    oracle = _oracle_stats(params, x)
    assert stats.n == oracle["n"] == x.shape[0] - 1
    assert stats.n_incomplete == np.count_nonzero(np.isnan(x).any(axis=1)) - 1
    assert stats.n_nonfinite == 0
    for name, expected in oracle.items():
        _close(getattr(stats, name), expected, 1e-10)
    # Additive over any split of the rows (chunk invariance of the statistics).
    parts = [model.e_step(params, x[i:j]) for i, j in [(0, 5), (5, 6), (6, 6), (6, 31), (31, 60)]]
    total = parts[0]
    for part in parts[1:]:
        total = model.combine(total, part)
    for name in (*FIELDS, "n_incomplete"):
        _close(getattr(total, name), getattr(stats, name), 1e-13)


@pytest.mark.parametrize("model_type", MODELS)
def test_per_row_methods_match_brute_force(model_type) -> None:  # type: ignore[no-untyped-def]
    x = _holed()
    model = model_type(2, missing="marginalize")
    params = _params(model, x)
    d = x.shape[1]
    oracle = [_conditional(params, row) if not np.isnan(row).all() else None for row in x]
    expected_score = np.array([0.0 if o is None else o[2] for o in oracle])
    expected_latent = np.array([np.zeros(2) if o is None else o[0][d:] for o in oracle])
    expected_fill = np.array([params.mean if o is None else o[0][:d] + params.mean for o in oracle])
    expected_fill = np.where(np.isnan(x), expected_fill, x)
    _close(model.score_samples(params, x), expected_score, 1e-12)
    _close(model.transform(params, x), expected_latent, 1e-12)
    imputed = model.impute(params, x)
    _close(imputed, expected_fill, 1e-12)
    np.testing.assert_array_equal(imputed[~np.isnan(x)], x[~np.isnan(x)])
    assert model.score_samples(params, x).sum() == pytest.approx(model.e_step(params, x).loglik, rel=1e-13)


def test_infinite_values_are_counted() -> None:
    x = _holed()
    x[0, 0], x[0, 1], x[7, 2] = np.inf, np.nan, -np.inf
    model = FactorAnalysisModel(2, missing="marginalize")
    assert model.e_step(_params(model, _holed()), x).n_nonfinite == 2


# -- the fit: the observed-data maximum --------------------------------------------------------


def _fit(estimator, x, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator(2, missing="marginalize", **kwargs).fit(x)


@pytest.mark.parametrize(
    ("estimator", "accelerate"),
    # Plain EM, and SQUAREM (the mean outside its extrapolation), to the same maximum.
    [(PPCA, None), (FactorAnalysis, "squarem")],
)
def test_fit_reaches_the_observed_data_maximum(estimator, accelerate) -> None:  # type: ignore[no-untyped-def]
    x = _data()
    est = _fit(estimator, x, tol=1e-15, max_iter=20000, accelerate=accelerate)
    assert est.converged_
    groups = _by_pattern(x)
    d, q = x.shape[1], 2
    isotropic = estimator is PPCA

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = theta[: q * d].reshape(q, d)
        mean = theta[q * d : q * d + d]
        log_noise = theta[q * d + d :]
        return w, mean, np.full(d, np.exp(log_noise[0])) if isotropic else np.exp(log_noise)

    def negative(theta: np.ndarray) -> float:
        return -_observed_loglik(*unpack(theta), groups)

    log_noise = np.log(np.atleast_1d(est.noise_variance_))
    theta_em = np.concatenate([est.components_.ravel(), est.mean_, log_noise])
    value_em = -negative(theta_em)
    # The fitted log-likelihood is the observed-data one.
    assert est.loglike_[-1] == pytest.approx(value_em, rel=1e-12)
    # The EM fixed point is a stationary point of the observed-data log-likelihood ...
    step = 1e-5
    gradient = np.array(
        [(negative(theta_em + step * e) - negative(theta_em - step * e)) / (2 * step) for e in np.eye(theta_em.size)]
    )
    assert np.max(np.abs(gradient)) < 1e-4
    # ... and a direct maximisation from a perturbed start finds the same maximum.
    start = theta_em + 0.05 * np.random.default_rng(3).standard_normal(theta_em.size)
    result = optimize.minimize(negative, start, method="BFGS", options={"gtol": 1e-8, "maxiter": 5000})
    assert -result.fun == pytest.approx(value_em, rel=1e-8)
    assert value_em >= -result.fun - 1e-8 * abs(value_em)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_log_likelihood_never_decreases(estimator) -> None:  # type: ignore[no-untyped-def]
    x = _data(fraction=0.3, seed=4)
    est = _fit(estimator, x, tol=0.0, max_iter=200)
    bounds = np.asarray(est.lower_bounds_)
    assert bounds.size == 200
    assert np.all(np.diff(bounds) >= -1e-12 * np.abs(bounds[:-1]))
    assert np.all(np.diff(est.loglike_) >= -1e-12 * np.abs(est.loglike_[:-1]))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_chunking_invariance(estimator) -> None:  # type: ignore[no-untyped-def]
    x = _data()
    fits = [
        _fit(estimator, da.from_array(x, chunks=(rows, x.shape[1])), tol=0.0, max_iter=40, cache=False)
        for rows in (200, 64, 37)
    ]
    for other in fits[1:]:
        for u, v in zip(_fit_arrays(fits[0]), _fit_arrays(other), strict=True):
            _close(v, u, 1e-12)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_predictions_on_nan_rows(estimator) -> None:  # type: ignore[no-untyped-def]
    x = _holed()
    with pytest.warns(MissingRowsWarning, match="1 row"):
        est = _fit(estimator, x, max_iter=30)
    model = est._model()
    params = est._params()
    d = x.shape[1]
    oracle = [_conditional(params, row) if not np.isnan(row).all() else None for row in x]
    expected_score = np.array([0.0 if o is None else o[2] for o in oracle])
    expected_latent = np.array([np.zeros(2) if o is None else o[0][d:] for o in oracle])
    _close(est.score_samples(x), expected_score, 1e-12)
    _close(est.transform(x), expected_latent, 1e-12)
    assert est.score(x) == pytest.approx(expected_score.mean(), rel=1e-12)
    lazy = da.from_array(x, chunks=(17, d))
    _close(est.score_samples(lazy).compute(), expected_score, 1e-12)
    _close(est.transform(lazy).compute(), expected_latent, 1e-12)
    _close(model.score_samples(params, x), expected_score, 1e-12)
    # Fitted without marginalising, NaN stay errors.
    plain = estimator(2).fit(_data(fraction=0.0))
    with pytest.raises(DataError):
        plain.score_samples(x)


# -- errors and the command line ---------------------------------------------------------------


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_feature_missing_everywhere_is_named(estimator) -> None:  # type: ignore[no-untyped-def]
    x = _data()
    x[:, 3] = np.nan
    with pytest.raises(DataError, match="Feature 3"):
        estimator(2, missing="marginalize").fit(x)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_nan_refused_by_default(estimator) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError):
        estimator(2).fit(_data())


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_bad_missing_policy(estimator) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError, match="'missing'"):
        estimator(2, missing="drop").fit(_data(fraction=0.0))
    with pytest.raises(ParameterError, match="'missing'"):
        PPCAModel(2, missing="drop")


def test_command_line_option() -> None:
    for name in ("ppca", "fa"):
        assert MISSING in get(name).options


# -- the model contract, on data with missing values -----------------------------------------------


@pytest.fixture(scope="module", params=MODELS, ids=["ppca", "fa"])
def model(request: pytest.FixtureRequest) -> PPCAModel | FactorAnalysisModel:
    return request.param(2, missing="marginalize")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """200 rows with 20% of the entries missing (none with all: the contract counts every row)."""
    return _data()


@pytest.fixture(scope="module")
def params(model: PPCAModel | FactorAnalysisModel, data: np.ndarray) -> Any:
    return model.init_params(data[:50], np.random.default_rng(3))


class TestMissingContract(ModelContract):
    """Every law of the contract (chunk additivity, monotone fits, ...) with NaN in the data."""
