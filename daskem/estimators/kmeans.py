"""``daskem.KMeans``: scikit-learn's KMeans as hard-assignment EM, out of core."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin

from daskem.em.init import INIT_SAMPLE_ROWS, KMEANS_PARALLEL_ROUNDS, kmeans_parallel, kmeans_plusplus, sample_rows
from daskem.em.monitor import IterationRecord
from daskem.em.session import FitSession, resolve_split_every, weighted_rows
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import EMEstimator
from daskem.estimators._validation import check_int, check_option
from daskem.io.sources import as_source
from daskem.models.gaussian import check_shape
from daskem.models.kmeans import KMeansModel, KMeansParams, shared_reference
from daskem.registry import N_COMPONENTS, N_INIT, Option, Selectable, attribute_summary, register

KMEANS_INITS = ("k-means||", "k-means++", "random")


@register(
    "kmeans",
    description="k-means clustering by Lloyd's algorithm (scikit-learn's KMeans)",
    options=(
        replace(N_COMPONENTS, param="n_clusters"),
        Option(("--n-clusters",), "n_clusters", "Number of clusters (k-means; the same as --n-components).", minimum=1),
        Option(
            ("--init",),
            "init",
            "Initial centres: k-means|| over all the data, k-means++ on a sample, or random rows.",
            kind=str,
            choices=KMEANS_INITS,
        ),
        N_INIT,
    ),
    summary=attribute_summary("cluster", [("centre (first features)", "cluster_centers_")]),
    figures=("components",),
    objective="minus the mean squared distance to the nearest centre",
    select=Selectable("kmeans", "X-means' identical spherical Gaussians of the partition (Pelleg & Moore 2000)"),
)
class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, EMEstimator):
    """k-means clustering by Lloyd's algorithm (hard-assignment EM) on data of any size.

    A drop-in for :class:`sklearn.cluster.KMeans`: the same parameters (``algorithm``
    accepts only "lloyd"), methods and fitted attributes, with each iteration one pass
    over Dask blocks. Converges by scikit-learn's rule (squared centre shift at most
    ``tol`` times the mean feature variance), so from the same initial centres it makes
    the same iterations and reaches the same centres, labels and inertia.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random"} or array of shape (n_clusters, n_features), default="k-means||"
        "k-means||": Bahmani et al.'s scalable k-means++ over all the data, in at most 6
        passes (:func:`daskem.em.init.kmeans_parallel`); "k-means++": greedy k-means++ on
        a uniform sample of at most 100,000 rows; "random": ``n_clusters`` random rows;
        an array: the initial centres.
    n_init : "auto" or int, default="auto"
        Initialisations, all run in the same passes over the data; the lowest final
        inertia wins. "auto" is 10 for ``init="random"`` and 1 otherwise.
    max_iter : int, default=300
        Most Lloyd iterations per initialisation.
    tol : float, default=1e-4
        Convergence when the squared centre shift is at most ``tol`` x mean feature variance.
    verbose : int, default=0
        Print iteration progress (scikit-learn's mixture format).
    verbose_interval : int, default=10
        Iterations between verbose messages.
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation.
    algorithm : {"lloyd"}, default="lloyd"
        Only Lloyd's algorithm is implemented (Elkan's needs per-row bounds kept between
        passes, which out-of-core data cannot hold).
    split_every, accelerate, prune_restarts, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,)
        Only for in-memory (NumPy) input; use :meth:`predict` for other data.
    inertia_ : float
        Sum of (weighted) squared distances of the rows to their nearest centre.
    n_iter_ : int
    converged_ : bool
    n_passes_ : int
        Full passes over the data, initialisation, the final inertia pass and (for
        in-memory input) the ``labels_`` pass included.
    pruned_restarts_ : list of int
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import KMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
    >>> km = KMeans(n_clusters=2, init=np.array([[1.0, 2.0], [10.0, 2.0]])).fit(X)
    >>> km.cluster_centers_.tolist()
    [[1.0, 2.0], [10.0, 2.0]]
    """

    _FITTED = ("cluster_centers_",)
    _WARN_NOT_CONVERGED = False  # scikit-learn's KMeans does not warn at max_iter either

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means||",
        n_init: Any = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        verbose_interval: int = 10,
        random_state: Any = None,
        algorithm: str = "lloyd",
        split_every: int | None = None,
        accelerate: str | None = None,
        prune_restarts: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        cache: str | bool = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.random_state = random_state
        self.algorithm = algorithm
        self.split_every = split_every
        self.accelerate = accelerate
        self.prune_restarts = prune_restarts
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache

    # -- validation ---------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_clusters", self.n_clusters, 1)
        check_int(name, "max_iter", self.max_iter, 1)
        if not isinstance(self.init, str) and (callable(self.init) or not hasattr(self.init, "__array__")):
            raise ParameterError(
                f"The 'init' parameter of {name} must be a str among {list(KMEANS_INITS)} or an array-like of "
                f"initial centres. Got {self.init!r} instead."
            )
        if isinstance(self.init, str):
            check_option(name, "init", self.init, KMEANS_INITS)
        if self.n_init != "auto":
            check_int(name, "n_init", self.n_init, 1)
        check_option(name, "algorithm", self.algorithm, ["lloyd"])
        self._validate_engine_parameters()

    def _n_init(self) -> int:
        if not isinstance(self.init, str):
            return 1
        if self.n_init == "auto":
            return 10 if self.init == "random" else 1
        return int(self.n_init)

    def _model(self) -> KMeansModel:
        return KMeansModel(self.n_clusters)

    # -- fitting ------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: Any = None,
        sample_weight: Any = None,
        *,
        callback: Callable[[IterationRecord, Any], None] | None = None,
    ) -> KMeans:
        """Compute the k-means clustering.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data; a string is the path or URL of a Zarr array.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Non-negative weight of every row (all 1 when None).
        callback : callable, optional
            Called as ``callback(record, params)`` after every iteration.

        Returns
        -------
        self : KMeans
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = as_source(X, sample_weight=sample_weight)
        if source.n_samples < self.n_clusters:
            raise DataError(
                f"n_samples={source.n_samples} should be >= n_clusters={self.n_clusters}. Reduce n_clusters or "
                "pass more rows."
            )
        if not isinstance(self.init, str):
            check_shape("init", self.init, (self.n_clusters, source.n_features))
        session = self._session(weighted_rows(source))
        model = KMeansModel(self.n_clusters, weighted=source.weights is not None)
        outcome = self._fit_restarts(model, session, self._n_init(), False, callback)
        self.n_features_in_ = source.n_features
        best = outcome.results[outcome.best].params
        self.inertia_ = session.stats(model, best).inertia
        if source.kind == "numpy":
            self.labels_ = np.concatenate(session.block_results(model, "predict", best))
        self.n_passes_ = session.passes
        return self

    def _init_config(self) -> dict[str, Any]:
        return {"init": self.init if isinstance(self.init, str) else "array"}

    def _max_init_passes(self, n_init: int) -> int | None:
        if not isinstance(self.init, str):
            return 0
        return KMEANS_PARALLEL_ROUNDS + 1 if self.init == "k-means||" else n_init

    def _initial_params(self, model: KMeansModel, session: FitSession, rngs: list[np.random.Generator]) -> list[Any]:
        return shared_reference(self._initial_centers(model, session, rngs))

    def _initial_centers(
        self, model: KMeansModel, session: FitSession, rngs: list[np.random.Generator]
    ) -> list[np.ndarray]:
        d = session.source.n_features - int(model.weighted)
        if not isinstance(self.init, str):
            return [np.asarray(self.init, dtype=np.float64) for _ in rngs]
        if self.init == "k-means||":
            return kmeans_parallel(session, self.n_clusters, rngs, weighted=model.weighted)
        out = []
        for rng in rngs:
            if self.init == "random":
                out.append(sample_rows(session, self.n_clusters, rng)[:, :d])
                continue
            sample = sample_rows(session, INIT_SAMPLE_ROWS, rng)
            weights = sample[:, d] if model.weighted else None
            out.append(sample[kmeans_plusplus(sample[:, :d], self.n_clusters, rng, weights), :d])
        return out

    def _params(self) -> KMeansParams:
        return KMeansParams.from_centers(self.cluster_centers_)

    def _set_params_attributes(self, params: KMeansParams) -> None:
        self.cluster_centers_ = params.centers

    @property
    def _n_features_out(self) -> int:
        return int(self.cluster_centers_.shape[0])

    # -- prediction -----------------------------------------------------------------------

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the cluster of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            NumPy for in-memory input, a lazy dask array otherwise.
        """
        return self._per_row(X, "predict", dtype=np.intp)

    def transform(self, X: Any) -> Any:
        """Euclidean distance of every row to every centre.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_clusters)
        """
        return self._per_row(X, "transform", columns=self.n_clusters)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the (weighted) inertia of ``X`` under the fitted centres.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.

        Returns
        -------
        float
        """
        model = KMeansModel(self.n_clusters, weighted=sample_weight is not None)
        source = weighted_rows(as_source(self._source_for_predict(X), sample_weight=sample_weight))
        stats = self._prediction_session(source).stats(model, self._params())
        if stats.n_nonfinite:
            raise DataError(f"Input X contains {stats.n_nonfinite} NaN or infinite value(s). Remove or impute them.")
        return float(-stats.inertia)
