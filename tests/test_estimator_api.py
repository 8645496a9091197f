"""The scikit-learn style API: input kinds, fitted state, warm start, n_init, verbose, save/load."""

from __future__ import annotations

import json
import re
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import GaussianMixture, GaussianMixtureModel, GaussianMixtureParams, StoreError, fit_em
from daskem.em.monitor import IterationRecord

PARAM_ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")

N_SAMPLES, N_FEATURES, N_COMPONENTS = 12_288, 3, 3
# default_chunk_rows(12_288, 3) is 4096: NumPy input gets the same 3 blocks as this Zarr array.
CHUNK_ROWS = 4096


@pytest.fixture(scope="module")
def data(tmp_path_factory, request):
    """The same rows as NumPy, dask and a Zarr path, all in blocks of CHUNK_ROWS rows."""
    seed = request.getfixturevalue("seed")
    path = str(tmp_path_factory.mktemp("api") / "X.zarr")
    daskem.testing.write_mixture_zarr(path, N_SAMPLES, N_FEATURES, N_COMPONENTS, seed=seed, chunk_rows=CHUNK_ROWS)
    X = np.asarray(zarr.open_array(path, mode="r")[...])
    assert daskem.as_source(X).array.chunks == ((CHUNK_ROWS,) * 3, (N_FEATURES,))
    return {"numpy": X, "dask": da.from_array(X, chunks=(CHUNK_ROWS, N_FEATURES)), "zarr": path}


def _estimator(**kwargs):
    # split_every=2 with 3 blocks: a two-level reduction tree.
    return GaussianMixture(N_COMPONENTS, random_state=0, tol=1e-6, split_every=2, **kwargs)


@pytest.fixture(scope="module")
def fits(data):
    return {kind: _estimator().fit(X) for kind, X in data.items()}


# -- input kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dask", "zarr"])
def test_same_parameters_for_every_input_kind(fits, kind):
    ref, other = fits["numpy"], fits[kind]
    for attr in PARAM_ATTRS:
        assert np.array_equal(getattr(ref, attr), getattr(other, attr)), attr
    assert other.n_iter_ == ref.n_iter_
    assert other.lower_bound_ == ref.lower_bound_
    assert other.lower_bounds_ == ref.lower_bounds_


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_fitted_attributes_are_concrete_numpy(fits, kind):
    gm = fits[kind]
    k, d = N_COMPONENTS, N_FEATURES
    shapes = {
        "weights_": (k,),
        "means_": (k, d),
        "covariances_": (k, d, d),
        "precisions_": (k, d, d),
        "precisions_cholesky_": (k, d, d),
    }
    for attr, shape in shapes.items():
        value = getattr(gm, attr)
        assert type(value) is np.ndarray, attr
        assert value.dtype == np.float64, attr
        assert value.shape == shape, attr
    assert type(gm.converged_) is bool
    assert gm.converged_ is True
    assert type(gm.n_iter_) is int
    assert type(gm.lower_bound_) is float
    assert type(gm.lower_bounds_) is list
    assert all(type(v) is float for v in gm.lower_bounds_)
    assert gm.n_features_in_ == d
    np.testing.assert_allclose(gm.weights_.sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(gm.precisions_, np.linalg.inv(gm.covariances_), rtol=1e-8)


def test_numpy_in_numpy_out(fits, data):
    gm, X = fits["numpy"], data["numpy"]
    labels, proba, scores = gm.predict(X), gm.predict_proba(X), gm.score_samples(X)
    assert type(labels) is np.ndarray
    assert labels.shape == (N_SAMPLES,)
    assert np.issubdtype(labels.dtype, np.integer)
    assert type(proba) is np.ndarray
    assert proba.shape == (N_SAMPLES, N_COMPONENTS)
    assert type(scores) is np.ndarray
    assert scores.shape == (N_SAMPLES,)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(labels, proba.argmax(axis=1))
    assert gm.score(X) == pytest.approx(scores.mean(), rel=1e-12)


@pytest.mark.parametrize("kind", ["dask", "zarr"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples"])
def test_lazy_input_gives_lazy_output_with_numpy_values(fits, data, kind, method):
    gm = fits["numpy"]
    expected = getattr(gm, method)(data["numpy"])
    out = getattr(gm, method)(data[kind])
    assert isinstance(out, da.Array)
    assert out.shape == expected.shape
    assert out.chunks[0] == (CHUNK_ROWS,) * 3
    assert out.dtype == expected.dtype
    computed = out.compute()
    assert type(computed) is np.ndarray
    assert np.array_equal(computed, expected)


@pytest.mark.parametrize("kind", ["dask", "zarr"])
def test_score_is_a_float_for_lazy_input(fits, data, kind):
    gm = fits["numpy"]
    value = gm.score(data[kind])
    assert type(value) is float
    assert value == pytest.approx(gm.score(data["numpy"]), rel=1e-12)


def test_fit_predict_equals_fit_then_predict(data):
    labels = _estimator().fit_predict(data["numpy"])
    assert np.array_equal(labels, _estimator().fit(data["numpy"]).predict(data["numpy"]))


# -- get_params / set_params / clone ------------------------------------------------------------


def test_params_round_trip():
    means = np.zeros((2, 3))
    gm = GaussianMixture(
        2,
        covariance_type="diag",
        tol=1e-4,
        reg_covar=1e-5,
        max_iter=7,
        n_init=2,
        init_params="random",
        means_init=means,
        random_state=3,
        warm_start=True,
        verbose=1,
        verbose_interval=5,
        split_every=4,
    )
    params = gm.get_params()
    assert params == {**params, "n_components": 2, "covariance_type": "diag", "split_every": 4}
    assert params["means_init"] is means
    assert set(params) == {
        "n_components",
        "covariance_type",
        "tol",
        "reg_covar",
        "max_iter",
        "n_init",
        "init_params",
        "weights_init",
        "means_init",
        "precisions_init",
        "random_state",
        "warm_start",
        "verbose",
        "verbose_interval",
        "split_every",
        "accelerate",
        "prune_restarts",
        "checkpoint",
        "checkpoint_every",
        "keep_last",
        "overwrite_checkpoint",
        "cache",
        "missing",
        "schedule",
        "step_blocks",
        "learning_decay",
        "learning_offset",
        "average",
        "shuffle",
        "prior",
    }
    twin = clone(gm)
    assert twin is not gm
    twin_params = twin.get_params()
    assert twin_params.keys() == params.keys()
    for key, value in params.items():
        assert np.array_equal(twin_params[key], value) if key == "means_init" else twin_params[key] == value
    assert gm.set_params(n_components=4, split_every=None) is gm
    assert gm.n_components == 4
    assert gm.split_every is None
    assert GaussianMixture(**params).get_params()["tol"] == 1e-4


def test_clone_of_fitted_is_unfitted(fits):
    twin = clone(fits["numpy"])
    assert not hasattr(twin, "weights_")
    assert twin.get_params() == fits["numpy"].get_params()


# -- warm start -----------------------------------------------------------------------------------


def _params_of(gm):
    return GaussianMixtureParams(
        gm.weights_.copy(), gm.means_.copy(), gm.covariances_.copy(), gm.precisions_cholesky_.copy()
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_continues_from_previous_solution(data):
    X = data["numpy"]
    gm = _estimator(max_iter=2, init_params="random", warm_start=True).fit(X)
    first = _params_of(gm)
    first_lower_bounds = list(gm.lower_bounds_)
    gm.set_params(max_iter=1)
    gm.fit(X)
    expected = fit_em(GaussianMixtureModel(N_COMPONENTS, "full", 1e-6), X, first, max_iter=1, tol=1e-6, split_every=2)
    assert gm.n_iter_ == 1
    for attr, value in zip(
        ("weights_", "means_", "covariances_", "precisions_cholesky_"),
        (
            expected.params.weights,
            expected.params.means,
            expected.params.covariances,
            expected.params.precisions_cholesky,
        ),
        strict=True,
    ):
        assert np.array_equal(getattr(gm, attr), value), attr
    assert gm.lower_bounds_ == [expected.history[0].log_likelihood]
    # It continued: its first log-likelihood is that of the first fit's final parameters,
    # above the last one the first fit recorded (EM is monotone).
    assert gm.lower_bounds_[0] > first_lower_bounds[-1]
    cold = _estimator(max_iter=1, init_params="random").fit(X)
    assert cold.lower_bounds_[0] == first_lower_bounds[0]
    assert not np.array_equal(cold.means_, gm.means_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_false_restarts(data):
    X = data["numpy"]
    gm = _estimator(max_iter=2, init_params="random").fit(X)
    again = gm.fit(X)
    assert again.lower_bounds_ == _estimator(max_iter=2, init_params="random").fit(X).lower_bounds_


# -- n_init ---------------------------------------------------------------------------------------


def _split_runs(records):
    runs = {}
    for record in records:
        runs.setdefault(record.run, []).append(record)
    return [runs[i] for i in sorted(runs)]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_n_init_keeps_best_lower_bound(data, capsys):
    records = []
    gm = _estimator(n_init=4, max_iter=3, init_params="random", verbose=2, verbose_interval=100)
    gm.fit(data["numpy"], callback=lambda record, params: records.append(record))
    runs = _split_runs(records)
    assert len(runs) == 4
    finals = [run[-1].log_likelihood for run in runs]
    assert len(set(finals)) > 1, "the restarts should differ for this test to mean anything"
    best = int(np.argmax(finals))
    assert gm.lower_bound_ == max(finals)
    assert gm.lower_bounds_ == [r.log_likelihood for r in runs[best]]
    # verbose=2 prints each run's lower bound to 5 decimals.
    out = capsys.readouterr().out
    printed = [float(v) for v in re.findall(r"lower bound (-?\d+\.\d{5})$", out, flags=re.MULTILINE)]
    assert printed == pytest.approx(finals, abs=5e-6)
    assert [int(v) for v in re.findall(r"^Initialization (\d+)$", out, flags=re.MULTILINE)] == [0, 1, 2, 3]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_n_init_is_reproducible(data):
    # k-means++: random_from_data on a NumPy array draws scikit-learn's rows (tests/test_map_em.py).
    a = _estimator(n_init=3, max_iter=2, init_params="k-means++").fit(data["numpy"])
    b = _estimator(n_init=3, max_iter=2, init_params="k-means++").fit(data["zarr"])
    for attr in PARAM_ATTRS:
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr


# -- verbose, callback, lower_bounds_ -------------------------------------------------------------


def test_verbose_1_format(data, capsys):
    gm = _estimator(verbose=1, verbose_interval=2).fit(data["numpy"])
    lines = capsys.readouterr().out.splitlines()
    expected = ["Initialization 0"]
    expected += [f"  Iteration {i}" for i in range(2, gm.n_iter_ + 1, 2)]
    expected += [f"Initialization converged: {gm.converged_}"]
    assert lines == expected


def test_verbose_2_format(data, capsys):
    gm = _estimator(verbose=2, verbose_interval=1).fit(data["numpy"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Initialization 0"
    iteration = re.compile(r"^  Iteration (\d+)\t time lapse \d+\.\d{5}s\t ll change (inf|-?\d+\.\d{5})$")
    matches = [iteration.match(line) for line in lines[1:-1]]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == list(range(1, gm.n_iter_ + 1))
    assert matches[0].group(2) == "inf"
    changes = np.diff(gm.lower_bounds_)
    assert [float(m.group(2)) for m in matches[1:]] == pytest.approx(changes, abs=5e-6)
    end = re.match(
        r"^Initialization converged: (True|False)\t time lapse \d+\.\d{5}s\t lower bound (-?\d+\.\d{5})$", lines[-1]
    )
    assert end, lines[-1]
    assert end.group(1) == str(gm.converged_)
    assert float(end.group(2)) == pytest.approx(gm.lower_bound_, abs=5e-6)


def test_verbose_0_prints_nothing(data, capsys):
    _estimator().fit(data["numpy"])
    assert capsys.readouterr() == ("", "")


def test_callback_once_per_iteration(data):
    calls = []
    gm = _estimator().fit(data["zarr"], callback=lambda record, params: calls.append((record, params)))
    assert len(calls) == gm.n_iter_ > 1
    records = [record for record, _ in calls]
    assert all(isinstance(r, IterationRecord) for r in records)
    assert [r.iteration for r in records] == list(range(1, gm.n_iter_ + 1))
    assert [r.log_likelihood for r in records] == gm.lower_bounds_
    assert records[0].change == np.inf
    assert [r.change for r in records[1:]] == pytest.approx(np.diff(gm.lower_bounds_), rel=1e-12, abs=1e-15)
    assert all(r.seconds >= 0.0 for r in records)
    assert abs(records[-1].change) < gm.tol
    assert all(abs(r.change) >= gm.tol for r in records[:-1])
    # The params passed after the last iteration are the fitted ones.
    last = calls[-1][1]
    assert isinstance(last, GaussianMixtureParams)
    assert np.array_equal(last.means, gm.means_)
    assert np.array_equal(last.precisions_cholesky, gm.precisions_cholesky_)


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_lower_bounds_history(fits, kind):
    gm = fits[kind]
    assert len(gm.lower_bounds_) == gm.n_iter_
    assert gm.lower_bounds_[-1] == gm.lower_bound_
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_max_iter_zero_warns_nothing_and_has_no_history(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        gm = _estimator(max_iter=0).fit(data["numpy"])
    assert gm.n_iter_ == 0
    assert gm.lower_bounds_ == []
    assert gm.lower_bound_ == -np.inf
    assert gm.converged_ is False


def test_convergence_warning_when_max_iter_reached(data):
    with pytest.warns(ConvergenceWarning, match=re.escape("Best performing initialization did not converge.")):
        gm = _estimator(max_iter=1).fit(data["numpy"])
    assert gm.n_iter_ == 1
    assert gm.converged_ is False


# -- save / load -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(fits, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.zarr"
    fits["numpy"].save(path)
    return path


def test_save_load_round_trip(fits, saved, data):
    gm = fits["numpy"]
    loaded = daskem.load(saved)
    assert type(loaded) is GaussianMixture
    for attr in PARAM_ATTRS:
        value = getattr(loaded, attr)
        assert type(value) is np.ndarray
        assert np.array_equal(value, getattr(gm, attr)), attr
    assert loaded.get_params() == gm.get_params()
    assert loaded.converged_ is gm.converged_
    assert loaded.n_iter_ == gm.n_iter_
    assert loaded.lower_bound_ == gm.lower_bound_
    assert loaded.lower_bounds_ == gm.lower_bounds_
    assert loaded.n_features_in_ == gm.n_features_in_
    assert np.array_equal(loaded.predict(data["numpy"]), gm.predict(data["numpy"]))
    assert np.array_equal(loaded.predict_proba(data["zarr"]).compute(), gm.predict_proba(data["numpy"]))
    assert np.array_equal(loaded.score_samples(data["numpy"]), gm.score_samples(data["numpy"]))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_save_load_every_covariance_type(blobs, tmp_path, covariance_type):
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0, means_init=blobs[:2]).fit(blobs)
    gm.save(tmp_path / "m.zarr")
    loaded = daskem.load(str(tmp_path / "m.zarr"))
    for attr in PARAM_ATTRS:
        assert np.array_equal(getattr(loaded, attr), getattr(gm, attr)), attr
    # An array hyperparameter comes back with the same values (stored as a JSON list).
    assert np.array_equal(loaded.means_init, blobs[:2])
    assert np.array_equal(loaded.predict(blobs), gm.predict(blobs))


def test_model_group_has_no_pickle(saved):
    group = zarr.open_group(str(saved), mode="r")
    arrays = dict(group.arrays())
    assert set(arrays) == {"weights", "means", "covariances", "precisions_cholesky"}
    assert all(np.dtype(a.dtype) == np.float64 for a in arrays.values())
    meta = group.attrs["daskem"]
    assert meta["format"] == 1
    assert meta["kind"] == "GaussianMixture"
    assert meta["version"] == daskem.__version__
    assert json.loads(json.dumps(meta)) == meta
    # Every metadata document on disk is plain JSON with only numeric dtypes and byte codecs.
    documents = sorted(saved.rglob("zarr.json"))
    assert len(documents) == 5
    for document in documents:
        node = json.loads(document.read_text())
        assert node["zarr_format"] == 3
        if node["node_type"] == "array":
            assert node["data_type"] == "float64"
            assert {c["name"] for c in node["codecs"]} <= {"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose"}
    blob = b"".join(p.read_bytes() for p in saved.rglob("*") if p.is_file())
    assert b"pickle" not in blob.lower()


def test_load_refuses_unknown_format_version(fits, tmp_path):
    path = tmp_path / "future.zarr"
    fits["numpy"].save(path)
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["daskem"] = {**group.attrs["daskem"], "format": 99}
    message = f"{str(path)!r} uses daskem model format 99; this daskem reads format 1. Upgrade daskem to read it."
    with pytest.raises(StoreError, match=re.escape(message)):
        daskem.load(path)


def test_load_refuses_a_plain_array(mixture_zarr):
    with pytest.raises(StoreError, match=re.escape(f"{mixture_zarr!r} is a Zarr array, not a daskem model group.")):
        daskem.load(mixture_zarr)


def test_load_refuses_a_group_that_is_not_a_model(tmp_path):
    path = str(tmp_path / "other.zarr")
    zarr.open_group(path, mode="w").attrs["something"] = 1
    with pytest.raises(StoreError, match=re.escape(f"{path!r} is a Zarr group but not a daskem model")):
        daskem.load(path)


def test_load_missing_path(tmp_path):
    path = str(tmp_path / "nope.zarr")
    with pytest.raises(StoreError, match=re.escape(f"No daskem model found at {path!r}: the path does not exist.")):
        daskem.load(path)


def test_load_refuses_non_float_array(fits, tmp_path):
    path = tmp_path / "ints.zarr"
    fits["numpy"].save(path)
    group = zarr.open_group(str(path), mode="r+")
    group.create_array("extra", shape=(2,), dtype="int64")
    with pytest.raises(StoreError, match=re.escape("array 'extra' has dtype int64; daskem stores float64 only.")):
        daskem.load(path)


def test_load_refuses_unknown_kind(fits, tmp_path):
    path = tmp_path / "kind.zarr"
    fits["numpy"].save(path)
    group = zarr.open_group(str(path), mode="r+")
    group.attrs["daskem"] = {**group.attrs["daskem"], "kind": "Birch"}
    with pytest.raises(StoreError, match=re.escape("holds a model of kind 'Birch', which this daskem cannot load.")):
        daskem.load(path)
