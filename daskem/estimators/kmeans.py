"""``daskem.KMeans``: scikit-learn's KMeans as hard-assignment EM, out of core."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state

from daskem.em.init import INIT_SAMPLE_ROWS, KMEANS_PARALLEL_ROUNDS, kmeans_parallel, kmeans_plusplus, sample_rows
from daskem.em.monitor import IterationRecord
from daskem.em.session import FitSession, resolve_split_every, weighted_rows
from daskem.errors import DataError, ParameterError
from daskem.estimators._base import EMEstimator
from daskem.estimators._validation import check_int, check_option
from daskem.io.sources import DataSource, as_source
from daskem.models.kmeans import KMeansModel, KMeansParams, shared_reference
from daskem.registry import N_COMPONENTS, N_INIT, SAMPLE_WEIGHT, Option, Selectable, attribute_summary, register

KMEANS_INITS = ("k-means||", "k-means++", "random")

#: Accepted values of ``algorithm``: Elkan's algorithm is an exact acceleration of Lloyd's,
#: so both run Lloyd's iterations and give the same result.
KMEANS_ALGORITHMS = ("lloyd", "elkan")

#: ``n_init="auto"`` for ``init="random"`` or a callable (scikit-learn's default_n_init).
DEFAULT_N_INIT = 10


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
        SAMPLE_WEIGHT,
    ),
    summary=attribute_summary("cluster", [("centre (first features)", "cluster_centers_")]),
    figures=("components",),
    objective="minus the mean squared distance to the nearest centre",
    select=Selectable("kmeans", "X-means' identical spherical Gaussians of the partition (Pelleg & Moore 2000)"),
)
class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, EMEstimator):
    """k-means clustering by Lloyd's algorithm (hard-assignment EM) on data of any size.

    A drop-in for :class:`sklearn.cluster.KMeans`: the same parameters, methods and
    fitted attributes, with each iteration one pass over Dask blocks. Converges by
    scikit-learn's rule (squared centre shift at most ``tol`` times the mean feature
    variance), so from the same initial centres it makes the same iterations and
    reaches the same centres, labels and inertia.

    ``X`` may be dense or sparse: scipy.sparse matrices or arrays (CSR, CSC, ...; e.g.
    TF-IDF text) in memory, or dask arrays of scipy.sparse blocks. Sparse rows are never
    centred or densified (distances are ``|x|^2 - 2 x.c + |c|^2`` from sparse products);
    the centres are dense.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    init : {"k-means||", "k-means++", "random"}, callable or array-like of shape (n_clusters, n_features), \
default="k-means||"
        "k-means||": Bahmani et al.'s scalable k-means++ over all the data, in at most 6
        passes (:func:`daskem.em.init.kmeans_parallel`); "k-means++": greedy k-means++ on
        a uniform sample of at most 100,000 rows (sparse rows densified in the sample);
        "random": ``n_clusters`` random rows; an array-like (nested lists too): the
        initial centres; a callable: ``init(X, n_clusters, random_state)`` returning the
        centres, called once per initialisation with ``random_state`` a
        :class:`numpy.random.RandomState` (as scikit-learn). ``X`` is what scikit-learn
        passes for in-memory input (the validated NumPy array or CSR matrix); for
        out-of-core input it is the data as a (lazy) dask array.
    n_init : "auto" or int, default="auto"
        Initialisations, all run in the same passes over the data; the lowest final
        inertia wins. "auto" is 10 for ``init="random"`` or a callable and 1 otherwise
        (1 always under a schedule other than batch);
        an array ``init`` makes one (with a RuntimeWarning if ``n_init`` asks for more).
        The number used is stored as ``_n_init`` by :meth:`fit`, as scikit-learn does.
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
    copy_x : bool, default=True
        scikit-learn's flag to copy ``X`` rather than centre it in place. daskem never
        modifies ``X`` (its blocks are read, never written), so both values leave ``X``
        unchanged; True copies nothing either. Accepted for compatibility.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Both run Lloyd's iterations. Elkan's algorithm is an exact acceleration of
        Lloyd's (it skips distance computations by the triangle inequality, with per-row
        bounds kept between iterations, which out-of-core passes cannot hold), so it
        gives the same centres, labels, inertia and iteration count by definition.
    split_every, accelerate, prune_restarts, checkpoint, checkpoint_every, keep_last, overwrite_checkpoint, cache
        As for :class:`daskem.GaussianMixture`.
    schedule : {"batch", "incremental", "online"}, default="batch"
        Which blocks each M-step reads, as for :class:`daskem.GaussianMixture`
        ("stochastic" is refused: k-means has no posterior to draw from). "incremental"
        keeps every block's last assignment statistics and re-reads ``step_blocks`` of
        them per step: with every block per step it is Lloyd's algorithm bit for bit.
        "online" is mini-batch k-means: with ``learning_decay=1`` (the default) each
        centre is the weighted mean of every row ever assigned to it (each row assigned
        under the centres of its step), scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans`
        update. Convergence is still scikit-learn's centre-shift rule, between epochs,
        with the feature variance of the first step's rows. ``n_init="auto"`` is 1 under
        these schedules (they run one initialisation).
    step_blocks, learning_offset, average, shuffle
        As for :class:`daskem.GaussianMixture`.
    learning_decay : float, default=1.0
        Online step sizes ``(t + learning_offset) ** -learning_decay``, in (0.5, 1]. The
        default 1 (with ``learning_offset=0``) weighs steps of equal size equally: the
        running centres are the plain weighted means of the rows seen, as
        :class:`~sklearn.cluster.MiniBatchKMeans` keeps them; smaller values forget early
        steps (their assignments were made under worse centres).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,)
        Only for in-memory (NumPy) input; use :meth:`predict` for other data. After
        :meth:`partial_fit`: the labels of its batch.
    inertia_ : float
        Sum of (weighted) squared distances of the rows to their nearest centre. After
        :meth:`partial_fit`: of its batch, under the updated centres.
    n_iter_ : int
        Lloyd iterations of the best initialisation (sweeps of an incremental fit, epochs
        of an online one).
    converged_ : bool
    n_passes_ : int
        Full passes over the data, initialisation, the final inertia pass and (for
        in-memory input) the ``labels_`` pass included.
    n_steps_ : int
        M-steps made (several per iteration for the incremental and online schedules;
        one per ``step_blocks`` blocks of a :meth:`partial_fit` batch).
    n_samples_seen_ : int
        Rows read by the online steps of :meth:`partial_fit` calls (and the online
        ``fit`` they continue).
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
    _ACCEPT_SPARSE = True  # the k-means model computes with sparse blocks

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
        copy_x: bool = True,
        algorithm: str = "lloyd",
        split_every: int | None = None,
        accelerate: str | None = None,
        prune_restarts: bool = False,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        cache: str | bool = "auto",
        schedule: str = "batch",
        step_blocks: int | None = None,
        learning_decay: float = 1.0,
        learning_offset: float = 0.0,
        average: bool | int = False,
        shuffle: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.split_every = split_every
        self.accelerate = accelerate
        self.prune_restarts = prune_restarts
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache
        self.schedule = schedule
        self.step_blocks = step_blocks
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.average = average
        self.shuffle = shuffle

    # -- validation ---------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_clusters", self.n_clusters, 1)
        check_int(name, "max_iter", self.max_iter, 1)
        if isinstance(self.init, str):
            check_option(name, "init", str(self.init), KMEANS_INITS)
        elif not callable(self.init):
            try:
                init = np.asarray(self.init, dtype=np.float64)
            except (TypeError, ValueError):
                init = None
            if init is None or init.ndim != 2:
                raise ParameterError(
                    f"The 'init' parameter of {name} must be a str among {list(KMEANS_INITS)}, a callable or an "
                    f"array-like of shape (n_clusters, n_features). Got {self.init!r} instead."
                )
        if self.n_init != "auto":
            check_int(name, "n_init", self.n_init, 1)
        if not isinstance(self.copy_x, bool | np.bool_):
            raise ParameterError(
                f"The 'copy_x' parameter of {name} must be an instance of 'bool' or an instance of 'numpy.bool'. "
                f"Got {self.copy_x!r} instead."
            )
        check_option(name, "algorithm", self.algorithm, KMEANS_ALGORITHMS)
        self._validate_engine_parameters()

    def _resolve_n_init(self) -> int:
        """scikit-learn's ``_n_init``: "auto" -> 1 (k-means++, k-means||, array) or 10; one for an array.

        Under a schedule other than batch, which runs one initialisation, "auto" is 1.
        """
        array_init = not isinstance(self.init, str) and not callable(self.init)
        if self.n_init == "auto":
            random_init = callable(self.init) or (isinstance(self.init, str) and self.init == "random")
            n_init = DEFAULT_N_INIT if random_init and self.schedule == "batch" else 1
        else:
            n_init = int(self.n_init)
        if array_init and n_init != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"{type(self).__name__} instead of n_init={n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
            n_init = 1
        return n_init

    def _check_centers(self, centers: Any, n_features: int) -> np.ndarray:
        """Initial centres as float64 after checking their shape (scikit-learn's messages)."""
        values = np.array(centers.toarray() if sparse.issparse(centers) else centers, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != self.n_clusters:
            raise ParameterError(
                f"The shape of the initial centers {values.shape} does not match the number of clusters "
                f"{self.n_clusters}."
            )
        if values.shape[1] != n_features:
            raise ParameterError(
                f"The shape of the initial centers {values.shape} does not match the number of features of the "
                f"data {n_features}."
            )
        return values

    def _model(self) -> KMeansModel:
        return KMeansModel(self.n_clusters)

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: sparse input accepted (as scikit-learn's KMeans)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

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
        X : array-like, sparse matrix, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data; a string is the path or URL of a Zarr array. Sparse data (scipy.sparse,
            or a dask array of scipy.sparse blocks) stay sparse.
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
        source = as_source(X, sample_weight=sample_weight, accept_sparse=True)
        if source.n_samples < self.n_clusters:
            raise DataError(
                f"n_samples={source.n_samples} should be >= n_clusters={self.n_clusters}. Reduce n_clusters or "
                "pass more rows."
            )
        self._n_init = self._resolve_n_init()
        if self.algorithm == "elkan" and self.n_clusters == 1:
            warnings.warn(
                "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._init_data = None
        if callable(self.init):
            self._init_data = self._callable_init_data(X, source)
        elif not isinstance(self.init, str):
            self._check_centers(self.init, source.n_features)
        session = self._session(weighted_rows(source))
        model = KMeansModel(self.n_clusters, weighted=source.weights is not None)
        try:
            outcome = self._fit_restarts(model, session, self._n_init, False, callback)
        finally:
            self._init_data = None
        self.n_features_in_ = source.n_features
        best = outcome.results[outcome.best].params
        final = session.stats(model, best)
        self.inertia_ = float(final.inertia)
        distinct = int(np.count_nonzero(final.weight > 0.0))
        if source.kind == "numpy":
            self.labels_ = np.concatenate(session.block_results(model, "predict", best))
            distinct = int(np.unique(self.labels_).size)
        # Centres in the data's dtype (float32 data: float32 centres), as scikit-learn.
        self.cluster_centers_ = best.centers.astype(source.array.dtype)
        self.n_passes_ = session.passes
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({self.n_clusters}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Update the centres with the rows of ``X`` by online (mini-batch) k-means.

        One online step from all the rows of ``X`` (a mini-batch; ``step_blocks`` and
        ``shuffle`` apply to :meth:`fit`): the rows are assigned to their nearest centres, the
        running per-cluster weights and sums move towards the step's by
        ``(t + learning_offset) ** -learning_decay`` (the first step takes them as they
        are) and the centres become their means. With the default ``learning_decay=1``
        and batches of equal size, every centre is the weighted mean of all the rows ever
        assigned to it: scikit-learn's :meth:`sklearn.cluster.MiniBatchKMeans.partial_fit`
        with ``reassignment_ratio=0``, to rounding (with batches of unequal size each
        step weighs as one, not by its rows).

        The first call initialises from its batch with ``init`` (one initialisation,
        whatever ``n_init``; it needs at least ``n_clusters`` rows), unless the estimator
        is fitted, in which case it starts from the fitted centres (after an online
        ``fit``, from its running statistics). Calls over the blocks of a dataset in order
        give bitwise the centres of ``fit`` with ``schedule="online", shuffle=False,
        max_iter=1`` from the same start.

        Unlike :class:`~sklearn.cluster.MiniBatchKMeans`, small clusters are not
        randomly reassigned to rows (``reassignment_ratio``); a cluster that has received
        no row in any step yet takes the farthest rows seen, as :meth:`fit`'s empty
        clusters do (scikit-learn's relocation).

        Parameters
        ----------
        X : array-like, sparse matrix, dask array, zarr.Array or str of shape (n_samples, n_features)
            A batch of rows.
        y : None
            Ignored.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Non-negative weight of every row (all 1 when None).

        Returns
        -------
        self : KMeans
            The updated estimator; ``inertia_`` and (NumPy input) ``labels_`` are those of
            the batch under the updated centres (one more pass over the batch), as
            MiniBatchKMeans' ``compute_labels=True`` gives them.
        """
        try:
            return self._partial_fit(X, sample_weight=sample_weight)
        finally:
            self._init_data = None

    def _partial_source(self, X: Any, sample_weight: Any = None, **kwargs: Any) -> DataSource:
        source = as_source(X, sample_weight=sample_weight, accept_sparse=True, one_block=True)
        starting = getattr(self, "_online_state", None) is None and not hasattr(self, "converged_")
        if starting and source.n_samples < self.n_clusters:
            raise DataError(
                f"n_samples={source.n_samples} should be >= n_clusters={self.n_clusters}: the first partial_fit "
                "initialises the centres from its batch. Pass a batch of at least n_clusters rows."
            )
        if starting and callable(self.init):
            self._init_data = self._callable_init_data(X, source)
        elif starting and not isinstance(self.init, str):
            self._check_centers(self.init, source.n_features)
        self._partial_weighted = source.weights is not None
        self._partial_dtype = source.array.dtype
        return weighted_rows(source)

    def _partial_n_features(self, source: DataSource) -> int:
        return source.n_features - int(self._partial_weighted)  # the weights' column

    def _partial_fitted(self, session: FitSession, model: Any, stats: Any, continuing: bool) -> None:
        """``inertia_`` and (NumPy input) ``labels_`` of the batch under the new centres (one pass)."""
        state = self._online_state
        assert state is not None  # the step just made
        centres = state.reported(model)
        parts = session.block_results(model, "labels_inertia", centres)
        self.inertia_ = float(sum(inertia for _, inertia in parts))
        if session.in_memory:
            self.labels_ = np.concatenate([labels for labels, _ in parts])
        self.n_passes_ += 1
        self.cluster_centers_ = centres.centers.astype(self._partial_dtype)

    def _partial_model(self, session: FitSession) -> KMeansModel:
        return KMeansModel(self.n_clusters, weighted=bool(getattr(self, "_partial_weighted", False)))

    def _callable_init_data(self, X: Any, source: DataSource) -> Any:
        """What a callable ``init`` receives as ``X``: scikit-learn's validated array in memory, else dask."""
        if source.kind == "numpy":
            return check_array(
                X, accept_sparse="csr", dtype=[np.float64, np.float32], order="C", ensure_all_finite=False
            )
        return source.array

    def _init_config(self) -> dict[str, Any]:
        if callable(self.init):
            return {"init": "callable"}
        return {"init": str(self.init) if isinstance(self.init, str) else "array"}

    def _max_init_passes(self, n_init: int) -> int | None:
        if not isinstance(self.init, str):
            return 0
        return KMEANS_PARALLEL_ROUNDS + 1 if self.init == "k-means||" else n_init

    def _initial_params(self, model: KMeansModel, session: FitSession, rngs: list[np.random.Generator]) -> list[Any]:
        centers = self._initial_centers(model, session, rngs)
        if self.verbose:
            print("Initialization complete", file=sys.stdout)
        self._verbose_state = {"previous": dict(enumerate(centers)), "rows": session.source.n_samples}
        if session.source.sparse:
            # Sparse rows are not centred: statistics around the origin keep them sparse.
            zero = np.zeros(centers[0].shape[1])
            return [KMeansParams.from_centers(c, zero) for c in centers]
        return shared_reference(centers)

    def _iteration_callback(self, n_init: int, user: Any) -> Callable[[int, IterationRecord, Any], None]:
        """scikit-learn's verbose lines for KMeans (iterations counted from 0, as it prints them)."""

        def callback(index: int, record: IterationRecord, params: KMeansParams) -> None:
            if self.verbose:
                state = getattr(self, "_verbose_state", {"previous": {}, "rows": 1})
                i = record.iteration - 1
                print(f"Iteration {i}, inertia {-record.log_likelihood * state['rows']}.")
                previous = state["previous"].get(index)
                shift = 0.0 if previous is None else float(((params.centers - previous) ** 2).sum())
                state["previous"][index] = params.centers
                if record.converged and shift == 0.0:
                    print(f"Converged at iteration {i}: strict convergence.")
                elif record.converged:
                    tol = float(self.tol) * float(params.variance or 0.0)
                    print(f"Converged at iteration {i}: center shift {shift} within tolerance {tol}.")
            if user is not None:
                user(record, params)

        return callback

    def _initial_centers(
        self, model: KMeansModel, session: FitSession, rngs: list[np.random.Generator]
    ) -> list[np.ndarray]:
        d = session.source.n_features - int(model.weighted)
        if callable(self.init):
            state = check_random_state(self.random_state)
            return [self._check_centers(self.init(self._init_data, self.n_clusters, state), d) for _ in rngs]
        if not isinstance(self.init, str):
            return [self._check_centers(self.init, d) for _ in rngs]
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
        X : array-like, sparse matrix, dask array, zarr.Array or str of shape (n_samples, n_features)
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
        X : array-like, sparse matrix, dask array, zarr.Array or str of shape (n_samples, n_features)
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
        X : array-like, sparse matrix, dask array, zarr.Array or str of shape (n_samples, n_features)
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
        X : array-like, sparse matrix, dask array, zarr.Array or str of shape (n_samples, n_features)
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
        source = as_source(self._source_for_predict(X), sample_weight=sample_weight, accept_sparse=True)
        source = weighted_rows(source)
        stats = self._prediction_session(source).stats(model, self._params())
        if stats.n_nonfinite:
            raise DataError(f"Input X contains {stats.n_nonfinite} NaN or infinite value(s). Remove or impute them.")
        return float(-stats.inertia)
