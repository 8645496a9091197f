"""daskem.GaussianImputer and ``daskem impute``: imputed values against closed forms and scikit-learn."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_wine
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer

import daskem
from daskem import GaussianImputer, GaussianMixture
from daskem.cli.imputing import COVARIANCE_CHOICES
from daskem.errors import DataError, ParameterError
from daskem.models.gaussian import COVARIANCE_TYPES
from daskem.testing.cli import invoke_cli, run_cli

# The MCAR samples hold a few rows with every feature missing: imputed by the mean (checked), skipped by the fit.
pytestmark = pytest.mark.filterwarnings("ignore::daskem.em.session.MissingRowsWarning")

D = 5
COV = 0.6 * np.ones((D, D)) + np.diag([0.4, 1.0, 2.0, 0.7, 1.5])
MEAN = np.array([1.0, -2.0, 0.5, 3.0, 0.0])


def _normal(n: int, seed: int, p: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A multivariate normal sample and the same with MCAR holes (each entry missing with probability p)."""
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(MEAN, COV, size=n)
    holes = X.copy()
    holes[rng.random(X.shape) < p] = np.nan
    return X, holes


@pytest.fixture(scope="module")
def normal() -> tuple[np.ndarray, np.ndarray]:
    return _normal(3000, 0)


@pytest.fixture(scope="module")
def fitted(normal) -> GaussianImputer:
    return GaussianImputer(random_state=0).fit(normal[1])


def _conditional(mean: np.ndarray, cov: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The conditional mean and covariance of a row's missing coordinates (closed form)."""
    miss = np.isnan(row)
    obs = ~miss
    if not obs.any():
        return mean.copy(), cov.copy()
    gain = np.linalg.solve(cov[np.ix_(obs, obs)], cov[np.ix_(obs, miss)]).T  # Sigma_MO Sigma_OO^-1
    return mean[miss] + gain @ (row[obs] - mean[obs]), cov[np.ix_(miss, miss)] - gain @ cov[np.ix_(obs, miss)]


# -- values against the closed form ------------------------------------------------------------


def test_conditional_means_equal_the_closed_form(normal, fitted):
    X, holes = normal
    out = fitted.transform(holes)
    assert isinstance(out, np.ndarray)
    assert out.shape == X.shape
    assert out.dtype == np.float64
    mean, cov = fitted.means_[0], fitted.covariances_[0]
    expected = holes.copy()
    for i in np.flatnonzero(np.isnan(holes).any(axis=1)):
        expected[i, np.isnan(holes[i])] = _conditional(mean, cov, holes[i])[0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
    observed = ~np.isnan(holes)
    assert np.array_equal(out[observed], holes[observed])  # observed entries bit for bit
    # The fit itself is the MLE of the normal: close to the truth for 3,000 rows.
    np.testing.assert_allclose(mean, MEAN, atol=0.15)
    np.testing.assert_allclose(cov, COV, atol=0.25)


def test_rows_without_nan_come_back_unchanged(normal, fitted):
    X = normal[0]
    assert np.array_equal(fitted.transform(X), X)
    assert np.array_equal(fitted.transform(da.from_array(X, chunks=700)).compute(), X)
    drawing = clone(fitted).set_params(sample_posterior=True).fit(normal[1])
    assert np.array_equal(drawing.transform(X), X)


def test_float32_input_keeps_float32(normal):
    holes = normal[1].astype(np.float32)
    imp = GaussianImputer(random_state=0).fit(holes)
    out = imp.transform(holes)
    assert out.dtype == np.float32
    assert np.array_equal(out[~np.isnan(holes)], holes[~np.isnan(holes)])


def test_diagonal_covariance_imputes_feature_means(normal):
    imp = GaussianImputer(covariance_type="diag", random_state=0).fit(normal[1])
    out = imp.transform(normal[1])
    miss = np.isnan(normal[1])
    np.testing.assert_allclose(out[miss], np.broadcast_to(imp.means_[0], out.shape)[miss], rtol=0, atol=1e-12)


# -- draws ---------------------------------------------------------------------------------------


def test_draws_are_reproducible_and_independent_of_chunking(normal):
    holes = normal[1]
    a = GaussianImputer(sample_posterior=True, random_state=3).fit(holes)
    b = GaussianImputer(sample_posterior=True, random_state=3).fit(holes)
    assert a.draw_seed_ == b.draw_seed_ == 3
    out = a.transform(holes)
    assert np.array_equal(out, b.transform(holes))
    assert np.array_equal(out, a.transform(holes))
    observed = ~np.isnan(holes)
    assert np.array_equal(out[observed], holes[observed])
    assert not np.isnan(out).any()
    # The same random numbers whatever the chunking: the draws agree to rounding (the
    # conditional means come from BLAS products over tiles, whose rounding follows the tile).
    for chunks in (1000, 333, (1, 2998, 1)):
        lazy = a.transform(da.from_array(holes, chunks=(chunks, D)))
        assert isinstance(lazy, da.Array)
        np.testing.assert_allclose(lazy.compute(), out, rtol=1e-12, atol=1e-12, err_msg=str(chunks))
    other = GaussianImputer(sample_posterior=True, random_state=4).fit(holes).transform(holes)
    assert not np.array_equal(other[~observed], out[~observed])


def test_random_state_none_draws_a_seed_once_at_fit(normal):
    holes = normal[1][:500]
    imp = GaussianImputer(sample_posterior=True).fit(holes)
    assert isinstance(imp.draw_seed_, int)
    assert np.array_equal(imp.transform(holes), imp.transform(holes))


@pytest.mark.parametrize("n_components", [1, 2])
def test_mean_of_draws_approaches_the_conditional_mean(normal, n_components):
    """Draws of one row repeated N times are N independent draws of its missing coordinates."""
    imp = GaussianImputer(n_components=n_components, sample_posterior=True, random_state=0).fit(normal[1])
    row = np.array([1.5, np.nan, -0.5, np.nan, 1.0])
    n = 20_000
    draws = imp.transform(np.tile(row, (n, 1)))[:, [1, 3]]
    conditional_mean = clone(imp).set_params(sample_posterior=False).fit(normal[1]).transform(row[None, :])[0, [1, 3]]
    if n_components == 1:
        mean, cov = _conditional(imp.means_[0], imp.covariances_[0], row)
        np.testing.assert_allclose(conditional_mean, mean, rtol=0, atol=1e-10)
        std = np.sqrt(np.diag(cov))
        # The draws' covariance is the conditional covariance (a loose check: 20,000 draws).
        np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.abs(cov).max())
    else:
        std = draws.std(axis=0)
    standard_error = std / np.sqrt(n)
    assert np.all(np.abs(draws.mean(axis=0) - conditional_mean) < 5 * standard_error)


# -- quality on real data against scikit-learn's IterativeImputer ---------------------------------


def _standardised(loader) -> np.ndarray:
    X = loader().data.astype(np.float64)
    return (X - X.mean(axis=0)) / X.std(axis=0)


def _mcar(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.random(X.shape) < 0.2


def _mar(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Column 0 always observed; the others missing more often where it is large (20% overall)."""
    d = X.shape[1]
    p = 1.0 / (1.0 + np.exp(-2.0 * X[:, 0]))
    p = np.clip(p * (0.2 * d / (d - 1)) / p.mean(), 0.0, 0.95)
    mask = rng.random(X.shape) < p[:, None]
    mask[:, 0] = False
    return mask


@pytest.mark.parametrize("loader", [load_diabetes, load_wine], ids=["diabetes", "wine"])
@pytest.mark.parametrize("make_mask", [_mcar, _mar], ids=["mcar", "mar"])
def test_rmse_at_most_iterative_imputer(loader, make_mask):
    """One component (Schafer's norm) beats IterativeImputer's defaults on removed entries."""
    X = _standardised(loader)
    mask = make_mask(X, np.random.default_rng(0))
    holes = np.where(mask, np.nan, X)
    assert 0.15 < mask.mean() < 0.25
    ours = GaussianImputer(n_components=1, random_state=0).fit_transform(holes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IterativeImputer's ConvergenceWarning
        theirs = IterativeImputer().fit_transform(holes)

    def rmse(values: np.ndarray) -> float:
        return float(np.sqrt(np.mean((values[mask] - X[mask]) ** 2)))

    assert rmse(ours) <= rmse(theirs)
    assert rmse(ours) < 0.8  # imputing 0 (the mean) gives ~1


# -- inputs ----------------------------------------------------------------------------------------


def test_dask_and_zarr_inputs_give_lazy_outputs_equal_to_numpy(normal, fitted, tmp_path):
    holes = normal[1]
    expected = fitted.transform(holes)
    lazy = fitted.transform(da.from_array(holes, chunks=(500, D)))
    assert isinstance(lazy, da.Array)
    assert lazy.chunks == ((500,) * 6, (D,))
    np.testing.assert_allclose(lazy.compute(), expected, rtol=1e-12, atol=1e-12)
    path = str(tmp_path / "holes.zarr")
    store = zarr.create_array(store=path, shape=holes.shape, chunks=(700, D), dtype="f8")
    store[...] = holes
    for given in (path, zarr.open_array(path, mode="r")):
        out = fitted.transform(given)
        assert isinstance(out, da.Array)
        assert out.chunks[0][0] == 700
        np.testing.assert_allclose(out.compute(), expected, rtol=1e-12, atol=1e-12)
    on_zarr = GaussianImputer(random_state=0).fit(path)
    np.testing.assert_allclose(on_zarr.means_, fitted.means_, rtol=1e-10, atol=1e-12)


def test_checks_features_and_parameters(normal, fitted):
    with pytest.raises(DataError, match="X has 4 features, but GaussianImputer is expecting 5"):
        fitted.transform(normal[1][:, :4])
    with pytest.raises(ParameterError, match="sample_posterior"):
        GaussianImputer(sample_posterior="yes").fit(normal[1])
    with pytest.raises(daskem.NotFittedError):
        GaussianImputer().transform(normal[1])
    with pytest.raises(DataError, match="infinite value"):
        fitted.transform(np.where(np.isnan(normal[1]), np.inf, normal[1])[:50])


# -- scikit-learn API ----------------------------------------------------------------------------


def test_sklearn_api_basics(fitted):
    imp = GaussianImputer(n_components=2, sample_posterior=True, random_state=5, tol=1e-4, cache=False)
    params = imp.get_params()
    assert "missing" not in params
    assert params["sample_posterior"] is True
    assert params["n_components"] == 2
    twin = clone(imp)
    assert twin is not imp
    assert twin.get_params() == params
    assert GaussianImputer(**params).get_params() == params
    assert clone(fitted).get_params() == fitted.get_params()
    assert not hasattr(clone(fitted), "means_")
    assert imp.set_params(n_components=3).n_components == 3
    with pytest.raises(ValueError, match="missing"):
        imp.set_params(missing="error")
    assert fitted.get_feature_names_out().tolist() == [f"x{j}" for j in range(D)]
    assert fitted.get_feature_names_out(["a", "b", "c", "d", "e"]).tolist() == ["a", "b", "c", "d", "e"]
    tags = fitted.__sklearn_tags__()
    assert tags.input_tags.allow_nan
    assert tags.transformer_tags is not None
    assert isinstance(fitted, GaussianMixture)
    assert fitted.missing == "marginalize"


def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(GaussianImputer(random_state=0), on_fail=None)
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
    assert not failed


def test_save_load_and_from_mixture(normal, fitted, tmp_path):
    X, holes = normal
    drawing = GaussianImputer(sample_posterior=True).fit(holes)
    drawing.save(tmp_path / "imp.zarr")
    loaded = daskem.load(tmp_path / "imp.zarr")
    assert type(loaded) is GaussianImputer
    assert loaded.draw_seed_ == drawing.draw_seed_
    assert np.array_equal(loaded.transform(holes), drawing.transform(holes))
    mixture = GaussianMixture(random_state=0).fit(X)  # missing="error", on complete data
    imp = GaussianImputer.from_mixture(mixture)
    assert np.array_equal(imp.means_, mixture.means_)
    assert imp.n_features_in_ == D
    expected = holes.copy()
    for i in np.flatnonzero(np.isnan(holes).any(axis=1)):
        expected[i, np.isnan(holes[i])] = _conditional(mixture.means_[0], mixture.covariances_[0], holes[i])[0]
    np.testing.assert_allclose(imp.transform(holes), expected, rtol=0, atol=1e-10)
    with pytest.raises(ParameterError, match="GaussianMixture"):
        GaussianImputer.from_mixture(daskem.KMeans(2).fit(X))


# -- daskem impute ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def holes_zarr(tmp_path_factory, normal) -> str:
    path = str(tmp_path_factory.mktemp("impute") / "holes.zarr")
    store = zarr.create_array(store=path, shape=normal[1].shape, chunks=(800, D), dtype="f8")
    store[...] = normal[1]
    return path


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_covariance_choices_are_the_models():
    assert set(COVARIANCE_CHOICES) == set(COVARIANCE_TYPES)


@pytest.mark.slow
def test_impute_command_writes_the_transform(holes_zarr, tmp_path):
    out = tmp_path / "OUT.zarr"
    done = run_cli("impute", holes_zarr, "--output", out, "--workers", "0", "-q", "--random-state", "0")
    assert done.returncode == 0, done.stderr
    written = zarr.open_array(str(out), mode="r")
    assert written.shape == (3000, D)
    assert written.chunks == (800, D)
    assert written.dtype == np.float64
    n_missing = int(np.isnan(zarr.open_array(holes_zarr, mode="r")[...]).sum())
    assert f"Imputed {n_missing:,} values (conditional means; 1-component full mixture" in done.stdout
    assert "in 3,000 rows x 5 of" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1
    expected = GaussianImputer(random_state=0).fit(holes_zarr).transform(holes_zarr).compute()
    np.testing.assert_allclose(written[...], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_impute_command_draws_and_model(holes_zarr, normal, tmp_path):
    out = tmp_path / "DRAWS.zarr"
    done = invoke_cli(
        "impute", holes_zarr, "-o", out, "--workers", "0", "-q", "--sample-posterior", "-k", "2", "--seed", "7"
    )
    assert done.returncode == 0, done.stderr
    imp = GaussianImputer(n_components=2, sample_posterior=True, random_state=7).fit(holes_zarr)
    np.testing.assert_allclose(zarr.open_array(str(out), mode="r")[...], imp.transform(normal[1]), atol=1e-10)
    model = tmp_path / "MODEL.zarr"
    GaussianMixture(random_state=0).fit(normal[0]).save(model)  # fitted with missing="error"
    out2 = tmp_path / "MODEL_OUT.zarr"
    done = invoke_cli("impute", holes_zarr, "--model", model, "-o", out2, "--workers", "0")
    assert done.returncode == 0, done.stderr
    expected = GaussianImputer.from_mixture(daskem.load(model)).transform(normal[1])
    np.testing.assert_allclose(zarr.open_array(str(out2), mode="r")[...], expected, rtol=1e-12, atol=1e-12)
    refused = invoke_cli("impute", holes_zarr, "--model", model, "-k", "2", "-o", tmp_path / "X.zarr", "--workers", "0")
    assert refused.returncode == 2
    assert "-k/--n-components" in refused.stderr
    assert not (tmp_path / "X.zarr").exists()


@pytest.mark.slow
@pytest.mark.parametrize("what", ["zarr", "files", "file", "inside"])
def test_impute_command_never_replaces_anything(holes_zarr, tmp_path, what):
    target = tmp_path / "TAKEN"
    if what == "zarr":
        zarr.create_array(store=str(target), shape=(3, 2), chunks=(3, 2), dtype="f8")[...] = 1.5
    elif what == "files":
        target.mkdir()
        (target / "notes.txt").write_text("keep me")
    elif what == "file":
        target.write_bytes(b"precious")
    else:
        target = Path(holes_zarr) / "inside"
    before = _tree(Path(holes_zarr).parent) if what == "inside" else (_tree(target) if target.is_dir() else None)
    raw = target.read_bytes() if target.is_file() else None
    done = invoke_cli("impute", holes_zarr, "-o", target, "--workers", "0", "-q")
    assert done.returncode == 1
    assert repr(str(target)) in " ".join(done.stderr.split())
    assert "partial result" not in done.stderr
    if what == "inside":
        assert _tree(Path(holes_zarr).parent) == before
        assert not target.exists()
    elif raw is not None:
        assert target.read_bytes() == raw
    else:
        assert _tree(target) == before
    assert os.path.exists(holes_zarr)
