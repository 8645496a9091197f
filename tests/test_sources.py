"""Every data source daskem reads, fitted against the same fit on the equivalent NumPy array.

Sources: NumPy, dask arrays (regular, ragged, zero-length chunks), Zarr (path, ``file://``
and ``memory://`` URLs, open array, array inside a group), xarray (DataArray, Dataset
variable, NetCDF file), Parquet (file, directory, glob, column selection), CSV (file,
glob), HDF5 datasets and dask DataFrames. Every fit starts from the same given initial
parameters (no sampling), so a source must reproduce the NumPy fit to 1e-10 relative.

Also: the errors naming what to pass, features split across chunks, the caching policy,
float32 data, chunk-size guidance and ``--chunk-rows``, and the CLI on files (fit and
resume).
"""

from __future__ import annotations

import logging
import uuid
import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import DataError, GaussianMixture, GaussianMixtureModel, as_source, fit_em
from daskem.em.monitor import LikelihoodDecreaseWarning
from daskem.em.session import ComputeResources, check_chunking, should_cache
from daskem.io.sources import ChunkSizeWarning, DataSource
from daskem.testing import make_mixture_array
from daskem.testing.cli import invoke_cli as daskem_cli

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # dask's Parquet reader, not daskem.
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

N, D, K = 6000, 3, 3
MAX_ITER = 8
RTOL = 1e-10
COLUMNS = ["a", "b", "c"]
ATTRS = ("weights_", "means_", "covariances_")

# A machine with room for anything these tests read.
BIG = ComputeResources(memory=64 * 2**30, threads=8, thread_memory=8 * 2**30)


# -- data and reference fits -------------------------------------------------------------


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    values, _ = make_mixture_array(N, D, K, seed=11, chunk_rows=1500)
    return np.asarray(values.compute())


def inits(X: np.ndarray, columns: list[int] | None = None) -> dict[str, np.ndarray]:
    """Fixed initial parameters: no sampling, so every source starts from the same point."""
    cols = list(range(X.shape[1])) if columns is None else columns
    d = len(cols)
    rows = X[[10, N // 2 + 7, N - 5]][:, cols]
    return {
        "weights_init": np.array([0.3, 0.3, 0.4]),
        "means_init": rows + 0.25,
        "precisions_init": np.stack([np.eye(d) * s for s in (0.5, 1.0, 2.0)]),
    }


def estimator(X: np.ndarray, columns: list[int] | None = None, **kwargs) -> GaussianMixture:
    params = {"n_components": K, "max_iter": MAX_ITER, "tol": 0.0, "random_state": 0, **kwargs}
    return GaussianMixture(**params, **inits(X, columns))


def assert_close(actual, expected, rtol: float = RTOL, what: str = "") -> None:
    """Equal to ``rtol`` relative to the magnitude of ``expected`` (elementwise near zero)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_same_fit(est: GaussianMixture, ref: GaussianMixture, rtol: float = RTOL) -> None:
    assert est.n_iter_ == ref.n_iter_ == MAX_ITER
    for attr in ATTRS:
        assert_close(getattr(est, attr), getattr(ref, attr), rtol, attr)
    assert_close(est.lower_bound_, ref.lower_bound_, rtol, "lower_bound_")
    assert_close(est.lower_bounds_, ref.lower_bounds_, rtol, "lower_bounds_")


def assert_bitwise(est: GaussianMixture, ref: GaussianMixture) -> None:
    for attr in (*ATTRS, "precisions_cholesky_"):
        assert np.array_equal(getattr(est, attr), getattr(ref, attr)), attr
    assert est.lower_bounds_ == ref.lower_bounds_


@pytest.fixture(scope="module")
def reference(X) -> GaussianMixture:
    return estimator(X).fit(X)


@pytest.fixture(scope="module")
def reference_ac(X) -> GaussianMixture:
    """The NumPy fit on columns a and c only."""
    return estimator(X, [0, 2]).fit(X[:, [0, 2]])


# -- files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame(X) -> pd.DataFrame:
    df = pd.DataFrame(X, columns=COLUMNS)
    df["label"] = np.where(X[:, 0] > 0, "pos", "neg")  # non-numeric: dropped by default
    return df


@pytest.fixture(scope="module")
def files(tmp_path_factory, X, frame) -> dict[str, str]:
    """Every file format, written once for the module."""
    import h5py
    import xarray as xr

    root = tmp_path_factory.mktemp("sources")
    paths: dict[str, str] = {}

    paths["zarr"] = str(root / "x.zarr")
    zarr.create_array(paths["zarr"], shape=X.shape, chunks=(1000, D), dtype="float64")[...] = X
    paths["group"] = str(root / "group.zarr")
    group = zarr.open_group(paths["group"], mode="w")
    group.create_array("inner/x", shape=X.shape, chunks=(2000, D), dtype="float64")[...] = X

    paths["parquet"] = str(root / "data.parquet")
    frame.to_parquet(paths["parquet"], index=False)
    pq_dir = root / "pq_dir"
    pq_dir.mkdir()
    for i, part in enumerate(np.array_split(np.arange(N), 3)):
        frame.iloc[part].to_parquet(pq_dir / f"part-{i}.parquet", index=False)
    paths["parquet_dir"] = str(pq_dir)
    paths["parquet_glob"] = str(pq_dir / "*.parquet")

    paths["csv"] = str(root / "data.csv")
    frame.to_csv(paths["csv"], index=False)
    csv_dir = root / "csv_dir"
    csv_dir.mkdir()
    for i, part in enumerate(np.array_split(np.arange(N), 4)):
        frame.iloc[part].to_csv(csv_dir / f"part-{i}.csv", index=False)
    paths["csv_glob"] = str(csv_dir / "part-*.csv")
    paths["csv_text"] = str(root / "text.csv")
    pd.DataFrame({"name": ["x", "y", "z"], "kind": ["p", "q", "r"]}).to_csv(paths["csv_text"], index=False)

    paths["hdf5"] = str(root / "data.h5")
    with h5py.File(paths["hdf5"], "w") as f:
        f.create_dataset("group/x", data=X, chunks=(1000, D))
        f.create_dataset("other", data=np.arange(4.0))

    paths["netcdf"] = str(root / "data.nc")
    dataset(X).to_netcdf(paths["netcdf"])
    assert isinstance(xr.open_dataset(paths["netcdf"])["x"], xr.DataArray)
    return paths


def dataset(X: np.ndarray):
    import xarray as xr

    return xr.Dataset(
        {
            "x": (("row", "feature"), X),
            "t": (("row",), np.arange(N, dtype=np.float64)),
        }
    )


@pytest.fixture
def memory_zarr(X):
    """A Zarr array written through fsspec's in-memory filesystem; its ``memory://`` URL."""
    import fsspec

    url = f"memory://daskem-tests/{uuid.uuid4().hex}/x.zarr"
    array = zarr.open_array(url, mode="w", shape=X.shape, chunks=(1500, D), dtype="float64")
    array[...] = X
    yield url
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def ragged(X: np.ndarray) -> da.Array:
    return da.from_array(X, chunks=((1000, 37, 2500, 1, 2462), (D,)))


def with_empty_chunks(X: np.ndarray) -> da.Array:
    """Zero-length row chunks at the start, middle and end (``da.concatenate`` drops empty arrays)."""
    array = da.from_array(X, chunks=((0, 700, 700, 600, 0, 1500, 1500, 1000, 0), (D,)))
    assert array.chunks[0].count(0) == 3
    return array


def dask_frame(frame: pd.DataFrame):
    import dask.dataframe as dd

    return dd.from_pandas(frame, npartitions=4)


#: name -> (build(files, X, frame, memory_url) -> what to fit, expected kind, column subset or None)
SOURCES = {
    "numpy": (lambda f, X, fr, m: X, "numpy", None),
    "dask": (lambda f, X, fr, m: da.from_array(X, chunks=(1000, D)), "dask", None),
    "dask-ragged": (lambda f, X, fr, m: ragged(X), "dask", None),
    "dask-empty-chunks": (lambda f, X, fr, m: with_empty_chunks(X), "dask", None),
    "zarr-path": (lambda f, X, fr, m: f["zarr"], "zarr", None),
    "zarr-file-url": (lambda f, X, fr, m: "file://" + f["zarr"], "zarr", None),
    "zarr-memory-url": (lambda f, X, fr, m: m, "zarr", None),
    "zarr-open-array": (lambda f, X, fr, m: zarr.open_array(f["zarr"], mode="r"), "zarr", None),
    "zarr-group-variable": (lambda f, X, fr, m: as_source(f["group"], variable="inner/x"), "zarr", None),
    "xarray-numpy": (lambda f, X, fr, m: dataset(X)["x"], "xarray", None),
    "xarray-dask": (lambda f, X, fr, m: dataset(X)["x"].chunk({"row": 1300}), "xarray", None),
    "xarray-dataset": (lambda f, X, fr, m: as_source(dataset(X), variable="x"), "xarray", None),
    "netcdf": (lambda f, X, fr, m: as_source(f["netcdf"], variable="x"), "netcdf", None),
    "parquet": (lambda f, X, fr, m: f["parquet"], "parquet", None),
    "parquet-dir": (lambda f, X, fr, m: f["parquet_dir"], "parquet", None),
    "parquet-glob": (lambda f, X, fr, m: f["parquet_glob"], "parquet", None),
    "parquet-columns": (lambda f, X, fr, m: as_source(f["parquet"], columns=["a", "c"]), "parquet", [0, 2]),
    "csv": (lambda f, X, fr, m: f["csv"], "csv", None),
    "csv-glob": (lambda f, X, fr, m: f["csv_glob"], "csv", None),
    "csv-columns": (lambda f, X, fr, m: as_source(f["csv_glob"], columns=["a", "c"]), "csv", [0, 2]),
    "hdf5": (lambda f, X, fr, m: as_source(f["hdf5"], dataset="/group/x"), "hdf5", None),
    "dask-dataframe": (lambda f, X, fr, m: dask_frame(fr), "dask", None),
    "dask-dataframe-columns": (
        lambda f, X, fr, m: as_source(dask_frame(fr), columns=["a", "c"]),
        "dask",
        [0, 2],
    ),
}


@pytest.fixture
def build(files, X, frame, request):
    def make(name: str):
        memory = request.getfixturevalue("memory_zarr") if name == "zarr-memory-url" else None
        builder, kind, columns = SOURCES[name]
        return builder(files, X, frame, memory), kind, columns

    return make


@pytest.mark.parametrize("name", list(SOURCES))
def test_estimator_fit_of_every_source_equals_the_numpy_fit(name, build, X, reference, reference_ac):
    data, kind, columns = build(name)
    source = as_source(data)
    assert source.kind == kind
    assert source.array.shape == (N, D if columns is None else len(columns))
    assert source.array.dtype == np.float64
    assert len(source.array.chunks[1]) == 1
    est = estimator(X, columns).fit(data)
    assert_same_fit(est, reference if columns is None else reference_ac)


def test_sources_hold_the_numpy_values(build, X):
    """Not only the fit: every source reads exactly the NumPy values (CSV round-trips floats)."""
    for name, (_, _, columns) in SOURCES.items():
        data, _, _ = build(name)
        expected = X if columns is None else X[:, columns]
        np.testing.assert_array_equal(as_source(data).array.compute(), expected, err_msg=name)


def test_filtered_rows_leave_empty_chunks_that_fit_like_numpy(X):
    keep = np.ones(N, dtype=bool)
    keep[1000:2000] = False  # the whole second block
    keep[::7] = False
    filtered = da.from_array(X, chunks=(1000, D))[da.from_array(keep, chunks=1000)]
    filtered.compute_chunk_sizes()
    assert filtered.chunks[0][1] == 0
    ref = estimator(X).fit(X[keep])
    assert_same_fit(estimator(X).fit(filtered), ref)


@pytest.mark.parametrize("name", ["dask-empty-chunks", "zarr-path", "parquet-glob", "csv", "hdf5", "netcdf"])
def test_fit_em_of_every_source_equals_the_numpy_fit(name, build, X):
    data, _, columns = build(name)
    model = GaussianMixtureModel(K)
    init = inits(X, columns)
    params = model.with_given(None, init["weights_init"], init["means_init"], init["precisions_init"])
    expected_data = X if columns is None else X[:, columns]
    ref = fit_em(model, expected_data, params, max_iter=MAX_ITER, tol=0.0)
    got = fit_em(model, data, params, max_iter=MAX_ITER, tol=0.0)
    assert got.n_iter == ref.n_iter == MAX_ITER
    assert got.n_samples == N
    for key, value in ref.params.to_arrays().items():
        assert_close(got.params.to_arrays()[key], value, what=key)
    assert_close(got.lower_bound, ref.lower_bound)
    assert_close([r.log_likelihood for r in got.history], [r.log_likelihood for r in ref.history])


def test_locations_and_options_are_recorded(files):
    source = as_source(files["parquet"], columns=["a", "c"], chunk_rows=1000)
    assert source.location == files["parquet"]
    assert source.options == {"columns": ["a", "c"], "chunk_rows": 1000}
    source = as_source(files["hdf5"], dataset="/group/x")
    assert (source.kind, source.location, source.options) == ("hdf5", files["hdf5"], {"dataset": "/group/x"})
    source = as_source(files["netcdf"], variable="x")
    assert (source.kind, source.options) == ("netcdf", {"variable": "x"})


def test_non_numeric_columns_are_dropped_by_default(files, frame):
    assert "label" in frame.columns
    for loc in (files["parquet"], files["csv"], files["parquet_dir"]):
        assert as_source(loc).n_features == D


def test_memory_url_with_storage_options(memory_zarr, X):
    source = as_source(memory_zarr, storage_options={})
    assert source.location == memory_zarr
    np.testing.assert_array_equal(source.array.compute(), X)


# -- clear errors ------------------------------------------------------------------------


def test_missing_column_lists_the_columns(files):
    for loc in (files["parquet"], files["csv"]):
        with pytest.raises(DataError, match=r"Columns \['zz'\] are not in") as err:
            as_source(loc, columns=["a", "zz"])
        assert "['a', 'b', 'c', 'label']" in str(err.value)
        assert "--columns" in str(err.value)


def test_missing_column_of_a_dask_dataframe_lists_the_columns(frame):
    with pytest.raises(DataError, match=r"Columns \['zz'\] are not in 'X'") as err:
        as_source(dask_frame(frame), columns=["zz", "b"])
    assert "['a', 'b', 'c', 'label']" in str(err.value)


def test_non_numeric_selected_column_is_rejected(files, frame):
    # "label" is a pandas StringDtype column, which is not a NumPy dtype.
    for data in (files["parquet"], files["csv"], dask_frame(frame)):
        with pytest.raises(DataError, match=r"Columns \['label'\] of .* are not numeric"):
            as_source(data, columns=["a", "label"])


def test_csv_without_numeric_columns(files):
    with pytest.raises(DataError, match="has no numeric columns") as err:
        as_source(files["csv_text"])
    assert "['name', 'kind']" in str(err.value)


def test_hdf5_needs_an_existing_dataset(files):
    with pytest.raises(DataError, match=r"name the dataset, dataset='/x' \(daskem fit --dataset /x\)"):
        as_source(files["hdf5"])
    with pytest.raises(DataError, match="has no dataset '/nope'") as err:
        as_source(files["hdf5"], dataset="/nope")
    assert "['/group/x', '/other']" in str(err.value)


def test_dataset_and_netcdf_need_a_variable(files, X):
    for data, where in ((dataset(X), "X is an xarray Dataset"), (files["netcdf"], "is an xarray Dataset")):
        with pytest.raises(DataError, match=where) as err:
            as_source(data)
        assert "['x', 't']" in str(err.value)
        assert "--variable" in str(err.value)
        with pytest.raises(DataError, match="has no variable 'y'") as err:
            as_source(data, variable="y")
        assert "['x', 't']" in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="Cannot read parquet data"):
        as_source(str(tmp_path / "nothing.parquet"))
    with pytest.raises(DataError, match="No HDF5 file"):
        as_source(str(tmp_path / "nothing.h5"), dataset="/x")


# -- features split across chunks --------------------------------------------------------


def test_features_split_across_chunks_are_rechunked_with_a_warning(X):
    split = da.from_array(X, chunks=(1000, 2))
    with pytest.warns(ChunkSizeWarning, match=r"split into 2 chunks along its 3 features") as record:
        source = as_source(split)
    assert ".rechunk({1: 3})" in str(record[0].message)
    assert source.array.chunks == ((1000,) * 6, (D,))
    with pytest.warns(ChunkSizeWarning, match=r"\.rechunk\(\{1: 3\}\)"):
        est = estimator(X).fit(split)
    assert_bitwise(est, estimator(X).fit(da.from_array(X, chunks=(1000, D))))


def test_zarr_split_across_features_warns(tmp_path, X):
    path = str(tmp_path / "split.zarr")
    zarr.create_array(path, shape=X.shape, chunks=(1500, 1), dtype="float64")[...] = X
    with pytest.warns(ChunkSizeWarning, match=r"\.rechunk\(\{1: 3\}\)"):
        est = estimator(X).fit(path)
    assert_bitwise(est, estimator(X).fit(da.from_array(X, chunks=(1500, D))))


# -- caching -----------------------------------------------------------------------------


def zarr_source(nbytes_rows: int = N) -> DataSource:
    return DataSource(da.zeros((nbytes_rows, D), chunks=(1000, D)), "zarr", "somewhere.zarr")


def test_should_cache_decisions():
    source = zarr_source()  # 144,000 bytes
    small = ComputeResources(memory=200_000, threads=2, thread_memory=100_000)
    large = ComputeResources(memory=10_000_000, threads=2, thread_memory=5_000_000)
    assert source.array.nbytes == N * D * 8
    assert should_cache(source, "auto", small) is False  # more than half the memory: stream
    assert should_cache(source, "auto", large) is True
    edge = ComputeResources(memory=2 * source.array.nbytes, threads=1, thread_memory=1.0)
    assert should_cache(source, "auto", edge) is True  # exactly half: cache
    assert should_cache(source, True, small) is True
    assert should_cache(source, False, large) is False
    numpy_source = as_source(np.zeros((10, 2)))
    assert should_cache(numpy_source, "auto", large) is False  # local threads already hold it
    assert should_cache(numpy_source, True, large) is True
    for bad in ("yes", "never", None, 1, 0):
        with pytest.raises(ValueError, match=r"cache must be 'auto', True or False"):
            should_cache(source, bad, large)


def test_cache_true_and_false_give_bitwise_equal_fits(files, X, caplog):
    caplog.set_level(logging.INFO, logger="daskem")
    cached = estimator(X, cache=True).fit(files["zarr"])
    messages = [r.getMessage() for r in caplog.records if r.name == "daskem"]
    assert any("cached once" in m and files["zarr"] in m for m in messages), messages
    caplog.clear()
    streamed = estimator(X, cache=False).fit(files["zarr"])
    messages = [r.getMessage() for r in caplog.records if r.name == "daskem"]
    assert any("streamed" in m and "6 blocks" in m for m in messages), messages
    assert not any("cached once" in m for m in messages)
    assert_bitwise(cached, streamed)
    caplog.clear()
    auto = estimator(X).fit(files["zarr"])  # 144 kB: cached on any machine
    assert any("cached once" in r.getMessage() for r in caplog.records)
    assert_bitwise(auto, cached)


def test_invalid_cache_value_is_rejected(X):
    with pytest.raises(ValueError, match="cache"):
        estimator(X, cache="sometimes").fit(X)
    model = GaussianMixtureModel(K)
    init = inits(X)
    params = model.with_given(None, init["weights_init"], init["means_init"], init["precisions_init"])
    with pytest.raises(ValueError, match=r"cache must be 'auto', True or False; got 'yes'"):
        fit_em(model, X, params, max_iter=1, cache="yes")


# -- float32 -----------------------------------------------------------------------------


def test_float32_block_gives_float64_statistics(X):
    model = GaussianMixtureModel(K)
    init = inits(X)
    params = model.with_given(None, init["weights_init"], init["means_init"], init["precisions_init"])
    block32 = X[:2000].astype(np.float32)
    stats32 = model.e_step(params, block32)
    stats64 = model.e_step(params, block32.astype(np.float64))
    for name in ("resp_sum", "first", "second", "shift"):
        assert getattr(stats32, name).dtype == np.float64, name
    assert isinstance(stats32.loglik, float)
    assert stats32.n == 2000.0
    # float32 arithmetic, float64 sums: close to the float64 E-step of the same values
    # (measured: ~3e-8 relative for the moments, ~4e-9 for the log-likelihood).
    assert_close(stats32.resp_sum, stats64.resp_sum, 1e-6)
    assert_close(stats32.first, stats64.first, 1e-6)
    assert_close(stats32.second, stats64.second, 1e-6)
    assert_close(stats32.loglik, stats64.loglik, 1e-7)


def test_float32_source_stays_float32(X, tmp_path):
    path = str(tmp_path / "x32.zarr")
    zarr.create_array(path, shape=X.shape, chunks=(1000, D), dtype="float32")[...] = X.astype(np.float32)
    assert as_source(path).array.dtype == np.float32
    assert as_source(X.astype(np.float32)).array.dtype == np.float32
    assert as_source(da.from_array(X.astype(np.float32))).array.dtype == np.float32


def test_float32_fit_agrees_with_float64_fit_of_the_same_values(X):
    X32 = X.astype(np.float32)
    X64 = X32.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit32 = estimator(X, max_iter=30).fit(da.from_array(X32, chunks=(1000, D)))
        fit64 = estimator(X, max_iter=30).fit(da.from_array(X64, chunks=(1000, D)))
    # float32 data give float32 attributes (scikit-learn's rule), rounded once from the
    # float64 parameters the fit computed.
    for attr in ATTRS:
        assert getattr(fit32, attr).dtype == np.float32
        assert getattr(fit64, attr).dtype == np.float64
    # Measured after 30 iterations: <= 4e-7 relative for the parameters, 3e-8 for the bound.
    for attr in ATTRS:
        assert_close(getattr(fit32, attr).astype(np.float64), getattr(fit64, attr), 5e-6, attr)
    assert_close(fit32.lower_bound_, fit64.lower_bound_, 1e-6)
    lls = np.asarray(fit32.lower_bounds_)
    assert len(lls) == 30
    assert np.all(np.diff(lls) >= -1e-5 * np.abs(lls[1:]))


# -- chunk-size guidance -----------------------------------------------------------------


def test_tiny_blocks_warn_with_the_chunk_size_to_use():
    source = as_source(da.zeros((10_000, D), chunks=(2, D)))
    assert len(source.array.chunks[0]) == 5000
    with pytest.warns(ChunkSizeWarning, match="5,000 blocks of about 2 rows") as record:
        check_chunking(source, BIG)
    message = str(record[0].message)
    # 16 MiB of float64 rows would be ~700k rows: capped at the 10,000 rows there are.
    assert "Use about 10,000 rows per block" in message
    assert "X.rechunk({0: 10000})" in message
    assert "--chunk-rows 10000" in message


def test_huge_block_warns_relative_to_thread_memory():
    source = as_source(da.zeros((N, D), chunks=(N, D)))
    small = ComputeResources(memory=1e6, threads=10, thread_memory=100_000)
    with pytest.warns(ChunkSizeWarning, match="blocks of up to 6,000 rows") as record:
        check_chunking(source, small, name="data")
    message = str(record[0].message)
    limit = int(100_000 / 8 // (8 * D))  # 520 rows: an eighth of a thread's memory
    assert f"Use at most {limit:,} rows per block" in message
    assert f"data.rechunk({{0: {limit}}})" in message
    assert f"--chunk-rows {limit}" in message


@pytest.mark.parametrize("chunks", [(1500, D), (N, D), ((1000, 0, 5000), (D,)), (100, D)])
def test_sensible_chunking_is_silent(chunks):
    source = as_source(da.zeros((N, D), chunks=chunks))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_chunking(source, BIG)


def test_fit_warns_about_tiny_blocks_when_streaming(X):
    tiny = da.from_array(X, chunks=(20, D))  # 300 blocks of 20 rows
    with pytest.warns(ChunkSizeWarning, match=r"--chunk-rows 6000"):
        fit_tiny = estimator(X, max_iter=2, cache=False).fit(tiny)
    assert fit_tiny.n_iter_ == 2


def test_cached_tiny_blocks_are_merged_without_a_warning(X):
    tiny = da.from_array(X, chunks=(20, D))  # 300 blocks of 20 rows, merged into one of 6000
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChunkSizeWarning)
        merged = estimator(X, max_iter=2, cache=True).fit(tiny)
    assert_bitwise(merged, estimator(X, max_iter=2).fit(da.from_array(X, chunks=(6000, D))))


@pytest.mark.parametrize("key", ["zarr", "parquet", "csv", "hdf5"])
def test_chunk_rows_rechunks_rows_like_an_explicit_rechunk(key, files, X):
    options = {"dataset": "/group/x"} if key == "hdf5" else {}
    source = as_source(files[key], chunk_rows=1000, **options)
    assert source.array.chunks == ((1000,) * 6, (D,))
    assert source.options["chunk_rows"] == 1000
    got = estimator(X).fit(source)
    expected = estimator(X).fit(da.from_array(X, chunks=(1000, D)))
    assert_bitwise(got, expected)
    odd = as_source(files[key], chunk_rows=1700, **options)
    assert odd.array.chunks[0] == (1700, 1700, 1700, 900)


# -- the CLI on files ----------------------------------------------------------------------


CLI_FIT = ["-k", K, "--max-iter", MAX_ITER, "--tol", 0, "--seed", 0, "--workers", 0, "-q"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "options", "kwargs"),
    [
        ("parquet", [], {}),
        ("csv_glob", ["--columns", "a,c"], {"columns": ["a", "c"]}),
        ("hdf5", ["--dataset", "/group/x"], {"dataset": "/group/x"}),
        ("netcdf", ["--variable", "x"], {"variable": "x"}),
        ("group", ["--variable", "inner/x", "--chunk-rows", 700], {"variable": "inner/x", "chunk_rows": 700}),
    ],
)
def test_cli_fit_equals_the_python_fit(key, options, kwargs, files, tmp_path):
    out = tmp_path / "MODEL.zarr"
    done = daskem_cli("fit", files[key], *CLI_FIT, *options, "-o", out)
    assert done.returncode == 0, done.stderr
    cli = daskem.load(out)
    python = GaussianMixture(n_components=K, max_iter=MAX_ITER, tol=0.0, random_state=0)
    python.fit(as_source(files[key], **kwargs))
    assert cli.n_features_in_ == (2 if "columns" in kwargs else D)
    assert cli.n_iter_ == python.n_iter_ == MAX_ITER
    assert_bitwise(cli, python)


@pytest.mark.slow
def test_cli_chunk_rows_is_stored_and_rechunks(files, tmp_path):
    import json

    from daskem.checkpoint.checkpoint import Checkpoint

    run = tmp_path / "RUN.zarr"
    done = daskem_cli("fit", files["parquet"], *CLI_FIT, "--chunk-rows", 1100, "--checkpoint", run)
    assert done.returncode == 0, done.stderr
    summary = json.loads(daskem_cli("inspect", run, "--json").stdout)
    assert summary["data"]["row_chunks"] == [[1100, 5], [500, 1]]
    meta = Checkpoint(run).metadata()
    assert meta["source"]["options"] == {"chunk_rows": 1100}


@pytest.mark.slow
def test_cli_resume_of_a_parquet_fit_with_columns(files, tmp_path):
    from daskem.checkpoint.checkpoint import Checkpoint

    run, out = tmp_path / "RUN.zarr", tmp_path / "M.zarr"
    common = ["-k", K, "--tol", 0, "--seed", 0, "--workers", 0, "-q"]
    first = daskem_cli("fit", files["parquet"], "--columns", "a,b", "--checkpoint", run, "--max-iter", 3, *common)
    assert first.returncode == 0, first.stderr
    meta = Checkpoint(run).metadata()
    assert meta["source"] == {"location": files["parquet"], "kind": "parquet", "options": {"columns": ["a", "b"]}}
    resumed = daskem_cli("resume", run, "--max-iter", 6, "--workers", 0, "-q", "-o", out)
    assert resumed.returncode == 0, resumed.stderr
    got = daskem.load(out)
    expected = GaussianMixture(n_components=K, max_iter=6, tol=0.0, random_state=0)
    expected.fit(as_source(files["parquet"], columns=["a", "b"]))
    assert got.n_iter_ == expected.n_iter_ == 6
    assert got.n_features_in_ == 2
    assert_bitwise(got, expected)
    assert got.lower_bound_ == expected.lower_bound_
