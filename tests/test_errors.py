"""Bad input: every error names the value received and the remedy, and is a DaskemError."""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import sklearn.exceptions
import zarr

import daskem
from daskem import DaskemError, DataError, GaussianMixture, NotFittedError, NumericalError, ParameterError, StoreError
from daskem.io.sources import ChunkSizeWarning


def test_error_hierarchy():
    for cls in (DataError, ParameterError, NotFittedError, NumericalError, StoreError):
        assert issubclass(cls, DaskemError)
    assert issubclass(DaskemError, ValueError)
    assert issubclass(NotFittedError, sklearn.exceptions.NotFittedError)


# -- non-finite values: counted by the E-step, no extra pass -----------------------------------


def _true_inits(spec):
    """Starting parameters that skip the initialiser, so the first data pass is an E-step."""
    return {
        "weights_init": spec.weights / spec.weights.sum(),
        "means_init": spec.means,
        "precisions_init": np.linalg.inv(spec.covariances),
    }


def _poison_one_chunk(X, chunk_rows):
    """3 NaN, 1 +inf and 1 -inf, all inside the third chunk of rows."""
    X = X.copy()
    first = 2 * chunk_rows
    X[first + 3, 0] = np.nan
    X[first + 7, 1] = np.nan
    X[first + 7, 2] = np.nan
    X[first + 11, 2] = np.inf
    X[first + 12, 0] = -np.inf
    return X


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_nonfinite_counted_by_e_step(blobs, blobs_spec, kind):
    chunk_rows = 100  # 20 chunks, the bad values all in one
    X = _poison_one_chunk(blobs, chunk_rows)
    data = X if kind == "numpy" else da.from_array(X, chunks=(chunk_rows, X.shape[1]))
    gm = GaussianMixture(3, random_state=0, **_true_inits(blobs_spec))
    with pytest.raises(DataError, match=re.escape("Input X contains 5 NaN or infinite value(s) among 2000 rows")):
        gm.fit(data)
    with pytest.raises(DataError, match=re.escape("Remove or impute them before fitting")):
        gm.fit(data)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_single_nan_counted(blobs, blobs_spec, kind):
    X = blobs.copy()
    X[1234, 1] = np.nan
    data = X if kind == "numpy" else da.from_array(X, chunks=(100, 3))
    with pytest.raises(DataError, match=re.escape("contains 1 NaN or infinite value(s) among 2000 rows")):
        GaussianMixture(3, random_state=0, **_true_inits(blobs_spec)).fit(data)


def test_infinite_values_raise_no_runtime_warning(blobs, blobs_spec):
    X = blobs.copy()
    X[17, 2] = np.inf
    gm = GaussianMixture(3, random_state=0, **_true_inits(blobs_spec))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(DataError, match=re.escape("contains 1 NaN or infinite value(s) among 2000 rows")):
            gm.fit(X)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples"])
def test_nonfinite_in_predict(blobs, kind, method):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    X = blobs.copy()
    X[250, 0] = np.nan
    X[260, 1] = np.inf
    data = X if kind == "numpy" else da.from_array(X, chunks=(100, 3))
    with pytest.raises(DataError, match=re.escape("Input X contains 2 NaN or infinite value(s)")) as info:
        np.asarray(getattr(gm, method)(data))
    assert "Remove or impute them before predicting" in str(info.value)


@pytest.mark.parametrize(
    "init_params",
    [
        "kmeans",
        "k-means++",
        "random",
        "random_from_data",
    ],
)
def test_nonfinite_with_each_initialiser(blobs, init_params):
    chunk_rows = 100
    X = da.from_array(_poison_one_chunk(blobs, chunk_rows), chunks=(chunk_rows, 3))
    with pytest.raises(DataError, match=re.escape("Input X contains 5 NaN or infinite value(s) among 2000 rows")):
        GaussianMixture(3, random_state=0, init_params=init_params).fit(X)


# -- shape and dtype ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize(("shape", "ndim"), [((2000,), 1), ((1, 2000, 3), 3)])
def test_wrong_ndim(blobs, kind, shape, ndim):
    values = blobs[:, 0] if ndim == 1 else blobs[None]
    assert values.shape == shape
    data = values if kind == "numpy" else da.from_array(values)
    with pytest.raises(DataError, match=re.escape(f"Expected 2D array, got {ndim}D array instead")) as info:
        GaussianMixture(3).fit(data)
    assert "array.reshape(-1, 1)" in str(info.value)


def test_wrong_ndim_dask_message_names_shape(blobs):
    with pytest.raises(DataError, match=re.escape("got 3D array instead (shape=(1, 2000, 3))")):
        GaussianMixture(3).fit(da.from_array(blobs[None]))
    with pytest.raises(DataError, match=re.escape("got 1D array instead (shape=(2000,))")):
        GaussianMixture(3).fit(da.from_array(blobs[:, 0]))


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize(
    ("make", "dtype_text"),
    [
        (lambda X: X.astype(str), "has dtype <U"),
        (lambda X: X.astype(np.complex128), "has dtype complex128"),
    ],
    ids=["strings", "complex"],
)
def test_non_numeric_dtype(blobs, kind, make, dtype_text):
    values = make(blobs[:50])
    data = values if kind == "numpy" else da.from_array(values, chunks=(10, 3))
    with pytest.raises(DataError, match=re.escape(dtype_text)) as info:
        GaussianMixture(2).fit(data)
    assert "X.astype('float64')" in str(info.value)


def test_object_array_of_strings():
    X = np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object)
    with pytest.raises(DataError, match=re.escape("X has dtype object")) as info:
        GaussianMixture(1).fit(X)
    assert "astype('float64')" in str(info.value)


def test_object_array_of_strings_is_a_value_error():
    # Whatever its class, it is at least a ValueError that shows the offending value.
    X = np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object)
    with pytest.raises(ValueError, match=re.escape("'a'")):
        GaussianMixture(1).fit(X)


def test_n_components_greater_than_n_samples(blobs):
    with pytest.raises(
        DataError,
        match=re.escape(
            "Expected n_samples >= n_components but got n_components = 5, n_samples = 3. "
            "Reduce n_components or pass more rows."
        ),
    ):
        GaussianMixture(5).fit(blobs[:3])


# -- chunk layout -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_features_split_across_chunks_are_rechunked_with_a_warning(blobs):
    X = da.from_array(blobs, chunks=(500, 2))
    with pytest.warns(ChunkSizeWarning, match=re.escape("X.rechunk({1: 3})")) as info:
        split = GaussianMixture(3, random_state=0, max_iter=3).fit(X)
    assert "split into 2 chunks along its 3 features (chunks=(2, 1))" in str(info[0].message)
    whole = GaussianMixture(3, random_state=0, max_iter=3).fit(da.from_array(blobs, chunks=(500, 3)))
    np.testing.assert_array_equal(split.means_, whole.means_)
    np.testing.assert_array_equal(split.covariances_, whole.covariances_)


def test_unknown_chunk_sizes(blobs):
    X = da.from_array(blobs, chunks=(500, 3))
    masked = X[X[:, 0] > 0]
    assert np.isnan(masked.shape[0])
    with pytest.raises(DataError, match=re.escape("Call X = X.compute_chunk_sizes() before fitting.")) as info:
        GaussianMixture(3).fit(masked)
    assert "unknown chunk sizes" in str(info.value)


# -- hyperparameters, with scikit-learn's wording -----------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"n_components": 0},
            "The 'n_components' parameter of GaussianMixture must be an int in the range [1, inf). Got 0 instead.",
        ),
        (
            {"n_components": 1.5},
            "The 'n_components' parameter of GaussianMixture must be an int in the range [1, inf). Got 1.5 instead.",
        ),
        (
            {"tol": -1.0},
            "The 'tol' parameter of GaussianMixture must be a float in the range [0.0, inf). Got -1.0 instead.",
        ),
        (
            {"tol": np.nan},
            "The 'tol' parameter of GaussianMixture must be a float in the range [0.0, inf). Got nan instead.",
        ),
        (
            {"reg_covar": -0.1},
            "The 'reg_covar' parameter of GaussianMixture must be a float in the range [0.0, inf). Got -0.1 instead.",
        ),
        (
            {"max_iter": -1},
            "The 'max_iter' parameter of GaussianMixture must be an int in the range [0, inf). Got -1 instead.",
        ),
        (
            {"n_init": 0},
            "The 'n_init' parameter of GaussianMixture must be an int in the range [1, inf). Got 0 instead.",
        ),
        (
            {"covariance_type": "foo"},
            "The 'covariance_type' parameter of GaussianMixture must be a str among "
            "{'diag', 'full', 'spherical', 'tied'}. Got 'foo' instead.",
        ),
        (
            {"init_params": "bar"},
            "The 'init_params' parameter of GaussianMixture must be a str among "
            "{'k-means++', 'kmeans', 'random', 'random_from_data'}. Got 'bar' instead.",
        ),
        (
            {"random_state": -1},
            "The 'random_state' parameter of GaussianMixture must be an int in the range [0, 4294967295], "
            "an instance of 'numpy.random.mtrand.RandomState' or None. Got -1 instead.",
        ),
        (
            {"random_state": "seed"},
            "The 'random_state' parameter of GaussianMixture must be an int in the range [0, 4294967295], "
            "an instance of 'numpy.random.mtrand.RandomState' or None. Got 'seed' instead.",
        ),
        (
            {"split_every": 1},
            "The 'split_every' parameter of GaussianMixture must be an int in the range [2, inf) or None. "
            "Got 1 instead.",
        ),
        (
            {"verbose_interval": 0},
            "The 'verbose_interval' parameter of GaussianMixture must be an int in the range [1, inf). Got 0 instead.",
        ),
        ({"warm_start": "yes"}, "The 'warm_start' parameter of GaussianMixture must be an instance of 'bool'"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_invalid_hyperparameter(blobs, params, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        GaussianMixture(**params).fit(blobs)


def test_matches_sklearn_wording_for_n_components(blobs):
    sk = pytest.importorskip("sklearn.mixture")
    with pytest.raises(ValueError, match="n_components") as sk_info:
        sk.GaussianMixture(n_components=0).fit(blobs)
    with pytest.raises(ParameterError) as ours:
        GaussianMixture(n_components=0).fit(blobs)
    assert str(ours.value) == str(sk_info.value)


# -- numerics -----------------------------------------------------------------------------------


def _constant_feature(blobs):
    return np.c_[blobs[:, :2], np.full(blobs.shape[0], 3.0)]


def _duplicated_points(blobs):
    return np.repeat(blobs[:2], 50, axis=0)


@pytest.mark.parametrize("make", [_constant_feature, _duplicated_points], ids=["constant-feature", "duplicates"])
def test_singular_covariance_names_reg_covar(blobs, make):
    X = make(blobs)
    with pytest.raises(NumericalError, match=re.escape("is not positive definite")) as info:
        GaussianMixture(2, covariance_type="full", reg_covar=0.0, random_state=0).fit(X)
    message = str(info.value)
    assert "with reg_covar=0.0" in message
    assert "Increase reg_covar (e.g. reg_covar=1e-3)" in message


def test_singular_covariance_fixed_by_reg_covar(blobs):
    # The remedy the message names works.
    gm = GaussianMixture(2, covariance_type="full", reg_covar=1e-3, random_state=0).fit(_constant_feature(blobs))
    assert np.isfinite(gm.lower_bound_)
    np.testing.assert_allclose(gm.means_[:, 2], 3.0, rtol=1e-12)


# -- prediction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "sample", "save"])
def test_not_fitted(blobs, tmp_path, method):
    gm = GaussianMixture(3)
    arg = {"sample": 1, "save": tmp_path / "m.zarr"}.get(method, blobs)
    message = (
        "This GaussianMixture instance is not fitted yet. "
        "Call 'fit' with appropriate arguments before using this estimator."
    )
    with pytest.raises(NotFittedError, match=re.escape(message)) as info:
        getattr(gm, method)(arg)
    assert isinstance(info.value, sklearn.exceptions.NotFittedError)
    assert isinstance(info.value, DaskemError)


@pytest.fixture(scope="module")
def fitted(request):
    X, _ = daskem.testing.make_mixture_array(2000, 3, 3, seed=0, chunk_rows=500)
    return GaussianMixture(3, random_state=0).fit(X.compute())


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_predict_wrong_number_of_features(fitted, blobs, kind, method):
    values = np.c_[blobs, blobs[:, :1]]
    data = values if kind == "numpy" else da.from_array(values, chunks=(500, 4))
    message = "X has 4 features, but GaussianMixture is expecting 3 features as input."
    with pytest.raises(DataError, match=re.escape(message)):
        getattr(fitted, method)(data)


def test_warm_start_with_other_features(blobs):
    gm = GaussianMixture(2, random_state=0, warm_start=True, max_iter=5).fit(blobs)
    with pytest.raises(DataError, match=re.escape("X has 2 features, but the warm start is from a fit on 3 features.")):
        gm.fit(blobs[:, :2])


# -- Zarr locations -----------------------------------------------------------------------------


def test_zarr_path_does_not_exist(tmp_path):
    path = str(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match=re.escape(f"No Zarr array found at {path!r}: the path does not exist.")):
        GaussianMixture(3).fit(path)


def test_zarr_path_is_a_group(tmp_path):
    path = str(tmp_path / "group.zarr")
    zarr.open_group(path, mode="w").create_array("X", shape=(10, 2), dtype="float64")
    with pytest.raises(StoreError, match=re.escape(f"{path!r} is a Zarr group, not an array.")) as info:
        GaussianMixture(3).fit(path)
    assert repr(path + "/<array-name>") in str(info.value)


def test_predict_on_missing_zarr_path(fitted, tmp_path):
    path = str(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match=re.escape(f"No Zarr array found at {path!r}")):
        fitted.predict(path)


# -- user-given initial parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"weights_init": [0.5, 0.5]}, "The parameter 'weights' should have the shape of (3,), but got (2,)."),
        (
            {"weights_init": [1.5, -0.25, -0.25]},
            "The parameter 'weights' should be in the range [0, 1], but got max value 1.50000, min value -0.25000.",
        ),
        (
            {"weights_init": [0.5, 0.5, 0.5]},
            "The parameter 'weights' should be normalized, but got sum(weights) = 1.50000.",
        ),
        ({"means_init": np.zeros((3, 2))}, "The parameter 'means' should have the shape of (3, 3), but got (3, 2)."),
        ({"means_init": np.zeros((2, 3))}, "The parameter 'means' should have the shape of (3, 3), but got (2, 3)."),
        (
            {"precisions_init": np.tile(np.eye(2), (3, 1, 1))},
            "The parameter 'full precision' should have the shape of (3, 3, 3), but got (3, 2, 2).",
        ),
        (
            {"covariance_type": "diag", "precisions_init": np.ones((3, 2))},
            "The parameter 'diag precision' should have the shape of (3, 3), but got (3, 2).",
        ),
        (
            {"covariance_type": "spherical", "precisions_init": np.ones(2)},
            "The parameter 'spherical precision' should have the shape of (3,), but got (2,).",
        ),
        (
            {"covariance_type": "tied", "precisions_init": np.eye(2)},
            "The parameter 'tied precision' should have the shape of (3, 3), but got (2, 2).",
        ),
    ],
    ids=lambda v: "-".join(f"{k}={np.shape(x)}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_bad_initial_parameters(blobs, params, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        GaussianMixture(3, random_state=0, **params).fit(blobs)


def test_precisions_init_not_positive_definite(blobs):
    with pytest.raises(NumericalError, match=re.escape("precisions_init[0] is not symmetric positive definite")):
        GaussianMixture(3, precisions_init=-np.tile(np.eye(3), (3, 1, 1))).fit(blobs)


def test_diag_precisions_init_not_positive(blobs):
    with pytest.raises(NumericalError, match=re.escape("precisions_init must be strictly positive")):
        GaussianMixture(3, covariance_type="diag", precisions_init=-np.ones((3, 3))).fit(blobs)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_precisions_init_not_symmetric(blobs):
    precision = np.eye(3) + np.triu(np.full((3, 3), 0.5), 1)
    with pytest.raises(DaskemError, match="symmetric"):
        GaussianMixture(3, precisions_init=np.tile(precision, (3, 1, 1)), max_iter=1).fit(blobs)
