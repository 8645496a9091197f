"""``daskem.GaussianMixture``: scikit-learn's GaussianMixture, out of core."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from daskem.checkpoint.checkpoint import Checkpoint, CheckpointState, ForeignStoreError
from daskem.checkpoint.store import read_arrays_group, write_arrays_group
from daskem.em.engine import COMPARED_SECTIONS, EMResult, fit_em, fit_metadata, map_rows, resolve_split_every
from daskem.em.init import INIT_METHODS, initial_params
from daskem.em.monitor import IterationRecord
from daskem.errors import DataError, NotFittedError, ParameterError, StoreError
from daskem.estimators._validation import check_int, check_option, check_random_state_param, check_real
from daskem.io.sources import DataSource, as_source
from daskem.models.gaussian import COVARIANCE_TYPES, check_shape, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams

_FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def _entropy(random_state: Any) -> int:
    """The seed of the initialisations: ``random_state`` itself if it is an int."""
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


#: Hyperparameters that say where and how to checkpoint, not what to fit: not stored.
_CHECKPOINT_PARAMS = ("checkpoint", "overwrite_checkpoint")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.random.RandomState):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM on data of any size (scikit-learn's API).

    A drop-in for :class:`sklearn.mixture.GaussianMixture`: the same parameters,
    methods and fitted attributes, with the EM iterations run over Dask blocks (one
    pass over the data per iteration) so the data need not fit in memory.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Form of the component covariances.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the covariance diagonals.
    max_iter : int, default=100
        Number of EM iterations to run at most.
    n_init : int, default=1
        Number of initialisations; the one with the best lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How to initialise (see :mod:`daskem.em.init`; "kmeans" and "k-means++" work on a
        uniform sample of at most 100,000 rows, never on the whole data).
    weights_init : array-like of shape (n_components,), default=None
        Initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means.
    precisions_init : array-like, default=None
        Initial precisions (inverse covariances), shaped by ``covariance_type``.
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation and of :meth:`sample`.
    warm_start : bool, default=False
        Start a new ``fit`` from the previous solution (``n_init`` is then ignored, as
        in scikit-learn, because there is one start).
    verbose : int, default=0
        1 prints the initialisation and iteration numbers, 2 also times and changes.
    verbose_interval : int, default=10
        Iterations between verbose messages.
    split_every : int, default=None
        Fan-in of the statistics reduction tree (``dask.config`` ``split_every``, else 8).
    checkpoint : str or os.PathLike, default=None
        Zarr location (path or fsspec URL) to checkpoint the fit into; fitting again with
        the same checkpoint resumes it (see :func:`daskem.fit_em`).
    checkpoint_every : int, default=1
        Iterations between commits (the last one is always committed).
    keep_last : int, default=2
        Committed iterations kept in the checkpoint.
    overwrite_checkpoint : bool, default=False
        Discard an existing checkpoint and start afresh.
    cache : {"auto", True, False}, default="auto"
        Persist the data once in (cluster) memory or stream them from their source on
        every pass; "auto" caches data taking at most half the available memory.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean per-sample log-likelihood of the best fit at its last iteration.
    lower_bounds_ : list of float
        ``lower_bound_`` at every iteration of the best fit.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from daskem import GaussianMixture
    >>> X = np.r_[np.random.default_rng(0).normal(size=(200, 2)), np.random.default_rng(1).normal(5, 1, (200, 2))]
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(np.round(gm.means_[:, 0]).tolist())
    [0.0, 5.0]
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        split_every: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        keep_last: int = 2,
        overwrite_checkpoint: bool = False,
        cache: str | bool = "auto",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.split_every = split_every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.overwrite_checkpoint = overwrite_checkpoint
        self.cache = cache

    # -- validation ---------------------------------------------------------------------

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        check_int(name, "n_components", self.n_components, 1)
        check_option(name, "covariance_type", self.covariance_type, COVARIANCE_TYPES)
        check_real(name, "tol", self.tol, 0.0)
        check_real(name, "reg_covar", self.reg_covar, 0.0)
        check_int(name, "max_iter", self.max_iter, 0)
        check_int(name, "n_init", self.n_init, 1)
        check_option(name, "init_params", self.init_params, INIT_METHODS)
        check_random_state_param(name, self.random_state)
        check_int(name, "verbose", self.verbose, 0)
        check_int(name, "verbose_interval", self.verbose_interval, 1)
        check_int(name, "split_every", self.split_every, 2, none_ok=True)
        check_int(name, "checkpoint_every", self.checkpoint_every, 1)
        check_int(name, "keep_last", self.keep_last, 1)
        if self.cache is not True and self.cache is not False and self.cache != "auto":
            raise ParameterError(
                f"The 'cache' parameter of {name} must be 'auto', True or False. Got {self.cache!r} instead."
            )
        if self.checkpoint is not None and not isinstance(self.checkpoint, str | os.PathLike):
            raise ParameterError(
                f"The 'checkpoint' parameter of {name} must be a str (a Zarr path or URL), an os.PathLike or "
                f"None. Got {self.checkpoint!r} instead."
            )
        for flag in ("warm_start", "overwrite_checkpoint"):
            value = getattr(self, flag)
            if not isinstance(value, bool | np.bool_):
                raise ParameterError(
                    f"The {flag!r} parameter of {name} must be an instance of 'bool' or an instance of "
                    f"'numpy.bool'. Got {value!r} instead."
                )

    def _model(self) -> GaussianMixtureModel:
        return GaussianMixtureModel(self.n_components, self.covariance_type, float(self.reg_covar))

    def _checked_inits(self, n_features: int) -> tuple[Any, Any, Any]:
        k, d = self.n_components, n_features
        weights = means = precisions = None
        if self.weights_init is not None:
            weights = check_shape("weights", self.weights_init, (k,))
            if weights.min() < 0.0 or weights.max() > 1.0:
                raise ParameterError(
                    "The parameter 'weights' should be in the range [0, 1], but got "
                    f"max value {weights.max():.5f}, min value {weights.min():.5f}."
                )
            if not np.isclose(weights.sum(), 1.0, rtol=0.0, atol=1e-8):
                raise ParameterError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = {weights.sum():.5f}."
                )
        if self.means_init is not None:
            means = check_shape("means", self.means_init, (k, d))
        if self.precisions_init is not None:
            expected = covariance_type(self.covariance_type).shape(k, d)
            precisions = check_shape(f"{self.covariance_type} precision", self.precisions_init, expected)
            if self.covariance_type in ("full", "tied") and not np.allclose(
                precisions, np.swapaxes(precisions, -1, -2)
            ):
                raise ParameterError(
                    f"'{self.covariance_type} precision' should be symmetric, positive-definite; got a "
                    "non-symmetric precisions_init. Pass symmetric matrices, e.g. (P + P.T) / 2."
                )
        return weights, means, precisions

    # -- fitting ------------------------------------------------------------------------

    def fit(
        self, X: Any, y: Any = None, *, callback: Callable[[IterationRecord, Any], None] | None = None
    ) -> GaussianMixture:
        """Estimate the parameters by EM.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data; a string is the path or URL of a Zarr array.
        y : None
            Ignored; present for API consistency.
        callback : callable, optional
            Called as ``callback(record, params)`` after every EM iteration.

        Returns
        -------
        self : GaussianMixture
            The fitted estimator.
        """
        self._validate_hyperparameters()
        resolve_split_every(self.split_every)
        source = as_source(X)
        if source.n_samples < self.n_components:
            raise DataError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {source.n_samples}. Reduce n_components or pass more rows."
            )
        fitted_features: int | None = getattr(self, "n_features_in_", None)
        if self.warm_start and fitted_features is not None and source.n_features != fitted_features:
            raise DataError(
                f"X has {source.n_features} features, but the warm start is from a fit on {fitted_features} "
                f"features. Pass data with {fitted_features} features or set warm_start=False."
            )
        model = self._model()
        warm = self.warm_start and hasattr(self, "converged_")
        n_init = 1 if warm else self.n_init
        inits = self._checked_inits(source.n_features)
        entropy = _entropy(self.random_state)
        checkpoint = None
        if self.checkpoint is not None:
            checkpoint = Checkpoint(self.checkpoint)
            stored = checkpoint.prepare(
                self._checkpoint_metadata(model, source, n_init, entropy),
                compare=COMPARED_SECTIONS,
                overwrite=self.overwrite_checkpoint,
            )
            # Resumed runs re-create the same initialisations, even for random_state=None.
            entropy = int(stored["random"]["entropy"])
        best: EMResult | None = None
        for index, seed in enumerate(np.random.SeedSequence(entropy).spawn(n_init)):

            def start(seed: np.random.SeedSequence = seed) -> GaussianMixtureParams:
                if warm:
                    return self._warm_params()
                return self._initial_params(model, source, np.random.default_rng(seed), inits)

            result = fit_em(
                model,
                source,
                start,
                max_iter=self.max_iter,
                tol=self.tol,
                split_every=self.split_every,
                callback=self._iteration_callback(index, callback),
                checkpoint=None if checkpoint is None else checkpoint.run(index),
                checkpoint_every=self.checkpoint_every,
                keep_last=self.keep_last,
                cache=self.cache,
            )
            self._print_end(result)
            if best is None or result.lower_bound > best.lower_bound:
                best = result
        assert best is not None
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_params_attributes(best.params)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = [r.log_likelihood for r in best.history]
        self.n_features_in_ = source.n_features
        return self

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit, then return the component label of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.

        Returns
        -------
        labels : ndarray or dask array of shape (n_samples,)
        """
        return self.fit(X).predict(X)

    def _checkpoint_metadata(
        self, model: GaussianMixtureModel, source: DataSource, n_init: int, entropy: int
    ) -> dict[str, Any]:
        meta = fit_metadata(
            model,
            source,
            resolve_split_every(self.split_every),
            n_init=n_init,
            init_params=self.init_params,
            random_state=_jsonable(self.random_state),
        )
        estimator = {"kind": type(self).__name__, "params": self._stored_params()}
        return {**meta, "estimator": estimator, "random": {"entropy": entropy}}

    def _stored_params(self) -> dict[str, Any]:
        """Hyperparameters as JSON for model files and checkpoints (not where to checkpoint)."""
        return {k: _jsonable(v) for k, v in self.get_params().items() if k not in _CHECKPOINT_PARAMS}

    def _initial_params(
        self,
        model: GaussianMixtureModel,
        source: DataSource,
        rng: np.random.Generator,
        inits: tuple[Any, Any, Any],
    ) -> GaussianMixtureParams:
        weights, means, precisions = inits
        # Everything given: no pass over the data (scikit-learn skips its k-means too).
        all_given = weights is not None and means is not None and precisions is not None
        base = None if all_given else initial_params(model, source, self.init_params, rng, split_every=self.split_every)
        return model.with_given(base, weights, means, precisions)

    def _warm_params(self) -> GaussianMixtureParams:
        return GaussianMixtureParams(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_params_attributes(self, params: GaussianMixtureParams) -> None:
        ct = covariance_type(self.covariance_type)
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = ct.precisions(params.precisions_cholesky)

    # -- verbose output, as scikit-learn prints it ------------------------------------------

    def _iteration_callback(
        self, index: int, user: Callable[[IterationRecord, Any], None] | None
    ) -> Callable[[IterationRecord, Any], None]:
        if self.verbose:
            print(f"Initialization {index}", file=sys.stdout)
        self._init_start = time.perf_counter()

        def callback(record: IterationRecord, params: Any) -> None:
            if self.verbose and record.iteration % self.verbose_interval == 0:
                if self.verbose == 1:
                    print(f"  Iteration {record.iteration}")
                else:
                    print(
                        f"  Iteration {record.iteration}\t time lapse {record.seconds:.5f}s\t "
                        f"ll change {record.change:.5f}"
                    )
            if user is not None:
                user(record, params)

        return callback

    def _print_end(self, result: EMResult) -> None:
        if self.verbose == 1:
            print(f"Initialization converged: {result.converged}")
        elif self.verbose >= 2:
            lapse = time.perf_counter() - self._init_start
            print(
                f"Initialization converged: {result.converged}\t time lapse {lapse:.5f}s\t "
                f"lower bound {result.lower_bound:.5f}"
            )

    # -- prediction -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not all(hasattr(self, a) for a in _FITTED):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def _params(self) -> GaussianMixtureParams:
        return GaussianMixtureParams(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _source_for_predict(self, X: Any) -> DataSource:
        self._check_fitted()
        source = as_source(X)
        if source.n_features != self.n_features_in_:
            raise DataError(
                f"X has {source.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return source

    def _per_row(self, X: Any, what: str) -> Any:
        source = self._source_for_predict(X)
        columns = self.n_components if what == "predict_proba" else None
        dtype = np.intp if what == "predict" else np.float64
        out = map_rows(self._model(), self._params(), source, what, dtype=dtype, columns=columns)
        return out.compute() if source.kind == "numpy" else out

    def score_samples(self, X: Any) -> Any:
        """Log-likelihood of every row under the fitted mixture.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
            NumPy for in-memory input, a lazy dask array for dask or Zarr input.
        """
        return self._per_row(X, "score_samples")

    def score(self, X: Any, y: Any = None) -> float:
        """Mean per-sample log-likelihood of ``X``.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.
        y : None
            Ignored.

        Returns
        -------
        float
        """
        return float(np.asarray(self._per_row(X, "score_samples").mean()))

    def predict(self, X: Any) -> Any:
        """Component label of every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples,)
        """
        return self._per_row(X, "predict")

    def predict_proba(self, X: Any) -> Any:
        """Posterior probability of every component for every row.

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)
            The data.

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_components)
        """
        return self._per_row(X, "predict_proba")

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture (scikit-learn's draw for the same seed).

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            Component of each sample.
        """
        self._check_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ParameterError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample."
            )
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        d = self.means_.shape[1]
        if self.covariance_type == "full":
            parts = [
                rng.multivariate_normal(m, c, int(s))
                for m, c, s in zip(self.means_, self.covariances_, counts, strict=True)
            ]
        elif self.covariance_type == "tied":
            parts = [
                rng.multivariate_normal(m, self.covariances_, int(s)) for m, s in zip(self.means_, counts, strict=True)
            ]
        else:
            parts = [
                m + rng.standard_normal(size=(s, d)) * np.sqrt(c)
                for m, c, s in zip(self.means_, self.covariances_, counts, strict=True)
            ]
        labels = np.concatenate([np.full(s, j, dtype=int) for j, s in enumerate(counts)])
        return np.vstack(parts), labels

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(covariance_type(self.covariance_type).n_cov_parameters(k, d) + k * d + k - 1)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion of the fit on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        source = as_source(X)
        n = source.n_samples
        return float(-2.0 * self.score(source) * n + self._n_parameters() * np.log(n))

    def aic(self, X: Any) -> float:
        """Akaike information criterion of the fit on ``X`` (lower is better).

        Parameters
        ----------
        X : array-like, dask array, zarr.Array or str of shape (n_samples, n_features)

        Returns
        -------
        float
        """
        source = as_source(X)
        return float(-2.0 * self.score(source) * source.n_samples + 2 * self._n_parameters())

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to a Zarr v3 group (arrays + JSON attributes, no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Location of the group; an existing one is replaced.
        """
        from daskem import __version__

        self._check_fitted()
        write_arrays_group(
            path,
            self._params().to_arrays(),
            {
                "version": __version__,
                "kind": type(self).__name__,
                "estimator": self._stored_params(),
                "fit": {
                    "converged": bool(self.converged_),
                    "n_iter": int(self.n_iter_),
                    "lower_bound": float(self.lower_bound_),
                    "lower_bounds": [float(v) for v in self.lower_bounds_],
                    "n_features_in": int(self.n_features_in_),
                },
            },
        )

    @classmethod
    def _restore(
        cls,
        params: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        converged: bool,
        lower_bounds: list[float],
        n_features: int,
    ) -> GaussianMixture:
        """A fitted estimator from stored hyperparameters, parameter arrays and fit record."""
        est = cls(**params)
        est._set_params_attributes(est._model().params_from_arrays(arrays))
        est.converged_ = converged
        est.n_iter_ = len(lower_bounds)
        est.lower_bound_ = lower_bounds[-1] if lower_bounds else -np.inf
        est.lower_bounds_ = list(lower_bounds)
        est.n_features_in_ = n_features
        return est


_ESTIMATORS: dict[str, type[GaussianMixture]] = {"GaussianMixture": GaussianMixture}


def _estimator_class(kind: Any, where: str) -> type[GaussianMixture]:
    if kind not in _ESTIMATORS:
        raise StoreError(f"{where} holds a model of kind {kind!r}, which this daskem cannot load.")
    return _ESTIMATORS[kind]


def _default_run(checkpoint: Checkpoint) -> tuple[int, CheckpointState]:
    """The run a fit would report, and its newest state: the best finished run, else the newest."""
    states = {r: checkpoint.run(r).latest() for r in checkpoint.runs()}
    present = {r: s for r, s in states.items() if s is not None}
    if not present:
        raise StoreError(f"The checkpoint at {checkpoint.location!r} holds no committed iteration yet.")
    if all(s.finished for s in present.values()):
        best = max(present, key=lambda r: (float(present[r].history["log_likelihood"][-1]), -r))
        return best, present[best]
    return max(present), present[max(present)]


def load(path: str | os.PathLike[str], *, iteration: int | None = None, run: int | None = None) -> GaussianMixture:
    """Load a fitted model: a model file (``save``, ``daskem fit --output``) or a checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        Location of the Zarr group.
    iteration : int, optional
        For a checkpoint: the committed iteration to load (default: the newest).
    run : int, optional
        For a checkpoint of a fit with ``n_init > 1``: the initialisation to load
        (default: the one the fit kept, or the one in progress).

    Returns
    -------
    GaussianMixture
        The fitted estimator (parameters of the chosen iteration).
    """
    where = repr(os.fspath(path))
    checkpoint = Checkpoint(path)
    meta = None
    if checkpoint.exists():
        try:
            meta = checkpoint.metadata()
        except ForeignStoreError:  # a model file (or not daskem's at all): read below
            meta = None
    if meta is None:
        if iteration is not None or run is not None:
            raise StoreError(f"iteration= and run= apply to checkpoints; {where} is not a daskem checkpoint.")
        arrays, info = read_arrays_group(path)
        fit = info["fit"]
        return _estimator_class(info.get("kind"), where)._restore(
            info["estimator"],
            arrays,
            converged=bool(fit["converged"]),
            lower_bounds=[float(v) for v in fit["lower_bounds"]],
            n_features=int(fit["n_features_in"]),
        )
    estimator = meta.get("estimator")
    if not isinstance(estimator, dict):
        raise StoreError(
            f"The checkpoint at {where} was written by daskem.fit_em, which records no estimator; read its "
            f"parameters with daskem.checkpoint.Checkpoint({where}).run(0).latest()."
        )
    cls = _estimator_class(estimator.get("kind"), where)
    index, newest = _default_run(checkpoint) if run is None else (run, checkpoint.run(run).latest())
    chosen = checkpoint.run(index)
    if iteration is None:
        if newest is None:
            raise StoreError(f"Run {index} of the checkpoint at {where} holds no committed iteration.")
        state = newest
    else:
        if iteration not in chosen.iterations():
            raise StoreError(
                f"Iteration {iteration} is not kept in the checkpoint at {where} (run {chosen.index}); "
                f"kept iterations: {chosen.iterations()}. Raise keep_last to keep more."
            )
        state = chosen.read(iteration)
    return cls._restore(
        estimator["params"],
        state.params,
        converged=state.converged,
        lower_bounds=[float(v) for v in state.history["log_likelihood"]],
        n_features=int(meta["data"]["shape"][1]),
    )
