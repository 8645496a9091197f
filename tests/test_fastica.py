"""daskem.FastICA against scikit-learn's FastICA, iteration by iteration and at convergence.

(a) From the same whitening and ``w_init``, each iteration equals scikit-learn's
``_ica_par`` / ``_ica_def`` run for as many iterations on daskem's whitened rows (1e-10),
for the three named functions and a callable; (b) the converged ``components_``,
``mixing_``, ``mean_``, ``whitening_`` and ``n_iter_`` equal scikit-learn's FastICA fitted
with the same ``w_init`` (1e-8), for both algorithms, the three ``whiten`` settings and
the three functions; (c) chunking and ``split_every`` change nothing beyond rounding
(1e-12); (d) NumPy, dask and Zarr inputs give the same fit; (e) a checkpointed fit
interrupted and resumed equals the uninterrupted one bitwise; (f) bad parameters are
refused naming the value; (g) the model contract (:class:`daskem.testing.ModelContract`).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.decomposition import FastICA as SKFastICA
from sklearn.decomposition._fastica import _cube, _exp, _ica_def, _ica_par, _logcosh
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import FastICA
from daskem.em.driver import fit_em
from daskem.em.init import data_moments
from daskem.em.monitor import LikelihoodDecreaseWarning
from daskem.models.ica import FastICAModel, whitening
from daskem.testing import ModelContract
from daskem.testing.contract import _row_chunks

N, D, Q = 2000, 4, 3
CHUNK_ROWS = 500
silence_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def cube_callable(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's own test's callable ``g``."""
    return x**3, (3 * x**2).mean(axis=-1)


SK_FUNS = {"logcosh": _logcosh, "exp": _exp, "cube": _cube}


def rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    """Three non-Gaussian sources (Laplace, uniform, bimodal) mixed into four features, off the origin."""
    rng = np.random.default_rng(3)
    sources = np.c_[
        rng.laplace(size=N),
        rng.uniform(-1.7, 1.7, N),
        rng.normal(size=N) * 0.3 + rng.choice([-1.0, 1.0], N),
    ]
    return sources @ rng.normal(size=(Q, D)) + 0.05 * rng.normal(size=(N, D)) + 10.0


@pytest.fixture(scope="module")
def white(X: np.ndarray) -> np.ndarray:
    """``X`` whitened (what ``whiten=False`` expects)."""
    centred = X - X.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / N)
    return centred @ vectors / np.sqrt(values)


@pytest.fixture(scope="module")
def w_init() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(D, D))


# -- (a) every iteration is scikit-learn's ---------------------------------------------------------


@silence_convergence
@pytest.mark.parametrize("fun", ["logcosh", "exp", "cube", "callable"])
def test_each_parallel_iteration_is_scikit_learns(X: np.ndarray, w_init: np.ndarray, fun: str) -> None:
    g = cube_callable if fun == "callable" else fun
    start = w_init[:Q, :Q]
    seen: list[np.ndarray] = []
    est = FastICA(Q, whiten="arbitrary-variance", fun=g, max_iter=3, tol=0.0, w_init=start)
    est.fit(X, callback=lambda record, params: seen.append(params.unmixing.copy()))
    # scikit-learn's iterations on daskem's whitened rows.
    rows = np.sqrt(N) * est.whitening_ @ (X - est.mean_).T
    sk_g = (lambda x, args: cube_callable(x)) if fun == "callable" else SK_FUNS[fun]
    for iterations, unmixing in enumerate(seen, start=1):
        expected, _ = _ica_par(rows, tol=0.0, g=sk_g, fun_args={}, max_iter=iterations, w_init=start)
        assert rel(unmixing, expected) < 1e-10, iterations
    assert len(seen) == 3


@pytest.mark.parametrize(("fun", "iterations"), [("logcosh", 1), ("exp", 2), ("cube", 3), ("callable", 2)])
def test_deflation_iterations_are_scikit_learns(X: np.ndarray, w_init: np.ndarray, fun: str, iterations: int) -> None:
    g = cube_callable if fun == "callable" else fun
    start = w_init[:Q, :Q]
    est = FastICA(Q, algorithm="deflation", whiten="arbitrary-variance", fun=g, max_iter=iterations, tol=0.0)
    est.set_params(w_init=start).fit(X)
    rows = np.sqrt(N) * est.whitening_ @ (X - est.mean_).T
    sk_g = (lambda x, args: cube_callable(x)) if fun == "callable" else SK_FUNS[fun]
    expected, n_iter = _ica_def(rows, tol=0.0, g=sk_g, fun_args={}, max_iter=iterations, w_init=start)
    assert rel(est._unmixing, expected) < 1e-10
    assert est.n_iter_ == n_iter == iterations
    assert len(est.lower_bounds_) == Q * iterations  # one pass per iteration of each component


# -- (b) the converged fit is scikit-learn's ------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "whiten", "fun"),
    list(itertools.product(["parallel", "deflation"], ["unit-variance", "arbitrary-variance", False], SK_FUNS)),
)
def test_converged_fit_is_scikit_learns(
    X: np.ndarray, white: np.ndarray, w_init: np.ndarray, algorithm: str, whiten: Any, fun: str
) -> None:
    data, q = (X, Q) if whiten else (white, D)
    kw = {"algorithm": algorithm, "whiten": whiten, "fun": fun, "tol": 1e-6, "max_iter": 400, "random_state": 0}
    kw["n_components"] = q if whiten else None
    kw["w_init"] = w_init[:q, :q]
    for solver in ("eigh", "svd"):
        ours = FastICA(**kw, whiten_solver=solver).fit(data)
        theirs = SKFastICA(**kw, whiten_solver=solver).fit(data)
        assert ours.converged_
        assert ours.n_iter_ == theirs.n_iter_
        names = ["components_", "mixing_"] + (["mean_", "whitening_"] if whiten else [])
        for name in names:
            assert rel(getattr(ours, name), getattr(theirs, name)) < 1e-8, (solver, name)
        assert hasattr(ours, "mean_") == bool(whiten)
        assert rel(ours.transform(data), theirs.transform(data)) < 1e-8


def test_random_state_draws_scikit_learns_start(X: np.ndarray) -> None:
    ours = FastICA(Q, random_state=np.random.RandomState(5)).fit(X)
    theirs = SKFastICA(Q, random_state=np.random.RandomState(5)).fit(X)
    assert rel(ours.components_, theirs.components_) < 1e-8
    assert ours.n_passes_ == 1 + ours.n_iter_  # the moments, then one pass per iteration
    assert ours.get_feature_names_out().tolist() == theirs.get_feature_names_out().tolist()
    assert rel(ours.inverse_transform(ours.transform(X)), theirs.inverse_transform(theirs.transform(X))) < 1e-8


def test_float32_data_give_float32_results_computed_in_float64(X: np.ndarray) -> None:
    single = FastICA(Q, random_state=0).fit(X.astype(np.float32))
    double = FastICA(Q, random_state=0).fit(X.astype(np.float32).astype(np.float64))
    for name in ("components_", "mixing_", "mean_", "whitening_"):
        assert getattr(single, name).dtype == np.float32, name
        assert np.array_equal(getattr(single, name), getattr(double, name).astype(np.float32)), name
    sources = single.transform(X.astype(np.float32))
    assert sources.dtype == np.float32
    assert single.inverse_transform(sources).dtype == np.float32


# -- (c), (d) chunking, fan-in and input kinds ------------------------------------------------------


@silence_convergence
@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
def test_chunking_and_split_every_change_nothing(X: np.ndarray, w_init: np.ndarray, algorithm: str) -> None:
    kw = {"n_components": Q, "algorithm": algorithm, "tol": 0.0, "max_iter": 6, "w_init": w_init[:Q, :Q]}
    reference = FastICA(**kw).fit(X)
    # Regular blocks; a one-row block, an empty one and a ragged rest.
    chunkings = [(CHUNK_ROWS,) * (N // CHUNK_ROWS), (1, 0, 13, *(331,) * 6)]
    for chunks, split_every in itertools.product(chunkings, (2, 3, 8)):
        fitted = FastICA(**kw, split_every=split_every).fit(da.from_array(X, chunks=(chunks, D)))
        for name in ("components_", "mixing_", "mean_", "whitening_"):
            assert rel(getattr(fitted, name), getattr(reference, name)) < 1e-12, (chunks, split_every, name)
        assert fitted.n_iter_ == reference.n_iter_


@pytest.fixture(scope="module")
def X_zarr(tmp_path_factory: pytest.TempPathFactory, X: np.ndarray) -> str:
    path = str(tmp_path_factory.mktemp("fastica") / "X.zarr")
    target = zarr.create_array(store=path, shape=X.shape, chunks=(CHUNK_ROWS, D), dtype="float64")
    target[...] = X
    return path


def test_numpy_dask_and_zarr_inputs_give_the_same_fit(X: np.ndarray, X_zarr: str) -> None:
    kw = {"n_components": Q, "random_state": 0, "split_every": 3}
    in_memory = FastICA(**kw).fit(X)
    lazy = FastICA(**kw).fit(da.from_array(X, chunks=(CHUNK_ROWS, D)))
    on_disk = FastICA(**kw).fit(X_zarr)
    for name in ("components_", "mixing_", "mean_", "whitening_"):
        assert np.array_equal(getattr(on_disk, name), getattr(lazy, name)), name
        assert rel(getattr(in_memory, name), getattr(lazy, name)) < 1e-10, name
    assert on_disk.lower_bounds_ == lazy.lower_bounds_
    sources = on_disk.transform(X_zarr)
    assert isinstance(sources, da.Array)
    assert rel(sources.compute(), in_memory.transform(X)) < 1e-10
    back = on_disk.inverse_transform(sources)
    assert isinstance(back, da.Array)
    assert rel(back.compute(), in_memory.inverse_transform(in_memory.transform(X))) < 1e-10


# -- (e) checkpoints ------------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised by a callback to stop a fit after a committed iteration."""


def stop_after(n: int) -> Any:
    def callback(record: Any, params: Any) -> None:
        if record.iteration == n:
            raise Interrupted

    return callback


@silence_convergence
@pytest.mark.parametrize("algorithm", ["parallel", "deflation"])
def test_resumed_fit_equals_the_uninterrupted_fit_bitwise(X_zarr: str, tmp_path: Any, algorithm: str) -> None:
    kw = {"n_components": Q, "algorithm": algorithm, "tol": 0.0, "max_iter": 4, "random_state": 0, "split_every": 2}
    expected = FastICA(**kw).fit(X_zarr)
    path = str(tmp_path / "fit.zarr")
    with pytest.raises(Interrupted):
        FastICA(**kw, checkpoint=path).fit(X_zarr, callback=stop_after(3))
    resumed = FastICA(**kw, checkpoint=path).fit(X_zarr)
    expected.save(tmp_path / "model.zarr")
    for fitted in (resumed, daskem.load(path), daskem.load(tmp_path / "model.zarr")):
        for name in ("components_", "mixing_", "mean_", "whitening_", "_unmixing"):
            assert getattr(fitted, name).tobytes() == getattr(expected, name).tobytes(), name
        assert fitted.lower_bounds_ == expected.lower_bounds_
        assert fitted.n_iter_ == expected.n_iter_ == 4


def test_callable_fun_is_not_checkpointed(X: np.ndarray, tmp_path: Any) -> None:
    with pytest.raises(daskem.ParameterError, match="callable, which a checkpoint or model file cannot store"):
        FastICA(Q, fun=cube_callable, checkpoint=str(tmp_path / "fit.zarr")).fit(X)


# -- (f) errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"algorithm": "fast"}, r"The 'algorithm' parameter of FastICA must be a str among .* Got 'fast' instead"),
        ({"whiten": True}, r"The 'whiten' parameter of FastICA must be .* or False. Got True instead"),
        ({"whiten": "unit"}, r"The 'whiten' parameter .* Got 'unit' instead"),
        ({"fun": "tanh"}, r"The 'fun' parameter of FastICA must be .* or a callable. Got 'tanh' instead"),
        ({"fun_args": [1]}, r"The 'fun_args' parameter .* Got \[1\] instead"),
        ({"fun_args": {"alpha": 3}}, r"alpha must be in \[1,2\]"),
        ({"max_iter": 0}, r"The 'max_iter' parameter of FastICA must be an int in the range \[1, inf\). Got 0"),
        ({"tol": -1.0}, r"The 'tol' parameter of FastICA must be a float in the range \[0.0, inf\). Got -1.0"),
        ({"n_components": 0}, r"The 'n_components' parameter .* Got 0 instead"),
        ({"whiten_solver": "qr"}, r"The 'whiten_solver' parameter .* Got 'qr' instead"),
        ({"w_init": np.eye(2)}, r"w_init has invalid shape -- should be \(3, 3\)"),
        ({"fun": np.tanh}, r"fun=callable numpy.tanh must return a tuple"),
        ({"fun": lambda x: (x, 1.0)}, r"returned shapes \(3, \d+\) and \(\) for projections of shape \(3, \d+\)"),
    ],
)
def test_bad_parameters_are_refused_naming_the_value(X: np.ndarray, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FastICA(**{"n_components": Q, **params}).fit(X)


def test_too_few_rows_and_too_many_components(X: np.ndarray) -> None:
    with pytest.raises(ValueError, match="Found array with 1 sample"):
        FastICA().fit(X[:1])
    with pytest.warns(UserWarning, match="n_components is too large: it will be set to 4"):
        assert FastICA(9, random_state=0).fit(X).components_.shape == (D, D)


# -- (g) the model contract -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.c_[rng.laplace(size=400), rng.uniform(-2, 2, 400), rng.normal(size=400)] @ rng.normal(size=(3, 3))


@pytest.fixture(scope="module", params=["parallel-logcosh", "deflation-cube"])
def model(request: pytest.FixtureRequest) -> FastICAModel:
    algorithm, fun = request.param.split("-")
    deflation = algorithm == "deflation"
    return FastICAModel(algorithm, fun, (), "unit-variance", 1e-12 if deflation else None, 8 if deflation else None)


@pytest.fixture(scope="module")
def params(model: FastICAModel, data: np.ndarray) -> Any:
    mean, covariance = data_moments(data)
    k, whitened = whitening(covariance * (data.shape[0] - 1), 3, "eigh")
    start = np.random.default_rng(2).normal(size=(3, 3))
    return model.initial_params(start, k, mean, np.sqrt(data.shape[0]), whitened)


class TestFastICAContract(ModelContract):
    """The contract's laws for FastICA's fixed-point iteration (its objective is not monotone)."""

    def fit(self, model: Any, params: Any, data: np.ndarray, chunking: str, split_every: int, max_iter: int) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LikelihoodDecreaseWarning)  # the objective is not monotone
            return fit_em(
                model,
                da.from_array(data, chunks=(_row_chunks(chunking, data.shape[0]), data.shape[1])),
                params,
                max_iter=max_iter,
                tol=0.0,
                split_every=split_every,
            )

    def test_log_likelihood_never_decreases(self, model: Any, params: Any, data: np.ndarray) -> None:
        pytest.skip("FastICA maximises no likelihood and is no ascent method: its objective is not monotone")


def test_no_convergence_warns_as_scikit_learn(X: np.ndarray) -> None:
    with pytest.warns(ConvergenceWarning, match="FastICA did not converge"):
        FastICA(Q, max_iter=2, tol=0.0, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # deflation does not warn (scikit-learn's)
        FastICA(Q, algorithm="deflation", max_iter=2, tol=0.0, random_state=0).fit(X)
