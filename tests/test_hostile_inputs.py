"""Hostile inputs: one table of degenerate, malformed or adversarial data and checkpoints.

Every row of :data:`CASES` is a hostile input: how to build it, the estimator call made
on it, and what must happen - either a given exception class with a pinned message
fragment (``match=re.escape(...)``), or a fit that succeeds and passes the row's checks
(finite parameters, agreement with scikit-learn or with the float fit, ...). Rows where
daskem misbehaves today are strict xfails whose reason names the bug.

Rows already covered for ``GaussianMixture`` by ``tests/test_errors.py`` are not
repeated here as they are there; the table holds the variants that are not covered (the
``KMeans`` ones, other initialisers, dask instead of NumPy, ...) and names the test that
covers the rest in a comment. Checkpoint rows also check that the failing call wrote
nothing over the good checkpoint.

Hypothesis properties close the file, for ``GaussianMixture`` and ``KMeans``: any small
array of any dtype, with NaN, +-inf and 1e-308 mixed in, either fits with finite parameters
or raises a :class:`daskem.DaskemError` whose message names the problem. With 1e308 and the
dtype's maximum mixed in too, the same property holds (values whose squares overflow are
refused with the advice to scale the features); its explicit ``@example`` is an input
Hypothesis once found that broke it (also a row of the table).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.array as da
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans as SklearnKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from daskem import DaskemError, DataError, GaussianMixture, KMeans, NumericalError, StoreError
from daskem.checkpoint import Checkpoint, CheckpointMismatchError, CorruptCheckpointWarning
from daskem.checkpoint.checkpoint import _digest
from daskem.em.monitor import LikelihoodDecreaseWarning

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

GMM_PARAMS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


# -- data ---------------------------------------------------------------------------------------


def _blobs(n: int = 2000, d: int = 3, seed: int = 0) -> np.ndarray:
    """Two well-separated Gaussian blobs, half the rows each."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[: n // 2] += 5.0
    return X


def _one_nonfinite(value: float, row: int, *, n: int = 2000, dtype: Any = np.float64) -> np.ndarray:
    X = _blobs(n).astype(dtype)
    X[row, 1] = value
    return X


def _twenty_chunks(X: np.ndarray) -> da.Array:
    """``X`` as a dask array of 20 row chunks."""
    return da.from_array(X, chunks=(X.shape[0] // 20, X.shape[1]))


def _constant(n: int = 100) -> np.ndarray:
    """Every column constant (so every row identical), at very different scales."""
    return np.tile([1e6, -3.0, 0.0], (n, 1))


def _identical_rows(n: int = 500) -> np.ndarray:
    """Every row the same point, with non-round coordinates."""
    return np.tile(np.random.default_rng(1).normal(size=3), (n, 1))


def _two_distinct_points() -> np.ndarray:
    return np.repeat(_blobs(2), 50, axis=0)


def _d1() -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.r_[rng.normal(0.0, 1.0, (300, 1)), rng.normal(5.0, 0.5, (200, 1))]


def _wide() -> np.ndarray:
    """300 rows x 2000 features, two clusters."""
    return _blobs(300, 2000, seed=3)


def _zero_length_chunks() -> da.Array:
    return da.from_array(_blobs(200), chunks=((0, 100, 0, 100), (3,)))


def _integers() -> np.ndarray:
    rng = np.random.default_rng(4)
    X = rng.integers(-5, 5, size=(400, 3))
    X[:200] += 20
    return X


def _one_far_outlier() -> np.ndarray:
    """99 rows of N(0, 1) and one row at 1e5 (d=1)."""
    return np.r_[np.random.default_rng(5).normal(0.0, 1.0, (99, 1)), [[1e5]]]


#: The outlier row's own component: a start that isolates it (covariance -> reg_covar).
OUTLIER_START = {
    "weights_init": [0.99, 0.01],
    "means_init": [[0.0], [1e5]],
    "precisions_init": np.ones((2, 1, 1)),
    "max_iter": 5,
    "tol": 0.0,
}


def _two_clusters_far_apart() -> np.ndarray:
    """Two unit-variance clusters of 200 rows, 1e6 apart in both features."""
    rng = np.random.default_rng(6)
    return np.r_[rng.normal(0.0, 1.0, (200, 2)), rng.normal(1e6, 1.0, (200, 2))]


FAR_APART_START = {
    "weights_init": [0.5, 0.5],
    "means_init": [[0.0, 0.0], [1e6, 1e6]],
    "precisions_init": np.tile(np.eye(2), (2, 1, 1)),
    "max_iter": 5,
    "tol": 0.0,
}


def _finite_pm_1e308() -> np.ndarray:
    """Finite data, half the rows at +1e308 and half at -1e308: differences overflow float64."""
    X = np.full((22, 4), 1e308)
    X[:11] = -1e308
    return X


# -- estimator calls ----------------------------------------------------------------------------


def gm(**params: Any) -> Callable[[Any], GaussianMixture]:
    """The call ``GaussianMixture(n_components=2, random_state=0, **params).fit(X)``."""
    params = {"n_components": 2, "random_state": 0, **params}
    return lambda X: GaussianMixture(**params).fit(X)


def km(**params: Any) -> Callable[[Any], KMeans]:
    """The call ``KMeans(n_clusters=2, random_state=0, **params).fit(X)``."""
    params = {"n_clusters": 2, "random_state": 0, **params}
    return lambda X: KMeans(**params).fit(X)


# -- checks run on a successful fit ------------------------------------------------------------


def finite_gmm(ctx: Any, est: GaussianMixture) -> None:
    for name in GMM_PARAMS:
        assert np.all(np.isfinite(getattr(est, name))), name
    np.testing.assert_allclose(est.weights_.sum(), 1.0, rtol=1e-12)


def finite_kmeans(ctx: Any, est: KMeans) -> None:
    assert np.all(np.isfinite(est.cluster_centers_))
    assert np.isfinite(est.inertia_)


def gmm_collapsed_on(point: np.ndarray, reg_covar: float = 1e-6) -> Callable[[Any, GaussianMixture], None]:
    """Every component sits on ``point`` with covariance ``reg_covar`` (data of one distinct row)."""

    def check(ctx: Any, est: GaussianMixture) -> None:
        finite_gmm(ctx, est)
        # The float64 parameters the fit computed (the attributes are them in X's dtype:
        # float32 data give float32 attributes, as scikit-learn's, so compare those exactly
        # to the float64 values rounded once).
        params = est._params()
        dtype = np.float32 if getattr(ctx, "dtype", None) == np.float32 else np.float64  # ctx: the data
        for name in ("means", "covariances"):
            attribute = getattr(est, f"{name}_")
            assert attribute.dtype == dtype, name
            np.testing.assert_array_equal(attribute, getattr(params, name).astype(attribute.dtype), err_msg=name)
        np.testing.assert_allclose(params.means, np.broadcast_to(point, params.means.shape), rtol=1e-12, atol=0)
        diagonal = {
            "full": lambda c: np.diagonal(c, axis1=-2, axis2=-1),
            "tied": np.diagonal,
            "diag": lambda c: c,
            "spherical": lambda c: c,
        }[est.covariance_type](params.covariances)
        np.testing.assert_allclose(diagonal, reg_covar, rtol=1e-9)

    return check


def kmeans_collapsed_on(point: np.ndarray) -> Callable[[Any, KMeans], None]:
    def check(ctx: Any, est: KMeans) -> None:
        np.testing.assert_allclose(est.cluster_centers_, np.broadcast_to(point, est.cluster_centers_.shape), rtol=1e-12)
        assert est.inertia_ == pytest.approx(0.0, abs=1e-12)

    return check


def gmm_centres_among(points: np.ndarray) -> Callable[[Any, GaussianMixture], None]:
    """Every mean with some weight is one of ``points``."""

    def check(ctx: Any, est: GaussianMixture) -> None:
        finite_gmm(ctx, est)
        for mean, weight in zip(est.means_, est.weights_, strict=True):
            if weight > 1e-6:
                assert np.min(np.abs(points - mean).max(axis=1)) < 1e-9, (mean, points)

    return check


def kmeans_centres_among(points: np.ndarray) -> Callable[[Any, KMeans], None]:
    def check(ctx: Any, est: KMeans) -> None:
        finite_kmeans(ctx, est)
        for centre in est.cluster_centers_:
            assert np.min(np.abs(points - centre).max(axis=1)) < 1e-12, (centre, points)
        assert est.inertia_ == pytest.approx(0.0, abs=1e-9)

    return check


#: One user-given start for the d=1 comparison with scikit-learn, per covariance type.
D1_START = {
    "weights_init": np.array([0.5, 0.5]),
    "means_init": np.array([[0.5], [4.0]]),
}
D1_PRECISIONS = {
    "full": np.ones((2, 1, 1)),
    "tied": np.ones((1, 1)),
    "diag": np.ones((2, 1)),
    "spherical": np.ones(2),
}


def gmm_vs_sklearn(
    params: dict[str, Any], rtol: float = 1e-8
) -> tuple[Callable[[Any], GaussianMixture], Callable[[Any, Any], None]]:
    """The call ``GaussianMixture(2, **params).fit(X)``, and the check that scikit-learn's
    ``GaussianMixture(2, **params)`` reaches the same iterations and parameters to ``rtol``."""

    def check(X: np.ndarray, est: GaussianMixture) -> None:
        sk = SklearnGaussianMixture(2, **params).fit(X)
        assert est.n_iter_ == sk.n_iter_
        assert est.converged_ == sk.converged_
        for name in GMM_PARAMS:
            np.testing.assert_allclose(getattr(est, name), getattr(sk, name), rtol=rtol, atol=rtol, err_msg=name)
        assert est.lower_bound_ == pytest.approx(sk.lower_bound_, rel=rtol, abs=rtol)

    return (lambda X: GaussianMixture(2, **params).fit(X)), check


def d1_gmm(covariance_type: str) -> tuple[Callable[[Any], GaussianMixture], Callable[[Any, Any], None]]:
    """The d=1 fit from a given start, and the check that scikit-learn reaches the same to 1e-8."""
    return gmm_vs_sklearn(
        {
            **D1_START,
            "precisions_init": D1_PRECISIONS[covariance_type],
            "covariance_type": covariance_type,
            "max_iter": 50,
            "tol": 1e-10,
        }
    )


def d1_kmeans_matches_sklearn(X: np.ndarray, est: KMeans) -> None:
    sk = SklearnKMeans(2, init=np.array([[0.5], [4.0]]), n_init=1, tol=0.0).fit(X)
    np.testing.assert_allclose(est.cluster_centers_, sk.cluster_centers_, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(est.labels_, sk.labels_)
    assert est.inertia_ == pytest.approx(sk.inertia_, rel=1e-8)
    assert est.n_iter_ == sk.n_iter_


def wide_diag_fits(X: np.ndarray, est: GaussianMixture) -> None:
    finite_gmm(X, est)
    assert est.means_.shape == (2, 2000)
    assert est.covariances_.shape == (2, 2000)
    # The two clusters are found: one mean near 5, the other near 0, in every feature.
    centres = np.sort(est.means_.mean(axis=1))
    np.testing.assert_allclose(centres, [0.0, 5.0], atol=0.1)


def same_as_float_fit(
    fit: Callable[[Any], Any], to_float: Callable[[Any], Any], attrs: tuple[str, ...]
) -> Callable[[Any, Any], None]:
    """The fit equals, bitwise, the same fit of the data converted to float64 first."""

    def check(X: Any, est: Any) -> None:
        ref = fit(to_float(X))
        for name in attrs:
            np.testing.assert_array_equal(getattr(est, name), getattr(ref, name), err_msg=name)

    return check


def zero_chunks_match(fit: Callable[[Any], Any], attrs: tuple[str, ...]) -> Callable[[Any, Any], None]:
    """The fit on chunks (0, 100, 0, 100) equals, bitwise, the fit on chunks (100, 100)."""

    def check(X: da.Array, est: Any) -> None:
        ref = fit(X.rechunk(((100, 100), (3,))))
        for name in attrs:
            np.testing.assert_array_equal(getattr(est, name), getattr(ref, name), err_msg=name)
        assert np.asarray(est.predict(X)).shape == (200,)

    return check


#: A start that skips the random initialisers, so chunkings compare bitwise.
GIVEN_START = {
    "weights_init": np.array([0.5, 0.5]),
    "means_init": np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]),
    "precisions_init": np.tile(np.eye(3), (2, 1, 1)),
}


# -- Zarr stores --------------------------------------------------------------------------------


def zarr_group(tmp_path: Path) -> str:
    path = str(tmp_path / "group.zarr")
    zarr.open_group(path, mode="w").create_array("X", shape=(10, 2), dtype="float64")
    return path


def truncated_zarr(tmp_path: Path) -> str:
    """A (2000, 3) uncompressed Zarr array in 8 chunks, the 4th chunk file cut to 100 bytes."""
    path = str(tmp_path / "x.zarr")
    array = zarr.create_array(path, shape=(2000, 3), chunks=(250, 3), dtype="float64", compressors=None)
    array[...] = _blobs()
    chunk = os.path.join(path, "c", "3", "0")
    assert os.path.getsize(chunk) == 250 * 3 * 8
    os.truncate(chunk, 100)
    return path


# -- checkpoints --------------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, with its bytes (array chunks and zarr.json attrs)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


CKPT_FIT = {"max_iter": 3, "tol": 0.0}


def good_checkpoint(tmp_path: Path, fit: Callable[..., Any] = gm) -> SimpleNamespace:
    """A finished checkpoint of at most 3 iterations (the newest 2 kept), and its bytes."""
    path = tmp_path / "ckpt.zarr"
    X = _blobs()
    fit(checkpoint=str(path), **CKPT_FIT)(X)
    run = Checkpoint(path).run(0)
    iterations = run.iterations()
    assert len(iterations) == 2
    assert run.pointer() == iterations[-1]
    return SimpleNamespace(
        X=X, path=str(path), root=path, before=_files(path), iterations=iterations, pointer=iterations[-1]
    )


def checkpoint_unchanged(ctx: SimpleNamespace, result: Any) -> None:
    """The failing call wrote nothing: same files, same bytes, same committed iteration."""
    run = Checkpoint(ctx.path).run(0)
    assert run.pointer() == ctx.pointer
    assert run.iterations() == ctx.iterations
    after = _files(ctx.root)
    assert sorted(after) == sorted(ctx.before)
    changed = [name for name in after if after[name] != ctx.before[name]]
    assert not changed, f"the failing call rewrote {changed}"


def _rewrite(group: zarr.Group, name: str, value: np.ndarray, digests: dict[str, str] | None) -> None:
    """Replace array ``name`` of an iteration group; with ``digests``, record its new digest there."""
    del group[name]
    array = group.create_array(name, shape=value.shape, dtype="float64", chunks=value.shape, compressors=None)
    array[...] = value
    if digests is not None:
        digests[name] = _digest(value)


def damaged_checkpoint(variant: str) -> Callable[[Path], SimpleNamespace]:
    """A good GaussianMixture checkpoint whose newest committed iteration (3) has arrays of the wrong shape.

    ``stale-digest``: ``means`` becomes (3, 3), its digest is left as it was.
    ``re-digested``: ``means`` becomes (3, 3) and its digest is recomputed to match.
    ``consistent-k3``: every parameter array becomes a valid 3-component mixture, digests
    recomputed: only a check against the model's ``n_components`` can tell.
    """

    def build(tmp_path: Path) -> SimpleNamespace:
        ctx = good_checkpoint(tmp_path)
        assert ctx.iterations == [2, 3]  # GaussianMixture with tol=0 runs all max_iter=3 iterations
        ctx.reference = GaussianMixture(2, random_state=0, **CKPT_FIT).fit(ctx.X)
        group = zarr.open_group(ctx.path, path="runs/0/iterations/3", mode="r+")
        info = dict(group.attrs["daskem_iteration"])
        digests = None if variant == "stale-digest" else dict(info["digests"])
        _rewrite(group, "means", np.zeros((3, 3)), digests)
        if variant == "consistent-k3":
            _rewrite(group, "weights", np.full(3, 1 / 3), digests)
            _rewrite(group, "covariances", np.tile(np.eye(3), (3, 1, 1)), digests)
            _rewrite(group, "precisions_cholesky", np.tile(np.eye(3), (3, 1, 1)), digests)
        if digests is not None:
            group.attrs["daskem_iteration"] = {**info, "digests": digests}
        # Iteration 2 is the good checkpoint the damaged one must never be written over.
        ctx.good = {k: v for k, v in _files(ctx.root).items() if k.startswith("runs/0/iterations/2/")}
        return ctx

    return build


def damaged_skipped_and_refitted(ctx: SimpleNamespace, est: GaussianMixture) -> None:
    """Iteration 2 untouched, iteration 3 recomputed, the result that of an uninterrupted fit."""
    after = _files(ctx.root)
    assert {k: v for k, v in after.items() if k.startswith("runs/0/iterations/2/")} == ctx.good
    run = Checkpoint(ctx.path).run(0)
    assert run.iterations() == [2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCheckpointWarning)
        assert run.latest().params["means"].shape == (2, 3)
    for name in GMM_PARAMS:
        np.testing.assert_array_equal(getattr(est, name), getattr(ctx.reference, name), err_msg=name)


# -- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes
    ----------
    id : str
        Test id.
    build : callable
        ``build(tmp_path)`` returns the input (``ctx``).
    call : callable
        ``call(ctx)`` makes the estimator call on the input.
    raises : type or None
        The exception class the call must raise; None: it must return.
    match : str or callable
        The pinned message fragment (of the exception, else of the warning), or
        ``match(ctx)`` building it (for paths).
    warns : type or None
        A warning the call must emit.
    check : callable, optional
        ``check(ctx, result)``, run after the call (``result`` is None when it raised).
    bug : str, optional
        Why daskem fails this row today (a strict xfail).
    """

    id: str
    build: Callable[[Path], Any]
    call: Callable[[Any], Any]
    raises: type[BaseException] | None
    match: str | Callable[[Any], str] = ""
    warns: type[Warning] | None = None
    check: Callable[[Any, Any], None] | None = None
    bug: str | None = None


def const(value: Any) -> Callable[[Path], Any]:
    return lambda tmp_path: value


NONFINITE = "NaN or infinite value(s)"


CASES: list[Case] = [
    # ---- non-finite values (test_errors.py covers GaussianMixture with given inits, partial NaN,
    # and +inf in NumPy data: test_single_nan_counted, test_infinite_values_raise_no_runtime_warning,
    # test_nonfinite_with_each_initialiser)
    Case(
        "gm-all-nan",
        const(np.full((100, 3), np.nan)),
        gm(),
        DataError,
        "Input X contains 3 NaN or infinite value(s) among 1 rows of the initialisation sample.",
    ),
    Case("km-all-nan", const(np.full((100, 3), np.nan)), km(), DataError, NONFINITE),
    Case(
        "gm-one-nan-last-of-20-dask-chunks-kmeans-init",
        const(_twenty_chunks(_one_nonfinite(np.nan, 1999))),
        gm(),
        DataError,
        "Input X contains 1 NaN or infinite value(s) among 2000 rows.",
    ),
    Case(
        "km-one-nan-in-one-of-20-dask-chunks",
        const(_twenty_chunks(_one_nonfinite(np.nan, 1234))),
        km(),
        DataError,
        "Input X contains 1 NaN or infinite value(s) among 2000 rows.",
    ),
    Case(
        "gm-pos-inf-float32-dask",
        const(_twenty_chunks(_one_nonfinite(np.inf, 777, dtype=np.float32))),
        gm(),
        DataError,
        "Input X contains 1 NaN or infinite value(s) among 2000 rows.",
    ),
    Case(
        "km-pos-inf",
        const(_one_nonfinite(np.inf, 17)),
        km(),
        DataError,
        "Input X contains 1 NaN or infinite value(s) among 2000 rows.",
    ),
    # ---- every column constant: reg_covar keeps it fittable (test_errors.py covers one constant
    # column among varying ones: test_singular_covariance_names_reg_covar / _fixed_by_reg_covar)
    *[
        Case(
            f"gm-constant-columns-{ct}",
            const(_constant()),
            gm(covariance_type=ct),
            None,
            check=gmm_collapsed_on(_constant()[0]),
        )
        for ct in ("full", "tied", "diag", "spherical")
    ],
    Case(
        "gm-constant-columns-reg-covar-0",
        const(_constant()),
        gm(covariance_type="diag", reg_covar=0.0),
        NumericalError,
        "is not positive definite (it collapsed onto too few distinct points, or features are constant or "
        "collinear) with reg_covar=0.0. Increase reg_covar (e.g. reg_covar=1e-3)",
    ),
    Case("km-constant-columns", const(_constant()), km(), None, check=kmeans_collapsed_on(_constant()[0])),
    # ---- all rows identical, more components than the one distinct point
    Case(
        "gm-identical-rows-k3",
        const(_identical_rows()),
        gm(n_components=3, covariance_type="diag"),
        None,
        check=gmm_collapsed_on(_identical_rows()[0]),
    ),
    Case(
        "km-identical-rows-k3",
        const(_identical_rows()),
        km(n_clusters=3),
        None,
        check=kmeans_collapsed_on(_identical_rows()[0]),
    ),
    # ---- one sample (test_errors.py covers n_components > n_samples for GaussianMixture:
    # test_n_components_greater_than_n_samples)
    Case(
        "gm-one-sample-k1",
        const(_blobs()[:1]),
        gm(n_components=1),
        None,
        check=gmm_collapsed_on(_blobs()[0]),
    ),
    Case("km-one-sample-k1", const(_blobs()[:1]), km(n_clusters=1), None, check=kmeans_collapsed_on(_blobs()[0])),
    Case(
        "km-one-sample-k2",
        const(_blobs()[:1]),
        km(),
        DataError,
        "n_samples=1 should be >= n_clusters=2. Reduce n_clusters or pass more rows.",
    ),
    # ---- more components than distinct points (test_errors.py covers reg_covar=0: NumericalError)
    Case(
        "gm-k3-on-2-distinct-points",
        const(_two_distinct_points()),
        gm(n_components=3),
        None,
        check=gmm_centres_among(_blobs(2)),
    ),
    Case(
        "km-k3-on-2-distinct-points",
        const(_two_distinct_points()),
        km(n_clusters=3),
        None,
        check=kmeans_centres_among(_blobs(2)),
    ),
    # ---- d = 1: scikit-learn's fit from the same start, to 1e-8
    *[
        Case(f"gm-d1-{ct}-vs-sklearn", const(_d1()), d1_gmm(ct)[0], None, check=d1_gmm(ct)[1])
        for ct in ("full", "tied", "diag", "spherical")
    ],
    Case(
        "km-d1-vs-sklearn",
        const(_d1()),
        lambda X: KMeans(2, init=np.array([[0.5], [4.0]]), tol=0.0).fit(X),
        None,
        check=d1_kmeans_matches_sklearn,
    ),
    # ---- d = 2000 with 300 rows
    Case("gm-d2000-300-rows-diag", const(_wide()), gm(covariance_type="diag"), None, check=wide_diag_fits),
    Case("km-d2000-300-rows", const(_wide()), km(), None, check=finite_kmeans),
    # ---- huge and far-apart values: finite data fit like scikit-learn or fail naming the overflow
    Case(
        "gm-one-outlier-1e5-away-vs-sklearn",
        const(_one_far_outlier()),
        gmm_vs_sklearn(OUTLIER_START, rtol=1e-7)[0],
        None,
        check=gmm_vs_sklearn(OUTLIER_START, rtol=1e-7)[1],
    ),
    Case(
        "gm-two-clusters-1e6-apart-vs-sklearn",
        const(_two_clusters_far_apart()),
        gmm_vs_sklearn(FAR_APART_START, rtol=1e-7)[0],
        None,
        check=gmm_vs_sklearn(FAR_APART_START, rtol=1e-7)[1],
    ),
    Case(
        "gm-values-1e200",
        const(_blobs(200) * 1e200),
        gm(),
        NumericalError,
        "their squared distances overflow float64. Scale the features",
    ),
    Case(
        "km-values-1e200",
        const(_blobs(200) * 1e200),
        km(),
        NumericalError,
        "their squared distances overflow float64. Scale the features",
    ),
    Case(
        "gm-finite-plus-minus-1e308",
        const(_finite_pm_1e308()),
        gm(),
        NumericalError,
        "Scale the features",
    ),
    # Rows are centred on their component's mean before anything is squared, so float32's
    # largest value fits without overflow: the one distinct row, covariance reg_covar
    # (scikit-learn raises here, its mean overflows float32).
    Case(
        "gm-float32-max-values",
        const(np.full((5, 2), np.finfo(np.float32).max, dtype=np.float32)),
        gm(),
        None,
        check=gmm_collapsed_on(np.full(2, np.finfo(np.float32).max, dtype=np.float64)),
    ),
    Case(
        "km-float64-max-values",
        const(np.full((2, 1), np.finfo(np.float64).max)),
        km(),
        NumericalError,
        "Scale the features",
    ),
    Case(
        "km-finite-plus-minus-1e308",
        const(_finite_pm_1e308()),
        km(),
        NumericalError,
        "Scale the features",
    ),
    # ---- empty arrays
    Case(
        "gm-0-rows-numpy",
        const(np.empty((0, 3))),
        gm(),
        DataError,
        "Found array with 0 sample(s) (shape=(0, 3)) while a minimum of 1 is required.",
    ),
    Case(
        "gm-0-columns-numpy",
        const(np.empty((10, 0))),
        gm(),
        DataError,
        "Found array with 0 feature(s) (shape=(10, 0)) while a minimum of 1 is required.",
    ),
    Case(
        "gm-0-rows-dask",
        const(da.zeros((0, 3), chunks=(1, 3))),
        gm(),
        DataError,
        "Found array with 0 sample(s) (shape=(0, 3)) while a minimum of 1 is required.",
    ),
    Case(
        "gm-0-columns-dask",
        const(da.zeros((10, 0))),
        gm(),
        DataError,
        "Found array with 0 feature(s) (shape=(10, 0)) while a minimum of 1 is required.",
    ),
    Case(
        "km-0x0",
        const(np.empty((0, 0))),
        km(),
        DataError,
        "Found array with 0 sample(s) (shape=(0, 0)) while a minimum of 1 is required.",
    ),
    # ---- zero-length chunks (0, 100, 0, 100)
    Case(
        "gm-zero-length-chunks",
        const(_zero_length_chunks()),
        gm(**GIVEN_START),
        None,
        check=zero_chunks_match(gm(**GIVEN_START), GMM_PARAMS),
    ),
    Case(
        "gm-zero-length-chunks-kmeans-init",
        const(_zero_length_chunks()),
        gm(),
        None,
        check=finite_gmm,
    ),
    Case(
        "km-zero-length-chunks",
        const(_zero_length_chunks()),
        km(init=GIVEN_START["means_init"]),
        None,
        check=zero_chunks_match(km(init=GIVEN_START["means_init"]), ("cluster_centers_", "inertia_")),
    ),
    # ---- dtypes (test_errors.py covers str and complex for GaussianMixture, NumPy and dask:
    # test_non_numeric_dtype; object arrays of strings: test_object_array_of_strings)
    Case(
        "gm-object-of-floats-numpy",
        const(_blobs(400).astype(object)),
        gm(),
        None,
        check=same_as_float_fit(gm(), lambda X: X.astype(np.float64), GMM_PARAMS),
    ),
    Case(
        "gm-object-dask",
        const(da.from_array(_blobs(400).astype(object), chunks=(100, 3))),
        gm(),
        DataError,
        "X has dtype object. daskem fits real-valued data: convert it first, e.g. X.astype('float64').",
    ),
    Case(
        "km-object-of-strings",
        const(np.array([["a", "b"]] * 5, dtype=object)),
        km(n_clusters=1),
        DataError,
        "Non-numeric data not supported: X has dtype object (could not convert string to float: 'a').",
    ),
    Case(
        "km-str",
        const(_blobs(50).astype(str)),
        km(),
        DataError,
        "Non-numeric data not supported: X has dtype <U",
    ),
    Case(
        "km-complex",
        const(_blobs(50).astype(np.complex128)),
        km(),
        DataError,
        "Complex data not supported: X has dtype complex128. daskem fits real-valued data: convert it first, "
        "e.g. X.astype('float64').",
    ),
    Case(
        "km-datetime64",
        const(np.zeros((4, 2), dtype="datetime64[s]")),
        km(n_clusters=1),
        DataError,
        "Non-numeric data not supported: X has dtype datetime64[s].",
    ),
    # ---- integers: accepted, converted, the same fit as on floats
    Case(
        "gm-int64-numpy",
        const(_integers()),
        gm(),
        None,
        check=same_as_float_fit(gm(), lambda X: X.astype(np.float64), GMM_PARAMS),
    ),
    Case(
        "gm-int32-dask",
        const(da.from_array(_integers().astype(np.int32), chunks=(100, 3))),
        gm(),
        None,
        check=same_as_float_fit(gm(), lambda X: X.astype(np.float64), GMM_PARAMS),
    ),
    Case(
        "gm-bool-numpy",
        const(_integers() > 0),
        gm(),
        None,
        check=same_as_float_fit(gm(), lambda X: X.astype(np.float64), GMM_PARAMS),
    ),
    Case(
        "km-int64-numpy",
        const(_integers()),
        km(),
        None,
        check=same_as_float_fit(km(), lambda X: X.astype(np.float64), ("cluster_centers_", "inertia_", "labels_")),
    ),
    # ---- Zarr (test_errors.py covers a group path for GaussianMixture: test_zarr_path_is_a_group)
    Case(
        "km-zarr-path-is-a-group",
        zarr_group,
        km(),
        StoreError,
        lambda path: (
            f"{path!r} is a Zarr group, not an array. Pass the path of an array inside it, "
            f"e.g. {path + '/<array-name>'!r}."
        ),
    ),
    Case("gm-truncated-zarr-chunk", truncated_zarr, gm(), StoreError, repr),
    Case("km-truncated-zarr-chunk", truncated_zarr, km(), StoreError, repr),
    # ---- checkpoints of another model (test_checkpoint.py covers other n_components, data,
    # split_every, random_state, reg_covar of the same estimator)
    Case(
        "km-on-gm-checkpoint",
        good_checkpoint,
        lambda ctx: km(checkpoint=ctx.path, **CKPT_FIT)(ctx.X),
        CheckpointMismatchError,
        lambda ctx: f"The checkpoint at {ctx.path!r} was written for model.",
        check=checkpoint_unchanged,
    ),
    Case(
        "gm-on-km-checkpoint",
        lambda tmp_path: good_checkpoint(tmp_path, km),
        lambda ctx: gm(checkpoint=ctx.path, **CKPT_FIT)(ctx.X),
        CheckpointMismatchError,
        lambda ctx: f"The checkpoint at {ctx.path!r} was written for model.",
        check=checkpoint_unchanged,
    ),
    # ---- checkpoints whose arrays have the wrong shape: skipped, never loaded (test_checkpoint.py
    # covers altered values under a stale digest, NaN values and wrong dtypes under a fixed one)
    *[
        Case(
            f"gm-checkpoint-wrong-shape-{variant}",
            damaged_checkpoint(variant),
            lambda ctx: gm(checkpoint=ctx.path, **CKPT_FIT)(ctx.X),
            None,
            lambda ctx: f"Skipping a damaged checkpoint: iteration 3 of {ctx.path!r} (run 0): ",
            warns=CorruptCheckpointWarning,
            check=damaged_skipped_and_refitted,
        )
        for variant in ("stale-digest", "re-digested", "consistent-k3")
    ],
]

#: How many hostile inputs the table holds (also part of every row's test id).
N_HOSTILE_INPUTS = len(CASES)


def _param(index: int, case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=f"{index + 1:02d}of{N_HOSTILE_INPUTS}-{case.id}", marks=marks)


def test_table_is_well_formed():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids) == N_HOSTILE_INPUTS
    print(f"{N_HOSTILE_INPUTS} hostile inputs, {sum(c.bug is not None for c in CASES)} of them daskem bugs (xfail)")


@pytest.mark.parametrize("case", [_param(i, c) for i, c in enumerate(CASES)])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    ctx = case.build(tmp_path)

    def call() -> Any:
        return case.call(ctx)

    fragment = case.match(ctx) if callable(case.match) else case.match
    result = None
    if case.raises is not None:
        with pytest.raises(case.raises, match=re.escape(fragment)) as info:
            call()
        assert str(info.value).strip()
    elif case.warns is not None:
        with pytest.warns(case.warns, match=re.escape(fragment)):
            result = call()
    else:
        with warnings.catch_warnings():
            # A successful fit on a hostile input emits no RuntimeWarning (overflow, division by 0)...
            warnings.simplefilter("error", RuntimeWarning)
            # ...but the log-likelihood of a component collapsed onto one point may drop a little: with
            # reg_covar the M-step is not an exact maximiser (scikit-learn's drops too, from the same
            # start on gm-k3-on-2-distinct-points).
            # Those rows assert the parameters instead.
            warnings.simplefilter("ignore", LikelihoodDecreaseWarning)
            result = call()
    if case.check is not None:
        case.check(ctx, result)


# -- property: any small array fits finitely or fails with a DaskemError that names the problem ----

#: Words one of which a DaskemError about these inputs must contain.
PROBLEM_WORDS = re.compile(
    r"NaN|infinite|dtype|sample|feature|n_components|n_clusters|reg_covar|log-likelihood|positive definite|overflow"
)

DTYPES = (np.float64, np.float32, np.int64, np.bool_, np.complex128)


def _specials(dtype: np.dtype[Any], huge: bool) -> list[Any]:
    """NaN, +-inf and tiny values (and with ``huge`` 1e308 and the dtype's max), exactly representable."""
    if dtype.kind == "f":
        info = np.finfo(dtype)
        values = [np.nan, np.inf, -np.inf, float(info.tiny), -float(info.tiny)]
        if dtype == np.float64:
            values += [1e-308, -1e-308]
        if huge:
            values += [float(info.max), -float(info.max)] + ([1e308, -1e308] if dtype == np.float64 else [])
        return values
    if dtype.kind == "c":
        parts = [0.0, np.nan, np.inf, -np.inf, 1e-308] + ([1e308] if huge else [])
        return [complex(v, w) for v in parts for w in parts]
    if dtype.kind == "i":
        info = np.iinfo(dtype)
        return [int(info.max), int(info.min), 0]
    return [True, False]


@st.composite
def hostile_arrays(draw: st.DrawFn, huge: bool) -> np.ndarray:
    """0..50 x 0..6 arrays of any of :data:`DTYPES`; about half of them mix in special values."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = (draw(st.integers(0, 50)), draw(st.integers(0, 6)))
    if dtype.kind == "f":
        plain = st.floats(-1e3, 1e3, width=8 * dtype.itemsize)
    elif dtype.kind == "c":
        plain = st.complex_numbers(max_magnitude=1e3)
    elif dtype.kind == "i":
        plain = st.integers(-1000, 1000)
    else:
        plain = st.booleans()
    specials = st.sampled_from(_specials(dtype, huge))
    elements = draw(st.sampled_from([plain, st.one_of(plain, specials)]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


HYPOTHESIS_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fits_finitely_or_names_the_problem(fit: Callable[[np.ndarray], Any], X: np.ndarray, attrs: tuple[str, ...]):
    est, error = None, None
    with warnings.catch_warnings():
        # daskem emits no RuntimeWarning (the project's pytest configuration says so too)...
        warnings.filterwarnings("error", category=RuntimeWarning, module=r"daskem\.")
        # ...except a likelihood decrease of a collapsed component, a warning outside this property
        # (see test_hostile_input).
        warnings.simplefilter("ignore", LikelihoodDecreaseWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            est = fit(X)
        except DaskemError as err:  # anything else propagates and fails the property
            error = err
    if error is not None:
        message = str(error)
        assert message.strip(), f"{type(error).__name__} with an empty message"
        assert PROBLEM_WORDS.search(message), f"{type(error).__name__} does not name the problem: {message}"
        return
    for name in attrs:
        value = np.asarray(getattr(est, name))
        assert np.all(np.isfinite(value)), f"{name} is not finite for X of shape {X.shape}, dtype {X.dtype}: {value}"


def _gm(X: np.ndarray) -> None:
    _fits_finitely_or_names_the_problem(
        lambda X: GaussianMixture(n_components=2, max_iter=5, random_state=0).fit(X), X, GMM_PARAMS
    )


def _km(X: np.ndarray) -> None:
    _fits_finitely_or_names_the_problem(
        lambda X: KMeans(n_clusters=2, max_iter=5, random_state=0).fit(X), X, ("cluster_centers_", "inertia_")
    )


#: The inputs Hypothesis found that break the property today (also rows of the table).
FLOAT32_MAX = np.full((5, 2), np.finfo(np.float32).max, dtype=np.float32)
FLOAT64_MAX = np.full((2, 1), np.finfo(np.float64).max)


@HYPOTHESIS_SETTINGS
@given(X=hostile_arrays(huge=False))
def test_gaussian_mixture_fits_finitely_or_raises_daskem_error(X: np.ndarray) -> None:
    _gm(X)


@HYPOTHESIS_SETTINGS
@given(X=hostile_arrays(huge=False))
def test_kmeans_fits_finitely_or_raises_daskem_error(X: np.ndarray) -> None:
    _km(X)


@HYPOTHESIS_SETTINGS
@example(X=FLOAT32_MAX)
@given(X=hostile_arrays(huge=True))
def test_gaussian_mixture_fits_finitely_or_raises_daskem_error_with_huge_values(X: np.ndarray) -> None:
    _gm(X)


@HYPOTHESIS_SETTINGS
@example(X=FLOAT64_MAX)
@given(X=hostile_arrays(huge=True))
def test_kmeans_fits_finitely_or_raises_daskem_error_with_huge_values(X: np.ndarray) -> None:
    _km(X)
